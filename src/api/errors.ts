/**
 * Failures the API answers with. An ApiError carries the AWS exception name (sent as the
 * `x-amzn-ErrorType` header, which the AWS SDK turns into its exception class), the HTTP status, and
 * Hearth's stable `code` and `hint` (sent in the JSON body beside `message`; the SDK copies them onto
 * the exception it throws). toApiError maps any other error to an ApiError by its Hearth `code`.
 */
import { HearthError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { EXCEPTIONS, type ExceptionName } from './exceptions.js';

/** Extra members of some exceptions (ConflictException.resourceId, ServiceQuotaExceededException.quotaCode...). */
export type ErrorFields = Partial<
  Record<'resourceId' | 'resourceType' | 'serviceCode' | 'quotaCode' | 'Type', string>
>;

export interface ApiErrorOptions {
  /** Hearth's code; default: the code of `cause` if it is a HearthError, else API_ERROR. */
  code?: string;
  hint?: string;
  cause?: unknown;
  /** Sent as Retry-After (ThrottlingException, InternalServerException read it). */
  retryAfterSeconds?: number;
  fields?: ErrorFields;
  /** Extra response headers (e.g. Allow). */
  headers?: Readonly<Record<string, string>>;
}

/** The JSON body of every error response. */
export interface ErrorBody extends ErrorFields {
  message: string;
  code: string;
  hint?: string;
}

/** An error as the API sends it. Handlers may throw these directly. */
export class ApiError extends HearthError {
  readonly code: string;
  readonly status: number;
  readonly retryAfterSeconds: number | undefined;
  readonly fields: ErrorFields;
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    readonly exception: ExceptionName,
    message: string,
    options: ApiErrorOptions = {},
  ) {
    super(message, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      ...(options.hint === undefined ? {} : { hint: options.hint }),
    });
    this.status = EXCEPTIONS[exception].status;
    this.code = options.code ?? (options.cause instanceof HearthError ? options.cause.code : 'API_ERROR');
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.fields = options.fields ?? {};
    this.headers = options.headers ?? {};
  }

  toBody(): ErrorBody {
    return {
      message: this.message,
      code: this.code,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...this.fields,
    };
  }
}

// ---- request-level failures (before or around the operation) ----

/** Inputs broke the operation's constraints; the message lists each violation AWS-style. */
export class RequestValidationError extends ApiError {
  constructor(readonly violations: readonly string[]) {
    const shown = violations.slice(0, MAX_VIOLATIONS_SHOWN);
    const more = violations.length - shown.length;
    super(
      'ValidationException',
      `${violations.length} validation error${violations.length === 1 ? '' : 's'} detected: ` +
        shown.join('; ') +
        (more > 0 ? `; and ${more} more` : ''),
      { code: 'VALIDATION' },
    );
  }
}

const MAX_VIOLATIONS_SHOWN = 10;

/** The body is not JSON, or not a JSON object. */
export class MalformedBodyError extends ApiError {
  constructor(detail: string) {
    super('ValidationException', `The request body is not a valid JSON object: ${detail}`, {
      code: 'API_MALFORMED_BODY',
      hint: 'send a JSON object with content-type application/json',
    });
  }
}

/** The path or query string cannot be decoded (bad percent-encoding). */
export class MalformedUrlError extends ApiError {
  constructor(detail: string) {
    super('ValidationException', `The request URL is malformed: ${detail}`, { code: 'API_MALFORMED_URL' });
  }
}

/** The body is larger than the server accepts. */
export class PayloadTooLargeError extends ApiError {
  constructor(limitBytes: number) {
    super('RequestTooLargeException', `The request body is larger than ${limitBytes} bytes`, {
      code: 'API_PAYLOAD_TOO_LARGE',
      hint: 'send a smaller request (code artifacts travel by URI, not in the request)',
    });
  }
}

/** No operation has this path. */
export class UnknownOperationError extends ApiError {
  constructor(method: string, path: string) {
    super('UnknownOperationException', `No operation matches ${method} ${path.slice(0, 200)}`, {
      code: 'API_UNKNOWN_OPERATION',
      hint: 'see GET /openapi.json for the operations this server implements',
    });
  }
}

/** The path is an operation's, but not with this method. */
export class MethodNotAllowedError extends ApiError {
  constructor(method: string, allowed: readonly string[]) {
    super(
      'MethodNotAllowedException',
      `This path does not accept ${method}; it accepts ${allowed.join(', ')}`,
      {
        code: 'API_METHOD_NOT_ALLOWED',
        headers: { allow: allowed.join(', ') },
      },
    );
  }
}

/** The operation exists in the API but this server has no handler for it. */
export class NotImplementedError extends ApiError {
  constructor(operation: string) {
    super('NotImplementedException', `${operation} is not implemented by this server`, {
      code: 'API_NOT_IMPLEMENTED',
    });
  }
}

// ---- authentication failures (SigV4) ----

/** The request carries no Authorization header. */
export class MissingAuthenticationError extends ApiError {
  constructor(region: string) {
    super('MissingAuthenticationTokenException', 'Missing Authentication Token', {
      code: 'AUTH_MISSING',
      hint: `sign the request with AWS Signature Version 4 (service lambda, region ${region}) using a Hearth API key`,
    });
  }
}

/** The Authorization header cannot be parsed, or is too large to consider. */
export class MalformedAuthorizationError extends ApiError {
  constructor(detail: string) {
    super('IncompleteSignatureException', `The Authorization header is malformed: ${detail}`, {
      code: 'AUTH_MALFORMED',
      hint: "expected 'AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/lambda/aws4_request, SignedHeaders=<h1;h2>, Signature=<hex>'",
    });
  }
}

/** Query-string (presigned URL) authentication, which this server does not accept. */
export class PresignedRequestError extends ApiError {
  constructor() {
    super('IncompleteSignatureException', 'Presigned URLs (query-string authentication) are not supported', {
      code: 'AUTH_PRESIGNED_UNSUPPORTED',
      hint: 'sign the request with an Authorization header instead',
    });
  }
}

/** The payload hash is UNSIGNED-PAYLOAD or a streaming variant, which this server does not accept. */
export class UnsignedPayloadError extends ApiError {
  constructor(value: string) {
    super('IncompleteSignatureException', `x-amz-content-sha256 '${value.slice(0, 64)}' is not accepted`, {
      code: 'AUTH_UNSIGNED_PAYLOAD',
      hint: 'sign the body: x-amz-content-sha256 must be the hex SHA-256 of the body',
    });
  }
}

/** The access key id is not known. */
export class UnknownAccessKeyError extends ApiError {
  constructor(accessKeyId: string) {
    super(
      'UnrecognizedClientException',
      `The security token included in the request is invalid: unknown access key id '${accessKeyId.slice(0, 128)}'`,
      { code: 'AUTH_UNKNOWN_KEY', hint: 'create an API key on the server, or check the client credentials' },
    );
  }
}

/** The signature does not match the request (wrong secret, or the request was changed on the way). */
export class SignatureMismatchError extends ApiError {
  constructor() {
    super(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
      {
        code: 'AUTH_BAD_SIGNATURE',
        hint: 'check the secret key; a proxy that rewrites the path, query or host breaks signatures',
      },
    );
  }
}

/** x-amz-content-sha256 does not match the body received. */
export class PayloadHashMismatchError extends ApiError {
  constructor() {
    super(
      'InvalidSignatureException',
      'The x-amz-content-sha256 header does not match the SHA-256 of the request body',
      { code: 'AUTH_PAYLOAD_HASH_MISMATCH' },
    );
  }
}

/** The credential scope names another date, region or service, or is not `.../aws4_request`. */
export class CredentialScopeError extends ApiError {
  constructor(detail: string, hint?: string) {
    super('InvalidSignatureException', `Credential scope is wrong: ${detail}`, {
      code: 'AUTH_WRONG_SCOPE',
      ...(hint === undefined ? {} : { hint }),
    });
  }
}

/** x-amz-date is too far from the server's clock (either way), or missing/malformed. */
export class RequestTimeError extends ApiError {
  constructor(message: string) {
    super('InvalidSignatureException', message, {
      code: 'AUTH_CLOCK_SKEW',
      hint: "check the client's clock (requests are valid for 15 minutes around the server's time)",
    });
  }
}

// ---- mapping of Hearth errors ----

/** Hearth error code -> exception. Exact codes win over the suffix rules below. */
export type ErrorCodeMap = Readonly<Record<string, ExceptionName>>;

export const DEFAULT_ERROR_CODES: ErrorCodeMap = {
  VALIDATION: 'ValidationException',
  STORE_INVALID_ARGUMENT: 'ValidationException',
  VMM_INVALID_STATE: 'ConflictException',
  IDEMPOTENCY_MISMATCH: 'ConflictException',
  IMAGE_NO_ACTIVE_VERSION: 'ConflictException',
  QUOTA_EXCEEDED: 'ServiceQuotaExceededException',
  INSUFFICIENT_CAPACITY: 'InsufficientCapacityException',
  NET_EXHAUSTED: 'InsufficientCapacityException',
  NET_EGRESS_UNENFORCEABLE: 'ValidationException',
  RATE_LIMITED: 'ThrottlingException',
};

/** The exception for a Hearth code: exact entry, then *_NOT_FOUND and *_CONFLICT; undefined if none. */
export function exceptionForCode(code: string, extra: ErrorCodeMap = {}): ExceptionName | undefined {
  if (Object.prototype.hasOwnProperty.call(extra, code)) return extra[code];
  if (Object.prototype.hasOwnProperty.call(DEFAULT_ERROR_CODES, code)) return DEFAULT_ERROR_CODES[code];
  if (code.endsWith('_NOT_FOUND')) return 'ResourceNotFoundException';
  if (code.endsWith('_CONFLICT')) return 'ConflictException';
  return undefined;
}

export interface ToApiErrorOptions {
  /** Extra or overriding code mappings (handlers' own error codes). */
  codes?: ErrorCodeMap;
  /** Where unexpected errors are logged (with their stack). */
  logger?: Logger;
  requestId?: string;
  operation?: string;
}

/**
 * Maps any thrown value to an ApiError. ApiErrors pass through; HearthErrors with a mapped code keep
 * their message, code and hint; anything else becomes an InternalServerException with a generic
 * message naming the request id (the error itself, stack included, goes to the log only).
 */
export function toApiError(err: unknown, options: ToApiErrorOptions = {}): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HearthError) {
    const exception = exceptionForCode(err.code, options.codes);
    if (exception !== undefined) {
      const retryAfter = (err as { retryAfterS?: unknown }).retryAfterS;
      return new ApiError(exception, err.message, {
        code: err.code,
        cause: err,
        ...(err.hint === undefined ? {} : { hint: err.hint }),
        ...(typeof retryAfter === 'number' ? { retryAfterSeconds: retryAfter } : {}),
      });
    }
  }
  options.logger?.error('unexpected error in API request', {
    requestId: options.requestId,
    operation: options.operation,
    code: err instanceof HearthError ? err.code : undefined,
    error: err instanceof Error ? (err.stack ?? err.message) : String(err),
  });
  return new InternalError(options.requestId);
}

/** An unexpected failure; the details are in the server log under the request id. */
export class InternalError extends ApiError {
  constructor(requestId: string | undefined) {
    super(
      'InternalServerException',
      `Internal server error${requestId === undefined ? '' : ` (request id ${requestId})`}`,
      { code: 'INTERNAL_ERROR', hint: 'the server log has the details under this request id' },
    );
  }
}
