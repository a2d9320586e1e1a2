import type { Kysely, Selectable, Updateable } from 'kysely';
import type { ImageVersionConfig, ImageVersionRecord, VersionState, VersionStatus } from '../core/model.js';
import { compact, fromJson, opt, patchValue, type Patch } from './codec.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { Database, ImageVersionsTable } from './schema.js';
import { isUniqueViolation } from './sql-errors.js';
import { inTransaction } from './transaction.js';

/** A new version: everything but its number, which the store allocates. */
export type NewImageVersion = Omit<ImageVersionRecord, 'version'>;

/** The fields of a version that change after it is created. `updatedAt` defaults to now. */
export type ImageVersionPatch = Patch<ImageVersionRecord, 'state' | 'status' | 'stateReason' | 'updatedAt'>;

const LISTING = 'image-versions';

export class ImageVersionRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly now: () => Date,
  ) {}

  /**
   * Inserts a version under the next number of its image ("1.0", "2.0", ...) and makes it the
   * image's `latestVersion`, in one transaction. Numbers are allocated from a counter on the image
   * row, so concurrent creates get distinct numbers and a deleted version's number is not reused.
   * StoreNotFoundError if the image does not exist; StoreConflictError if `id` is taken.
   */
  async create(input: NewImageVersion): Promise<ImageVersionRecord> {
    return inTransaction(this.db, async (trx) => {
      // The UPDATE takes the image row's write lock (PostgreSQL) or the database's (SQLite) until commit.
      const counter = await trx
        .updateTable('images')
        .set((eb) => ({ version_counter: eb('version_counter', '+', 1) }))
        .where('name', '=', input.imageName)
        .returning('version_counter')
        .executeTakeFirst();
      if (!counter) throw new StoreNotFoundError('image', input.imageName);
      const number = Number(counter.version_counter);
      const version = `${number}.0`;
      let row: Selectable<ImageVersionsTable>;
      try {
        row = await trx
          .insertInto('image_versions')
          .values({
            image_name: input.imageName,
            version,
            version_number: number,
            id: input.id,
            state: input.state,
            status: input.status,
            state_reason: input.stateReason ?? null,
            config: JSON.stringify(input.config),
            created_at: input.createdAt,
            updated_at: input.updatedAt,
          })
          .returningAll()
          .executeTakeFirstOrThrow();
      } catch (e) {
        if (isUniqueViolation(e))
          throw new StoreConflictError('image version', input.id, 'a version with this id exists', {
            cause: e,
          });
        throw e;
      }
      await trx
        .updateTable('images')
        .set({ latest_version: version, updated_at: this.now().toISOString() })
        .where('name', '=', input.imageName)
        .execute();
      return toVersion(row);
    });
  }

  async get(imageName: string, version: string): Promise<ImageVersionRecord | undefined> {
    const row = await this.db
      .selectFrom('image_versions')
      .selectAll()
      .where('image_name', '=', imageName)
      .where('version', '=', version)
      .executeTakeFirst();
    return row && toVersion(row);
  }

  /** By internal id (iv-<hex>, also the engine's template id). */
  async getById(id: string): Promise<ImageVersionRecord | undefined> {
    const row = await this.db
      .selectFrom('image_versions')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row && toVersion(row);
  }

  /** The image's versions, oldest (lowest number) first. */
  async listByImage(imageName: string, req: PageRequest = {}): Promise<Page<ImageVersionRecord>> {
    const limit = pageLimit(req);
    let q = this.db.selectFrom('image_versions').selectAll().where('image_name', '=', imageName);
    if (req.cursor !== undefined) {
      const [after] = decodeCursor<[number]>(LISTING, req.cursor, ['number']);
      q = q.where('version_number', '>', after);
    }
    const rows = await q
      .orderBy('version_number')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [Number(r.version_number)], toVersion);
  }

  /** Applies `patch`; returns the updated version. StoreNotFoundError if there is no such version. */
  async update(imageName: string, version: string, patch: ImageVersionPatch): Promise<ImageVersionRecord> {
    const set: Updateable<ImageVersionsTable> = {
      state: patch.state,
      status: patch.status,
      state_reason: patchValue(patch.stateReason, String),
      updated_at: patch.updatedAt ?? this.now().toISOString(),
    };
    const row = await this.db
      .updateTable('image_versions')
      .set(compact(set))
      .where('image_name', '=', imageName)
      .where('version', '=', version)
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new StoreNotFoundError('image version', `${imageName}:${version}`);
    return toVersion(row);
  }

  /** Deletes the version and its builds; false if there was no such version. */
  async delete(imageName: string, version: string): Promise<boolean> {
    const res = await this.db
      .deleteFrom('image_versions')
      .where('image_name', '=', imageName)
      .where('version', '=', version)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }
}

function toVersion(row: Selectable<ImageVersionsTable>): ImageVersionRecord {
  return compact({
    imageName: row.image_name,
    version: row.version,
    id: row.id,
    state: row.state as VersionState,
    status: row.status as VersionStatus,
    stateReason: opt(row.state_reason),
    config: fromJson<ImageVersionConfig>(row.config, 'image_versions', 'config'),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}
