/**
 * The building blocks shared by the operation tables (operations.ts, the AWS API; and
 * connector-operations.ts, Hearth's network connectors): limits, shapes used by both, the operation
 * definition and the usual error sets.
 */
import { MAX_ENV_VARS, MIN_DISK_MIB } from '../core/image-spec.js';
import type { ExceptionName } from './exceptions.js';
import { int, map, required, str, struct, type Members } from './shapes.js';

// ---- limits (the reference's, unless marked Hearth) ----

export const LIMITS = {
  imageNameMaxLength: 64,
  runHookPayloadMaxBytes: 4096,
  maximumDurationInSeconds: [1, 28_800],
  expirationInMinutes: [1, 60],
  maxResults: [1, 1000],
  clientTokenMaxLength: 128,
  maxIdleDurationSeconds: [1, 28_800],
  suspendedDurationSeconds: [0, 28_800],
  port: [1, 65_535],
  networkConnectors: 10,
  environmentVariables: MAX_ENV_VARS,
  tags: 50,
  /** Hearth: diskSizeInMiB range (the service also caps it by memory size). */
  diskSizeInMiB: [MIN_DISK_MIB, 32_768],
  /** Hearth: build arguments per image version. */
  buildArgs: 100,
  /** Hearth: port specifications per auth token. */
  allowedPorts: 100,
  /** Hearth: identifiers and ARNs. */
  identifierMaxLength: 2048,
} as const;

// ---- shared shapes ----

export const Identifier = str({ minLength: 1, maxLength: LIMITS.identifierMaxLength });
export const Arn = str({ minLength: 1, maxLength: LIMITS.identifierMaxLength });
export const NextToken = str({ minLength: 1 });
export const MaxResults = int({ min: LIMITS.maxResults[0], max: LIMITS.maxResults[1] });
export const ClientToken = str({ minLength: 1, maxLength: LIMITS.clientTokenMaxLength });
export const Description = str({ maxLength: 256 });
export const TagMap = map(str({ maxLength: 256 }), {
  key: str({ minLength: 1, maxLength: 128, pattern: '^[\\p{L}\\p{N}\\s_.:/=+\\-@]+$' }),
  maxEntries: LIMITS.tags,
});

export const PortRange = struct(
  'PortRange',
  {
    startPort: required(int({ min: LIMITS.port[0], max: LIMITS.port[1] })),
    endPort: required(int({ min: LIMITS.port[0], max: LIMITS.port[1] })),
  },
  {
    doc: 'A range of ports; startPort must be less than or equal to endPort.',
    check: (v) =>
      (v.startPort as number) > (v.endPort as number)
        ? 'startPort must be less than or equal to endPort'
        : undefined,
  },
);

// ---- operations ----

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface OperationDef<I extends Members = Members, O extends Members | null = Members | null> {
  readonly name: string;
  readonly method: HttpMethod;
  /** Path template; `{name}` is a label (one path segment). */
  readonly path: string;
  readonly successStatus: 200 | 201 | 204;
  readonly input: I;
  /** null: the operation answers with no body (Smithy's Unit output). */
  readonly output: O;
  readonly errors: readonly ExceptionName[];
  readonly doc: string;
  /** Hearth's own operation, under /hearth/v1/ (the AWS SDK has no command for it). */
  readonly hearthExtension?: boolean;
}

export function op<const I extends Members, const O extends Members | null>(
  def: Omit<OperationDef<I, O>, 'name'>,
): Omit<OperationDef<I, O>, 'name'> {
  return def;
}

export const COMMON_ERRORS = [
  'AccessDeniedException',
  'InternalServerException',
  'ThrottlingException',
  'ValidationException',
] as const satisfies readonly ExceptionName[];
export const READ = [...COMMON_ERRORS, 'ResourceNotFoundException'] as const;
export const WRITE = [...READ, 'ConflictException'] as const;
