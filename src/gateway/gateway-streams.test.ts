import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatewayKit, type GatewayKit } from './testing.js';
import { TokenAuthority } from './tokens.js';

let k: GatewayKit;
beforeAll(async () => {
  k = await startGatewayKit();
});
afterAll(() => k.close());

const MiB = 1024 * 1024;

/** Samples this process's RSS every 10 ms while `fn` runs; resolves with the peak growth in MiB. */
async function peakRssGrowthMiB(fn: () => Promise<void>): Promise<number> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  try {
    await fn();
  } finally {
    clearInterval(t);
  }
  return (Math.max(peak, process.memoryUsage().rss) - base) / MiB;
}

function openRequest(o: { path: string; method?: string; token: string; agent?: https.Agent }) {
  return https.request({
    host: '127.0.0.1',
    port: k.port,
    ca: k.ca,
    servername: k.host('vm-1'),
    method: o.method ?? 'GET',
    path: o.path,
    agent: o.agent ?? false,
    headers: { host: k.host('vm-1'), 'x-hearth-proxy-auth': o.token },
  });
}

/** RSS of process `pid`, MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

/**
 * A gateway in its own process (so its RSS is its own), sharing the kit's key file and TLS directory,
 * forwarding vm-1 to the kit's echo app.
 */
async function spawnGateway(): Promise<{
  child: ChildProcess;
  port: number;
  tokens: TokenAuthority;
  ca: string;
}> {
  const code = `
    import { createGateway } from ${JSON.stringify(join(import.meta.dirname, 'gateway.ts'))};
    import { FakeBackend } from ${JSON.stringify(join(import.meta.dirname, 'testing.ts'))};
    const backend = new FakeBackend();
    backend.add('vm-1');
    const gw = await createGateway({ backend, tokens: { keyFile: ${JSON.stringify(join(k.dir, 'token.pem'))} },
      tls: { dir: ${JSON.stringify(join(k.dir, 'tls'))} }, defaultPort: ${k.appPort} });
    await gw.listen(0, '127.0.0.1');
    console.log(JSON.stringify({ port: gw.address().port }));
    // Collect garbage often, so that RSS measures what is held, not what the GC has not reclaimed yet.
    setInterval(() => globalThis.gc(), 10);
    process.stdin.on('end', () => process.exit(0)).resume();`;
  const child = spawn(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', code],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`gateway process exited ${c}`)));
  });
  const { port } = JSON.parse(line) as { port: number };
  return {
    child,
    port,
    tokens: await TokenAuthority.open({ keyFile: join(k.dir, 'token.pem') }),
    ca: await readFile(join(k.dir, 'tls', 'ca.crt'), 'utf8'),
  };
}

describe('large bodies are streamed with backpressure, never buffered whole', () => {
  it("a 50 MiB upload and a 50 MiB download: the gateway process's RSS grows far less than 50 MiB", async () => {
    const g = await spawnGateway();
    try {
      const token = await g.tokens.mint({
        microvmId: 'vm-1',
        allowedPorts: [{ port: k.appPort }],
        expirationInMinutes: 5,
        generation: 1,
      });
      const total = 50 * MiB;
      const open = (path: string, method = 'GET') =>
        https.request({
          host: '127.0.0.1',
          port: g.port,
          ca: g.ca,
          servername: k.host('vm-1'),
          method,
          path,
          agent: false,
          headers: { host: k.host('vm-1'), 'x-hearth-proxy-auth': token },
        });
      const download = (bytes: number) =>
        new Promise<number>((resolve, reject) => {
          const req = open(`/big?bytes=${bytes}`);
          req.on('response', (res) => {
            let n = 0;
            res.on('data', (c: Buffer) => (n += c.length));
            res.on('end', () => resolve(n));
          });
          req.on('error', reject);
          req.end();
        });
      const upload = (bytes: number) =>
        new Promise<number>((resolve, reject) => {
          const req = open('/upload', 'POST');
          req.setHeader('content-length', bytes);
          req.on('response', (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve((JSON.parse(body) as { bodyBytes: number }).bodyBytes));
          });
          req.on('error', reject);
          const chunk = Buffer.alloc(256 * 1024, 0x62);
          let left = bytes;
          const pump = () => {
            while (left > 0) {
              const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
              left -= c.length;
              if (!req.write(c)) return void req.once('drain', pump);
            }
            req.end();
          };
          pump();
        });
      // Warm up both directions (JIT, TLS, connection pools, allocator arenas).
      await upload(8 * MiB);
      await download(8 * MiB);
      const base = rssMiB(g.child.pid!);
      let peak = base;
      const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(g.child.pid!))), 10);
      const uploaded = await upload(total);
      const downloaded = await download(total);
      clearInterval(sampler);
      expect(uploaded).toBe(total);
      expect(downloaded).toBe(total);
      // Measured 0-3 MiB after the warm-up; buffering a body whole would add >= 50 MiB.
      expect(peak - base).toBeLessThan(16);
    } finally {
      g.child.stdin!.end();
    }
  });
});

describe('one slow client never stalls others', () => {
  it('HTTP/1.1: a client that stops reading a big download does not delay other clients of the same VM', async () => {
    const token = await k.token('vm-1');
    const stalled = openRequest({ path: `/big?bytes=${500 * MiB}`, token });
    const gotFirstBytes = new Promise<void>((resolve) =>
      stalled.on('response', (res) => {
        res.once('data', () => {
          res.pause();
          resolve();
        });
      }),
    );
    stalled.on('error', () => undefined);
    stalled.end();
    await gotFirstBytes;
    const growth = await peakRssGrowthMiB(async () => {
      const t0 = Date.now();
      for (let i = 0; i < 20; i++) expect((await k.request({ path: `/other/${i}` })).status).toBe(200);
      expect(Date.now() - t0).toBeLessThan(2_000);
      await new Promise((r) => setTimeout(r, 300)); // the stalled transfer would pile up here if unbounded
    });
    expect(growth).toBeLessThan(40);
    stalled.destroy();
  });

  it('HTTP/2: a stalled stream does not block other streams of the same session', async () => {
    const token = await k.token('vm-1');
    const s = http2.connect(`https://127.0.0.1:${k.port}`, { ca: k.ca, servername: k.host('vm-1') });
    const stalled = s.request({
      ':authority': k.host('vm-1'),
      ':path': `/big?bytes=${200 * MiB}`,
      'x-hearth-proxy-auth': token,
    });
    await new Promise<void>((resolve) =>
      stalled.once('data', () => {
        stalled.pause();
        resolve();
      }),
    );
    stalled.end();
    await new Promise((r) => setTimeout(r, 200)); // let the stalled stream fill every window it can
    const t0 = Date.now();
    for (let i = 0; i < 10; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const q = s.request({
          ':authority': k.host('vm-1'),
          ':path': `/h2/${i}`,
          'x-hearth-proxy-auth': token,
        });
        let st = 0;
        q.on('response', (h) => (st = Number(h[':status'])));
        q.resume();
        q.on('end', () => resolve(st));
        q.on('error', reject);
        q.end();
      });
      expect(status).toBe(200);
    }
    expect(Date.now() - t0).toBeLessThan(2_000);
    stalled.close(http2.constants.NGHTTP2_CANCEL);
    s.close();
  });
});
