/**
 * Throws random requests at the server for a few seconds (seeded; FC_SEED=<n> to reproduce) and
 * checks that every answer is a well-formed success or JSON error that matches the OpenAPI
 * document, never a 500, and that the server survives.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { setLogSink } from '../util/log.js';
import { isExceptionName } from './exceptions.js';
import { checkResponse } from './openapi-validate.js';
import { OPERATION_NAMES, getOperation } from './operations.js';
import type { OperationHandlers } from './server.js';
import { escapeUri } from './sigv4.js';
import { CANNED_OUTPUTS, sendRaw, startTestApi, type RawRequest, type TestApi } from './testing.js';

const TIME_LIMIT_MS = 4000;
let api: TestApi;
let restoreSink: ((line: string) => void) | undefined;

beforeAll(async () => {
  restoreSink = setLogSink(() => {});
  const handlers = Object.fromEntries(OPERATION_NAMES.map((n) => [n, async () => CANNED_OUTPUTS[n]]));
  api = await startTestApi(handlers as Partial<OperationHandlers>, { maxBodyBytes: 16 * 1024 });
});

afterAll(async () => {
  await api?.close();
  if (restoreSink) setLogSink(restoreSink);
});

const text = fc.string({ unit: 'grapheme', maxLength: 12 });

/** An operation's template with random labels and (mostly) its method, or random segments and methods. */
const target = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...OPERATION_NAMES),
        fc.array(fc.oneof({ weight: 9, arbitrary: text.filter((t) => t !== '') }, fc.constant('')), {
          minLength: 4,
          maxLength: 4,
        }),
        // One request in five with any method, the others with the operation's.
        fc.oneof(
          { weight: 4, arbitrary: fc.constant(null) },
          fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
        ),
      )
      .map(([name, labels, method]) => {
        let i = 0;
        const op = getOperation(name);
        return {
          operation: name as string,
          method: method ?? op.method,
          path: op.path.replace(/\{[^}]+\}/g, () => escapeUri(labels[i++] ?? 'x')),
        };
      }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      operation: fc.constant(''),
      method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
      path: fc
        .array(
          fc.oneof(
            fc.stringMatching(/^[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,10}$/),
            fc.constantFrom('..', '.', '2025-09-09', 'microvms', '%zz', '%'),
          ),
          { maxLength: 6 },
        )
        .map((segments) => '/' + segments.join('/')),
    }),
  },
);

const queryValue = fc.oneof(text, fc.constantFrom('0', '1', '1000', '1001', '-1', 'ARM_64', 'x'.repeat(70)));
const query = fc.dictionary(
  fc.oneof(
    fc.constantFrom('maxResults', 'nextToken', 'imageIdentifier', 'tagKeys', 'architecture', 'nameFilter'),
    text,
  ),
  fc.oneof(queryValue, fc.array(queryValue, { minLength: 1, maxLength: 3 })),
  { maxKeys: 3 },
);

/** Bodies: nothing, random JSON, near-valid objects of the real members, broken JSON, big ones. */
const memberNames = [...new Set(OPERATION_NAMES.flatMap((n) => Object.keys(getOperation(n).input)))];
const nearValid = fc.dictionary(
  fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...memberNames) }, { weight: 1, arbitrary: text }),
  fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.integer({ min: -1, max: 70_000 }),
    fc.constantFrom(
      { port: 80 },
      [{ allPorts: {} }],
      { uri: 'file:///x' },
      { disabled: {} },
      'ACTIVE',
      'ENABLED',
    ),
  ),
  { maxKeys: 6 },
);
const body = fc.oneof(
  fc.constant(undefined),
  nearValid.map((v) => JSON.stringify(v)),
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 40 }),
  fc.constantFrom(
    '{',
    '[]',
    'null',
    '{"a":1}{',
    '\u0000',
    '{"__proto__":{"x":1}}',
    '"' + 'x'.repeat(20_000) + '"',
  ),
);

/** Valid bodies of the operations that take one, to reach the handlers (and mutate). */
const VALID_BODIES: Record<string, Record<string, unknown>> = {
  RunMicrovm: {
    imageIdentifier: 'arn:x',
    idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: true },
  },
  CreateMicrovmAuthToken: {
    expirationInMinutes: 5,
    allowedPorts: [{ port: 80 }, { range: { startPort: 1, endPort: 9 } }],
  },
  CreateMicrovmShellAuthToken: { expirationInMinutes: 60 },
  CreateMicrovmImage: {
    name: 'app',
    baseImageArn: 'arn:b',
    buildRoleArn: 'arn:r',
    codeArtifact: { uri: 'file:///x' },
  },
  UpdateMicrovmImage: {
    baseImageArn: 'arn:b',
    buildRoleArn: 'arn:r',
    codeArtifact: { uri: 'file:///x' },
    noCache: true,
  },
  UpdateMicrovmImageVersion: { status: 'INACTIVE' },
  TagResource: { Tags: { a: 'b' } },
};

const request = target.chain((t) => {
  const valid = VALID_BODIES[t.operation];
  const opBody =
    valid === undefined
      ? body
      : fc.oneof(
          { weight: 2, arbitrary: fc.constant(JSON.stringify(valid)) },
          {
            weight: 2,
            arbitrary: fc
              .tuple(fc.constantFrom(...Object.keys(valid)), fc.jsonValue({ maxDepth: 2 }))
              .map(([k, v]) => JSON.stringify({ ...valid, [k]: v })),
          },
          { weight: 1, arbitrary: body },
        );
  return fc.record({
    target: fc.constant(t),
    query: fc.option(query, { freq: 2 }),
    body: fc.option(opBody, { freq: 3 }),
    /** One request in ten goes unsigned. */
    sign: fc.integer({ min: 0, max: 9 }).map((n) => n !== 0),
  });
});

it('answers every random request with a well-formed, documented response and never a 500', async () => {
  const seed = Number(process.env.FC_SEED ?? 20_251_109);
  let runs = 0;
  try {
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        runs++;
        const raw: RawRequest = {
          method: r.target.method,
          path: r.target.path,
          query: r.query ?? {},
          ...(r.body === null || r.body === undefined ? {} : { body: r.body }),
        };
        const before = api.responses.length;
        const res = await sendRaw(api.url, raw, { sign: r.sign });
        const event = api.responses[before];
        expect(res.status).not.toBe(500);
        expect(res.status).toBeLessThan(500);
        expect(res.headers['x-amzn-requestid']).toBeDefined();
        if (res.status >= 400) {
          const type = res.headers['x-amzn-errortype'];
          expect(typeof type === 'string' && isExceptionName(type), String(type)).toBe(true);
          const json = res.json as { message?: unknown; code?: unknown };
          expect(typeof json.message).toBe('string');
          expect(typeof json.code).toBe('string');
        }
        if (event?.operation !== undefined) {
          expect(checkResponse(event.operation, res.status, res.body)).toEqual([]);
        } else {
          expect(res.status).toBeGreaterThanOrEqual(400);
        }
      }),
      { seed, numRuns: 1_000_000, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
  } catch (e) {
    console.error(`server property failed after ${runs} runs; reproduce with FC_SEED=${seed}`);
    throw e;
  }
  if (process.env.API_PROPERTY_STATS) {
    const counts: Record<string, number> = {};
    for (const e of api.responses)
      counts[`${e.status} ${e.operation ?? '-'}`] = (counts[`${e.status} ${e.operation ?? '-'}`] ?? 0) + 1;
    console.log(runs, counts);
  }
  expect(runs).toBeGreaterThan(100);
  const health = await sendRaw(api.url, { method: 'GET', path: '/healthz' }, { sign: false });
  expect(health.status).toBe(200);
}, 30_000);
