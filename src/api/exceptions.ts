/**
 * The exceptions of the AWS Lambda MicroVMs API as they travel on the wire: the name the client
 * reads from the `x-amzn-ErrorType` header, the HTTP status, and whether it is the client's or the
 * server's fault. The first twelve are the ones in the service's model (the SDK has a class for
 * each); the others are the AWS names of failures that happen before an operation is known
 * (authentication, routing, body size), which the SDK surfaces as a generic
 * LambdaMicrovmsServiceException with that `name`.
 */

export interface ExceptionDef {
  readonly status: number;
  readonly fault: 'client' | 'server';
  /** In the service model (the SDK has a class for it). */
  readonly modeled: boolean;
  readonly doc: string;
}

export const EXCEPTIONS = {
  ValidationException: {
    status: 400,
    fault: 'client',
    modeled: true,
    doc: 'The request is malformed or a value is out of range; the message names the member and the limit.',
  },
  InvalidParameterValueException: {
    status: 400,
    fault: 'client',
    modeled: true,
    doc: 'A parameter value is not valid (tagging operations).',
  },
  AccessDeniedException: {
    status: 403,
    fault: 'client',
    modeled: true,
    doc: 'The caller is not allowed to perform the operation.',
  },
  ResourceNotFoundException: {
    status: 404,
    fault: 'client',
    modeled: true,
    doc: 'The named resource does not exist.',
  },
  ConflictException: {
    status: 409,
    fault: 'client',
    modeled: true,
    doc: "The operation conflicts with the resource's current state; nothing changed.",
  },
  ResourceConflictException: {
    status: 409,
    fault: 'client',
    modeled: true,
    doc: 'The resource is being modified by another operation (tagging operations).',
  },
  ServiceQuotaExceededException: {
    status: 402,
    fault: 'client',
    modeled: true,
    doc: 'A quota would be exceeded; nothing was created.',
  },
  ThrottlingException: {
    status: 429,
    fault: 'client',
    modeled: true,
    doc: 'Too many requests; retry after the Retry-After delay.',
  },
  TooManyRequestsException: {
    status: 429,
    fault: 'client',
    modeled: true,
    doc: 'Too many requests (tagging operations).',
  },
  InternalServerException: {
    status: 500,
    fault: 'server',
    modeled: true,
    doc: 'An unexpected server failure; the message carries the request id to look up in the server log.',
  },
  InsufficientCapacityException: {
    status: 500,
    fault: 'server',
    modeled: true,
    doc: 'The host cannot fit another microVM right now; nothing was started.',
  },
  ServiceException: {
    status: 500,
    fault: 'server',
    modeled: true,
    doc: 'An unexpected server failure (tagging operations).',
  },
  MissingAuthenticationTokenException: {
    status: 403,
    fault: 'client',
    modeled: false,
    doc: 'The request is not signed (no Authorization header).',
  },
  IncompleteSignatureException: {
    status: 403,
    fault: 'client',
    modeled: false,
    doc: 'The Authorization header is malformed, uses an unsupported scheme, or the request is presigned.',
  },
  UnrecognizedClientException: {
    status: 403,
    fault: 'client',
    modeled: false,
    doc: 'The access key id is not known to this server.',
  },
  InvalidSignatureException: {
    status: 403,
    fault: 'client',
    modeled: false,
    doc: 'The signature does not match, the credential scope is wrong, or the request time is too far off.',
  },
  UnknownOperationException: {
    status: 404,
    fault: 'client',
    modeled: false,
    doc: 'No operation has this path.',
  },
  MethodNotAllowedException: {
    status: 405,
    fault: 'client',
    modeled: false,
    doc: 'The path exists but not with this HTTP method (see the Allow header).',
  },
  RequestTooLargeException: {
    status: 413,
    fault: 'client',
    modeled: false,
    doc: "The request body is larger than the server's limit.",
  },
  NotImplementedException: {
    status: 501,
    fault: 'server',
    modeled: false,
    doc: 'This server does not implement the operation.',
  },
} as const satisfies Record<string, ExceptionDef>;

export type ExceptionName = keyof typeof EXCEPTIONS;

/** Failures any request can meet before its operation runs (they appear in every operation's responses). */
export const REQUEST_LEVEL_EXCEPTIONS = [
  'MissingAuthenticationTokenException',
  'IncompleteSignatureException',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'RequestTooLargeException',
] as const satisfies readonly ExceptionName[];

export function isExceptionName(name: string): name is ExceptionName {
  return Object.prototype.hasOwnProperty.call(EXCEPTIONS, name);
}
