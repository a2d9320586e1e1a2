/**
 * Every failure the gateway answers a client with. Each class has a stable `code` (the JSON body's
 * `code`, never reworded once shipped), the HTTP status it maps to, and a message that says what to
 * do. Messages never contain a token.
 */
import { HearthError } from '../errors.js';

export abstract class GatewayError extends HearthError {
  abstract readonly httpStatus: number;
  /** Seconds for a Retry-After header, where retrying later is the answer. */
  readonly retryAfterS: number | undefined = undefined;

  /** The JSON body sent to the client: `{ code, message }`, the message ending with what to do. */
  toJSON(): { code: string; message: string } {
    return { code: this.code, message: this.hint ? `${this.message}; ${this.hint}` : this.message };
  }
}

// ---- 400: the request itself is unusable ----

/** The Host header (or :authority) is missing or is not `<microvmId>.<domain>` and no other form names a VM. */
export class BadHostError extends GatewayError {
  readonly code = 'GATEWAY_BAD_HOST';
  readonly httpStatus = 400;
  constructor(host: string | undefined, domain: string) {
    super(`the host '${(host ?? '').slice(0, 200)}' does not name a microVM`, {
      hint: `send the request to <microvmId>.${domain}, or set the header X-Hearth-Microvm-Id`,
    });
  }
}

/** Nothing in the request names the microVM (host, X-Hearth-Microvm-Id, hearth-microvm query or cookie). */
export class MicrovmIdMissingError extends GatewayError {
  readonly code = 'GATEWAY_MICROVM_ID_MISSING';
  readonly httpStatus = 400;
  constructor(domain: string) {
    super('the request does not say which microVM it is for', {
      hint: `send it to <microvmId>.${domain}, or set the header X-Hearth-Microvm-Id (browsers: ?hearth-microvm=<id> once)`,
    });
  }
}

/** A microVM id that cannot be one (not a lowercase DNS label). */
export class BadMicrovmIdError extends GatewayError {
  readonly code = 'GATEWAY_BAD_MICROVM_ID';
  readonly httpStatus = 400;
  constructor() {
    super('the microVM id is not valid', {
      hint: 'use the microvmId returned by RunMicrovm (lowercase letters, digits, dashes)',
    });
  }
}

/** X-Hearth-Proxy-Port or the subprotocol hearth.port.N is not a port number. */
export class BadPortError extends GatewayError {
  readonly code = 'GATEWAY_BAD_PORT';
  readonly httpStatus = 400;
  constructor(value: string) {
    super(`'${value.slice(0, 20)}' is not a port`, {
      hint: 'X-Hearth-Proxy-Port must be an integer 1-65535',
    });
  }
}

/** The request target of a CONNECT is not `<host>:<port>` with a port 1-65535. */
export class BadConnectTargetError extends GatewayError {
  readonly code = 'GATEWAY_BAD_CONNECT_TARGET';
  readonly httpStatus = 400;
  constructor(target: string, domain: string) {
    super(`the CONNECT target '${target.slice(0, 200)}' is not <host>:<port>`, {
      hint: `send CONNECT <microvmId>.${domain}:<guest port> HTTP/1.1 (port 1-65535)`,
    });
  }
}

/** A request the gateway does not forward (e.g. a CONNECT with a body, an Upgrade other than websocket). */
export class UnsupportedRequestError extends GatewayError {
  readonly code = 'GATEWAY_UNSUPPORTED_REQUEST';
  readonly httpStatus = 400;
  constructor(what: string, hint?: string) {
    super(`${what} is not supported by the gateway`, hint === undefined ? undefined : { hint });
  }
}

// ---- 403: authentication ----

const TOKEN_HINT =
  'create a token with CreateMicrovmAuthToken and send it in X-Hearth-Proxy-Auth (WebSocket: subprotocol hearth.authentication.<token>)';

/** Base of every token failure (403). `code` says which check failed. */
export abstract class TokenError extends GatewayError {
  readonly httpStatus = 403;
}

export class TokenMissingError extends TokenError {
  readonly code = 'TOKEN_MISSING';
  constructor() {
    super('no endpoint token in the request', { hint: TOKEN_HINT });
  }
}

export class TokenMalformedError extends TokenError {
  readonly code = 'TOKEN_MALFORMED';
  constructor() {
    super('the endpoint token is not a well-formed token', {
      hint: `check it was copied whole; ${TOKEN_HINT}`,
    });
  }
}

export class TokenTooLongError extends TokenError {
  readonly code = 'TOKEN_TOO_LONG';
  constructor(maxChars: number) {
    super(`the endpoint token is longer than ${maxChars} characters`, { hint: TOKEN_HINT });
  }
}

export class TokenExpiredError extends TokenError {
  readonly code = 'TOKEN_EXPIRED';
  constructor() {
    super('the endpoint token has expired', {
      hint: 'create a new one with CreateMicrovmAuthToken (1-60 minutes)',
    });
  }
}

export class TokenNotYetValidError extends TokenError {
  readonly code = 'TOKEN_NOT_YET_VALID';
  constructor() {
    super('the endpoint token is not valid yet (its nbf is in the future)', {
      hint: "check this host's clock and the gateway's",
    });
  }
}

export class TokenWrongMicrovmError extends TokenError {
  readonly code = 'TOKEN_WRONG_MICROVM';
  constructor() {
    super('the endpoint token was created for another microVM', {
      hint: 'create a token for this microVM with CreateMicrovmAuthToken',
    });
  }
}

export class PortNotAllowedError extends TokenError {
  readonly code = 'TOKEN_PORT_NOT_ALLOWED';
  constructor(port: number) {
    super(`the endpoint token does not allow port ${port}`, {
      hint: 'create a token whose allowedPorts include it, or select another port with X-Hearth-Proxy-Port',
    });
  }
}

export class TokenBadSignatureError extends TokenError {
  readonly code = 'TOKEN_BAD_SIGNATURE';
  constructor() {
    super('the endpoint token signature does not verify (tampered, or signed by another Hearth)', {
      hint: TOKEN_HINT,
    });
  }
}

export class TokenAlgorithmNotAllowedError extends TokenError {
  readonly code = 'TOKEN_ALGORITHM_NOT_ALLOWED';
  constructor() {
    super('the endpoint token uses an algorithm or type the gateway does not accept', { hint: TOKEN_HINT });
  }
}

/** Signed by us but minted before the microVM's token generation was bumped (terminated/recreated). */
export class TokenStaleError extends TokenError {
  readonly code = 'TOKEN_STALE_GENERATION';
  constructor() {
    super('the endpoint token was revoked (the microVM was terminated or recreated since)', {
      hint: 'create a new token with CreateMicrovmAuthToken',
    });
  }
}

/** Signed, but the claims are not what the gateway issues (issuer, audience, missing claims). */
export class TokenInvalidClaimsError extends TokenError {
  readonly code = 'TOKEN_INVALID_CLAIMS';
  constructor(detail: string) {
    super(`the endpoint token is not valid for this gateway (${detail})`, { hint: TOKEN_HINT });
  }
}

// ---- 403: the microVM's ingress connector ----

/** The microVM runs with NO_INGRESS: the gateway forwards nothing to it (and does not resume it). */
export class IngressDisabledError extends GatewayError {
  readonly code = 'INGRESS_DISABLED';
  readonly httpStatus = 403;
  constructor(id: string) {
    super(`microVM ${id} accepts no inbound connections (NO_INGRESS)`, {
      hint: 'run a microVM with the HTTP_INGRESS or ALL_INGRESS connector (connectors are fixed at RunMicrovm)',
    });
  }
}

/** A CONNECT tunnel to a microVM that runs with HTTP_INGRESS. */
export class IngressProtocolNotAllowedError extends GatewayError {
  readonly code = 'INGRESS_PROTOCOL_NOT_ALLOWED';
  readonly httpStatus = 403;
  constructor(id: string) {
    super(`microVM ${id} accepts HTTP only (HTTP_INGRESS), not raw TCP tunnels (CONNECT)`, {
      hint: 'send HTTP, WebSocket or gRPC requests, or run the microVM with ALL_INGRESS for raw TCP',
    });
  }
}

// ---- 404 / 409 / 410: the microVM ----

export class MicrovmNotFoundError extends GatewayError {
  readonly code = 'MICROVM_NOT_FOUND';
  readonly httpStatus = 404;
  constructor(id: string) {
    super(`microVM ${id} not found`, { hint: 'check the id (ListMicrovms)' });
  }
}

/** SUSPENDED and its idle policy does not resume on traffic. */
export class MicrovmSuspendedError extends GatewayError {
  readonly code = 'MICROVM_SUSPENDED';
  readonly httpStatus = 409;
  constructor(id: string) {
    super(`microVM ${id} is suspended and auto-resume is off`, {
      hint: 'resume it with ResumeMicrovm, then retry',
    });
  }
}

export class MicrovmTerminatingError extends GatewayError {
  readonly code = 'MICROVM_TERMINATING';
  readonly httpStatus = 409;
  constructor(id: string) {
    super(`microVM ${id} is terminating`, { hint: 'run a new microVM (RunMicrovm)' });
  }
}

export class MicrovmTerminatedError extends GatewayError {
  readonly code = 'MICROVM_TERMINATED';
  readonly httpStatus = 410;
  constructor(id: string) {
    super(`microVM ${id} is terminated`, { hint: 'run a new microVM (RunMicrovm)' });
  }
}

// ---- 429 ----

export class RateLimitedError extends GatewayError {
  readonly code = 'RATE_LIMITED';
  readonly httpStatus = 429;
  override readonly retryAfterS = 1;
  constructor(id: string, requestsPerSecond: number) {
    super(`too many requests for microVM ${id} (limit ${requestsPerSecond}/s)`, {
      hint: 'slow down and retry after the Retry-After delay',
    });
  }
}

// ---- 502 / 503 / 504: getting to the app ----

/** ensureRunning rejected: the VM could not be resumed or started. */
export class ResumeFailedError extends GatewayError {
  readonly code = 'MICROVM_RESUME_FAILED';
  readonly httpStatus = 502;
  constructor(id: string, cause: unknown) {
    super(`microVM ${id} could not be resumed`, {
      cause,
      hint: 'see its state and stateReason (GetMicrovm); retry, or run a new microVM',
    });
  }
}

/** A SUSPENDED/SUSPENDING VM did not reach RUNNING within resumeTimeoutMs. */
export class ResumeTimeoutError extends GatewayError {
  readonly code = 'MICROVM_RESUME_TIMEOUT';
  readonly httpStatus = 503;
  override readonly retryAfterS = 5;
  constructor(id: string, timeoutMs: number) {
    super(`microVM ${id} did not resume within ${timeoutMs} ms`, { hint: 'retry in a few seconds' });
  }
}

/** A PENDING VM (still launching) did not reach RUNNING within resumeTimeoutMs. */
export class MicrovmNotReadyError extends GatewayError {
  readonly code = 'MICROVM_NOT_READY';
  readonly httpStatus = 503;
  override readonly retryAfterS = 5;
  constructor(id: string, timeoutMs: number) {
    super(`microVM ${id} is still starting (PENDING after ${timeoutMs} ms)`, {
      hint: 'retry in a few seconds; GetMicrovm shows when it is RUNNING',
    });
  }
}

/** The connection was closed by the gateway because the microVM is being suspended or stopped. */
export class ConnectionsClosedError extends GatewayError {
  readonly code = 'MICROVM_CONNECTIONS_CLOSED';
  readonly httpStatus = 503;
  override readonly retryAfterS = 1;
  constructor(id: string) {
    super(`microVM ${id} is being suspended or stopped; its connections were closed`, {
      hint: 'retry: the next request resumes it if auto-resume is on',
    });
  }
}

/** Nothing listens on the port in the VM (connection refused), or the VM's address is unreachable. */
export class UpstreamUnreachableError extends GatewayError {
  readonly code = 'UPSTREAM_UNREACHABLE';
  readonly httpStatus = 502;
  constructor(id: string, port: number, cause: unknown) {
    super(`nothing answers on port ${port} of microVM ${id}`, {
      cause,
      hint:
        'check that the app listens on 0.0.0.0:' +
        String(port) +
        ', or select its port with X-Hearth-Proxy-Port',
    });
  }
}

/** The app closed or reset the connection before a complete response head. */
export class UpstreamResetError extends GatewayError {
  readonly code = 'UPSTREAM_RESET';
  readonly httpStatus = 502;
  constructor(id: string, port: number, cause: unknown) {
    super(`the app on port ${port} of microVM ${id} closed the connection without a response`, {
      cause,
      hint: "check the app's logs",
    });
  }
}

/** The app answered something that is not HTTP the gateway can forward. */
export class UpstreamProtocolError extends GatewayError {
  readonly code = 'UPSTREAM_PROTOCOL_ERROR';
  readonly httpStatus = 502;
  constructor(id: string, port: number, cause: unknown) {
    super(`the app on port ${port} of microVM ${id} answered with invalid HTTP`, {
      cause,
      hint: 'the gateway speaks HTTP/1.1 to apps (h2c for gRPC or with X-Hearth-Proxy-Force-H2: true)',
    });
  }
}

export class UpstreamTimeoutError extends GatewayError {
  readonly code = 'UPSTREAM_CONNECT_TIMEOUT';
  readonly httpStatus = 504;
  constructor(id: string, port: number, timeoutMs: number) {
    super(`connecting to port ${port} of microVM ${id} took longer than ${timeoutMs} ms`, {
      hint: "retry; check the app's logs if it persists",
    });
  }
}

export class GatewayInternalError extends GatewayError {
  readonly code = 'GATEWAY_INTERNAL_ERROR';
  readonly httpStatus = 500;
  constructor(cause: unknown) {
    super('the gateway failed to handle the request', { cause, hint: 'retry; report it if it persists' });
  }
}

// ---- not sent to clients ----

/** The token key file exists but others can read it; the gateway refuses to use it. */
export class TokenKeyInsecureError extends HearthError {
  readonly code = 'TOKEN_KEY_INSECURE';
  constructor(path: string, mode: number) {
    super(`the token signing key ${path} has mode ${(mode & 0o777).toString(8)}`, {
      hint: `chmod 600 ${path} (or delete it to make a new key: every token issued so far stops working)`,
    });
  }
}

/** mint() arguments out of range. */
export class TokenRequestInvalidError extends HearthError {
  readonly code = 'TOKEN_REQUEST_INVALID';
  constructor(message: string) {
    super(message);
  }
}

/** The TLS certificate could not be generated or read. */
export class GatewayTlsError extends HearthError {
  readonly code = 'GATEWAY_TLS_SETUP_FAILED';
  constructor(message: string, cause?: unknown) {
    super(message, { cause, hint: 'check that openssl is installed and the TLS directory is writable' });
  }
}

/** Maps anything thrown while handling a request to the error answered to the client. */
export function asGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayInternalError(err);
}
