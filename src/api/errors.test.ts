import { describe, expect, it } from 'vitest';
import { MicrovmNotFoundError, MicrovmStateConflictError, QuotaExceededError } from '../core/errors.js';
import { ValidationError } from '../core/image-spec.js';
import { HearthError } from '../errors.js';
import { StoreConflictError, StoreNotFoundError } from '../store/errors.js';
import type { Logger } from '../util/log.js';
import { ApiError, DEFAULT_ERROR_CODES, exceptionForCode, toApiError } from './errors.js';
import { EXCEPTIONS } from './exceptions.js';

class OddError extends HearthError {
  readonly code = 'ODD_THING';
}

class VmStateError extends HearthError {
  readonly code = 'VMM_INVALID_STATE';
}

function capture(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (m, f) => lines.push(`${m} ${JSON.stringify(f)}`),
    child: () => logger,
  };
  return { logger, lines };
}

describe('toApiError', () => {
  it('maps Hearth errors by code, keeping message, code and hint', () => {
    const cases: [HearthError, string, number][] = [
      [new ValidationError('name', 'bad'), 'ValidationException', 400],
      [new MicrovmNotFoundError('mvm-1'), 'ResourceNotFoundException', 404],
      [new StoreNotFoundError('image', 'x'), 'ResourceNotFoundException', 404],
      [new MicrovmStateConflictError('m', 'resume', 'RUNNING', ['SUSPENDED']), 'ConflictException', 409],
      [new StoreConflictError('image', 'x', 'exists'), 'ConflictException', 409],
      [new VmStateError('not running'), 'ConflictException', 409],
      [new QuotaExceededError('too many'), 'ServiceQuotaExceededException', 402],
    ];
    for (const [err, exception, status] of cases) {
      const api = toApiError(err);
      expect([api.exception, api.status, api.code, api.message, api.hint]).toEqual([
        exception,
        status,
        err.code,
        err.message,
        err.hint,
      ]);
      expect(api.cause).toBe(err);
    }
  });

  it('lets handlers add and override codes', () => {
    expect(toApiError(new OddError('odd'), { codes: { ODD_THING: 'ThrottlingException' } }).exception).toBe(
      'ThrottlingException',
    );
    expect(exceptionForCode('MICROVM_NOT_FOUND', { MICROVM_NOT_FOUND: 'ValidationException' })).toBe(
      'ValidationException',
    );
    expect(exceptionForCode('NOPE')).toBeUndefined();
  });

  it('passes Retry-After along from errors that carry retryAfterS', () => {
    class Limited extends HearthError {
      readonly code = 'RATE_LIMITED';
      readonly retryAfterS = 2;
    }
    const api = toApiError(new Limited('slow down'));
    expect([api.exception, api.retryAfterSeconds]).toEqual(['ThrottlingException', 2]);
  });

  it('turns anything else into a generic InternalServerException and logs the details', () => {
    const { logger, lines } = capture();
    for (const err of [new Error('db password is hunter2'), new OddError('odd'), 'a string', undefined]) {
      const api = toApiError(err, { logger, requestId: 'req-1', operation: 'GetMicrovm' });
      expect([api.exception, api.status, api.code]).toEqual([
        'InternalServerException',
        500,
        'INTERNAL_ERROR',
      ]);
      expect(api.message).toBe('Internal server error (request id req-1)');
      expect(JSON.stringify(api.toBody())).not.toContain('hunter2');
    }
    expect(lines).toHaveLength(4);
    expect(lines[0]).toContain('hunter2');
    expect(lines[0]).toContain('req-1');
  });

  it('passes ApiErrors through and serializes their body', () => {
    const e = new ApiError('ConflictException', 'busy', {
      code: 'X_BUSY',
      hint: 'wait',
      fields: { resourceId: 'r' },
    });
    expect(toApiError(e)).toBe(e);
    expect(e.toBody()).toEqual({ message: 'busy', code: 'X_BUSY', hint: 'wait', resourceId: 'r' });
    expect(new ApiError('ValidationException', 'v').toBody()).toEqual({ message: 'v', code: 'API_ERROR' });
  });

  it('maps only to known exceptions', () => {
    for (const exception of Object.values(DEFAULT_ERROR_CODES)) expect(EXCEPTIONS[exception]).toBeDefined();
  });
});
