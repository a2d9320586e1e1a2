import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { checkResponse } from '../../src/api/openapi-validate.js';
import type { OperationName } from '../../src/api/operations.js';
import { loadServerConfig, type ServerConfig } from '../../src/config/server-config.js';
import {
  CreateMicrovmImageCommand,
  hearthClient,
  waitForImageVersion,
  type HearthConnection,
  type LambdaMicrovmsClient,
} from '../../src/sdk/index.js';
import { startServer, type HearthServer } from '../../src/server/serve.js';
import { testDataDir } from './env.js';
import { BASE_ARN, fixtureImage } from './images.js';

export interface TestServer {
  server: HearthServer;
  client: LambdaMicrovmsClient;
  connection: HearthConnection;
  ca: string;
  /** Every API response that did not match the OpenAPI document (must stay empty). */
  specViolations: string[];
  stop(): Promise<void>;
}

/** The configuration of a test server: the test data directory, free ports, short deadlines. */
export function testServerConfig(overrides: Partial<ServerConfig> = {}): Promise<ServerConfig> {
  return loadServerConfig({
    env: {},
    flags: {
      dataDir: testDataDir().root,
      apiPort: 0,
      gatewayPort: 0,
      gatewayHost: '127.0.0.1',
      minIdleSeconds: 1,
      checkIntervalMs: 200,
      ...overrides,
    },
  });
}

/** A whole Hearth on the test data directory, on free ports, with short deadlines. */
export async function startTestServer(overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const config = await testServerConfig(overrides);
  const specViolations: string[] = [];
  const server = await startServer(config, {
    strictApiOutput: true,
    onApiResponse: (e) => {
      if (!e.operation || !e.body) return;
      const problems = checkResponse(e.operation as OperationName, e.status, JSON.parse(e.body));
      if (problems.length) specViolations.push(`${e.operation} ${e.status}: ${problems.join('; ')}`);
    },
  });
  const connection = { endpoint: server.apiUrl, region: config.region, ...server.credentials };
  return {
    server,
    client: hearthClient(connection),
    connection,
    ca: await readFile(server.gateway.caFile!, 'utf8'),
    specViolations,
    stop: () => server.stop(),
  };
}

export interface EndpointResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTPS request to a microVM endpoint (host:port from GetMicrovm), trusting the test CA. */
export function callEndpoint(
  t: Pick<TestServer, 'ca'>,
  endpoint: string,
  opts: {
    token?: string;
    path?: string;
    port?: number;
    method?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<EndpointResponse> {
  const [host, port] = endpoint.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        servername: host,
        port: Number(port),
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        ca: t.ca,
        agent: false,
        headers: {
          host: endpoint,
          ...(opts.token ? { 'x-hearth-proxy-auth': opts.token } : {}),
          ...(opts.port ? { 'x-hearth-proxy-port': String(opts.port) } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Builds image `name` (version 1.0, 512 MiB) from tests/fixtures/images/<fixture> through the API
 * and resolves once it is SUCCESSFUL; throws with the build's reason otherwise.
 */
export async function buildFixtureImage(
  client: LambdaMicrovmsClient,
  name: string,
  fixture = 'lifecycle',
): Promise<void> {
  await client.send(
    new CreateMicrovmImageCommand({
      name,
      codeArtifact: { uri: fixtureImage(fixture) },
      baseImageArn: BASE_ARN,
      buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
      resources: [{ minimumMemoryInMiB: 512 }],
    }),
  );
  const v = await waitForImageVersion(client, name, '1.0');
  if (v.state !== 'SUCCESSFUL')
    throw new Error(`building ${name} from ${fixture}: ${v.state} ${v.stateReason ?? ''}`);
}
