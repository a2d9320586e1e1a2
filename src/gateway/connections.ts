/**
 * Which open client connections carry traffic of which microVM, so that `closeConnections(id)` can
 * close exactly those before the microVM is suspended. Each protocol module registers its own kind
 * of connection (HTTP/1.1 socket, HTTP/2 session, WebSocket or CONNECT tunnel) as a `VmConnection`.
 */
import type { Socket } from 'node:net';
import type { GatewayContext } from './context.js';

export interface VmConnection {
  /**
   * Closes this connection's traffic of microVM `id` cleanly (protocol-specific: Connection: close,
   * GOAWAY, close frame 1012). Resolves when that traffic is gone.
   */
  closeFor(id: string): Promise<void>;
  /** Closes it at once, no questions asked (the grace period ran out). */
  destroy(): void;
}

export class ConnectionRegistry {
  private readonly byVm = new Map<string, Set<VmConnection>>();

  add(id: string, c: VmConnection): void {
    let s = this.byVm.get(id);
    if (!s) {
      s = new Set();
      this.byVm.set(id, s);
    }
    s.add(c);
  }

  remove(id: string, c: VmConnection): void {
    const s = this.byVm.get(id);
    if (!s) return;
    s.delete(c);
    if (s.size === 0) this.byVm.delete(id);
  }

  count(id: string): number {
    return this.byVm.get(id)?.size ?? 0;
  }

  /**
   * Closes every connection of `id` cleanly; those not closed within `graceMs` are destroyed.
   * Resolves when all are closed or destroyed.
   */
  async closeAll(id: string, graceMs: number): Promise<void> {
    const conns = [...(this.byVm.get(id) ?? [])];
    if (conns.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    await Promise.all(
      conns.map(async (c) => {
        const r = await Promise.race([
          c.closeFor(id).then(
            () => 'ok' as const,
            () => 'ok' as const,
          ),
          grace,
        ]);
        if (r === 'timeout') c.destroy();
      }),
    );
    clearTimeout(timer);
  }
}

/**
 * A tunnel between a client socket and an app socket of one microVM (WebSocket, CONNECT), after
 * the handshake. Construction (the subclass then starts relaying): Nagle and idle timeouts off on
 * both sockets, stream-open, the tunnel registered for closeConnections. Once both sockets are
 * closed: unregistered, stream-close (always paired with the stream-open), `done` resolves.
 */
export abstract class SocketTunnel implements VmConnection {
  protected readonly done: Promise<void>;

  constructor(
    protected readonly ctx: GatewayContext,
    protected readonly vm: string,
    protected readonly client: Socket,
    protected readonly app: Socket,
  ) {
    for (const s of [client, app]) {
      s.setNoDelay(true);
      s.setTimeout(0);
    }
    ctx.metrics.streamOpen(vm);
    ctx.registry.add(vm, this);
    const closed = (s: Socket) =>
      new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
    this.done = Promise.all([closed(client), closed(app)]).then(() => {
      ctx.registry.remove(vm, this);
      ctx.metrics.streamClose(vm);
    });
  }

  abstract closeFor(id: string): Promise<void>;

  destroy(): void {
    this.client.destroy();
    this.app.destroy();
  }
}
