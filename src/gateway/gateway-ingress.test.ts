import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendConnect, startGatewayKit, type ConnectAnswer, type GatewayKit } from './testing.js';

let k: GatewayKit;
beforeAll(async () => {
  k = await startGatewayKit();
});
afterAll(() => k.close());

/** A NO_INGRESS microVM, SUSPENDED with auto-resume on: any request that got through would resume it. */
function addClosedVm(id: string): void {
  k.backend.add(id, { ingress: 'none', state: 'SUSPENDED', autoResume: true });
}

/** Sends `request` lines (a head without Host) for `host` over TLS; reads the answer and closes. */
async function sendRaw(host: string, lines: string[]): Promise<ConnectAnswer> {
  const [first, ...rest] = lines;
  const head = [first, `Host: ${host}`, ...rest].join('\r\n') + '\r\n\r\n';
  const a = await sendConnect(k.port, head, { ca: k.ca, servername: host });
  a.socket.destroy();
  return a;
}

/** CONNECT to the echo app's port of `vm`, with a token for it. */
async function connectTo(vm: string): Promise<ConnectAnswer> {
  const t = await k.token(vm);
  return sendRaw(k.host(vm), [`CONNECT ${k.host(vm)}:${k.appPort} HTTP/1.1`, `X-Hearth-Proxy-Auth: ${t}`]);
}

async function h2Request(
  vm: string,
  headers: http2.OutgoingHttpHeaders = {},
): Promise<{ headers: http2.IncomingHttpHeaders; body: string }> {
  const token = await k.token(vm);
  const s = http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: k.host(vm) });
  try {
    return await new Promise((resolve, reject) => {
      const req = s.request({
        ':authority': k.host(vm),
        ':path': '/',
        'x-hearth-proxy-auth': token,
        ...headers,
      });
      let h: http2.IncomingHttpHeaders = {};
      let body = '';
      req.on('response', (x) => (h = x));
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve({ headers: h, body }));
      req.on('error', reject);
      req.end();
    });
  } finally {
    s.close();
  }
}

describe('NO_INGRESS', () => {
  it('refuses HTTP/1.1 with 403 INGRESS_DISABLED and never resumes the microVM', async () => {
    addClosedVm('vm-none-1');
    const r = await k.request({ vm: 'vm-none-1', method: 'POST', body: 'x' });
    expect(r.status).toBe(403);
    const e = r.json<{ code: string; message: string }>();
    expect(e.code).toBe('INGRESS_DISABLED');
    expect(e.message).toMatch(/NO_INGRESS.*HTTP_INGRESS or ALL_INGRESS/);
    expect(k.backend.ensureCalls.get('vm-none-1')).toBeUndefined();
    expect(k.backend.activityOf('vm-none-1', 'request')).toBe(0);
    expect(k.backend.vms.get('vm-none-1')!.state).toBe('SUSPENDED');
  });

  it('still authenticates first: without a token the answer is TOKEN_MISSING', async () => {
    addClosedVm('vm-none-auth');
    const r = await k.request({ vm: 'vm-none-auth', auth: false });
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ code: 'TOKEN_MISSING' });
  });

  it('refuses the browser cookie visit too (no cookie set)', async () => {
    addClosedVm('vm-none-visit');
    const t = await k.token('vm-none-visit');
    const r = await k.request({ vm: 'vm-none-visit', path: `/?hearth-auth=${t}`, auth: false });
    expect(r.status).toBe(403);
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it('refuses HTTP/2 and gRPC', async () => {
    addClosedVm('vm-none-2');
    const r = await h2Request('vm-none-2');
    expect(r.headers[':status']).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ code: 'INGRESS_DISABLED' });
    const g = await h2Request('vm-none-2', { ':method': 'POST', 'content-type': 'application/grpc' });
    expect(g.headers['grpc-status']).toBe('7'); // PERMISSION_DENIED
    expect(String(g.headers['grpc-message'])).toMatch(/^INGRESS_DISABLED: /);
    expect(k.backend.ensureCalls.get('vm-none-2')).toBeUndefined();
  });

  it('refuses a WebSocket upgrade', async () => {
    addClosedVm('vm-none-ws');
    const t = await k.token('vm-none-ws');
    const a = await sendRaw(k.host('vm-none-ws'), [
      'GET / HTTP/1.1',
      'Connection: Upgrade',
      'Upgrade: websocket',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      `Sec-WebSocket-Protocol: hearth, hearth.authentication.${t}`,
    ]);
    expect(a.status).toBe(403);
    expect(a.json()).toMatchObject({ code: 'INGRESS_DISABLED' });
    expect(k.backend.ensureCalls.get('vm-none-ws')).toBeUndefined();
  });

  it('refuses a CONNECT tunnel', async () => {
    addClosedVm('vm-none-tcp');
    const a = await connectTo('vm-none-tcp');
    expect(a.status).toBe(403);
    expect(a.json()).toMatchObject({ code: 'INGRESS_DISABLED' });
    expect(k.backend.ensureCalls.get('vm-none-tcp')).toBeUndefined();
  });
});

describe('HTTP_INGRESS (the default)', () => {
  it('serves HTTP/1.1 and HTTP/2, refuses CONNECT', async () => {
    k.backend.add('vm-http');
    expect((await k.request({ vm: 'vm-http' })).status).toBe(200);
    expect((await h2Request('vm-http')).headers[':status']).toBe(200);
    const a = await connectTo('vm-http');
    expect(a.status).toBe(403);
    expect(a.json()).toMatchObject({ code: 'INGRESS_PROTOCOL_NOT_ALLOWED' });
  });
});
