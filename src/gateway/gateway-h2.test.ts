import http2 from 'node:http2';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenLocal, startGatewayKit, type GatewayKit } from './testing.js';

let k: GatewayKit;
let h2cApp: http2.Http2Server;
let h2cPort: number;
let grpcServer: grpc.Server;
let grpcPort: number;
let EchoClient: grpc.ServiceClientConstructor;
const seenMetadata: Record<string, unknown>[] = [];

const PROTO = `
syntax = "proto3";
package hearth.test;
message Msg { string text = 1; int32 n = 2; }
service Echo {
  rpc Unary (Msg) returns (Msg);
  rpc ServerStream (Msg) returns (stream Msg);
  rpc Bidi (stream Msg) returns (stream Msg);
}
`;

interface Msg {
  text: string;
  n: number;
}

interface EchoStub extends grpc.Client {
  Unary(m: Msg, md: grpc.Metadata, cb: (e: grpc.ServiceError | null, r: Msg) => void): void;
  ServerStream(m: Msg, md: grpc.Metadata): grpc.ClientReadableStream<Msg>;
  Bidi(md: grpc.Metadata): grpc.ClientDuplexStream<Msg, Msg>;
}

beforeAll(async () => {
  k = await startGatewayKit();
  // An h2c app that echoes its request headers and sends trailers.
  h2cApp = http2.createServer();
  h2cApp.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-trailer': 'done' }));
      const h: Record<string, unknown> = {};
      for (const key of Object.keys(headers)) h[key] = headers[key];
      stream.end(JSON.stringify({ headers: h, bodyBytes: Buffer.concat(chunks).length }));
    });
  });
  h2cPort = await listenLocal(h2cApp as never);

  const protoFile = join(k.dir, 'echo.proto');
  await writeFile(protoFile, PROTO);
  const def = protoLoader.loadSync(protoFile, { keepCase: true, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    hearth: { test: { Echo: grpc.ServiceClientConstructor } };
  };
  EchoClient = pkg.hearth.test.Echo;
  grpcServer = new grpc.Server();
  grpcServer.addService(EchoClient.service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      seenMetadata.push(call.metadata.getMap());
      if (call.request.text === 'fail') cb({ code: grpc.status.FAILED_PRECONDITION, details: 'app says no' });
      else cb(null, { text: `echo ${call.request.text}`, n: call.request.n + 1 });
    },
    ServerStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      if (call.request.text === 'slow') {
        let i = 0;
        const t = setInterval(() => call.write({ text: 'tick', n: i++ }), 20);
        call.on('cancelled', () => clearInterval(t));
        call.on('close', () => clearInterval(t));
        return;
      }
      for (let i = 0; i < call.request.n; i++) call.write({ text: `item ${i}`, n: i });
      call.end();
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      call.on('data', (m: Msg) => call.write({ text: m.text.toUpperCase(), n: m.n }));
      call.on('end', () => call.end());
    },
  });
  grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
});

afterAll(async () => {
  await k.close();
  grpcServer.forceShutdown();
  await new Promise((r) => h2cApp.close(r));
});

function connect(): http2.ClientHttp2Session {
  return http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: k.host('vm-1') });
}

function h2request(
  s: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string,
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':authority': k.host('vm-1'), ...headers });
    let resHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    let data = '';
    req.on('response', (h) => (resHeaders = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => resolve({ headers: resHeaders, trailers, body: data }));
    req.on('error', reject);
    req.end(body);
  });
}

function grpcClient(): EchoStub {
  return new EchoClient(`127.0.0.1:${k.port}`, grpc.credentials.createSsl(Buffer.from(k.ca)), {
    'grpc.ssl_target_name_override': k.host('vm-1'),
    'grpc.default_authority': k.host('vm-1'),
  }) as unknown as EchoStub;
}

async function grpcMeta(o: { token?: boolean } = {}): Promise<grpc.Metadata> {
  const md = new grpc.Metadata();
  if (o.token !== false)
    md.set('x-hearth-proxy-auth', await k.token('vm-1', { ports: [{ port: grpcPort }] }));
  md.set('x-hearth-proxy-port', String(grpcPort));
  return md;
}

describe('gateway over HTTP/2', () => {
  it('multiplexes requests to an HTTP/1.1 app on one session', async () => {
    const s = connect();
    const token = await k.token('vm-1');
    const rs = await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        h2request(s, { ':method': 'POST', ':path': `/h2/${i}`, 'x-hearth-proxy-auth': token }, `body-${i}`),
      ),
    );
    s.close();
    rs.forEach((r, i) => {
      expect(r.headers[':status']).toBe(200);
      const e = JSON.parse(r.body) as { url: string; bodyBytes: number; headers: Record<string, string> };
      expect(e.url).toBe(`/h2/${i}`);
      expect(e.bodyBytes).toBe(6);
      expect(e.headers.host).toBe(k.host('vm-1'));
      expect(e.headers['x-hearth-proxy-auth']).toBeUndefined();
    });
  });

  it('answers errors as JSON over HTTP/2', async () => {
    const s = connect();
    const r = await h2request(s, { ':path': '/' });
    s.close();
    expect(r.headers[':status']).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ code: 'TOKEN_MISSING' });
  });

  it('forwards over h2c with X-Hearth-Proxy-Force-H2 and keeps trailers', async () => {
    const s = connect();
    const token = await k.token('vm-1', { ports: [{ port: h2cPort }] });
    const r = await h2request(
      s,
      {
        ':method': 'POST',
        ':path': '/forced?q=1',
        'x-hearth-proxy-auth': token,
        'x-hearth-proxy-port': String(h2cPort),
        'x-hearth-proxy-force-h2': 'true',
        'x-app-header': 'kept',
      },
      'abc',
    );
    s.close();
    expect(r.headers[':status']).toBe(200);
    expect(r.trailers['x-trailer']).toBe('done');
    const e = JSON.parse(r.body) as { headers: Record<string, string>; bodyBytes: number };
    expect(e.headers[':path']).toBe('/forced?q=1');
    expect(e.headers[':authority']).toBe(k.host('vm-1'));
    expect(e.headers['x-app-header']).toBe('kept');
    expect(Object.keys(e.headers).filter((h) => h.startsWith('x-hearth'))).toEqual([]);
    expect(e.bodyBytes).toBe(3);
  });
});

describe('gRPC through the gateway (TLS client, h2c app)', () => {
  it('unary call, metadata stripped of x-hearth-*', async () => {
    const c = grpcClient();
    const md = await grpcMeta();
    const r = await new Promise<Msg>((resolve, reject) =>
      c.Unary({ text: 'hi', n: 41 }, md, (err, m) => (err ? reject(err) : resolve(m))),
    );
    expect(r).toEqual({ text: 'echo hi', n: 42 });
    expect(Object.keys(seenMetadata.at(-1)!).filter((h) => h.startsWith('x-hearth'))).toEqual([]);
    c.close();
  });

  it("carries the app's error status (trailers) to the client", async () => {
    const c = grpcClient();
    const md = await grpcMeta();
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      c.Unary({ text: 'fail', n: 0 }, md, (e) => resolve(e!)),
    );
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toBe('app says no');
    c.close();
  });

  it('server streaming', async () => {
    const c = grpcClient();
    const call = c.ServerStream({ text: '', n: 50 }, await grpcMeta());
    const got: Msg[] = [];
    await new Promise<void>((resolve, reject) => {
      call.on('data', (m: Msg) => got.push(m));
      call.on('end', resolve);
      call.on('error', reject);
    });
    expect(got).toHaveLength(50);
    expect(got[49]).toEqual({ text: 'item 49', n: 49 });
    c.close();
  });

  it('bidirectional streaming, message by message', async () => {
    const c = grpcClient();
    const call = c.Bidi(await grpcMeta());
    const next = () => new Promise<Msg>((resolve) => call.once('data', resolve));
    for (let i = 0; i < 5; i++) {
      const p = next();
      call.write({ text: `m${i}`, n: i });
      expect(await p).toEqual({ text: `M${i}`, n: i }); // each reply before the next request: no buffering
    }
    call.end();
    await new Promise((r) => call.on('end', r).resume());
    c.close();
  });

  it('a gateway error reaches a gRPC client as a gRPC status with the code', async () => {
    const c = grpcClient();
    const md = await grpcMeta({ token: false });
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      c.Unary({ text: 'x', n: 0 }, md, (e) => resolve(e!)),
    );
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err.details).toMatch(/^TOKEN_MISSING: /);
    c.close();
  });

  it('closeConnections ends an open gRPC stream with UNAVAILABLE and the code, and cancels the app side', async () => {
    const c = grpcClient();
    const call = c.ServerStream({ text: 'slow', n: 0 }, await grpcMeta());
    const first = new Promise((r) => call.once('data', r));
    const err = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    call.on('data', () => undefined);
    await first;
    await k.gw.closeConnections('vm-1');
    const e = await err;
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toMatch(/^MICROVM_CONNECTIONS_CLOSED: /);
    c.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(k.gw.openStreams('vm-1')).toBe(0);
  });
});
