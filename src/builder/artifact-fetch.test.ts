import { createHash, createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeZip } from '../../tests/helpers/zip.js';
import { canonicalQuery, splitTarget } from '../api/sigv4.js';
import { HearthError } from '../errors.js';
import { intakeArtifact } from './artifact.js';
import {
  fetchArtifact,
  isRemoteArtifactUri,
  MAX_REDIRECTS,
  type FetchArtifactOptions,
} from './artifact-fetch.js';
import type { CodeArtifactFetchError } from './errors.js';

const ZIP = makeZip([
  { name: 'Dockerfile', data: 'FROM scratch\nCOPY . /app\n' },
  { name: 'app/main.py', data: 'print("hello")\n'.repeat(200) },
]);
const S3_KEYS: Record<string, string> = { AKIDTEST: 'right-secret' };
const S3_REGION = 'eu-test-1';

/**
 * An independent check of an S3 SigV4 Authorization header (path-style GET, UNSIGNED-PAYLOAD): the
 * canonical path is the path exactly as sent (S3 does not encode it twice), the canonical query
 * is the one of the API's verifier.
 */
function s3SignatureValid(req: IncomingMessage): boolean {
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(
      req.headers.authorization ?? '',
    );
  if (!m) return false;
  const [, keyId, date, region, signedHeaders, signature] = m as unknown as string[];
  const secret = S3_KEYS[keyId!];
  const amzDate = req.headers['x-amz-date'];
  const names = signedHeaders!.split(';');
  if (!secret || region !== S3_REGION || typeof amzDate !== 'string' || !amzDate.startsWith(date!))
    return false;
  if (req.headers['x-amz-content-sha256'] !== 'UNSIGNED-PAYLOAD') return false;
  for (const required of ['host', 'x-amz-date', 'x-amz-content-sha256'])
    if (!names.includes(required)) return false;
  const { path, query } = splitTarget(req.url!);
  const canonical = [
    req.method,
    path,
    canonicalQuery(query),
    names.map((n) => `${n}:${String(req.headers[n]).trim()}\n`).join(''),
    signedHeaders,
    'UNSIGNED-PAYLOAD',
  ].join('\n');
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    `${date}/${region}/s3/aws4_request`,
    createHash('sha256').update(canonical).digest('hex'),
  ].join('\n');
  let key = createHmac('sha256', `AWS4${secret}`).update(date!).digest();
  for (const part of [region!, 's3', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  return createHmac('sha256', key).update(stringToSign).digest('hex') === signature;
}

describe('fetchArtifact', () => {
  let server: Server;
  let base: string;
  let tmp: string;
  let dest: string;
  /** Request targets seen by the server, in order. */
  let seen: string[];
  let lastHeaders: IncomingMessage['headers'];

  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
    '/app.zip': (_req, res) => res.writeHead(200, { 'content-type': 'application/zip' }).end(ZIP),
    '/chunked.zip': (_req, res) => {
      res.writeHead(200); // no content-length: chunked
      for (let i = 0; i < ZIP.length; i += 100) res.write(ZIP.subarray(i, i + 100));
      res.end();
    },
    '/missing': (_req, res) => res.writeHead(404).end('no such thing'),
    '/fail': (_req, res) => res.writeHead(500).end('boom'),
    '/loop': (_req, res) => res.writeHead(302, { location: '/loop' }).end(),
    '/to-ftp': (_req, res) => res.writeHead(301, { location: 'ftp://127.0.0.1/app.zip' }).end(),
    '/hang': () => undefined, // never answers
    '/hang-body': (_req, res) => {
      res.writeHead(200, { 'content-length': String(ZIP.length) });
      res.write(ZIP.subarray(0, 10)); // and never the rest
    },
    '/basic': (req, res) => {
      const want = `Basic ${Buffer.from('user:hunter2').toString('base64')}`;
      if (req.headers.authorization === want) res.writeHead(200).end(ZIP);
      else res.writeHead(401).end();
    },
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(req.url!);
      lastHeaders = req.headers;
      const { path } = splitTarget(req.url!);
      const hop = /^\/hop\/(\d+)$/.exec(path);
      if (hop) {
        const n = Number(hop[1]);
        res.writeHead(307, { location: n === 0 ? '/app.zip' : `/hop/${n - 1}` }).end();
        return;
      }
      if (path.startsWith('/s3/bucket/')) {
        if (!s3SignatureValid(req)) {
          res.writeHead(403, { 'content-type': 'application/xml' });
          res.end(
            '<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>',
          );
          return;
        }
        const key = decodeURIComponent(path.slice('/s3/bucket/'.length));
        if (key === 'apps/my app+(1).zip') res.writeHead(200).end(ZIP);
        else res.writeHead(404).end('<Error><Code>NoSuchKey</Code></Error>');
        return;
      }
      const route = routes[path];
      if (route) route(req, res);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  beforeEach(async () => {
    seen = [];
    tmp = await mkdtemp(join(tmpdir(), 'hearth-fetch-'));
    dest = join(tmp, 'artifact.zip');
  });

  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const opts = (o: Partial<FetchArtifactOptions> = {}): FetchArtifactOptions => ({
    maxBytes: 1 << 20,
    timeoutMs: 10_000,
    ...o,
  });

  /** Expects a failure with `code` and a hint, and no file left at dest. */
  async function expectFailure(
    uri: string,
    code: string,
    o?: Partial<FetchArtifactOptions>,
  ): Promise<HearthError> {
    const e = await fetchArtifact(uri, dest, opts(o)).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(HearthError);
    const he = e as HearthError;
    expect(he.code, he.message).toBe(code);
    expect(he.hint).toBeTruthy();
    expect(existsSync(dest)).toBe(false);
    return he;
  }

  it('downloads a zip to a new 0600 file, byte for byte', async () => {
    const { bytes } = await fetchArtifact(`${base}/app.zip`, dest, opts());
    expect(bytes).toBe(ZIP.length);
    expect((await readFile(dest)).equals(ZIP)).toBe(true);
    expect((await stat(dest)).mode & 0o777).toBe(0o600);
  });

  it('hands a file that intakeArtifact takes like any local zip', async () => {
    await fetchArtifact(`${base}/chunked.zip`, dest, opts());
    const ctx = join(tmp, 'ctx');
    expect(await intakeArtifact(dest, ctx)).toEqual({ files: 2, bytes: 25 + 15 * 200 });
  });

  it(`follows up to ${MAX_REDIRECTS} redirects`, async () => {
    const { bytes } = await fetchArtifact(`${base}/hop/${MAX_REDIRECTS - 1}`, dest, opts());
    expect(bytes).toBe(ZIP.length);
    expect(seen).toHaveLength(MAX_REDIRECTS + 1);
  });

  it('refuses more redirects than that, and a redirect loop', async () => {
    const e = await expectFailure(`${base}/hop/${MAX_REDIRECTS}`, 'CODE_ARTIFACT_FETCH_FAILED');
    expect(e.message).toContain(`more than ${MAX_REDIRECTS} redirects`);
    seen = [];
    await expectFailure(`${base}/loop`, 'CODE_ARTIFACT_FETCH_FAILED');
    expect(seen).toHaveLength(MAX_REDIRECTS + 1);
  });

  it('refuses a redirect to another scheme', async () => {
    const e = await expectFailure(`${base}/to-ftp`, 'CODE_ARTIFACT_FETCH_FAILED');
    expect(e.message).toContain('only http and https');
  });

  it('reports 404 as CODE_ARTIFACT_NOT_FOUND and 500 as CODE_ARTIFACT_FETCH_FAILED', async () => {
    const nf = await expectFailure(`${base}/missing`, 'CODE_ARTIFACT_NOT_FOUND');
    expect(nf.message).toContain('404');
    const f = (await expectFailure(`${base}/fail`, 'CODE_ARTIFACT_FETCH_FAILED')) as CodeArtifactFetchError;
    expect(f.status).toBe(500);
    expect(f.message).toContain('HTTP 500');
  });

  it('stops past maxBytes with ARCHIVE_TOO_LARGE and leaves no partial file', async () => {
    for (const path of ['/app.zip', '/chunked.zip']) {
      const e = await expectFailure(`${base}${path}`, 'ARCHIVE_TOO_LARGE', { maxBytes: ZIP.length - 1 });
      expect(e.message).toContain(`${ZIP.length - 1} bytes`);
    }
    const { bytes } = await fetchArtifact(`${base}/chunked.zip`, dest, opts({ maxBytes: ZIP.length }));
    expect(bytes).toBe(ZIP.length);
  });

  it('gives up at the timeout, whether the headers or the body never come', async () => {
    for (const path of ['/hang', '/hang-body']) {
      const t0 = Date.now();
      const e = await expectFailure(`${base}${path}`, 'CODE_ARTIFACT_FETCH_FAILED', { timeoutMs: 300 });
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(e.message).toContain('no complete answer within 0.3 s');
    }
  });

  it('sends user:pass@ as Basic auth and never shows credentials in errors', async () => {
    const host = base.replace('http://', '');
    const { bytes } = await fetchArtifact(`http://user:hunter2@${host}/basic`, dest, opts());
    expect(bytes).toBe(ZIP.length);
    await rm(dest);
    for (const [path, code] of [
      ['/missing', 'CODE_ARTIFACT_NOT_FOUND'],
      ['/fail', 'CODE_ARTIFACT_FETCH_FAILED'],
      ['/hang', 'CODE_ARTIFACT_FETCH_FAILED'],
    ] as const) {
      const uri = `http://user:hunter2@${host}${path}?X-Amz-Signature=sekrit&X-Amz-Credential=AKIDX`;
      const e = await expectFailure(uri, code, { timeoutMs: 300 });
      expect(e.message).toContain(`http://${host}${path}`);
      for (const secret of ['hunter2', 'sekrit', 'AKIDX']) expect(e.describe()).not.toContain(secret);
    }
    const e = await expectFailure(
      'http://user:hunter2@127.0.0.1:1/x?sig=sekrit',
      'CODE_ARTIFACT_FETCH_FAILED',
    );
    expect(e.message).toContain('network error');
    expect(e.describe()).not.toMatch(/hunter2|sekrit/);
  });

  it('does not send Basic auth to a redirect on another origin', async () => {
    // another port is another origin
    const redirect = createServer((_req, res) => res.writeHead(302, { location: `${base}/basic` }).end());
    await new Promise<void>((resolve) => redirect.listen(0, '127.0.0.1', resolve));
    try {
      const port = (redirect.address() as AddressInfo).port;
      const e = await expectFailure(`http://user:hunter2@127.0.0.1:${port}/`, 'CODE_ARTIFACT_FETCH_FAILED');
      expect(e.message).toContain('HTTP 401');
      expect(seen).toEqual(['/basic']);
      expect(lastHeaders.authorization).toBeUndefined();
    } finally {
      redirect.closeAllConnections();
      await new Promise((resolve) => redirect.close(resolve));
    }
  });

  it('never overwrites or follows an existing destination', async () => {
    await writeFile(dest, 'mine');
    const e = await fetchArtifact(`${base}/app.zip`, dest, opts()).catch((err: unknown) => err);
    expect((e as HearthError).code).toBe('ARTIFACT_DEST_EXISTS');
    expect(await readFile(dest, 'utf8')).toBe('mine');

    const target = join(tmp, 'target');
    const link = join(tmp, 'link.zip');
    await writeFile(target, 'theirs');
    await symlink(target, link);
    const e2 = await fetchArtifact(`${base}/app.zip`, link, opts()).catch((err: unknown) => err);
    expect((e2 as HearthError).code).toBe('ARTIFACT_DEST_EXISTS');
    expect(await readFile(target, 'utf8')).toBe('theirs');
  });

  it('refuses other schemes', async () => {
    await expectFailure('ftp://127.0.0.1/app.zip', 'CODE_ARTIFACT_URI_UNSUPPORTED');
  });

  describe('s3://', () => {
    const s3 = (secretAccessKey: string) => ({
      s3: { endpoint: `${base}/s3/`, region: S3_REGION, accessKeyId: 'AKIDTEST', secretAccessKey },
    });

    it('GETs <endpoint>/<bucket>/<key>, signed with SigV4', async () => {
      const { bytes } = await fetchArtifact(
        's3://bucket/apps/my app+(1).zip',
        dest,
        opts(s3('right-secret')),
      );
      expect(bytes).toBe(ZIP.length);
      expect(seen).toEqual(['/s3/bucket/apps/my%20app%2B%281%29.zip']);
      expect(lastHeaders['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD');
    });

    it('signs the session token too', async () => {
      const o = opts({ s3: { ...s3('right-secret').s3, sessionToken: 'tok' } });
      await fetchArtifact('s3://bucket/apps/my app+(1).zip', dest, o);
      expect(lastHeaders['x-amz-security-token']).toBe('tok');
      expect(lastHeaders.authorization).toContain('x-amz-security-token');
    });

    it('fails clearly with a wrong secret', async () => {
      const e = (await expectFailure(
        's3://bucket/apps/my app+(1).zip',
        'CODE_ARTIFACT_FETCH_FAILED',
        s3('wrong-secret'),
      )) as CodeArtifactFetchError;
      expect(e.status).toBe(403);
      expect(e.message).toContain('HTTP 403 (SignatureDoesNotMatch)');
      expect(e.hint).toContain('AWS_SECRET_ACCESS_KEY');
      expect(e.describe()).not.toContain('wrong-secret');
    });

    it('reports a missing key as CODE_ARTIFACT_NOT_FOUND', async () => {
      const e = await expectFailure(
        's3://bucket/apps/other.zip',
        'CODE_ARTIFACT_NOT_FOUND',
        s3('right-secret'),
      );
      expect(e.message).toContain('NoSuchKey');
    });

    it('refuses s3:// without an endpoint, before creating anything', async () => {
      for (const o of [{}, { s3: { region: 'us-east-1', accessKeyId: 'a', secretAccessKey: 'b' } }]) {
        const e = await expectFailure('s3://bucket/app.zip', 'CODE_ARTIFACT_URI_UNSUPPORTED', o);
        expect(e.hint).toContain('HEARTH_S3_ENDPOINT');
      }
      expect(seen).toEqual([]);
    });

    it('refuses malformed s3:// URIs without echoing credentials', async () => {
      for (const uri of [
        's3://bucket',
        's3://bucket/',
        's3://u:hunter2@bucket/k.zip',
        's3://bucket/a/../other/k',
      ]) {
        const e = await expectFailure(uri, 'CODE_ARTIFACT_URI_UNSUPPORTED', s3('right-secret'));
        expect(e.describe()).not.toContain('hunter2');
      }
      expect(seen).toEqual([]);
    });
  });
});

describe('isRemoteArtifactUri', () => {
  it('is true for http, https and s3 URLs only', () => {
    for (const u of ['http://h/a.zip', 'HTTPS://h/a.zip', 's3://b/k'])
      expect(isRemoteArtifactUri(u)).toBe(true);
    for (const u of ['/srv/app', 'app.zip', 'file:///srv/app.zip', 'ftp://h/a.zip', 'https:/h'])
      expect(isRemoteArtifactUri(u)).toBe(false);
  });
});
