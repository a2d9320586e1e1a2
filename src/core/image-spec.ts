import { cpuShape } from './usage.js';
import { HearthError } from '../errors.js';
import type { HooksConfig, ImageVersionConfig } from './model.js';

/** A request value is out of range or malformed; the message names the field and the limit. */
export class ValidationError extends HearthError {
  readonly code = 'VALIDATION';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

export const IMAGE_NAME_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;
/** Baseline memory sizes, MiB, as the reference service accepts them. */
export const MEMORY_SIZES_MIB = [512, 1024, 2048, 4096, 8192] as const;
export const DEFAULT_MEMORY_MIB = 2048;
export const DEFAULT_APP_PORT = 8080;
export const DEFAULT_DISK_MIB = 4096;
export const MIN_DISK_MIB = 256;
export const MAX_ENV_VARS = 50;
export const READY_TIMEOUT_RANGE_S = [1, 3600] as const;
export const RUNTIME_HOOK_TIMEOUT_RANGE_S = [1, 60] as const;

/**
 * vCPUs for a baseline memory size: as many as it may burst to. The reference ties CPU to memory
 * (2 GiB = 1 core of baseline: 0.25 at 512 MiB) and lets a microVM burst to 4x its baseline (1 vCPU
 * at 512 MiB, 4 at 2 GiB, 16 at 8 GiB), so the guest has its peak vCPUs, the host's CPU quota
 * caps it there, and what it uses above its baseline is measured (core/usage.ts).
 */
export function vcpusFor(memoryMiB: number): number {
  return cpuShape(memoryMiB).peakVcpus;
}

/** The largest disk for a baseline memory size (8 GiB up to 2 GiB of memory, then 4x memory). */
export function maxDiskMiB(memoryMiB: number): number {
  return Math.max(8192, memoryMiB * 4);
}

/** The input of creating or updating an image: one new version. */
export interface ImageSpec {
  name: string;
  codeArtifactUri: string;
  baseImageArn: string;
  buildRoleArn?: string;
  baseImageVersion?: string;
  memoryMiB?: number;
  diskSizeMiB?: number;
  appPort?: number;
  hooks?: HooksConfig;
  environmentVariables?: Record<string, string>;
  buildArgs?: Record<string, string>;
  /** Rebuild every Dockerfile step (no layer cache). */
  noCache?: boolean;
  description?: string;
  tags?: Record<string, string>;
}

function intInRange(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(
      field,
      `must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function checkMap(
  field: string,
  m: Record<string, string> | undefined,
  maxEntries: number,
  keyPattern: RegExp,
): void {
  if (m === undefined) return;
  const keys = Object.keys(m);
  if (keys.length > maxEntries)
    throw new ValidationError(field, `at most ${maxEntries} entries, got ${keys.length}`);
  for (const k of keys) {
    if (!keyPattern.test(k))
      throw new ValidationError(field, `invalid name '${k.slice(0, 64)}': must match ${keyPattern}`);
    if (typeof m[k] !== 'string') throw new ValidationError(`${field}.${k}`, 'must be a string');
    if (m[k].includes('\0')) throw new ValidationError(`${field}.${k}`, 'must not contain NUL bytes');
    if (m[k].length > 4096) throw new ValidationError(`${field}.${k}`, 'at most 4096 characters');
  }
}

/**
 * Checks hooks the way the reference service does: a port whenever any hook is enabled, runtime
 * hooks only together with `ready`, timeouts within their ranges.
 */
export function validateHooks(h: HooksConfig | undefined): void {
  if (!h) return;
  const image = h.microvmImageHooks ?? {};
  const vm = h.microvmHooks ?? {};
  const settings: [string, string | undefined][] = [
    ['ready', image.ready],
    ['validate', image.validate],
    ['run', vm.run],
    ['resume', vm.resume],
    ['suspend', vm.suspend],
    ['terminate', vm.terminate],
  ];
  for (const [name, v] of settings) {
    if (v !== undefined && v !== 'ENABLED' && v !== 'DISABLED')
      throw new ValidationError(`hooks.${name}`, `must be ENABLED or DISABLED, got ${JSON.stringify(v)}`);
  }
  const anyEnabled = settings.some(([, v]) => v === 'ENABLED');
  if (anyEnabled && h.port === undefined)
    throw new ValidationError('hooks.port', 'is required when any hook is enabled');
  if (h.port !== undefined) intInRange('hooks.port', h.port, 1, 65535);
  const runtimeEnabled = settings.slice(2).some(([, v]) => v === 'ENABLED');
  if (runtimeEnabled && image.ready !== 'ENABLED') {
    throw new ValidationError(
      'hooks.microvmHooks',
      'runtime hooks (run, resume, suspend, terminate) need the ready hook enabled too',
    );
  }
  for (const [field, v] of [
    ['readyTimeoutInSeconds', image.readyTimeoutInSeconds],
    ['validateTimeoutInSeconds', image.validateTimeoutInSeconds],
  ] as const) {
    if (v !== undefined) intInRange(`hooks.microvmImageHooks.${field}`, v, ...READY_TIMEOUT_RANGE_S);
  }
  for (const [field, v] of [
    ['runTimeoutInSeconds', vm.runTimeoutInSeconds],
    ['resumeTimeoutInSeconds', vm.resumeTimeoutInSeconds],
    ['suspendTimeoutInSeconds', vm.suspendTimeoutInSeconds],
    ['terminateTimeoutInSeconds', vm.terminateTimeoutInSeconds],
  ] as const) {
    if (v !== undefined) intInRange(`hooks.microvmHooks.${field}`, v, ...RUNTIME_HOOK_TIMEOUT_RANGE_S);
  }
}

/** Validates an ImageSpec and fills in defaults. ValidationError names the first bad field. */
export function normalizeImageSpec(s: ImageSpec): {
  name: string;
  config: ImageVersionConfig;
  tags: Record<string, string>;
} {
  if (typeof s.name !== 'string' || !IMAGE_NAME_PATTERN.test(s.name)) {
    throw new ValidationError(
      'name',
      `must be 1-64 characters of letters, digits, '-' and '_' (${IMAGE_NAME_PATTERN})`,
    );
  }
  if (
    typeof s.codeArtifactUri !== 'string' ||
    s.codeArtifactUri.length === 0 ||
    s.codeArtifactUri.length > 2048
  ) {
    throw new ValidationError('codeArtifact.uri', 'must be a path or URL of 1-2048 characters');
  }
  if (typeof s.baseImageArn !== 'string' || s.baseImageArn.length === 0)
    throw new ValidationError('baseImageArn', 'is required');
  const memoryMiB = s.memoryMiB ?? DEFAULT_MEMORY_MIB;
  if (!(MEMORY_SIZES_MIB as readonly number[]).includes(memoryMiB)) {
    throw new ValidationError(
      'resources.minimumMemoryInMiB',
      `must be one of ${MEMORY_SIZES_MIB.join(', ')}, got ${memoryMiB}`,
    );
  }
  const diskSizeMiB = intInRange(
    'diskSizeInMiB',
    s.diskSizeMiB ?? DEFAULT_DISK_MIB,
    MIN_DISK_MIB,
    maxDiskMiB(memoryMiB),
  );
  const appPort = intInRange('appPort', s.appPort ?? DEFAULT_APP_PORT, 1, 65535);
  validateHooks(s.hooks);
  checkMap('environmentVariables', s.environmentVariables, MAX_ENV_VARS, /^[A-Za-z_][A-Za-z0-9_]{0,127}$/);
  checkMap('buildArgs', s.buildArgs, 100, /^[A-Za-z_][A-Za-z0-9_]{0,127}$/);
  checkMap('tags', s.tags, 50, /^[\p{L}\p{N}\s_.:/=+\-@]{1,128}$/u);
  if (s.description !== undefined && (typeof s.description !== 'string' || s.description.length > 256)) {
    throw new ValidationError('description', 'at most 256 characters');
  }
  return {
    name: s.name,
    tags: s.tags ?? {},
    config: {
      codeArtifactUri: s.codeArtifactUri,
      baseImageArn: s.baseImageArn,
      ...(s.buildRoleArn ? { buildRoleArn: s.buildRoleArn } : {}),
      ...(s.baseImageVersion ? { baseImageVersion: s.baseImageVersion } : {}),
      memoryMiB,
      vcpus: vcpusFor(memoryMiB),
      diskSizeMiB,
      appPort,
      ...(s.hooks ? { hooks: s.hooks } : {}),
      ...(s.environmentVariables ? { environmentVariables: s.environmentVariables } : {}),
      ...(s.buildArgs ? { buildArgs: s.buildArgs } : {}),
      ...(s.noCache ? { noCache: true } : {}),
      ...(s.description ? { description: s.description } : {}),
    },
  };
}
