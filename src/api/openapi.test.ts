import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../util/package-root.js';
import { RequestValidationError } from './errors.js';
import { buildOpenApiDocument, openApiJson } from './openapi.js';
import { checkResponse, validateResponse } from './openapi-validate.js';
import { OPERATION_NAMES, getOperation, type OperationName } from './operations.js';
import { serializeOutput } from './serialize.js';
import { CANNED_OUTPUTS } from './testing.js';
import { validateInput } from './validation.js';

const doc = buildOpenApiDocument();

function refs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v) => refs(v, out));
  else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refs(v, out);
    }
  }
  return out;
}

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.1 with a SigV4 security scheme', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.security).toEqual([{ sigv4: [] }]);
    expect(JSON.stringify(doc.components.securitySchemes)).toContain('Signature Version 4');
  });

  it('has every operation at its path and method, and the public routes', () => {
    const ids: string[] = [];
    for (const name of OPERATION_NAMES) {
      const op = getOperation(name);
      const o = doc.paths[op.path]?.[op.method.toLowerCase()] as {
        operationId: string;
        responses: Record<string, unknown>;
      };
      expect(o.operationId).toBe(name);
      expect(Object.keys(o.responses)).toContain(String(op.successStatus));
      for (const e of op.errors) expect(JSON.stringify(doc.components.responses)).toContain(e);
      ids.push(o.operationId);
    }
    expect(new Set(ids).size).toBe(OPERATION_NAMES.length);
    expect((doc.paths['/healthz']?.get as { security: unknown[] }).security).toEqual([]);
    expect((doc.paths['/openapi.json']?.get as { security: unknown[] }).security).toEqual([]);
  });

  it('documents parameters where the SDK puts them', () => {
    const untag = doc.paths['/2017-03-31/tags/{Resource}']?.delete as {
      parameters: { name: string; in: string; required: boolean }[];
    };
    expect(untag.parameters.map((p) => [p.name, p.in, p.required])).toEqual([
      ['Resource', 'path', true],
      ['tagKeys', 'query', true],
    ]);
    const create = doc.components.schemas.CreateMicrovmImageRequest as {
      properties: Record<string, Record<string, unknown>>;
    };
    expect(create.properties.diskSizeInMiB?.['x-hearth-extension']).toBe(true);
    expect(create.properties.clientToken?.['x-idempotency-token']).toBe(true);
  });

  it('resolves every $ref', () => {
    for (const ref of refs(doc)) {
      const [, section, name] = /^#\/components\/(\w+)\/(\w+)$/.exec(ref) ?? [];
      expect(
        (doc.components as Record<string, Record<string, unknown>>)[section ?? '']?.[name ?? ''],
        ref,
      ).toBeDefined();
    }
  });

  it('is compilable JSON Schema (ajv, draft 2020-12) in every schema', () => {
    const ajv = new Ajv2020({ strict: false });
    ajv.addSchema({ $id: 'doc', components: doc.components });
    for (const name of Object.keys(doc.components.schemas)) {
      expect(() => ajv.compile({ $ref: `doc#/components/schemas/${name}` }), name).not.toThrow();
    }
  });

  it('is up to date in docs/openapi.json (run `npm run openapi`)', () => {
    const file = readFileSync(join(packageRoot(), 'docs', 'openapi.json'), 'utf8');
    expect(JSON.parse(file)).toEqual(JSON.parse(openApiJson()));
  });
});

describe('validateResponse', () => {
  it.each(OPERATION_NAMES)('accepts the serialized canned output of %s', (name) => {
    const op = getOperation(name);
    const body =
      op.output === null ? '' : JSON.stringify(serializeOutput(op.output, CANNED_OUTPUTS[name]).value);
    expect(checkResponse(name, op.successStatus, body)).toEqual([]);
  });

  it('catches wrong types, missing and unknown members, bodies on 204, undocumented statuses', () => {
    const ok = serializeOutput(getOperation('GetMicrovm').output ?? {}, CANNED_OUTPUTS.GetMicrovm).value;
    expect(checkResponse('GetMicrovm', 200, { ...ok, startedAt: '2026-01-01T00:00:00Z' }).join()).toContain(
      '/startedAt must be number',
    );
    const { endpoint: _e, ...missing } = ok;
    expect(checkResponse('GetMicrovm', 200, missing).join()).toContain(
      "must have required property 'endpoint'",
    );
    expect(checkResponse('GetMicrovm', 200, { ...ok, extra: 1 }).join()).toContain(
      'must NOT have additional properties',
    );
    expect(checkResponse('GetMicrovm', 200, { ...ok, state: 'BOOTING' }).join()).toContain(
      'must be equal to one of the allowed values',
    );
    expect(checkResponse('TagResource', 204, '{}')).toEqual(['TagResource 204 must have no body']);
    expect(checkResponse('GetMicrovm', 402, {})).toEqual([
      'status 402 is not a documented response of GetMicrovm',
    ]);
    expect(checkResponse('GetMicrovm', 200, 'not json')[0]).toContain('the body is not JSON');
    expect(() => validateResponse('GetMicrovm', 200, { ...ok, extra: 1 })).toThrow(
      /does not match the OpenAPI document/,
    );
  });

  it('checks error bodies', () => {
    expect(
      checkResponse('RunMicrovm', 402, { message: 'quota', code: 'QUOTA_EXCEEDED', quotaCode: 'Q' }),
    ).toEqual([]);
    expect(checkResponse('RunMicrovm', 500, { message: 'x', code: 'INTERNAL_ERROR', hint: 'h' })).toEqual([]);
    expect(checkResponse('RunMicrovm', 403, { message: 'x' }).join()).toContain("required property 'code'");
    expect(checkResponse('RunMicrovm', 400, { message: 'x', code: 'V', stack: '...' }).join()).toContain(
      'must NOT have additional properties',
    );
  });
});

describe('the request schemas and the validator agree (property, seeded)', () => {
  const bases: Partial<
    Record<OperationName, { labels: Record<string, string>; body: Record<string, unknown> }>
  > = {
    RunMicrovm: {
      labels: {},
      body: {
        imageIdentifier: 'arn:x',
        idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: true },
        logging: { disabled: {} },
        maximumDurationInSeconds: 60,
        runHookPayload: 'p',
      },
    },
    CreateMicrovmAuthToken: {
      labels: { microvmIdentifier: 'm' },
      body: { expirationInMinutes: 5, allowedPorts: [{ port: 80 }, { range: { startPort: 1, endPort: 2 } }] },
    },
    CreateMicrovmImage: {
      labels: {},
      body: {
        name: 'app',
        baseImageArn: 'arn:b',
        buildRoleArn: 'arn:r',
        codeArtifact: { uri: 'file:///x' },
        resources: [{ minimumMemoryInMiB: 512 }],
        hooks: { port: 1, microvmHooks: { run: 'ENABLED', runTimeoutInSeconds: 5 } },
        environmentVariables: { A: 'b' },
        tags: { k: 'v' },
        diskSizeInMiB: 1024,
      },
    },
    CreateNetworkConnector: {
      labels: {},
      body: {
        name: 'db',
        description: 'd',
        egressRules: [
          {
            cidr: '10.0.5.0/24',
            protocol: 'TCP',
            ports: [{ port: 5432 }, { range: { startPort: 1, endPort: 2 } }],
          },
          { hostname: '*.example.com' },
        ],
        tags: { k: 'v' },
      },
    },
    TagResource: { labels: { Resource: 'arn:x' }, body: { Tags: { a: 'b' } } },
    UpdateMicrovmImageVersion: {
      labels: { imageIdentifier: 'a', imageVersion: '1' },
      body: { status: 'ACTIVE' },
    },
  };
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addSchema({ $id: 'doc', components: doc.components });

  /** Paths into a JSON value (objects and arrays), to mutate. */
  function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
    const out: (string | number)[][] = [prefix];
    if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
    else if (typeof v === 'object' && v !== null)
      for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
    return out;
  }

  function setAt(
    root: Record<string, unknown>,
    path: (string | number)[],
    key: string | undefined,
    value: unknown,
  ) {
    const clone = structuredClone(root);
    let target: Record<string | number, unknown> = clone;
    for (const p of path) target = target[p] as Record<string | number, unknown>;
    if (typeof target !== 'object' || target === null) return clone;
    if (key !== undefined && !Array.isArray(target)) target[key] = value;
    else if (Array.isArray(target)) target[0] = value;
    return clone;
  }

  const interesting = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.integer({ min: -2, max: 70_000 }),
    fc.constantFrom(
      0,
      1,
      60,
      61,
      512,
      513,
      65_535,
      65_536,
      28_800,
      28_801,
      -1,
      1.5,
      '',
      'ENABLED',
      'ALL',
      null,
      {},
      [],
    ),
    fc.string({ maxLength: 70 }),
  );

  it.each(Object.keys(bases) as OperationName[])(
    '%s: what the validator accepts, the schema accepts, and vice versa',
    (name) => {
      const base = bases[name] as { labels: Record<string, string>; body: Record<string, unknown> };
      const schema =
        ajv.getSchema(`doc#/components/schemas/${name}Request`) ??
        ajv.compile({ $ref: `doc#/components/schemas/${name}Request` });
      const op = getOperation(name);
      expect(() =>
        validateInput(op, { labels: base.labels, query: new Map(), headers: {}, body: base.body }),
      ).not.toThrow();
      const allPaths = paths(base.body);
      const seed = Number(process.env.FC_SEED ?? 777);
      fc.assert(
        fc.property(
          fc.constantFrom(...allPaths),
          fc.option(
            fc.oneof(
              fc.string({ maxLength: 20 }),
              fc.constantFrom('port', 'range', 'allPorts', 'disabled', 'cloudWatch', 'ready', 'run'),
            ),
          ),
          interesting,
          (path, key, value) => {
            const body = setAt(base.body, path, key ?? undefined, value);
            const docAccepts = schema(body) === true;
            let ours: string[] = [];
            try {
              validateInput(op, { labels: base.labels, query: new Map(), headers: {}, body });
            } catch (e) {
              if (!(e instanceof RequestValidationError)) throw e;
              ours = [...e.violations];
            }
            if (ours.length === 0) expect(docAccepts, JSON.stringify(body)).toBe(true);
            if (docAccepts && ours.length > 0) {
              // Only the constraints JSON Schema cannot state may make the validator stricter.
              for (const v of ours)
                expect(v).toMatch(/bytes \(UTF-8\)|NUL characters|valid Unicode|startPort must be/);
            }
          },
        ),
        { seed, numRuns: 400 },
      );
    },
  );
});
