/**
 * Raw TCP tunnels (HTTP/1.1 CONNECT, RFC 9110 9.3.6) to a guest port of a microVM that runs with
 * ALL_INGRESS. The client sends `CONNECT <microvmId>.<domain>:<port> HTTP/1.1` (or any host with
 * X-Hearth-Microvm-Id) with its token in X-Hearth-Proxy-Auth or `Proxy-Authorization: Bearer`, on
 * the TLS listener or the plaintext one. The request is checked like any other (admission.ts, kind
 * 'tcp': HTTP_INGRESS and NO_INGRESS refuse it), the gateway connects to the guest port, answers
 * `200 Connection Established`, and from then on pipes bytes both ways, a FIN for a FIN (half-close
 * is carried through). Nothing of the CONNECT request reaches the guest: only the bytes that follow.
 *
 * A tunnel is one stream for the activity feed (stream-open/stream-close, bytes each way), like a
 * WebSocket; `closeFor` ends it (FIN both ways) when its microVM is suspended or terminated.
 * Plain HTTP/2 CONNECT (RFC 9113 8.5) is not offered: it is answered 400 in proxy-h2.ts.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ClientGoneError } from './admission.js';
import { SocketTunnel } from './connections.js';
import type { GatewayContext } from './context.js';
import { UnsupportedRequestError, asGatewayError } from './errors.js';
import { releaseH1Connection } from './proxy-h1.js';
import { sendErrorRaw } from './respond.js';
import { parseConnectTarget, type Target } from './routing.js';

/** What the client reads once its tunnel is open. */
export const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/** A TCP tunnel between a client and a guest port, after the 200. */
class TcpTunnel extends SocketTunnel {
  /** closeFor was called: nothing more is forwarded either way. */
  private closing = false;

  /** Takes over both sockets (the client's must allow half-close) and starts relaying (see SocketTunnel). */
  constructor(ctx: GatewayContext, vm: string, client: Socket, app: Socket) {
    super(ctx, vm, client, app);
    this.relay(client, app, (n) => ctx.metrics.bytesIn(vm, n));
    this.relay(app, client, (n) => ctx.metrics.bytesOut(vm, n));
  }

  /** Forwards `clientHead` (bytes the client sent right after its CONNECT head) to the guest. */
  start(clientHead: Buffer): void {
    if (clientHead.length === 0) return;
    this.ctx.metrics.bytesIn(this.vm, clientHead.length);
    this.app.write(clientHead);
  }

  /**
   * `from`'s bytes go to `to` with backpressure, its FIN as a FIN. An error on `from` destroys `to`;
   * once `from` is closed, `to` ends and is destroyed if it has not closed within closeGraceMs.
   */
  private relay(from: Socket, to: Socket, count: (n: number) => void): void {
    from.on('data', (c: Buffer) => {
      if (this.closing) return;
      count(c.length);
      if (!to.write(c)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.on('end', () => to.end());
    from.on('error', () => to.destroy());
    from.on('close', () => {
      if (to.destroyed) return;
      to.end();
      setTimeout(() => to.destroy(), this.ctx.closeGraceMs).unref();
    });
  }

  /** FIN to both sides (what was already written is flushed), then both closed; stops forwarding. */
  closeFor(_id: string): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      for (const s of [this.client, this.app]) {
        s.resume(); // read and drop what still comes, so that closing sends a FIN, not a reset
        s.end(() => s.destroy());
      }
    }
    return this.done;
  }
}

/**
 * Answers `err` and closes: what the client still sends is read and dropped (so that the answer is
 * not lost to a reset), its FIN closes the socket, and a client that keeps its side open is cut
 * after `graceMs`.
 */
function refuse(socket: Socket, err: unknown, graceMs: number): void {
  socket.allowHalfOpen = false;
  sendErrorRaw(socket, asGatewayError(err));
  socket.resume();
  setTimeout(() => socket.destroy(), graceMs).unref();
}

/** RFC 9110 9.3.6: a CONNECT request has no content; one announced is refused rather than tunnelled. */
function announcesBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl.trim() !== '0');
}

/**
 * The 'connect' handler of the gateway's HTTP/1.1 server. Answers a JSON error on the raw socket
 * and closes it (400 malformed, 403 token/port/ingress, 404..., 502/504 guest port unreachable), or
 * opens the tunnel. May resume a SUSPENDED microVM (auto-resume), as any request does.
 */
export function handleConnect(ctx: GatewayContext, req: IncomingMessage, socket: Socket, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  // The client's FIN must reach the guest while the guest can still answer (half-close).
  socket.allowHalfOpen = true;
  releaseH1Connection(socket);
  let target: Target;
  try {
    if (announcesBody(req))
      throw new UnsupportedRequestError(
        'a CONNECT request with a body',
        'send CONNECT without Content-Length or Transfer-Encoding; the tunnel carries the bytes sent after the 200',
      );
    target = parseConnectTarget(req.url ?? '', req.headers, ctx.routing);
  } catch (err) {
    ctx.metrics.error(undefined);
    refuse(socket, err, ctx.closeGraceMs);
    return;
  }
  const id = target.microvmId;
  ctx.metrics.request(id);
  const ac = new AbortController();
  socket.once('close', () => ac.abort());
  ctx.admission
    .admit(target, () => ac.signal, 'tcp')
    .then(({ route, upstream }) => ctx.upstreams.connectTcp(route, target.port, upstream))
    .then(
      (app) => {
        if (socket.destroyed) {
          app.destroy();
          return;
        }
        socket.write(CONNECT_ESTABLISHED);
        new TcpTunnel(ctx, id, socket, app).start(head);
      },
      (err: unknown) => {
        if (err instanceof ClientGoneError) return;
        ctx.metrics.error(id);
        refuse(socket, err, ctx.closeGraceMs);
      },
    );
}
