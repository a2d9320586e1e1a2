import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import type { RequestListener } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createHandlers } from '../api/handlers.js';
import { createApiServer, listenApiServer, type ResponseEvent } from '../api/server.js';
import { SigV4Verifier } from '../api/sigv4.js';
import { Buildah } from '../builder/buildah.js';
import { DataDir } from '../config/data-dir.js';
import { CONFIG_KEYS, flagName, loadServerConfig, type ServerConfig } from '../config/server-config.js';
import { ImageService } from '../core/images.js';
import { DEFAULT_VM_SUBNET } from '../core/egress-rules.js';
import { ingressModeOf } from '../core/connector-arns.js';
import { MicrovmService } from '../core/microvms.js';
import { NetworkConnectorService } from '../core/network-connectors.js';
import type { GatewayBackend, VmRoute } from '../gateway/backend.js';
import { createGateway, type Gateway } from '../gateway/gateway.js';
import { TokenAuthority } from '../gateway/tokens.js';
import { setupHost } from '../setup/setup.js';
import { openStore, type Store } from '../store/database.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { collectMetrics } from './metrics.js';
import { METRICS_CONTENT_TYPE, streamRoutes } from './stream-routes.js';
import { createLogger } from '../util/log.js';
import { Engine } from '../vmm/engine.js';

const log = createLogger('server');

/** A running Hearth: API, engine, gateway, and the services between them. */
export interface HearthServer {
  config: ServerConfig;
  apiUrl: string;
  gateway: Gateway;
  engine: Engine;
  store: Store;
  images: ImageService;
  microvms: MicrovmService;
  /** The bootstrap API key (also in <dataDir>/api-credentials.json). */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /**
   * Stops serving. With `leaveVmsRunning`, running microVMs keep running for the next server to
   * adopt (a restart or upgrade); otherwise they are killed (their records say so after a restart).
   */
  stop(opts?: { leaveVmsRunning?: boolean }): Promise<void>;
}

/** Creates the first API key on first start and writes the connection file the CLI reads. */
async function bootstrapKey(store: Store, dataDir: DataDir, endpoint: string, region: string) {
  const file = join(dataDir.root, 'api-credentials.json');
  const keys = await store.apiKeys.list({ limit: 1 });
  let key = keys.items[0];
  if (!key) {
    key = await store.apiKeys.create({
      accessKeyId: `HRTH${randomBytes(8).toString('hex').toUpperCase()}`,
      secretAccessKey: randomBytes(30).toString('base64url'),
      createdAt: new Date().toISOString(),
      description: 'bootstrap key, created on first start',
    });
    log.info('created the bootstrap API key', { accessKeyId: key.accessKeyId, file });
  }
  await writeFileAtomic(
    file,
    JSON.stringify(
      { endpoint, region, accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey },
      null,
      2,
    ) + '\n',
    0o600,
  );
  return { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey };
}

/** Starts Hearth: sets the host up if needed, opens everything, recovers, then listens. */
export interface StartOptions {
  /** Sees every API response (tests check them against the OpenAPI document). */
  onApiResponse?: (e: ResponseEvent) => void;
  /** Answer 500 when a handler's output does not match its output shape (tests turn it on). */
  strictApiOutput?: boolean;
  /**
   * Verify the snapshot of each image's latest ACTIVE version in the background once serving, so
   * the first launch of each does not wait for its checksums (a 512 MiB template hashes in ~1 s).
   */
  warmTemplates?: boolean;
}

/**
 * Verifies the template of every image's latest ACTIVE version, one at a time, so the first launch
 * of each does not wait for its checksums. (Sealed RAM copies are made on first use, not here: a
 * host with many images would hold every image's RAM.)
 */
async function warmTemplates(images: ImageService, engine: Engine, isStopped: () => boolean): Promise<void> {
  let cursor: string | undefined;
  do {
    const page = await images.listImages({ ...(cursor ? { cursor } : {}) });
    for (const image of page.items) {
      if (isStopped()) return;
      if (!image.latestActiveVersion) continue;
      try {
        const v = await images.runnableVersion(image.name);
        await engine.template(v.id);
      } catch (e) {
        log.warn('could not verify an image snapshot ahead of launches', {
          image: image.name,
          error: (e as Error).message,
        });
      }
    }
    cursor = page.nextCursor;
  } while (cursor);
}

export async function startServer(config: ServerConfig, opts: StartOptions = {}): Promise<HearthServer> {
  const dataDir = new DataDir(config.dataDir);
  const artifacts = await setupHost(dataDir, { accelerator: config.accelerator });
  const engine = await Engine.open({
    dataDir,
    artifacts,
    adoptRunning: true,
    tcgCacheMiB: config.tcgCacheMiB,
  });
  const store = await openStore(config.databaseUrl ?? `sqlite:${dataDir.databaseFile}`);
  const arnPrefix = `arn:hearth:lambda:${config.region}:${config.accountId}:microvm-image:`;
  const buildah = new Buildah(dataDir.builderDir);
  await mkdir(join(dataDir.root, 'gateway'), { recursive: true, mode: 0o700 });
  const tokens = await TokenAuthority.open({ keyFile: join(dataDir.root, 'gateway', 'token-key') });
  let gatewayPort = config.gatewayPort;
  // eslint-disable-next-line prefer-const -- assigned after the services that call it exist
  let gateway: Gateway | undefined;
  // eslint-disable-next-line prefer-const -- the image service needs it before it exists
  let microvms: MicrovmService | undefined;
  const images = new ImageService({
    store,
    engine,
    buildah,
    dataDir,
    log: createLogger('images'),
    arnPrefix,
    maxConcurrentBuilds: config.maxConcurrentBuilds,
    defaultReadyTimeoutS: config.buildReadyTimeoutSeconds,
    artifactFetch: {
      s3: {
        ...(config.s3Endpoint ? { endpoint: config.s3Endpoint } : {}),
        region: config.s3Region,
        // The standard AWS variables of the server process (see ServerConfig.s3Endpoint).
        ...(process.env.AWS_ACCESS_KEY_ID ? { accessKeyId: process.env.AWS_ACCESS_KEY_ID } : {}),
        ...(process.env.AWS_SECRET_ACCESS_KEY ? { secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY } : {}),
        ...(process.env.AWS_SESSION_TOKEN ? { sessionToken: process.env.AWS_SESSION_TOKEN } : {}),
      },
      timeoutMs: config.artifactFetchTimeoutSeconds * 1000,
    },
    versionInUse: (n, v) => microvms!.versionInUse(n, v),
  });
  const connectors = new NetworkConnectorService({
    store,
    region: config.region,
    accountId: config.accountId,
    vmSubnet: process.env.HEARTH_VM_SUBNET ?? DEFAULT_VM_SUBNET,
  });
  microvms = new MicrovmService({
    store,
    engine,
    images,
    connectors,
    log: createLogger('microvms'),
    endpointFor: (id) => `${id}.${config.domain}:${gatewayPort}`,
    tokens,
    closeConnections: (id) => gateway?.closeConnections(id),
    limits: {
      maxMicrovms: config.maxMicrovms,
      maxMemoryMiB: config.maxMemoryMiB,
      minIdleSeconds: config.minIdleSeconds,
      checkIntervalMs: config.checkIntervalMs,
      terminatedRetentionSeconds: config.terminatedRetentionSeconds,
    },
  });
  const m = microvms;
  await images.recover();
  await m.recover();

  const route = async (id: string): Promise<VmRoute | undefined> => {
    const rec = await m.current(id);
    if (!rec) return undefined;
    const vm = engine.get(id);
    const running = rec.state === 'RUNNING' && vm?.state === 'running';
    return {
      microvmId: id,
      state: rec.state,
      // The gateway connects where the engine says each guest port is (with user-mode networking,
      // a forward on a port of its own; with namespaces, the same port at the VM's address).
      ...(running && vm.hostAddress
        ? { address: vm.hostAddress, connectAddress: (port: number) => vm.tcpEndpoint(port) }
        : {}),
      autoResume: rec.idlePolicy?.autoResumeEnabled ?? false,
      tokenGeneration: rec.tokenGeneration,
      instance: vm?.instance ?? 0,
      streamsCountAsActivity: rec.idlePolicy?.openStreamsCountAsActivity ?? true,
      ingress: ingressModeOf(rec.ingressNetworkConnectors),
    };
  };
  const backend: GatewayBackend = {
    route,
    async ensureRunning(id) {
      if ((await m.current(id))?.state === 'PENDING') await m.waitForLaunch(id);
      await m.ensureRunning(id);
      const r = await route(id);
      if (!r?.address) throw new Error(`microVM ${id} is not running`);
      return r;
    },
    activity: (id, e) => m.recordActivity(id, e),
  };
  gateway = await createGateway({
    backend,
    tokens,
    tls:
      config.tlsCertFile && config.tlsKeyFile
        ? { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile }
        : { dir: join(dataDir.root, 'tls') },
    domain: config.domain,
    log: createLogger('gateway'),
  });
  await gateway.listen(
    config.gatewayPort,
    config.gatewayHost,
    config.gatewayPlaintextPort !== undefined ? { plaintextPort: config.gatewayPlaintextPort } : {},
  );
  gatewayPort = gateway.address().port;

  const lookupSecret = async (id: string) => (await store.apiKeys.get(id))?.secretAccessKey;
  const api = createApiServer({
    handlers: createHandlers({
      images,
      microvms: m,
      connectors,
      baseDisk: artifacts.baseDisk,
      host: () => engine.protections,
    }),
    lookupSecret,
    region: config.region,
    logger: createLogger('api'),
    // RunMicrovm on an image with no ACTIVE version answers 404 "No active version found", as AWS does.
    errorCodes: { IMAGE_NO_ACTIVE_VERSION: 'ResourceNotFoundException' },
    ...(opts.onApiResponse ? { onResponse: opts.onApiResponse } : {}),
    ...(opts.strictApiOutput ? { strictOutput: true } : {}),
  });
  const metrics = () => collectMetrics(m, (id) => gateway!.metrics(id));
  const streams = streamRoutes({
    verifier: new SigV4Verifier({ region: config.region, lookupSecret }),
    images,
    microvms: m,
    engine,
    metrics,
  });
  const listener: RequestListener = (req, res) => {
    void streams(req, res).then((handled) => {
      if (!handled) api(req, res);
    });
  };
  const apiServer = await listenApiServer(listener, { host: config.apiHost, port: config.apiPort });
  const metricsServer =
    config.metricsPort !== undefined
      ? await listenApiServer(
          (req, res) => {
            if (req.method !== 'GET' || req.url !== '/metrics') {
              res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
              return;
            }
            void metrics().then(
              (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(text),
              (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
            );
          },
          { host: config.apiHost, port: config.metricsPort },
        )
      : undefined;
  const credentials = await bootstrapKey(store, dataDir, apiServer.url, config.region);
  m.start();
  let stopped = false;
  if (opts.warmTemplates) void warmTemplates(images, engine, () => stopped).catch(() => undefined);
  log.info('hearth is serving', {
    api: apiServer.url,
    gateway: `https://*.${config.domain}:${gatewayPort}`,
    accel: artifacts.accel.accel,
  });

  return {
    config: {
      ...config,
      apiPort: apiServer.port,
      gatewayPort,
      ...(metricsServer ? { metricsPort: metricsServer.port } : {}),
    },
    apiUrl: apiServer.url,
    gateway,
    engine,
    store,
    images,
    microvms: m,
    credentials,
    async stop(opts = {}) {
      if (stopped) return;
      stopped = true;
      await apiServer.close();
      await metricsServer?.close();
      await gateway!.close();
      await m.close();
      await images.close();
      await engine.close({ leaveRunning: opts.leaveVmsRunning ?? false });
      await store.close();
    },
  };
}

/** `hearth serve`: flags override the environment and the config file. */
export async function serveMain(argv: string[]): Promise<number> {
  const options: Record<string, { type: 'string' }> = { config: { type: 'string' } };
  for (const key of CONFIG_KEYS) options[flagName(key)] = { type: 'string' };
  const { values } = parseArgs({ args: argv, options });
  const flags: Partial<Record<keyof ServerConfig, unknown>> = {};
  for (const key of CONFIG_KEYS) flags[key] = values[flagName(key)];
  const config = await loadServerConfig({ ...(values.config ? { file: values.config } : {}), flags });
  const server = await startServer(config, { warmTemplates: true });
  process.stdout.write(
    `hearth serving: API ${server.apiUrl}, endpoints https://<microvm-id>.${config.domain}:${server.config.gatewayPort}\n`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  log.info('stopping; running microVMs keep running and are adopted at the next start');
  await server.stop({ leaveVmsRunning: true });
  return 0;
}
