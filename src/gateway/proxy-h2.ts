/**
 * HTTP/2 clients (ALPN h2). Each stream is checked like any request, then forwarded:
 *   - gRPC (`content-type: application/grpc*`) or `X-Hearth-Proxy-Force-H2: true`: over h2c to the
 *     app (proxy-h2c.ts), trailers and resets carried through;
 *   - anything else: over HTTP/1.1 through the VM instance's keep-alive agent (trailers kept when
 *     the app declares them).
 * Bodies are piped both ways with backpressure. `closeFor` ends the VM's streams (gRPC: status
 * UNAVAILABLE in trailers; others: 503 if nothing was sent yet, else a reset) and sends GOAWAY.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { ClientGoneError, type Admitted } from './admission.js';
import type { VmConnection } from './connections.js';
import type { GatewayContext } from './context.js';
import {
  ConnectionsClosedError,
  UnsupportedRequestError,
  UpstreamProtocolError,
  asGatewayError,
} from './errors.js';
import { forwardToH2c } from './proxy-h2c.js';
import { sendErrorH2, visitRedirectHeaders } from './respond.js';
import { forwardRequestHeaders, isHopByHopResponseHeader, parseTarget, type Target } from './routing.js';
import { upstreamError } from './upstream.js';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const CONN = Symbol('hearth.h2');

/** One stream being forwarded; `cut` ends it because its microVM's connections are being closed. */
export interface StreamHandle {
  cut(): void;
  readonly closed: Promise<void>;
}

/** One client HTTP/2 session, as closeConnections sees it. */
class H2Connection implements VmConnection {
  private readonly streams = new Map<string, Set<StreamHandle>>();

  constructor(
    readonly session: ServerHttp2Session,
    private readonly ctx: GatewayContext,
  ) {
    session.once('close', () => {
      for (const vm of this.streams.keys()) ctx.registry.remove(vm, this);
    });
  }

  track(vm: string, h: StreamHandle): void {
    let s = this.streams.get(vm);
    if (!s) {
      s = new Set();
      this.streams.set(vm, s);
      this.ctx.registry.add(vm, this);
    }
    s.add(h);
  }

  untrack(vm: string, h: StreamHandle): void {
    this.streams.get(vm)?.delete(h);
  }

  /** GOAWAY (streams of other microVMs finish normally), and this VM's streams are ended now. */
  async closeFor(id: string): Promise<void> {
    const mine = [...(this.streams.get(id) ?? [])];
    if (!this.session.closed && !this.session.destroyed) this.session.close();
    for (const h of mine) h.cut();
    await Promise.all(mine.map((h) => h.closed));
  }

  destroy(): void {
    this.session.destroy();
  }
}

function connectionOf(session: ServerHttp2Session, ctx: GatewayContext): H2Connection {
  const s = session as ServerHttp2Session & { [CONN]?: H2Connection };
  return (s[CONN] ??= new H2Connection(session, ctx));
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function redirectSettingCookies(
  stream: ServerHttp2Stream,
  target: Target,
  admitted: Admitted,
  secure: boolean,
): void {
  stream.respond({ ':status': 303, ...visitRedirectHeaders(target, admitted, secure) }, { endStream: true });
}

/** The 'stream' handler of the gateway's HTTP/2 server. */
export function handleH2Stream(
  ctx: GatewayContext,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
): void {
  stream.on('error', () => undefined); // resets surface as 'close'
  const session = stream.session as ServerHttp2Session;
  const conn = connectionOf(session, ctx);
  const secure = (session.socket as TLSSocket).encrypted === true;
  const method = first(headers[':method']) ?? 'GET';
  const authority = first(headers[':authority']) ?? headers.host;
  const grpc = (headers['content-type'] ?? '').startsWith('application/grpc');
  let target: Target;
  try {
    if (method === 'CONNECT')
      throw new UnsupportedRequestError(
        'CONNECT over HTTP/2',
        'open TCP tunnels with HTTP/1.1 CONNECT (ALPN http/1.1) to a microVM that runs with ALL_INGRESS',
      );
    target = parseTarget(authority, first(headers[':path']) ?? '/', headers, ctx.routing);
  } catch (err) {
    ctx.metrics.error(undefined);
    sendErrorH2(stream, asGatewayError(err), grpc);
    return;
  }
  const id = target.microvmId;
  ctx.metrics.request(id);

  const ac = new AbortController();
  /** Cuts the app side (client gone or exchange over). */
  let abortUpstream: (() => void) | undefined;
  /** Ends the exchange for closeConnections (set once forwarding started). */
  let cutExchange: (() => void) | undefined;
  let streamOpen = false;
  let resolveClosed!: () => void;
  const handle: StreamHandle = {
    closed: new Promise((r) => (resolveClosed = r)),
    cut: () => {
      if (!cutExchange) return; // still held (waiting for a resume): the backend decides
      ctx.metrics.error(id);
      cutExchange();
    },
  };
  conn.track(id, handle);
  stream.once('close', () => {
    ac.abort();
    abortUpstream?.();
    if (streamOpen) ctx.metrics.streamClose(id);
    conn.untrack(id, handle);
    resolveClosed();
  });

  const fail = (err: unknown) => {
    if (err instanceof ClientGoneError) return;
    const e = asGatewayError(err);
    ctx.metrics.error(id);
    sendErrorH2(stream, e, grpc);
  };

  ctx.admission
    .admit(target, () => ac.signal)
    .then((admitted) => {
      if (stream.destroyed || stream.closed) return;
      if (target.fromQuery && (method === 'GET' || method === 'HEAD')) {
        redirectSettingCookies(stream, target, admitted, secure);
        return;
      }
      streamOpen = true;
      ctx.metrics.streamOpen(id);
      const route = admitted.route;
      if (grpc || target.forceH2) {
        const h2c = forwardToH2c(ctx, {
          stream,
          headers,
          target,
          route,
          upstream: admitted.upstream,
          secure,
          grpc,
          method,
          authority,
          fail,
        });
        abortUpstream = h2c.abort;
        cutExchange = () => h2c.cut(new ConnectionsClosedError(id));
        return;
      }
      // HTTP/2 client -> HTTP/1.1 app.
      const h = forwardRequestHeaders(headers, {
        remoteAddress: session.socket?.remoteAddress,
        proto: secure ? 'https' : 'http',
      });
      if (authority !== undefined) h.host = authority;
      const flat: string[] = [];
      for (const k in h) {
        const v = h[k];
        if (Array.isArray(v)) for (const x of v) flat.push(k, x);
        else if (v !== undefined) flat.push(k, String(v));
      }
      let upDone = false;
      let upHeaders: http.IncomingHttpHeaders | undefined;
      let noBody = false;
      let trailers: http2.OutgoingHttpHeaders | undefined;
      const call = ctx.upstreams.dispatchH1(route, target.port, admitted.upstream, {
        method,
        path: target.path,
        headers: flat,
        body: stream.endAfterHeaders ? null : stream,
        onBodyChunk: (n) => ctx.metrics.bytesIn(id, n),
        onResponse: (status, _text, uh) => {
          upHeaders = uh;
          const rh: http2.OutgoingHttpHeaders = { ':status': status };
          for (const k in uh) if (!isHopByHopResponseHeader(k)) rh[k] = uh[k];
          noBody = method === 'HEAD' || status === 204 || status === 205 || status === 304;
          const waitForTrailers = !noBody && uh.trailer !== undefined;
          try {
            stream.respond(rh, { endStream: noBody, waitForTrailers });
          } catch (err) {
            upDone = true;
            call.abort();
            fail(new UpstreamProtocolError(id, target.port, err));
            return;
          }
          if (waitForTrailers)
            stream.once('wantTrailers', () => {
              try {
                stream.sendTrailers(trailers ?? {});
              } catch {
                stream.close(NGHTTP2_INTERNAL_ERROR);
              }
            });
          stream.on('drain', () => call.resume());
        },
        onData: (chunk) => {
          ctx.metrics.bytesOut(id, chunk.length);
          if (noBody || stream.closed || stream.destroyed) return true;
          return stream.write(chunk);
        },
        onEnd: (t) => {
          upDone = true;
          trailers = {};
          for (const k in t) if (!isHopByHopResponseHeader(k) && k !== 'content-length') trailers[k] = t[k];
          if (!noBody && !stream.closed && !stream.destroyed) stream.end();
        },
        onError: (err, responded) => {
          upDone = true;
          if (responded || stream.headersSent) stream.close(NGHTTP2_INTERNAL_ERROR);
          else fail(upstreamError(id, target.port, err));
        },
      });
      abortUpstream = () => {
        if (!upDone) call.abort();
      };
      cutExchange = () => {
        if (!stream.headersSent) {
          sendErrorH2(stream, new ConnectionsClosedError(id), false);
        } else if (upHeaders && upHeaders['content-length'] === undefined) {
          stream.end(); // a stream without a length (event stream): a clean end, the client reconnects
        } else {
          stream.close(NGHTTP2_CANCEL); // a truncated body must not look complete
        }
        abortUpstream?.();
      };
    }, fail);
}
