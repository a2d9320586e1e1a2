/**
 * Control-plane benchmark: RunMicrovm on the Flask image until each microVM answers through its
 * HTTPS endpoint, in two patterns measured in one run:
 *   burst  50 RunMicrovm at once (launch throughput, errors);
 *   paced  RunMicrovm at 5 per second (the AWS default rate), RunMicrovm -> first answer latency.
 * Ends with one JSON line.
 *
 *   npm run bench -- api [--vms 50] [--rate 5]
 */
import { join } from 'node:path';
import { request } from 'node:https';
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../src/config/server-config.js';
import {
  CreateMicrovmImageCommand,
  GetMicrovmImageCommand,
  RunMicrovmCommand,
  TerminateMicrovmCommand,
  createEndpointToken,
  hearthClient,
  waitForImageVersion,
  type LambdaMicrovmsClient,
} from '../src/sdk/index.js';
import { startServer } from '../src/server/serve.js';
import { percentile, round, summary } from './stats.js';

const IMAGE = 'bench-flask';

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

/** RunMicrovm, a token, then one request (the gateway holds it while the microVM is PENDING). */
async function launchAndAnswer(
  client: LambdaMicrovmsClient,
  ca: string,
): Promise<{ id: string; ms: number }> {
  const t0 = performance.now();
  const run = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE }));
  const token = await createEndpointToken(client, run.microvmId!);
  const status = await get(run.endpoint!, token, ca);
  if (status !== 200) throw new Error(`${run.microvmId}: endpoint answered ${status}`);
  return { id: run.microvmId!, ms: performance.now() - t0 };
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
  const server = await startServer(config);
  const client = hearthClient({ endpoint: server.apiUrl, region: config.region, ...server.credentials });
  const ca = server.gateway.ca!;
  const ids: string[] = [];
  const terminateAll = async () => {
    for (const id of ids.splice(0))
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
  };
  try {
    const image = await client
      .send(new GetMicrovmImageCommand({ imageIdentifier: IMAGE }))
      .catch(() => undefined);
    if (!image?.latestActiveImageVersion) {
      const c = await client.send(
        new CreateMicrovmImageCommand({
          name: IMAGE,
          codeArtifact: { uri: join(import.meta.dirname, '..', 'examples', 'flask') },
          baseImageArn: 'arn:hearth:lambda:local:hearth:microvm-image:bookworm',
          buildRoleArn: 'arn:hearth:iam::000000000000:role/bench',
          resources: [{ minimumMemoryInMiB: 512 }],
        }),
      );
      await waitForImageVersion(client, IMAGE, c.imageVersion!);
    }

    // Burst: n at once.
    let errors = 0;
    const t0 = performance.now();
    const burst = await Promise.all(
      Array.from({ length: n }, () =>
        launchAndAnswer(client, ca).then(
          (r) => (ids.push(r.id), r.ms),
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
        launchAndAnswer(client, ca).then(
          (r) => (ids.push(r.id), r.ms),
          () => (errors++, NaN),
        ),
      );
      await new Promise((r) => setTimeout(r, 1000 / rate));
    }
    const pacedMs = (await Promise.all(paced)).filter((x) => !Number.isNaN(x));
    say(summary(`paced: ${rate}/s, run->answer`, pacedMs));
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
