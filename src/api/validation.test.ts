import { describe, expect, it } from 'vitest';
import { RequestValidationError } from './errors.js';
import { getOperation, type OperationName } from './operations.js';
import { validateInput, type RawInput } from './validation.js';

function raw(parts: Partial<RawInput>): RawInput {
  return { labels: {}, query: new Map(), headers: {}, body: undefined, ...parts };
}

function validate(op: OperationName, parts: Partial<RawInput>): Record<string, unknown> {
  return validateInput(getOperation(op), raw(parts));
}

/** The violation messages for a request that must fail. */
function violations(op: OperationName, parts: Partial<RawInput>): string[] {
  try {
    validate(op, parts);
  } catch (e) {
    expect(e).toBeInstanceOf(RequestValidationError);
    return [...(e as RequestValidationError).violations];
  }
  throw new Error('expected a validation error');
}

const RUN = { imageIdentifier: 'arn:aws:lambda:local:0:microvm-image:app' };
const IMAGE = {
  name: 'app',
  baseImageArn: 'arn:aws:lambda:local:aws:microvm-image:debian-12',
  buildRoleArn: 'arn:aws:iam::0:role/x',
  codeArtifact: { uri: 'file:///srv/app' },
};
const TOKEN = { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] };
const mvm = { microvmIdentifier: 'mvm-1' };

describe('validateInput', () => {
  it('formats errors the AWS way, with the limit', () => {
    try {
      validate('CreateMicrovmAuthToken', { labels: mvm, body: { ...TOKEN, expirationInMinutes: 61 } });
      throw new Error('unreachable');
    } catch (e) {
      expect((e as Error).message).toBe(
        "1 validation error detected: Value '61' at 'expirationInMinutes' failed to satisfy constraint: " +
          'Member must have value less than or equal to 60',
      );
      expect((e as RequestValidationError).code).toBe('VALIDATION');
      expect((e as RequestValidationError).exception).toBe('ValidationException');
      expect((e as RequestValidationError).status).toBe(400);
    }
  });

  it('counts and lists several errors', () => {
    try {
      validate('CreateMicrovmAuthToken', { labels: mvm, body: { expirationInMinutes: 0, allowedPorts: [] } });
      throw new Error('unreachable');
    } catch (e) {
      expect((e as Error).message).toMatch(/^2 validation errors detected: /);
      expect((e as Error).message).toContain("Value '0' at 'expirationInMinutes'");
      expect((e as Error).message).toContain(
        "Value at 'allowedPorts' failed to satisfy constraint: Member must have length greater than or equal to 1",
      );
    }
  });

  it('returns only known members, labels and body merged', () => {
    const input = validate('CreateMicrovmAuthToken', { labels: mvm, body: TOKEN });
    expect(input).toEqual({ microvmIdentifier: 'mvm-1', ...TOKEN });
  });

  it('rejects unknown body fields, at any depth, naming them', () => {
    expect(violations('RunMicrovm', { body: { ...RUN, tags: { a: 'b' } } })).toEqual([
      "Value at 'tags' failed to satisfy constraint: Member is not a known field of RunMicrovm (known: " +
        'imageIdentifier, ingressNetworkConnectors, egressNetworkConnectors, imageVersion, executionRoleArn, ' +
        'idlePolicy, logging, runHookPayload, maximumDurationInSeconds, clientToken)',
    ]);
    const nested = violations('RunMicrovm', {
      body: {
        ...RUN,
        idlePolicy: {
          maxIdleDurationSeconds: 60,
          suspendedDurationSeconds: 0,
          autoResumeEnabled: true,
          extra: 1,
        },
      },
    });
    expect(nested).toHaveLength(1);
    expect(nested[0]).toContain(
      "at 'idlePolicy.extra' failed to satisfy constraint: Member is not a known field of IdlePolicy",
    );
  });

  it('says where a member travels when it is sent in the body instead', () => {
    expect(violations('GetMicrovm', { labels: mvm, body: { microvmIdentifier: 'x' } })).toEqual([
      "Value at 'microvmIdentifier' failed to satisfy constraint: Member belongs in the path, not in the body",
    ]);
    expect(violations('SuspendMicrovm', { labels: mvm, body: { force: true } })[0]).toContain(
      '(it takes no body)',
    );
  });

  it('requires required members and rejects nulls of required members', () => {
    expect(violations('RunMicrovm', { body: {} })).toEqual([
      "Value null at 'imageIdentifier' failed to satisfy constraint: Member must not be null",
    ]);
    expect(violations('RunMicrovm', { body: { imageIdentifier: null } })).toHaveLength(1);
    // JSON null is not "absent": the SDKs never send it, and the OpenAPI schemas do not allow it
    expect(violations('RunMicrovm', { body: { ...RUN, imageVersion: null } })).toEqual([
      "Value null at 'imageVersion' failed to satisfy constraint: Member must not be null",
    ]);
    expect(violations('RunMicrovm', { body: { ...RUN, logging: { disabled: null } } })).toEqual([
      "Value null at 'logging.disabled' failed to satisfy constraint: Member must not be null",
    ]);
    expect(violations('CreateMicrovmImage', { body: { name: 'app' } }).map((v) => v.split("'")[1])).toEqual([
      'baseImageArn',
      'buildRoleArn',
      'codeArtifact',
    ]);
  });

  it('requires a JSON object body', () => {
    expect(violations('RunMicrovm', { body: [1] })[0]).toContain('The request body must be a JSON object');
    expect(violations('RunMicrovm', { body: 'x' })[0]).toContain('at the request body');
  });

  it('checks types', () => {
    const v = violations('RunMicrovm', {
      body: {
        imageIdentifier: 5,
        maximumDurationInSeconds: '60',
        ingressNetworkConnectors: 'HTTP',
        logging: [],
      },
    });
    expect(v).toEqual([
      "Value '5' at 'imageIdentifier' failed to satisfy constraint: Member must be a string",
      "Value 'HTTP' at 'ingressNetworkConnectors' failed to satisfy constraint: Member must be a list",
      "Value at 'logging' failed to satisfy constraint: Member must be a union (a JSON object with one member)",
      "Value '60' at 'maximumDurationInSeconds' failed to satisfy constraint: Member must be an integer",
    ]);
    expect(violations('RunMicrovm', { body: { ...RUN, maximumDurationInSeconds: 1.5 } })[0]).toContain(
      'Member must be an integer',
    );
    expect(
      violations('RunMicrovm', {
        body: {
          ...RUN,
          idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: 'yes' },
        },
      })[0],
    ).toContain("at 'idlePolicy.autoResumeEnabled' failed to satisfy constraint: Member must be a boolean");
  });

  describe('limits of the reference', () => {
    const cases: [string, OperationName, Partial<RawInput>, string][] = [
      [
        'image name pattern',
        'CreateMicrovmImage',
        { body: { ...IMAGE, name: 'a b' } },
        'Member must satisfy regular expression pattern: ^[a-zA-Z0-9_-]+$',
      ],
      [
        'image name length',
        'CreateMicrovmImage',
        { body: { ...IMAGE, name: 'a'.repeat(65) } },
        'Member must have length less than or equal to 64',
      ],
      [
        'image name empty',
        'CreateMicrovmImage',
        { body: { ...IMAGE, name: '' } },
        'Member must have length greater than or equal to 1',
      ],
      [
        'runHookPayload bytes',
        'RunMicrovm',
        { body: { ...RUN, runHookPayload: 'é'.repeat(2049) } },
        'Member must have length less than or equal to 4096 bytes (UTF-8)',
      ],
      [
        'maximumDurationInSeconds low',
        'RunMicrovm',
        { body: { ...RUN, maximumDurationInSeconds: 0 } },
        'Member must have value greater than or equal to 1',
      ],
      [
        'maximumDurationInSeconds high',
        'RunMicrovm',
        { body: { ...RUN, maximumDurationInSeconds: 28_801 } },
        'Member must have value less than or equal to 28800',
      ],
      [
        'expirationInMinutes',
        'CreateMicrovmShellAuthToken',
        { labels: mvm, body: { expirationInMinutes: 0 } },
        'Member must have value greater than or equal to 1',
      ],
      [
        'maxResults high',
        'ListMicrovms',
        { query: new Map([['maxResults', ['1001']]]) },
        'Member must have value less than or equal to 1000',
      ],
      [
        'maxResults low',
        'ListMicrovmImages',
        { query: new Map([['maxResults', ['0']]]) },
        'Member must have value greater than or equal to 1',
      ],
      [
        'clientToken',
        'RunMicrovm',
        { body: { ...RUN, clientToken: 'x'.repeat(129) } },
        'Member must have length less than or equal to 128',
      ],
      [
        'idle policy incomplete',
        'RunMicrovm',
        { body: { ...RUN, idlePolicy: { maxIdleDurationSeconds: 60 } } },
        "Value null at 'idlePolicy.suspendedDurationSeconds' failed to satisfy constraint: Member must not be null",
      ],
      [
        'maxIdleDurationSeconds',
        'RunMicrovm',
        {
          body: {
            ...RUN,
            idlePolicy: {
              maxIdleDurationSeconds: 28_801,
              suspendedDurationSeconds: 0,
              autoResumeEnabled: true,
            },
          },
        },
        "Value '28801' at 'idlePolicy.maxIdleDurationSeconds' failed to satisfy constraint: Member must have value less than or equal to 28800",
      ],
      [
        'suspendedDurationSeconds',
        'RunMicrovm',
        {
          body: {
            ...RUN,
            idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: -1, autoResumeEnabled: true },
          },
        },
        'Member must have value greater than or equal to 0',
      ],
      [
        'port',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{ port: 65_536 }] } },
        "Value '65536' at 'allowedPorts.1.member.port' failed to satisfy constraint: Member must have value less than or equal to 65535",
      ],
      [
        'range order',
        'CreateMicrovmAuthToken',
        {
          labels: mvm,
          body: { ...TOKEN, allowedPorts: [{ port: 80 }, { range: { startPort: 9000, endPort: 8000 } }] },
        },
        "Value at 'allowedPorts.2.member.range' failed to satisfy constraint: startPort must be less than or equal to endPort",
      ],
      [
        'range incomplete',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{ range: { startPort: 1 } }] } },
        "Value null at 'allowedPorts.1.member.range.endPort'",
      ],
      [
        'union with two members',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{ port: 1, allPorts: {} }] } },
        'Member must have exactly one of its members set: port, range, allPorts',
      ],
      [
        'union with none',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{}] } },
        'Member must have exactly one of its members set',
      ],
      [
        'allPorts takes no fields',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{ allPorts: { x: 1 } }] } },
        "at 'allowedPorts.1.member.allPorts.x' failed to satisfy constraint: Member is not a known field of Unit",
      ],
      [
        'union unknown member',
        'CreateMicrovmAuthToken',
        { labels: mvm, body: { ...TOKEN, allowedPorts: [{ ports: [1] }] } },
        "at 'allowedPorts.1.member.ports' failed to satisfy constraint: Member is not a known member of PortSpecification",
      ],
      [
        'connectors',
        'RunMicrovm',
        { body: { ...RUN, egressNetworkConnectors: Array.from({ length: 11 }, (_, i) => `c${i}`) } },
        "Value at 'egressNetworkConnectors' failed to satisfy constraint: Member must have length less than or equal to 10",
      ],
      [
        'memory size',
        'CreateMicrovmImage',
        { body: { ...IMAGE, resources: [{ minimumMemoryInMiB: 32_768 }] } },
        "Value '32768' at 'resources.1.member.minimumMemoryInMiB' failed to satisfy constraint: Member must satisfy enum value set: [512, 1024, 2048, 4096, 8192]",
      ],
      [
        'environment variables count',
        'CreateMicrovmImage',
        {
          body: {
            ...IMAGE,
            environmentVariables: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`V${i}`, 'x'])),
          },
        },
        "Value at 'environmentVariables' failed to satisfy constraint: Member must have length less than or equal to 50",
      ],
      [
        'environment variable name',
        'UpdateMicrovmImage',
        {
          labels: { imageIdentifier: 'app' },
          body: { ...IMAGE, name: undefined, environmentVariables: { 'A=B': 'x' } },
        },
        "Value 'A=B' at 'environmentVariables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: ^[A-Za-z_][A-Za-z0-9_]*$]",
      ],
      [
        'tags count',
        'TagResource',
        {
          labels: { Resource: 'arn:x' },
          body: { Tags: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) },
        },
        "Value at 'Tags' failed to satisfy constraint: Member must have length less than or equal to 50",
      ],
      [
        'ready timeout',
        'CreateMicrovmImage',
        { body: { ...IMAGE, hooks: { port: 9000, microvmImageHooks: { readyTimeoutInSeconds: 3601 } } } },
        "Value '3601' at 'hooks.microvmImageHooks.readyTimeoutInSeconds' failed to satisfy constraint: Member must have value less than or equal to 3600",
      ],
      [
        'validate timeout',
        'CreateMicrovmImage',
        { body: { ...IMAGE, hooks: { microvmImageHooks: { validateTimeoutInSeconds: 0 } } } },
        'Member must have value greater than or equal to 1',
      ],
      [
        'runtime hook timeout',
        'CreateMicrovmImage',
        { body: { ...IMAGE, hooks: { microvmHooks: { suspendTimeoutInSeconds: 61 } } } },
        "at 'hooks.microvmHooks.suspendTimeoutInSeconds' failed to satisfy constraint: Member must have value less than or equal to 60",
      ],
      [
        'hook state',
        'CreateMicrovmImage',
        { body: { ...IMAGE, hooks: { microvmHooks: { run: 'ON' } } } },
        'Member must satisfy enum value set: [ENABLED, DISABLED]',
      ],
      [
        'version status',
        'UpdateMicrovmImageVersion',
        { labels: { imageIdentifier: 'app', imageVersion: '1.0' }, body: { status: 'DELETED' } },
        "Value 'DELETED' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [ACTIVE, INACTIVE]",
      ],
      [
        'capabilities',
        'CreateMicrovmImage',
        { body: { ...IMAGE, additionalOsCapabilities: ['SYS_ADMIN'] } },
        'Member must satisfy enum value set: [ALL]',
      ],
      [
        'logging union',
        'RunMicrovm',
        { body: { ...RUN, logging: { disabled: {}, cloudWatch: {} } } },
        'Member must have exactly one of its members set: disabled, cloudWatch',
      ],
      [
        'disk size (Hearth)',
        'CreateMicrovmImage',
        { body: { ...IMAGE, diskSizeInMiB: 255 } },
        'Member must have value greater than or equal to 256',
      ],
      [
        'disk size max (Hearth)',
        'UpdateMicrovmImage',
        { labels: { imageIdentifier: 'app' }, body: { ...IMAGE, name: undefined, diskSizeInMiB: 32_769 } },
        'Member must have value less than or equal to 32768',
      ],
      ['app port (Hearth)', 'CreateMicrovmImage', { body: { ...IMAGE, appPort: 0 } }, "at 'appPort'"],
      [
        'build args count (Hearth)',
        'CreateMicrovmImage',
        {
          body: {
            ...IMAGE,
            buildArgs: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`A${i}`, 'x'])),
          },
        },
        'Member must have length less than or equal to 100',
      ],
      [
        'noCache type (Hearth)',
        'CreateMicrovmImage',
        { body: { ...IMAGE, noCache: 'yes' } },
        "Value 'yes' at 'noCache' failed to satisfy constraint: Member must be a boolean",
      ],
      [
        'untag keys required',
        'UntagResource',
        { labels: { Resource: 'arn:x' } },
        "Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
      ],
    ];
    it.each(cases)('%s', (_name, op, parts, expected) => {
      const body = parts.body as Record<string, unknown> | undefined;
      if (body && 'name' in body && body.name === undefined) delete body.name;
      const v = violations(op, parts);
      expect(v.join('\n')).toContain(expected);
    });

    it('accepts the values at the limits', () => {
      expect(
        validate('RunMicrovm', {
          body: {
            ...RUN,
            runHookPayload: 'é'.repeat(2048),
            maximumDurationInSeconds: 28_800,
            clientToken: 'x'.repeat(128),
            idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 0, autoResumeEnabled: false },
            ingressNetworkConnectors: Array.from({ length: 10 }, (_, i) => `c${i}`),
            logging: { cloudWatch: { logGroup: 'g' } },
          },
        }).maximumDurationInSeconds,
      ).toBe(28_800);
      const token = validate('CreateMicrovmAuthToken', {
        labels: mvm,
        body: {
          expirationInMinutes: 60,
          allowedPorts: [
            { port: 1 },
            { port: 65_535 },
            { range: { startPort: 8000, endPort: 8000 } },
            { allPorts: {} },
          ],
        },
      });
      expect(token.allowedPorts).toEqual([
        { port: 1 },
        { port: 65_535 },
        { range: { startPort: 8000, endPort: 8000 } },
        { allPorts: {} },
      ]);
      const image = validate('CreateMicrovmImage', {
        body: {
          ...IMAGE,
          name: 'A'.repeat(64),
          resources: [{ minimumMemoryInMiB: 8192 }],
          environmentVariables: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`V${i}`, 'x'])),
          tags: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, 'v'])),
          hooks: {
            port: 9000,
            microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 3600, validateTimeoutInSeconds: 1 },
            microvmHooks: { run: 'ENABLED', runTimeoutInSeconds: 60, terminateTimeoutInSeconds: 1 },
          },
          diskSizeInMiB: 32_768,
          appPort: 65_535,
          buildArgs: { VERSION: '1' },
          noCache: true,
          cpuConfigurations: [{ architecture: 'X86_64' }],
          additionalOsCapabilities: ['ALL'],
        },
      });
      expect(image).toMatchObject({
        diskSizeInMiB: 32_768,
        appPort: 65_535,
        noCache: true,
        buildArgs: { VERSION: '1' },
      });
    });
  });

  it('never echoes sensitive values', () => {
    const secret = 'supersecret-\u0000';
    const v = violations('RunMicrovm', { body: { ...RUN, runHookPayload: secret + 'x'.repeat(5000) } });
    expect(v.join()).not.toContain('supersecret');
    const env = violations('CreateMicrovmImage', {
      body: { ...IMAGE, environmentVariables: { TOKEN: 'supersecret'.repeat(500) } },
    });
    expect(env).toEqual([
      "Value at 'environmentVariables.TOKEN' failed to satisfy constraint: Member must have length less than or equal to 4096",
    ]);
  });

  it('rejects NUL characters and unpaired surrogates in strings', () => {
    expect(violations('RunMicrovm', { body: { imageIdentifier: 'a\u0000b' } })[0]).toContain(
      'Member must not contain NUL characters',
    );
    expect(violations('RunMicrovm', { body: { imageIdentifier: 'a\ud800b' } })[0]).toContain(
      'Member must be valid Unicode',
    );
    expect(validate('RunMicrovm', { body: { imageIdentifier: 'a\ud83d\ude00' } }).imageIdentifier).toBe(
      'a\u{1F600}',
    );
  });

  it('keeps map keys such as __proto__ as plain keys', () => {
    const body = JSON.parse('{"Tags":{"__proto__":"x","constructor":"y"}}') as unknown;
    const input = validate('TagResource', { labels: { Resource: 'arn:x' }, body });
    const tags = input.Tags as Record<string, string>;
    expect(Object.keys(tags)).toEqual(['__proto__', 'constructor']);
    expect(Object.getPrototypeOf(tags)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  describe('query parameters', () => {
    it('parses integers and repeated list parameters', () => {
      expect(
        validate('ListMicrovms', {
          query: new Map([
            ['maxResults', ['25']],
            ['nextToken', ['abc']],
          ]),
        }),
      ).toEqual({
        maxResults: 25,
        nextToken: 'abc',
      });
      expect(
        validate('UntagResource', {
          labels: { Resource: 'arn:x' },
          query: new Map([['tagKeys', ['a', 'b c']]]),
        }),
      ).toEqual({ Resource: 'arn:x', TagKeys: ['a', 'b c'] });
    });

    it('rejects unknown, repeated and malformed parameters', () => {
      expect(violations('ListMicrovms', { query: new Map([['limit', ['5']]]) })).toEqual([
        "Value at 'limit' failed to satisfy constraint: Query parameter is not known to ListMicrovms (known: maxResults, nextToken, imageIdentifier, imageVersion)",
      ]);
      expect(violations('GetMicrovm', { labels: mvm, query: new Map([['x', ['1']]]) })[0]).toContain(
        '(it takes none)',
      );
      expect(violations('ListMicrovms', { query: new Map([['maxResults', ['1', '2']]]) })[0]).toContain(
        'Member must not be repeated',
      );
      expect(violations('ListMicrovms', { query: new Map([['maxResults', ['ten']]]) })).toEqual([
        "Value 'ten' at 'maxResults' failed to satisfy constraint: Member must be an integer",
      ]);
      expect(
        violations('ListMicrovmImageBuilds', {
          labels: { imageIdentifier: 'app', imageVersion: '1.0' },
          query: new Map([['architecture', ['MIPS']]]),
        })[0],
      ).toContain('Member must satisfy enum value set: [ARM_64, X86_64]');
    });
  });

  it('lists at most ten violations and counts them all', () => {
    const body = {
      ...IMAGE,
      environmentVariables: Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`${i}bad`, 'x'])),
    };
    try {
      validate('CreateMicrovmImage', { body });
      throw new Error('unreachable');
    } catch (e) {
      expect((e as Error).message).toMatch(/^12 validation errors detected: /);
      expect((e as Error).message).toMatch(/; and 2 more$/);
    }
  });
});
