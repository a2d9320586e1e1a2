import { HearthError } from '../errors.js';

/** No microVM with this id (it may have been terminated long enough ago to be forgotten). */
export class MicrovmNotFoundError extends HearthError {
  readonly code = 'MICROVM_NOT_FOUND';
  constructor(id: string) {
    super(`microVM ${id} not found`, { hint: 'list microVMs with `hearth ls` (ListMicrovms)' });
  }
}

/** The operation is not possible in the microVM's current state; nothing changed. */
export class MicrovmStateConflictError extends HearthError {
  readonly code = 'MICROVM_CONFLICT';
  constructor(id: string, operation: string, state: string, allowed: readonly string[]) {
    super(`cannot ${operation} microVM ${id}: it is ${state} (allowed in ${allowed.join(', ')})`);
  }
}

/** A configured limit of this Hearth (microVMs or memory) would be exceeded; nothing was started. */
export class QuotaExceededError extends HearthError {
  readonly code = 'QUOTA_EXCEEDED';
  constructor(message: string) {
    super(message, {
      hint: 'terminate microVMs you no longer need, or raise the limit in the server configuration',
    });
  }
}

/** The host cannot fit another microVM right now (e.g. no free network slot); nothing was started. */
export class InsufficientCapacityError extends HearthError {
  readonly code = 'INSUFFICIENT_CAPACITY';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, hint: 'try again later, or run fewer microVMs on this host' });
  }
}

/** A clientToken was reused with different parameters. */
export class IdempotencyMismatchError extends HearthError {
  readonly code = 'IDEMPOTENCY_MISMATCH';
  constructor(token: string) {
    super(`clientToken '${token}' was already used with different parameters`, {
      hint: 'use a new clientToken for a new request',
    });
  }
}

/** The first request with this clientToken has not finished yet. */
export class IdempotencyInProgressError extends HearthError {
  readonly code = 'IDEMPOTENCY_IN_PROGRESS_CONFLICT';
  constructor(operation: string, token: string) {
    super(`a ${operation} request with clientToken '${token}' is still in progress`, {
      hint: 'wait for it, then repeat the request to get its result',
    });
  }
}

/** No network connector with this name or ARN. */
export class NetworkConnectorNotFoundError extends HearthError {
  readonly code = 'NETWORK_CONNECTOR_NOT_FOUND';
  constructor(
    what: string,
    hint = 'list connectors with `hearth connectors` (GET /hearth/v1/network-connectors)',
  ) {
    super(`network connector ${what} not found`, { hint });
  }
}

/** The connector exists (create) or is in use (delete); nothing changed. */
export class NetworkConnectorConflictError extends HearthError {
  readonly code = 'NETWORK_CONNECTOR_CONFLICT';
  constructor(message: string, hint?: string) {
    super(message, hint === undefined ? {} : { hint });
  }
}
