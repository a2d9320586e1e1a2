import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HearthError } from '../errors.js';
import { DEFAULT_DATA_DIR } from './data-dir.js';

/**
 * Everything `hearth serve` can be told, with its default. Sources, later ones winning:
 * defaults < config file (JSON; --config, HEARTH_CONFIG, or <dataDir>/config.json) < environment
 * (HEARTH_*) < command-line flags. Unknown keys in the file are an error.
 */
export interface ServerConfig {
  /** Where Hearth keeps everything. Env HEARTH_DATA_DIR. Default /var/lib/hearth. */
  dataDir: string;
  /** sqlite:<path> or postgres://... Env HEARTH_DATABASE_URL. Default sqlite:<dataDir>/hearth.db. */
  databaseUrl?: string;
  /** Address of the control-plane API (AWS-compatible, SigV4). Env HEARTH_API_HOST / HEARTH_API_PORT. Default 127.0.0.1:8200. */
  apiHost: string;
  apiPort: number;
  /** Address of the microVM endpoints (HTTPS). Env HEARTH_GATEWAY_HOST / HEARTH_GATEWAY_PORT. Default 0.0.0.0:8443. */
  gatewayHost: string;
  gatewayPort: number;
  /** Endpoints are <microvmId>.<domain>. Env HEARTH_DOMAIN. Default microvm.localhost. */
  domain: string;
  /** A plaintext (no TLS) gateway port as well, off by default. Env HEARTH_GATEWAY_PLAINTEXT_PORT. */
  gatewayPlaintextPort?: number;
  /**
   * A port on apiHost serving GET /metrics (Prometheus text) without authentication, for a scraper;
   * off by default (the same text is always at the API's signed GET /hearth/v1/metrics).
   * Env HEARTH_METRICS_PORT.
   */
  metricsPort?: number;
  /** TLS certificate and key for the gateway; default: generated with a local CA in <dataDir>/tls. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Region and account in ARNs and in SigV4 scopes. Env HEARTH_REGION / HEARTH_ACCOUNT_ID. Default local / 000000000000. */
  region: string;
  accountId: string;
  /** auto (probe KVM, else TCG), kvm or tcg. Env HEARTH_ACCELERATOR. Default auto. */
  accelerator: 'auto' | 'kvm' | 'tcg';
  /** microVMs not TERMINATED at once. Env HEARTH_MAX_MICROVMS. Default 100. */
  maxMicrovms: number;
  /** Sum of baseline memory of microVMs not TERMINATED, MiB. Env HEARTH_MAX_MEMORY_MIB. Default 262144. */
  maxMemoryMiB: number;
  /** Smallest idle timeout accepted, seconds. Env HEARTH_MIN_IDLE_SECONDS. Default 60 (as the reference service). */
  minIdleSeconds: number;
  /** How often idle and duration deadlines are checked, ms. Env HEARTH_CHECK_INTERVAL_MS. Default 1000. */
  checkIntervalMs: number;
  /** How long TERMINATED microVMs stay visible, seconds (at least 600). Default 3600. */
  terminatedRetentionSeconds: number;
  /** Builds at once. Env HEARTH_MAX_CONCURRENT_BUILDS. Default 1. */
  maxConcurrentBuilds: number;
  /** Ready timeout of builds without a ready hook, seconds. Default 300. */
  buildReadyTimeoutSeconds: number;
  /** TCG translation cache per VM, MiB. Default 128. */
  tcgCacheMiB: number;
  /**
   * S3-compatible endpoint that s3://<bucket>/<key> code artifacts are fetched from (path-style),
   * e.g. https://s3.us-east-1.amazonaws.com or http://127.0.0.1:9000. Env HEARTH_S3_ENDPOINT. No
   * default: without it s3:// URIs are refused (http(s):// URLs, presigned ones included, always
   * work). The credentials are the server process's standard AWS_ACCESS_KEY_ID,
   * AWS_SECRET_ACCESS_KEY and optional AWS_SESSION_TOKEN (without them requests are unsigned).
   */
  s3Endpoint?: string;
  /** Region of the S3 requests' SigV4 signature. Env HEARTH_S3_REGION. Default us-east-1. */
  s3Region: string;
  /** Deadline of one remote code-artifact download, seconds. Env HEARTH_ARTIFACT_FETCH_TIMEOUT_SECONDS. Default 300. */
  artifactFetchTimeoutSeconds: number;
}

export const DEFAULT_SERVER_CONFIG: ServerConfig = {
  dataDir: DEFAULT_DATA_DIR,
  apiHost: '127.0.0.1',
  apiPort: 8200,
  gatewayHost: '0.0.0.0',
  gatewayPort: 8443,
  domain: 'microvm.localhost',
  region: 'local',
  accountId: '000000000000',
  accelerator: 'auto',
  maxMicrovms: 100,
  maxMemoryMiB: 256 * 1024,
  minIdleSeconds: 60,
  checkIntervalMs: 1_000,
  terminatedRetentionSeconds: 3_600,
  maxConcurrentBuilds: 1,
  buildReadyTimeoutSeconds: 300,
  tcgCacheMiB: 128,
  s3Region: 'us-east-1',
  artifactFetchTimeoutSeconds: 300,
};

/** The configuration given is invalid. */
export class ConfigError extends HearthError {
  readonly code = 'CONFIG_INVALID';
  constructor(message: string) {
    super(message, { hint: 'see "Configuration" in the README for every option and its default' });
  }
}

const ENV: Record<string, keyof ServerConfig> = {
  HEARTH_DATA_DIR: 'dataDir',
  HEARTH_DATABASE_URL: 'databaseUrl',
  HEARTH_API_HOST: 'apiHost',
  HEARTH_API_PORT: 'apiPort',
  HEARTH_GATEWAY_HOST: 'gatewayHost',
  HEARTH_GATEWAY_PORT: 'gatewayPort',
  HEARTH_GATEWAY_PLAINTEXT_PORT: 'gatewayPlaintextPort',
  HEARTH_METRICS_PORT: 'metricsPort',
  HEARTH_DOMAIN: 'domain',
  HEARTH_TLS_CERT_FILE: 'tlsCertFile',
  HEARTH_TLS_KEY_FILE: 'tlsKeyFile',
  HEARTH_REGION: 'region',
  HEARTH_ACCOUNT_ID: 'accountId',
  HEARTH_ACCELERATOR: 'accelerator',
  HEARTH_MAX_MICROVMS: 'maxMicrovms',
  HEARTH_MAX_MEMORY_MIB: 'maxMemoryMiB',
  HEARTH_MIN_IDLE_SECONDS: 'minIdleSeconds',
  HEARTH_CHECK_INTERVAL_MS: 'checkIntervalMs',
  HEARTH_TERMINATED_RETENTION_SECONDS: 'terminatedRetentionSeconds',
  HEARTH_MAX_CONCURRENT_BUILDS: 'maxConcurrentBuilds',
  HEARTH_BUILD_READY_TIMEOUT_SECONDS: 'buildReadyTimeoutSeconds',
  HEARTH_TCG_CACHE_MIB: 'tcgCacheMiB',
  HEARTH_S3_ENDPOINT: 's3Endpoint',
  HEARTH_S3_REGION: 's3Region',
  HEARTH_ARTIFACT_FETCH_TIMEOUT_SECONDS: 'artifactFetchTimeoutSeconds',
};

/** Keys without a default (absent unless set). */
const OPTIONAL_KEYS = [
  'databaseUrl',
  'gatewayPlaintextPort',
  'metricsPort',
  'tlsCertFile',
  'tlsKeyFile',
  's3Endpoint',
] as const;

/** Every configuration key, each also a `hearth serve` flag in kebab case (`--api-port`). */
export const CONFIG_KEYS: readonly (keyof ServerConfig)[] = [
  ...(Object.keys(DEFAULT_SERVER_CONFIG) as (keyof ServerConfig)[]),
  ...OPTIONAL_KEYS,
];

/** `apiPort` -> `api-port`, `maxMemoryMiB` -> `max-memory-mib`. */
export function flagName(key: keyof ServerConfig): string {
  return key.replace(/MiB/g, 'Mib').replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

const NUMERIC: readonly (keyof ServerConfig)[] = [
  'apiPort',
  'gatewayPort',
  'gatewayPlaintextPort',
  'metricsPort',
  'maxMicrovms',
  'maxMemoryMiB',
  'minIdleSeconds',
  'checkIntervalMs',
  'terminatedRetentionSeconds',
  'maxConcurrentBuilds',
  'buildReadyTimeoutSeconds',
  'tcgCacheMiB',
  'artifactFetchTimeoutSeconds',
];

function coerce(key: keyof ServerConfig, value: unknown, source: string): unknown {
  if (NUMERIC.includes(key)) {
    const n = typeof value === 'number' ? value : Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new ConfigError(`${key} (from ${source}) must be a whole number, got ${JSON.stringify(value)}`);
    return n;
  }
  if (typeof value !== 'string') throw new ConfigError(`${key} (from ${source}) must be a string`);
  if (key === 'accelerator' && !['auto', 'kvm', 'tcg'].includes(value))
    throw new ConfigError(`accelerator must be auto, kvm or tcg, got '${value}'`);
  if (key === 's3Endpoint' && !/^https?:\/\/[^/?#]/i.test(value))
    throw new ConfigError(`s3Endpoint (from ${source}) must be an http:// or https:// URL`);
  return value;
}

/** Resolves the configuration from its sources. */
export async function loadServerConfig(
  opts: { file?: string; env?: NodeJS.ProcessEnv; flags?: Partial<Record<keyof ServerConfig, unknown>> } = {},
): Promise<ServerConfig> {
  const env = opts.env ?? process.env;
  const cfg: Record<string, unknown> = { ...DEFAULT_SERVER_CONFIG };
  const dataDir = String(opts.flags?.dataDir ?? env.HEARTH_DATA_DIR ?? DEFAULT_SERVER_CONFIG.dataDir);
  const file =
    opts.file ??
    env.HEARTH_CONFIG ??
    (existsSync(join(dataDir, 'config.json')) ? join(dataDir, 'config.json') : undefined);
  if (file) {
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`cannot read the configuration file ${file}: ${(e as Error).message}`);
    }
    for (const [k, v] of Object.entries(parsed)) {
      if (!(k in DEFAULT_SERVER_CONFIG) && !(OPTIONAL_KEYS as readonly string[]).includes(k)) {
        throw new ConfigError(`unknown option '${k}' in ${file}`);
      }
      cfg[k] = coerce(k as keyof ServerConfig, v, file);
    }
  }
  for (const [name, key] of Object.entries(ENV)) {
    if (env[name] !== undefined && env[name] !== '') cfg[key] = coerce(key, env[name], name);
  }
  for (const [k, v] of Object.entries(opts.flags ?? {}))
    if (v !== undefined) cfg[k] = coerce(k as keyof ServerConfig, v, `--${k}`);
  const c = cfg as unknown as ServerConfig;
  if (c.terminatedRetentionSeconds < 600)
    throw new ConfigError(
      'terminatedRetentionSeconds must be at least 600 (TERMINATED microVMs stay visible 10 minutes)',
    );
  if (c.artifactFetchTimeoutSeconds < 1)
    throw new ConfigError('artifactFetchTimeoutSeconds must be at least 1');
  return c;
}
