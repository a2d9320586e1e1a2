/**
 * Fetching of remote code artifacts: http(s):// URLs (presigned URLs included, they are plain
 * https) and s3:// URIs of an S3-compatible store, downloaded to a local file. This module only
 * moves bytes and never looks inside them: the caller gives the file to intakeArtifact
 * (artifact.ts), which checks it like any local .zip.
 *
 * URIs can carry secrets (user:pass@, presigned query strings): messages and errors only ever show
 * them through redactUri (scheme, host and path).
 */
import { constants } from 'node:fs';
import { NodeSha256 } from '../util/node-sha256.js';
import { open, rm, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { SignatureV4 } from '@smithy/signature-v4';
import { request, type Dispatcher } from 'undici';
import { HearthError } from '../errors.js';
import { redactUri, writeAll } from './artifact.js';
import {
  ArchiveTooLargeError,
  ArtifactDestinationExistsError,
  CodeArtifactFetchError,
  CodeArtifactNotFoundError,
  UnsupportedArtifactUriError,
} from './errors.js';

/** Where and how s3:// URIs are fetched. */
export interface S3Settings {
  /**
   * Base URL (http or https) of the S3-compatible service, e.g. https://s3.us-east-1.amazonaws.com
   * or http://127.0.0.1:9000. Requests are path-style: <endpoint>/<bucket>/<key>. Without it,
   * s3:// URIs are refused.
   */
  endpoint?: string;
  /** The region of the SigV4 credential scope. */
  region: string;
  /** Without accessKeyId and secretAccessKey the request is sent unsigned (public objects only). */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
}

export interface FetchArtifactOptions {
  s3?: S3Settings;
  /** Largest download accepted, bytes. */
  maxBytes: number;
  /** Deadline of the whole fetch (every redirect, the headers and the body), ms. */
  timeoutMs: number;
  /** Cancels the fetch (it then fails with CodeArtifactFetchError). */
  signal?: AbortSignal;
}

/** Redirects followed at most (to http:// or https:// URLs only). */
export const MAX_REDIRECTS = 5;

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** A new file only, never through an existing name or link. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const S3_HINT =
  "set s3Endpoint in the server configuration (or HEARTH_S3_ENDPOINT), e.g. https://s3.us-east-1.amazonaws.com or http://127.0.0.1:9000, with s3Region and the credentials in the server's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN); or give a presigned https:// URL";

/** True for the URIs fetchArtifact handles: http://, https:// and s3:// (any letter case). */
export function isRemoteArtifactUri(uri: string): boolean {
  return /^(?:https?|s3):\/\//i.test(uri);
}

/**
 * Downloads the artifact `uri` (http://, https:// or s3://<bucket>/<key>) to `destZipPath`, which
 * must not exist: it is created with O_EXCL|O_NOFOLLOW, mode 0600. Follows at most MAX_REDIRECTS
 * redirects, to http(s) URLs only; credentials (user:pass@ as Basic auth, or the S3 signature) are
 * sent to the first URL only, and Basic auth also to redirects within the same origin.
 *
 * Throws UnsupportedArtifactUriError (CODE_ARTIFACT_URI_UNSUPPORTED: another scheme, a malformed
 * URI, s3:// without an endpoint), CodeArtifactNotFoundError (CODE_ARTIFACT_NOT_FOUND: HTTP 404),
 * ArchiveTooLargeError (ARCHIVE_TOO_LARGE: more than `maxBytes`), CodeArtifactFetchError
 * (CODE_ARTIFACT_FETCH_FAILED: another non-2xx status, too many redirects, timeout, network error,
 * cancelled) and ArtifactDestinationExistsError if `destZipPath` exists (then it is left untouched).
 * On any failure after creating it, `destZipPath` is deleted.
 *
 * Returns the number of bytes written.
 */
export async function fetchArtifact(
  uri: string,
  destZipPath: string,
  opts: FetchArtifactOptions,
): Promise<{ bytes: number }> {
  const shown = redactUri(uri);
  const isS3 = /^s3:\/\//i.test(uri);
  const first = isS3 ? await s3Request(uri, opts.s3, shown) : httpRequest(uri, shown);

  let fh: FileHandle;
  try {
    fh = await open(destZipPath, CREATE_FLAGS, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      throw new ArtifactDestinationExistsError(destZipPath, 'the download file');
    throw e;
  }
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let ok = false;
  try {
    const res = await follow(first, signal, shown, isS3);
    const bytes = await save(res, fh, opts.maxBytes, shown);
    ok = true;
    return { bytes };
  } catch (e) {
    if (e instanceof HearthError) throw e;
    if (timeout.aborted) {
      throw new CodeArtifactFetchError(shown, `no complete answer within ${opts.timeoutMs / 1000} s`, {
        cause: e,
        hint: 'check that the server answers from the Hearth host; for a large artifact on a slow link, raise artifactFetchTimeoutSeconds',
      });
    }
    if (opts.signal?.aborted) throw new CodeArtifactFetchError(shown, 'cancelled', { cause: e });
    const err = e as NodeJS.ErrnoException;
    const detail = scrub(`${err.code ? `${err.code}: ` : ''}${err.message}`, uri, shown);
    throw new CodeArtifactFetchError(shown, `network error (${detail})`, { cause: e });
  } finally {
    await fh.close();
    if (!ok) await rm(destZipPath, { force: true });
  }
}

/** One GET to make: where, with which headers, and whether those may follow a same-origin redirect. */
interface Hop {
  url: URL;
  headers: Record<string, string>;
  keepHeadersOnSameOrigin: boolean;
}

function httpRequest(uri: string, shown: string): Hop {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (e) {
    throw new UnsupportedArtifactUriError(shown, 'not a valid URL', { cause: e });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UnsupportedArtifactUriError(shown, 'only http://, https:// and s3:// URIs are fetched');
  }
  const headers: Record<string, string> = {};
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    headers.authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { url, headers, keepHeadersOnSameOrigin: true };
}

/** The path-style, SigV4-signed (when credentials are set) GET of s3://<bucket>/<key>. */
async function s3Request(uri: string, s3: S3Settings | undefined, shown: string): Promise<Hop> {
  const m = /^s3:\/\/([^/]*)\/(.+)$/is.exec(uri);
  if (!m || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(m[1]!)) {
    throw new UnsupportedArtifactUriError(shown, 'an s3:// URI must be s3://<bucket>/<key>', {
      hint: 'give s3://<bucket>/<key> of a .zip object, e.g. s3://my-bucket/apps/app.zip',
    });
  }
  const [bucket, key] = [m[1]!, m[2]!];
  const segments = key.split('/');
  if (segments.some((s) => s === '.' || s === '..')) {
    throw new UnsupportedArtifactUriError(
      shown,
      "object keys with '.' or '..' path segments are not supported",
    );
  }
  if (!s3?.endpoint) {
    throw new UnsupportedArtifactUriError(shown, 'no S3 endpoint is configured to fetch s3:// URIs from', {
      hint: S3_HINT,
    });
  }
  let endpoint: URL;
  try {
    endpoint = new URL(s3.endpoint);
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new Error('not http(s)');
  } catch (e) {
    throw new UnsupportedArtifactUriError(
      shown,
      `the S3 endpoint ${redactUri(s3.endpoint)} is not an http(s) URL`,
      {
        cause: e,
        hint: S3_HINT,
      },
    );
  }
  const basePath = endpoint.pathname.replace(/\/+$/, '');
  const url = new URL(
    `${endpoint.origin}${basePath}/${escapeUri(bucket)}/${segments.map(escapeUri).join('/')}`,
  );
  if (!s3.accessKeyId || !s3.secretAccessKey) return { url, headers: {}, keepHeadersOnSameOrigin: false };
  const signer = new SignatureV4({
    credentials: {
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      ...(s3.sessionToken ? { sessionToken: s3.sessionToken } : {}),
    },
    region: s3.region,
    service: 's3',
    sha256: NodeSha256,
    // S3 signs the path as sent (already encoded once, above), not encoded a second time.
    uriEscapePath: false,
    applyChecksum: false,
  });
  const signed = await signer.sign({
    method: 'GET',
    protocol: url.protocol,
    hostname: url.hostname,
    ...(url.port ? { port: Number(url.port) } : {}),
    path: url.pathname,
    query: {},
    headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  });
  return { url, headers: signed.headers as Record<string, string>, keepHeadersOnSameOrigin: false };
}

/** GETs `first`, following redirects; returns the 2xx response (its body not read yet). */
async function follow(
  first: Hop,
  signal: AbortSignal,
  shown: string,
  isS3: boolean,
): Promise<Dispatcher.ResponseData> {
  let hop = first;
  for (let redirects = 0; ; redirects++) {
    const res = await request(hop.url, { method: 'GET', headers: hop.headers, signal });
    const status = res.statusCode;
    if (status >= 200 && status < 300) return res;
    const location = res.headers.location;
    if (!REDIRECT_STATUSES.has(status) || typeof location !== 'string') {
      const s3Code = await s3ErrorCode(res.body);
      throw statusError(shown, status, s3Code, isS3);
    }
    discard(res.body);
    if (redirects === MAX_REDIRECTS) {
      throw new CodeArtifactFetchError(shown, `more than ${MAX_REDIRECTS} redirects`, {
        status,
        hint: 'give the final URL of the artifact; the server may be redirecting in a loop',
      });
    }
    let next: URL;
    try {
      next = new URL(location, hop.url);
    } catch (e) {
      throw new CodeArtifactFetchError(shown, `HTTP ${status} redirects to an invalid URL`, {
        cause: e,
        status,
      });
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw new CodeArtifactFetchError(
        shown,
        `HTTP ${status} redirects to a ${next.protocol}// URL; only http and https redirects are followed`,
        { status },
      );
    }
    const sameOrigin = next.origin === hop.url.origin && hop.keepHeadersOnSameOrigin;
    next.username = '';
    next.password = '';
    hop = { url: next, headers: sameOrigin ? hop.headers : {}, keepHeadersOnSameOrigin: sameOrigin };
  }
}

function statusError(shown: string, status: number, s3Code: string | undefined, isS3: boolean): HearthError {
  const detail = `HTTP ${status}${s3Code ? ` (${s3Code})` : ''}`;
  if (status === 404) {
    return new CodeArtifactNotFoundError(shown, `was not found (${detail})`, {
      hint: isS3
        ? 'check the bucket and key, and that the S3 endpoint (s3Endpoint) is the one holding them'
        : 'check the URL; a presigned URL must be given exactly as it was made',
    });
  }
  let hint: string | undefined;
  if (status === 401 || status === 403) {
    hint = isS3
      ? "check the server's S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), s3Region, and that they may read this object"
      : 'the server refused access: give credentials it accepts, or a presigned URL that has not expired';
  } else if (status >= 500) {
    hint = 'the server failed; try again later';
  }
  return new CodeArtifactFetchError(shown, `the server answered ${detail}`, {
    status,
    ...(hint ? { hint } : {}),
  });
}

/**
 * The <Code> of an S3 XML error body (e.g. SignatureDoesNotMatch), from its first 4 KiB. Nothing
 * else of the body is shown: S3 error bodies can echo the request, query string included.
 */
async function s3ErrorCode(body: Readable): Promise<string | undefined> {
  let text = '';
  try {
    for await (const chunk of body) {
      text += String(chunk);
      if (text.length >= 4096) break;
    }
  } catch {
    /* no body */
  } finally {
    discard(body);
  }
  return /<Code>([A-Za-z0-9.]{1,64})<\/Code>/.exec(text)?.[1];
}

/** Streams the body into `fh`, at most `maxBytes` bytes; ArchiveTooLargeError past that. */
async function save(
  res: Dispatcher.ResponseData,
  fh: FileHandle,
  maxBytes: number,
  shown: string,
): Promise<number> {
  const tooLarge = () =>
    new ArchiveTooLargeError(
      'maxDownloadBytes',
      `the code artifact ${shown} is larger than ${maxBytes} bytes (the download limit)`,
    );
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    discard(res.body);
    throw tooLarge();
  }
  let bytes = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (bytes > maxBytes) throw tooLarge();
      await writeAll(fh, chunk);
    }
  } finally {
    discard(res.body);
  }
  return bytes;
}

/** Drops a response body not (fully) read; undici then reports an abort that nobody needs. */
function discard(body: Readable): void {
  if (body.destroyed) return;
  body.on('error', () => undefined);
  body.destroy();
}

/** `text` with the raw URI (and its query string) replaced by its redacted form. */
function scrub(text: string, uri: string, shown: string): string {
  let out = text.split(uri).join(shown);
  const q = uri.indexOf('?');
  if (q >= 0) out = out.split(uri.slice(q)).join('');
  return out;
}

/** RFC 3986 encoding of one path segment, as S3 expects it (encodeURIComponent plus !'()*). */
function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
