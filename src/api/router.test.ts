import { describe, expect, it } from 'vitest';
import type { ApiError } from './errors.js';
import { OPERATION_NAMES, getOperation } from './operations.js';
import { Router } from './router.js';

const router = new Router(OPERATION_NAMES.map(getOperation));

function fails(method: string, path: string): ApiError {
  try {
    router.match(method, path);
  } catch (e) {
    return e as ApiError;
  }
  throw new Error('expected no match');
}

describe('Router', () => {
  it('matches every operation by method and template, decoding labels', () => {
    for (const name of OPERATION_NAMES) {
      const op = getOperation(name);
      const path = op.path.replace(/\{([^}]+)\}/g, (_, label: string) =>
        encodeURIComponent(`${label} a/b:é`),
      );
      const m = router.match(op.method, path);
      expect(m.operation.name).toBe(name);
      for (const value of Object.values(m.labels)) expect(value).toMatch(/ a\/b:é$/);
    }
  });

  it('tells the literal /microvms from a label, and a sub-resource from its parent', () => {
    expect(router.match('GET', '/2025-09-09/microvms').operation.name).toBe('ListMicrovms');
    expect(router.match('GET', '/2025-09-09/microvms/m').operation.name).toBe('GetMicrovm');
    expect(router.match('POST', '/2025-09-09/microvms/m/suspend').operation.name).toBe('SuspendMicrovm');
    expect(router.match('DELETE', '/2017-03-31/tags/arn%3Ax').labels).toEqual({ Resource: 'arn:x' });
  });

  it('answers 404, 405 with the allowed methods, and 400 for bad encodings or empty labels', () => {
    expect([fails('GET', '/2025-09-09/nothing').status, fails('GET', 'relative').status]).toEqual([404, 404]);
    expect(fails('GET', '/2025-09-09/microvms/').status).toBe(404);
    const e = fails('PATCH', '/2025-09-09/microvm-images/app');
    expect([e.status, e.headers.allow]).toEqual([405, 'DELETE, GET, PUT']);
    expect(fails('GET', '/2025-09-09/microvms/%E0%A4%A').code).toBe('API_MALFORMED_URL');
  });
});
