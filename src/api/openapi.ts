/**
 * The OpenAPI 3.1 document of the API, generated from the operation table (operations.ts) and its
 * shapes: every path and method, parameters, request bodies, the success response and every error
 * response (JSON body with message, code and hint; the exception name in x-amzn-ErrorType), and a
 * SigV4 security scheme. Served at GET /openapi.json and written to docs/openapi.json by
 * `npm run openapi`. Schemas use `additionalProperties: false` everywhere, as the server does.
 */
import { EXCEPTIONS, REQUEST_LEVEL_EXCEPTIONS, type ExceptionName } from './exceptions.js';
import { OPERATION_NAMES, getOperation, type OperationDef } from './operations.js';
import type { Member, Members, Shape } from './shapes.js';

export type JsonSchema = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  servers: { url: string }[];
  security: Record<string, string[]>[];
  paths: Record<string, Record<string, unknown>>;
  components: {
    schemas: Record<string, JsonSchema>;
    responses: Record<string, unknown>;
    headers: Record<string, unknown>;
    securitySchemes: Record<string, unknown>;
  };
}

export const OPENAPI_VERSION = '2025-09-09';
const ERROR_BODY = 'ErrorBody';
const JSON_TYPE = 'application/json';

/** Builds the document. Deterministic: the same table gives byte-identical JSON. */
export function buildOpenApiDocument(): OpenApiDocument {
  const schemas = new SchemaRegistry();
  schemas.define(ERROR_BODY, {
    type: 'object',
    description:
      "Every error response. The exception name is in the x-amzn-ErrorType header; `code` is Hearth's stable " +
      'code. Exceptions: ' +
      Object.entries(EXCEPTIONS)
        .map(([name, e]) => `${name} (${e.status}): ${e.doc}`)
        .join(' '),
    properties: {
      message: { type: 'string' },
      code: { type: 'string', description: "Hearth's stable error code, e.g. MICROVM_NOT_FOUND." },
      hint: { type: 'string', description: 'What to do next, when there is something to do.' },
      resourceId: { type: 'string' },
      resourceType: { type: 'string' },
      serviceCode: { type: 'string' },
      quotaCode: { type: 'string' },
      Type: { type: 'string' },
    },
    required: ['message', 'code'],
    additionalProperties: false,
  });

  const paths: OpenApiDocument['paths'] = {};
  for (const name of OPERATION_NAMES) {
    const op = getOperation(name);
    const item = (paths[op.path] ??= {});
    item[op.method.toLowerCase()] = operationObject(op, schemas);
  }
  paths['/openapi.json'] = {
    get: {
      operationId: 'GetOpenApiDocument',
      summary: 'This document (no authentication).',
      security: [],
      responses: {
        '200': {
          description: 'The OpenAPI document.',
          content: { [JSON_TYPE]: { schema: { type: 'object' } } },
        },
      },
    },
  };
  paths['/healthz'] = {
    get: {
      operationId: 'GetHealth',
      summary: 'Liveness of the API server (no authentication).',
      security: [],
      responses: {
        '200': {
          description: 'The server is up.',
          content: {
            [JSON_TYPE]: {
              schema: {
                type: 'object',
                properties: { status: { type: 'string', enum: ['ok'] } },
                required: ['status'],
              },
            },
          },
        },
        '503': {
          description: 'The server is up but not ready.',
          content: { [JSON_TYPE]: { schema: { type: 'object' } } },
        },
      },
    },
  };

  return {
    openapi: '3.1.0',
    info: {
      title: 'Hearth API (AWS Lambda MicroVMs compatible)',
      version: OPENAPI_VERSION,
      description:
        'The control-plane API of Hearth, wire-compatible with the AWS Lambda MicroVMs API (restJson1) so the ' +
        'official AWS SDKs and CLI work against it. Timestamps are epoch seconds (JSON numbers). Members and ' +
        'operations marked x-hearth-extension are Hearth only (the operations live under /hearth/v1/; the AWS ' +
        'SDK has no command for them: send signed requests).',
    },
    servers: [{ url: '/' }],
    security: [{ sigv4: [] }],
    paths,
    components: {
      schemas: schemas.all(),
      responses: errorResponses(),
      headers: {
        RequestId: { schema: { type: 'string' }, description: 'The request id (also in the server log).' },
      },
      securitySchemes: {
        sigv4: {
          type: 'apiKey',
          name: 'Authorization',
          in: 'header',
          description:
            "AWS Signature Version 4 (AWS4-HMAC-SHA256) with service name `lambda` and the server's region " +
            '(default `local`), signed with a Hearth API key (access key id and secret). x-amz-date must be within ' +
            '15 minutes of the server clock; the body hash must be signed (no UNSIGNED-PAYLOAD); presigned URLs ' +
            'are not accepted.',
          'x-amazon-apigateway-authtype': 'awsSigv4',
        },
      },
    },
  };
}

/** The component name of an operation's output schema. */
export function responseSchemaName(operation: string): string {
  return `${operation}Response`;
}

function operationObject(op: OperationDef, schemas: SchemaRegistry): Record<string, unknown> {
  const parameters: unknown[] = [];
  const bodyMembers: [string, Member][] = [];
  for (const [name, member] of Object.entries(op.input)) {
    if (member.location === 'body') {
      bodyMembers.push([name, member]);
      continue;
    }
    const schema = schemas.toSchema(member.shape);
    parameters.push({
      name: member.wireName ?? name,
      in: member.location === 'label' ? 'path' : member.location,
      required: member.required,
      ...(member.doc === undefined ? {} : { description: member.doc }),
      schema,
      ...(member.shape.kind === 'list' ? { style: 'form', explode: true } : {}),
    });
  }

  const responses: Record<string, unknown> = {};
  if (op.output === null) {
    responses[String(op.successStatus)] = { description: 'Success (no body).', headers: requestIdHeader() };
  } else {
    const name = responseSchemaName(op.name);
    schemas.define(name, schemas.structureSchema(op.output));
    responses[String(op.successStatus)] = {
      description: 'Success.',
      headers: requestIdHeader(),
      content: { [JSON_TYPE]: { schema: { $ref: `#/components/schemas/${name}` } } },
    };
  }
  for (const [status, names] of errorsByStatus(op)) {
    responses[String(status)] = { $ref: `#/components/responses/${errorResponseName(status, names)}` };
  }

  const result: Record<string, unknown> = {
    operationId: op.name,
    summary: op.doc,
    ...(op.hearthExtension ? { 'x-hearth-extension': true } : {}),
    parameters,
    responses,
  };
  if (bodyMembers.length > 0) {
    const name = `${op.name}Request`;
    schemas.define(name, schemas.structureSchema(Object.fromEntries(bodyMembers)));
    result.requestBody = {
      required: bodyMembers.some(([, m]) => m.required),
      content: { [JSON_TYPE]: { schema: { $ref: `#/components/schemas/${name}` } } },
    };
  }
  return result;
}

function requestIdHeader(): Record<string, unknown> {
  return { 'x-amzn-RequestId': { $ref: '#/components/headers/RequestId' } };
}

/** An operation's possible exceptions (its own and the request-level ones), grouped by HTTP status. */
function errorsByStatus(op: OperationDef): [number, ExceptionName[]][] {
  const byStatus = new Map<number, ExceptionName[]>();
  for (const exception of [...op.errors, ...REQUEST_LEVEL_EXCEPTIONS]) {
    const status = EXCEPTIONS[exception].status;
    const list = byStatus.get(status) ?? [];
    if (!list.includes(exception)) list.push(exception);
    byStatus.set(status, list);
  }
  for (const list of byStatus.values()) list.sort();
  return [...byStatus].sort((a, b) => a[0] - b[0]);
}

/**
 * The name of a shared error response: `Error<status>` for the set of exceptions most operations
 * have at that status, `Error<status><Other...>` (exception names without "Exception") otherwise.
 */
function errorResponseName(status: number, names: readonly ExceptionName[]): string {
  const base = commonErrorSets().get(status) ?? [];
  if (names.join() === base.join()) return `Error${status}`;
  return `Error${status}` + names.map((n) => n.replace(/Exception$/, '')).join('');
}

let commonSets: Map<number, ExceptionName[]> | undefined;

function commonErrorSets(): Map<number, ExceptionName[]> {
  if (commonSets) return commonSets;
  const counts = new Map<string, { status: number; names: ExceptionName[]; count: number }>();
  for (const name of OPERATION_NAMES) {
    for (const [status, names] of errorsByStatus(getOperation(name))) {
      const key = `${status}:${names.join()}`;
      const entry = counts.get(key) ?? { status, names, count: 0 };
      entry.count++;
      counts.set(key, entry);
    }
  }
  commonSets = new Map();
  for (const { status, names, count } of counts.values()) {
    const best = [...counts.values()].filter((e) => e.status === status).sort((a, b) => b.count - a.count)[0];
    if (best && best.count === count && best.names === names) commonSets.set(status, names);
  }
  return commonSets;
}

/** components.responses: every distinct error response used by some operation. */
function errorResponses(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of OPERATION_NAMES) {
    for (const [status, names] of errorsByStatus(getOperation(name))) {
      out[errorResponseName(status, names)] = {
        description: names.join(' | '),
        headers: {
          ...requestIdHeader(),
          'x-amzn-ErrorType': {
            required: true,
            description: 'The exception name; the AWS SDK throws its class of that name.',
            schema: { type: 'string', enum: names },
          },
        },
        content: { [JSON_TYPE]: { schema: { $ref: `#/components/schemas/${ERROR_BODY}` } } },
      };
    }
  }
  return Object.fromEntries(Object.entries(out).sort((a, b) => a[0].localeCompare(b[0])));
}

/** Named schemas under #/components/schemas; a name is bound to one shape. */
class SchemaRegistry {
  private readonly schemas = new Map<string, JsonSchema>();
  private readonly owners = new Map<string, Shape | string>();

  define(name: string, schema: JsonSchema, owner: Shape | string = name): void {
    const prev = this.owners.get(name);
    if (prev !== undefined && prev !== owner) throw new Error(`two different schemas are named ${name}`);
    this.owners.set(name, owner);
    this.schemas.set(name, schema);
  }

  all(): Record<string, JsonSchema> {
    return Object.fromEntries([...this.schemas].sort((a, b) => a[0].localeCompare(b[0])));
  }

  structureSchema(members: Members): JsonSchema {
    const properties: Record<string, JsonSchema> = {};
    const required: string[] = [];
    for (const [name, member] of Object.entries(members)) {
      const wire = member.wireName ?? name;
      const schema = this.toSchema(member.shape);
      const extra: JsonSchema = {};
      if (member.doc !== undefined) extra.description = member.doc;
      if (member.hearthExtension) extra['x-hearth-extension'] = true;
      if (member.idempotencyToken) extra['x-idempotency-token'] = true;
      properties[wire] = Object.keys(extra).length === 0 ? schema : { ...schema, ...extra };
      if (member.required) required.push(wire);
    }
    return {
      type: 'object',
      properties,
      ...(required.length > 0 ? { required } : {}),
      additionalProperties: false,
    };
  }

  toSchema(shape: Shape): JsonSchema {
    const doc: JsonSchema = shape.doc === undefined ? {} : { description: shape.doc };
    switch (shape.kind) {
      case 'string':
        return {
          type: 'string',
          ...doc,
          ...(shape.enum === undefined ? {} : { enum: [...shape.enum] }),
          ...(shape.minLength === undefined ? {} : { minLength: shape.minLength }),
          ...(shape.maxLength === undefined ? {} : { maxLength: shape.maxLength }),
          ...(shape.pattern === undefined ? {} : { pattern: shape.pattern }),
          ...(shape.maxBytes === undefined ? {} : { 'x-hearth-max-bytes': shape.maxBytes }),
          ...(shape.sensitive ? { 'x-hearth-sensitive': true } : {}),
        };
      case 'integer':
        return {
          type: 'integer',
          ...doc,
          ...(shape.values === undefined ? {} : { enum: [...shape.values] }),
          ...(shape.min === undefined ? {} : { minimum: shape.min }),
          ...(shape.max === undefined ? {} : { maximum: shape.max }),
        };
      case 'boolean':
        return { type: 'boolean', ...doc };
      case 'timestamp':
        return {
          type: 'number',
          description: shape.doc ?? 'Epoch seconds.',
          'x-hearth-timestamp': 'epoch-seconds',
        };
      case 'list':
        return {
          type: 'array',
          ...doc,
          items: this.toSchema(shape.member),
          ...(shape.minItems === undefined ? {} : { minItems: shape.minItems }),
          ...(shape.maxItems === undefined ? {} : { maxItems: shape.maxItems }),
        };
      case 'map': {
        const { type: _type, ...keySchema } = this.toSchema(shape.key);
        return {
          type: 'object',
          ...doc,
          ...(Object.keys(keySchema).length > 0 ? { propertyNames: keySchema } : {}),
          additionalProperties: this.toSchema(shape.value),
          ...(shape.maxEntries === undefined ? {} : { maxProperties: shape.maxEntries }),
        };
      }
      case 'structure': {
        if (!this.schemas.has(shape.name) || this.owners.get(shape.name) !== shape) {
          this.define(shape.name, { ...this.structureSchema(shape.members), ...doc }, shape);
        }
        return { $ref: `#/components/schemas/${shape.name}` };
      }
      case 'union': {
        if (!this.schemas.has(shape.name) || this.owners.get(shape.name) !== shape) {
          const properties: Record<string, JsonSchema> = {};
          for (const [name, member] of Object.entries(shape.members))
            properties[name] = this.toSchema(member);
          this.define(
            shape.name,
            {
              type: 'object',
              description: `${shape.doc ?? 'A union'}: exactly one member is set.`,
              properties,
              minProperties: 1,
              maxProperties: 1,
              additionalProperties: false,
            },
            shape,
          );
        }
        return { $ref: `#/components/schemas/${shape.name}` };
      }
    }
  }
}

/** The document as written to docs/openapi.json: pretty-printed, with a final newline. */
export function openApiJson(): string {
  return JSON.stringify(buildOpenApiDocument(), null, 2) + '\n';
}
