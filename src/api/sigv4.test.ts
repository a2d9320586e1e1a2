import { SignatureV4 } from '@smithy/signature-v4';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ApiError } from './errors.js';
import {
  SIGV4_LIMITS,
  SigV4Verifier,
  canonicalPath,
  canonicalQuery,
  escapeUri,
  formatAmzDate,
  parseAmzDate,
  type SignedRequestHead,
} from './sigv4.js';
import { NodeSha256, queryString } from './testing.js';

const CREDS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const NOW = Date.parse('2026-03-04T05:06:07Z');
const HOST = '127.0.0.1:8200';

function verifier(options: { region?: string; now?: number } = {}): SigV4Verifier {
  return new SigV4Verifier({
    region: options.region ?? 'local',
    lookupSecret: async (id) => (id === CREDS.accessKeyId ? CREDS.secretAccessKey : undefined),
    now: () => options.now ?? NOW,
  });
}

interface Req {
  method?: string;
  path: string;
  query?: Record<string, string | string[]>;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/** Signs with the AWS SDK's signer and returns what the server would see. */
async function sign(
  req: Req,
  options: { region?: string; service?: string; date?: number; secret?: string } = {},
): Promise<{ head: SignedRequestHead; body: Buffer }> {
  const signer = new SignatureV4({
    service: options.service ?? 'lambda',
    region: options.region ?? 'local',
    credentials: { ...CREDS, ...(options.secret === undefined ? {} : { secretAccessKey: options.secret }) },
    sha256: NodeSha256,
  });
  const headers: Record<string, string> = { host: HOST, ...req.headers };
  const signed = await signer.sign(
    {
      method: req.method ?? 'GET',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: 8200,
      path: req.path,
      query: req.query ?? {},
      headers,
      ...(req.body === undefined ? {} : { body: req.body }),
    },
    { signingDate: new Date(options.date ?? NOW) },
  );
  const lower = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    head: { method: req.method ?? 'GET', url: req.path + queryString(req.query), headers: lower },
    body: Buffer.from(req.body ?? ''),
  };
}

async function rejection(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    return e as ApiError;
  }
  throw new Error('expected a rejection');
}

const ARN = escapeUri('arn:aws:lambda:local:000000000000:microvm-image:app');

describe('SigV4Verifier accepts what the AWS SDK signs', () => {
  const cases: [string, Req][] = [
    ['a GET without query', { path: '/2025-09-09/microvms/mvm-1' }],
    ['an encoded ARN label', { path: `/2017-03-31/tags/${ARN}` }],
    ['special characters in a label', { path: `/2025-09-09/microvms/${escapeUri("a!'()*~._-+=&?#%é /x")}` }],
    ['dot segments', { path: '/2025-09-09/./microvms/../microvms/x/..' }],
    ['double and trailing slashes', { path: '//2025-09-09//microvms/' }],
    ['an encoded slash and percent', { path: '/a%2Fb/%25/c' }],
    [
      'query with repeated keys',
      { path: `/2017-03-31/tags/${ARN}`, method: 'DELETE', query: { tagKeys: ['b', 'a c', 'a', 'é'] } },
    ],
    [
      'query keys sorting before =',
      { path: '/x', query: { a: '1', 'a-b': '2', 'a.b': '3', A: '4', _a: '5' } },
    ],
    [
      'encoded query keys and empty values',
      { path: '/x', query: { 'k y': '', 'x+y': '+', 'ü/?=&': "!'()*" } },
    ],
    [
      'a JSON body',
      {
        method: 'POST',
        path: '/2025-09-09/microvms',
        body: '{"imageIdentifier":"arn:x"}',
        headers: { 'content-type': 'application/json' },
      },
    ],
    ['an empty POST body', { method: 'POST', path: '/2025-09-09/microvms/m/suspend', body: '' }],
    ['a large body', { method: 'PUT', path: '/2025-09-09/microvm-images/app', body: 'x'.repeat(900_000) }],
    ['a binary body', { method: 'POST', path: '/x', body: Buffer.from([0, 255, 10, 13, 0xc3]) }],
    [
      'headers with runs of spaces',
      { path: '/x', headers: { 'x-custom': 'a   b \t c', 'x-other': ' lead' } },
    ],
  ];
  it.each(cases)('%s', async (_name, req) => {
    const { head, body } = await sign(req);
    await expect(verifier().authenticate(head, body)).resolves.toBe(CREDS.accessKeyId);
  });

  it('accepts a request signed without x-amz-content-sha256 (body hashed)', async () => {
    const { head, body } = await sign({ method: 'POST', path: '/x', body: '{}' });
    delete head.headers['x-amz-content-sha256'];
    // The signer signed that header; re-sign without it to model clients that omit it.
    const signer = new SignatureV4({
      service: 'lambda',
      region: 'local',
      credentials: CREDS,
      sha256: NodeSha256,
      applyChecksum: false,
    });
    const signed = await signer.sign(
      {
        method: 'POST',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 8200,
        path: '/x',
        query: {},
        headers: { host: HOST },
        body: '{}',
      },
      { signingDate: new Date(NOW) },
    );
    expect(signed.headers['x-amz-content-sha256']).toBeUndefined();
    const h2 = {
      method: 'POST',
      url: '/x',
      headers: Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), v])),
    };
    await expect(verifier().authenticate(h2, body)).resolves.toBe(CREDS.accessKeyId);
  });

  it('accepts requests 14 minutes off either way', async () => {
    for (const skew of [-14 * 60_000, 14 * 60_000]) {
      const { head, body } = await sign({ path: '/x' }, { date: NOW + skew });
      await expect(verifier().authenticate(head, body)).resolves.toBe(CREDS.accessKeyId);
    }
  });

  it('agrees with the signer on random paths, queries and bodies (property, seeded)', async () => {
    const segment = fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 12 }).map(escapeUri),
      fc.constantFrom('.', '..', '', '%2F', '~a', 'a.b'),
    );
    const seed = Number(process.env.FC_SEED ?? 4242);
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(segment, { maxLength: 6 }),
          fc.dictionary(
            fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }),
            fc.oneof(
              fc.string({ unit: 'grapheme', maxLength: 8 }),
              fc.array(fc.string({ unit: 'grapheme', maxLength: 6 }), { minLength: 1, maxLength: 3 }),
            ),
            { maxKeys: 5 },
          ),
          fc.option(fc.string({ unit: 'binary', maxLength: 300 })),
          fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE'),
          async (segments, query, body, method) => {
            const path = '/' + segments.join('/');
            const req: Req = { method, path, query, ...(body === null ? {} : { body }) };
            const { head, body: b } = await sign(req);
            expect(await verifier().authenticate(head, b)).toBe(CREDS.accessKeyId);
            // Changing one byte of the body breaks it.
            const tampered = Buffer.concat([b, Buffer.from('x')]);
            expect((await rejection(verifier().authenticate(head, tampered))).code).toMatch(/^AUTH_/);
          },
        ),
        { seed, numRuns: 300 },
      );
    } catch (e) {
      console.error(`sigv4 property failed; reproduce with FC_SEED=${seed}`);
      throw e;
    }
  });
});

describe('SigV4Verifier refuses', () => {
  const POST: Req = { method: 'POST', path: '/2025-09-09/microvms', body: '{"imageIdentifier":"a"}' };

  it('a tampered body', async () => {
    const { head } = await sign(POST);
    const e = await rejection(verifier().authenticate(head, Buffer.from('{"imageIdentifier":"b"}')));
    expect([e.exception, e.code]).toEqual(['InvalidSignatureException', 'AUTH_PAYLOAD_HASH_MISMATCH']);
  });

  it('a tampered body when the payload hash header is absent', async () => {
    const { head } = await sign(POST);
    // Claim a different hash: the signature covers the header, so it no longer matches.
    head.headers['x-amz-content-sha256'] = 'a'.repeat(64);
    const e = await rejection(verifier().authenticate(head, Buffer.from(POST.body as string)));
    expect(e.code).toBe('AUTH_BAD_SIGNATURE');
  });

  it('a tampered path, query, method or signed header', async () => {
    const variants: ((h: SignedRequestHead) => void)[] = [
      (h) => (h.url = '/2025-09-09/microvms/other'),
      (h) => (h.url = h.url + '?maxResults=5'),
      (h) => (h.method = 'PUT'),
      (h) => (h.headers.host = 'evil:80'),
      (h) => (h.headers['x-amz-date'] = formatAmzDate(NOW + 1000)),
    ];
    for (const change of variants) {
      const { head, body } = await sign(POST);
      change(head);
      const e = await rejection(verifier().authenticate(head, body));
      expect([e.status, e.exception, e.code]).toEqual([
        403,
        'InvalidSignatureException',
        'AUTH_BAD_SIGNATURE',
      ]);
      expect(e.message).toContain('does not match');
    }
  });

  it('a wrong secret', async () => {
    const { head, body } = await sign(POST, { secret: 'wrong' });
    expect((await rejection(verifier().authenticate(head, body))).code).toBe('AUTH_BAD_SIGNATURE');
  });

  it('an unknown access key', async () => {
    const { head, body } = await sign(POST);
    const e = await rejection(
      new SigV4Verifier({
        region: 'local',
        lookupSecret: async () => undefined,
        now: () => NOW,
      }).authenticate(head, body),
    );
    expect([e.status, e.exception, e.code]).toEqual([403, 'UnrecognizedClientException', 'AUTH_UNKNOWN_KEY']);
    expect(e.message).toContain(CREDS.accessKeyId);
  });

  it('an expired or future date, saying so', async () => {
    const old = await sign(POST, { date: NOW - 16 * 60_000 });
    const e1 = await rejection(verifier().authenticate(old.head, old.body));
    expect([e1.exception, e1.code]).toEqual(['InvalidSignatureException', 'AUTH_CLOCK_SKEW']);
    expect(e1.message).toBe(
      'Signature expired: 20260304T045007Z is now earlier than 20260304T045107Z (20260304T050607Z - 15 min.)',
    );
    const future = await sign(POST, { date: NOW + 16 * 60_000 });
    const e2 = await rejection(verifier().authenticate(future.head, future.body));
    expect(e2.message).toMatch(/^Signature not yet current: 20260304T052207Z is still later than/);
  });

  it('a wrong region, service or scope date, saying which', async () => {
    const r = await sign(POST, { region: 'us-east-1' });
    const e1 = await rejection(verifier().authenticate(r.head, r.body));
    expect([e1.exception, e1.code]).toEqual(['InvalidSignatureException', 'AUTH_WRONG_SCOPE']);
    expect(e1.message).toContain("signed for region 'us-east-1', this server's region is 'local'");
    expect(e1.hint).toBe("configure the client with region 'local'");

    const s = await sign(POST, { service: 's3' });
    expect((await rejection(verifier().authenticate(s.head, s.body))).message).toContain("service 's3'");

    const d = await sign(POST);
    d.head.headers.authorization = (d.head.headers.authorization as string).replace(
      '/20260304/',
      '/20260303/',
    );
    expect((await rejection(verifier().authenticate(d.head, d.body))).message).toContain(
      "scope date '20260303'",
    );
  });

  it('a request without authentication', async () => {
    const e = await rejection(
      verifier().authenticate({ method: 'GET', url: '/x', headers: { host: HOST } }, Buffer.alloc(0)),
    );
    expect([e.status, e.exception, e.code, e.message]).toEqual([
      403,
      'MissingAuthenticationTokenException',
      'AUTH_MISSING',
      'Missing Authentication Token',
    ]);
  });

  it('a presigned URL, clearly', async () => {
    const signer = new SignatureV4({
      service: 'lambda',
      region: 'local',
      credentials: CREDS,
      sha256: NodeSha256,
    });
    const presigned = await signer.presign(
      {
        method: 'GET',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 8200,
        path: '/x',
        query: {},
        headers: { host: HOST },
      },
      { signingDate: new Date(NOW) },
    );
    const url = '/x' + queryString(presigned.query as Record<string, string>);
    const e = await rejection(
      verifier().authenticate({ method: 'GET', url, headers: { host: HOST } }, Buffer.alloc(0)),
    );
    expect([e.exception, e.code]).toEqual(['IncompleteSignatureException', 'AUTH_PRESIGNED_UNSUPPORTED']);
  });

  it('unsigned payloads', async () => {
    const { head, body } = await sign({ ...POST, headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } });
    expect((await rejection(verifier().authenticate(head, body))).code).toBe('AUTH_UNSIGNED_PAYLOAD');
  });

  it('a signed header missing from the request, and a missing x-amz-date', async () => {
    const a = await sign({ ...POST, headers: { 'x-extra': '1' } });
    delete a.head.headers['x-extra'];
    expect((await rejection(verifier().authenticate(a.head, a.body))).message).toContain(
      "the signed header 'x-extra' is not in the request",
    );
    const b = await sign(POST);
    delete b.head.headers['x-amz-date'];
    expect((await rejection(verifier().authenticate(b.head, b.body))).message).toContain(
      'x-amz-date header is missing',
    );
  });

  it('malformed Authorization headers before any lookup or crypto', () => {
    let lookups = 0;
    const v = new SigV4Verifier({
      region: 'local',
      lookupSecret: async () => {
        lookups++;
        return 'x';
      },
      now: () => NOW,
    });
    const base = {
      host: HOST,
      'x-amz-date': formatAmzDate(NOW),
    };
    const good = `Credential=AKID/${formatAmzDate(NOW).slice(0, 8)}/local/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'a'.repeat(64)}`;
    const bad: [string, string][] = [
      ['Basic dXNlcjpwYXNz', 'unsupported scheme'],
      ['AWS4-ECDSA-P256-SHA256 ' + good, 'unsupported scheme'],
      [`AWS4-HMAC-SHA256 ${good.replace('Signature', 'Sig')}`, 'Credential, SignedHeaders and Signature'],
      [
        `AWS4-HMAC-SHA256 ${good.replace('a'.repeat(64), 'A'.repeat(64))}`,
        'Signature must be 64 lowercase hex digits',
      ],
      [`AWS4-HMAC-SHA256 ${good.replace('AKID/', '')}`, 'Credential must be'],
      [`AWS4-HMAC-SHA256 ${good.replace('host;', '')}`, 'SignedHeaders must include host'],
      [`AWS4-HMAC-SHA256 ${good.replace('host;', 'Host;host;')}`, "invalid name 'Host'"],
      [`AWS4-HMAC-SHA256 ${good}, ${good}`, 'appears twice'],
      [
        `AWS4-HMAC-SHA256 ${good} ${'x'.repeat(SIGV4_LIMITS.authorizationHeaderBytes)}`,
        'longer than 4096 bytes',
      ],
      [
        `AWS4-HMAC-SHA256 ${good.replace('host;x-amz-date', Array.from({ length: 65 }, (_, i) => `h${i}`).join(';') + ';host')}`,
        'more than 64 signed headers',
      ],
      [`AWS4-HMAC-SHA256 ${good.replace('AKID', 'A'.repeat(129))}`, 'access key id must be'],
    ];
    for (const [authorization, message] of bad) {
      let err: ApiError | undefined;
      try {
        v.parse({ method: 'GET', url: '/x', headers: { ...base, authorization } });
      } catch (e) {
        err = e as ApiError;
      }
      expect(err?.message, authorization.slice(0, 80)).toContain(message);
      expect(err?.status).toBe(403);
    }
    expect(() => v.parse({ method: 'GET', url: '/' + 'x'.repeat(9000), headers: {} })).toThrow(
      /longer than 8192/,
    );
    expect(lookups).toBe(0);
  });
});

describe('canonical forms', () => {
  it('double-encodes and normalises paths like the SDK', () => {
    expect(canonicalPath('/2017-03-31/tags/arn%3Aaws')).toBe('/2017-03-31/tags/arn%253Aaws');
    expect(canonicalPath('/a/./b/../c//d/')).toBe('/a/c/d/');
    expect(canonicalPath('/')).toBe('/');
    expect(canonicalPath('/..')).toBe('/');
    expect(canonicalPath("/a!'()*")).toBe('/a%21%27%28%29%2A');
  });

  it('sorts query keys, then pairs within a key', () => {
    expect(canonicalQuery('b=2&a=1&a-b=3&a=0')).toBe('a=0&a=1&a-b=3&b=2');
    expect(canonicalQuery('k%20y=&x%2By=%2B&flag')).toBe('flag=&k%20y=&x%2By=%2B');
    expect(canonicalQuery('X-Amz-Signature=abc&a=1')).toBe('a=1');
  });

  it('parses and formats x-amz-date strictly', () => {
    expect(parseAmzDate('20260304T050607Z')).toBe(NOW);
    expect(formatAmzDate(NOW)).toBe('20260304T050607Z');
    for (const bad of ['20260230T000000Z', '20260304T246000Z', '2026-03-04T05:06:07Z', '20260304T050607']) {
      expect(parseAmzDate(bad), bad).toBeUndefined();
    }
  });
});
