/**
 * Gateway benchmark: one local upstream (a minimal Node HTTP server answering a small body), measured
 * side by side in one run, each target in its own process:
 *   direct   plain HTTP/1.1 to the upstream;
 *   gateway  Hearth's gateway: TLS + endpoint token check + keep-alive upstream agent;
 *   nginx    nginx from Debian as a TLS reverse proxy with keep-alive upstream (1 worker, like the
 *            single-threaded gateway), when installed (apt-get install -y nginx).
 * Two phases per target: throughput with N keep-alive connections, and latency with 1 connection
 * (p50/p99 without queueing; "added p50" = gateway p50 - direct p50). The load generator is wrk when
 * installed (apt-get install -y wrk), else a Node one. Ends with one JSON line.
 *
 *   npm run bench -- gateway [--duration 5] [--connections 32]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import ts from 'typescript';
import { TokenAuthority } from '../src/gateway/tokens.js';
import { percentile, round } from './stats.js';

interface Target {
  name: 'direct' | 'gateway' | 'nginx';
  url: string;
  headers: Record<string, string>;
}

interface Result {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

const ROOT = join(import.meta.dirname, '..');
const VM = 'vm-bench';
const DOMAIN = 'microvm.localhost';

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Starts `node <args>` and resolves with the child and the first line it prints (JSON). */
async function startNode<T>(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ child: ChildProcess; info: T }> {
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`${args.join(' ').slice(0, 80)} exited ${c}`)));
  });
  return { child, info: JSON.parse(line) as T };
}

const UPSTREAM = `
import http from 'node:http';
const body = 'hello from the upstream\\n';
const s = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
s.keepAliveTimeout = 65_000;
s.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: s.address().port })));
process.stdin.on('end', () => process.exit(0)).resume();`;

/**
 * Transpiles src/ (without tests) to plain JavaScript, as `npm run build` would, into
 * node_modules/.cache (so packages resolve): the gateway is measured as it runs in production, not
 * under tsx (whose output wraps every closure in a naming helper, ~2% of the gateway's CPU).
 */
async function transpileSrc(): Promise<string> {
  const out = join(ROOT, 'node_modules', '.cache', 'hearth-bench-gateway');
  await rm(out, { recursive: true, force: true });
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(ROOT, 'src', rel), { withFileTypes: true })) {
      const r = join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) {
        const js = ts.transpileModule(await readFile(join(ROOT, 'src', r), 'utf8'), {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        }).outputText;
        await mkdir(join(out, rel), { recursive: true });
        await writeFile(join(out, r.replace(/\.ts$/, '.js')), js);
      }
    }
  };
  await walk('');
  await writeFile(join(out, 'package.json'), '{"type":"module"}\n');
  return out;
}

function gatewayCode(dir: string, upstreamPort: number, js: string): string {
  return `
import { createGateway } from ${JSON.stringify(join(js, 'gateway', 'gateway.js'))};
import { FakeBackend } from ${JSON.stringify(join(js, 'gateway', 'testing.js'))};
const backend = new FakeBackend();
backend.add(${JSON.stringify(VM)});
const gw = await createGateway({ backend, tokens: { keyFile: ${JSON.stringify(join(dir, 'token.pem'))} },
  tls: { dir: ${JSON.stringify(join(dir, 'tls'))} }, domain: ${JSON.stringify(DOMAIN)}, defaultPort: ${upstreamPort},
  rateLimit: false });
await gw.listen(0, '127.0.0.1');
console.log(JSON.stringify({ port: gw.address().port }));
process.stdin.on('end', () => process.exit(0)).resume();`;
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const p = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

/** nginx as a TLS reverse proxy with a keep-alive upstream pool, config and temp files in `dir`. */
async function startNginx(dir: string, upstreamPort: number): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const conf = `
worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${dir}/tls/server.crt;
    ssl_certificate_key ${dir}/tls/server.key;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = spawn(
    'nginx',
    ['-p', dir, '-e', join(dir, 'nginx-error.log'), '-c', join(dir, 'nginx.conf')],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null)
      throw new Error(`nginx exited ${child.exitCode} (see ${dir}/nginx-error.log)`);
    const up = await new Promise<boolean>((resolve) => {
      const req = https.get({ host: '127.0.0.1', port, rejectUnauthorized: false, path: '/' }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
    });
    if (up) return { child, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nginx did not start');
}

/** One GET, checking the target answers 200 before measuring it. */
function check(t: Target): Promise<void> {
  const u = new URL(t.url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        headers: t.headers,
        rejectUnauthorized: false,
        agent: false,
      },
      (res) => {
        res.resume();
        if (res.statusCode === 200) resolve();
        else reject(new Error(`${t.name}: HTTP ${res.statusCode}`));
      },
    );
    req.on('error', reject);
  });
}

function wrkMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n;
}

/** wrk, 1 thread (2 cores are shared by the generator, the proxy and the upstream). */
function runWrk(t: Target, connections: number, durationS: number): Result {
  const args = ['-t1', `-c${connections}`, `-d${durationS}s`, '--latency'];
  for (const [k, v] of Object.entries(t.headers)) args.push('-H', `${k}: ${v}`);
  args.push(t.url);
  const r = spawnSync('wrk', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const lat = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)`, 'm').exec(out);
    return m ? wrkMs(m[1]!, m[2]!) : NaN;
  };
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps, p50Ms: lat('50'), p99Ms: lat('99'), errors };
}

/** A Node load generator: `connections` keep-alive loops of sequential GETs. */
async function runNode(t: Target, connections: number, durationS: number): Promise<Result> {
  const u = new URL(t.url);
  const secure = u.protocol === 'https:';
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: connections, rejectUnauthorized: false })
    : new http.Agent({ keepAlive: true, maxSockets: connections });
  const mod = secure ? https : http;
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + durationS * 1000;
  const one = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = mod.get(
        { host: u.hostname, port: u.port, path: u.pathname, headers: t.headers, agent },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) errors++;
            lat.push(performance.now() - t0);
            resolve();
          });
        },
      );
      req.on('error', () => {
        errors++;
        resolve();
      });
    });
  const start = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  agent.destroy();
  return {
    rps: lat.length / ((performance.now() - start) / 1000),
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    errors,
  };
}

export async function main(argv: string[], opts: { quiet?: boolean } = {}): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '5' },
      connections: { type: 'string', default: '32' },
      'node-loadgen': { type: 'boolean', default: false },
    },
  });
  const durationS = Number(values.duration);
  const connections = Number(values.connections);
  const useWrk = !values['node-loadgen'] && have('wrk');
  const say = (s: string) => process.stdout.write(s + '\n');
  const dir = await mkdtemp(join(tmpdir(), 'hearth-bench-gw-'));
  const children: ChildProcess[] = [];
  let js: string | undefined;
  try {
    const upstream = await startNode<{ port: number }>(['--input-type=module', '-e', UPSTREAM]);
    children.push(upstream.child);
    js = await transpileSrc();
    const gateway = await startNode<{ port: number }>(
      ['--input-type=module', '-e', gatewayCode(dir, upstream.info.port, js)],
      { HEARTH_LOG_LEVEL: 'warn' },
    );
    children.push(gateway.child);
    const tokens = await TokenAuthority.open({ keyFile: join(dir, 'token.pem') });
    const token = await tokens.mint({
      microvmId: VM,
      allowedPorts: [{ port: upstream.info.port }],
      expirationInMinutes: 60,
      generation: 1,
    });
    const host = `${VM}.${DOMAIN}`;
    const targets: Target[] = [
      { name: 'direct', url: `http://127.0.0.1:${upstream.info.port}/`, headers: {} },
      {
        name: 'gateway',
        url: `https://127.0.0.1:${gateway.info.port}/`,
        headers: { Host: host, 'X-Hearth-Proxy-Auth': token },
      },
    ];
    if (have('nginx')) {
      const nginx = await startNginx(dir, upstream.info.port);
      children.push(nginx.child);
      targets.push({ name: 'nginx', url: `https://127.0.0.1:${nginx.port}/`, headers: { Host: host } });
    } else {
      say('nginx not installed (apt-get install -y nginx): skipping it');
    }
    for (const t of targets) await check(t);
    say(
      `load generator: ${useWrk ? 'wrk (1 thread)' : 'node'}; ${connections} keep-alive connections for throughput, ` +
        `1 for latency; ${durationS} s each; ${durationS > 2 ? '1 s' : 'no'} warm-up`,
    );
    const run = (t: Target, c: number, d: number) => (useWrk ? runWrk(t, c, d) : runNode(t, c, d));
    const results: Record<string, { tput: Result; lat: Result }> = {};
    for (const t of targets) {
      if (durationS > 2) await run(t, connections, 1); // warm-up (JIT, TLS sessions, pools)
      const tput = await run(t, connections, durationS);
      const lat = await run(t, 1, durationS);
      results[t.name] = { tput, lat };
      say(
        `${t.name.padEnd(8)} ${String(Math.round(tput.rps)).padStart(7)} req/s (c=${connections}, p50 ${round(tput.p50Ms, 2)} ms, ` +
          `p99 ${round(tput.p99Ms, 2)} ms)   c=1: ${String(Math.round(lat.rps)).padStart(6)} req/s, p50 ${round(lat.p50Ms, 3)} ms, ` +
          `p99 ${round(lat.p99Ms, 3)} ms${tput.errors + lat.errors ? `   errors ${tput.errors + lat.errors}` : ''}`,
      );
    }
    const d = results.direct!;
    const g = results.gateway!;
    const n = results.nginx;
    const summary = {
      direct_rps: Math.round(d.tput.rps),
      gateway_rps: Math.round(g.tput.rps),
      nginx_rps: n ? Math.round(n.tput.rps) : null,
      gateway_added_p50_ms: round(g.lat.p50Ms - d.lat.p50Ms, 3),
      nginx_added_p50_ms: n ? round(n.lat.p50Ms - d.lat.p50Ms, 3) : null,
      gateway_vs_nginx_rps: n ? round(g.tput.rps / n.tput.rps, 2) : null,
      direct_p50_ms: round(d.lat.p50Ms, 3),
      gateway_p50_ms: round(g.lat.p50Ms, 3),
      gateway_p99_ms: round(g.lat.p99Ms, 3),
      connections,
      duration_s: durationS,
      load_generator: useWrk ? 'wrk' : 'node',
    };
    if (!opts.quiet) say(JSON.stringify(summary));
    return summary;
  } finally {
    for (const c of children) {
      c.stdin?.end();
      c.kill('SIGTERM');
    }
    await rm(dir, { recursive: true, force: true });
    if (js) await rm(js, { recursive: true, force: true });
  }
}
