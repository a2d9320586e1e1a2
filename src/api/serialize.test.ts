import { describe, expect, it } from 'vitest';
import { getOperation } from './operations.js';
import { serializeOutput, toEpochSeconds } from './serialize.js';

const getMicrovm = getOperation('GetMicrovm').output ?? {};
const base = {
  microvmId: 'm',
  state: 'RUNNING',
  endpoint: 'e',
  imageArn: 'a',
  imageVersion: '1.0',
  maximumDurationInSeconds: 60,
  startedAt: new Date('2026-01-01T00:00:00.250Z'),
};

describe('serializeOutput', () => {
  it('writes timestamps as epoch seconds from Dates, ISO strings and numbers', () => {
    const { value, problems } = serializeOutput(getMicrovm, {
      ...base,
      terminatedAt: '2026-01-01T00:01:00Z',
      idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: false },
    });
    expect(problems).toEqual([]);
    expect(value.startedAt).toBe(1767225600.25);
    expect(value.terminatedAt).toBe(1767225660);
    expect(toEpochSeconds(1767225600.5, 'x', [])).toBe(1767225600.5);
  });

  it('omits undefined and null members and reports unknown ones (dropped)', () => {
    const { value, problems } = serializeOutput(getMicrovm, {
      ...base,
      stateReason: undefined,
      terminatedAt: null,
      tokenGeneration: 3,
    });
    expect(Object.keys(value)).not.toContain('stateReason');
    expect(Object.keys(value)).not.toContain('terminatedAt');
    expect(value).not.toHaveProperty('tokenGeneration');
    expect(problems).toEqual(['tokenGeneration: not a member of the output shape (dropped)']);
  });

  it('reports missing required members, wrong types and bad timestamps', () => {
    const { problems } = serializeOutput(getMicrovm, {
      ...base,
      endpoint: undefined,
      maximumDurationInSeconds: '60',
      startedAt: 'yesterday',
      ingressNetworkConnectors: 'HTTP',
    });
    expect(problems).toEqual([
      'endpoint: required member missing',
      'maximumDurationInSeconds: expected a number, got string',
      'startedAt: not a valid timestamp (yesterday)',
      'ingressNetworkConnectors: expected a list, got string',
    ]);
  });

  it('serializes unions with exactly one member, maps, lists and nested structures', () => {
    const out = getOperation('GetMicrovmImageVersion').output ?? {};
    const { value, problems } = serializeOutput(out, {
      baseImageArn: 'b',
      buildRoleArn: 'r',
      codeArtifact: { uri: 'u' },
      imageArn: 'a',
      imageVersion: '1.0',
      state: 'SUCCESSFUL',
      status: 'ACTIVE',
      createdAt: new Date(0),
      logging: { cloudWatch: { logGroup: 'g', extra: 1 }, disabled: undefined },
      environmentVariables: { A: 'x', B: undefined },
      resources: [{ minimumMemoryInMiB: 512 }],
    });
    expect(value.logging).toEqual({ cloudWatch: { logGroup: 'g' } });
    expect(value.environmentVariables).toEqual({ A: 'x' });
    expect(value.createdAt).toBe(0);
    expect(problems).toEqual(['logging.cloudWatch.extra: not a member of the output shape (dropped)']);
    const bad = serializeOutput(out, { codeArtifact: { uri: 'u', other: 'x' } }).problems;
    expect(bad).toContain('codeArtifact: a union needs exactly one known member, got [uri, other]');
  });

  it('treats undefined output as empty and refuses non-objects', () => {
    expect(serializeOutput({}, undefined)).toEqual({ value: {}, problems: [] });
    expect(serializeOutput({}, 'x').problems).toEqual(['the handler returned string, not an object']);
  });
});
