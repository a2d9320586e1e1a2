/**
 * Connections from the gateway to apps inside microVMs. HTTP/1.1: one keep-alive connection pool
 * (undici Agent) per microVM *instance*: a resumed VM is a new instance with a new pool, so a socket
 * pooled before a suspend is never reused. h2c: one multiplexed session per (instance, port), opened
 * on first use. WebSocket upgrades and CONNECT tunnels use a fresh connection each (proxy-ws.ts,
 * proxy-connect.ts).
 *
 * undici rather than node:http for HTTP/1.1: it costs about a third less CPU per proxied request
 * (bench/gateway-proxy.ts), which is most of the gateway's budget.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import net, { isIPv6 } from 'node:net';
import { Readable } from 'node:stream';
import { Agent } from 'undici';
import type { Dispatcher } from 'undici';
import type { UpstreamAddress, VmRoute } from './backend.js';
import {
  UpstreamProtocolError,
  UpstreamResetError,
  UpstreamTimeoutError,
  UpstreamUnreachableError,
  type GatewayError,
} from './errors.js';

export interface UpstreamOptions {
  /** Give up connecting to an app after this long. Default 10 s. */
  connectTimeoutMs: number;
  /** Idle pooled HTTP/1.1 sockets are closed after this long (below common app keep-alive timeouts of 5 s). Default 4 s. */
  idleSocketTimeoutMs: number;
}

/** Connection-level receive window of h2c sessions: one stalled stream cannot block the others. */
const H2_SESSION_WINDOW_BYTES = 32 * 1024 * 1024;

interface VmPool {
  instance: number;
  agent: Agent;
  /** `http://host:port` per guest port (computed once: it is on every request's path). */
  origins: Map<number, string>;
  h2c: Map<number, Promise<http2.ClientHttp2Session>>;
}

export function hostForUrl(address: string): string {
  return isIPv6(address) ? `[${address}]` : address;
}

/** Maps a socket error while reaching the app to what the client is told. */
export function upstreamError(id: string, port: number, err: unknown): GatewayError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (err instanceof UpstreamTimeoutError) return err;
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new UpstreamTimeoutError(id, port, 0);
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND')
    return new UpstreamUnreachableError(id, port, err);
  if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
    return new UpstreamProtocolError(id, port, err);
  return new UpstreamResetError(id, port, err);
}

/** One HTTP/1.1 request to an app, as dispatchH1 reports it. */
export interface H1Exchange {
  method: string;
  /** Origin-form request target. */
  path: string;
  /** Flat [name, value, ...], hop-by-hop headers already removed. */
  headers: string[];
  /** The request body, streamed; null when there is none. */
  body: AsyncIterable<Buffer> | null;
  onBodyChunk(bytes: number): void;
  onResponse(status: number, statusText: string, headers: http.IncomingHttpHeaders): void;
  /** A response body chunk; return false to stop reading until H1Call.resume(). */
  onData(chunk: Buffer): boolean;
  onEnd(trailers: http.IncomingHttpHeaders): void;
  /** Not called after abort(). `responded`: the response head was already delivered. */
  onError(err: Error, responded: boolean): void;
}

export interface H1Call {
  abort(): void;
  resume(): void;
}

async function* counted(src: AsyncIterable<Buffer>, onChunk: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const c of src) {
    onChunk(c.length);
    yield c;
  }
}

export class Upstreams {
  private readonly pools = new Map<string, VmPool>();

  constructor(private readonly o: UpstreamOptions) {}

  private pool(route: VmRoute): VmPool {
    let p = this.pools.get(route.microvmId);
    // A newer instance replaces the pool; a route read before a resume (older instance) uses the current one.
    if (p && route.instance > p.instance) {
      this.closeVm(route.microvmId);
      p = undefined;
    }
    if (!p) {
      p = {
        instance: route.instance,
        agent: new Agent({
          pipelining: 1,
          keepAliveTimeout: this.o.idleSocketTimeoutMs,
          connectTimeout: this.o.connectTimeoutMs,
          headersTimeout: 0, // the app decides how long it thinks (long polls, event streams)
          bodyTimeout: 0,
        }),
        h2c: new Map(),
        origins: new Map(),
      };
      this.pools.set(route.microvmId, p);
    }
    return p;
  }

  /**
   * Sends one HTTP/1.1 request to guest port `port` of the route's instance, reached at `at`, and
   * streams the response to `x`, with backpressure: when `x.onData` returns false, reading stops
   * until `resume()`. A bodyless GET/HEAD whose pooled connection was closed by the app before any
   * response is retried once.
   */
  dispatchH1(route: VmRoute, port: number, at: UpstreamAddress, x: H1Exchange): H1Call {
    const pool = this.pool(route);
    let origin = pool.origins.get(port);
    if (origin === undefined) {
      origin = `http://${hostForUrl(at.host)}:${at.port}`;
      pool.origins.set(port, origin);
    }
    const agent = pool.agent;
    const body = x.body === null ? null : Readable.from(counted(x.body, x.onBodyChunk));
    let controller: Dispatcher.DispatchController | undefined;
    let aborted = false;
    let responded = false;
    let retried = false;
    const send = () =>
      agent.dispatch(
        { origin, path: x.path, method: x.method as Dispatcher.HttpMethod, headers: x.headers, body },
        {
          onRequestStart(c) {
            controller = c;
            if (aborted) c.abort(new Error('aborted'));
          },
          onResponseStart(_c, status, headers, statusMessage) {
            if (status < 200) return;
            responded = true;
            x.onResponse(status, statusMessage ?? '', headers);
          },
          onResponseData(c, chunk) {
            if (!x.onData(chunk)) c.pause();
          },
          onResponseEnd(_c, trailers) {
            x.onEnd(trailers);
          },
          onResponseError(_c, err) {
            if (aborted) return;
            const code = (err as NodeJS.ErrnoException).code;
            if (
              !responded &&
              !retried &&
              body === null &&
              (x.method === 'GET' || x.method === 'HEAD') &&
              (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET')
            ) {
              retried = true;
              send();
              return;
            }
            x.onError(err, responded);
          },
        },
      );
    send();
    return {
      abort() {
        aborted = true;
        controller?.abort(new Error('aborted'));
      },
      resume() {
        controller?.resume();
      },
    };
  }

  /**
   * Guards a new upstream request's connect phase: destroys it with UpstreamTimeoutError if the TCP
   * connection is not up within connectTimeoutMs.
   */
  guardConnect(req: http.ClientRequest, id: string, port: number): void {
    req.once('socket', (s) => {
      if (!s.connecting) return;
      const t = setTimeout(
        () => req.destroy(new UpstreamTimeoutError(id, port, this.o.connectTimeoutMs)),
        this.o.connectTimeoutMs,
      );
      s.once('connect', () => clearTimeout(t));
      s.once('close', () => clearTimeout(t));
    });
  }

  /**
   * Opens a raw TCP connection to guest port `port`, reached at `at`, for a CONNECT tunnel:
   * half-close allowed (the tunnel forwards each side's FIN), Nagle off. Precondition: RUNNING.
   * Rejects with a GatewayError: UPSTREAM_UNREACHABLE (nothing listens), UPSTREAM_CONNECT_TIMEOUT
   * after connectTimeoutMs, UPSTREAM_RESET. The socket is the caller's: it must destroy it.
   */
  connectTcp(route: VmRoute, port: number, at: UpstreamAddress): Promise<net.Socket> {
    const id = route.microvmId;
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: at.host, port: at.port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(
        () => s.destroy(new UpstreamTimeoutError(id, port, this.o.connectTimeoutMs)),
        this.o.connectTimeoutMs,
      );
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.on('error', (err) => {
        clearTimeout(timer);
        reject(upstreamError(id, port, err)); // no effect once connected: the tunnel listens too
      });
    });
  }

  /**
   * The h2c session to guest port `port` of the route's instance (reached at `at`), connecting if
   * needed. Rejects with a GatewayError (unreachable, timeout) when the app does not accept an
   * HTTP/2 connection.
   */
  h2c(route: VmRoute, port: number, at: UpstreamAddress): Promise<http2.ClientHttp2Session> {
    const p = this.pool(route);
    let s = p.h2c.get(port);
    if (!s) {
      s = this.connectH2c(route, port, at, p);
      p.h2c.set(port, s);
      s.catch(() => {
        if (p.h2c.get(port) === s) p.h2c.delete(port);
      });
    }
    return s;
  }

  private connectH2c(
    route: VmRoute,
    port: number,
    at: UpstreamAddress,
    pool: VmPool,
  ): Promise<http2.ClientHttp2Session> {
    const id = route.microvmId;
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://${hostForUrl(at.host)}:${at.port}`, {
        settings: { enablePush: false },
      });
      const forget = () => {
        const cur = pool.h2c.get(port);
        if (cur)
          void cur.then(
            (x) => x === session && pool.h2c.delete(port),
            () => undefined,
          );
      };
      const timer = setTimeout(() => {
        session.destroy();
        reject(new UpstreamTimeoutError(id, port, this.o.connectTimeoutMs));
      }, this.o.connectTimeoutMs);
      session.once('connect', () => {
        clearTimeout(timer);
        try {
          session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
        } catch {
          // best effort
        }
        resolve(session);
      });
      session.on('error', (err) => {
        clearTimeout(timer);
        reject(upstreamError(id, port, err));
        forget();
      });
      session.once('goaway', forget);
      session.once('close', forget);
    });
  }

  /** Closes every pooled connection of microVM `id` (all instances); in-flight upstream requests are cut. */
  closeVm(id: string): void {
    const p = this.pools.get(id);
    if (!p) return;
    this.pools.delete(id);
    void p.agent.destroy().catch(() => undefined);
    for (const s of p.h2c.values())
      void s.then(
        (x) => x.destroy(),
        () => undefined,
      );
  }

  closeAll(): void {
    for (const id of [...this.pools.keys()]) this.closeVm(id);
  }
}
