import { spawn, type ChildProcess } from 'node:child_process';
import { QemuExitedError } from './errors.js';
import type { Logger } from '../util/log.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
const STDERR_KEEP_CHARS = 4_000;

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * One QEMU process. Optionally started inside a network namespace (nsenter), so it can open the
 * VM's tap device there. Tracks exit and keeps the tail of stderr for error messages.
 */
export class QemuProcess {
  private stderr = '';
  private exitInfo: QemuExit | undefined;
  readonly exited: Promise<QemuExit>;

  private constructor(
    readonly vmId: string,
    private readonly child: ChildProcess,
    log: Logger,
  ) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.stderr = (this.stderr + s).slice(-STDERR_KEEP_CHARS);
      for (const line of s.split('\n'))
        if (line.trim()) log.debug('qemu stderr', { vm: vmId, line: line.trim() });
    });
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      child.on('error', (e) => {
        this.stderr += e.message;
        this.exitInfo = { code: null, signal: null };
        resolve(this.exitInfo);
      });
    });
  }

  static spawn(opts: { vmId: string; args: string[]; netnsPath?: string; log: Logger }): QemuProcess {
    const [cmd, args] = opts.netnsPath
      ? ['nsenter', [`--net=${opts.netnsPath}`, '--', QEMU_BINARY, ...opts.args]]
      : [QEMU_BINARY, opts.args];
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
    return new QemuProcess(opts.vmId, child, opts.log);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  stderrTail(): string {
    return this.stderr.trim().split('\n').slice(-5).join('\n');
  }

  /** The error to report when the process is gone, or undefined while it runs. */
  exitError(): QemuExitedError | undefined {
    if (!this.exitInfo) return undefined;
    return new QemuExitedError(this.vmId, this.exitInfo.code, this.exitInfo.signal, this.stderrTail());
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.exitInfo) this.child.kill(signal);
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
