/**
 * Serializes a handler's output to the restJson1 wire form the AWS SDK reads: only the members of
 * the output shape, undefined and null members omitted, timestamps (Date, ISO string or epoch
 * number) as epoch seconds. Problems (unknown members, missing required members, values of the
 * wrong type) are reported, not thrown: the server logs them, or fails the request in strict mode.
 */
import type { Members, Shape } from './shapes.js';

export interface SerializedOutput {
  value: Record<string, unknown>;
  /** One line per problem, naming the member path. Empty when the output matched its shape. */
  problems: string[];
}

/** Serializes `output` (an object, or undefined for an empty output) against the output members. */
export function serializeOutput(members: Members, output: unknown): SerializedOutput {
  const problems: string[] = [];
  const source = output === undefined || output === null ? {} : output;
  if (!isObject(source)) {
    return { value: {}, problems: [`the handler returned ${typeof source}, not an object`] };
  }
  return { value: serializeStructure(members, source, '', problems), problems };
}

function serializeStructure(
  members: Members,
  value: Record<string, unknown>,
  path: string,
  problems: string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    if (!Object.prototype.hasOwnProperty.call(members, key) && value[key] !== undefined) {
      problems.push(`${join(path, key)}: not a member of the output shape (dropped)`);
    }
  }
  for (const [name, member] of Object.entries(members)) {
    const v = value[name];
    const memberPath = join(path, name);
    if (v === undefined || v === null) {
      if (member.required) problems.push(`${memberPath}: required member missing`);
      continue;
    }
    const serialized = serializeValue(member.shape, v, memberPath, problems);
    if (serialized !== undefined) out[member.wireName ?? name] = serialized;
  }
  return out;
}

function serializeValue(shape: Shape, value: unknown, path: string, problems: string[]): unknown {
  switch (shape.kind) {
    case 'timestamp':
      return toEpochSeconds(value, path, problems);
    case 'string':
      if (typeof value !== 'string') return wrongType(path, 'a string', value, problems);
      return value;
    case 'integer':
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        return wrongType(path, 'a number', value, problems);
      }
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') return wrongType(path, 'a boolean', value, problems);
      return value;
    case 'list':
      if (!Array.isArray(value)) return wrongType(path, 'a list', value, problems);
      return value
        .map((item, i) => serializeValue(shape.member, item, `${path}[${i}]`, problems))
        .filter((item) => item !== undefined);
    case 'map': {
      if (!isObject(value)) return wrongType(path, 'a map', value, problems);
      const entries: [string, unknown][] = [];
      for (const [k, item] of Object.entries(value)) {
        if (item === undefined || item === null) continue;
        const s = serializeValue(shape.value, item, `${path}.${k}`, problems);
        if (s !== undefined) entries.push([k, s]);
      }
      return Object.fromEntries(entries);
    }
    case 'structure':
      if (!isObject(value)) return wrongType(path, 'an object', value, problems);
      return serializeStructure(shape.members, value, path, problems);
    case 'union': {
      if (!isObject(value)) return wrongType(path, 'an object', value, problems);
      const set = Object.keys(value).filter((k) => value[k] !== undefined && value[k] !== null);
      const known = set.filter((k) => Object.prototype.hasOwnProperty.call(shape.members, k));
      if (known.length !== 1 || set.length !== 1) {
        problems.push(`${path}: a union needs exactly one known member, got [${set.join(', ')}]`);
        return undefined;
      }
      const key = known[0] as string;
      const s = serializeValue(shape.members[key] as Shape, value[key], `${path}.${key}`, problems);
      return s === undefined ? undefined : { [key]: s };
    }
  }
}

/** Date, ISO-8601 string or epoch-seconds number -> epoch seconds (fractional to the millisecond). */
export function toEpochSeconds(value: unknown, path: string, problems: string[]): number | undefined {
  let ms: number;
  if (value instanceof Date) ms = value.getTime();
  else if (typeof value === 'string') ms = Date.parse(value);
  else if (typeof value === 'number') ms = value * 1000;
  else return wrongType(path, 'a Date or an ISO-8601 string', value, problems) as undefined;
  if (!Number.isFinite(ms)) {
    problems.push(`${path}: not a valid timestamp (${String(value).slice(0, 40)})`);
    return undefined;
  }
  return Math.round(ms) / 1000;
}

function wrongType(path: string, expected: string, value: unknown, problems: string[]): undefined {
  problems.push(`${path}: expected ${expected}, got ${Array.isArray(value) ? 'array' : typeof value}`);
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}
