/**
 * Finds the operation for a method and a raw (still percent-encoded) path by the operations' path
 * templates. A `{label}` matches one non-empty path segment, which is percent-decoded; literal
 * segments match exactly. When several templates match, the one with more literal segments wins.
 */
import { MalformedUrlError, MethodNotAllowedError, UnknownOperationError } from './errors.js';
import type { OperationDef } from './operations.js';
import { decodeComponent } from './sigv4.js';

export interface RouteMatch {
  operation: OperationDef;
  /** Decoded label values by label name. */
  labels: Record<string, string>;
}

interface CompiledRoute {
  operation: OperationDef;
  /** Per segment: a literal, or a label name. */
  segments: ({ literal: string } | { label: string })[];
  literals: number;
}

export class Router {
  private readonly routes: CompiledRoute[];

  constructor(operations: readonly OperationDef[]) {
    this.routes = operations.map((operation) => {
      const segments = operation.path
        .split('/')
        .slice(1)
        .map((s) => {
          const m = /^\{([A-Za-z0-9_]+)\}$/.exec(s);
          return m ? { label: m[1] as string } : { literal: s };
        });
      return { operation, segments, literals: segments.filter((s) => 'literal' in s).length };
    });
    this.routes.sort((a, b) => b.literals - a.literals);
  }

  /**
   * The operation for `method` and `rawPath`. UnknownOperationError if no template matches the path,
   * MethodNotAllowedError if some do but not with this method, MalformedUrlError for a label that
   * does not decode.
   */
  match(method: string, rawPath: string): RouteMatch {
    if (!rawPath.startsWith('/')) throw new UnknownOperationError(method, rawPath);
    const parts = rawPath.split('/').slice(1);
    const allowed = new Set<string>();
    for (const route of this.routes) {
      const rawLabels = matchSegments(route.segments, parts);
      if (rawLabels === undefined) continue;
      if (route.operation.method !== method) {
        allowed.add(route.operation.method);
        continue;
      }
      const labels: Record<string, string> = {};
      for (const [name, raw] of rawLabels) {
        const value = decodeComponent(raw);
        if (value === '') throw new MalformedUrlError(`the path label {${name}} is empty`);
        labels[name] = value;
      }
      return { operation: route.operation, labels };
    }
    if (allowed.size > 0) throw new MethodNotAllowedError(method, [...allowed].sort());
    throw new UnknownOperationError(method, rawPath);
  }
}

function matchSegments(
  segments: CompiledRoute['segments'],
  parts: readonly string[],
): [string, string][] | undefined {
  if (segments.length !== parts.length) return undefined;
  const labels: [string, string][] = [];
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as CompiledRoute['segments'][number];
    const part = parts[i] as string;
    if ('literal' in segment) {
      if (segment.literal !== part) return undefined;
    } else {
      if (part === '') return undefined;
      labels.push([segment.label, part]);
    }
  }
  return labels;
}
