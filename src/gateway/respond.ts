/**
 * Writing the gateway's own answers: JSON errors `{ code, message }` over HTTP/1.1 (response object
 * or raw socket, for failed WebSocket upgrades) and HTTP/2, trailers-only gRPC errors for gRPC
 * requests, and the cookie redirect for browsers.
 */
import type { ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import type { Admitted } from './admission.js';
import type { GatewayError } from './errors.js';
import { COOKIE_AUTH, COOKIE_MICROVM, type Target } from './routing.js';

function body(err: GatewayError): string {
  return JSON.stringify(err.toJSON());
}

/** Answers `err` on an HTTP/1.1 response; if the head was already sent, cuts the response instead. */
export function sendErrorH1(res: ServerResponse, err: GatewayError, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const b = body(err);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(b),
    'cache-control': 'no-store',
  };
  if (err.retryAfterS !== undefined) headers['retry-after'] = err.retryAfterS;
  if (close) headers.connection = 'close';
  res.writeHead(err.httpStatus, headers);
  res.end(b);
}

/** Answers `err` on a raw socket (before a WebSocket upgrade completed) and closes it. */
export function sendErrorRaw(socket: Duplex, err: GatewayError): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const b = body(err);
  const retry = err.retryAfterS !== undefined ? `Retry-After: ${err.retryAfterS}\r\n` : '';
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${STATUS_CODES[err.httpStatus] ?? ''}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\nCache-Control: no-store\r\n` +
      `${retry}Connection: close\r\n\r\n${b}`,
  );
}

/** gRPC status for a gateway error (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
export function grpcStatusFor(err: GatewayError): number {
  switch (err.httpStatus) {
    case 400:
      return 3; // INVALID_ARGUMENT
    case 403:
      // A valid token that does not open this (port, microVM): PERMISSION_DENIED; else UNAUTHENTICATED.
      return err.code === 'TOKEN_PORT_NOT_ALLOWED' || err.code.startsWith('INGRESS_') ? 7 : 16;
    case 404:
      return 5; // NOT_FOUND
    case 409:
    case 410:
      return 9; // FAILED_PRECONDITION
    case 429:
      return 8; // RESOURCE_EXHAUSTED
    case 500:
      return 13; // INTERNAL
    case 504:
      return 4; // DEADLINE_EXCEEDED
    default:
      return 14; // UNAVAILABLE
  }
}

/** Answers `err` on an HTTP/2 stream: JSON, or a trailers-only gRPC status for gRPC requests. */
export function sendErrorH2(stream: ServerHttp2Stream, err: GatewayError, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    if (grpc && !stream.sentTrailers) {
      try {
        stream.sendTrailers({ 'grpc-status': String(grpcStatusFor(err)), 'grpc-message': grpcMessage(err) });
        return;
      } catch {
        // fall through to a reset
      }
    }
    stream.close(0x2 /* INTERNAL_ERROR */);
    return;
  }
  if (grpc) {
    stream.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(grpcStatusFor(err)),
        'grpc-message': grpcMessage(err),
        'hearth-error-code': err.code,
      },
      { endStream: true },
    );
    return;
  }
  const b = body(err);
  const headers: Record<string, string | number> = {
    ':status': err.httpStatus,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(b),
    'cache-control': 'no-store',
  };
  if (err.retryAfterS !== undefined) headers['retry-after'] = err.retryAfterS;
  stream.respond(headers);
  stream.end(b);
}

/** grpc-message: UTF-8, percent-encoding '%' and bytes outside printable ASCII (gRPC over HTTP/2 spec). */
export function grpcMessage(err: GatewayError): string {
  let out = '';
  for (const b of Buffer.from(`${err.code}: ${err.toJSON().message}`, 'utf8')) {
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** Set-Cookie value for a Hearth cookie, host-only (scoped to the microVM's endpoint). */
export function hearthCookie(name: string, value: string, o: { secure: boolean; maxAgeS?: number }): string {
  return (
    `${name}=${value}; Path=/; HttpOnly; SameSite=Strict` +
    (o.secure ? '; Secure' : '') +
    (o.maxAgeS !== undefined ? `; Max-Age=${Math.max(0, Math.floor(o.maxAgeS))}` : '')
  );
}

/**
 * Headers of the 303 that answers a browser's ?hearth-auth / ?hearth-microvm visit: the cookies,
 * and a redirect to the same URL without those parameters (HTTP/1.1 and HTTP/2 alike).
 */
export function visitRedirectHeaders(
  target: Target,
  admitted: Admitted,
  secure: boolean,
): { location: string; 'set-cookie': string[]; 'cache-control': string; 'referrer-policy': string } {
  const cookies: string[] = [];
  const q = target.fromQuery!;
  if (q.auth !== undefined)
    cookies.push(
      hearthCookie(COOKIE_AUTH, q.auth, { secure, maxAgeS: admitted.tokenExpiresAtS - Date.now() / 1000 }),
    );
  if (q.microvm !== undefined) cookies.push(hearthCookie(COOKIE_MICROVM, q.microvm, { secure }));
  return {
    location: target.path,
    'set-cookie': cookies,
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
  };
}
