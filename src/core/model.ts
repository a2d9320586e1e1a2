/**
 * Hearth's domain records, as the control plane keeps them (src/store persists them). Names and
 * states follow AWS Lambda MicroVMs (../shared/reference/aws-lambda-microvms.md).
 */

import type { MicrovmUsage } from './usage.js';

/** Image states (the AWS API spells failure states *_FAILED). */
export type ImageState =
  | 'CREATING'
  | 'CREATED'
  | 'CREATE_FAILED'
  | 'UPDATING'
  | 'UPDATED'
  | 'UPDATE_FAILED'
  | 'DELETING'
  | 'DELETED'
  | 'DELETE_FAILED';

export type VersionState =
  'PENDING' | 'IN_PROGRESS' | 'SUCCESSFUL' | 'FAILED' | 'DELETING' | 'DELETED' | 'DELETE_FAILED';
export type VersionStatus = 'ACTIVE' | 'INACTIVE';
export type BuildState = 'PENDING' | 'IN_PROGRESS' | 'SUCCESSFUL' | 'FAILED';

/** Stable failure codes of a build (the reason text goes beside it). */
export type BuildFailureCode =
  | 'ARCHIVE_DOCKERFILE_NOT_FOUND'
  | 'ARCHIVE_INVALID'
  | 'ARCHIVE_TOO_LARGE'
  | 'ARCHIVE_UNSAFE_ENTRY'
  | 'CODE_ARTIFACT_FETCH_FAILED'
  | 'CODE_ARTIFACT_NOT_FOUND'
  | 'CODE_ARTIFACT_URI_UNSUPPORTED'
  | 'CONTAINER_BUILD_FAILED'
  | 'DISK_STORAGE_FULL'
  | 'READY_TIMEOUT'
  | 'READY_HOOK_FAILED'
  | 'VALIDATE_HOOK_FAILED'
  | 'SNAPSHOT_FAILED'
  | 'BUILD_INTERRUPTED'
  | 'INTERNAL_ERROR';

export type HookSetting = 'ENABLED' | 'DISABLED';

/** Hooks: HTTP POSTs to /hearth/runtime/v1/<hook> on the app's hook port. */
export interface HooksConfig {
  port?: number;
  microvmImageHooks?: {
    ready?: HookSetting;
    readyTimeoutInSeconds?: number;
    validate?: HookSetting;
    validateTimeoutInSeconds?: number;
  };
  microvmHooks?: {
    run?: HookSetting;
    runTimeoutInSeconds?: number;
    resume?: HookSetting;
    resumeTimeoutInSeconds?: number;
    suspend?: HookSetting;
    suspendTimeoutInSeconds?: number;
    terminate?: HookSetting;
    terminateTimeoutInSeconds?: number;
  };
}

/** What one image version is built from and runs with. */
export interface ImageVersionConfig {
  /** Local path, file:// URL, http(s) URL or s3:// URL of a directory or .zip with a Dockerfile at its root. */
  codeArtifactUri: string;
  baseImageArn: string;
  /** Recorded as given (the AWS API requires it); Hearth builds run as its own builder user. */
  buildRoleArn?: string;
  baseImageVersion?: string;
  /** Baseline memory: 512, 1024, 2048, 4096 or 8192 MiB. */
  memoryMiB: number;
  /** vCPUs tied to memory as in the reference table (2 GiB = 1 vCPU; at least 1 here). */
  vcpus: number;
  diskSizeMiB: number;
  /** The app port readiness falls back to when no ready hook is enabled (default 8080). */
  appPort: number;
  hooks?: HooksConfig;
  /** Baked into the snapshot: shared by every microVM launched from it. */
  environmentVariables?: Record<string, string>;
  buildArgs?: Record<string, string>;
  /** Build every Dockerfile step again instead of reusing cached layers. */
  noCache?: boolean;
  description?: string;
}

export interface ImageRecord {
  name: string;
  arn: string;
  state: ImageState;
  stateReason?: string;
  description?: string;
  latestVersion?: string;
  latestActiveVersion?: string;
  latestFailedVersion?: string;
  tags: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

export interface ImageVersionRecord {
  imageName: string;
  /** "1.0", "2.0", ... */
  version: string;
  /** Internal id, also the engine template id: iv-<hex>. */
  id: string;
  state: VersionState;
  status: VersionStatus;
  stateReason?: string;
  config: ImageVersionConfig;
  createdAt: string;
  updatedAt: string;
}

export interface ImageBuildRecord {
  /** Internal id: b-<hex>. */
  id: string;
  imageName: string;
  version: string;
  buildState: BuildState;
  failureCode?: BuildFailureCode;
  stateReason?: string;
  architecture: 'X86_64';
  snapshotMemorySizeInBytes?: number;
  snapshotDiskSizeInBytes?: number;
  codeInstallSizeInBytes?: number;
  startedAt: string;
  endedAt?: string;
}

export const MICROVM_STATES = [
  'PENDING',
  'RUNNING',
  'SUSPENDING',
  'SUSPENDED',
  'TERMINATING',
  'TERMINATED',
] as const;
export type MicrovmState = (typeof MICROVM_STATES)[number];

export interface IdlePolicy {
  maxIdleDurationSeconds: number;
  suspendedDurationSeconds: number;
  autoResumeEnabled: boolean;
  /** Hearth extension: whether an open WebSocket or stream keeps the microVM busy. Default true. */
  openStreamsCountAsActivity?: boolean;
}

export interface MicrovmRecord {
  microvmId: string;
  imageName: string;
  imageVersion: string;
  state: MicrovmState;
  stateReason?: string;
  idlePolicy?: IdlePolicy;
  maximumDurationInSeconds: number;
  runHookPayload?: string;
  ingressNetworkConnectors: string[];
  egressNetworkConnectors: string[];
  clientToken?: string;
  /** Bumped when tokens minted earlier must stop working (terminate). */
  tokenGeneration: number;
  startedAt: string;
  /** When the VM last entered SUSPENDED (for the suspended TTL). */
  suspendedAt?: string;
  terminatedAt?: string;
  updatedAt: string;
  /** What it used against its baseline, as last saved (the service holds fresher figures). */
  usage?: MicrovmUsage;
}

/** A destination port of an egress rule: one port or an inclusive range (as the API spells them). */
export type ConnectorPort = { port: number } | { range: { startPort: number; endPort: number } };

/** One rule of an egress allow-list connector, as the API takes and returns it. */
export interface ConnectorEgressRule {
  /** A canonical IPv4 network, e.g. 10.0.5.0/24. Exactly one of cidr and hostname. */
  cidr?: string;
  /** A DNS name (lower case), or `*.` + a name for any name below it. */
  hostname?: string;
  protocol: 'TCP' | 'UDP' | 'ALL';
  /** Absent: every port. */
  ports?: ConnectorPort[];
}

/**
 * A user network connector: an egress allow-list (Hearth's counterpart of a VPC egress connector).
 * Immutable once created, so a microVM's rules never change while it lives.
 */
export interface NetworkConnectorRecord {
  name: string;
  arn: string;
  description?: string;
  egressRules: ConnectorEgressRule[];
  tags: Record<string, string>;
  createdAt: string;
}
