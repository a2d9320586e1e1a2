/**
 * Test helper: checks an API response body against the OpenAPI document (openapi.ts) with ajv.
 * End-to-end tests call `validateResponse` on every response they get. Needs the dev dependency
 * `ajv`; the server itself never imports this module.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { buildOpenApiDocument, type OpenApiDocument } from './openapi.js';
import { getOperation, type OperationName } from './operations.js';

const DOC_ID = 'https://hearth.invalid/openapi.json';

let cached: { doc: OpenApiDocument; ajv: Ajv2020; validators: Map<string, ValidateFunction> } | undefined;

function state() {
  if (cached === undefined) {
    const doc = buildOpenApiDocument();
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema({ $id: DOC_ID, components: doc.components }, DOC_ID);
    cached = { doc, ajv, validators: new Map() };
  }
  return cached;
}

/**
 * The problems of `body` as the response of `operation` with `status` (empty when it conforms).
 * `body` is the parsed JSON, a JSON string, a Buffer, or undefined/'' for no body. An undocumented
 * status is a problem too.
 */
export function checkResponse(operation: OperationName, status: number, body: unknown): string[] {
  const { doc, ajv, validators } = state();
  const op = getOperation(operation);
  const pathItem = doc.paths[op.path] as Record<string, { responses: Record<string, unknown> }> | undefined;
  type Response = { $ref?: string; content?: Record<string, { schema: { $ref: string } }> };
  let response = pathItem?.[op.method.toLowerCase()]?.responses[String(status)] as Response | undefined;
  if (response?.$ref !== undefined) {
    response = doc.components.responses[response.$ref.replace('#/components/responses/', '')] as Response;
  }
  if (response === undefined) return [`status ${status} is not a documented response of ${operation}`];

  const text = Buffer.isBuffer(body) ? body.toString('utf8') : body;
  const content = response.content?.['application/json'];
  if (content === undefined) {
    return text === undefined || text === '' ? [] : [`${operation} ${status} must have no body`];
  }
  let value: unknown = text;
  if (typeof text === 'string') {
    try {
      value = JSON.parse(text);
    } catch {
      return [`${operation} ${status}: the body is not JSON: ${text.slice(0, 100)}`];
    }
  }
  const ref = content.schema.$ref;
  let validate = validators.get(ref);
  if (validate === undefined) {
    validate = ajv.compile({ $ref: `${DOC_ID}${ref}` });
    validators.set(ref, validate);
  }
  if (validate(value)) return [];
  return (validate.errors ?? []).map(
    (e) =>
      `${operation} ${status}: ${e.instancePath || '(body)'} ${e.message ?? 'is invalid'} ${JSON.stringify(e.params)}`,
  );
}

/** Throws an Error listing the problems when `body` does not conform (see checkResponse). */
export function validateResponse(operation: OperationName, status: number, body: unknown): void {
  const problems = checkResponse(operation, status, body);
  if (problems.length > 0)
    throw new Error(`response does not match the OpenAPI document:\n  ${problems.join('\n  ')}`);
}
