/**
 * The endpoint gateway: everything between a client on the internet and a microVM's port.
 *
 * One TLS port (ALPN h2 and http/1.1) serves every microVM at `<microvmId>.<domain>` (or with
 * X-Hearth-Microvm-Id); an optional plaintext HTTP/1.1 port serves the same. Each request is
 * authenticated with an endpoint token (tokens.ts), rate limited per microVM, held while a
 * suspended microVM resumes (backend.ensureRunning), and forwarded: HTTP/1.1 (proxy-h1.ts), HTTP/2
 * (proxy-h2.ts; gRPC and forced h2 over h2c, proxy-h2c.ts), WebSockets (proxy-ws.ts), raw TCP
 * tunnels by HTTP/1.1 CONNECT to microVMs with ALL_INGRESS (proxy-connect.ts). A microVM's ingress
 * connector (VmRoute.ingress) decides which of those it takes. Errors are JSON `{code, message}`
 * (errors.ts). Activity (requests, bytes, streams) feeds the backend's idle policy;
 * `closeConnections(id)` must be called before a microVM is suspended.
 *
 *   const gw = await createGateway({ backend, tokens: { keyFile }, tls: { dir } });
 *   await gw.listen(8443, '0.0.0.0');
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { createLogger, type Logger } from '../util/log.js';
import { Admission } from './admission.js';
import type { GatewayBackend } from './backend.js';
import { ConnectionRegistry } from './connections.js';
import type { GatewayContext } from './context.js';
import { UnsupportedRequestError } from './errors.js';
import { GatewayMetrics, type VmMetrics } from './metrics.js';
import { handleConnect } from './proxy-connect.js';
import { handleH1Request } from './proxy-h1.js';
import { handleH2Stream } from './proxy-h2.js';
import { handleUpgrade } from './proxy-ws.js';
import { DEFAULT_RATE_LIMIT, RateLimiter, type RateLimit } from './rate-limit.js';
import { sendErrorRaw } from './respond.js';
import { loadGatewayTls, type GatewayTlsOptions } from './tls.js';
import { TokenAuthority } from './tokens.js';
import { Upstreams } from './upstream.js';

export interface GatewayOptions {
  backend: GatewayBackend;
  /** The token authority (shared with the control plane, which mints), or its key file. */
  tokens: TokenAuthority | { keyFile: string };
  /** Where the TLS material is generated, or certificate and key files. */
  tls: GatewayTlsOptions;
  /** Endpoints are `<microvmId>.<domain>`. Default `microvm.localhost` (HEARTH_DOMAIN in the server config). */
  domain?: string;
  /** Port of the app when the request names none. Default 8080. */
  defaultPort?: number;
  /** How long a request is held while a microVM resumes or starts. Default 30 000 ms. */
  resumeTimeoutMs?: number;
  /** Requests per second and burst per microVM, or false for none. Default 10 000/s, burst 20 000. */
  rateLimit?: RateLimit | false;
  /** Connecting to an app. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /** How long closeConnections waits for clean closes before destroying. Default 2 000 ms. */
  closeGraceMs?: number;
  /** Bytes are reported to the backend at most this often, per microVM. Default 1 000 ms. */
  activityFlushMs?: number;
  /** Idle keep-alive client connections are closed after this long. Default 65 000 ms. */
  clientKeepAliveMs?: number;
  log?: Logger;
}

export interface ListenOptions {
  /** Also listen for plaintext HTTP/1.1 (no TLS) on this port (0: any free port). Off by default. */
  plaintextPort?: number;
}

export interface GatewayAddress {
  host: string;
  /** The TLS port. */
  port: number;
  plaintextPort?: number;
}

export interface Gateway {
  /** Starts listening (TLS; plaintext too if asked). Resolves once bound. */
  listen(port: number, host?: string, opts?: ListenOptions): Promise<void>;
  /** Stops listening and closes every connection (clean first, then destroyed after the grace period). */
  close(): Promise<void>;
  /**
   * Closes every client and app connection of microVM `id` cleanly: HTTP/1.1 responses in flight
   * are cut (503 if nothing was sent, a clean end for chunked streams) and the connection closed
   * (Connection: close, FIN); HTTP/2 sessions get GOAWAY and the VM's streams are ended (gRPC:
   * UNAVAILABLE); WebSockets get close frame 1012 "service restart"; CONNECT tunnels get a FIN both
   * ways; pooled app connections are dropped. Call it before suspending: nothing half-open survives
   * into the resumed VM. Requests held waiting for a resume are left alone. Resolves when all are closed (at most closeGraceMs).
   */
  closeConnections(id: string): Promise<void>;
  address(): GatewayAddress;
  readonly tokens: TokenAuthority;
  /** PEM of the generated local CA (clients must trust it), when the gateway generated its certificate. */
  readonly ca: string | undefined;
  readonly caFile: string | undefined;
  readonly domain: string;
  metrics(id: string): VmMetrics;
  allMetrics(): Record<string, VmMetrics>;
  /** Exchanges currently open to microVM `id` (requests, HTTP/2 streams, WebSockets, CONNECT tunnels). */
  openStreams(id: string): number;
  /** Sends the pending 'bytes' activity now (tests; shutdown). */
  flushActivity(): void;
}

/** Builds a gateway: loads (or generates) TLS material and the token key. Not listening yet. */
export async function createGateway(o: GatewayOptions): Promise<Gateway> {
  const domain = (o.domain ?? 'microvm.localhost').toLowerCase();
  const log = o.log ?? createLogger('gateway');
  const tokens =
    o.tokens instanceof TokenAuthority ? o.tokens : await TokenAuthority.open({ keyFile: o.tokens.keyFile });
  const material = await loadGatewayTls(o.tls, domain);
  const metrics = new GatewayMetrics(o.backend);
  const rateLimiter = o.rateLimit === false ? undefined : new RateLimiter(o.rateLimit ?? DEFAULT_RATE_LIMIT);
  const closeGraceMs = o.closeGraceMs ?? 2_000;
  const upstreams = new Upstreams({
    connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
    idleSocketTimeoutMs: 4_000,
  });
  const registry = new ConnectionRegistry();
  const ctx: GatewayContext = {
    routing: { domain, defaultPort: o.defaultPort ?? 8080 },
    admission: new Admission({
      backend: o.backend,
      tokens,
      metrics,
      rateLimiter,
      resumeTimeoutMs: o.resumeTimeoutMs ?? 30_000,
    }),
    upstreams,
    metrics,
    registry,
    log,
    closeGraceMs,
  };

  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();

  const h1 = http.createServer({
    keepAliveTimeout: o.clientKeepAliveMs ?? 65_000,
    requestTimeout: 0, // long uploads and event streams are legitimate
    headersTimeout: 30_000,
  });
  // h1 never listens itself (connections come from the TLS and plaintext listeners), so start Node's
  // connection tracking by hand: it enforces headersTimeout and lets close() find idle connections.
  h1.emit('listening');
  h1.on('request', (req, res) => handleH1Request(ctx, req, res));
  h1.on('upgrade', (req, socket, head) => handleUpgrade(ctx, req, socket as net.Socket, head));
  h1.on('connect', (req, socket, head) => handleConnect(ctx, req, socket as net.Socket, head));
  h1.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) socket.destroy();
    else sendErrorRaw(socket, new UnsupportedRequestError('malformed HTTP request'));
  });

  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1_000, enablePush: false } });
  h2.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sessions.delete(s));
    try {
      s.setLocalWindowSize(32 * 1024 * 1024); // one stalled stream must not block the session
    } catch {
      // older peers: keep the default
    }
  });
  h2.on('stream', (stream, headers) => handleH2Stream(ctx, stream, headers));

  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const tlsServer = tls.createServer({
    key: material.key,
    cert: material.cert,
    ALPNProtocols: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
  });
  tlsServer.on('secureConnection', (s: tls.TLSSocket) => {
    track(s);
    s.setNoDelay(true);
    if (s.alpnProtocol === 'h2') h2.emit('connection', s);
    else h1.emit('connection', s);
  });
  tlsServer.on('tlsClientError', () => undefined);
  let plain: net.Server | undefined;

  const flushTimer = setInterval(() => metrics.flush(), o.activityFlushMs ?? 1_000);
  flushTimer.unref();
  const sweepTimer = setInterval(() => rateLimiter?.sweep(), 10_000);
  sweepTimer.unref();

  const listenOn = (srv: net.Server, port: number, host: string) =>
    new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => {
        srv.off('error', reject);
        resolve();
      });
    });

  return {
    tokens,
    ca: material.ca,
    caFile: material.caFile,
    domain,
    async listen(port, host = '0.0.0.0', lo = {}) {
      await listenOn(tlsServer, port, host);
      if (lo.plaintextPort !== undefined) {
        plain = net.createServer({ noDelay: true }, (s) => {
          track(s);
          h1.emit('connection', s);
        });
        await listenOn(plain, lo.plaintextPort, host);
      }
    },
    address() {
      const a = tlsServer.address() as AddressInfo | null;
      if (!a) throw new Error('the gateway is not listening');
      const p = plain?.address() as AddressInfo | null | undefined;
      return { host: a.address, port: a.port, ...(p ? { plaintextPort: p.port } : {}) };
    },
    async closeConnections(id) {
      const done = registry.closeAll(id, closeGraceMs);
      upstreams.closeVm(id);
      await done;
      upstreams.closeVm(id); // anything pooled while closing
    },
    async close() {
      clearInterval(flushTimer);
      clearInterval(sweepTimer);
      metrics.flush();
      const closed = Promise.all([
        new Promise<void>((r) => tlsServer.close(() => r())),
        plain ? new Promise<void>((r) => plain!.close(() => r())) : undefined,
      ]);
      for (const s of sessions) s.close();
      h1.close(() => undefined); // closes idle keep-alive connections, stops the timeout checks
      upstreams.closeAll();
      const grace = setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, closeGraceMs);
      await closed;
      clearTimeout(grace);
    },
    metrics: (id) => metrics.get(id),
    allMetrics: () => metrics.all(),
    openStreams: (id) => metrics.get(id).openStreams,
    flushActivity: () => metrics.flush(),
  };
}
