import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lineEchoServer,
  listenLocal,
  readAnswer,
  sendConnect,
  startGatewayKit,
  type ConnectAnswer,
  type GatewayKit,
  type LineEchoConnection,
} from './testing.js';

let k: GatewayKit;
let echo: ReturnType<typeof lineEchoServer>;
let echoPort: number;
let greeter: ReturnType<typeof lineEchoServer>;
let greeterPort: number;

beforeAll(async () => {
  k = await startGatewayKit({ closeGraceMs: 1_000 }, { plaintextPort: 0 });
  k.backend.resumeDelayMs = 100;
  echo = lineEchoServer();
  echoPort = await listenLocal(echo.server);
  greeter = lineEchoServer({ greetAndEnd: true });
  greeterPort = await listenLocal(greeter.server);
  k.backend.add('vm-c', { ingress: 'all' });
});

afterAll(async () => {
  await k.close();
  for (const s of [echo, greeter]) {
    for (const c of s.conns) c.socket.destroy();
    await new Promise((r) => s.server.close(r));
  }
});

const tlsFor = (vm: string) => ({ ca: k.ca, servername: k.host(vm) });

/** CONNECT <vm>.<domain>:<port> over TLS with a token for that port (unless `token` says otherwise). */
async function connect(
  o: {
    vm?: string;
    port?: number;
    token?: string | false;
    headers?: string[];
    extra?: string;
    plaintext?: boolean;
    target?: string;
  } = {},
): Promise<ConnectAnswer> {
  const vm = o.vm ?? 'vm-c';
  const port = o.port ?? echoPort;
  const token = o.token === undefined ? await k.token(vm, { ports: [{ port }] }) : o.token;
  const target = o.target ?? `${k.host(vm)}:${port}`;
  const lines = [
    `CONNECT ${target} HTTP/1.1`,
    `Host: ${target}`,
    ...(token === false ? [] : [`X-Hearth-Proxy-Auth: ${token}`]),
    ...(o.headers ?? []),
  ];
  const gwPort = o.plaintext ? k.gw.address().plaintextPort! : k.port;
  return sendConnect(
    gwPort,
    lines.join('\r\n') + '\r\n\r\n' + (o.extra ?? ''),
    o.plaintext ? undefined : tlsFor(vm),
  );
}

/** Reads `socket` (with `first` already read) until `n` newline-terminated lines arrived. */
async function readLines(socket: net.Socket, n: number, first: Buffer = Buffer.alloc(0)): Promise<string[]> {
  let buf = first.toString('latin1');
  const count = () => buf.split('\n').length - 1;
  socket.resume();
  while (count() < n) {
    const d = await new Promise<Buffer | null>((resolve) => {
      const onData = (c: Buffer) => {
        socket.off('end', onEnd);
        resolve(c);
      };
      const onEnd = () => {
        socket.off('data', onData);
        resolve(null);
      };
      socket.once('data', onData);
      socket.once('end', onEnd);
    });
    if (d === null) throw new Error(`ended after: ${buf}`);
    buf += d.toString('latin1');
  }
  socket.pause();
  return buf.split('\n').slice(0, n);
}

/** Resolves at the socket's 'end' (reading on: pass a 'data' listener first to keep the bytes). */
const ended = (s: net.Socket) =>
  new Promise<void>((resolve) => {
    if (s.readableEnded) return resolve();
    s.once('end', () => resolve());
    s.resume();
  });
const closed = (s: net.Socket) =>
  new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));

async function until(cond: () => boolean, ms = 2_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const guestBytes = (c: LineEchoConnection) => Buffer.concat(c.received).toString('latin1');

describe('CONNECT tunnels (ALL_INGRESS)', () => {
  it('tunnels a line protocol both ways; the guest gets only the tunnel bytes', async () => {
    const before = echo.conns.length;
    const a = await connect();
    expect(a.head).toBe('HTTP/1.1 200 Connection Established');
    a.socket.write('hello\n');
    expect(await readLines(a.socket, 1, a.rest)).toEqual(['echo: hello']);
    a.socket.write('second line\nthird\n');
    expect(await readLines(a.socket, 2)).toEqual(['echo: second line', 'echo: third']);
    expect(echo.conns.length).toBe(before + 1);
    const c = echo.conns.at(-1)!;
    expect(guestBytes(c)).toBe('hello\nsecond line\nthird\n'); // no CONNECT head, no token
    a.socket.destroy();
  });

  it('forwards bytes sent right behind the CONNECT head', async () => {
    const a = await connect({ extra: 'early\n' });
    expect(a.status).toBe(200);
    expect(await readLines(a.socket, 1, a.rest)).toEqual(['echo: early']);
    a.socket.destroy();
  });

  it('takes Proxy-Authorization: Bearer, X-Hearth-Microvm-Id and the plaintext listener', async () => {
    const t = await k.token('vm-c', { ports: [{ port: echoPort }] });
    const a = await connect({
      token: false,
      target: `127.0.0.1:${echoPort}`,
      headers: ['X-Hearth-Microvm-Id: vm-c', `Proxy-Authorization: Bearer ${t}`],
      plaintext: true,
    });
    expect(a.status).toBe(200);
    a.socket.write('plain\n');
    expect(await readLines(a.socket, 1, a.rest)).toEqual(['echo: plain']);
    a.socket.destroy();
  });

  it('carries 4 MiB each way intact, with backpressure', async () => {
    const a = await connect();
    const lines = Array.from({ length: 65_536 }, () => randomBytes(32).toString('hex'));
    const sent = lines.join('\n') + '\n'; // 4 MiB + newlines
    a.socket.end(sent);
    const chunks: Buffer[] = [a.rest];
    a.socket.on('data', (c: Buffer) => chunks.push(c));
    await ended(a.socket);
    const got = Buffer.concat(chunks).toString('latin1');
    const want = lines.map((l) => `echo: ${l}\n`).join('') + 'bye\n';
    const sha = (x: string) => createHash('sha256').update(x).digest('hex');
    expect(got.length).toBe(want.length);
    expect(sha(got)).toBe(sha(want));
    expect(sha(guestBytes(echo.conns.at(-1)!))).toBe(sha(sent));
  });

  it('propagates a half-close from the client: the guest still answers after the FIN', async () => {
    const a = await connect();
    a.socket.write('last\n');
    a.socket.end(); // FIN: no more from the client, but it keeps reading
    expect(await readLines(a.socket, 2, a.rest)).toEqual(['echo: last', 'bye']);
    await ended(a.socket);
    const c = echo.conns.at(-1)!;
    expect(c.ended).toBe(true);
    await closed(a.socket);
  });

  it('propagates a half-close from the guest: the client can still send after the FIN', async () => {
    const a = await connect({ port: greeterPort });
    expect(a.status).toBe(200);
    const chunks: Buffer[] = [a.rest];
    a.socket.on('data', (c: Buffer) => chunks.push(c));
    await ended(a.socket);
    expect(Buffer.concat(chunks).toString()).toBe('hello from guest\n');
    a.socket.end('late\n');
    const c = greeter.conns.at(-1)!;
    await until(() => c.ended);
    expect(guestBytes(c)).toBe('late\n');
    await closed(a.socket);
  });

  it('reports stream-open/stream-close and the bytes of a tunnel', async () => {
    k.backend.add('vm-act', { ingress: 'all' });
    const a = await connect({ vm: 'vm-act' });
    await until(() => k.backend.activityOf('vm-act', 'stream-open') === 1);
    expect(k.gw.openStreams('vm-act')).toBe(1);
    expect(k.backend.activityOf('vm-act', 'request')).toBe(1);
    a.socket.write('12345\n'); // 6 bytes in, 'echo: 12345\n' 12 bytes out
    expect(await readLines(a.socket, 1, a.rest)).toEqual(['echo: 12345']);
    a.socket.end(); // 'bye\n' 4 bytes out
    await ended(a.socket);
    await closed(a.socket);
    await until(() => k.backend.activityOf('vm-act', 'stream-close') === 1);
    expect(k.gw.openStreams('vm-act')).toBe(0);
    k.gw.flushActivity();
    expect(k.backend.activityOf('vm-act', 'bytes')).toBe(6 + 12 + 4);
    expect(k.gw.metrics('vm-act')).toMatchObject({ bytesIn: 6, bytesOut: 16, openStreams: 0 });
  });

  it('closeConnections closes the tunnel at both ends', async () => {
    k.backend.add('vm-close', { ingress: 'all' });
    const a = await connect({ vm: 'vm-close' });
    a.socket.write('x\n');
    await readLines(a.socket, 1, a.rest);
    const c = echo.conns.at(-1)!;
    const clientEnded = ended(a.socket);
    await k.gw.closeConnections('vm-close');
    await clientEnded;
    await until(() => c.closed);
    expect(c.ended).toBe(true); // the guest got a FIN, not a reset
    expect(k.gw.openStreams('vm-close')).toBe(0);
    expect(k.backend.activityOf('vm-close', 'stream-close')).toBe(1);
  });

  it('a request on the same connection before the CONNECT: closing its microVM leaves the tunnel alone', async () => {
    k.backend.add('vm-first', { ingress: 'all' });
    const tFirst = await k.token('vm-first');
    const tTunnel = await k.token('vm-c', { ports: [{ port: echoPort }] });
    const target = `${k.host('vm-c')}:${echoPort}`;
    const a = await sendConnect(
      k.port,
      `GET / HTTP/1.1\r\nHost: ${k.host('vm-first')}\r\nX-Hearth-Proxy-Auth: ${tFirst}\r\n\r\n`,
      tlsFor('vm-first'),
    );
    expect(a.status).toBe(200); // the echo app's answer to the GET
    a.socket.write(
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-Hearth-Proxy-Auth: ${tTunnel}\r\n\r\n`,
    );
    const b = await readAnswer(a.socket);
    expect(b.head).toBe('HTTP/1.1 200 Connection Established');
    await k.gw.closeConnections('vm-first');
    a.socket.write('still here\n');
    expect(await readLines(a.socket, 1, b.rest)).toEqual(['echo: still here']);
    a.socket.destroy();
  });

  it('auto-resumes a SUSPENDED microVM for a tunnel', async () => {
    k.backend.add('vm-sus', { ingress: 'all', state: 'SUSPENDED' });
    const a = await connect({ vm: 'vm-sus' });
    expect(a.status).toBe(200);
    expect(k.backend.ensureCalls.get('vm-sus')).toBe(1);
    expect(k.backend.resumes.get('vm-sus')).toBe(1);
    a.socket.write('awake\n');
    expect(await readLines(a.socket, 1, a.rest)).toEqual(['echo: awake']);
    a.socket.destroy();
  });
});

describe('CONNECT refused', () => {
  it('a port the token does not allow: 403 TOKEN_PORT_NOT_ALLOWED, nothing reaches the guest', async () => {
    const before = echo.conns.length;
    const t = await k.token('vm-c', { ports: [{ port: k.appPort }] });
    const a = await connect({ token: t });
    expect(a.status).toBe(403);
    expect(a.json()).toMatchObject({ code: 'TOKEN_PORT_NOT_ALLOWED' });
    expect(a.head).toMatch(/\r\ncontent-type: application\/json/i);
    await ended(a.socket);
    expect(echo.conns.length).toBe(before);
  });

  it('no token: 403 TOKEN_MISSING; expired token: 403 TOKEN_EXPIRED; a non-Bearer Proxy-Authorization is no token', async () => {
    expect((await connect({ token: false })).json()).toMatchObject({ code: 'TOKEN_MISSING' });
    const basic = await connect({ token: false, headers: ['Proxy-Authorization: Basic dXNlcjpwYXNz'] });
    expect(basic.status).toBe(403);
    expect(basic.json()).toMatchObject({ code: 'TOKEN_MISSING' });
    const { TokenAuthority } = await import('./tokens.js');
    const past = await TokenAuthority.open({
      keyFile: `${k.dir}/token.pem`,
      now: () => Date.now() - 2 * 3600_000,
    });
    const expired = await past.mint({
      microvmId: 'vm-c',
      allowedPorts: [{ port: echoPort }],
      expirationInMinutes: 5,
      generation: 1,
    });
    const a = await connect({ token: expired });
    expect(a.status).toBe(403);
    expect(a.json()).toMatchObject({ code: 'TOKEN_EXPIRED' });
  });

  it('HTTP_INGRESS: 403 INGRESS_PROTOCOL_NOT_ALLOWED, and no resume', async () => {
    k.backend.add('vm-http', { state: 'SUSPENDED' });
    const a = await connect({ vm: 'vm-http' });
    expect(a.status).toBe(403);
    const e = a.json<{ code: string; message: string }>();
    expect(e.code).toBe('INGRESS_PROTOCOL_NOT_ALLOWED');
    expect(e.message).toContain('ALL_INGRESS');
    expect(k.backend.ensureCalls.get('vm-http')).toBeUndefined();
  });

  it('nothing listening on the guest port: 502 UPSTREAM_UNREACHABLE', async () => {
    const closedPort = await (async () => {
      const s = lineEchoServer().server;
      const p = await listenLocal(s);
      await new Promise((r) => s.close(r));
      return p;
    })();
    const a = await connect({ port: closedPort });
    expect(a.status).toBe(502);
    expect(a.json()).toMatchObject({ code: 'UPSTREAM_UNREACHABLE' });
  });

  it('a CONNECT with a body, a malformed target or garbage gets a clean 400, and the gateway carries on', async () => {
    const withBody = await connect({ headers: ['Content-Length: 5'], extra: 'hello' });
    expect(withBody.status).toBe(400);
    expect(withBody.json()).toMatchObject({ code: 'GATEWAY_UNSUPPORTED_REQUEST' });
    const chunked = await connect({
      headers: ['Transfer-Encoding: chunked'],
      extra: '5\r\nhello\r\n0\r\n\r\n',
    });
    expect(chunked.status).toBe(400);
    for (const target of [
      `${k.host('vm-c')}`,
      `${k.host('vm-c')}:0`,
      `${k.host('vm-c')}:99999`,
      `${k.host('vm-c')}:x`,
    ]) {
      const a = await connect({ target });
      expect(a.status, target).toBe(400);
      expect(a.json(), target).toMatchObject({ code: 'GATEWAY_BAD_CONNECT_TARGET' });
    }
    const noVm = await connect({ target: `127.0.0.1:${echoPort}` });
    expect(noVm.status).toBe(400);
    expect(noVm.json()).toMatchObject({ code: 'GATEWAY_MICROVM_ID_MISSING' });
    const deep = await connect({ target: `a.b.${k.gw.domain}:${echoPort}` });
    expect(deep.json()).toMatchObject({ code: 'GATEWAY_BAD_HOST' });
    const garbage = await sendConnect(k.port, 'CONNECT \x01\x02 garbage\r\n\r\n', tlsFor('vm-c'));
    expect(garbage.status).toBe(400);
    const noHead = await sendConnect(k.port, 'CONNECT / HTTP/1.1\r\n\r\n', tlsFor('vm-c'));
    expect(noHead.status).toBe(400);
    // Still serving.
    const ok = await connect();
    expect(ok.status).toBe(200);
    ok.socket.destroy();
    expect((await k.request({})).status).toBe(200);
  });

  it('HTTP/2 CONNECT: 400 GATEWAY_UNSUPPORTED_REQUEST (tunnels are HTTP/1.1 only)', async () => {
    const t = await k.token('vm-c', { ports: [{ port: echoPort }] });
    const s = http2.connect(`https://127.0.0.1:${k.port}`, tlsFor('vm-c'));
    const r = s.request({
      ':method': 'CONNECT',
      ':authority': `${k.host('vm-c')}:${echoPort}`,
      'x-hearth-proxy-auth': t,
    });
    const status = await new Promise<number>((resolve, reject) => {
      r.on('response', (h) => resolve(Number(h[':status'])));
      r.on('error', reject);
    });
    r.destroy();
    s.close();
    expect(status).toBe(400);
  });

  it('an HTTP request to an ALL_INGRESS microVM is served as usual', async () => {
    const r = await k.request({ vm: 'vm-c' });
    expect(r.status).toBe(200);
  });
});
