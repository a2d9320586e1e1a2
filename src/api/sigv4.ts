/**
 * Verification of AWS Signature Version 4 (AWS4-HMAC-SHA256, Authorization header) as the AWS SDK
 * for JavaScript v3 signs requests for the `lambda` service: the canonical path is the path as
 * sent, normalised (empty, `.` and `..` segments) and URI-encoded once more; the canonical query is
 * the decoded parameters re-encoded and sorted by key, then by `key=value` within a key; the
 * payload hash is x-amz-content-sha256 when present (it must then match the body) or the body's
 * SHA-256. The credential scope must be `<x-amz-date's day>/<server region>/lambda/aws4_request` and
 * x-amz-date within 15 minutes of the server's clock. Presigned (query-string) requests and
 * unsigned payloads are refused.
 *
 * Verification runs in two steps so no crypto and no key lookup happens for requests that fail the
 * cheap checks: `parse` (header sizes, syntax, scope, clock) and `verify` (key lookup, body hash,
 * signature, compared in constant time).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import {
  CredentialScopeError,
  MalformedAuthorizationError,
  MalformedUrlError,
  MissingAuthenticationError,
  PayloadHashMismatchError,
  PresignedRequestError,
  RequestTimeError,
  SignatureMismatchError,
  UnknownAccessKeyError,
  UnsignedPayloadError,
} from './errors.js';

export const SIGV4_SERVICE = 'lambda';
const ALGORITHM = 'AWS4-HMAC-SHA256';

/** Size caps checked before any crypto or lookup. */
export const SIGV4_LIMITS = {
  authorizationHeaderBytes: 4096,
  signedHeaders: 64,
  /** Sum of the values of the signed headers. */
  signedHeaderValueBytes: 16 * 1024,
  /** Path and query string together. */
  urlBytes: 8192,
  accessKeyIdLength: 128,
} as const;

export const DEFAULT_MAX_SKEW_MS = 15 * 60 * 1000;

/** Returns the secret access key of an access key id, or undefined if there is no such key. */
export type LookupSecret = (accessKeyId: string) => Promise<string | undefined>;

export interface SigV4VerifierOptions {
  /** The server's region; the credential scope must name it. */
  region: string;
  lookupSecret: LookupSecret;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  /** Largest accepted difference between x-amz-date and the clock; default 15 minutes. */
  maxSkewMs?: number;
}

/** What `parse` needs of an incoming request (a node IncomingMessage has all of it). */
export interface SignedRequestHead {
  method: string;
  /** The request target as received: path and optional `?query`, still percent-encoded. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Node's headersDistinct (repeated headers kept apart); preferred when present. */
  headersDistinct?: Readonly<Record<string, string[] | undefined>>;
}

/** The result of the cheap checks, input of `verify`. */
export interface ParsedSignature {
  accessKeyId: string;
  /** x-amz-date, e.g. 20261123T131124Z. */
  amzDate: string;
  /** `<date>/<region>/lambda/aws4_request`. */
  scope: string;
  signedHeaders: readonly string[];
  /** Canonical header values, in signed-header order. */
  headerValues: readonly string[];
  signature: string;
  /** x-amz-content-sha256, when the request has it (lowercase hex). */
  declaredPayloadHash: string | undefined;
  rawPath: string;
  rawQuery: string;
  method: string;
}

export class SigV4Verifier {
  private readonly now: () => number;
  private readonly maxSkewMs: number;

  constructor(private readonly options: SigV4VerifierOptions) {
    this.now = options.now ?? Date.now;
    this.maxSkewMs = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  }

  /** Parses and verifies; returns the authenticated access key id. */
  async authenticate(req: SignedRequestHead, body: Uint8Array): Promise<string> {
    return this.verify(this.parse(req), body);
  }

  /**
   * The cheap checks: sizes, Authorization syntax, presence of the signed headers, request time and
   * credential scope. Throws the ApiError for the first failure. No crypto, no lookup.
   */
  parse(req: SignedRequestHead): ParsedSignature {
    if (Buffer.byteLength(req.url, 'utf8') > SIGV4_LIMITS.urlBytes) {
      throw new MalformedUrlError(`the URL is longer than ${SIGV4_LIMITS.urlBytes} bytes`);
    }
    const { path: rawPath, query: rawQuery } = splitTarget(req.url);
    const authorization = req.headers.authorization;
    if (authorization === undefined || authorization === '') {
      if (/(?:^|&)x-amz-(?:signature|credential|algorithm)=/i.test(rawQuery))
        throw new PresignedRequestError();
      throw new MissingAuthenticationError(this.options.region);
    }
    if (authorization.length > SIGV4_LIMITS.authorizationHeaderBytes) {
      throw new MalformedAuthorizationError(`longer than ${SIGV4_LIMITS.authorizationHeaderBytes} bytes`);
    }
    const { credential, signedHeaders, signature } = parseAuthorization(authorization);

    const parts = credential.split('/');
    if (parts.length !== 5) {
      throw new MalformedAuthorizationError(
        "Credential must be '<access key id>/<yyyymmdd>/<region>/<service>/aws4_request'",
      );
    }
    const [accessKeyId, scopeDate, region, service, terminator] = parts as [
      string,
      string,
      string,
      string,
      string,
    ];
    if (!/^[\x21-\x7e]+$/.test(accessKeyId) || accessKeyId.length > SIGV4_LIMITS.accessKeyIdLength) {
      throw new MalformedAuthorizationError(
        `the access key id must be 1-${SIGV4_LIMITS.accessKeyIdLength} printable ASCII characters`,
      );
    }

    const amzDate = headerText(req, 'x-amz-date');
    if (amzDate === undefined) throw new MalformedAuthorizationError('the x-amz-date header is missing');
    const signedAt = parseAmzDate(amzDate);
    if (signedAt === undefined) {
      throw new MalformedAuthorizationError(
        `x-amz-date '${amzDate.slice(0, 32)}' is not of the form 20260101T000000Z`,
      );
    }
    const now = this.now();
    if (signedAt < now - this.maxSkewMs) {
      throw new RequestTimeError(
        `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(now - this.maxSkewMs)} ` +
          `(${formatAmzDate(now)} - ${minutes(this.maxSkewMs)} min.)`,
      );
    }
    if (signedAt > now + this.maxSkewMs) {
      throw new RequestTimeError(
        `Signature not yet current: ${amzDate} is still later than ${formatAmzDate(now + this.maxSkewMs)} ` +
          `(${formatAmzDate(now)} + ${minutes(this.maxSkewMs)} min.)`,
      );
    }

    if (scopeDate !== amzDate.slice(0, 8)) {
      throw new CredentialScopeError(
        `the scope date '${scopeDate.slice(0, 16)}' is not the day of x-amz-date ${amzDate}`,
      );
    }
    if (region !== this.options.region) {
      throw new CredentialScopeError(
        `the request is signed for region '${region.slice(0, 64)}', this server's region is '${this.options.region}'`,
        `configure the client with region '${this.options.region}'`,
      );
    }
    if (service !== SIGV4_SERVICE) {
      throw new CredentialScopeError(
        `the request is signed for service '${service.slice(0, 64)}', expected '${SIGV4_SERVICE}'`,
      );
    }
    if (terminator !== 'aws4_request') {
      throw new CredentialScopeError(
        `the scope must end with aws4_request, not '${terminator.slice(0, 32)}'`,
      );
    }

    const names = signedHeaders.split(';');
    if (names.length > SIGV4_LIMITS.signedHeaders) {
      throw new MalformedAuthorizationError(`more than ${SIGV4_LIMITS.signedHeaders} signed headers`);
    }
    const seen = new Set<string>();
    for (const name of names) {
      if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) {
        throw new MalformedAuthorizationError(`SignedHeaders has an invalid name '${name.slice(0, 64)}'`);
      }
      if (seen.has(name)) throw new MalformedAuthorizationError(`SignedHeaders lists '${name}' twice`);
      seen.add(name);
    }
    if (!seen.has('host')) throw new MalformedAuthorizationError('SignedHeaders must include host');
    let valueBytes = 0;
    const headerValues = names.map((name) => {
      const value = canonicalHeaderValue(req, name);
      if (value === undefined) {
        throw new MalformedAuthorizationError(`the signed header '${name}' is not in the request`);
      }
      valueBytes += value.length;
      return value;
    });
    if (valueBytes > SIGV4_LIMITS.signedHeaderValueBytes) {
      throw new MalformedAuthorizationError(
        `signed headers longer than ${SIGV4_LIMITS.signedHeaderValueBytes} bytes`,
      );
    }

    const declared = headerText(req, 'x-amz-content-sha256');
    if (declared !== undefined) {
      if (declared === 'UNSIGNED-PAYLOAD' || declared.startsWith('STREAMING-')) {
        throw new UnsignedPayloadError(declared);
      }
      if (!/^[0-9a-fA-F]{64}$/.test(declared)) {
        throw new MalformedAuthorizationError('x-amz-content-sha256 must be 64 hex digits');
      }
    }

    return {
      accessKeyId,
      amzDate,
      scope: `${scopeDate}/${region}/${service}/${terminator}`,
      signedHeaders: names,
      headerValues,
      signature,
      declaredPayloadHash: declared?.toLowerCase(),
      rawPath,
      rawQuery,
      method: req.method,
    };
  }

  /**
   * Looks the key up, recomputes the signature over the canonical request and compares it in
   * constant time, then checks the body against x-amz-content-sha256. Returns the access key id.
   */
  async verify(parsed: ParsedSignature, body: Uint8Array): Promise<string> {
    const secret = await this.options.lookupSecret(parsed.accessKeyId);
    if (secret === undefined) throw new UnknownAccessKeyError(parsed.accessKeyId);
    const bodyHash = createHash('sha256').update(body).digest('hex');
    const canonical = canonicalRequest(parsed, parsed.declaredPayloadHash ?? bodyHash);
    const stringToSign = [
      ALGORITHM,
      parsed.amzDate,
      parsed.scope,
      createHash('sha256').update(canonical, 'utf8').digest('hex'),
    ].join('\n');
    const [date, region, service] = parsed.scope.split('/') as [string, string, string];
    const key = signingKey(secret, date, region, service);
    const expected = createHmac('sha256', key).update(stringToSign, 'utf8').digest();
    const given = Buffer.from(parsed.signature, 'hex');
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      throw new SignatureMismatchError();
    if (parsed.declaredPayloadHash !== undefined && parsed.declaredPayloadHash !== bodyHash) {
      throw new PayloadHashMismatchError();
    }
    return parsed.accessKeyId;
  }
}

/** The canonical request of SigV4 (exported for tests and debugging). */
export function canonicalRequest(parsed: ParsedSignature, payloadHash: string): string {
  const headers = parsed.signedHeaders.map((name, i) => `${name}:${parsed.headerValues[i]}\n`).join('');
  return [
    parsed.method,
    canonicalPath(parsed.rawPath),
    canonicalQuery(parsed.rawQuery),
    headers,
    parsed.signedHeaders.join(';'),
    payloadHash,
  ].join('\n');
}

/** Splits a request target into its raw path and raw query (absolute-form targets lose their origin). */
export function splitTarget(url: string): { path: string; query: string } {
  let target = url;
  const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  if (origin) target = target.slice(origin[0].length) || '/';
  const hash = target.indexOf('#');
  if (hash >= 0) target = target.slice(0, hash);
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

/**
 * The AWS SDK's canonical URI: the path as sent, with empty and `.` segments dropped and `..`
 * resolved, then URI-encoded again (so `%3A` becomes `%253A`), `/` kept.
 */
export function canonicalPath(rawPath: string): string {
  const segments: string[] = [];
  for (const segment of rawPath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalized =
    (rawPath.startsWith('/') ? '/' : '') +
    segments.join('/') +
    (segments.length > 0 && rawPath.endsWith('/') ? '/' : '');
  return escapeUri(normalized).replace(/%2F/g, '/');
}

/**
 * Decodes a raw query string into [key, value] pairs in order (no `+`-as-space: the AWS SDK encodes
 * spaces as %20). A parameter without `=` has the value ''. MalformedUrlError on bad percent-encoding.
 */
export function parseQuery(rawQuery: string): [string, string][] {
  const pairs: [string, string][] = [];
  if (rawQuery === '') return pairs;
  for (const piece of rawQuery.split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const rawKey = eq < 0 ? piece : piece.slice(0, eq);
    const rawValue = eq < 0 ? '' : piece.slice(eq + 1);
    pairs.push([decodeComponent(rawKey), decodeComponent(rawValue)]);
  }
  return pairs;
}

/** Percent-decodes one URI component; MalformedUrlError if it is not valid UTF-8 percent-encoding. */
export function decodeComponent(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new MalformedUrlError(`bad percent-encoding in '${raw.slice(0, 64)}'`);
  }
}

/** The AWS SDK's canonical query: keys sorted; a repeated key's `key=value` pairs sorted. */
export function canonicalQuery(rawQuery: string): string {
  const byKey = new Map<string, string[]>();
  for (const [key, value] of parseQuery(rawQuery)) {
    if (key.toLowerCase() === 'x-amz-signature') continue;
    const encodedKey = escapeUri(key);
    const list = byKey.get(encodedKey) ?? [];
    list.push(`${encodedKey}=${escapeUri(value)}`);
    byKey.set(encodedKey, list);
  }
  return [...byKey.keys()]
    .sort()
    .map((k) => (byKey.get(k) as string[]).sort().join('&'))
    .join('&');
}

/** RFC 3986 encoding as the AWS SDK does it (encodeURIComponent plus !'()*). */
export function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function parseAuthorization(header: string): {
  credential: string;
  signedHeaders: string;
  signature: string;
} {
  const space = header.indexOf(' ');
  const scheme = space < 0 ? header : header.slice(0, space);
  if (scheme !== ALGORITHM) {
    throw new MalformedAuthorizationError(
      `unsupported scheme '${scheme.slice(0, 32)}'; only ${ALGORITHM} is accepted`,
    );
  }
  const fields = new Map<string, string>();
  for (const part of header.slice(space + 1).split(',')) {
    const item = part.trim();
    const eq = item.indexOf('=');
    if (eq <= 0) throw new MalformedAuthorizationError(`'${item.slice(0, 32)}' is not Name=Value`);
    const name = item.slice(0, eq);
    if (fields.has(name)) throw new MalformedAuthorizationError(`${name} appears twice`);
    fields.set(name, item.slice(eq + 1));
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    throw new MalformedAuthorizationError('it must have Credential, SignedHeaders and Signature');
  }
  if (!/^[0-9a-f]{64}$/.test(signature)) {
    throw new MalformedAuthorizationError('Signature must be 64 lowercase hex digits');
  }
  return { credential, signedHeaders, signature };
}

function headerText(req: SignedRequestHead, name: string): string | undefined {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(',') : v;
}

/** A header's canonical value: repeated values joined by ',', each trimmed, runs of spaces collapsed. */
function canonicalHeaderValue(req: SignedRequestHead, name: string): string | undefined {
  const distinct = req.headersDistinct?.[name];
  const raw = distinct ?? req.headers[name];
  if (raw === undefined) return undefined;
  const values = Array.isArray(raw) ? raw : [raw];
  return values
    .map((v) =>
      v
        .replace(/[\r\n]/g, ' ')
        .replace(/[ \t]+/g, ' ')
        .replace(/^ | $/g, ''),
    )
    .join(',');
}

function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  let key = createHmac('sha256', `AWS4${secret}`).update(date, 'utf8').digest();
  for (const part of [region, service, 'aws4_request'])
    key = createHmac('sha256', key).update(part, 'utf8').digest();
  return key;
}

/** Milliseconds since the epoch of a 20260101T000000Z date, or undefined if malformed. */
export function parseAmzDate(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  const back = new Date(t);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || se > 59)
    return undefined;
  return t;
}

export function formatAmzDate(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

function minutes(ms: number): number {
  return Math.round(ms / 60_000);
}
