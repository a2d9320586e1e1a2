/**
 * HTTP/1.1 clients: each request is checked (admission.ts) and forwarded to the app over HTTP/1.1
 * through the keep-alive agent of the microVM's current instance, bodies streamed both ways with
 * backpressure (pipe), never buffered. Responses are written as they arrive (server-sent events
 * included). Client keep-alive is Node's; `closeFor` ends a connection cleanly for a suspend.
 */
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ClientGoneError, type Admitted } from './admission.js';
import type { VmConnection } from './connections.js';
import type { GatewayContext } from './context.js';
import { ConnectionsClosedError, asGatewayError } from './errors.js';
import { sendErrorH1, visitRedirectHeaders } from './respond.js';
import { forwardRawRequestHeaders, responseHeaderList, parseTarget, type Target } from './routing.js';
import { upstreamError, type H1Call } from './upstream.js';

const CONN = Symbol('hearth.h1');

/** One request being forwarded; `cut` ends it because its microVM's connections are being closed. */
interface Exchange {
  vm: string;
  cut(): void;
}

/** One client HTTP/1.1 connection, as closeConnections sees it. */
class H1Connection implements VmConnection {
  closing = false;
  readonly inflight = new Set<Exchange>();
  private readonly vms = new Set<string>();
  private readonly closed: Promise<void>;

  constructor(
    readonly socket: Socket,
    private readonly ctx: GatewayContext,
  ) {
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        for (const vm of this.vms) ctx.registry.remove(vm, this);
        resolve();
      }),
    );
  }

  track(vm: string): void {
    if (this.vms.has(vm)) return;
    this.vms.add(vm);
    this.ctx.registry.add(vm, this);
  }

  /** The socket now carries a tunnel (CONNECT, WebSocket): closing earlier requests' VMs leaves it alone. */
  release(): void {
    for (const vm of this.vms) this.ctx.registry.remove(vm, this);
    this.vms.clear();
  }

  /** Cuts this VM's in-flight exchange (if any), then ends the connection after the current response. */
  closeFor(id: string): Promise<void> {
    this.closing = true;
    for (const ex of [...this.inflight]) if (ex.vm === id) ex.cut();
    if (this.inflight.size === 0) this.socket.end();
    return this.closed;
  }

  /** Called when an exchange finishes: a closing connection ends once nothing is in flight. */
  settled(ex: Exchange): void {
    this.inflight.delete(ex);
    if (this.closing && this.inflight.size === 0 && !this.socket.destroyed) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function connectionOf(socket: Socket, ctx: GatewayContext): H1Connection {
  const s = socket as Socket & { [CONN]?: H1Connection };
  return (s[CONN] ??= new H1Connection(socket, ctx));
}

/**
 * Hands a client socket over to a tunnel (CONNECT or WebSocket): if HTTP/1.1 requests came before
 * on it, closeConnections for their microVMs no longer ends the socket (the tunnel, possibly to
 * another microVM, registers itself).
 */
export function releaseH1Connection(socket: Socket): void {
  (socket as Socket & { [CONN]?: H1Connection })[CONN]?.release();
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/** Answers a browser's ?hearth-auth / ?hearth-microvm visit: cookies set, redirect to the same URL without them. */
export function redirectSettingCookies(
  res: ServerResponse,
  target: Target,
  admitted: Admitted,
  secure: boolean,
): void {
  res.writeHead(303, { ...visitRedirectHeaders(target, admitted, secure), 'content-length': 0 });
  res.end();
}

/** The 'request' handler of the gateway's HTTP/1.1 server. */
export function handleH1Request(ctx: GatewayContext, req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  const conn = connectionOf(socket, ctx);
  const secure = (socket as TLSSocket).encrypted === true;
  let target: Target;
  try {
    target = parseTarget(req.headers.host, req.url ?? '/', req.headers, ctx.routing);
  } catch (err) {
    ctx.metrics.error(undefined);
    sendErrorH1(res, asGatewayError(err), conn.closing);
    return;
  }
  const id = target.microvmId;
  ctx.metrics.request(id);
  conn.track(id);

  let ac: AbortController | undefined;
  let clientGone = false;
  /** Created only when the request is held (resume): most requests never need one. */
  const signal = () => {
    if (!ac) {
      ac = new AbortController();
      if (clientGone) ac.abort();
    }
    return ac.signal;
  };
  let call: H1Call | undefined;
  let upHeaders: http.IncomingHttpHeaders | undefined;
  let upDone = false;
  let streamOpen = false;
  const ex: Exchange = {
    vm: id,
    cut: () => {
      if (!call) return; // still held (waiting for a resume): the backend decides what happens to it
      call.abort();
      if (!res.headersSent) {
        ctx.metrics.error(id);
        sendErrorH1(res, new ConnectionsClosedError(id), true);
      } else if (upHeaders && upHeaders['content-length'] === undefined) {
        res.end(); // chunked: a clean end (an event stream's client reconnects)
      } else {
        res.destroy(); // a truncated body must not look complete
      }
    },
  };
  conn.inflight.add(ex);
  res.once('close', () => {
    if (!res.writableFinished) {
      clientGone = true;
      ac?.abort();
      if (!upDone) call?.abort();
    }
    if (streamOpen) ctx.metrics.streamClose(id);
    conn.settled(ex);
  });

  const fail = (err: unknown) => {
    if (err instanceof ClientGoneError) return;
    const e = asGatewayError(err);
    if (e.httpStatus >= 500) ctx.log.debug('request failed', { microvmId: id, code: e.code });
    ctx.metrics.error(id);
    sendErrorH1(res, e, conn.closing);
  };

  const forward = (admitted: Admitted) => {
    streamOpen = true;
    ctx.metrics.streamOpen(id);
    const headers = forwardRawRequestHeaders(req.rawHeaders, {
      remoteAddress: socket.remoteAddress,
      proto: secure ? 'https' : 'http',
    });
    call = ctx.upstreams.dispatchH1(admitted.route, target.port, admitted.upstream, {
      method: req.method ?? 'GET',
      path: target.path,
      headers,
      body: hasBody(req) ? req : null,
      onBodyChunk: (n) => ctx.metrics.bytesIn(id, n),
      onResponse: (status, statusText, h) => {
        upHeaders = h;
        const out = responseHeaderList(h);
        if (conn.closing) out.push('Connection', 'close');
        res.writeHead(status, statusText, out);
        res.on('drain', () => call?.resume());
      },
      onData: (chunk) => {
        ctx.metrics.bytesOut(id, chunk.length);
        return res.write(chunk);
      },
      onEnd: (trailers) => {
        upDone = true;
        if (upHeaders?.trailer !== undefined && res.chunkedEncoding) {
          const t = responseHeaderList(trailers, true);
          const pairs: [string, string][] = [];
          for (let i = 0; i + 1 < t.length; i += 2) pairs.push([t[i]!, t[i + 1]!]);
          res.addTrailers(pairs);
        }
        res.end();
      },
      onError: (err, responded) => {
        upDone = true;
        if (responded || res.headersSent) res.destroy();
        else fail(upstreamError(id, target.port, err));
      },
    });
  };

  ctx.admission.admit(target, signal).then((admitted) => {
    if (res.destroyed) return;
    if (target.fromQuery && (req.method === 'GET' || req.method === 'HEAD')) {
      redirectSettingCookies(res, target, admitted, secure);
      return;
    }
    forward(admitted);
  }, fail);
}
