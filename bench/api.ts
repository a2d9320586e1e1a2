/**
 * Control-plane benchmark: RunMicrovm on the Flask image until each microVM answers through its
 * HTTPS endpoint, in two patterns measured in one run:
 *   burst  50 RunMicrovm at once (launch throughput, errors);
 *   paced  RunMicrovm at 5 per second (the AWS default rate), RunMicrovm -> first answer latency.
 * Ends with one JSON line.
 *
 *   npm run bench -- api [--vms 50] [--rate 5]
 */
import { request } from 'node:https';
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../src/config/server-config.js';
import {
  RunMicrovmCommand,
  TerminateMicrovmCommand,
  createEndpointToken,
  hearthClient,
  type LambdaMicrovmsClient,
} from '../src/sdk/index.js';
import { startServer } from '../src/server/serve.js';
import { BENCH_IMAGE, ensureFlaskImage } from './flask-image.js';
import { percentile, round, summary } from './stats.js';

const IMAGE = BENCH_IMAGE;

function get(endpoint: string, token: string, ca: string): Promise<number> {
  const [host, port] = endpoint.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: Number(port),
        servername: host,
        ca,
        agent: false,
        path: '/',
        headers: { host: endpoint, 'x-hearth-proxy-auth': token },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Time spent in each step of launchAndAnswer, ms, for the breakdown printed at the end. */
const phases = { run: [] as number[], token: [] as number[], answer: [] as number[] };

/**
 * RunMicrovm, a token, then one request (the gateway holds it while the microVM is PENDING).
 * Every launched id goes to `ids` at once, so a failed launch is terminated too.
 */
async function launchAndAnswer(
  client: LambdaMicrovmsClient,
  ca: string,
  ids: string[],
): Promise<{ id: string; ms: number }> {
  const t0 = performance.now();
  const run = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE }));
  ids.push(run.microvmId!);
  const t1 = performance.now();
  const token = await createEndpointToken(client, run.microvmId!);
  const t2 = performance.now();
  const status = await get(run.endpoint!, token, ca);
  const t3 = performance.now();
  phases.run.push(t1 - t0);
  phases.token.push(t2 - t1);
  phases.answer.push(t3 - t2);
  if (status !== 200) throw new Error(`${run.microvmId}: endpoint answered ${status}`);
  return { id: run.microvmId!, ms: t3 - t0 };
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { vms: { type: 'string', default: '50' }, rate: { type: 'string', default: '5' } },
  });
  const n = Number(values.vms);
  const say = (s: string) => process.stdout.write(s + '\n');
  const config = await loadServerConfig({
    flags: { apiPort: 0, gatewayPort: 0, gatewayHost: '127.0.0.1', maxMicrovms: Math.max(100, n + 5) },
  });
  const server = await startServer(config, { warmTemplates: true });
  const client = hearthClient({ endpoint: server.apiUrl, region: config.region, ...server.credentials });
  const ca = server.gateway.ca!;
  const ids: string[] = [];
  const terminateAll = async () => {
    for (const id of ids.splice(0))
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
  };
  try {
    await ensureFlaskImage(client);

    // One launch first (verifies the snapshot once per process, warms the host's page cache).
    await launchAndAnswer(client, ca, ids);
    await terminateAll();
    for (const v of Object.values(phases)) v.length = 0;

    // Burst: n at once.
    let errors = 0;
    const t0 = performance.now();
    const burst = await Promise.all(
      Array.from({ length: n }, () =>
        launchAndAnswer(client, ca, ids).then(
          (r) => r.ms,
          (e: Error) => {
            errors++;
            say(`error: ${e.message}`);
            return NaN;
          },
        ),
      ),
    );
    const burstS = (performance.now() - t0) / 1000;
    const ok = burst.filter((x) => !Number.isNaN(x));
    say(summary(`burst: ${n} at once, run->answer`, ok));
    say(
      `burst: ${ok.length} answering in ${burstS.toFixed(1)} s = ${(ok.length / burstS).toFixed(1)} launches/s, ${errors} errors`,
    );
    await terminateAll();

    // Paced: `rate` per second.
    const rate = Number(values.rate);
    const paced: Promise<number>[] = [];
    for (let i = 0; i < n; i++) {
      paced.push(
        launchAndAnswer(client, ca, ids).then(
          (r) => r.ms,
          () => (errors++, NaN),
        ),
      );
      await new Promise((r) => setTimeout(r, 1000 / rate));
    }
    const pacedMs = (await Promise.all(paced)).filter((x) => !Number.isNaN(x));
    say(summary(`paced: ${rate}/s, run->answer`, pacedMs));
    for (const [k, v] of Object.entries(phases)) say(summary(`  of which ${k} (both patterns)`, v));
    await terminateAll();
    say(
      JSON.stringify({
        vms: n,
        errors,
        launch_per_s: round(ok.length / burstS),
        run_to_answer_p50_ms: Math.round(percentile(pacedMs, 50)),
        run_to_answer_p90_ms: Math.round(percentile(pacedMs, 90)),
        burst_run_to_answer_p50_ms: Math.round(percentile(ok, 50)),
        paced_rate_per_s: rate,
      }),
    );
  } finally {
    await terminateAll();
    await server.stop();
  }
}
