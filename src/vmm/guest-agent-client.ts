import type { Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { GuestAgentError, GuestExecTimeoutError } from './errors.js';
import { connectUnix } from './unix-socket.js';

export interface GuestExecResult {
  exitCode: number;
  /** Set when the process was killed by a signal. */
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  /** True when the agent truncated the captured output (it keeps at most 16 MiB per stream). */
  truncated: boolean;
}

export interface GuestExecOptions {
  env?: string[];
  input?: Buffer | string;
  timeoutMs?: number;
}

interface Waiter {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const FILE_CHUNK_BYTES = 48 * 1024; // qemu-ga caps a guest-file-read/-write at 48 MiB; small chunks keep replies small

/**
 * A client for qemu-guest-agent over its virtio-serial port (a Unix socket on the host). Commands
 * run one at a time, in order; the connection is resynchronised with guest-sync-delimited when it
 * opens, so stale replies from an earlier session are discarded.
 */
export class GuestAgentClient {
  private queue: Promise<unknown> = Promise.resolve();
  private waiter: Waiter | undefined;
  private buf = Buffer.alloc(0);
  private closed = false;
  private syncId: number | undefined;
  private needsSync = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    const onClose = () => {
      this.closed = true;
      if (this.waiter) {
        clearTimeout(this.waiter.timer);
        this.waiter.reject(new GuestAgentError(this.waiter.command, 'connection closed'));
        this.waiter = undefined;
      }
    };
    socket.on('close', onClose);
    socket.on('error', onClose);
  }

  /** Connects and synchronises with the agent; waits up to `timeoutMs` for the guest to answer. */
  static async connect(
    path: string,
    opts: { timeoutMs?: number; abort?: () => Error | undefined } = {},
  ): Promise<GuestAgentClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = await connectUnix(path, timeoutMs, opts.abort);
    const client = new GuestAgentClient(socket);
    try {
      await client.sync(Math.max(1, deadline - Date.now()));
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  private onData(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    let nl: number;
    while ((nl = this.buf.indexOf(0x0a)) >= 0) {
      let line = this.buf.subarray(0, nl);
      this.buf = this.buf.subarray(nl + 1);
      const ff = line.lastIndexOf(0xff);
      const delimited = ff >= 0;
      if (delimited) line = line.subarray(ff + 1);
      if (line.length === 0) continue;
      let msg: { return?: unknown; error?: { desc?: string; class?: string } };
      try {
        msg = JSON.parse(line.toString('utf8')) as typeof msg;
      } catch {
        continue;
      }
      const w = this.waiter;
      if (!w) continue;
      if (this.syncId !== undefined) {
        // While synchronising, only the delimited reply carrying our id counts.
        if (!delimited || msg.return !== this.syncId) continue;
        this.syncId = undefined;
      }
      this.waiter = undefined;
      clearTimeout(w.timer);
      if (msg.error) w.reject(new GuestAgentError(w.command, msg.error.desc ?? 'unknown error'));
      else w.resolve(msg.return);
    }
  }

  /** Writes one request and waits for its reply. Callers go through `send`, which queues. */
  private rawSend<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new GuestAgentError(command, 'connection closed'));
      if (command === 'guest-sync-delimited') this.syncId = args?.id as number;
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.syncId = undefined;
        // The reply may still come later: resynchronise before the next request.
        this.needsSync = true;
        reject(new GuestAgentError(command, `no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { command, resolve: resolve as (v: unknown) => void, reject, timer };
      const payload = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) }) + '\n';
      // A 0xFF byte before the sync request makes the agent drop any partial input it holds.
      this.socket.write(
        command === 'guest-sync-delimited'
          ? Buffer.concat([Buffer.from([0xff]), Buffer.from(payload)])
          : payload,
      );
    });
  }

  /** Queues a request behind the ones in flight; resynchronises first if an earlier one timed out. */
  private send<T>(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    const task = async (): Promise<T> => {
      if (this.needsSync && command !== 'guest-sync-delimited') {
        this.needsSync = false;
        const id = randomInt(1, 2 ** 31);
        if ((await this.rawSend<number>('guest-sync-delimited', { id }, timeoutMs)) !== id) {
          throw new GuestAgentError('guest-sync-delimited', 'resynchronisation failed');
        }
      }
      return this.rawSend<T>(command, args, timeoutMs);
    };
    const p = this.queue.then(task, task);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Resynchronises the stream; afterwards replies line up with requests again. */
  async sync(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    const got = await this.send<number>('guest-sync-delimited', { id }, timeoutMs);
    if (got !== id)
      throw new GuestAgentError('guest-sync-delimited', `expected id ${id}, got ${String(got)}`);
  }

  ping(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.send('guest-ping', undefined, timeoutMs).then(() => undefined);
  }

  info(): Promise<{ version: string; supported_commands: { name: string; enabled: boolean }[] }> {
    return this.send('guest-info', undefined, DEFAULT_TIMEOUT_MS);
  }

  /**
   * Runs `path` with `args` in the guest (no shell) and waits for it, returning exit code and output.
   * Throws GuestExecTimeoutError when it runs longer than `timeoutMs` (the process is left running).
   */
  async exec(path: string, args: string[] = [], opts: GuestExecOptions = {}): Promise<GuestExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const started = await this.send<{ pid: number }>(
      'guest-exec',
      {
        path,
        arg: args,
        ...(opts.env ? { env: opts.env } : {}),
        ...(opts.input !== undefined ? { 'input-data': Buffer.from(opts.input).toString('base64') } : {}),
        'capture-output': true,
      },
      DEFAULT_TIMEOUT_MS,
    );
    const deadline = Date.now() + timeoutMs;
    let delayMs = 2;
    for (;;) {
      const st = await this.send<{
        exited: boolean;
        exitcode?: number;
        signal?: number;
        'out-data'?: string;
        'err-data'?: string;
        'out-truncated'?: boolean;
        'err-truncated'?: boolean;
      }>('guest-exec-status', { pid: started.pid }, DEFAULT_TIMEOUT_MS);
      if (st.exited) {
        return {
          exitCode: st.exitcode ?? -1,
          ...(st.signal !== undefined ? { signal: st.signal } : {}),
          stdout: Buffer.from(st['out-data'] ?? '', 'base64'),
          stderr: Buffer.from(st['err-data'] ?? '', 'base64'),
          truncated: Boolean(st['out-truncated'] || st['err-truncated']),
        };
      }
      if (Date.now() > deadline) throw new GuestExecTimeoutError(path, timeoutMs);
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 50);
    }
  }

  /** Reads a whole file from the guest. */
  async readFile(path: string, maxBytes = 64 * 1024 * 1024): Promise<Buffer> {
    const handle = await this.send<number>('guest-file-open', { path, mode: 'r' }, DEFAULT_TIMEOUT_MS);
    try {
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const r = await this.send<{ count: number; 'buf-b64': string; eof: boolean }>(
          'guest-file-read',
          { handle, count: FILE_CHUNK_BYTES },
          DEFAULT_TIMEOUT_MS,
        );
        const b = Buffer.from(r['buf-b64'], 'base64');
        total += b.length;
        if (total > maxBytes)
          throw new GuestAgentError('guest-file-read', `${path} is larger than ${maxBytes} bytes`);
        parts.push(b);
        if (r.eof || r.count === 0) break;
      }
      return Buffer.concat(parts);
    } finally {
      await this.send('guest-file-close', { handle }, DEFAULT_TIMEOUT_MS).catch(() => undefined);
    }
  }

  /** Creates or replaces a file in the guest with `data`. */
  async writeFile(path: string, data: Buffer | string): Promise<void> {
    const bytes = Buffer.from(data);
    const handle = await this.send<number>('guest-file-open', { path, mode: 'w' }, DEFAULT_TIMEOUT_MS);
    try {
      for (let off = 0; off < bytes.length; off += FILE_CHUNK_BYTES) {
        const chunk = bytes.subarray(off, off + FILE_CHUNK_BYTES);
        await this.send(
          'guest-file-write',
          { handle, 'buf-b64': chunk.toString('base64') },
          DEFAULT_TIMEOUT_MS,
        );
      }
      await this.send('guest-file-flush', { handle }, DEFAULT_TIMEOUT_MS);
    } finally {
      await this.send('guest-file-close', { handle }, DEFAULT_TIMEOUT_MS).catch(() => undefined);
    }
  }

  /**
   * Sets the guest's wall clock to `timeNs` (ns since the epoch). Note: qemu-ga then runs the guest's
   * /sbin/hwclock, which many images lack (it then fails after setting the time, and can be slow);
   * Hearth's restore path sets the clock through its own guest init instead.
   */
  setTime(timeNs: bigint | number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.send('guest-set-time', { time: Number(timeNs) }, timeoutMs).then(() => undefined);
  }

  /** Freezes every guest filesystem (FIFREEZE): all dirty data is on disk when it returns. */
  fsfreezeFreeze(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    return this.send<number>('guest-fsfreeze-freeze', undefined, timeoutMs);
  }

  fsfreezeThaw(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    return this.send<number>('guest-fsfreeze-thaw', undefined, timeoutMs);
  }

  fsfreezeStatus(): Promise<'thawed' | 'frozen'> {
    return this.send('guest-fsfreeze-status', undefined, DEFAULT_TIMEOUT_MS);
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
