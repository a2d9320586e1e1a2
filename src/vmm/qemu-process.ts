import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { JailStartError, jailedCommand, readJailerPid, type JailSpec } from '../jail/jailer.js';
import { QemuExitedError } from './errors.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** Where Debian installs it: hearth-jailer execs an absolute path. */
export const QEMU_PATH = '/usr/bin/qemu-system-x86_64';
const JAILER_PID_TIMEOUT_MS = 10_000;
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

/** How to start one QEMU process. */
export interface QemuSpawnOptions {
  vmId: string;
  args: string[];
  stderrFile: string;
  /** A network namespace to run in (nsenter), when not jailed. */
  netnsPath?: string;
  /** Run inside hearth-jailer with this jail (its netnsPath replaces the one above). */
  jail?: { jailer: string; spec: JailSpec };
  /** Descriptors the process gets from fd 3 on (e.g. a sealed memfd of guest RAM). */
  extraFds?: number[];
}

/**
 * One QEMU process: started by this engine, or adopted after a server restart (QEMU runs in its own
 * session and writes its stderr to a file, so it outlives the server that started it). Started
 * inside hearth-jailer (own uid, namespaces, pivot_root; `pid` is then QEMU's, not the jailer's),
 * or plainly, optionally inside a network namespace (nsenter) so it can open the VM's tap there.
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

  /**
   * Starts QEMU with stderr appended to `stderrFile`. Jailed, resolves once hearth-jailer reported
   * QEMU's pid; rejects with JailStartError (the jailer's stderr is in `stderrFile`) if it did not.
   */
  static async spawn(o: QemuSpawnOptions): Promise<QemuProcess> {
    let { cmd, args } = { cmd: QEMU_BINARY, args: o.args };
    if (o.jail) ({ cmd, args } = jailedCommand(o.jail.jailer, o.jail.spec, QEMU_PATH, o.args));
    else if (o.netnsPath) [cmd, args] = ['nsenter', [`--net=${o.netnsPath}`, '--', QEMU_BINARY, ...o.args]];
    const errFd = openSync(o.stderrFile, 'a', 0o600);
    let child;
    try {
      child = spawn(cmd, args, {
        stdio: ['ignore', o.jail ? 'pipe' : 'ignore', errFd, ...(o.extraFds ?? [])],
        detached: true,
      });
    } finally {
      closeSync(errFd);
    }
    const exited = new Promise<QemuExit>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: null, signal: null }));
    });
    if (!o.jail) return new QemuProcess(o.vmId, child.pid ?? -1, o.stderrFile, exited);
    try {
      const pid = await readJailerPid(child.stdout!, JAILER_PID_TIMEOUT_MS);
      child.stdout!.resume(); // the jailer points its stdout at /dev/null after the pid line
      return new QemuProcess(o.vmId, pid, o.stderrFile, exited);
    } catch (e) {
      child.kill('SIGKILL');
      await exited;
      const tail = new QemuProcess(o.vmId, -1, o.stderrFile, exited).stderrTail();
      throw tail ? new JailStartError(`${(e as Error).message}: ${tail}`, { cause: e }) : e;
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
