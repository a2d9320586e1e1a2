import http from 'node:http';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatewayKit, type GatewayKit } from './testing.js';

let k: GatewayKit;
beforeAll(async () => {
  k = await startGatewayKit();
});
afterAll(() => k.close());

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  bodyBytes: number;
}

describe('gateway over HTTP/1.1 (TLS)', () => {
  it('serves several requests on one keep-alive connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const ports = new Set<number | undefined>();
    for (let i = 0; i < 5; i++) {
      const r = await k.request({ path: `/n/${i}`, agent });
      expect(r.status).toBe(200);
      expect(r.json<Echo>().url).toBe(`/n/${i}`);
      ports.add(r.localPort);
    }
    agent.destroy();
    expect(ports.size).toBe(1);
  });

  it('forwards method, path, body and app headers; keeps Host; adds X-Forwarded-*', async () => {
    const r = await k.request({
      method: 'POST',
      path: '/a/b?x=1',
      body: 'hello',
      headers: { 'x-custom': 'yes' },
    });
    expect(r.status).toBe(200);
    expect(r.headers['x-app']).toBe('echo');
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    const e = r.json<Echo>();
    expect(e).toMatchObject({ method: 'POST', url: '/a/b?x=1', bodyBytes: 5 });
    expect(e.headers.host).toBe(k.host('vm-1'));
    expect(e.headers['x-custom']).toBe('yes');
    expect(e.headers['x-forwarded-proto']).toBe('https');
    expect(e.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('strips every X-Hearth-* header, hearth-* cookie and query parameter before forwarding', async () => {
    const token = await k.token('vm-1');
    const r = await k.request({
      method: 'POST',
      path: `/p?x=1&hearth-auth=${token}&y=2&hearth-microvm=vm-1`,
      headers: {
        'x-hearth-proxy-auth': token,
        'x-hearth-proxy-port': String(k.appPort),
        'x-hearth-microvm-id': 'vm-1',
        'x-hearth-other': 'z',
        cookie: `a=b; hearth-auth=${token}; hearth-microvm=vm-1; c=d`,
      },
    });
    expect(r.status).toBe(200);
    const e = r.json<Echo>();
    expect(e.url).toBe('/p?x=1&y=2');
    expect(e.headers.cookie).toBe('a=b; c=d');
    expect(Object.keys(e.headers).filter((h) => h.startsWith('x-hearth'))).toEqual([]);
    expect(JSON.stringify(e)).not.toContain(token);
  });

  it('routes by X-Hearth-Microvm-Id for clients that cannot set Host', async () => {
    const r = await k.request({ headers: { host: '127.0.0.1', 'x-hearth-microvm-id': 'vm-1' }, auth: false });
    expect(r.status).toBe(403); // routed (to vm-1), then asked for a token
    const t = await k.token('vm-1');
    const ok = await k.request({
      headers: { host: 'localhost', 'x-hearth-microvm-id': 'vm-1', 'x-hearth-proxy-auth': t },
    });
    expect(ok.status).toBe(200);
  });

  it('sets the auth cookie from ?hearth-auth= with a redirect that drops the token from the URL', async () => {
    const t = await k.token('vm-1');
    const r = await k.request({ path: `/page?x=1&hearth-auth=${t}`, auth: false });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/page?x=1');
    const cookie = r.headers['set-cookie']![0]!;
    expect(cookie).toMatch(
      /^hearth-auth=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Secure; Max-Age=(29\d|300)$/,
    );
    expect(cookie).not.toMatch(/Domain=/i); // host-only: scoped to this microVM's endpoint
    const next = await k.request({
      path: '/page?x=1',
      auth: false,
      headers: { cookie: cookie.split(';')[0]! + '; app=1' },
    });
    expect(next.status).toBe(200);
    expect(next.json<Echo>().headers.cookie).toBe('app=1');
  });

  it('sets the microVM cookie from ?hearth-microvm= for browsers on a shared host', async () => {
    const t = await k.token('vm-1');
    const r = await k.request({
      path: `/?hearth-microvm=vm-1&hearth-auth=${t}`,
      auth: false,
      headers: { host: `localhost:${k.port}` },
    });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/');
    const cookies = r.headers['set-cookie']!.map((c) => c.split(';')[0]).join('; ');
    expect(cookies).toContain('hearth-microvm=vm-1');
    const next = await k.request({ auth: false, headers: { host: `localhost:${k.port}`, cookie: cookies } });
    expect(next.status).toBe(200);
  });

  it('rejects requests that name no microVM (400)', async () => {
    const a = await k.request({ headers: { host: 'localhost' }, auth: false });
    expect(a.status).toBe(400);
    expect(a.json()).toMatchObject({ code: 'GATEWAY_MICROVM_ID_MISSING' });
    expect(a.headers['content-type']).toBe('application/json');
    const b = await k.request({ headers: { host: `a.b.${k.gw.domain}` }, auth: false });
    expect(b.status).toBe(400);
    expect(b.json()).toMatchObject({ code: 'GATEWAY_BAD_HOST' });
    const c = await k.request({ headers: { 'x-hearth-proxy-port': 'abc' } });
    expect(c.status).toBe(400);
    expect(c.json()).toMatchObject({ code: 'GATEWAY_BAD_PORT' });
    const d = await k.request({ headers: { host: 'localhost', 'x-hearth-microvm-id': 'Bad_ID' } });
    expect(d.json()).toMatchObject({ code: 'GATEWAY_BAD_MICROVM_ID' });
  });

  it('answers 404 for an unknown microVM (with a valid token for it)', async () => {
    const r = await k.request({ vm: 'vm-nope' });
    expect(r.status).toBe(404);
    expect(r.json()).toMatchObject({ code: 'MICROVM_NOT_FOUND' });
    expect(String(r.json().message)).toMatch(/vm-nope/);
  });

  it('answers 502 UPSTREAM_UNREACHABLE when nothing listens on the port', async () => {
    const t = await k.token('vm-1', { ports: [{ allPorts: {} }] });
    const r = await k.request({ headers: { 'x-hearth-proxy-port': '1', 'x-hearth-proxy-auth': t } });
    expect(r.status).toBe(502);
    expect(r.json()).toMatchObject({ code: 'UPSTREAM_UNREACHABLE' });
  });

  it('streams server-sent events one by one, not buffered', async () => {
    const t = await k.token('vm-1');
    const arrivals: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = https.get(
        {
          host: '127.0.0.1',
          port: k.port,
          ca: k.ca,
          servername: k.host('vm-1'),
          path: '/sse?n=4&ms=150',
          headers: { host: k.host('vm-1'), 'x-hearth-proxy-auth': t },
        },
        (res) => {
          expect(res.headers['content-type']).toBe('text/event-stream');
          let buf = '';
          res.on('data', (c: Buffer) => {
            buf += c.toString();
            const events = buf.split('\n\n');
            buf = events.pop()!;
            for (const _ of events) arrivals.push(Date.now());
          });
          res.on('end', () => resolve());
        },
      );
      req.on('error', reject);
    });
    expect(arrivals).toHaveLength(4);
    for (let i = 1; i < arrivals.length; i++) expect(arrivals[i]! - arrivals[i - 1]!).toBeGreaterThan(80);
  });

  it('reports activity: one request event per authenticated request, bytes, paired stream events', async () => {
    k.gw.flushActivity();
    const before = {
      req: k.backend.activityOf('vm-1', 'request'),
      open: k.backend.activityOf('vm-1', 'stream-open'),
      bytes: k.backend.activityOf('vm-1', 'bytes'),
    };
    await k.request({ method: 'POST', body: Buffer.alloc(1000) });
    await k.request({ auth: false }); // unauthenticated: no activity
    await new Promise((r) => setTimeout(r, 20));
    k.gw.flushActivity();
    expect(k.backend.activityOf('vm-1', 'request') - before.req).toBe(1);
    expect(k.backend.activityOf('vm-1', 'stream-open') - before.open).toBe(1);
    expect(k.backend.activityOf('vm-1', 'stream-open')).toBe(k.backend.activityOf('vm-1', 'stream-close'));
    expect(k.backend.activityOf('vm-1', 'bytes') - before.bytes).toBeGreaterThan(1000);
    expect(k.gw.openStreams('vm-1')).toBe(0);
    const m = k.gw.metrics('vm-1');
    expect(m.requests).toBeGreaterThan(5);
    expect(m.errors).toBeGreaterThan(0);
  });

  it('serves plaintext HTTP/1.1 only on the configured plaintext port (cookies then without Secure)', async () => {
    const pk = await startGatewayKit({}, { plaintextPort: 0 });
    try {
      const port = pk.gw.address().plaintextPort!;
      const get = (path: string, headers: http.OutgoingHttpHeaders) =>
        new Promise<http.IncomingMessage & { body: string }>((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port, path, headers: { host: pk.host('vm-1'), ...headers } }, (res) => {
              let body = '';
              res.on('data', (c: Buffer) => (body += c.toString()));
              res.on('end', () => resolve(Object.assign(res, { body })));
            })
            .on('error', reject);
        });
      const t = await pk.token('vm-1');
      const ok = await get('/plain', { 'x-hearth-proxy-auth': t });
      expect(ok.statusCode).toBe(200);
      expect((JSON.parse(ok.body) as Echo).headers['x-forwarded-proto']).toBe('http');
      const redirect = await get(`/?hearth-auth=${t}`, {});
      expect(redirect.statusCode).toBe(303);
      expect(redirect.headers['set-cookie']![0]).not.toMatch(/Secure/);
    } finally {
      await pk.close();
    }
  });
});
