import type { Kysely, Selectable } from 'kysely';
import { fromJson } from './codec.js';
import { StoreNotFoundError } from './errors.js';
import type { Database, IdempotencyTable } from './schema.js';

/**
 * A `clientToken` seen by one operation (`scope`, e.g. "RunMicrovm" or "CreateMicrovmImage:<account>").
 * Kept forever, like AWS's: a token replays its first result even after the resource is gone.
 */
export interface IdempotencyRecord {
  scope: string;
  clientToken: string;
  /** Hash of the request's parameters: the same token with other parameters is a mismatch. */
  requestHash: string;
  /** The operation's result (JSON-serialisable); undefined while the first request is in flight. */
  result?: unknown;
  createdAt: string;
}

export interface PutIfAbsentResult {
  /** True if this call recorded the token; false if it was there already. */
  created: boolean;
  /** The stored record: this call's entry, or the one recorded first. */
  record: IdempotencyRecord;
}

export class IdempotencyRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Records the token unless (scope, clientToken) is already there, atomically: of several
   * concurrent calls with one token exactly one gets `created: true`; the others get the record that
   * won. Typical use: put with no result first (reserving the token), run the operation, then
   * `setResult`.
   */
  async putIfAbsent(entry: IdempotencyRecord): Promise<PutIfAbsentResult> {
    const res = await this.db
      .insertInto('idempotency')
      .values({
        scope: entry.scope,
        client_token: entry.clientToken,
        request_hash: entry.requestHash,
        result: entry.result === undefined ? null : JSON.stringify(entry.result),
        created_at: entry.createdAt,
      })
      .onConflict((oc) => oc.columns(['scope', 'client_token']).doNothing())
      .executeTakeFirst();
    return { created: res.numInsertedOrUpdatedRows !== 0n, record: await this.mustGet(entry) };
  }

  async get(scope: string, clientToken: string): Promise<IdempotencyRecord | undefined> {
    const row = await this.db
      .selectFrom('idempotency')
      .selectAll()
      .where('scope', '=', scope)
      .where('client_token', '=', clientToken)
      .executeTakeFirst();
    return row && toRecord(row);
  }

  /** Stores the operation's result for a reserved token. StoreNotFoundError if it was never put. */
  async setResult(scope: string, clientToken: string, result: unknown): Promise<void> {
    const res = await this.db
      .updateTable('idempotency')
      .set({ result: JSON.stringify(result) })
      .where('scope', '=', scope)
      .where('client_token', '=', clientToken)
      .executeTakeFirst();
    if (res.numUpdatedRows === 0n) throw new StoreNotFoundError('client token', `${scope}/${clientToken}`);
  }

  /** Forgets a token (e.g. when the first request failed before doing anything); false if absent. */
  async delete(scope: string, clientToken: string): Promise<boolean> {
    const res = await this.db
      .deleteFrom('idempotency')
      .where('scope', '=', scope)
      .where('client_token', '=', clientToken)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  private async mustGet(entry: IdempotencyRecord): Promise<IdempotencyRecord> {
    const record = await this.get(entry.scope, entry.clientToken);
    // Only reachable if the row was deleted between the insert and this read.
    if (!record) throw new StoreNotFoundError('client token', `${entry.scope}/${entry.clientToken}`);
    return record;
  }
}

function toRecord(row: Selectable<IdempotencyTable>): IdempotencyRecord {
  const record: IdempotencyRecord = {
    scope: row.scope,
    clientToken: row.client_token,
    requestHash: row.request_hash,
    createdAt: row.created_at,
  };
  if (row.result !== null) record.result = fromJson<unknown>(row.result, 'idempotency', 'result');
  return record;
}
