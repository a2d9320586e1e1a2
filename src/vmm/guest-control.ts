import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { GuestControlError } from './errors.js';
import { connectUnix, onLines } from './unix-socket.js';

/** Per-VM values applied after every restore: what makes a clone (or a resumed VM) its own. */
export interface RestoreFixup {
  /** Host wall clock to set in the guest, ns since the epoch. */
  realtimeNs: bigint;
  /** Fresh host entropy mixed into the guest RNG (RNDADDENTROPY + RNDRESEEDCRNG). */
  entropy: Buffer;
  hostname: string;
  /** 32 lowercase hex digits, written to /etc/machine-id (and /run/hearth/machine-id). */
  machineId: string;
}

interface Pending {
  resolve: (v: string) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

/** An RFC 1123 host name label. */
export const HOSTNAME_PATTERN = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/**
 * Client for hearth-init's control port (virtio-serial "org.hearth.ctl.0"): one text line per
 * request and reply, matched by id. Much cheaper than a guest-agent exec, which is why restore
 * hygiene goes through it.
 */
export class GuestControlClient {
  private nextId = 1;
  private closed = false;
  /** Prefix of this connection's request ids: replies meant for an earlier connection never match. */
  private readonly tag = randomBytes(4).toString('hex');
  private readonly pending = new Map<string, Pending>();

  private constructor(private readonly socket: Socket) {
    onLines(socket, (line) => {
      const sp = line.indexOf(' ');
      const id = line.slice(0, sp);
      const p = this.pending.get(id);
      if (!p) return; // a reply to a request of an earlier connection
      this.pending.delete(id);
      clearTimeout(p.timer);
      const rest = line.slice(sp + 1);
      if (rest === 'ok' || rest.startsWith('ok ')) p.resolve(rest.slice(3));
      else p.reject(new GuestControlError(p.command, rest.replace(/^err /, '')));
    });
    const onClose = () => {
      this.closed = true;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new GuestControlError(p.command, 'connection closed'));
      }
      this.pending.clear();
    };
    socket.on('close', onClose);
    socket.on('error', onClose);
  }

  static async connect(
    path: string,
    opts: { timeoutMs?: number; abort?: () => Error | undefined } = {},
  ): Promise<GuestControlClient> {
    const socket = await connectUnix(path, opts.timeoutMs ?? 10_000, opts.abort);
    return new GuestControlClient(socket);
  }

  /** Sends one request and resolves with the text after "ok" in its reply. */
  request(command: string, args: string[] = [], timeoutMs = 10_000): Promise<string> {
    if (this.closed) return Promise.reject(new GuestControlError(command, 'connection closed'));
    const id = `${this.tag}-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GuestControlError(command, `no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, command });
      this.socket.write([id, command, ...args].join(' ') + '\n');
    });
  }

  async ping(timeoutMs?: number): Promise<void> {
    await this.request('ping', [], timeoutMs);
  }

  /**
   * Applies restore hygiene in the guest: clock, RNG reseed, hostname, machine-id; with `thaw`, first
   * thaws filesystems frozen for the snapshot (one round trip for both).
   */
  async fixup(f: RestoreFixup, timeoutMs?: number, opts: { thaw?: boolean } = {}): Promise<void> {
    if (!HOSTNAME_PATTERN.test(f.hostname))
      throw new GuestControlError('fixup', `invalid hostname '${f.hostname}'`);
    if (!/^[0-9a-f]{32}$/.test(f.machineId))
      throw new GuestControlError('fixup', 'machine id must be 32 hex digits');
    if (f.entropy.length < 16 || f.entropy.length > 512)
      throw new GuestControlError('fixup', 'entropy must be 16-512 bytes');
    const args = [f.realtimeNs.toString(), f.entropy.toString('hex'), f.hostname, f.machineId];
    if (opts.thaw) args.push('thaw');
    await this.request('fixup', args, timeoutMs);
  }

  /**
   * Freezes every writable guest filesystem (FIFREEZE, innermost first): when it resolves, every
   * write the guest completed is on its disks and the filesystems are clean. Returns how many.
   */
  async freeze(timeoutMs?: number): Promise<number> {
    return Number(await this.request('freeze', [], timeoutMs));
  }

  /** Thaws every frozen guest filesystem. Returns how many were thawed. */
  async thaw(timeoutMs?: number): Promise<number> {
    return Number(await this.request('thaw', [], timeoutMs));
  }

  /** The workload's state as hearth-init sees it. */
  async status(): Promise<{ state: 'running' | 'exited' | 'none'; pid?: number; exitCode?: number }> {
    const [state, n] = (await this.request('status')).split(' ');
    if (state === 'running') return { state, pid: Number(n) };
    if (state === 'exited') return { state, exitCode: Number(n) };
    return { state: 'none' };
  }

  /** Asks init to stop the workload (SIGTERM, then SIGKILL after `graceMs`), sync and power off. */
  async poweroff(graceMs: number, timeoutMs?: number): Promise<void> {
    await this.request('poweroff', [String(graceMs)], timeoutMs);
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
