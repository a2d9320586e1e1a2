/**
 * A small model of the API's data shapes, close to the Smithy model the AWS SDK is generated from:
 * strings, integers, booleans, timestamps, lists, maps, structures and unions, with the constraints
 * Hearth enforces (lengths, ranges, patterns, enums). One description drives everything generic in
 * src/api: request validation (validation.ts), response serialization (serialize.ts), the OpenAPI
 * document (openapi.ts) and, at the type level, the handlers' input and output types.
 *
 * Constructors return literal types (`const` type parameters), so `ValueOf<typeof shape, 'in'>` is
 * the exact TypeScript type of a validated value.
 */

export interface StringShape {
  readonly kind: 'string';
  readonly enum?: readonly string[];
  /** Length in UTF-16 code units, as JSON Schema and the AWS models count it. */
  readonly minLength?: number;
  readonly maxLength?: number;
  /** Length in UTF-8 bytes (a limit JSON Schema cannot state; documented as `x-hearth-max-bytes`). */
  readonly maxBytes?: number;
  /** An ECMAScript regular expression the whole value must match (anchors included). */
  readonly pattern?: string;
  /** Never echoed in error messages or logs. */
  readonly sensitive?: boolean;
  readonly doc?: string;
}

export interface IntegerShape {
  readonly kind: 'integer';
  readonly min?: number;
  readonly max?: number;
  /** The only values allowed, when the set is closed (e.g. memory sizes). */
  readonly values?: readonly number[];
  readonly doc?: string;
}

export interface BooleanShape {
  readonly kind: 'boolean';
  readonly doc?: string;
}

/** On the wire (restJson1): epoch seconds, a JSON number. Handlers may return a Date or an ISO string. */
export interface TimestampShape {
  readonly kind: 'timestamp';
  readonly doc?: string;
}

export interface ListShape<M extends Shape = Shape> {
  readonly kind: 'list';
  readonly member: M;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly doc?: string;
}

export interface MapShape<V extends Shape = Shape> {
  readonly kind: 'map';
  readonly key: StringShape;
  readonly value: V;
  readonly maxEntries?: number;
  readonly doc?: string;
}

/** Where an operation's input member travels on the wire; output members are always in the body. */
export type Location = 'label' | 'query' | 'header' | 'body';

export interface Member<S extends Shape = Shape> {
  readonly shape: S;
  readonly required: boolean;
  readonly location: Location;
  /** The name on the wire (query key, header name, JSON key); the member name when absent. */
  readonly wireName?: string;
  /** Filled in by the AWS SDK with a random UUID when the caller leaves it out. */
  readonly idempotencyToken?: boolean;
  /** Accepted by Hearth only; the AWS SDK never sends it. */
  readonly hearthExtension?: boolean;
  readonly doc?: string;
}

export type Members = Readonly<Record<string, Member>>;

export interface StructureShape<Ms extends Members = Members> {
  readonly kind: 'structure';
  readonly name: string;
  readonly members: Ms;
  /**
   * A check across members, run after each member passed its own checks. Returns a constraint
   * message ("startPort must be less than or equal to endPort") or undefined.
   */
  readonly check?: (value: Readonly<Record<string, unknown>>) => string | undefined;
  readonly doc?: string;
}

/** Exactly one member is set (a Smithy union). Members are shapes, not Member records. */
export interface UnionShape<Ms extends Readonly<Record<string, Shape>> = Readonly<Record<string, Shape>>> {
  readonly kind: 'union';
  readonly name: string;
  readonly members: Ms;
  readonly doc?: string;
}

export type Shape =
  | StringShape
  | IntegerShape
  | BooleanShape
  | TimestampShape
  | ListShape<Shape>
  | MapShape<Shape>
  | StructureShape<Members>
  | UnionShape<Readonly<Record<string, Shape>>>;

type Opts<S> = Omit<S, 'kind'>;

// Options are not generic on purpose: a generic options parameter left out would be inferred from
// the contextual type (a member's `Shape`), which widens the value types to every shape.

export function str(opts: Opts<StringShape> = {}): StringShape {
  return { kind: 'string', ...opts };
}

export function enumOf<const E extends readonly string[]>(
  values: E,
  doc?: string,
): { readonly kind: 'string'; readonly enum: E; readonly doc?: string } {
  return { kind: 'string', enum: values, ...(doc === undefined ? {} : { doc }) };
}

export function int(opts: Opts<IntegerShape> = {}): IntegerShape {
  return { kind: 'integer', ...opts };
}

export function bool(doc?: string): BooleanShape {
  return { kind: 'boolean', ...(doc === undefined ? {} : { doc }) };
}

export function timestamp(doc?: string): TimestampShape {
  return { kind: 'timestamp', ...(doc === undefined ? {} : { doc }) };
}

export function list<const M extends Shape>(
  member: M,
  opts: Opts<Omit<ListShape, 'member'>> = {},
): ListShape<M> {
  return { kind: 'list', member, ...opts };
}

export function map<const V extends Shape>(value: V, opts: Opts<Omit<MapShape, 'value'>>): MapShape<V> {
  return { kind: 'map', value, ...opts };
}

export function struct<const Ms extends Members>(
  name: string,
  members: Ms,
  extra?: Pick<StructureShape, 'check' | 'doc'>,
): StructureShape<Ms> {
  return { kind: 'structure', name, members, ...extra };
}

export function union<const Ms extends Readonly<Record<string, Shape>>>(
  name: string,
  members: Ms,
  doc?: string,
): UnionShape<Ms> {
  return { kind: 'union', name, members, ...(doc === undefined ? {} : { doc }) };
}

type MemberOpts = Partial<Pick<Member, 'wireName' | 'idempotencyToken' | 'hearthExtension' | 'doc'>>;

/** A required body member. */
export function required<const S extends Shape>(
  shape: S,
  opts?: MemberOpts,
): { readonly shape: S; readonly required: true; readonly location: 'body' } & MemberOpts {
  return { shape, required: true, location: 'body', ...opts };
}

/** An optional body member. */
export function optional<const S extends Shape>(
  shape: S,
  opts?: MemberOpts,
): { readonly shape: S; readonly required: false; readonly location: 'body' } & MemberOpts {
  return { shape, required: false, location: 'body', ...opts };
}

/** A path label, `{name}` in the operation's path template (always required). */
export function label<const S extends Shape>(
  shape: S,
  opts?: MemberOpts,
): { readonly shape: S; readonly required: true; readonly location: 'label' } & MemberOpts {
  return { shape, required: true, location: 'label', ...opts };
}

/** An optional query-string member; `wireName` is the query key. */
export function query<const S extends Shape>(
  shape: S,
  wireName: string,
  opts?: Omit<MemberOpts, 'wireName'>,
): { readonly shape: S; readonly required: false; readonly location: 'query'; readonly wireName: string } {
  return { shape, required: false, location: 'query', wireName, ...opts };
}

// ---- the TypeScript type of a value of a shape ----

/** 'in': a validated request value. 'out': what a handler may return (timestamps as Date or ISO string). */
export type Direction = 'in' | 'out';

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type RequiredKeys<Ms> = { [K in keyof Ms]: Ms[K] extends { required: true } ? K : never }[keyof Ms];

type MemberValue<M, D extends Direction> = M extends { shape: infer S } ? ValueOf<S, D> : never;

export type StructValue<Ms, D extends Direction> = Simplify<
  { [K in RequiredKeys<Ms>]: MemberValue<Ms[K], D> } & {
    [K in Exclude<keyof Ms, RequiredKeys<Ms>>]?: MemberValue<Ms[K], D>;
  }
>;

type UnionValue<Ms, D extends Direction> = {
  [K in keyof Ms]: { [P in K]: ValueOf<Ms[K], D> };
}[keyof Ms];

/** The value types by shape kind (an indexed lookup keeps type instantiation shallow). */
interface ValueByKind<S, D extends Direction> {
  string: S extends { enum: readonly (infer E)[] } ? E : string;
  integer: number;
  boolean: boolean;
  timestamp: D extends 'out' ? Date | string : Date;
  list: S extends { member: infer M }
    ? D extends 'out'
      ? readonly ValueOf<M, D>[]
      : ValueOf<M, D>[]
    : never;
  map: S extends { value: infer V } ? Record<string, ValueOf<V, D>> : never;
  structure: S extends { members: infer Ms } ? StructValue<Ms, D> : never;
  union: S extends { members: infer Ms } ? UnionValue<Ms, D> : never;
}

export type ValueOf<S, D extends Direction> = S extends { kind: infer K extends keyof ValueByKind<S, D> }
  ? ValueByKind<S, D>[K]
  : never;
