/**
 * The HTTP server of the AWS-compatible API: a node:http request listener that authenticates
 * (SigV4), routes by method and path template, parses and validates the input, calls the
 * operation's handler, and serializes its output or error the way the AWS SDK reads them.
 *
 *   request -> SigV4 checks (no crypto) -> body (<= maxBodyBytes, else 413) -> signature
 *           -> route (404/405) -> JSON (400) -> validation (400) -> handler -> response
 *
 * GET /openapi.json and GET /healthz are public; everything else needs a valid signature first.
 * Handlers receive one input object (labels, query, headers and body merged under member names)
 * and a RequestContext; they return the output (timestamps as Date or ISO strings) or throw. Thrown
 * errors go through toApiError: ApiErrors as they are, Hearth errors by code, anything else as a
 * generic InternalServerException (logged with its stack, never sent).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../util/log.js';
import {
  ApiError,
  InternalError,
  MalformedBodyError,
  NotImplementedError,
  PayloadTooLargeError,
  toApiError,
  type ErrorCodeMap,
} from './errors.js';
import { buildOpenApiDocument } from './openapi.js';
import {
  OPERATION_NAMES,
  getOperation,
  type InputOf,
  type OperationName,
  type OutputOf,
} from './operations.js';
import { Router } from './router.js';
import { serializeOutput } from './serialize.js';
import { SigV4Verifier, parseQuery, splitTarget, type LookupSecret } from './sigv4.js';
import { validateInput } from './validation.js';

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_REGION = 'local';

/** What a handler knows about the request besides its input. */
export interface RequestContext {
  /** Also sent as x-amzn-RequestId and written in every log line about the request. */
  readonly requestId: string;
  /** The authenticated API key. */
  readonly accessKeyId: string;
  readonly operation: OperationName;
  readonly receivedAt: Date;
  /** Aborted when the client goes away before the response is sent. */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

export type OperationHandler<N extends OperationName> = (
  input: InputOf<N>,
  ctx: RequestContext,
) => Promise<OutputOf<N>> | OutputOf<N>;

/** One handler per operation. */
export type OperationHandlers = { [N in OperationName]: OperationHandler<N> };

/** Reported after every response (for tests and metrics); `body` is the exact body sent. */
export interface ResponseEvent {
  requestId: string;
  method: string;
  path: string;
  operation: OperationName | undefined;
  status: number;
  headers: Readonly<Record<string, string>>;
  body: string;
  durationMs: number;
}

export interface ApiServerOptions {
  /** Operations without a handler answer 501 NotImplementedException. */
  handlers: Partial<OperationHandlers>;
  /** The secret of an access key id (undefined: unknown key). */
  lookupSecret: LookupSecret;
  /** The region requests must be signed for; default `local`. */
  region?: string;
  /** Larger bodies get 413 RequestTooLargeException; default 1 MiB. */
  maxBodyBytes?: number;
  logger?: Logger;
  /** Hearth error codes -> exceptions, on top of DEFAULT_ERROR_CODES. */
  errorCodes?: ErrorCodeMap;
  /**
   * Fail the request (500, logged) when a handler's output does not match the output shape
   * (unknown or missing members, wrong types); by default such problems are logged and unknown
   * members dropped. Tests should turn it on.
   */
  strictOutput?: boolean;
  /** Clock for the SigV4 time check and the Date header, milliseconds; default Date.now. */
  now?: () => number;
  /** GET /healthz answers 503 when this throws; default: always healthy. */
  healthCheck?: () => Promise<void> | void;
  onResponse?: (event: ResponseEvent) => void;
}

/** Builds the request listener. Pass it to http.createServer, or use listenApiServer. */
export function createApiServer(options: ApiServerOptions): RequestListener {
  const region = options.region ?? DEFAULT_REGION;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const log = options.logger ?? createLogger('api');
  const now = options.now ?? Date.now;
  const verifier = new SigV4Verifier({
    region,
    lookupSecret: options.lookupSecret,
    now,
  });
  const router = new Router(OPERATION_NAMES.map(getOperation));
  let openApiJson: string | undefined;

  return (req, res) => {
    const started = Date.now();
    const requestId = randomUUID();
    const { path, query } = splitTarget(req.url ?? '/');
    let operation: OperationName | undefined;

    const send = (status: number, headers: Record<string, string>, body: string) => {
      // The Date header is the clock SigV4 checks against: the AWS SDK corrects its own skew from it.
      const all: Record<string, string> = {
        date: new Date(now()).toUTCString(),
        'x-amzn-RequestId': requestId,
        ...headers,
      };
      if (body !== '') {
        all['content-type'] = 'application/json';
        all['content-length'] = String(Buffer.byteLength(body));
      }
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(status, all);
        res.end(body);
      }
      options.onResponse?.({
        requestId,
        method: req.method ?? '',
        path,
        operation,
        status,
        headers: all,
        body,
        durationMs: Date.now() - started,
      });
    };

    const sendError = (err: ApiError) => {
      const headers: Record<string, string> = { 'x-amzn-ErrorType': err.exception, ...err.headers };
      if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(err.retryAfterSeconds);
      const level = err.status >= 500 ? 'error' : 'info';
      log[level]('request failed', {
        requestId,
        method: req.method,
        path: path.slice(0, 200),
        operation,
        status: err.status,
        exception: err.exception,
        code: err.code,
        message: err.message,
      });
      send(err.status, headers, JSON.stringify(err.toBody()));
    };

    const handle = async () => {
      if (req.method === 'GET' && path === '/healthz') {
        try {
          await options.healthCheck?.();
          send(200, {}, JSON.stringify({ status: 'ok' }));
        } catch (e) {
          send(
            503,
            {},
            JSON.stringify({ status: 'unavailable', message: e instanceof Error ? e.message : String(e) }),
          );
        }
        return;
      }
      if (req.method === 'GET' && path === '/openapi.json') {
        openApiJson ??= JSON.stringify(buildOpenApiDocument());
        send(200, {}, openApiJson);
        return;
      }

      const head = {
        method: req.method ?? '',
        url: req.url ?? '/',
        headers: req.headers,
        headersDistinct: req.headersDistinct,
      };
      const parsed = verifier.parse(head);
      const body = await readBody(req, maxBodyBytes);
      const accessKeyId = await verifier.verify(parsed, body);

      const match = router.match(req.method ?? '', path);
      const op = match.operation;
      operation = op.name as OperationName;
      const queryMap = new Map<string, string[]>();
      for (const [k, v] of parseQuery(query)) queryMap.set(k, [...(queryMap.get(k) ?? []), v]);
      const input = validateInput(op, {
        labels: match.labels,
        query: queryMap,
        headers: req.headers,
        body: parseJsonBody(body),
      });

      const handler = (options.handlers as Record<string, OperationHandler<OperationName> | undefined>)[
        op.name
      ];
      if (handler === undefined) throw new NotImplementedError(op.name);
      const aborter = new AbortController();
      res.once('close', () => {
        if (!res.writableFinished) aborter.abort();
      });
      const ctx: RequestContext = {
        requestId,
        accessKeyId,
        operation,
        receivedAt: new Date(started),
        signal: aborter.signal,
        log: log.child(op.name),
      };
      const output: unknown = await handler(input as never, ctx);

      if (op.output === null) {
        send(op.successStatus, {}, '');
        return;
      }
      const { value, problems } = serializeOutput(op.output, output);
      if (problems.length > 0) {
        if (options.strictOutput) {
          log.error('handler output does not match the output shape', { requestId, operation, problems });
          throw new InternalError(requestId);
        }
        log.warn('handler output does not match the output shape', { requestId, operation, problems });
      }
      send(op.successStatus, {}, JSON.stringify(value));
      log.debug('request done', { requestId, operation, status: op.successStatus, ms: Date.now() - started });
    };

    handle().catch((err: unknown) => {
      if (err instanceof ClientGoneError) {
        log.debug('client went away', { requestId, path: path.slice(0, 200) });
        return;
      }
      const apiError = toApiError(err, {
        logger: log,
        requestId,
        ...(operation === undefined ? {} : { operation }),
        ...(options.errorCodes === undefined ? {} : { codes: options.errorCodes }),
      });
      if (apiError instanceof PayloadTooLargeError) {
        // Let the rest of the body drain (bounded by the server's requestTimeout) so the client reads
        // the 413 instead of a reset connection.
        req.resume();
      }
      sendError(apiError);
    });
  };
}

class ClientGoneError extends Error {}

/** Reads the whole body; PayloadTooLargeError as soon as it exceeds `max` bytes (or declares more). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) return Promise.reject(new PayloadTooLargeError(max));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: Error | undefined) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) finish(new PayloadTooLargeError(max));
      else chunks.push(chunk);
    };
    const onEnd = () => finish(undefined);
    const onError = () => finish(new ClientGoneError());
    const onClose = () => finish(req.complete ? undefined : new ClientGoneError());
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function parseJsonBody(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  const text = body.toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new MalformedBodyError(e instanceof Error ? e.message.slice(0, 200) : 'not JSON');
  }
}

export interface ListeningApiServer {
  readonly server: Server;
  readonly port: number;
  /** http://host:port */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts an HTTP server for `listener` on host:port (port 0: any free port). Requests must arrive
 * whole within `requestTimeoutMs` (default 60 s). close() stops accepting, ends idle keep-alive
 * connections and resolves once the server is closed.
 */
export async function listenApiServer(
  listener: RequestListener,
  options: { host?: string; port?: number; requestTimeoutMs?: number } = {},
): Promise<ListeningApiServer> {
  const host = options.host ?? '127.0.0.1';
  const server = createServer({ requestTimeout: options.requestTimeoutMs ?? 60_000 }, listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    port,
    url: `http://${urlHost}:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
