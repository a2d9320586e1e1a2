import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import type { DataDir } from '../config/data-dir.js';
import { loadServerConfig } from '../config/server-config.js';
import { startServer } from '../server/serve.js';
import { packageRoot } from '../util/package-root.js';
import {
  RunMicrovmCommand,
  createEndpointToken,
  hearthClient,
  ensureImage,
  waitForMicrovm,
} from '../sdk/index.js';

const IMAGE = 'flask-demo';
const IDLE_S = 5;

/** GET https://<endpoint>/ with the token, trusting Hearth's local CA (the name resolves to loopback). */
async function callEndpoint(
  endpoint: string,
  token: string,
  ca: string,
): Promise<{ status: number; body: string; ms: number }> {
  const [host, port] = endpoint.split(':') as [string, string];
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        servername: host,
        port: Number(port),
        path: '/',
        headers: { host: endpoint, 'x-hearth-proxy-auth': token },
        ca,
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: body.trim(), ms: Math.round(performance.now() - t0) }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * The main job: starts Hearth (API, engine, gateway), builds examples/flask into an image, launches
 * a microVM from its snapshot, calls it through its HTTPS endpoint with a token, lets it suspend
 * when idle and calls it again to show the transparent resume; then keeps serving until Ctrl-C.
 */
export async function runDemo(dataDir: DataDir, opts: { exitWhenDone: boolean }): Promise<number> {
  const say = (s: string) => process.stdout.write(s + '\n');
  const config = await loadServerConfig({
    flags: {
      dataDir: dataDir.root,
      minIdleSeconds: Math.min(IDLE_S, Number(process.env.HEARTH_MIN_IDLE_SECONDS ?? IDLE_S)),
    },
  });
  const server = await startServer(config);
  try {
    const client = hearthClient({ endpoint: server.apiUrl, region: config.region, ...server.credentials });
    say(
      `Hearth is serving: API ${server.apiUrl}, endpoints https://<microvm-id>.${config.domain}:${server.config.gatewayPort}`,
    );
    const t0Build = Date.now();
    const image = await ensureImage(
      client,
      IMAGE,
      {
        codeArtifact: { uri: join(packageRoot(), 'examples', 'flask') },
        baseImageArn: 'arn:hearth:lambda:local:hearth:microvm-image:bookworm',
        buildRoleArn: 'arn:hearth:iam::000000000000:role/demo',
        resources: [{ minimumMemoryInMiB: 512 }],
      },
      {
        onBuild: () =>
          say(`building examples/flask into image '${IMAGE}' (buildah, then boot, ready, snapshot)...`),
      },
    );
    if (image.built) say(`  built in ${((Date.now() - t0Build) / 1000).toFixed(1)} s`);
    else say(`image '${IMAGE}' is already built (version ${image.version})`);

    let t0 = Date.now();
    const run = await client.send(
      new RunMicrovmCommand({
        imageIdentifier: IMAGE,
        idlePolicy: {
          maxIdleDurationSeconds: IDLE_S,
          suspendedDurationSeconds: 3600,
          autoResumeEnabled: true,
        },
      }),
    );
    const vm = await waitForMicrovm(client, run.microvmId!, ['RUNNING']);
    say(`launched microVM ${vm.microvmId} from the snapshot: RUNNING after ${Date.now() - t0} ms`);
    const token = await createEndpointToken(client, vm.microvmId!, { expirationInMinutes: 60 });
    const ca = await readFile(server.gateway.caFile ?? join(dataDir.root, 'tls', 'ca.crt'), 'utf8');
    const first = await callEndpoint(vm.endpoint!, token, ca);
    say(`  GET https://${vm.endpoint}/ -> ${first.status} ${first.body}  (${first.ms} ms)`);
    say(`waiting for it to be idle for ${IDLE_S} s...`);
    t0 = Date.now();
    await waitForMicrovm(client, vm.microvmId!, ['SUSPENDED'], { timeoutMs: 60_000 });
    say(`  SUSPENDED after ${((Date.now() - t0) / 1000).toFixed(1)} s idle: no QEMU process, no RAM held`);
    const again = await callEndpoint(vm.endpoint!, token, ca);
    say(
      `  GET https://${vm.endpoint}/ -> ${again.status} ${again.body}  (${again.ms} ms, resumed on request)`,
    );
    if (opts.exitWhenDone) return first.status === 200 && again.status === 200 ? 0 : 1;
    say(`\nTry it (the CA is ${server.gateway.caFile}):`);
    say(
      `  curl --cacert ${server.gateway.caFile} -H 'X-Hearth-Proxy-Auth: ${token}' https://${vm.endpoint}/`,
    );
    say(
      `  node ${join(packageRoot(), 'dist', 'cli', 'main.js')} ls      # the CLI reads ${join(dataDir.root, 'api-credentials.json')}`,
    );
    say('Ctrl-C stops the server (microVMs keep running and are adopted at the next start).');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  } finally {
    await server.stop({ leaveVmsRunning: !opts.exitWhenDone });
  }
}
