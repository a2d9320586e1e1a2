import { createHash } from 'node:crypto';
import type { Store } from '../store/database.js';
import { IdempotencyInProgressError, IdempotencyMismatchError } from './errors.js';

export interface ClientTokenRequest<T> {
  store: Store;
  /** The operation, e.g. "RunMicrovm". */
  scope: string;
  /** No token: `create` simply runs. */
  clientToken: string | undefined;
  /** The request's parameters without the token (hashed: the same token with others is a mismatch). */
  request: unknown;
  now: number;
  create: () => Promise<T>;
  /** What to keep of the result to replay it (JSON). */
  resultOf: (value: T) => unknown;
  /** The value for a kept result. */
  replay: (result: unknown) => Promise<T>;
}

/**
 * Runs `create` at most once per client token, as AWS's clientToken works: a repeat with the same
 * parameters gets the first call's result (replayed: true), with other parameters
 * IdempotencyMismatchError, while the first call is still running IdempotencyInProgressError. If
 * `create` throws, the token is forgotten so the request can be retried with it.
 */
export async function oncePerClientToken<T>(
  o: ClientTokenRequest<T>,
): Promise<{ value: T; replayed: boolean }> {
  if (!o.clientToken) return { value: await o.create(), replayed: false };
  const requestHash = createHash('sha256').update(JSON.stringify(o.request)).digest('hex');
  const put = await o.store.idempotency.putIfAbsent({
    scope: o.scope,
    clientToken: o.clientToken,
    requestHash,
    createdAt: new Date(o.now).toISOString(),
  });
  if (!put.created) {
    if (put.record.requestHash !== requestHash) throw new IdempotencyMismatchError(o.clientToken);
    if (put.record.result === undefined) throw new IdempotencyInProgressError(o.scope, o.clientToken);
    return { value: await o.replay(put.record.result), replayed: true };
  }
  let value: T;
  try {
    value = await o.create();
  } catch (e) {
    await o.store.idempotency.delete(o.scope, o.clientToken);
    throw e;
  }
  await o.store.idempotency.setResult(o.scope, o.clientToken, o.resultOf(value));
  return { value, replayed: false };
}
