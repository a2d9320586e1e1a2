/**
 * Strict validation of an operation's input, with AWS-style messages:
 *
 *   1 validation error detected: Value '61' at 'expirationInMinutes' failed to satisfy constraint:
 *   Member must have value less than or equal to 60
 *
 * Unknown body fields and query parameters are rejected (named), types are checked, required members
 * required, and every constraint of the shape model (shapes.ts) enforced. Values of sensitive
 * members are never echoed. The result is a fresh object holding only known members (labels, query,
 * headers and body merged under member names), so handlers never see what they did not ask for.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { RequestValidationError } from './errors.js';
import type { OperationDef } from './operations.js';
import type { Member, Members, Shape, StringShape } from './shapes.js';

/** The parts of a request an operation's input is drawn from. */
export interface RawInput {
  /** Path labels, percent-decoded, by label name. */
  labels: Readonly<Record<string, string>>;
  /** Query parameters, percent-decoded, in order of appearance. */
  query: ReadonlyMap<string, readonly string[]>;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or undefined when the body is empty. */
  body: unknown;
}

/**
 * Validates and assembles the input of `op`. Throws RequestValidationError listing every violation.
 */
export function validateInput(op: OperationDef, raw: RawInput): Record<string, unknown> {
  const v = new Violations();
  const out: Record<string, unknown> = {};
  const members = Object.entries(op.input);

  // Query parameters: every key must be a query member.
  const queryMembers = new Map(
    members.filter(([, m]) => m.location === 'query').map(([name, m]) => [m.wireName ?? name, name]),
  );
  for (const key of raw.query.keys()) {
    if (!queryMembers.has(key)) {
      const known = [...queryMembers.keys()];
      v.add(
        key,
        undefined,
        `Query parameter is not known to ${op.name}` +
          (known.length > 0 ? ` (known: ${known.join(', ')})` : ' (it takes none)'),
        true,
      );
    }
  }

  // The body: a JSON object (or nothing) whose keys are all body members.
  let body: Record<string, unknown> = {};
  if (raw.body !== undefined) {
    if (!isPlainObject(raw.body)) {
      v.add('', undefined, 'The request body must be a JSON object', true);
    } else {
      body = raw.body;
      const bodyMembers = new Map(
        members.filter(([, m]) => m.location === 'body').map(([name, m]) => [m.wireName ?? name, name]),
      );
      for (const key of Object.keys(body)) {
        if (bodyMembers.has(key)) continue;
        const elsewhere = op.input[key];
        v.add(
          key,
          undefined,
          elsewhere
            ? `Member belongs in the ${LOCATION_WORDS[elsewhere.location]}, not in the body`
            : `Member is not a known field of ${op.name}` +
                (bodyMembers.size > 0
                  ? ` (known: ${[...bodyMembers.keys()].join(', ')})`
                  : ' (it takes no body)'),
          true,
        );
      }
    }
  }

  for (const [name, member] of members) {
    const wire = member.wireName ?? name;
    let texts: readonly string[] | undefined;
    let value: unknown;
    switch (member.location) {
      case 'label': {
        const text = raw.labels[wire];
        if (text !== undefined) texts = [text];
        break;
      }
      case 'query':
        texts = raw.query.get(wire);
        break;
      case 'header': {
        const h = raw.headers[wire.toLowerCase()];
        if (h !== undefined) texts = Array.isArray(h) ? h : [h];
        break;
      }
      case 'body':
        value = Object.prototype.hasOwnProperty.call(body, wire) ? body[wire] : undefined;
        break;
    }
    if (texts !== undefined) {
      const before = v.list.length;
      value = fromText(member.shape, texts, member.location === 'label' ? name : wire, v);
      if (v.list.length > before) continue;
    }
    const checked = checkMember(
      member,
      value,
      member.location === 'body' ? name : (member.wireName ?? name),
      v,
    );
    if (checked !== undefined) out[name] = checked;
  }

  if (v.list.length > 0) throw new RequestValidationError(v.list);
  return out;
}

const LOCATION_WORDS = { label: 'path', query: 'query string', header: 'headers', body: 'body' } as const;

/**
 * Checks one value against a shape; returns the sanitized value (undefined when absent or invalid)
 * and records violations under `path`. Exported for tests and for checks of nested values.
 */
export function checkShape(shape: Shape, value: unknown, path: string, v: Violations): unknown {
  switch (shape.kind) {
    case 'string':
      return checkString(shape, value, path, v);
    case 'integer': {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
        v.add(path, value, 'Member must be an integer');
        return undefined;
      }
      let ok = true;
      if (shape.values !== undefined && !shape.values.includes(value)) {
        v.add(path, value, `Member must satisfy enum value set: [${shape.values.join(', ')}]`);
        ok = false;
      }
      if (shape.min !== undefined && value < shape.min) {
        v.add(path, value, `Member must have value greater than or equal to ${shape.min}`);
        ok = false;
      }
      if (shape.max !== undefined && value > shape.max) {
        v.add(path, value, `Member must have value less than or equal to ${shape.max}`);
        ok = false;
      }
      return ok ? value : undefined;
    }
    case 'boolean':
      if (typeof value !== 'boolean') {
        v.add(path, value, 'Member must be a boolean');
        return undefined;
      }
      return value;
    case 'timestamp': {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        v.add(path, value, 'Member must be a timestamp in epoch seconds');
        return undefined;
      }
      return new Date(Math.round(value * 1000));
    }
    case 'list': {
      if (!Array.isArray(value)) {
        v.add(path, value, 'Member must be a list');
        return undefined;
      }
      let ok = checkCount(value.length, shape.minItems, shape.maxItems, path, v);
      const out: unknown[] = [];
      value.forEach((item, i) => {
        const itemPath = `${path}.${i + 1}.member`;
        if (item === null || item === undefined) {
          v.add(itemPath, null, 'Member must not be null');
          ok = false;
          return;
        }
        const checked = checkShape(shape.member, item, itemPath, v);
        if (checked === undefined) ok = false;
        out.push(checked);
      });
      return ok ? out : undefined;
    }
    case 'map': {
      if (!isPlainObject(value)) {
        v.add(path, value, 'Member must be a map (a JSON object)');
        return undefined;
      }
      const entries = Object.entries(value);
      let ok = checkCount(entries.length, undefined, shape.maxEntries, path, v);
      const out: [string, unknown][] = [];
      for (const [key, item] of entries) {
        const keyViolations = new Violations();
        checkString(shape.key, key, path, keyViolations);
        if (keyViolations.constraints.length > 0) {
          v.add(path, key, `Map keys must satisfy constraint: [${keyViolations.constraints.join(', ')}]`);
          ok = false;
          continue;
        }
        const itemPath = `${path}.${key}`;
        if (item === null || item === undefined) {
          v.add(itemPath, null, 'Member must not be null');
          ok = false;
          continue;
        }
        const checked = checkShape(shape.value, item, itemPath, v);
        if (checked === undefined) ok = false;
        else out.push([key, checked]);
      }
      // fromEntries defines own properties, so a key such as __proto__ stays a plain key.
      return ok ? Object.fromEntries(out) : undefined;
    }
    case 'structure': {
      if (!isPlainObject(value)) {
        v.add(path, value, 'Member must be a structure (a JSON object)');
        return undefined;
      }
      const before = v.list.length;
      const out = checkStructure(shape.name, shape.members, value, path, v);
      if (v.list.length > before) return undefined;
      const problem = shape.check?.(out);
      if (problem !== undefined) {
        v.add(path, undefined, problem);
        return undefined;
      }
      return out;
    }
    case 'union': {
      if (!isPlainObject(value)) {
        v.add(path, value, 'Member must be a union (a JSON object with one member)');
        return undefined;
      }
      const names = Object.keys(shape.members);
      const set = Object.keys(value);
      const unknown = set.filter((k) => !Object.prototype.hasOwnProperty.call(shape.members, k));
      for (const k of unknown) {
        v.add(
          join(path, k),
          undefined,
          `Member is not a known member of ${shape.name} (known: ${names.join(', ')})`,
        );
      }
      if (unknown.length > 0) return undefined;
      if (set.length !== 1) {
        v.add(path, undefined, `Member must have exactly one of its members set: ${names.join(', ')}`);
        return undefined;
      }
      const key = set[0] as string;
      if (value[key] === null) {
        v.add(join(path, key), null, 'Member must not be null');
        return undefined;
      }
      const checked = checkShape(shape.members[key] as Shape, value[key], join(path, key), v);
      return checked === undefined ? undefined : { [key]: checked };
    }
  }
}

function checkStructure(
  name: string,
  members: Members,
  value: Record<string, unknown>,
  path: string,
  v: Violations,
): Record<string, unknown> {
  for (const key of Object.keys(value)) {
    if (!Object.prototype.hasOwnProperty.call(members, key)) {
      const known = Object.keys(members);
      v.add(
        join(path, key),
        undefined,
        `Member is not a known field of ${name}` +
          (known.length > 0 ? ` (known: ${known.join(', ')})` : ' (it has no fields)'),
      );
    }
  }
  const out: Record<string, unknown> = {};
  for (const [memberName, member] of Object.entries(members)) {
    const checked = checkMember(member, value[memberName], join(path, memberName), v);
    if (checked !== undefined) out[memberName] = checked;
  }
  return out;
}

/** Absent (undefined) is fine for optional members; JSON null never is (the SDKs never send it). */
function checkMember(member: Member, value: unknown, path: string, v: Violations): unknown {
  if (value === null || (value === undefined && member.required)) {
    v.add(path, null, 'Member must not be null');
    return undefined;
  }
  if (value === undefined) return undefined;
  return checkShape(member.shape, value, path, v);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const patternCache = new Map<string, RegExp>();

function compiled(pattern: string): RegExp {
  let re = patternCache.get(pattern);
  if (re === undefined) {
    re = new RegExp(pattern, 'u');
    patternCache.set(pattern, re);
  }
  return re;
}

function checkString(shape: StringShape, value: unknown, path: string, v: Violations): string | undefined {
  const sensitive = shape.sensitive === true;
  if (typeof value !== 'string') {
    v.add(path, value, 'Member must be a string', sensitive);
    return undefined;
  }
  let ok = true;
  const fail = (constraint: string) => {
    v.add(path, value, constraint, sensitive);
    ok = false;
  };
  if (value.includes('\u0000')) fail('Member must not contain NUL characters');
  if (LONE_SURROGATE.test(value)) fail('Member must be valid Unicode (no unpaired surrogates)');
  if (shape.enum !== undefined && !shape.enum.includes(value)) {
    fail(`Member must satisfy enum value set: [${shape.enum.join(', ')}]`);
  }
  if (shape.minLength !== undefined && value.length < shape.minLength) {
    fail(`Member must have length greater than or equal to ${shape.minLength}`);
  }
  if (shape.maxBytes !== undefined && Buffer.byteLength(value, 'utf8') > shape.maxBytes) {
    fail(`Member must have length less than or equal to ${shape.maxBytes} bytes (UTF-8)`);
  } else if (shape.maxLength !== undefined && value.length > shape.maxLength) {
    fail(`Member must have length less than or equal to ${shape.maxLength}`);
  }
  if (shape.pattern !== undefined && !compiled(shape.pattern).test(value)) {
    fail(`Member must satisfy regular expression pattern: ${shape.pattern}`);
  }
  return ok ? value : undefined;
}

function checkCount(
  count: number,
  min: number | undefined,
  max: number | undefined,
  path: string,
  v: Violations,
): boolean {
  if (min !== undefined && count < min) {
    v.add(path, undefined, `Member must have length greater than or equal to ${min}`);
    return false;
  }
  if (max !== undefined && count > max) {
    v.add(path, undefined, `Member must have length less than or equal to ${max}`);
    return false;
  }
  return true;
}

/**
 * Turns the text of a label, query parameter or header into a value of `shape` (integers and
 * booleans parsed, lists from repeated parameters); the shape's checks run afterwards.
 */
function fromText(shape: Shape, texts: readonly string[], path: string, v: Violations): unknown {
  if (shape.kind === 'list') return texts.map((t) => scalarFromText(shape.member, t, path, v));
  if (texts.length !== 1) {
    v.add(path, undefined, 'Member must not be repeated', true);
    return undefined;
  }
  return scalarFromText(shape, texts[0] as string, path, v);
}

function scalarFromText(shape: Shape, text: string, path: string, v: Violations): unknown {
  switch (shape.kind) {
    case 'integer':
      if (!/^-?\d{1,16}$/.test(text)) {
        v.add(path, text, 'Member must be an integer');
        return undefined;
      }
      return Number(text);
    case 'boolean':
      if (text !== 'true' && text !== 'false') {
        v.add(path, text, 'Member must be a boolean (true or false)');
        return undefined;
      }
      return text === 'true';
    default:
      return text;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** Violations collected while checking one request, formatted the AWS way. */
export class Violations {
  readonly list: string[] = [];
  /** The bare constraint texts, for nesting (map keys). */
  readonly constraints: string[] = [];

  /**
   * Records that the value at `path` failed `constraint`. Scalars are quoted in the message
   * (truncated) unless `hideValue`; null is written as null; objects and lists are not shown.
   */
  add(path: string, value: unknown, constraint: string, hideValue = false): void {
    this.constraints.push(constraint);
    const at = path === '' ? 'the request body' : `'${path}'`;
    this.list.push(`${describeValue(value, hideValue)} at ${at} failed to satisfy constraint: ${constraint}`);
  }
}

function isControl(c: string): boolean {
  const code = c.codePointAt(0) ?? 0;
  return code < 0x20 || code === 0x7f;
}

function describeValue(value: unknown, hide: boolean): string {
  if (value === null) return 'Value null';
  if (hide || value === undefined) return 'Value';
  if (typeof value === 'string') {
    const shown = value.length > 64 ? `${value.slice(0, 64)}...` : value;
    return `Value '${[...shown].map((c) => (isControl(c) ? '?' : c)).join('')}'`;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return `Value '${String(value)}'`;
  return 'Value';
}
