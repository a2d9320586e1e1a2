/**
 * Gateway benchmark, in one run: the proxy comparison of bench/gateway-proxy.ts (direct vs Hearth's
 * gateway vs nginx on one upstream), then resume-on-request with real microVMs: a SUSPENDED
 * microVM with autoResume gets one request through its HTTPS endpoint, timed to the first byte of
 * the answer (TLS handshake included), repeated. Ends with one JSON line.
 *
 *   npm run bench -- gateway [--duration 5] [--connections 32] [--resumes 10]
 */
import { connect } from 'node:tls';
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../src/config/server-config.js';
import {
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TerminateMicrovmCommand,
  createEndpointToken,
  hearthClient,
  waitForMicrovm,
} from '../src/sdk/index.js';
import { startServer } from '../src/server/serve.js';
import { BENCH_IMAGE, ensureFlaskImage } from './flask-image.js';
import { ensurePackages } from '../src/host/packages.js';
import { main as proxyBench } from './gateway-proxy.js';
import { percentile, round, summary } from './stats.js';

const IMAGE = BENCH_IMAGE;

/** Milliseconds from connecting to the first byte of the response, on a fresh TLS connection. */
function firstByteMs(endpoint: string, token: string, ca: string): Promise<number> {
  const [host, port] = endpoint.split(':') as [string, string];
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const s = connect(
      { host: '127.0.0.1', port: Number(port), servername: host, ca, ALPNProtocols: ['http/1.1'] },
      () => {
        s.write(
          `GET / HTTP/1.1\r\nHost: ${endpoint}\r\nX-Hearth-Proxy-Auth: ${token}\r\nConnection: close\r\n\r\n`,
        );
      },
    );
    s.once('data', (b: Buffer) => {
      const ms = performance.now() - t0;
      s.destroy();
      if (!b.toString().startsWith('HTTP/1.1 200'))
        reject(new Error(`answer: ${b.toString().split('\r\n')[0]}`));
      else resolve(ms);
    });
    s.on('error', reject);
  });
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '5' },
      connections: { type: 'string', default: '32' },
      resumes: { type: 'string', default: '10' },
    },
  });
  const say = (s: string) => process.stdout.write(s + '\n');
  await ensurePackages(['nginx', 'wrk']); // the comparison proxy and the load generator
  const proxy = await proxyBench(['--duration', values.duration, '--connections', values.connections], {
    quiet: true,
  });

  const config = await loadServerConfig({
    flags: { apiPort: 0, gatewayPort: 0, gatewayHost: '127.0.0.1', minIdleSeconds: 1 },
  });
  const server = await startServer(config);
  const client = hearthClient({ endpoint: server.apiUrl, region: config.region, ...server.credentials });
  const ca = server.gateway.ca!;
  try {
    await ensureFlaskImage(client);
    const run = await client.send(
      new RunMicrovmCommand({
        imageIdentifier: IMAGE,
        idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true },
      }),
    );
    const vm = await waitForMicrovm(client, run.microvmId!, ['RUNNING']);
    const token = await createEndpointToken(client, vm.microvmId!);
    const warm: number[] = [];
    const resumes: number[] = [];
    for (let i = 0; i < Number(values.resumes); i++) {
      warm.push(await firstByteMs(vm.endpoint!, token, ca));
      await client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.microvmId! }));
      resumes.push(await firstByteMs(vm.endpoint!, token, ca));
    }
    await client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.microvmId! }));
    say(summary('request to a RUNNING VM (new TLS)', warm));
    say(summary('resume-on-request first byte', resumes));
    say(
      JSON.stringify({
        direct_rps: proxy.direct_rps,
        gateway_rps: proxy.gateway_rps,
        nginx_rps: proxy.nginx_rps,
        gateway_added_p50_ms: proxy.gateway_added_p50_ms,
        resume_first_byte_p50_ms: Math.round(percentile(resumes, 50)),
        running_first_byte_p50_ms: round(percentile(warm, 50)),
        gateway_vs_nginx_rps: proxy.gateway_vs_nginx_rps,
        load_generator: proxy.load_generator,
      }),
    );
  } finally {
    await server.stop();
  }
}
