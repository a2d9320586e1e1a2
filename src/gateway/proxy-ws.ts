/**
 * WebSockets (HTTP/1.1 Upgrade). The handshake is checked like any request (token also accepted as
 * the subprotocols `hearth` + `hearth.authentication.<token>`, port as `hearth.port.N`), forwarded
 * to the app without Hearth's subprotocols, and after the app's 101 the two sockets are piped raw:
 * no per-frame parsing beyond following frame boundaries (headers only), so that `closeFor` can
 * insert close frames cleanly: 1012 "service restart" to the client, 1001 to the app.
 *
 * If the client offered `hearth` and the app selected no subprotocol, the gateway answers with
 * `hearth` (browsers and most clients fail a handshake that selects none of those offered).
 */
import http from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ClientGoneError } from './admission.js';
import { SocketTunnel } from './connections.js';
import type { GatewayContext } from './context.js';
import { UnsupportedRequestError, asGatewayError } from './errors.js';
import { releaseH1Connection } from './proxy-h1.js';
import { sendErrorRaw } from './respond.js';
import { SUBPROTOCOL, forwardRequestHeaders, parseTarget, type Target } from './routing.js';
import { upstreamError } from './upstream.js';
import {
  FrameBoundaryTracker,
  WS_CLOSE_GOING_AWAY,
  WS_CLOSE_SERVICE_RESTART,
  closeFrame,
} from './ws-frames.js';

/** A WebSocket between a client and an app, after the handshake. */
class WsTunnel extends SocketTunnel {
  private readonly fromClient = new FrameBoundaryTracker();
  private readonly fromApp = new FrameBoundaryTracker();
  /** A close frame is due to the client (resp. the app) at the next frame boundary. */
  private closeClientDue = false;
  private closeAppDue = false;
  /** The close frame was sent: nothing more is forwarded that way. */
  private clientClosed = false;
  private appClosed = false;

  constructor(ctx: GatewayContext, vm: string, client: Socket, app: Socket) {
    super(ctx, vm, client, app);
    client.on('data', (c: Buffer) => this.onClientData(c));
    app.on('data', (c: Buffer) => this.onAppData(c));
    client.on('end', () => app.end());
    app.on('end', () => client.end());
    client.on('error', () => app.destroy());
    app.on('error', () => client.destroy());
    client.on('close', () => app.destroy());
    app.on('close', () => {
      // Let the client read what was already written, then close.
      if (!client.destroyed) client.end();
      setTimeout(() => client.destroy(), ctx.closeGraceMs).unref();
    });
  }

  /** Starts forwarding; `clientHead`/`appHead` are bytes read past the handshake on each side. */
  start(clientHead: Buffer, appHead: Buffer): void {
    if (appHead.length) this.onAppData(appHead);
    if (clientHead.length) this.onClientData(clientHead);
  }

  private onClientData(c: Buffer): void {
    this.ctx.metrics.bytesIn(this.vm, c.length);
    if (this.appClosed) return;
    if (this.closeAppDue) {
      const k = this.fromClient.advance(c, true);
      if (k > 0) this.app.write(c.subarray(0, k));
      if (this.fromClient.atBoundary) this.closeApp();
      return;
    }
    this.fromClient.advance(c);
    if (!this.app.write(c)) {
      this.client.pause();
      this.app.once('drain', () => this.client.resume());
    }
  }

  private onAppData(c: Buffer): void {
    this.ctx.metrics.bytesOut(this.vm, c.length);
    if (this.clientClosed) return;
    if (this.closeClientDue) {
      const k = this.fromApp.advance(c, true);
      if (k > 0) this.client.write(c.subarray(0, k));
      if (this.fromApp.atBoundary) this.closeClient();
      return;
    }
    this.fromApp.advance(c);
    if (!this.client.write(c)) {
      this.app.pause();
      this.client.once('drain', () => this.app.resume());
    }
  }

  private closeClient(): void {
    this.closeClientDue = false;
    this.clientClosed = true;
    this.client.end(closeFrame(WS_CLOSE_SERVICE_RESTART, 'service restart', false));
    this.app.resume(); // drain (and drop) whatever the app still sends
  }

  private closeApp(): void {
    this.closeAppDue = false;
    this.appClosed = true;
    this.app.end(closeFrame(WS_CLOSE_GOING_AWAY, 'going away', true));
    this.client.resume();
  }

  /** Close frames both ways at the next frame boundaries, then FIN; resolves when both sockets are closed. */
  closeFor(_id: string): Promise<void> {
    if (!this.clientClosed) {
      this.closeClientDue = true;
      if (this.fromApp.atBoundary) this.closeClient();
    }
    if (!this.appClosed) {
      this.closeAppDue = true;
      if (this.fromClient.atBoundary) this.closeApp();
    }
    return this.done;
  }
}

/** The 101 head to send to the client: the app's, plus `Sec-WebSocket-Protocol: hearth` if needed. */
function switchingHead(upRes: IncomingMessage, target: Target): string {
  let out = 'HTTP/1.1 101 Switching Protocols\r\n';
  let hasProtocol = false;
  const raw = upRes.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.toLowerCase() === 'sec-websocket-protocol') hasProtocol = true;
    out += `${name}: ${raw[i + 1]!}\r\n`;
  }
  if (!hasProtocol && target.offeredHearthSubprotocol) out += `Sec-WebSocket-Protocol: ${SUBPROTOCOL}\r\n`;
  return out + '\r\n';
}

/** The app answered the upgrade with a normal response: pass it on and close. */
function relayRefusal(client: Socket, upRes: IncomingMessage): void {
  let head = `HTTP/1.1 ${upRes.statusCode ?? 502} ${upRes.statusMessage ?? ''}\r\n`;
  const raw = upRes.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!.toLowerCase();
    if (n === 'connection' || n === 'transfer-encoding' || n === 'keep-alive') continue;
    head += `${raw[i]!}: ${raw[i + 1]!}\r\n`;
  }
  client.write(head + 'Connection: close\r\n\r\n');
  upRes.pipe(client);
}

/** The 'upgrade' handler of the gateway's HTTP/1.1 server. */
export function handleUpgrade(ctx: GatewayContext, req: IncomingMessage, socket: Socket, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  releaseH1Connection(socket);
  const secure = (socket as TLSSocket).encrypted === true;
  let target: Target;
  try {
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket')
      throw new UnsupportedRequestError(`Upgrade: ${String(req.headers.upgrade).slice(0, 40)}`);
    target = parseTarget(req.headers.host, req.url ?? '/', req.headers, ctx.routing, true);
  } catch (err) {
    ctx.metrics.error(undefined);
    sendErrorRaw(socket, asGatewayError(err));
    return;
  }
  const id = target.microvmId;
  ctx.metrics.request(id);
  const ac = new AbortController();
  socket.once('close', () => ac.abort());
  const fail = (err: unknown) => {
    if (err instanceof ClientGoneError) return;
    ctx.metrics.error(id);
    sendErrorRaw(socket, asGatewayError(err));
  };
  ctx.admission
    .admit(target, () => ac.signal)
    .then(({ upstream }) => {
      if (socket.destroyed) return;
      const headers = forwardRequestHeaders(req.headers, {
        remoteAddress: socket.remoteAddress,
        proto: secure ? 'https' : 'http',
        websocketSubprotocols: target.appSubprotocols,
      });
      const upReq = http.request({
        host: upstream.host,
        port: upstream.port,
        method: 'GET',
        path: target.path,
        headers,
        agent: false, // a fresh connection: an upgraded socket is never pooled
        setHost: false,
      });
      ctx.upstreams.guardConnect(upReq, id, target.port);
      socket.once('close', () => upReq.destroy());
      upReq.on('upgrade', (upRes, upSocket, upHead) => {
        if (socket.destroyed) {
          upSocket.destroy();
          return;
        }
        socket.write(switchingHead(upRes, target));
        new WsTunnel(ctx, id, socket, upSocket).start(head, upHead);
      });
      upReq.on('response', (upRes) => relayRefusal(socket, upRes));
      upReq.on('error', (err) => fail(upstreamError(id, target.port, err)));
      upReq.end();
    }, fail);
}
