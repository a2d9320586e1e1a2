/**
 * Test support for the gateway: a fake backend with the same contract as the real one (single-flight
 * resume, instances, generations, activity log), and small upstream apps.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type http2 from 'node:http2';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { GatewayActivity, GatewayBackend, VmRoute } from './backend.js';
import { createGateway, type Gateway, type GatewayOptions, type ListenOptions } from './gateway.js';
import type { AllowedPort } from './tokens.js';

export interface FakeVmOptions {
  state?: VmRoute['state'];
  address?: string;
  autoResume?: boolean;
  streamsCountAsActivity?: boolean;
  tokenGeneration?: number;
  /** The ingress connector (default 'http', HTTP_INGRESS). */
  ingress?: VmRoute['ingress'];
  /** Where each guest port is (default: `address` and the same port). */
  connectAddress?: VmRoute['connectAddress'];
}

/**
 * An in-memory backend. `resumeDelayMs` (and `resumeGate`) make ensureRunning slow; `failResume`
 * makes it reject.
 * Concurrent ensureRunning calls for one VM share one resume (counted in `resumes`).
 */
export class FakeBackend implements GatewayBackend {
  readonly vms = new Map<string, VmRoute>();
  /** Resumes (or starts) performed, per VM. */
  readonly resumes = new Map<string, number>();
  /** ensureRunning calls, per VM. */
  readonly ensureCalls = new Map<string, number>();
  readonly activityLog: Array<{ microvmId: string } & GatewayActivity> = [];
  resumeDelayMs = 0;
  /** When set, a resume also waits for this (a test releases it once its requests are all held). */
  resumeGate: Promise<unknown> | undefined;
  failResume: Error | undefined;
  private readonly inflight = new Map<string, Promise<VmRoute>>();
  private nextInstance = 1;

  add(id: string, o: FakeVmOptions = {}): VmRoute {
    const r: VmRoute = {
      microvmId: id,
      state: o.state ?? 'RUNNING',
      address: o.address ?? '127.0.0.1',
      autoResume: o.autoResume ?? true,
      tokenGeneration: o.tokenGeneration ?? 1,
      instance: this.nextInstance++,
      streamsCountAsActivity: o.streamsCountAsActivity ?? true,
      ingress: o.ingress ?? 'http',
      ...(o.connectAddress ? { connectAddress: o.connectAddress } : {}),
    };
    this.vms.set(id, r);
    return r;
  }

  async route(id: string): Promise<VmRoute | undefined> {
    const r = this.vms.get(id);
    return r && { ...r };
  }

  /** Marks the VM SUSPENDED (call gateway.closeConnections first, as the control plane does). */
  suspend(id: string): void {
    this.vms.get(id)!.state = 'SUSPENDED';
  }

  terminate(id: string): void {
    const r = this.vms.get(id)!;
    r.state = 'TERMINATED';
    r.tokenGeneration++;
  }

  ensureRunning(id: string, signal: AbortSignal): Promise<VmRoute> {
    this.ensureCalls.set(id, (this.ensureCalls.get(id) ?? 0) + 1);
    let p = this.inflight.get(id);
    if (!p) {
      p = this.resume(id).finally(() => this.inflight.delete(id));
      this.inflight.set(id, p);
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  private async resume(id: string): Promise<VmRoute> {
    const r = this.vms.get(id);
    if (!r) throw new Error(`no microVM ${id}`);
    if (r.state === 'RUNNING') return { ...r };
    await new Promise((res) => setTimeout(res, this.resumeDelayMs));
    await this.resumeGate;
    if (this.failResume) throw this.failResume;
    this.resumes.set(id, (this.resumes.get(id) ?? 0) + 1);
    r.state = 'RUNNING';
    r.instance = this.nextInstance++;
    return { ...r };
  }

  activity(microvmId: string, e: GatewayActivity): void {
    if (this.activityLog.length < 100_000) this.activityLog.push({ microvmId, ...e });
  }

  /** Count of activity events of a kind (and bytes added up for 'bytes'). */
  activityOf(id: string, kind: GatewayActivity['kind']): number {
    let n = 0;
    for (const e of this.activityLog)
      if (e.microvmId === id && e.kind === kind) n += kind === 'bytes' ? (e.bytes ?? 0) : 1;
    return n;
  }
}

/** One HTTP/2 request on `session` (no body): its status and its body as text. */
export function h2Get(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let status = 0;
    let body = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => resolve({ status, body }));
    req.on('error', reject);
    req.end();
  });
}

/** Starts `server` on 127.0.0.1 port 0 and returns its port. */
export function listenLocal(server: Pick<net.Server, 'listen' | 'address'>): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

/**
 * An HTTP/1.1 app that answers every request with JSON describing it: method, url, headers,
 * body length, and the subprotocols it was offered. `/big?bytes=N` streams N bytes; `/sse?n=N&ms=M`
 * sends N events M ms apart; `/upload` counts the body without keeping it.
 */
export function echoApp(): http.Server {
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/big') {
      let left = Number(url.searchParams.get('bytes') ?? 0);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (left > 0) {
          const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= c.length;
          if (!res.write(c)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    if (url.pathname === '/sse') {
      const n = Number(url.searchParams.get('n') ?? 3);
      const ms = Number(url.searchParams.get('ms') ?? 100);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let i = 0;
      const t = setInterval(() => {
        res.write(`id: ${i}\ndata: event ${i}\n\n`);
        if (++i === n) {
          clearInterval(t);
          res.end();
        }
      }, ms);
      res.on('close', () => clearInterval(t));
      return;
    }
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyBytes: bytes,
      });
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-app': 'echo',
        'set-cookie': ['a=1', 'b=2'],
      });
      res.end(body);
    });
  });
}

// ---- A gateway with a fake backend and an echo app, and TLS clients trusting its CA ----

export interface GatewayKit {
  gw: Gateway;
  backend: FakeBackend;
  /** The echo app (echoApp) and its port, the gateway's default port. */
  app: http.Server;
  appPort: number;
  /** The gateway's TLS port. */
  port: number;
  ca: string;
  dir: string;
  /** `<vm>.<domain>` */
  host(vm: string): string;
  /** A token for `vm` (default: the echo app's port, 5 minutes, generation 1). */
  token(vm: string, o?: { ports?: AllowedPort[]; generation?: number }): Promise<string>;
  /** One HTTPS request through the gateway (HTTP/1.1). */
  request(o: KitRequest): Promise<KitResponse>;
  close(): Promise<void>;
}

export interface KitRequest {
  vm?: string;
  method?: string;
  path?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  agent?: https.Agent;
  /** Send X-Hearth-Proxy-Auth with a fresh token for `vm` (default true). */
  auth?: boolean;
}

export interface KitResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
  /** Local port of the client connection (keep-alive checks). */
  localPort: number | undefined;
}

/** A gateway on 127.0.0.1 port 0 (plaintext too if `listen` says so) with a FakeBackend holding one RUNNING VM `vm-1`, and an echo app. */
export async function startGatewayKit(
  o: Partial<GatewayOptions> = {},
  listen: ListenOptions = {},
): Promise<GatewayKit> {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-gw-'));
  const backend = (o.backend as FakeBackend | undefined) ?? new FakeBackend();
  const app = echoApp();
  const appPort = await listenLocal(app);
  const gw = await createGateway({
    tokens: { keyFile: join(dir, 'token.pem') },
    tls: { dir: join(dir, 'tls') },
    defaultPort: appPort,
    ...o,
    backend,
  });
  await gw.listen(0, '127.0.0.1', listen);
  backend.add('vm-1');
  const port = gw.address().port;
  const ca = gw.ca!;
  const host = (vm: string) => `${vm}.${gw.domain}`;
  const token = (vm: string, t: { ports?: AllowedPort[]; generation?: number } = {}) =>
    gw.tokens.mint({
      microvmId: vm,
      allowedPorts: t.ports ?? [{ port: appPort }],
      expirationInMinutes: 5,
      generation: t.generation ?? 1,
    });
  const request = async (r: KitRequest): Promise<KitResponse> => {
    const vm = r.vm ?? 'vm-1';
    const headers: http.OutgoingHttpHeaders = { host: host(vm), ...r.headers };
    if (r.auth !== false && headers['x-hearth-proxy-auth'] === undefined)
      headers['x-hearth-proxy-auth'] = await token(vm);
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          servername: host(vm),
          ca,
          method: r.method ?? 'GET',
          path: r.path ?? '/',
          headers,
          agent: r.agent ?? false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body,
              json: <T>() => JSON.parse(body.toString()) as T,
              localPort: res.socket?.localPort,
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(r.body);
    });
  };
  return {
    gw,
    backend,
    app,
    appPort,
    port,
    ca,
    dir,
    host,
    token,
    request,
    async close() {
      await gw.close();
      app.closeAllConnections();
      await new Promise((r) => app.close(r));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---- Raw TCP: a guest service that is not HTTP, and a CONNECT client ----

/** One connection a LineEchoServer accepted: every byte it received, and whether the client sent FIN. */
export interface LineEchoConnection {
  received: Buffer[];
  ended: boolean;
  closed: boolean;
  socket: net.Socket;
}

/**
 * A line-based TCP echo service (not HTTP): answers each line `x` with `echo: x`, and a FIN with
 * `bye` then its own FIN (half-close: it still answers after the client stopped sending). With
 * `greetAndEnd`, it instead sends `hello from guest` and FIN at once, and keeps reading.
 */
export function lineEchoServer(o: { greetAndEnd?: boolean } = {}): {
  server: net.Server;
  conns: LineEchoConnection[];
} {
  const conns: LineEchoConnection[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const c: LineEchoConnection = { received: [], ended: false, closed: false, socket: s };
    conns.push(c);
    s.on('error', () => undefined);
    s.on('close', () => (c.closed = true));
    if (o.greetAndEnd) {
      s.end('hello from guest\n');
      s.on('data', (d: Buffer) => c.received.push(d));
      s.on('end', () => (c.ended = true));
      return;
    }
    let pending = '';
    s.on('data', (d: Buffer) => {
      c.received.push(d);
      const text = pending + d.toString('latin1');
      const last = text.lastIndexOf('\n');
      pending = text.slice(last + 1);
      if (last < 0) return;
      const lines = text.slice(0, last).split('\n');
      s.write(lines.map((l) => `echo: ${l}\n`).join(''), 'latin1');
    });
    s.on('end', () => {
      c.ended = true;
      s.end('bye\n');
    });
  });
  return { server, conns };
}

/** The answer to a CONNECT: status, head, and the open socket (200) or the JSON body (errors). */
export interface ConnectAnswer {
  status: number;
  /** The response head, without the blank line. */
  head: string;
  /** Bytes read past the head: the first tunnel bytes (200), the error body (else). */
  rest: Buffer;
  socket: net.Socket;
  json<T = Record<string, unknown>>(): T;
}

/**
 * Reads one HTTP/1.1 answer from `socket`: the head, then the body if it has a Content-Length. What
 * follows a head without one (a 200 to CONNECT) is returned in `rest` as far as read; the socket is
 * left paused.
 */
export async function readAnswer(socket: net.Socket): Promise<ConnectAnswer> {
  let buf = Buffer.alloc(0);
  const onData = (d: Buffer) => (buf = Buffer.concat([buf, d]));
  socket.on('data', onData);
  socket.resume();
  const wait = async (done: () => boolean): Promise<void> => {
    while (!done()) {
      if (socket.readableEnded || socket.destroyed) throw new Error(`closed early: ${buf.toString()}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  try {
    await wait(() => buf.includes('\r\n\r\n'));
    const end = buf.indexOf('\r\n\r\n');
    const head = buf.subarray(0, end).toString('latin1');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
    const len = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
    if (len !== undefined) await wait(() => buf.length >= end + 4 + Number(len));
    const rest = buf.subarray(end + 4);
    return { status, head, rest, socket, json: <T>() => JSON.parse(rest.toString()) as T };
  } finally {
    socket.off('data', onData);
    socket.pause();
  }
}

/**
 * Sends `request` (raw HTTP/1.1, a CONNECT head and anything after it) to the gateway at
 * 127.0.0.1:`port`, over TLS trusting `tlsOpts.ca` (SNI `tlsOpts.servername`) or plaintext, and
 * reads the answer (readAnswer). The socket allows half-close.
 */
export function sendConnect(
  port: number,
  request: string | Buffer,
  tlsOpts?: { ca: string; servername: string },
): Promise<ConnectAnswer> {
  const socket: net.Socket = tlsOpts
    ? tls.connect({ host: '127.0.0.1', port, ...tlsOpts })
    : net.connect({ host: '127.0.0.1', port });
  socket.allowHalfOpen = true;
  socket.on('error', () => undefined);
  socket.write(request);
  return readAnswer(socket);
}
