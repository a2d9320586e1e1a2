import { sql, type Kysely, type Selectable } from 'kysely';
import type { ConnectorEgressRule, NetworkConnectorRecord } from '../core/model.js';
import { compact, escapeLike, fromJson, opt } from './codec.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { Database, NetworkConnectorsTable } from './schema.js';
import { isUniqueViolation } from './sql-errors.js';

const LISTING = 'network-connectors';

/**
 * User network connectors. They are immutable but for their tags; whether one is in use is read
 * from the connector lists of the microVMs (see usedBy).
 */
export class NetworkConnectorRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Inserts a new connector; StoreConflictError (STORE_CONFLICT) if the name is taken. */
  async create(c: NetworkConnectorRecord): Promise<NetworkConnectorRecord> {
    try {
      const row = await this.db
        .insertInto('network_connectors')
        .values({
          name: c.name,
          arn: c.arn,
          description: c.description ?? null,
          egress_rules: JSON.stringify(c.egressRules),
          tags: JSON.stringify(c.tags),
          created_at: c.createdAt,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toConnector(row);
    } catch (e) {
      if (isUniqueViolation(e))
        throw new StoreConflictError('network connector', c.name, 'a connector with this name exists', {
          cause: e,
        });
      throw e;
    }
  }

  async get(name: string): Promise<NetworkConnectorRecord | undefined> {
    const row = await this.db
      .selectFrom('network_connectors')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return row && toConnector(row);
  }

  /** Connectors ordered by name. */
  async list(req: PageRequest = {}): Promise<Page<NetworkConnectorRecord>> {
    const limit = pageLimit(req);
    let q = this.db.selectFrom('network_connectors').selectAll();
    if (req.cursor !== undefined) {
      const [after] = decodeCursor<[string]>(LISTING, req.cursor, ['string']);
      q = q.where('name', '>', after);
    }
    const rows = await q
      .orderBy('name')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [r.name], toConnector);
  }

  /** Replaces the tags; StoreNotFoundError if there is no such connector. */
  async setTags(name: string, tags: Record<string, string>): Promise<NetworkConnectorRecord> {
    const row = await this.db
      .updateTable('network_connectors')
      .set({ tags: JSON.stringify(tags) })
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new StoreNotFoundError('network connector', name);
    return toConnector(row);
  }

  /**
   * Locks the connector's row until the end of the current transaction (a no-op write), so a
   * microVM created in it and a delete in another transaction are ordered: the one that comes
   * second sees what the first did. False if there is no such connector. Use inside
   * Store.transaction.
   */
  async lock(name: string): Promise<boolean> {
    const res = await this.db
      .updateTable('network_connectors')
      .set({ name: sql`name` })
      .where('name', '=', name)
      .executeTakeFirst();
    return res.numUpdatedRows > 0n;
  }

  /** The ids of the microVMs that are not TERMINATED and list `arn` among their connectors. */
  async usedBy(arn: string): Promise<string[]> {
    const pattern = `%${escapeLike(JSON.stringify(arn))}%`;
    const rows = await this.db
      .selectFrom('microvms')
      .select('microvm_id')
      .where('state', '!=', 'TERMINATED')
      .where(
        sql<boolean>`(egress_network_connectors like ${pattern} escape '\\' or ingress_network_connectors like ${pattern} escape '\\')`,
      )
      .orderBy('microvm_id')
      .execute();
    return rows.map((r) => r.microvm_id);
  }

  /** Deletes the connector; false if there was none. */
  async delete(name: string): Promise<boolean> {
    const res = await this.db.deleteFrom('network_connectors').where('name', '=', name).executeTakeFirst();
    return res.numDeletedRows > 0n;
  }
}

function toConnector(row: Selectable<NetworkConnectorsTable>): NetworkConnectorRecord {
  return compact({
    name: row.name,
    arn: row.arn,
    description: opt(row.description),
    egressRules: fromJson<ConnectorEgressRule[]>(row.egress_rules, 'network_connectors', 'egress_rules'),
    tags: fromJson<Record<string, string>>(row.tags, 'network_connectors', 'tags'),
    createdAt: row.created_at,
  });
}
