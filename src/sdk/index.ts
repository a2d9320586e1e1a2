/**
 * Hearth's TypeScript SDK: the official AWS client for Lambda MicroVMs (re-exported unchanged; point
 * it at Hearth's API) plus what it does not cover: connection settings, waiters, endpoint tokens and
 * URLs, and streaming of build logs and consoles.
 *
 *   import { hearthClient, RunMicrovmCommand, waitForMicrovm } from 'hearth/sdk';
 *   const client = hearthClient(await loadConnection());
 *   const vm = await client.send(new RunMicrovmCommand({ imageIdentifier: 'my-image' }));
 *   await waitForMicrovm(client, vm.microvmId!, ['RUNNING']);
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { NodeSha256 } from '../util/node-sha256.js';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  CreateMicrovmAuthTokenCommand,
  CreateMicrovmImageCommand,
  GetMicrovmCommand,
  GetMicrovmImageCommand,
  GetMicrovmImageVersionCommand,
  LambdaMicrovmsClient,
  UpdateMicrovmImageCommand,
  type CreateMicrovmImageCommandInput,
  type GetMicrovmCommandOutput,
  type GetMicrovmImageVersionCommandOutput,
} from '@aws-sdk/client-lambda-microvms';
import { SignatureV4 } from '@smithy/signature-v4';
import type { EgressRuleInput } from '../core/egress-rules.js';
import type { ConnectorEgressRule } from '../core/model.js';
import type { NetworkConnectorView } from '../core/network-connectors.js';

export * from '@aws-sdk/client-lambda-microvms';

/** Where Hearth's API is and how to sign requests to it. */
export interface HearthConnection {
  /** e.g. http://127.0.0.1:8200 */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** The header that carries an endpoint token, and the one that picks the port. */
export const TOKEN_HEADER = 'X-Hearth-Proxy-Auth';
export const PORT_HEADER = 'X-Hearth-Proxy-Port';

/** No connection settings were found. */
export class NoConnectionError extends Error {
  readonly code = 'SDK_NO_CONNECTION';
}

/**
 * Connection settings, from (first found): HEARTH_ENDPOINT + HEARTH_ACCESS_KEY_ID +
 * HEARTH_SECRET_ACCESS_KEY (+ HEARTH_REGION); the file HEARTH_CREDENTIALS_FILE; ~/.hearth/credentials.json;
 * <HEARTH_DATA_DIR or /var/lib/hearth>/api-credentials.json (written by `hearth serve`, readable by root).
 */
export async function loadConnection(env: NodeJS.ProcessEnv = process.env): Promise<HearthConnection> {
  if (env.HEARTH_ENDPOINT && env.HEARTH_ACCESS_KEY_ID && env.HEARTH_SECRET_ACCESS_KEY) {
    return {
      endpoint: env.HEARTH_ENDPOINT,
      region: env.HEARTH_REGION ?? 'local',
      accessKeyId: env.HEARTH_ACCESS_KEY_ID,
      secretAccessKey: env.HEARTH_SECRET_ACCESS_KEY,
    };
  }
  const candidates = [
    env.HEARTH_CREDENTIALS_FILE,
    join(homedir(), '.hearth', 'credentials.json'),
    join(env.HEARTH_DATA_DIR || '/var/lib/hearth', 'api-credentials.json'),
  ].filter((f): f is string => Boolean(f));
  for (const f of candidates) {
    if (!existsSync(f)) continue;
    const c = JSON.parse(await readFile(f, 'utf8')) as Partial<HearthConnection>;
    if (c.endpoint && c.accessKeyId && c.secretAccessKey) {
      return {
        region: 'local',
        ...c,
        ...(env.HEARTH_ENDPOINT ? { endpoint: env.HEARTH_ENDPOINT } : {}),
      } as HearthConnection;
    }
  }
  throw new NoConnectionError(
    `no Hearth API settings: set HEARTH_ENDPOINT, HEARTH_ACCESS_KEY_ID and HEARTH_SECRET_ACCESS_KEY, or run where \`hearth serve\` wrote ${candidates[candidates.length - 1]}`,
  );
}

let warningFiltered = false;

/**
 * The AWS SDK warns on Node 20 that its releases after January 2027 will need Node 22; that says
 * nothing about this release, and would be noise in every CLI command.
 */
function filterSdkNodeWarning(): void {
  if (warningFiltered) return;
  warningFiltered = true;
  const emit = process.emitWarning.bind(process) as (w: string | Error, ...r: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (String(typeof warning === 'string' ? warning : warning.message).includes('AWS SDK for JavaScript'))
      return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/** The official client, configured for Hearth. */
export function hearthClient(c: HearthConnection): LambdaMicrovmsClient {
  filterSdkNodeWarning();
  return new LambdaMicrovmsClient({
    endpoint: c.endpoint,
    region: c.region,
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
    maxAttempts: 2,
  });
}

/** Polls GetMicrovm until the microVM is in one of `states`; rejects on timeout or TERMINATED. */
export async function waitForMicrovm(
  client: LambdaMicrovmsClient,
  microvmId: string,
  states: readonly string[],
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<GetMicrovmCommandOutput> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const vm = await client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId }));
    if (vm.state && states.includes(vm.state)) return vm;
    if (vm.state === 'TERMINATED')
      throw new Error(`microVM ${microvmId} is TERMINATED: ${vm.stateReason ?? ''}`);
    if (Date.now() > deadline)
      throw new Error(`microVM ${microvmId} is ${vm.state}, not ${states.join('/')}, after the wait`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
}

/** Polls an image version until its build ends (SUCCESSFUL or FAILED). */
export async function waitForImageVersion(
  client: LambdaMicrovmsClient,
  imageIdentifier: string,
  imageVersion: string,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<GetMicrovmImageVersionCommandOutput> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30 * 60_000);
  for (;;) {
    const v = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier, imageVersion }));
    if (v.state === 'SUCCESSFUL' || v.state === 'FAILED') return v;
    if (Date.now() > deadline)
      throw new Error(`version ${imageVersion} of ${imageIdentifier} is still ${v.state}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 500));
  }
}

/**
 * Makes sure image `name` has an ACTIVE version to run: nothing to do if it has one; else builds
 * one from `input` (CreateMicrovmImage for a new image, UpdateMicrovmImage for an image whose
 * versions all failed or can no longer be restored) and waits for it. `onBuild` is called before
 * a build starts. Throws if the build fails.
 */
export async function ensureImage(
  client: LambdaMicrovmsClient,
  name: string,
  input: Omit<CreateMicrovmImageCommandInput, 'name'>,
  opts: { onBuild?: () => void } = {},
): Promise<{ version: string; built: boolean }> {
  const image = await client
    .send(new GetMicrovmImageCommand({ imageIdentifier: name }))
    .catch(() => undefined);
  if (image?.latestActiveImageVersion) return { version: image.latestActiveImageVersion, built: false };
  opts.onBuild?.();
  const started = image
    ? await client.send(new UpdateMicrovmImageCommand({ imageIdentifier: name, ...input }))
    : await client.send(new CreateMicrovmImageCommand({ name, ...input }));
  const v = await waitForImageVersion(client, name, started.imageVersion!);
  if (v.state !== 'SUCCESSFUL') throw new Error(`building image ${name} failed: ${v.stateReason}`);
  return { version: v.imageVersion!, built: true };
}

/** A token for a microVM's endpoint (CreateMicrovmAuthToken), as the string to send in TOKEN_HEADER. */
export async function createEndpointToken(
  client: LambdaMicrovmsClient,
  microvmId: string,
  opts: { ports?: number[] | 'all'; expirationInMinutes?: number } = {},
): Promise<string> {
  const ports = opts.ports ?? [8080];
  const out = await client.send(
    new CreateMicrovmAuthTokenCommand({
      microvmIdentifier: microvmId,
      expirationInMinutes: opts.expirationInMinutes ?? 60,
      allowedPorts: ports === 'all' ? [{ allPorts: {} }] : ports.map((port) => ({ port })),
    }),
  );
  const token = out.authToken && Object.values(out.authToken)[0];
  if (!token) throw new Error('the API returned no token');
  return token;
}

/** https://<endpoint> of a microVM (GetMicrovm's `endpoint` has no scheme). */
export function endpointUrl(microvm: { endpoint?: string }, path = '/'): string {
  if (!microvm.endpoint) throw new Error('the microVM has no endpoint');
  return `https://${microvm.endpoint}${path}`;
}

/** Sends one request to Hearth's API signed with SigV4 (JSON `payload` if given); resolves with the response. */
async function signedRequest(
  c: HearthConnection,
  method: string,
  url: URL,
  payload?: string,
): Promise<IncomingMessage> {
  const signer = new SignatureV4({
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
    region: c.region,
    service: 'lambda',
    sha256: NodeSha256,
  });
  const headers: Record<string, string> = { host: url.host };
  if (payload) headers['content-type'] = 'application/json';
  const signed = await signer.sign({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    ...(url.port ? { port: Number(url.port) } : {}),
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers,
    body: payload ?? '',
  });
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = request(url, { method, headers: signed.headers as Record<string, string> }, resolve);
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * Streams the text of a Hearth extension route (build logs, consoles), signed with SigV4 like the
 * API. Yields lines as they arrive; with follow, until the server ends the stream.
 */
export async function* streamLines(
  c: HearthConnection,
  path: string,
  query: Record<string, string> = {},
): AsyncGenerator<string> {
  const url = new URL(path, c.endpoint);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const res = await signedRequest(c, 'GET', url);
  if (res.statusCode !== 200) {
    let body = '';
    for await (const chunk of res) body += String(chunk);
    let message = body;
    try {
      message = (JSON.parse(body) as { message?: string }).message ?? body;
    } catch {
      /* not JSON */
    }
    throw new Error(`${path}: ${res.statusCode}: ${message}`);
  }
  res.setEncoding('utf8');
  let partial = '';
  for await (const chunk of res) {
    partial += chunk as string;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) yield l;
  }
  if (partial) yield partial;
}

/** The build log of an image version (Hearth extension), following it live with `follow`. */
export function buildLogs(
  c: HearthConnection,
  imageName: string,
  imageVersion: string,
  opts: { follow?: boolean } = {},
): AsyncGenerator<string> {
  return streamLines(
    c,
    `/hearth/v1/microvm-images/${encodeURIComponent(imageName)}/versions/${encodeURIComponent(imageVersion)}/logs`,
    opts.follow ? { follow: 'true' } : {},
  );
}

/** A microVM's console (its workload's stdout/stderr and the guest's messages), Hearth extension. */
export function microvmConsole(
  c: HearthConnection,
  microvmId: string,
  opts: { follow?: boolean } = {},
): AsyncGenerator<string> {
  return streamLines(
    c,
    `/hearth/v1/microvms/${encodeURIComponent(microvmId)}/console`,
    opts.follow ? { follow: 'true' } : {},
  );
}

/** Hearth's metrics in the Prometheus text format (microVMs by state, usage, endpoint traffic). */
export async function hearthMetrics(c: HearthConnection): Promise<string> {
  const lines: string[] = [];
  for await (const l of streamLines(c, '/hearth/v1/metrics', {})) lines.push(l);
  return lines.join('\n') + '\n';
}

/** What a microVM used against its baseline, as GetMicrovm's Hearth extension field `usage` says. */
export interface MicrovmUsageView {
  baselineMilliVcpus: number;
  peakMilliVcpus: number;
  cpuMilliseconds: number;
  cpuMillisecondsAboveBaseline: number;
  memoryMiB: number;
  peakMemoryMiB: number;
  sampledAt?: string;
}

/** GetMicrovm through a raw signed request, keeping Hearth's `usage` (the AWS client drops it). */
export function getMicrovmWithUsage(
  c: HearthConnection,
  microvmId: string,
): Promise<GetMicrovmCommandOutput & { usage?: MicrovmUsageView }> {
  return hearthRequest(c, 'GET', `/2025-09-09/microvms/${encodeURIComponent(microvmId)}`);
}

/**
 * One signed JSON request to Hearth's API, for what the official client cannot send: Hearth's
 * extension fields (e.g. diskSizeInMiB, buildArgs on CreateMicrovmImage). Returns the parsed body;
 * throws an Error carrying the API's error name and message.
 */
export async function hearthRequest<T = Record<string, unknown>>(
  c: HearthConnection,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const res = await signedRequest(
    c,
    method,
    new URL(path, c.endpoint),
    body === undefined ? undefined : JSON.stringify(body),
  );
  let text = '';
  for await (const chunk of res) text += String(chunk);
  const parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if ((res.statusCode ?? 500) >= 300) {
    const err = new Error(String(parsed.message ?? `HTTP ${res.statusCode}`)) as Error & {
      name: string;
      hint?: string;
    };
    err.name = String(res.headers['x-amzn-errortype'] ?? 'Error').split(':')[0]!;
    if (typeof parsed.hint === 'string') err.hint = parsed.hint;
    throw err;
  }
  return parsed as T;
}

// ---- network connectors (Hearth extension routes) ----

export { managedConnectorArn, type ManagedConnectorName } from '../core/connector-arns.js';
export type { EgressRuleInput, ConnectorEgressRule };
export type { ConnectorPort } from '../core/model.js';

/** A network connector as the API describes it, createdAt (absent for managed ones) as a Date. */
export type NetworkConnector = Omit<NetworkConnectorView, 'createdAt'> & { createdAt?: Date };

export interface CreateNetworkConnectorInput {
  /** Letters, digits, - and _, at most 64. */
  name: string;
  description?: string;
  /** 1..50 rules; each has exactly one of cidr and hostname; protocol defaults to ALL, ports to all. */
  egressRules: EgressRuleInput[];
  tags?: Record<string, string>;
  /** A repeat with the same token and parameters returns the first call's connector. */
  clientToken?: string;
}

const CONNECTORS_PATH = '/hearth/v1/network-connectors';

type WireConnector = Omit<NetworkConnector, 'createdAt'> & { createdAt?: number };

function fromWire(c: WireConnector): NetworkConnector {
  const { createdAt, ...rest } = c;
  return { ...rest, ...(createdAt !== undefined ? { createdAt: new Date(createdAt * 1000) } : {}) };
}

function connectorPath(nameOrArn: string): string {
  return `${CONNECTORS_PATH}/${encodeURIComponent(nameOrArn)}`;
}

/** Creates an egress allow-list connector; give its connectorArn in RunMicrovm's egressNetworkConnectors. */
export async function createNetworkConnector(
  c: HearthConnection,
  input: CreateNetworkConnectorInput,
): Promise<NetworkConnector> {
  return fromWire(await hearthRequest<WireConnector>(c, 'POST', CONNECTORS_PATH, input));
}

/** One page of connectors: the managed ones first, then the user ones by name. */
export async function listNetworkConnectors(
  c: HearthConnection,
  opts: { maxResults?: number; nextToken?: string } = {},
): Promise<{ networkConnectors: NetworkConnector[]; nextToken?: string }> {
  const q = new URLSearchParams();
  if (opts.maxResults !== undefined) q.set('maxResults', String(opts.maxResults));
  if (opts.nextToken !== undefined) q.set('nextToken', opts.nextToken);
  const page = await hearthRequest<{ networkConnectors: WireConnector[]; nextToken?: string }>(
    c,
    'GET',
    q.size > 0 ? `${CONNECTORS_PATH}?${q}` : CONNECTORS_PATH,
  );
  return {
    networkConnectors: page.networkConnectors.map(fromWire),
    ...(page.nextToken ? { nextToken: page.nextToken } : {}),
  };
}

/** A connector by name or ARN (managed ones too, e.g. 'INTERNET_EGRESS'). */
export async function getNetworkConnector(c: HearthConnection, nameOrArn: string): Promise<NetworkConnector> {
  return fromWire(await hearthRequest<WireConnector>(c, 'GET', connectorPath(nameOrArn)));
}

/** Deletes a user connector; refused (ConflictException) while a microVM that is not TERMINATED uses it. */
export async function deleteNetworkConnector(c: HearthConnection, nameOrArn: string): Promise<void> {
  await hearthRequest(c, 'DELETE', connectorPath(nameOrArn));
}

/** What a Hearth enforces around its microVMs, and what it cannot there (GET /hearth/v1/host). */
export interface HostInfo {
  accelerator: 'kvm' | 'tcg';
  /** QEMU runs as its own uid per VM in a pivot_root jail (root only). */
  jail: boolean;
  /** Each QEMU has memory, task and CPU limits. */
  cgroups: boolean;
  /** 'user-mode': a Hearth without root; guests reach nothing and egress connectors are refused. */
  network: 'namespaces' | 'user-mode';
  /** Stable protection names: qemu-seccomp, qemu-jail, cgroup-limits, egress-deny-all, egress-connectors. */
  enforced: string[];
  notEnforced: string[];
  /** What each missing protection means, one sentence each. */
  warnings: string[];
}

/** Describes what the Hearth at `c` enforces (e.g. whether it runs without root). */
export function hostInfo(c: HearthConnection): Promise<HostInfo> {
  return hearthRequest<HostInfo>(c, 'GET', '/hearth/v1/host');
}
