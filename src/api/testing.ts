/**
 * Test support for the API: a server on a free port with stub handlers, a real AWS SDK client
 * pointed at it, canned outputs for every operation, and raw requests signed with the AWS SDK's
 * own SigV4 signer (@smithy/signature-v4, a dev dependency). Used by src/api tests; end-to-end tests
 * may use it too.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { LambdaMicrovmsClient } from '@aws-sdk/client-lambda-microvms';
import { SignatureV4 } from '@smithy/signature-v4';
import { createLogger } from '../util/log.js';
import type { OperationName, OutputOf } from './operations.js';
import {
  createApiServer,
  listenApiServer,
  type ApiServerOptions,
  type OperationHandlers,
  type ResponseEvent,
} from './server.js';

export const TEST_REGION = 'local';
export const TEST_CREDENTIALS = {
  accessKeyId: 'AKIDHEARTHTEST',
  secretAccessKey: 'test-secret-key/with+chars',
};

/** Node crypto as the AWS SDK's Checksum (SHA-256; HMAC when constructed with a key). */
export class NodeSha256 {
  private hash: Hash | Hmac;
  private readonly secret: Buffer | undefined;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.secret = secret === undefined ? undefined : toBuffer(secret);
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', this.secret);
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(toBuffer(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

function toBuffer(data: string | ArrayBuffer | ArrayBufferView): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(new Uint8Array(data));
}

export interface TestApi {
  url: string;
  port: number;
  /** Every response the server sent, in order. */
  responses: ResponseEvent[];
  /** A real AWS SDK client for this server (no retries). */
  client(options?: { accessKeyId?: string; secretAccessKey?: string; region?: string }): LambdaMicrovmsClient;
  close(): Promise<void>;
}

/** Starts the API on 127.0.0.1:<free port> with `handlers`; the test key is the only key. */
export async function startTestApi(
  handlers: Partial<OperationHandlers>,
  options: Partial<Omit<ApiServerOptions, 'handlers'>> = {},
): Promise<TestApi> {
  const responses: ResponseEvent[] = [];
  const listener = createApiServer({
    lookupSecret: async (id) =>
      id === TEST_CREDENTIALS.accessKeyId ? TEST_CREDENTIALS.secretAccessKey : undefined,
    region: TEST_REGION,
    strictOutput: true,
    logger: createLogger('api-test'),
    ...options,
    handlers,
    onResponse: (e) => {
      responses.push(e);
      options.onResponse?.(e);
    },
  });
  const listening = await listenApiServer(listener, { port: 0 });
  const clients: LambdaMicrovmsClient[] = [];
  return {
    url: listening.url,
    port: listening.port,
    responses,
    client: (o = {}) => {
      const c = new LambdaMicrovmsClient({
        endpoint: listening.url,
        region: o.region ?? TEST_REGION,
        credentials: {
          accessKeyId: o.accessKeyId ?? TEST_CREDENTIALS.accessKeyId,
          secretAccessKey: o.secretAccessKey ?? TEST_CREDENTIALS.secretAccessKey,
        },
        maxAttempts: 1,
      });
      clients.push(c);
      return c;
    },
    close: async () => {
      for (const c of clients) c.destroy();
      await listening.close();
    },
  };
}

export interface RawRequest {
  method: string;
  /** Raw path as sent (already percent-encoded). */
  path: string;
  /** Decoded query parameters; arrays repeat the key. */
  query?: Record<string, string | string[]>;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: unknown;
}

/**
 * Signs `req` with the AWS SDK's SignatureV4 (service lambda) unless `sign` is false, sends it
 * exactly as given to the server at `baseUrl`, and returns the response.
 */
export async function sendRaw(
  baseUrl: string,
  req: RawRequest,
  options: {
    sign?: boolean;
    credentials?: { accessKeyId: string; secretAccessKey: string };
    region?: string;
    signingDate?: Date;
    /** Change the request after signing (tamper tests). */
    afterSign?: (r: {
      path: string;
      headers: Record<string, string>;
      body: string | Buffer | undefined;
    }) => void;
  } = {},
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const headers: Record<string, string> = { host: url.host, ...req.headers };
  if (req.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    // Node sends a GET's body without framing unless told its length.
    headers['content-length'] ??= String(Buffer.byteLength(req.body));
  }
  let signedHeaders = headers;
  if (options.sign !== false) {
    const signer = new SignatureV4({
      service: 'lambda',
      region: options.region ?? TEST_REGION,
      credentials: options.credentials ?? TEST_CREDENTIALS,
      sha256: NodeSha256,
    });
    const signed = await signer.sign(
      {
        method: req.method,
        protocol: 'http:',
        hostname: url.hostname,
        port: Number(url.port),
        path: req.path,
        query: req.query ?? {},
        headers,
        body: req.body,
      },
      options.signingDate === undefined ? {} : { signingDate: options.signingDate },
    );
    signedHeaders = signed.headers;
  }
  const target = { path: req.path + queryString(req.query), headers: { ...signedHeaders }, body: req.body };
  options.afterSign?.(target);
  return new Promise((resolve, reject) => {
    const r = httpRequest(
      { host: url.hostname, port: url.port, method: req.method, path: target.path, headers: target.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = body === '' ? undefined : JSON.parse(body);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
        });
        res.on('error', reject);
      },
    );
    r.on('error', reject);
    r.end(target.body);
  });
}

/** `?k=v&k=w` with the AWS SDK's encoding, or '' for no parameters. */
export function queryString(query: Record<string, string | string[]> | undefined): string {
  if (query === undefined) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(query)) {
    for (const item of Array.isArray(v) ? v : [v]) parts.push(`${escape(k)}=${escape(item)}`);
  }
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

function escape(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

// ---- canned outputs ----

const T0 = '2026-01-02T03:04:05.678Z';
const T1 = new Date('2026-01-02T04:00:00.000Z');
const IMAGE_ARN = 'arn:aws:lambda:local:000000000000:microvm-image:app';
const BASE_ARN = 'arn:aws:lambda:local:aws:microvm-image:debian-12';
const ROLE_ARN = 'arn:aws:iam::000000000000:role/build';

const microvm = {
  microvmId: 'mvm-0123456789abcdef',
  state: 'RUNNING',
  endpoint: 'mvm-0123456789abcdef.microvm.local',
  imageArn: IMAGE_ARN,
  imageVersion: '1.0',
  maximumDurationInSeconds: 28_800,
  startedAt: T0,
  idlePolicy: { maxIdleDurationSeconds: 300, suspendedDurationSeconds: 3600, autoResumeEnabled: true },
  ingressNetworkConnectors: ['HTTP_INGRESS'],
  egressNetworkConnectors: [],
} as const;

const version = {
  baseImageArn: BASE_ARN,
  buildRoleArn: ROLE_ARN,
  codeArtifact: { uri: 'file:///srv/app' },
  imageArn: IMAGE_ARN,
  imageVersion: '1.0',
  state: 'SUCCESSFUL',
  status: 'ACTIVE',
  createdAt: T0,
  updatedAt: T1,
  resources: [{ minimumMemoryInMiB: 2048 }],
  hooks: { port: 9000, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 60 } },
  environmentVariables: { MODE: 'prod' },
  tags: { team: 'core' },
} as const;

const image = {
  imageArn: IMAGE_ARN,
  name: 'app',
  state: 'CREATING',
  createdAt: T0,
  baseImageArn: BASE_ARN,
  buildRoleArn: ROLE_ARN,
  codeArtifact: { uri: 'file:///srv/app' },
  imageVersion: '1.0',
  updatedAt: T1,
  logging: { disabled: {} },
} as const;

const build = {
  imageArn: IMAGE_ARN,
  imageVersion: '1.0',
  buildId: 'b-0123',
  buildState: 'SUCCESSFUL',
  architecture: 'X86_64',
  chipset: 'x86_64',
  chipsetGeneration: 'unknown',
  createdAt: T0,
} as const;

const CONNECTOR = {
  connectorArn: 'arn:hearth:lambda:local:000000000000:network-connector:db',
  name: 'db',
  type: 'EGRESS_ALLOW_LIST',
  description: 'the database',
  egressRules: [
    { cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ port: 5432 }] },
    { hostname: '*.example.com', protocol: 'ALL', ports: [{ range: { startPort: 8000, endPort: 8100 } }] },
  ],
  state: 'ACTIVE',
  createdAt: T0,
  tags: { team: 'core' },
} as const;

/** A plausible output of every operation (timestamps as ISO strings and Dates, both accepted). */
export const CANNED_OUTPUTS: { [N in OperationName]: OutputOf<N> } = {
  CreateMicrovmAuthToken: { authToken: { 'X-aws-proxy-auth': 'token-value' } },
  CreateMicrovmImage: { ...image, tags: { team: 'core' } },
  CreateMicrovmShellAuthToken: { authToken: { 'X-aws-proxy-auth': 'shell-token' } },
  CreateNetworkConnector: CONNECTOR,
  DeleteNetworkConnector: undefined,
  GetNetworkConnector: CONNECTOR,
  GetHost: {
    accelerator: 'tcg',
    jail: false,
    cgroups: false,
    network: 'user-mode',
    enforced: ['qemu-seccomp', 'egress-deny-all'],
    notEnforced: ['qemu-jail', 'cgroup-limits', 'egress-connectors'],
    warnings: ['no control groups: microVMs run without memory, task and CPU limits'],
  },
  ListNetworkConnectors: {
    networkConnectors: [
      {
        connectorArn: 'arn:hearth:lambda:local:hearth:network-connector:INTERNET_EGRESS',
        name: 'INTERNET_EGRESS',
        type: 'MANAGED_EGRESS',
        description: 'the internet',
        state: 'ACTIVE',
      },
      CONNECTOR,
    ],
    nextToken: 'next',
  },
  DeleteMicrovmImage: { imageIdentifier: 'app', state: 'DELETING' },
  DeleteMicrovmImageVersion: { imageIdentifier: 'app', imageVersion: '1.0', state: 'DELETING' },
  GetMicrovm: microvm,
  GetMicrovmImage: {
    imageArn: IMAGE_ARN,
    name: 'app',
    state: 'CREATED',
    createdAt: T0,
    latestActiveImageVersion: '1.0',
    tags: { team: 'core' },
    updatedAt: T1,
  },
  GetMicrovmImageBuild: {
    ...build,
    snapshotBuild: {
      memorySnapshotSizeInBytes: 1 << 20,
      codeInstallSizeInBytes: 2048,
      diskSnapshotSizeInBytes: 4096,
    },
  },
  GetMicrovmImageVersion: version,
  ListManagedMicrovmImages: { items: [{ imageArn: BASE_ARN, createdAt: T0, updatedAt: T1 }] },
  ListManagedMicrovmImageVersions: {
    items: [{ imageArn: BASE_ARN, imageVersion: '1', createdAt: T0, status: 'AVAILABLE' }],
  },
  ListMicrovmImageBuilds: { items: [build] },
  ListMicrovmImages: {
    items: [
      { imageArn: IMAGE_ARN, name: 'app', state: 'CREATED', createdAt: T0, latestActiveImageVersion: '1.0' },
    ],
  },
  ListMicrovmImageVersions: { items: [version] },
  ListMicrovms: {
    items: [
      {
        microvmId: microvm.microvmId,
        state: 'SUSPENDED',
        imageArn: IMAGE_ARN,
        imageVersion: '1.0',
        startedAt: T1,
      },
    ],
  },
  ListTags: { Tags: { team: 'core', env: 'test' } },
  ResumeMicrovm: {},
  RunMicrovm: { ...microvm, state: 'PENDING' },
  SuspendMicrovm: {},
  TagResource: undefined,
  TerminateMicrovm: {},
  UntagResource: undefined,
  UpdateMicrovmImage: { ...image, state: 'UPDATING', imageVersion: '2.0' },
  UpdateMicrovmImageVersion: { ...version, status: 'INACTIVE' },
};

export const CANNED_TIMESTAMPS = { T0: new Date(T0), T1 };
