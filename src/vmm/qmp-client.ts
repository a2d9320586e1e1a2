import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { QmpError, QmpTimeoutError } from './errors.js';
import { connectUnix, onLines } from './unix-socket.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
const MAX_BUFFERED_EVENTS = 200;

/**
 * A client for QEMU's QMP protocol over a Unix socket: commands matched to replies by id, typed
 * errors (QmpError with QEMU's error class, QmpTimeoutError), and events (emitted as 'event', and
 * buffered so `waitForEvent` never misses one that arrived first).
 */
export class QmpClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly buffered: QmpEvent[] = [];
  private closed = false;
  readonly greeting: Promise<Record<string, unknown>>;

  private constructor(private readonly socket: Socket) {
    super();
    let onGreeting: (g: Record<string, unknown>) => void = () => undefined;
    this.greeting = new Promise((r) => (onGreeting = r));
    onLines(socket, (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if ('QMP' in msg) return onGreeting(msg);
      if (typeof msg.event === 'string') {
        const ev = msg as unknown as QmpEvent;
        this.buffered.push(ev);
        if (this.buffered.length > MAX_BUFFERED_EVENTS) this.buffered.shift();
        this.emit('event', ev);
        return;
      }
      const id = msg.id === undefined ? undefined : String(msg.id);
      const p = id === undefined ? undefined : this.pending.get(id);
      if (!p || id === undefined) return;
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (msg.error) {
        const err = msg.error as { class?: string; desc?: string };
        p.reject(new QmpError(p.command, err.desc ?? 'unknown error', err.class));
      } else p.resolve(msg.return);
    });
    const onClose = () => {
      if (this.closed) return;
      this.closed = true;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new QmpError(p.command, 'connection closed (QEMU exited?)'));
      }
      this.pending.clear();
      this.emit('close');
    };
    socket.on('close', onClose);
    socket.on('error', onClose);
  }

  /**
   * Connects, reads the greeting and negotiates capabilities. Retries while QEMU creates the socket;
   * `abort` lets the caller stop early when the QEMU process has already exited.
   */
  static async connect(
    path: string,
    opts: { timeoutMs?: number; abort?: () => Error | undefined } = {},
  ): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = await connectUnix(path, timeoutMs, opts.abort);
    const client = new QmpClient(socket);
    try {
      await withTimeout(client.greeting, timeoutMs, () => new QmpTimeoutError('greeting', timeoutMs));
      await client.execute('qmp_capabilities');
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs one QMP command and resolves with its `return` value. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError(command, 'connection closed'));
    const id = String(this.nextId++);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(
        JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n',
      );
    });
  }

  /** Resolves with the first event named `name` (matching `predicate`), including already-buffered ones. */
  waitForEvent(
    name: string,
    opts: { timeoutMs?: number; predicate?: (e: QmpEvent) => boolean } = {},
  ): Promise<QmpEvent> {
    const match = (e: QmpEvent) => e.event === name && (opts.predicate?.(e) ?? true);
    const idx = this.buffered.findIndex(match);
    if (idx >= 0) return Promise.resolve(this.buffered.splice(idx, 1)[0]!);
    if (this.closed) return Promise.reject(new QmpError(`wait for ${name}`, 'connection closed'));
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (e: QmpEvent) => {
        if (!match(e)) return;
        const i = this.buffered.indexOf(e);
        if (i >= 0) this.buffered.splice(i, 1);
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new QmpError(`wait for ${name}`, 'connection closed'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpTimeoutError(`wait for ${name}`, timeoutMs));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export function withTimeout<T>(p: Promise<T>, timeoutMs: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(onTimeout()), timeoutMs);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e as Error);
      },
    );
  });
}
