/**
 * The 24 operations of the AWS Lambda MicroVMs API (restJson1), as the official SDK
 * `@aws-sdk/client-lambda-microvms` speaks them: method, path template, success status, input
 * members with where they travel (label, query, header, body), output members, and the modeled
 * errors. Member names, order, locations and requiredness follow the SDK's schemas
 * (dist-es/schemas/schemas_0.js; operations.test.ts compares the two). Constraints come from the
 * reference (../shared/reference/aws-lambda-microvms.md) and Hearth's image spec; members marked
 * `hearthExtension` are Hearth's own and are never sent by the AWS SDK. OPERATIONS adds Hearth's own
 * operations (connector-operations.ts, host-operations.ts) to them.
 */
import { MEMORY_SIZES_MIB, READY_TIMEOUT_RANGE_S, RUNTIME_HOOK_TIMEOUT_RANGE_S } from '../core/image-spec.js';
import { CONNECTOR_OPERATIONS } from './connector-operations.js';
import { HOST_OPERATIONS } from './host-operations.js';
import { MICROVM_STATES } from '../core/model.js';
import type { ExceptionName } from './exceptions.js';
import {
  Arn,
  ClientToken,
  COMMON_ERRORS,
  Description,
  Identifier,
  LIMITS,
  MaxResults,
  NextToken,
  PortRange,
  READ,
  TagMap,
  WRITE,
  op,
  type OperationDef,
} from './operation-common.js';
import {
  bool,
  enumOf,
  int,
  label,
  list,
  map,
  optional,
  query,
  required,
  str,
  struct,
  timestamp,
  union,
  type Members,
  type StructValue,
} from './shapes.js';

const ImageVersion = str({ minLength: 1, maxLength: 64 });
const StateReason = str();

const ConnectorList = list(str({ minLength: 1, maxLength: LIMITS.identifierMaxLength }), {
  maxItems: LIMITS.networkConnectors,
});

const EnvVarName = str({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' });

const EnvironmentVariables = map(str({ maxLength: 4096, sensitive: true }), {
  key: EnvVarName,
  maxEntries: LIMITS.environmentVariables,
});

const BuildArgs = map(str({ maxLength: 4096 }), { key: EnvVarName, maxEntries: LIMITS.buildArgs });

export const MicrovmState = enumOf(MICROVM_STATES);
export const MicrovmImageState = enumOf([
  'CREATING',
  'CREATED',
  'CREATE_FAILED',
  'UPDATING',
  'UPDATED',
  'UPDATE_FAILED',
  'DELETING',
  'DELETED',
  'DELETE_FAILED',
]);
export const MicrovmImageVersionState = enumOf([
  'PENDING',
  'IN_PROGRESS',
  'SUCCESSFUL',
  'FAILED',
  'DELETING',
  'DELETED',
  'DELETE_FAILED',
]);
export const MicrovmImageVersionStatus = enumOf(['ACTIVE', 'INACTIVE']);
export const ManagedMicrovmImageVersionStatus = enumOf(['AVAILABLE', 'DEPRECATED']);
export const BuildState = enumOf(['PENDING', 'IN_PROGRESS', 'SUCCESSFUL', 'FAILED']);
/** The SDK's enum has ARM_64 only; the service model also lists X86_64, which is what Hearth builds. */
export const Architecture = enumOf(['ARM_64', 'X86_64']);
const HookState = enumOf(['ENABLED', 'DISABLED']);
const Capability = enumOf(['ALL']);

export const IdlePolicy = struct('IdlePolicy', {
  maxIdleDurationSeconds: required(
    int({ min: LIMITS.maxIdleDurationSeconds[0], max: LIMITS.maxIdleDurationSeconds[1] }),
    { doc: "Seconds without inbound traffic before auto-suspend (the server's minimum also applies)." },
  ),
  suspendedDurationSeconds: required(
    int({ min: LIMITS.suspendedDurationSeconds[0], max: LIMITS.suspendedDurationSeconds[1] }),
    { doc: 'Seconds a microVM may stay SUSPENDED before it is terminated (0: at once).' },
  ),
  autoResumeEnabled: required(bool(), { doc: 'Resume on the next request while SUSPENDED.' }),
  openStreamsCountAsActivity: optional(bool(), {
    hearthExtension: true,
    doc: 'Hearth extension: whether an open WebSocket, HTTP/2 stream or unfinished request keeps the microVM busy (default true).',
  }),
});

const CloudWatchLogging = struct('CloudWatchLogging', {
  logGroup: optional(str({ minLength: 1, maxLength: 512 })),
  logStream: optional(str({ minLength: 1, maxLength: 512 })),
});

export const Logging = union('Logging', {
  disabled: struct('LoggingDisabled', {}),
  cloudWatch: CloudWatchLogging,
});

export const CodeArtifact = union('CodeArtifact', {
  uri: str({
    minLength: 1,
    maxLength: 2048,
    doc: 'Local path, file://, http(s):// or s3:// URL of a directory or .zip with a Dockerfile at its root.',
  }),
});

const CpuConfiguration = struct('CpuConfiguration', { architecture: required(Architecture) });

const Resources = struct('Resources', {
  minimumMemoryInMiB: required(int({ values: MEMORY_SIZES_MIB, doc: 'Baseline memory, MiB.' })),
});

const RuntimeHookTimeout = int({
  min: RUNTIME_HOOK_TIMEOUT_RANGE_S[0],
  max: RUNTIME_HOOK_TIMEOUT_RANGE_S[1],
});
const BuildHookTimeout = int({ min: READY_TIMEOUT_RANGE_S[0], max: READY_TIMEOUT_RANGE_S[1] });

const MicrovmHooks = struct('MicrovmHooks', {
  run: optional(HookState),
  runTimeoutInSeconds: optional(RuntimeHookTimeout),
  resume: optional(HookState),
  resumeTimeoutInSeconds: optional(RuntimeHookTimeout),
  suspend: optional(HookState),
  suspendTimeoutInSeconds: optional(RuntimeHookTimeout),
  terminate: optional(HookState),
  terminateTimeoutInSeconds: optional(RuntimeHookTimeout),
});

const MicrovmImageHooks = struct('MicrovmImageHooks', {
  ready: optional(HookState),
  readyTimeoutInSeconds: optional(BuildHookTimeout),
  validate: optional(HookState),
  validateTimeoutInSeconds: optional(BuildHookTimeout),
});

export const Hooks = struct('Hooks', {
  port: optional(int({ min: LIMITS.port[0], max: LIMITS.port[1] })),
  microvmHooks: optional(MicrovmHooks),
  microvmImageHooks: optional(MicrovmImageHooks),
});

export const PortSpecification = union('PortSpecification', {
  port: int({ min: LIMITS.port[0], max: LIMITS.port[1] }),
  range: PortRange,
  allPorts: struct('Unit', {}),
});

const TokenParts = map(str({ sensitive: true }), {
  key: str(),
  doc: 'The token headers: the value under X-aws-proxy-auth goes in that header on every request.',
});

const SnapshotBuild = struct('SnapshotBuild', {
  memorySnapshotSizeInBytes: optional(int({ min: 0 })),
  codeInstallSizeInBytes: optional(int({ min: 0 })),
  diskSnapshotSizeInBytes: optional(int({ min: 0 })),
});

// ---- request members shared by CreateMicrovmImage and UpdateMicrovmImage ----

const imageConfigMembers = {
  baseImageArn: required(Arn),
  buildRoleArn: required(Arn, { doc: 'Required by the AWS model; Hearth records it and does not use it.' }),
  codeArtifact: required(CodeArtifact),
  baseImageVersion: optional(ImageVersion),
  description: optional(Description),
  logging: optional(Logging),
  egressNetworkConnectors: optional(ConnectorList),
  cpuConfigurations: optional(list(CpuConfiguration, { maxItems: 2 })),
  resources: optional(list(Resources, { maxItems: 1 }), { doc: 'One size per image.' }),
  additionalOsCapabilities: optional(list(Capability, { maxItems: 1 })),
  hooks: optional(Hooks),
  environmentVariables: optional(EnvironmentVariables),
} as const;

const hearthImageExtensions = {
  diskSizeInMiB: optional(int({ min: LIMITS.diskSizeInMiB[0], max: LIMITS.diskSizeInMiB[1] }), {
    hearthExtension: true,
    doc: "Hearth extension: the image's disk size, MiB (at most 8 GiB up to 2 GiB of memory, then 4x memory).",
  }),
  appPort: optional(int({ min: LIMITS.port[0], max: LIMITS.port[1] }), {
    hearthExtension: true,
    doc: 'Hearth extension: the port readiness waits for when no ready hook is enabled (default 8080).',
  }),
  buildArgs: optional(BuildArgs, {
    hearthExtension: true,
    doc: 'Hearth extension: Dockerfile build arguments (ARG).',
  }),
  noCache: optional(bool(), {
    hearthExtension: true,
    doc: 'Hearth extension: rebuild every Dockerfile step instead of reusing cached layers.',
  }),
} as const;

// ---- output members ----

const MicrovmUsage = struct('MicrovmUsage', {
  baselineMilliVcpus: required(int(), {
    doc: 'Cores guaranteed, in thousandths: baseline memory / 2 GiB (250 for 512 MiB).',
  }),
  peakMilliVcpus: required(int(), {
    doc: 'Cores it may burst to (4x baseline, at least one vCPU), in thousandths.',
  }),
  cpuMilliseconds: required(int(), { doc: 'CPU time used over its whole life (all runs), ms.' }),
  cpuMillisecondsAboveBaseline: required(int(), {
    doc: 'Of that, the part above its baseline, added up per sampling interval (about 1 s), ms.',
  }),
  memoryMiB: required(int(), { doc: 'Resident host memory of its QEMU now (0 while not running), MiB.' }),
  peakMemoryMiB: required(int(), { doc: 'The largest resident memory seen, MiB.' }),
  sampledAt: optional(timestamp()),
});

const microvmOutput = {
  microvmId: required(str()),
  state: required(MicrovmState),
  endpoint: required(str(), { doc: 'Host name of the microVM endpoint (no scheme).' }),
  imageArn: required(Arn),
  imageVersion: required(ImageVersion),
  maximumDurationInSeconds: required(int()),
  startedAt: required(timestamp()),
  executionRoleArn: optional(Arn),
  idlePolicy: optional(IdlePolicy),
  terminatedAt: optional(timestamp()),
  stateReason: optional(StateReason),
  ingressNetworkConnectors: optional(list(str())),
  egressNetworkConnectors: optional(list(str())),
  usage: optional(MicrovmUsage, {
    hearthExtension: true,
    doc: 'Hearth extension: what it used against its baseline (burst above it is measured per second).',
  }),
} as const;

const imageVersionOutput = {
  baseImageArn: required(Arn),
  buildRoleArn: required(Arn),
  codeArtifact: required(CodeArtifact),
  imageArn: required(Arn),
  imageVersion: required(ImageVersion),
  state: required(MicrovmImageVersionState),
  status: required(MicrovmImageVersionStatus),
  createdAt: required(timestamp()),
  baseImageVersion: optional(ImageVersion),
  description: optional(Description),
  logging: optional(Logging),
  egressNetworkConnectors: optional(list(str())),
  cpuConfigurations: optional(list(CpuConfiguration)),
  resources: optional(list(Resources)),
  additionalOsCapabilities: optional(list(Capability)),
  hooks: optional(Hooks),
  environmentVariables: optional(EnvironmentVariables),
  updatedAt: optional(timestamp()),
  stateReason: optional(StateReason),
  tags: optional(TagMap),
} as const;

const imageConfigOutput = {
  baseImageVersion: optional(ImageVersion),
  description: optional(Description),
  logging: optional(Logging),
  egressNetworkConnectors: optional(list(str())),
  cpuConfigurations: optional(list(CpuConfiguration)),
  resources: optional(list(Resources)),
  additionalOsCapabilities: optional(list(Capability)),
  hooks: optional(Hooks),
  environmentVariables: optional(EnvironmentVariables),
} as const;

const MicrovmItem = struct('MicrovmItem', {
  microvmId: required(str()),
  state: required(MicrovmState),
  imageArn: required(Arn),
  imageVersion: required(ImageVersion),
  startedAt: required(timestamp()),
});

const MicrovmImageSummary = struct('MicrovmImageSummary', {
  imageArn: required(Arn),
  name: required(str()),
  state: required(MicrovmImageState),
  createdAt: required(timestamp()),
  latestActiveImageVersion: optional(ImageVersion),
  latestFailedImageVersion: optional(ImageVersion),
});

const MicrovmImageVersionSummary = struct('MicrovmImageVersionSummary', imageVersionOutput);

const buildSummaryMembers = {
  imageArn: required(Arn),
  imageVersion: required(ImageVersion),
  buildId: required(str()),
  buildState: required(BuildState),
  architecture: required(Architecture),
  chipset: required(str({ doc: 'GRAVITON on AWS; the host CPU family on Hearth.' })),
  chipsetGeneration: required(str()),
  createdAt: required(timestamp()),
  stateReason: optional(StateReason),
} as const;

const MicrovmImageBuildSummary = struct('MicrovmImageBuildSummary', buildSummaryMembers);

const ManagedMicrovmImageSummary = struct('ManagedMicrovmImageSummary', {
  imageArn: required(Arn),
  createdAt: required(timestamp()),
  updatedAt: optional(timestamp()),
});

const ManagedMicrovmImageVersion = struct('ManagedMicrovmImageVersion', {
  imageArn: required(Arn),
  imageVersion: required(ImageVersion),
  createdAt: required(timestamp()),
  status: optional(ManagedMicrovmImageVersionStatus),
  updatedAt: optional(timestamp()),
});

// ---- the operations ----

export { LIMITS, type HttpMethod, type OperationDef } from './operation-common.js';

const V = '/2025-09-09';
const TAGGING = [
  ...READ,
  'InvalidParameterValueException',
  'ServiceException',
  'TooManyRequestsException',
] as const satisfies readonly ExceptionName[];

const microvmIdentifier = label(Identifier, { doc: 'The microVM id.' });
const imageIdentifier = label(Identifier, { doc: 'Image name or ARN.' });
const imageVersionLabel = label(ImageVersion, { doc: 'Image version, e.g. "1.0".' });
const expirationInMinutes = required(
  int({ min: LIMITS.expirationInMinutes[0], max: LIMITS.expirationInMinutes[1] }),
);
const authTokenOutput = { authToken: required(TokenParts) } as const;

const AWS_DEFS = {
  CreateMicrovmAuthToken: op({
    method: 'POST',
    path: `${V}/microvms/{microvmIdentifier}/auth-token`,
    successStatus: 200,
    input: {
      microvmIdentifier,
      expirationInMinutes,
      allowedPorts: required(list(PortSpecification, { minItems: 1, maxItems: LIMITS.allowedPorts })),
    },
    output: authTokenOutput,
    errors: WRITE,
    doc: 'Mints a token for the microVM endpoint, scoped to the microVM, some ports and at most 60 minutes.',
  }),
  CreateMicrovmImage: op({
    method: 'POST',
    path: `${V}/microvm-images`,
    successStatus: 201,
    input: {
      ...imageConfigMembers,
      name: required(
        str({ minLength: 1, maxLength: LIMITS.imageNameMaxLength, pattern: '^[a-zA-Z0-9_-]+$' }),
      ),
      tags: optional(TagMap),
      clientToken: optional(ClientToken, { idempotencyToken: true }),
      ...hearthImageExtensions,
    },
    output: {
      imageArn: required(Arn),
      name: required(str()),
      state: required(MicrovmImageState),
      createdAt: required(timestamp()),
      baseImageArn: required(Arn),
      buildRoleArn: required(Arn),
      codeArtifact: required(CodeArtifact),
      imageVersion: required(ImageVersion),
      latestActiveImageVersion: optional(ImageVersion),
      latestFailedImageVersion: optional(ImageVersion),
      ...imageConfigOutput,
      tags: optional(TagMap),
      updatedAt: optional(timestamp()),
    },
    errors: [...WRITE, 'ServiceQuotaExceededException'],
    doc: 'Creates an image and starts building its first version (asynchronously).',
  }),
  CreateMicrovmShellAuthToken: op({
    method: 'POST',
    path: `${V}/microvms/{microvmIdentifier}/shell-auth-token`,
    successStatus: 200,
    input: { microvmIdentifier, expirationInMinutes },
    output: authTokenOutput,
    errors: WRITE,
    doc: 'Mints a token for a shell in the microVM.',
  }),
  DeleteMicrovmImage: op({
    method: 'DELETE',
    path: `${V}/microvm-images/{imageIdentifier}`,
    successStatus: 200,
    input: { imageIdentifier },
    output: { imageIdentifier: required(str()), state: required(MicrovmImageState) },
    errors: WRITE,
    doc: 'Deletes an image and its versions (idempotent).',
  }),
  DeleteMicrovmImageVersion: op({
    method: 'DELETE',
    path: `${V}/microvm-images/{imageIdentifier}/versions/{imageVersion}`,
    successStatus: 200,
    input: { imageIdentifier, imageVersion: imageVersionLabel },
    output: {
      imageIdentifier: required(str()),
      imageVersion: required(ImageVersion),
      state: required(MicrovmImageVersionState),
    },
    errors: WRITE,
    doc: 'Deletes one image version.',
  }),
  GetMicrovm: op({
    method: 'GET',
    path: `${V}/microvms/{microvmIdentifier}`,
    successStatus: 200,
    input: { microvmIdentifier },
    output: microvmOutput,
    errors: READ,
    doc: 'Describes a microVM.',
  }),
  GetMicrovmImage: op({
    method: 'GET',
    path: `${V}/microvm-images/{imageIdentifier}`,
    successStatus: 200,
    input: { imageIdentifier },
    output: {
      imageArn: required(Arn),
      name: required(str()),
      state: required(MicrovmImageState),
      createdAt: required(timestamp()),
      latestActiveImageVersion: optional(ImageVersion),
      latestFailedImageVersion: optional(ImageVersion),
      tags: optional(TagMap),
      updatedAt: optional(timestamp()),
    },
    errors: READ,
    doc: 'Describes an image.',
  }),
  GetMicrovmImageBuild: op({
    method: 'GET',
    path: `${V}/microvm-images/{imageIdentifier}/versions/{imageVersion}/builds/{buildId}`,
    successStatus: 200,
    input: { imageIdentifier, imageVersion: imageVersionLabel, buildId: label(Identifier) },
    output: { ...buildSummaryMembers, snapshotBuild: optional(SnapshotBuild) },
    errors: READ,
    doc: 'Describes one build of an image version.',
  }),
  GetMicrovmImageVersion: op({
    method: 'GET',
    path: `${V}/microvm-images/{imageIdentifier}/versions/{imageVersion}`,
    successStatus: 200,
    input: { imageIdentifier, imageVersion: imageVersionLabel },
    output: imageVersionOutput,
    errors: READ,
    doc: 'Describes one image version.',
  }),
  ListManagedMicrovmImages: op({
    method: 'GET',
    path: `${V}/managed-microvm-images`,
    successStatus: 200,
    input: { maxResults: query(MaxResults, 'maxResults'), nextToken: query(NextToken, 'nextToken') },
    output: { items: required(list(ManagedMicrovmImageSummary)), nextToken: optional(str()) },
    errors: COMMON_ERRORS,
    doc: 'Lists the base images the service provides.',
  }),
  ListManagedMicrovmImageVersions: op({
    method: 'GET',
    path: `${V}/managed-microvm-images/{imageIdentifier}/versions`,
    successStatus: 200,
    input: {
      imageIdentifier,
      maxResults: query(MaxResults, 'maxResults'),
      nextToken: query(NextToken, 'nextToken'),
    },
    output: { items: required(list(ManagedMicrovmImageVersion)), nextToken: optional(str()) },
    errors: READ,
    doc: 'Lists the versions of a base image.',
  }),
  ListMicrovmImageBuilds: op({
    method: 'GET',
    path: `${V}/microvm-images/{imageIdentifier}/versions/{imageVersion}/builds`,
    successStatus: 200,
    input: {
      imageIdentifier,
      imageVersion: imageVersionLabel,
      maxResults: query(MaxResults, 'maxResults'),
      nextToken: query(NextToken, 'nextToken'),
      architecture: query(Architecture, 'architecture'),
      chipset: query(str({ minLength: 1, maxLength: 64 }), 'chipset'),
      chipsetGeneration: query(str({ minLength: 1, maxLength: 64 }), 'chipsetGeneration'),
    },
    output: { items: required(list(MicrovmImageBuildSummary)), nextToken: optional(str()) },
    errors: READ,
    doc: 'Lists the builds of an image version.',
  }),
  ListMicrovmImages: op({
    method: 'GET',
    path: `${V}/microvm-images`,
    successStatus: 200,
    input: {
      maxResults: query(MaxResults, 'maxResults'),
      nextToken: query(NextToken, 'nextToken'),
      nameFilter: query(str({ minLength: 1, maxLength: LIMITS.imageNameMaxLength }), 'nameFilter'),
    },
    output: { items: required(list(MicrovmImageSummary)), nextToken: optional(str()) },
    errors: COMMON_ERRORS,
    doc: 'Lists images.',
  }),
  ListMicrovmImageVersions: op({
    method: 'GET',
    path: `${V}/microvm-images/{imageIdentifier}/versions`,
    successStatus: 200,
    input: {
      imageIdentifier,
      maxResults: query(MaxResults, 'maxResults'),
      nextToken: query(NextToken, 'nextToken'),
    },
    output: { items: required(list(MicrovmImageVersionSummary)), nextToken: optional(str()) },
    errors: READ,
    doc: 'Lists the versions of an image.',
  }),
  ListMicrovms: op({
    method: 'GET',
    path: `${V}/microvms`,
    successStatus: 200,
    input: {
      maxResults: query(MaxResults, 'maxResults'),
      nextToken: query(NextToken, 'nextToken'),
      imageIdentifier: query(Identifier, 'imageIdentifier'),
      imageVersion: query(ImageVersion, 'imageVersion'),
    },
    output: { items: required(list(MicrovmItem)), nextToken: optional(str()) },
    errors: READ,
    doc: 'Lists microVMs, optionally of one image (and version).',
  }),
  ListTags: op({
    method: 'GET',
    path: '/2017-03-31/tags/{Resource}',
    successStatus: 200,
    input: { Resource: label(Arn, { doc: 'ARN of an image (or network connector).' }) },
    output: { Tags: optional(TagMap) },
    errors: TAGGING,
    doc: "Lists a resource's tags.",
  }),
  ResumeMicrovm: op({
    method: 'POST',
    path: `${V}/microvms/{microvmIdentifier}/resume`,
    successStatus: 200,
    input: { microvmIdentifier },
    output: {},
    errors: WRITE,
    doc: 'Resumes a SUSPENDED microVM.',
  }),
  RunMicrovm: op({
    method: 'POST',
    path: `${V}/microvms`,
    successStatus: 200,
    input: {
      imageIdentifier: required(Identifier, { doc: 'Image ARN (or name).' }),
      ingressNetworkConnectors: optional(ConnectorList),
      egressNetworkConnectors: optional(ConnectorList),
      imageVersion: optional(ImageVersion, { doc: 'Default: the latest ACTIVE version.' }),
      executionRoleArn: optional(Arn),
      idlePolicy: optional(IdlePolicy, { doc: 'Absent: never auto-suspend.' }),
      logging: optional(Logging),
      runHookPayload: optional(
        str({
          maxBytes: LIMITS.runHookPayloadMaxBytes,
          maxLength: LIMITS.runHookPayloadMaxBytes,
          sensitive: true,
          doc: 'Body of the /run hook request, at most 4096 bytes of UTF-8.',
        }),
      ),
      maximumDurationInSeconds: optional(
        int({ min: LIMITS.maximumDurationInSeconds[0], max: LIMITS.maximumDurationInSeconds[1] }),
      ),
      clientToken: optional(ClientToken, { idempotencyToken: true }),
    },
    output: microvmOutput,
    errors: [...WRITE, 'InsufficientCapacityException', 'ServiceQuotaExceededException'],
    doc: 'Launches a microVM from an image version snapshot.',
  }),
  SuspendMicrovm: op({
    method: 'POST',
    path: `${V}/microvms/{microvmIdentifier}/suspend`,
    successStatus: 200,
    input: { microvmIdentifier },
    output: {},
    errors: WRITE,
    doc: 'Suspends a RUNNING microVM (memory and disk kept).',
  }),
  TagResource: op({
    method: 'POST',
    path: '/2017-03-31/tags/{Resource}',
    successStatus: 204,
    input: { Resource: label(Arn), Tags: required(TagMap) },
    output: null,
    errors: [...TAGGING, 'ResourceConflictException'],
    doc: 'Adds or replaces tags on a resource.',
  }),
  TerminateMicrovm: op({
    method: 'DELETE',
    path: `${V}/microvms/{microvmIdentifier}`,
    successStatus: 200,
    input: { microvmIdentifier },
    output: {},
    errors: WRITE,
    doc: 'Terminates a microVM (idempotent).',
  }),
  UntagResource: op({
    method: 'DELETE',
    path: '/2017-03-31/tags/{Resource}',
    successStatus: 204,
    input: {
      Resource: label(Arn),
      TagKeys: {
        ...query(
          list(str({ minLength: 1, maxLength: 128 }), { minItems: 1, maxItems: LIMITS.tags }),
          'tagKeys',
        ),
        required: true,
      },
    },
    output: null,
    errors: [...TAGGING, 'ResourceConflictException'],
    doc: 'Removes tags from a resource.',
  }),
  UpdateMicrovmImage: op({
    method: 'PUT',
    path: `${V}/microvm-images/{imageIdentifier}`,
    successStatus: 200,
    input: {
      ...imageConfigMembers,
      imageIdentifier,
      clientToken: optional(ClientToken, { idempotencyToken: true }),
      ...hearthImageExtensions,
    },
    output: {
      imageArn: required(Arn),
      name: required(str()),
      state: required(MicrovmImageState),
      createdAt: required(timestamp()),
      baseImageArn: required(Arn),
      buildRoleArn: required(Arn),
      codeArtifact: required(CodeArtifact),
      updatedAt: required(timestamp()),
      imageVersion: required(ImageVersion),
      latestActiveImageVersion: optional(ImageVersion),
      latestFailedImageVersion: optional(ImageVersion),
      ...imageConfigOutput,
    },
    errors: [...WRITE, 'ServiceQuotaExceededException'],
    doc: 'Builds a new version of an image (PUT semantics: the whole configuration).',
  }),
  UpdateMicrovmImageVersion: op({
    method: 'PATCH',
    path: `${V}/microvm-images/{imageIdentifier}/versions/{imageVersion}`,
    successStatus: 200,
    input: { imageIdentifier, imageVersion: imageVersionLabel, status: required(MicrovmImageVersionStatus) },
    output: imageVersionOutput,
    errors: WRITE,
    doc: 'Marks an image version ACTIVE or INACTIVE.',
  }),
} as const;

const DEFS = { ...AWS_DEFS, ...CONNECTOR_OPERATIONS, ...HOST_OPERATIONS };
type Defs = typeof DEFS;
export type OperationName = keyof Defs;

/** Every operation, by name. */
export const OPERATIONS: { readonly [N in OperationName]: Defs[N] & { readonly name: N } } =
  Object.fromEntries(Object.entries(DEFS).map(([name, def]) => [name, { name, ...def }])) as {
    readonly [N in OperationName]: Defs[N] & { readonly name: N };
  };

/** Every operation: the AWS API's, then Hearth's own (hearthExtension). */
export const OPERATION_NAMES = Object.keys(DEFS) as OperationName[];

/** The operations of the AWS Lambda MicroVMs API (the official SDK has a command for each). */
export const AWS_OPERATION_NAMES = Object.keys(AWS_DEFS) as (keyof typeof AWS_DEFS)[];

/** The validated input a handler receives: labels, query, headers and body merged under member names. */
export type InputOf<N extends OperationName> = StructValue<Defs[N]['input'], 'in'>;

/** What a handler returns; void for operations without an output body. */
export type OutputOf<N extends OperationName> = Defs[N]['output'] extends Members
  ? StructValue<Defs[N]['output'], 'out'>
  : void;

export function getOperation(name: OperationName): OperationDef {
  return OPERATIONS[name] as OperationDef;
}
