import type { Kysely, Selectable } from 'kysely';
import { compact, opt } from './codec.js';
import { StoreConflictError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { ApiKeysTable, Database } from './schema.js';
import { isUniqueViolation } from './sql-errors.js';

/**
 * An API credential (AWS-style access key pair). The secret is stored as given, not hashed: SigV4
 * verification needs it to recompute the signature. Never log it.
 */
export interface ApiKeyRecord {
  accessKeyId: string;
  secretAccessKey: string;
  description?: string;
  createdAt: string;
}

const LISTING = 'api-keys';

export class ApiKeyRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Inserts a key; StoreConflictError if the access key id is taken. */
  async create(key: ApiKeyRecord): Promise<ApiKeyRecord> {
    try {
      const row = await this.db
        .insertInto('api_keys')
        .values({
          access_key_id: key.accessKeyId,
          secret_access_key: key.secretAccessKey,
          description: key.description ?? null,
          created_at: key.createdAt,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toApiKey(row);
    } catch (e) {
      if (isUniqueViolation(e))
        throw new StoreConflictError('api key', key.accessKeyId, 'a key with this id exists', { cause: e });
      throw e;
    }
  }

  async get(accessKeyId: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('access_key_id', '=', accessKeyId)
      .executeTakeFirst();
    return row && toApiKey(row);
  }

  /** Keys ordered by access key id. */
  async list(req: PageRequest = {}): Promise<Page<ApiKeyRecord>> {
    const limit = pageLimit(req);
    let q = this.db.selectFrom('api_keys').selectAll();
    if (req.cursor !== undefined) {
      const [after] = decodeCursor<[string]>(LISTING, req.cursor, ['string']);
      q = q.where('access_key_id', '>', after);
    }
    const rows = await q
      .orderBy('access_key_id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [r.access_key_id], toApiKey);
  }

  /** Revokes a key; false if there was no such key. */
  async delete(accessKeyId: string): Promise<boolean> {
    const res = await this.db
      .deleteFrom('api_keys')
      .where('access_key_id', '=', accessKeyId)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }
}

function toApiKey(row: Selectable<ApiKeysTable>): ApiKeyRecord {
  return compact({
    accessKeyId: row.access_key_id,
    secretAccessKey: row.secret_access_key,
    description: opt(row.description),
    createdAt: row.created_at,
  });
}
