import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as sdk from '@aws-sdk/client-lambda-microvms';
import { describe, expect, it } from 'vitest';
import { IMAGE_NAME_PATTERN } from '../core/image-spec.js';
import { EXCEPTIONS, isExceptionName } from './exceptions.js';
import { AWS_OPERATION_NAMES, OPERATIONS, OPERATION_NAMES, getOperation } from './operations.js';
import type { Members, Shape } from './shapes.js';

/**
 * The table is checked against the SDK's own compact Smithy schemas (exported by the client):
 * [9, ns, name, {http: [method, path, status]}, input, output] for operations,
 * [3, ns, name, traits, memberNames, memberSchemas, requiredCount] for structures, [4, ...] unions,
 * [1, ns, name, traits, member] lists, [2, ns, name, traits, key, value] maps, [0, ns, name, traits,
 * target] simple (e.g. sensitive strings); numbers 0 string, 1 number, 2 boolean, 4 timestamp,
 * 64|x list of x, 128|x map of x. Member traits: bitmask (1 httpLabel, 4 idempotencyToken,
 * 8 sensitive) or an object ({httpQuery}, {httpHeader}).
 */
type SdkRef = unknown;

function deref(ref: SdkRef): unknown {
  return typeof ref === 'function' ? (ref as () => unknown)() : ref;
}

/** The SDK schema of a member entry: [target, traits] or just target. */
function memberParts(entry: SdkRef): { target: unknown; traits: Record<string, unknown> } {
  if (Array.isArray(entry) && entry.length === 2) {
    return { target: deref(entry[0]), traits: traitsOf(entry[1]) };
  }
  return { target: deref(entry), traits: {} };
}

function traitsOf(t: unknown): Record<string, unknown> {
  if (typeof t === 'object' && t !== null) return t as Record<string, unknown>;
  const n = Number(t) | 0;
  const names = ['httpLabel', 'idempotent', 'idempotencyToken', 'sensitive', 'httpPayload'];
  return Object.fromEntries(names.filter((_, i) => ((n >> i) & 1) === 1).map((k) => [k, 1]));
}

/** Compares one of our shapes with an SDK schema; returns mismatch descriptions. */
function compareShape(shape: Shape, sdkSchema: unknown, path: string): string[] {
  let target = deref(sdkSchema);
  let sensitive = false;
  // Simple schema wrapper [0, ns, name, traits, target].
  if (Array.isArray(target) && target[0] === 0 && target.length === 5) {
    sensitive = traitsOf(target[3]).sensitive === 1;
    target = deref(target[4]);
  }
  const problems: string[] = [];
  const mismatch = (what: string) => problems.push(`${path}: ${what}`);
  if (shape.kind === 'string' && sensitive !== (shape.sensitive === true)) {
    mismatch(`sensitive is ${String(shape.sensitive === true)}, SDK says ${String(sensitive)}`);
  }
  if (typeof target === 'number') {
    if (target >= 128) {
      if (shape.kind !== 'map') return [`${path}: SDK map, ours ${shape.kind}`];
      return compareShape(shape.value, target & 127, `${path}{}`);
    }
    if (target >= 64) {
      if (shape.kind !== 'list') return [`${path}: SDK list, ours ${shape.kind}`];
      return compareShape(shape.member, target & 63, `${path}[]`);
    }
    const expected = { 0: 'string', 1: 'integer', 2: 'boolean', 4: 'timestamp' }[target];
    if (expected !== shape.kind) mismatch(`SDK ${String(expected)} (${target}), ours ${shape.kind}`);
    return problems;
  }
  if (target === 'unit') {
    if (shape.kind !== 'structure' || Object.keys(shape.members).length > 0)
      mismatch('SDK Unit, ours not empty');
    return problems;
  }
  if (!Array.isArray(target)) return [`${path}: unknown SDK schema ${String(target)}`];
  switch (target[0]) {
    case 1:
      if (shape.kind !== 'list') return [`${path}: SDK list, ours ${shape.kind}`];
      return compareShape(shape.member, memberParts(target[4]).target, `${path}[]`);
    case 2:
      if (shape.kind !== 'map') return [`${path}: SDK map, ours ${shape.kind}`];
      return compareShape(shape.value, memberParts(target[5]).target, `${path}{}`);
    case 3:
      if (shape.kind !== 'structure')
        return [`${path}: SDK structure ${String(target[2])}, ours ${shape.kind}`];
      return compareMembers(shape.members, target, path, false);
    case 4: {
      if (shape.kind !== 'union') return [`${path}: SDK union ${String(target[2])}, ours ${shape.kind}`];
      const names = target[4] as string[];
      const ours = Object.keys(shape.members);
      if (names.join() !== ours.join()) mismatch(`union members SDK [${names.join()}] ours [${ours.join()}]`);
      const schemas = target[5] as unknown[];
      names.forEach((n, i) => {
        const mine = shape.members[n];
        if (mine) problems.push(...compareShape(mine, memberParts(schemas[i]).target, `${path}.${n}`));
      });
      return problems;
    }
  }
  return [`${path}: unexpected SDK schema type ${String(target[0])}`];
}

function compareMembers(members: Members, struct: unknown[], path: string, topLevel: boolean): string[] {
  const names = struct[4] as string[];
  const schemas = struct[5] as unknown[];
  const requiredCount = (struct[6] as number | undefined) ?? 0;
  const problems: string[] = [];
  const ours = Object.entries(members).filter(([, m]) => !m.hearthExtension);
  const ourNames = ours.map(([n]) => n).sort();
  if (ourNames.join() !== [...names].sort().join()) {
    problems.push(`${path}: members SDK [${[...names].sort().join()}] ours [${ourNames.join()}]`);
  }
  names.forEach((name, i) => {
    const member = members[name];
    if (!member) return;
    const { target, traits } = memberParts(schemas[i]);
    const p = path === '' ? name : `${path}.${name}`;
    const required = i < requiredCount;
    if (member.required !== required) problems.push(`${p}: required ours ${member.required} SDK ${required}`);
    if (topLevel) {
      const location = traits.httpLabel
        ? 'label'
        : traits.httpQuery !== undefined
          ? 'query'
          : traits.httpHeader !== undefined
            ? 'header'
            : 'body';
      if (member.location !== location)
        problems.push(`${p}: location ours ${member.location} SDK ${location}`);
      const wire = (traits.httpQuery ?? traits.httpHeader ?? name) as string;
      if ((member.wireName ?? name) !== wire)
        problems.push(`${p}: wire name ours ${member.wireName} SDK ${wire}`);
    }
    if ((member.idempotencyToken === true) !== (traits.idempotencyToken === 1)) {
      problems.push(`${p}: idempotencyToken differs`);
    }
    problems.push(...compareShape(member.shape, target, p));
  });
  return problems;
}

const sdkSchemas = sdk as unknown as Record<string, unknown>;

describe('the operation table', () => {
  it('has the 24 operations of the SDK, no more, no less', () => {
    const sdkOps = Object.keys(sdkSchemas)
      .filter((k) => k.endsWith('$') && Array.isArray(sdkSchemas[k]) && (sdkSchemas[k] as unknown[])[0] === 9)
      .map((k) => k.slice(0, -1))
      .sort();
    expect(sdkOps).toHaveLength(24);
    expect([...AWS_OPERATION_NAMES].sort()).toEqual(sdkOps);
    for (const name of AWS_OPERATION_NAMES) expect(`${name}Command` in sdk).toBe(true);
  });

  it("adds Hearth's own operations under /hearth/v1/, marked as extensions", () => {
    const own = OPERATION_NAMES.filter((n) => !(AWS_OPERATION_NAMES as string[]).includes(n));
    expect(own.sort()).toEqual([
      'CreateNetworkConnector',
      'DeleteNetworkConnector',
      'GetHost',
      'GetNetworkConnector',
      'ListNetworkConnectors',
    ]);
    for (const name of own) {
      expect(getOperation(name).hearthExtension).toBe(true);
      expect(getOperation(name).path).toMatch(/^\/hearth\/v1\//);
      expect(`${name}Command` in sdk).toBe(false);
    }
    for (const name of AWS_OPERATION_NAMES) expect(getOperation(name).hearthExtension).toBeUndefined();
  });

  it.each(AWS_OPERATION_NAMES)('%s matches the SDK schema (method, path, status, members, types)', (name) => {
    const schema = sdkSchemas[`${name}$`] as unknown[];
    const [method, path, status] = (schema[3] as { http: [string, string, number] }).http;
    const op = getOperation(name);
    expect({ method: op.method, path: op.path, status: op.successStatus }).toEqual({ method, path, status });
    const input = deref(schema[4]) as unknown[];
    expect(compareMembers(op.input, input, '', true)).toEqual([]);
    const output = deref(schema[5]);
    if (output === 'unit') expect(op.output).toBeNull();
    else expect(compareMembers(op.output ?? {}, output as unknown[], '', false)).toEqual([]);
  });

  it.each(AWS_OPERATION_NAMES)('%s lists the errors the SDK documents for it', (name) => {
    const require = createRequire(import.meta.url);
    const root = dirname(require.resolve('@aws-sdk/client-lambda-microvms/package.json'));
    const dts = readFileSync(join(root, 'dist-types', 'commands', `${name}Command.d.ts`), 'utf8');
    const documented = [...dts.matchAll(/@throws \{@link (\w+)\}/g)]
      .map((m) => m[1] as string)
      .filter((e) => e !== 'LambdaMicrovmsServiceException')
      .sort();
    expect([...OPERATIONS[name].errors].sort()).toEqual(documented);
    for (const e of documented) {
      expect(isExceptionName(e)).toBe(true);
      expect(EXCEPTIONS[e as keyof typeof EXCEPTIONS].modeled).toBe(true);
    }
  });

  it('gives each exception the status of the SDK model', () => {
    for (const [name, def] of Object.entries(EXCEPTIONS)) {
      const schema = sdkSchemas[`${name}$`] as unknown[] | undefined;
      if (!def.modeled) {
        expect(schema).toBeUndefined();
        continue;
      }
      const traits = (schema as unknown[])[3] as { error: string; httpError: number };
      expect({ name, status: def.status, fault: def.fault }).toEqual({
        name,
        status: traits.httpError,
        fault: traits.error,
      });
    }
  });

  it('keeps the image name rule of the image service', () => {
    const nameShape = OPERATIONS.CreateMicrovmImage.input.name.shape;
    const re = new RegExp(nameShape.pattern as string, 'u');
    for (const s of ['a', 'app-1_x', 'A'.repeat(64), 'A'.repeat(65), '', 'a b', 'é', 'a.b', '-', '_']) {
      const ours =
        re.test(s) && s.length >= (nameShape.minLength ?? 0) && s.length <= (nameShape.maxLength ?? 1e9);
      expect(ours, s).toBe(IMAGE_NAME_PATTERN.test(s));
    }
  });

  it('has unambiguous routes', () => {
    const seen = new Set<string>();
    for (const name of OPERATION_NAMES) {
      const op = getOperation(name);
      const key = `${op.method} ${op.path.replace(/\{[^}]+\}/g, '{}')}`;
      expect(seen.has(key), key).toBe(false);
      seen.add(key);
      for (const [member, m] of Object.entries(op.input)) {
        if (m.location === 'label') expect(op.path).toContain(`{${m.wireName ?? member}}`);
      }
    }
  });
});
