import * as sdk from '@aws-sdk/client-lambda-microvms';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  InsufficientCapacityError,
  MicrovmNotFoundError,
  MicrovmStateConflictError,
  QuotaExceededError,
} from '../core/errors.js';
import { setLogSink } from '../util/log.js';
import { ApiError } from './errors.js';
import { buildOpenApiDocument } from './openapi.js';
import { checkResponse } from './openapi-validate.js';
import { AWS_OPERATION_NAMES, OPERATION_NAMES, getOperation, type OperationName } from './operations.js';
import type { OperationHandlers, RequestContext } from './server.js';
import type { Members, Shape } from './shapes.js';
import { CANNED_OUTPUTS, TEST_CREDENTIALS, sendRaw, startTestApi, type TestApi } from './testing.js';

const IMAGE_ARN = 'arn:aws:lambda:local:000000000000:microvm-image:app';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const imageConfig = {
  baseImageArn: 'arn:aws:lambda:local:aws:microvm-image:debian-12',
  buildRoleArn: 'arn:aws:iam::000000000000:role/build',
  codeArtifact: { uri: 'file:///srv/app' },
  baseImageVersion: '1',
  description: 'the app',
  logging: { cloudWatch: { logGroup: 'g', logStream: 's' } },
  egressNetworkConnectors: ['egress-1'],
  cpuConfigurations: [{ architecture: 'ARM_64' as const }],
  resources: [{ minimumMemoryInMiB: 1024 }],
  additionalOsCapabilities: ['ALL' as const],
  hooks: {
    port: 9000,
    microvmImageHooks: {
      ready: 'ENABLED' as const,
      readyTimeoutInSeconds: 120,
      validate: 'DISABLED' as const,
    },
    microvmHooks: { run: 'ENABLED' as const, runTimeoutInSeconds: 30, suspend: 'ENABLED' as const },
  },
  environmentVariables: { MODE: 'prod', EMPTY: '' },
};

/** For each operation: the SDK command input, and what the handler must receive. */
type AwsOperationName = (typeof AWS_OPERATION_NAMES)[number];
const CASES: {
  [N in AwsOperationName]: { sdk: Record<string, unknown>; handler: Record<string, unknown> };
} = {
  CreateMicrovmAuthToken: {
    sdk: {
      microvmIdentifier: 'mvm-1',
      expirationInMinutes: 15,
      allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }, { allPorts: {} }],
    },
    handler: {
      microvmIdentifier: 'mvm-1',
      expirationInMinutes: 15,
      allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }, { allPorts: {} }],
    },
  },
  CreateMicrovmImage: {
    sdk: { name: 'app', ...imageConfig, tags: { team: 'core' } },
    handler: {
      name: 'app',
      ...imageConfig,
      tags: { team: 'core' },
      clientToken: expect.stringMatching(UUID),
    },
  },
  CreateMicrovmShellAuthToken: {
    sdk: { microvmIdentifier: 'mvm-1', expirationInMinutes: 60 },
    handler: { microvmIdentifier: 'mvm-1', expirationInMinutes: 60 },
  },
  DeleteMicrovmImage: { sdk: { imageIdentifier: IMAGE_ARN }, handler: { imageIdentifier: IMAGE_ARN } },
  DeleteMicrovmImageVersion: {
    sdk: { imageIdentifier: 'app', imageVersion: '1.0' },
    handler: { imageIdentifier: 'app', imageVersion: '1.0' },
  },
  GetMicrovm: {
    sdk: { microvmIdentifier: "odd/id with spaces&é?#%+!'()*" },
    handler: { microvmIdentifier: "odd/id with spaces&é?#%+!'()*" },
  },
  GetMicrovmImage: { sdk: { imageIdentifier: 'app' }, handler: { imageIdentifier: 'app' } },
  GetMicrovmImageBuild: {
    sdk: { imageIdentifier: 'app', imageVersion: '2.0', buildId: 'b-1' },
    handler: { imageIdentifier: 'app', imageVersion: '2.0', buildId: 'b-1' },
  },
  GetMicrovmImageVersion: {
    sdk: { imageIdentifier: IMAGE_ARN, imageVersion: '1.0' },
    handler: { imageIdentifier: IMAGE_ARN, imageVersion: '1.0' },
  },
  ListManagedMicrovmImages: {
    sdk: { maxResults: 10, nextToken: 'n+/=' },
    handler: { maxResults: 10, nextToken: 'n+/=' },
  },
  ListManagedMicrovmImageVersions: {
    sdk: { imageIdentifier: 'debian-12', maxResults: 1 },
    handler: { imageIdentifier: 'debian-12', maxResults: 1 },
  },
  ListMicrovmImageBuilds: {
    sdk: {
      imageIdentifier: 'app',
      imageVersion: '1.0',
      architecture: 'ARM_64',
      chipset: 'GRAVITON',
      chipsetGeneration: '4',
    },
    handler: {
      imageIdentifier: 'app',
      imageVersion: '1.0',
      architecture: 'ARM_64',
      chipset: 'GRAVITON',
      chipsetGeneration: '4',
    },
  },
  ListMicrovmImages: {
    sdk: { nameFilter: 'ap', maxResults: 1000 },
    handler: { nameFilter: 'ap', maxResults: 1000 },
  },
  ListMicrovmImageVersions: { sdk: { imageIdentifier: 'app' }, handler: { imageIdentifier: 'app' } },
  ListMicrovms: {
    sdk: { imageIdentifier: IMAGE_ARN, imageVersion: '1.0', maxResults: 5 },
    handler: { imageIdentifier: IMAGE_ARN, imageVersion: '1.0', maxResults: 5 },
  },
  ListTags: { sdk: { Resource: IMAGE_ARN }, handler: { Resource: IMAGE_ARN } },
  ResumeMicrovm: { sdk: { microvmIdentifier: 'mvm-1' }, handler: { microvmIdentifier: 'mvm-1' } },
  RunMicrovm: {
    sdk: {
      imageIdentifier: IMAGE_ARN,
      imageVersion: '1.0',
      ingressNetworkConnectors: ['HTTP_INGRESS'],
      egressNetworkConnectors: [],
      executionRoleArn: 'arn:aws:iam::0:role/run',
      idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: true },
      logging: { disabled: {} },
      runHookPayload: '{"session":"é"}',
      maximumDurationInSeconds: 3600,
      clientToken: 'my-token',
    },
    handler: {
      imageIdentifier: IMAGE_ARN,
      imageVersion: '1.0',
      ingressNetworkConnectors: ['HTTP_INGRESS'],
      egressNetworkConnectors: [],
      executionRoleArn: 'arn:aws:iam::0:role/run',
      idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: true },
      logging: { disabled: {} },
      runHookPayload: '{"session":"é"}',
      maximumDurationInSeconds: 3600,
      clientToken: 'my-token',
    },
  },
  SuspendMicrovm: { sdk: { microvmIdentifier: 'mvm-1' }, handler: { microvmIdentifier: 'mvm-1' } },
  TagResource: {
    sdk: { Resource: IMAGE_ARN, Tags: { a: 'b', 'c d': '' } },
    handler: { Resource: IMAGE_ARN, Tags: { a: 'b', 'c d': '' } },
  },
  TerminateMicrovm: { sdk: { microvmIdentifier: 'mvm-1' }, handler: { microvmIdentifier: 'mvm-1' } },
  UntagResource: {
    sdk: { Resource: IMAGE_ARN, TagKeys: ['a', 'c d', 'é'] },
    handler: { Resource: IMAGE_ARN, TagKeys: ['a', 'c d', 'é'] },
  },
  UpdateMicrovmImage: {
    sdk: { imageIdentifier: 'app', ...imageConfig },
    handler: { imageIdentifier: 'app', ...imageConfig, clientToken: expect.stringMatching(UUID) },
  },
  UpdateMicrovmImageVersion: {
    sdk: { imageIdentifier: 'app', imageVersion: '1.0', status: 'INACTIVE' },
    handler: { imageIdentifier: 'app', imageVersion: '1.0', status: 'INACTIVE' },
  },
};

/** What the SDK decodes a canned output to: the same values, timestamps as Dates. */
function asDecoded(members: Members, value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const m = members[k];
    if (m && v !== undefined) out[k] = decodeValue(m.shape, v);
  }
  return out;
}

function decodeValue(shape: Shape, v: unknown): unknown {
  switch (shape.kind) {
    case 'timestamp':
      return new Date(v as string | Date);
    case 'list':
      return (v as unknown[]).map((x) => decodeValue(shape.member, x));
    case 'structure':
      return asDecoded(shape.members, v as Record<string, unknown>);
    case 'union': {
      const [k, x] = Object.entries(v as Record<string, unknown>)[0] as [string, unknown];
      return { [k]: decodeValue(shape.members[k] as Shape, x) };
    }
    default:
      return v;
  }
}

type Call = { operation: OperationName; input: unknown; ctx: RequestContext };

let api: TestApi;
const calls: Call[] = [];
const overrides: Partial<Record<OperationName, (input: never, ctx: RequestContext) => unknown>> = {};
const logs: string[] = [];
let restoreSink: ((line: string) => void) | undefined;

function handlers(): Partial<OperationHandlers> {
  return Object.fromEntries(
    OPERATION_NAMES.map((operation) => [
      operation,
      async (input: never, ctx: RequestContext) => {
        calls.push({ operation, input, ctx });
        const override = overrides[operation];
        return override ? override(input, ctx) : CANNED_OUTPUTS[operation];
      },
    ]),
  ) as Partial<OperationHandlers>;
}

function command(operation: OperationName, input: Record<string, unknown>) {
  const Ctor = (sdk as unknown as Record<string, new (i: unknown) => sdk.TerminateMicrovmCommand>)[
    `${operation}Command`
  ];
  if (!Ctor) throw new Error(`no command for ${operation}`);
  return new Ctor(input);
}

async function sdkError(p: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    return e as Error & Record<string, unknown>;
  }
  throw new Error('expected the SDK to throw');
}

beforeAll(async () => {
  restoreSink = setLogSink((line) => logs.push(line));
  api = await startTestApi(handlers());
});

afterAll(async () => {
  await api.close();
  if (restoreSink) setLogSink(restoreSink);
});

beforeEach(() => {
  calls.length = 0;
  logs.length = 0;
  for (const k of Object.keys(overrides)) delete overrides[k as OperationName];
});

describe('every operation through the real AWS SDK client', () => {
  it.each(AWS_OPERATION_NAMES)('%s', async (operation) => {
    const c = CASES[operation];
    const op = getOperation(operation);
    const out = (await api.client().send(command(operation, c.sdk))) as unknown as Record<string, unknown>;

    expect(calls).toHaveLength(1);
    const call = calls[0] as Call;
    expect(call.operation).toBe(operation);
    expect(call.input).toEqual(c.handler);
    expect(call.ctx.accessKeyId).toBe(TEST_CREDENTIALS.accessKeyId);
    expect(call.ctx.operation).toBe(operation);

    const { $metadata, ...decoded } = out as { $metadata: { httpStatusCode: number; requestId: string } };
    expect($metadata.httpStatusCode).toBe(op.successStatus);
    expect($metadata.requestId).toBe(call.ctx.requestId);
    const canned = CANNED_OUTPUTS[operation] as Record<string, unknown> | undefined;
    expect(decoded).toEqual(op.output === null ? {} : asDecoded(op.output, canned ?? {}));

    const response = api.responses.at(-1);
    expect(response?.operation).toBe(operation);
    expect(response?.headers['x-amzn-RequestId']).toBe(call.ctx.requestId);
    expect(checkResponse(operation, response?.status ?? 0, response?.body)).toEqual([]);
  });

  it('turns timestamps into Dates (epoch seconds on the wire)', async () => {
    const out = await api.client().send(new sdk.GetMicrovmCommand({ microvmIdentifier: 'mvm-1' }));
    expect(out.startedAt).toBeInstanceOf(Date);
    expect(out.startedAt?.toISOString()).toBe('2026-01-02T03:04:05.678Z');
    expect(JSON.parse(api.responses.at(-1)?.body ?? '').startedAt).toBe(1767323045.678);
  });

  it('round-trips pagination tokens with the SDK paginator', async () => {
    const pages: Record<string, { ids: string[]; next?: string }> = {
      '': { ids: ['a', 'b'], next: 'tok+/=1' },
      'tok+/=1': { ids: ['c', 'd'], next: 'tok 2&x=y' },
      'tok 2&x=y': { ids: ['e'] },
    };
    overrides.ListMicrovms = (input: { nextToken?: string; maxResults?: number }) => {
      const page = pages[input.nextToken ?? ''];
      if (!page) throw new ApiError('ValidationException', 'bad token');
      return {
        items: page.ids.map((microvmId) => ({
          microvmId,
          state: 'RUNNING',
          imageArn: IMAGE_ARN,
          imageVersion: '1.0',
          startedAt: new Date(0),
        })),
        ...(page.next === undefined ? {} : { nextToken: page.next }),
      };
    };
    const ids: string[] = [];
    for await (const page of sdk.paginateListMicrovms({ client: api.client(), pageSize: 2 }, {})) {
      ids.push(...(page.items ?? []).map((i) => i.microvmId as string));
    }
    expect(ids).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(calls.map((c) => c.input)).toEqual([
      { maxResults: 2 },
      { maxResults: 2, nextToken: 'tok+/=1' },
      { maxResults: 2, nextToken: 'tok 2&x=y' },
    ]);
  });
});

describe('errors as the SDK sees them', () => {
  it('ValidationException with the AWS-style message', async () => {
    const e = await sdkError(
      api.client().send(
        new sdk.CreateMicrovmAuthTokenCommand({
          microvmIdentifier: 'mvm-1',
          expirationInMinutes: 61,
          allowedPorts: [{ port: 80 }],
        }),
      ),
    );
    expect(e).toBeInstanceOf(sdk.ValidationException);
    expect(e.message).toBe(
      "1 validation error detected: Value '61' at 'expirationInMinutes' failed to satisfy constraint: Member must have value less than or equal to 60",
    );
    expect(e.code).toBe('VALIDATION');
    expect((e.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(400);
    expect(calls).toHaveLength(0);
    expect(checkResponse('CreateMicrovmAuthToken', 400, api.responses.at(-1)?.body)).toEqual([]);
  });

  const mapped: [string, () => Error, unknown, number, string][] = [
    [
      'ResourceNotFoundException',
      () => new MicrovmNotFoundError('mvm-9'),
      sdk.ResourceNotFoundException,
      404,
      'MICROVM_NOT_FOUND',
    ],
    [
      'ConflictException',
      () => new MicrovmStateConflictError('mvm-9', 'resume', 'RUNNING', ['SUSPENDED']),
      sdk.ConflictException,
      409,
      'MICROVM_CONFLICT',
    ],
    [
      'ServiceQuotaExceededException',
      () => new QuotaExceededError('too many microVMs (limit 2)'),
      sdk.ServiceQuotaExceededException,
      402,
      'QUOTA_EXCEEDED',
    ],
    [
      'InsufficientCapacityException',
      () => new InsufficientCapacityError('no free network slot'),
      sdk.InsufficientCapacityException,
      500,
      'INSUFFICIENT_CAPACITY',
    ],
  ];
  it.each(mapped)(
    '%s from a Hearth error, with its message, code and hint',
    async (_n, make, Class, status, code) => {
      const err = make() as Error & { hint?: string };
      overrides.RunMicrovm = () => {
        throw err;
      };
      const e = await sdkError(api.client().send(new sdk.RunMicrovmCommand({ imageIdentifier: IMAGE_ARN })));
      expect(e).toBeInstanceOf(Class as new () => Error);
      expect(e.message).toBe(err.message);
      expect(e.code).toBe(code);
      expect(e.hint).toBe(err.hint);
      expect((e.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(status);
      const response = api.responses.at(-1);
      expect(response?.headers['x-amzn-ErrorType']).toBe(_n);
      expect(checkResponse('RunMicrovm', status, response?.body)).toEqual([]);
    },
  );

  it('ThrottlingException with Retry-After, ConflictException with resource fields', async () => {
    overrides.SuspendMicrovm = () => {
      throw new ApiError('ThrottlingException', 'slow down', {
        code: 'RATE_LIMITED',
        retryAfterSeconds: 3,
        fields: { quotaCode: 'Q-1' },
      });
    };
    const t = await sdkError(api.client().send(new sdk.SuspendMicrovmCommand({ microvmIdentifier: 'm' })));
    expect(t).toBeInstanceOf(sdk.ThrottlingException);
    expect((t as unknown as sdk.ThrottlingException).retryAfterSeconds).toBe(3);
    expect((t as unknown as sdk.ThrottlingException).quotaCode).toBe('Q-1');

    overrides.ResumeMicrovm = () => {
      throw new ApiError('ConflictException', 'busy', {
        fields: { resourceId: 'm', resourceType: 'microvm' },
      });
    };
    const c = await sdkError(api.client().send(new sdk.ResumeMicrovmCommand({ microvmIdentifier: 'm' })));
    expect(c).toBeInstanceOf(sdk.ConflictException);
    expect((c as unknown as sdk.ConflictException).resourceId).toBe('m');
    expect((c as unknown as sdk.ConflictException).resourceType).toBe('microvm');
  });

  it('InternalServerException with a generic message for unexpected errors (logged, no stack sent)', async () => {
    overrides.GetMicrovm = () => {
      throw new TypeError('cannot read x of undefined at /srv/hearth/secret-path.ts');
    };
    const e = await sdkError(api.client().send(new sdk.GetMicrovmCommand({ microvmIdentifier: 'm' })));
    expect(e).toBeInstanceOf(sdk.InternalServerException);
    const requestId = (e.$metadata as { requestId: string }).requestId;
    expect(e.message).toBe(`Internal server error (request id ${requestId})`);
    expect(e.code).toBe('INTERNAL_ERROR');
    expect(api.responses.at(-1)?.body).not.toContain('secret-path');
    expect(logs.join('\n')).toContain('secret-path');
    expect(logs.join('\n')).toContain(requestId);
  });

  it('500 when a handler returns something the output shape does not allow (strict mode)', async () => {
    overrides.GetMicrovmImage = () => ({ ...CANNED_OUTPUTS.GetMicrovmImage, secretField: 'x' });
    const e = await sdkError(api.client().send(new sdk.GetMicrovmImageCommand({ imageIdentifier: 'app' })));
    expect(e).toBeInstanceOf(sdk.InternalServerException);
    expect(logs.join('\n')).toContain('secretField: not a member of the output shape');
  });

  it('InvalidSignatureException for a wrong secret, UnrecognizedClientException for an unknown key', async () => {
    const bad = await sdkError(
      api.client({ secretAccessKey: 'wrong' }).send(new sdk.ListMicrovmsCommand({})),
    );
    expect(bad.name).toBe('InvalidSignatureException');
    expect(bad).toBeInstanceOf(sdk.LambdaMicrovmsServiceException);
    expect((bad.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(403);
    expect(bad.code).toBe('AUTH_BAD_SIGNATURE');
    const unknown = await sdkError(
      api.client({ accessKeyId: 'AKIDNOBODY' }).send(new sdk.ListMicrovmsCommand({})),
    );
    expect(unknown.name).toBe('UnrecognizedClientException');
    const region = await sdkError(api.client({ region: 'us-east-1' }).send(new sdk.ListMicrovmsCommand({})));
    expect(region.name).toBe('InvalidSignatureException');
    expect(region.message).toContain("this server's region is 'local'");
    expect(calls).toHaveLength(0);
  });

  it("lets the SDK correct a skewed clock from the server's Date header and retry", async () => {
    const ahead = await startTestApi(handlers(), { now: () => Date.now() + 40 * 60_000 });
    const client = new sdk.LambdaMicrovmsClient({
      endpoint: ahead.url,
      region: 'local',
      credentials: TEST_CREDENTIALS,
      maxAttempts: 2,
    });
    try {
      const out = await client.send(new sdk.TerminateMicrovmCommand({ microvmIdentifier: 'm' }));
      expect(out.$metadata.attempts).toBe(2);
      expect(ahead.responses[0]?.headers['x-amzn-ErrorType']).toBe('InvalidSignatureException');
      expect(ahead.responses[0]?.body).toContain('Signature expired');
    } finally {
      client.destroy();
      await ahead.close();
    }
  });

  it('RequestTooLargeException (413) for bodies over the limit', async () => {
    const e = await sdkError(
      api
        .client()
        .send(
          new sdk.TagResourceCommand({ Resource: IMAGE_ARN, Tags: { big: 'x'.repeat(2 * 1024 * 1024) } }),
        ),
    );
    expect(e.name).toBe('RequestTooLargeException');
    expect((e.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(413);
    expect(e.message).toBe('The request body is larger than 1048576 bytes');
    expect(calls).toHaveLength(0);
  });

  it('NotImplementedException (501) for an operation without a handler', async () => {
    const partial = await startTestApi({});
    try {
      const e = await sdkError(partial.client().send(new sdk.ListTagsCommand({ Resource: IMAGE_ARN })));
      expect(e.name).toBe('NotImplementedException');
      expect((e.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(501);
    } finally {
      await partial.close();
    }
  });
});

describe('raw requests', () => {
  it('rejects unknown body fields, naming them', async () => {
    const r = await sendRaw(api.url, {
      method: 'POST',
      path: '/2025-09-09/microvms',
      body: JSON.stringify({
        imageIdentifier: IMAGE_ARN,
        imageName: 'typo',
        idlePolicy: {
          maxIdleDurationSeconds: 60,
          suspendedDurationSeconds: 0,
          autoResumeEnabled: true,
          maxIdle: 5,
        },
      }),
    });
    expect(r.status).toBe(400);
    expect(r.headers['x-amzn-errortype']).toBe('ValidationException');
    const body = r.json as { message: string; code: string };
    expect(body.code).toBe('VALIDATION');
    expect(body.message).toMatch(/^2 validation errors detected: /);
    expect(body.message).toContain(
      "Value at 'imageName' failed to satisfy constraint: Member is not a known field of RunMicrovm",
    );
    expect(body.message).toContain("Value at 'idlePolicy.maxIdle' failed to satisfy constraint");
    expect(calls).toHaveLength(0);
  });

  it('accepts the Hearth extension fields on image operations', async () => {
    const body = {
      name: 'app',
      ...imageConfig,
      diskSizeInMiB: 4096,
      appPort: 3000,
      buildArgs: { V: '1' },
      noCache: true,
    };
    const r = await sendRaw(api.url, {
      method: 'POST',
      path: '/2025-09-09/microvm-images',
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(201);
    expect(calls[0]?.input).toEqual(body);
    expect(checkResponse('CreateMicrovmImage', 201, r.body)).toEqual([]);
  });

  it('answers 400 on malformed JSON', async () => {
    const r = await sendRaw(api.url, {
      method: 'POST',
      path: '/2025-09-09/microvms',
      body: '{"imageIdentifier": ',
    });
    expect(r.status).toBe(400);
    expect(r.headers['x-amzn-errortype']).toBe('ValidationException');
    expect((r.json as { code: string }).code).toBe('API_MALFORMED_BODY');
  });

  it('rejects unsigned, tampered and badly signed requests', async () => {
    const unsigned = await sendRaw(api.url, { method: 'GET', path: '/2025-09-09/microvms' }, { sign: false });
    expect([unsigned.status, unsigned.headers['x-amzn-errortype']]).toEqual([
      403,
      'MissingAuthenticationTokenException',
    ]);
    expect((unsigned.json as { hint: string }).hint).toContain('region local');

    const tampered = await sendRaw(
      api.url,
      { method: 'POST', path: '/2025-09-09/microvms', body: JSON.stringify({ imageIdentifier: 'a' }) },
      { afterSign: (r) => (r.body = JSON.stringify({ imageIdentifier: 'b' })) },
    );
    expect([tampered.status, (tampered.json as { code: string }).code]).toEqual([
      403,
      'AUTH_PAYLOAD_HASH_MISMATCH',
    ]);

    const moved = await sendRaw(
      api.url,
      { method: 'DELETE', path: '/2025-09-09/microvms/mvm-1' },
      { afterSign: (r) => (r.path = '/2025-09-09/microvms/mvm-2') },
    );
    expect([moved.status, (moved.json as { code: string }).code]).toEqual([403, 'AUTH_BAD_SIGNATURE']);

    const old = await sendRaw(
      api.url,
      { method: 'GET', path: '/2025-09-09/microvms' },
      { signingDate: new Date(Date.now() - 3600_000) },
    );
    expect((old.json as { message: string }).message).toMatch(/^Signature expired: /);
    expect(calls).toHaveLength(0);
  });

  it('413 before reading a body that declares more than the limit', async () => {
    const r = await sendRaw(api.url, {
      method: 'POST',
      path: '/2025-09-09/microvms',
      body: Buffer.alloc(3 * 1024 * 1024, 0x20),
    });
    expect(r.status).toBe(413);
    expect(r.headers['x-amzn-errortype']).toBe('RequestTooLargeException');
    expect((r.json as { code: string }).code).toBe('API_PAYLOAD_TOO_LARGE');
  });

  it('404 for unknown paths and 405 for wrong methods (after authentication)', async () => {
    const unknown = await sendRaw(api.url, { method: 'GET', path: '/2025-09-09/nothing' });
    expect([unknown.status, unknown.headers['x-amzn-errortype']]).toEqual([404, 'UnknownOperationException']);
    const method = await sendRaw(api.url, { method: 'PUT', path: '/2025-09-09/microvms/mvm-1' });
    expect([method.status, method.headers['x-amzn-errortype'], method.headers.allow]).toEqual([
      405,
      'MethodNotAllowedException',
      'DELETE, GET',
    ]);
    const unsigned = await sendRaw(api.url, { method: 'GET', path: '/2025-09-09/nothing' }, { sign: false });
    expect(unsigned.status).toBe(403);
  });

  it('serves /healthz and /openapi.json without authentication', async () => {
    const health = await sendRaw(api.url, { method: 'GET', path: '/healthz' }, { sign: false });
    expect([health.status, health.json]).toEqual([200, { status: 'ok' }]);
    const doc = await sendRaw(api.url, { method: 'GET', path: '/openapi.json' }, { sign: false });
    expect(doc.status).toBe(200);
    expect(doc.headers['content-type']).toBe('application/json');
    expect(doc.json).toEqual(JSON.parse(JSON.stringify(buildOpenApiDocument())));
  });

  it('/healthz answers 503 when the health check fails', async () => {
    const sick = await startTestApi(
      {},
      {
        healthCheck: () => {
          throw new Error('store unavailable');
        },
      },
    );
    try {
      const r = await sendRaw(sick.url, { method: 'GET', path: '/healthz' }, { sign: false });
      expect([r.status, r.json]).toEqual([503, { status: 'unavailable', message: 'store unavailable' }]);
    } finally {
      await sick.close();
    }
  });

  it('drops unknown output members when not strict, and logs them', async () => {
    const lenient = await startTestApi(
      { GetMicrovmImage: async () => ({ ...CANNED_OUTPUTS.GetMicrovmImage, internal: 'x' }) as never },
      { strictOutput: false },
    );
    try {
      const out = await lenient.client().send(new sdk.GetMicrovmImageCommand({ imageIdentifier: 'app' }));
      expect(out.name).toBe('app');
      expect(lenient.responses.at(-1)?.body).not.toContain('internal');
      expect(logs.join('\n')).toContain('internal: not a member of the output shape');
    } finally {
      await lenient.close();
    }
  });
});
