import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startGatewayKit, type GatewayKit } from './testing.js';

let k: GatewayKit;
let appConnections = 0;

beforeAll(async () => {
  k = await startGatewayKit({ resumeTimeoutMs: 800, closeGraceMs: 1_000 });
  k.app.on('connection', () => appConnections++);
  k.backend.resumeDelayMs = 200;
});
afterAll(() => k.close());

describe('auto-resume', () => {
  it('100 concurrent first requests to a suspended microVM: all held, one resume, all succeed', async () => {
    // Its own gateway with a long hold, and a resume that finishes only once all 100 requests are
    // held: on a busy host the last requests may take longer to arrive than a resume takes.
    const kit = await startGatewayKit({ resumeTimeoutMs: 30_000 });
    try {
      let release!: () => void;
      kit.backend.resumeGate = new Promise<void>((r) => (release = r));
      kit.backend.add('vm-r', { state: 'SUSPENDED' });
      const pending = Promise.all(
        Array.from({ length: 100 }, (_, i) => kit.request({ vm: 'vm-r', path: `/r/${i}` })),
      );
      for (let i = 0; i < 2_000 && (kit.backend.ensureCalls.get('vm-r') ?? 0) < 100; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(kit.backend.ensureCalls.get('vm-r')).toBe(100); // every request is held, waiting
      expect(kit.backend.vms.get('vm-r')!.state).toBe('SUSPENDED');
      release();
      const rs = await pending;
      expect(rs.map((r) => r.status)).toEqual(Array(100).fill(200));
      expect(rs.map((r) => (r.json() as { url: string }).url)).toEqual(rs.map((_, i) => `/r/${i}`));
      expect(kit.backend.resumes.get('vm-r')).toBe(1);
    } finally {
      await kit.close();
    }
  });

  it('resumes for an HTTP/2 stream and for a WebSocket upgrade too', async () => {
    k.backend.add('vm-r2', { state: 'SUSPENDED' });
    const token = await k.token('vm-r2');
    const s = http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: k.host('vm-r2') });
    const status = await new Promise<number>((resolve, reject) => {
      const req = s.request({ ':authority': k.host('vm-r2'), ':path': '/', 'x-hearth-proxy-auth': token });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
      req.end();
    });
    s.close();
    expect(status).toBe(200);
    expect(k.backend.resumes.get('vm-r2')).toBe(1);

    // WebSocket upgrade against the echo app: it does not speak WebSocket, so its plain answer is relayed.
    k.backend.add('vm-r3', { state: 'SUSPENDED' });
    const t3 = await k.token('vm-r3');
    const ws = new WebSocket(`wss://127.0.0.1:${k.port}/`, ['hearth', `hearth.authentication.${t3}`], {
      ca: k.ca,
      ...({ servername: k.host('vm-r3') } as object), // passed on to tls.connect
      headers: { host: k.host('vm-r3') },
    });
    const res = await new Promise<http.IncomingMessage>((resolve) =>
      ws.on('unexpected-response', (_q, r) => resolve(r)),
    );
    res.resume();
    expect(res.statusCode).toBe(200); // the app's own answer: the upgrade reached it after the resume
    expect(k.backend.resumes.get('vm-r3')).toBe(1);
  });

  it('a failed resume answers 502 MICROVM_RESUME_FAILED', async () => {
    k.backend.add('vm-f', { state: 'SUSPENDED' });
    k.backend.failResume = new Error('snapshot corrupt');
    try {
      const r = await k.request({ vm: 'vm-f' });
      expect(r.status).toBe(502);
      expect(r.json()).toMatchObject({ code: 'MICROVM_RESUME_FAILED' });
    } finally {
      k.backend.failResume = undefined;
    }
  });

  it('a resume slower than resumeTimeoutMs answers 503 MICROVM_RESUME_TIMEOUT with Retry-After', async () => {
    k.backend.add('vm-slow', { state: 'SUSPENDED' });
    k.backend.resumeDelayMs = 3_000;
    try {
      const r = await k.request({ vm: 'vm-slow' });
      expect(r.status).toBe(503);
      expect(r.json()).toMatchObject({ code: 'MICROVM_RESUME_TIMEOUT' });
      expect(r.headers['retry-after']).toBe('5');
    } finally {
      k.backend.resumeDelayMs = 200;
    }
  });

  it('a PENDING microVM: the request is held until RUNNING, or 503 MICROVM_NOT_READY after the bound', async () => {
    k.backend.add('vm-p', { state: 'PENDING' });
    const ok = await k.request({ vm: 'vm-p' });
    expect(ok.status).toBe(200);
    k.backend.add('vm-p2', { state: 'PENDING' });
    k.backend.resumeDelayMs = 3_000;
    try {
      const r = await k.request({ vm: 'vm-p2' });
      expect(r.status).toBe(503);
      expect(r.json()).toMatchObject({ code: 'MICROVM_NOT_READY' });
    } finally {
      k.backend.resumeDelayMs = 200;
    }
  });

  it('without auto-resume a suspended microVM answers 409 MICROVM_SUSPENDED and is not resumed', async () => {
    k.backend.add('vm-n', { state: 'SUSPENDED', autoResume: false });
    const r = await k.request({ vm: 'vm-n' });
    expect(r.status).toBe(409);
    expect(r.json()).toMatchObject({ code: 'MICROVM_SUSPENDED' });
    expect(k.backend.ensureCalls.get('vm-n')).toBeUndefined();
  });

  it('a SUSPENDING microVM waits through ensureRunning (the backend decides)', async () => {
    k.backend.add('vm-s', { state: 'SUSPENDING', autoResume: false });
    const r = await k.request({ vm: 'vm-s' });
    expect(r.status).toBe(200);
    expect(k.backend.ensureCalls.get('vm-s')).toBe(1);
  });

  it('terminated: 410 MICROVM_TERMINATED; terminating: 409 MICROVM_TERMINATING', async () => {
    k.backend.add('vm-t');
    const token = await k.token('vm-t');
    k.backend.terminate('vm-t');
    const r = await k.request({ vm: 'vm-t', headers: { 'x-hearth-proxy-auth': token } });
    expect(r.status).toBe(410);
    expect(r.json()).toMatchObject({ code: 'MICROVM_TERMINATED' });
    k.backend.add('vm-tg', { state: 'TERMINATING' });
    const g = await k.request({ vm: 'vm-tg' });
    expect(g.status).toBe(409);
    expect(g.json()).toMatchObject({ code: 'MICROVM_TERMINATING' });
  });
});

describe('closeConnections before a suspend', () => {
  it('closes open HTTP/1.1, HTTP/2 and event-stream connections cleanly; after the resume a new instance serves', async () => {
    k.backend.add('vm-c');
    const host = k.host('vm-c');
    const token = await k.token('vm-c');

    // An idle keep-alive HTTP/1.1 connection.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await k.request({ vm: 'vm-c', agent });
    expect(first.status).toBe(200);
    const h1Socket = Object.values(agent.freeSockets)[0]![0]! as Socket;
    const h1Closed = new Promise<void>((r) => h1Socket.once('close', () => r()));

    // An event stream in flight.
    const sseEnded = new Promise<{ ended: boolean; data: string }>((resolve) => {
      https.get(
        {
          host: '127.0.0.1',
          port: k.port,
          ca: k.ca,
          servername: host,
          path: '/sse?n=1000&ms=20',
          headers: { host, 'x-hearth-proxy-auth': token },
        },
        (res) => {
          let data = '';
          res.on('data', (c: Buffer) => (data += c.toString()));
          res.on('end', () => resolve({ ended: true, data }));
          res.on('error', () => resolve({ ended: false, data }));
        },
      );
    });

    // An HTTP/2 session with a finished request, and one with a long request in flight.
    const s = http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: host });
    const goaway = new Promise<void>((r) => s.once('goaway', () => r()));
    await new Promise<void>((resolve) => {
      const q = s.request({ ':authority': host, ':path': '/', 'x-hearth-proxy-auth': token });
      q.resume();
      q.on('end', () => resolve());
      q.end();
    });
    const sseH2 = new Promise<{ rst: number | undefined; ended: boolean }>((resolve) => {
      const q = s.request({ ':authority': host, ':path': '/sse?n=1000&ms=20', 'x-hearth-proxy-auth': token });
      let ended = false;
      q.resume();
      q.on('end', () => (ended = true));
      q.on('close', () => resolve({ rst: q.rstCode, ended }));
      q.end();
    });
    // A download with a length, not being read: cut with a reset (a truncated body must not look complete).
    const bigH2 = new Promise<number | undefined>((resolve) => {
      const q = s.request({
        ':authority': host,
        ':path': '/big?bytes=100000000',
        'x-hearth-proxy-auth': token,
      });
      q.pause();
      q.on('close', () => resolve(q.rstCode));
      q.end();
    });

    await new Promise((r) => setTimeout(r, 150));
    expect(k.gw.openStreams('vm-c')).toBe(3);
    const connectionsBefore = appConnections;
    const t0 = Date.now();
    await k.gw.closeConnections('vm-c');
    expect(Date.now() - t0).toBeLessThan(900); // clean closes, not the grace timeout
    k.backend.suspend('vm-c');

    await h1Closed;
    const sse = await sseEnded;
    expect(sse.ended).toBe(true); // a clean end of the chunked stream, not a reset
    expect(sse.data).toContain('data: event 0');
    await goaway;
    expect(await sseH2).toEqual({ rst: 0, ended: true });
    expect(await bigH2).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(k.gw.openStreams('vm-c')).toBe(0);
    s.close();
    agent.destroy();

    const instanceBefore = k.backend.vms.get('vm-c')!.instance;
    const after = await k.request({ vm: 'vm-c' });
    expect(after.status).toBe(200);
    expect(k.backend.resumes.get('vm-c')).toBe(1);
    expect(k.backend.vms.get('vm-c')!.instance).toBeGreaterThan(instanceBefore);
    expect(appConnections).toBeGreaterThan(connectionsBefore); // a new upstream connection, not a pooled one
  });
});
