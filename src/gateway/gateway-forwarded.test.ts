/**
 * A route whose guest ports are reached at addresses of their own (connectAddress), as a Hearth
 * without root reaches them through forwards: every protocol connects where the backend says, and
 * reports the guest port to the client.
 */
import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import type { UpstreamAddress } from './backend.js';
import {
  h2Get,
  lineEchoServer,
  listenLocal,
  sendConnect,
  startGatewayKit,
  type GatewayKit,
} from './testing.js';

let k: GatewayKit;
let echo: ReturnType<typeof lineEchoServer>;
let wsHttp: http.Server;
let wss: WebSocketServer;
let h2cApp: http2.Http2Server;
/** Guest port -> the local port standing for it. */
const forwards = new Map<number, number>();
const asked: number[] = [];

const GUEST_HTTP = 8080;
const GUEST_TCP = 6379;
const GUEST_WS = 9000;
const GUEST_H2C = 7000;
const GUEST_NOTHING = 5555;

beforeAll(async () => {
  k = await startGatewayKit();
  echo = lineEchoServer();
  wsHttp = http.createServer();
  wss = new WebSocketServer({ server: wsHttp });
  wss.on('connection', (ws) => ws.on('message', (d, bin) => ws.send(d, { binary: bin })));
  h2cApp = http2.createServer((req, res) => res.end(`h2c ${req.url}`));
  forwards.set(GUEST_HTTP, k.appPort);
  forwards.set(GUEST_TCP, await listenLocal(echo.server));
  forwards.set(GUEST_WS, await listenLocal(wsHttp));
  forwards.set(GUEST_H2C, await listenLocal(h2cApp));
  k.backend.add('vm-f', {
    ingress: 'all',
    address: '127.0.0.1',
    connectAddress: async (guestPort): Promise<UpstreamAddress> => {
      asked.push(guestPort);
      const port = forwards.get(guestPort);
      if (port === undefined) throw new Error(`no forward for ${guestPort}`);
      return { host: '127.0.0.1', port };
    },
  });
});

afterAll(async () => {
  await k.close();
  for (const c of echo.conns) c.socket.destroy();
  await new Promise((r) => echo.server.close(r));
  for (const c of wss.clients) c.terminate();
  wss.close();
  await new Promise((r) => wsHttp.close(r));
  await new Promise((r) => h2cApp.close(r));
});

const token = (port: number) => k.token('vm-f', { ports: [{ port }] });

describe('a route with connectAddress (forwarded guest ports)', () => {
  it('HTTP/1.1 goes to the address the backend gives for the guest port', async () => {
    asked.length = 0;
    const r = await k.request({
      vm: 'vm-f',
      path: '/hello',
      headers: { 'x-hearth-proxy-port': String(GUEST_HTTP), 'x-hearth-proxy-auth': await token(GUEST_HTTP) },
    });
    expect(r.status).toBe(200);
    expect(r.json<{ url: string }>().url).toBe('/hello');
    expect(asked).toEqual([GUEST_HTTP]);
  });

  it('HTTP/2 to an HTTP/1.1 app, and h2c, go there too', async () => {
    const s = http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: k.host('vm-f') });
    const get = async (port: number, extra: http2.OutgoingHttpHeaders = {}) =>
      h2Get(s, {
        ':authority': k.host('vm-f'),
        ':path': '/x',
        'x-hearth-proxy-port': String(port),
        'x-hearth-proxy-auth': await token(port),
        ...extra,
      });
    try {
      const h1 = await get(GUEST_HTTP);
      expect(h1.status).toBe(200);
      expect(JSON.parse(h1.body)).toMatchObject({ url: '/x' });
      expect(await get(GUEST_H2C, { 'x-hearth-proxy-force-h2': 'true' })).toEqual({
        status: 200,
        body: 'h2c /x',
      });
    } finally {
      s.close();
    }
  });

  it('a WebSocket is upgraded at that address', async () => {
    const t = await token(GUEST_WS);
    const ws = new WebSocket(
      `wss://127.0.0.1:${k.port}/ws`,
      ['hearth', `hearth.port.${GUEST_WS}`, `hearth.authentication.${t}`],
      { ca: k.ca, ...({ servername: k.host('vm-f') } as object), headers: { host: k.host('vm-f') } },
    );
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<string>((r) => ws.once('message', (d: Buffer) => r(d.toString())));
    ws.send('ping');
    expect(await reply).toBe('ping');
    ws.close();
  });

  it('a CONNECT tunnel connects there', async () => {
    const target = `${k.host('vm-f')}:${GUEST_TCP}`;
    const a = await sendConnect(
      k.port,
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-Hearth-Proxy-Auth: ${await token(GUEST_TCP)}\r\n\r\n`,
      { ca: k.ca, servername: k.host('vm-f') },
    );
    expect(a.status).toBe(200);
    a.socket.resume();
    const line = new Promise<string>((r) => a.socket.once('data', (d: Buffer) => r(d.toString())));
    a.socket.write('hi\n');
    expect(await line).toBe('echo: hi\n');
    a.socket.destroy();
  });

  it('answers 502 UPSTREAM_UNREACHABLE when the backend cannot give an address', async () => {
    const r = await k.request({
      vm: 'vm-f',
      headers: {
        'x-hearth-proxy-port': String(GUEST_NOTHING),
        'x-hearth-proxy-auth': await token(GUEST_NOTHING),
      },
    });
    expect(r.status).toBe(502);
    expect(r.json<{ code: string; message: string }>()).toMatchObject({
      code: 'UPSTREAM_UNREACHABLE',
      message: expect.stringContaining(`port ${GUEST_NOTHING}`),
    });
  });

  it('is not asked for a request refused before forwarding', async () => {
    asked.length = 0;
    const r = await k.request({
      vm: 'vm-f',
      headers: { 'x-hearth-proxy-port': String(GUEST_HTTP), 'x-hearth-proxy-auth': await token(GUEST_TCP) },
    });
    expect(r.status).toBe(403);
    expect(asked).toEqual([]);
  });
});
