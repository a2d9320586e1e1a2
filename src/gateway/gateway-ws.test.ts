import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { listenLocal, startGatewayKit, type GatewayKit } from './testing.js';

let k: GatewayKit;
let wsHttp: http.Server;
let wss: WebSocketServer;
let wsPort: number;
const handshakes: Array<{ headers: http.IncomingHttpHeaders; protocols: string[] }> = [];
const appCloses: number[] = [];

beforeAll(async () => {
  k = await startGatewayKit();
  wsHttp = http.createServer();
  wss = new WebSocketServer({
    server: wsHttp,
    maxPayload: 64 * 1024 * 1024,
    handleProtocols: (protocols) => (protocols.has('chat') ? 'chat' : false),
  });
  wss.on('connection', (ws, req) => {
    handshakes.push({
      headers: req.headers,
      protocols: (req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    });
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code) => appCloses.push(code));
  });
  wsPort = await listenLocal(wsHttp);
});

afterAll(async () => {
  await k.close();
  for (const c of wss.clients) c.terminate();
  wss.close();
  await new Promise((r) => wsHttp.close(r));
});

async function open(
  protocols: string[],
  o: { token?: string | false; path?: string } = {},
): Promise<WebSocket> {
  const token = o.token === undefined ? await k.token('vm-1', { ports: [{ port: wsPort }] }) : o.token;
  const all = [
    ...protocols,
    `hearth.port.${wsPort}`,
    ...(token === false ? [] : [`hearth.authentication.${token}`]),
  ];
  const ws = new WebSocket(`wss://127.0.0.1:${k.port}${o.path ?? '/ws'}`, all, {
    ca: k.ca,
    ...({ servername: k.host('vm-1') } as object), // passed on to tls.connect
    headers: { host: k.host('vm-1') },
    maxPayload: 64 * 1024 * 1024,
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

function nextMessage(ws: WebSocket): Promise<Buffer> {
  return new Promise((resolve) => ws.once('message', (d: Buffer) => resolve(d)));
}

describe('WebSockets through the gateway', () => {
  it('echoes messages; the app sees neither the token nor Hearth subprotocols', async () => {
    const ws = await open(['hearth', 'chat']);
    expect(ws.protocol).toBe('chat');
    for (let i = 0; i < 3; i++) {
      const p = nextMessage(ws);
      ws.send(`hello ${i}`);
      expect((await p).toString()).toBe(`hello ${i}`);
    }
    const h = handshakes.at(-1)!;
    expect(h.protocols).toEqual(['chat']);
    expect(Object.keys(h.headers).filter((x) => x.startsWith('x-hearth'))).toEqual([]);
    expect(JSON.stringify(h.headers)).not.toContain('hearth.authentication');
    ws.close();
  });

  it('selects the hearth subprotocol when the app selects none', async () => {
    const ws = await open(['hearth']);
    expect(ws.protocol).toBe('hearth');
    expect(handshakes.at(-1)!.protocols).toEqual([]);
    ws.close();
  });

  it('carries large frames both ways intact', async () => {
    const ws = await open(['hearth']);
    const big = randomBytes(8 * 1024 * 1024);
    const p = nextMessage(ws);
    ws.send(big);
    const back = await p;
    expect(createHash('sha256').update(back).digest('hex')).toBe(
      createHash('sha256').update(big).digest('hex'),
    );
    ws.close();
  });

  it('rejects a handshake without a token with 403 JSON', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${k.port}/ws`, ['hearth', `hearth.port.${wsPort}`], {
      ca: k.ca,
      ...({ servername: k.host('vm-1') } as object), // passed on to tls.connect
      headers: { host: k.host('vm-1') },
    });
    const res = await new Promise<http.IncomingMessage>((resolve) =>
      ws.on('unexpected-response', (_req, r) => resolve(r)),
    );
    let body = '';
    for await (const c of res) body += String(c);
    expect(res.statusCode).toBe(403);
    expect(JSON.parse(body)).toMatchObject({ code: 'TOKEN_MISSING' });
  });

  it('rejects a token that does not allow the port given by subprotocol', async () => {
    const t = await k.token('vm-1', { ports: [{ port: 1 }] });
    const ws = new WebSocket(
      `wss://127.0.0.1:${k.port}/ws`,
      ['hearth', `hearth.port.${wsPort}`, `hearth.authentication.${t}`],
      {
        ca: k.ca,
        ...({ servername: k.host('vm-1') } as object), // passed on to tls.connect
        headers: { host: k.host('vm-1') },
      },
    );
    const res = await new Promise<http.IncomingMessage>((resolve) =>
      ws.on('unexpected-response', (_req, r) => resolve(r)),
    );
    expect(res.statusCode).toBe(403);
    res.resume();
  });

  it('closeConnections sends close 1012 "service restart" to the client and a close to the app', async () => {
    const ws = await open(['hearth']);
    const p = nextMessage(ws);
    ws.send('before');
    await p;
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    const appClosesBefore = appCloses.length;
    await k.gw.closeConnections('vm-1');
    expect(await closed).toEqual({ code: 1012, reason: 'service restart' });
    await new Promise((r) => setTimeout(r, 50));
    expect(appCloses.length).toBe(appClosesBefore + 1);
    expect(appCloses.at(-1)).toBe(1001);
    expect(k.gw.openStreams('vm-1')).toBe(0);
  });
});
