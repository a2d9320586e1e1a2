import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { QemuExitedError } from './errors.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
const STDERR_TAIL_BYTES = 4_000;
const ADOPTED_POLL_MS = 250;

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/**
 * One QEMU process: started by this engine, or adopted after a server restart (QEMU runs in its own
 * session and writes its stderr to a file, so it outlives the server that started it). Optionally
 * started inside a network namespace (nsenter), so it can open the VM's tap device there.
 */
export class QemuProcess {
  private exitInfo: QemuExit | undefined;
  readonly exited: Promise<QemuExit>;
  /** Clock ticks since boot when the process started: tells it apart from a later process with its pid. */
  readonly startTime: number | undefined;

  private constructor(
    readonly vmId: string,
    readonly pid: number,
    private readonly stderrFile: string,
    exited: Promise<QemuExit>,
  ) {
    this.exited = exited.then((e) => (this.exitInfo = e));
    this.startTime = pid > 0 ? processStartTime(pid) : undefined;
  }

  /** Starts QEMU with stderr appended to `stderrFile`. */
  static spawn(opts: { vmId: string; args: string[]; netnsPath?: string; stderrFile: string }): QemuProcess {
    const [cmd, args] = opts.netnsPath
      ? ['nsenter', [`--net=${opts.netnsPath}`, '--', QEMU_BINARY, ...opts.args]]
      : [QEMU_BINARY, opts.args];
    const errFd = openSync(opts.stderrFile, 'a', 0o600);
    try {
      const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', errFd], detached: true });
      const exited = new Promise<QemuExit>((resolve) => {
        child.on('exit', (code, signal) => resolve({ code, signal }));
        child.on('error', () => resolve({ code: null, signal: null }));
      });
      return new QemuProcess(opts.vmId, child.pid ?? -1, opts.stderrFile, exited);
    } finally {
      closeSync(errFd);
    }
  }

  /**
   * Takes over a QEMU process started by an earlier server. Its exit is noticed by polling, since it
   * is not our child. Returns undefined if `pid` is not alive or was reused (start time differs).
   */
  static adopt(vmId: string, pid: number, startTime: number, stderrFile: string): QemuProcess | undefined {
    if (processStartTime(pid) !== startTime) return undefined;
    const exited = new Promise<QemuExit>((resolve) => {
      const timer = setInterval(() => {
        if (processStartTime(pid) !== startTime) {
          clearInterval(timer);
          resolve({ code: null, signal: null });
        }
      }, ADOPTED_POLL_MS);
      timer.unref();
    });
    return new QemuProcess(vmId, pid, stderrFile, exited);
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The last lines QEMU wrote to stderr. */
  stderrTail(): string {
    try {
      const size = statSync(this.stderrFile).size;
      const fd = openSync(this.stderrFile, 'r');
      try {
        const buf = Buffer.alloc(Math.min(size, STDERR_TAIL_BYTES));
        readSync(fd, buf, 0, buf.length, Math.max(0, size - buf.length));
        return buf.toString().trim().split('\n').slice(-5).join('\n');
      } finally {
        closeSync(fd);
      }
    } catch {
      return '';
    }
  }

  /** The error to report when the process is gone, or undefined while it runs. */
  exitError(): QemuExitedError | undefined {
    if (!this.exitInfo) return undefined;
    return new QemuExitedError(this.vmId, this.exitInfo.code, this.exitInfo.signal, this.stderrTail());
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exitInfo || this.pid <= 0) return;
    if (this.startTime !== undefined && processStartTime(this.pid) !== this.startTime) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      /* already gone */
    }
  }

  /** Waits up to `timeoutMs` for exit; then SIGKILLs and waits for that. */
  async waitExit(timeoutMs: number): Promise<QemuExit> {
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    const r = await Promise.race([this.exited, timer]);
    if (r !== 'timeout') return r;
    this.kill('SIGKILL');
    return this.exited;
  }
}
