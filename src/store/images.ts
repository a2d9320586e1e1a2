import { sql, type Kysely, type Selectable, type Updateable } from 'kysely';
import type { ImageRecord, ImageState } from '../core/model.js';
import { compact, escapeLike, fromJson, opt, patchValue, type Patch } from './codec.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { Database, ImagesTable } from './schema.js';
import { isUniqueViolation } from './sql-errors.js';

/** The fields of an image that change after it is created. `updatedAt` defaults to now. */
export type ImagePatch = Patch<
  ImageRecord,
  | 'state'
  | 'stateReason'
  | 'description'
  | 'latestVersion'
  | 'latestActiveVersion'
  | 'latestFailedVersion'
  | 'tags'
  | 'updatedAt'
>;

export interface ImageListRequest extends PageRequest {
  /** Only images whose name contains this text, ignoring ASCII case. */
  nameFilter?: string;
}

const LISTING = 'images';

export class ImageRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly now: () => Date,
  ) {}

  /** Inserts a new image; StoreConflictError (STORE_CONFLICT) if the name is taken. */
  async create(image: ImageRecord): Promise<ImageRecord> {
    try {
      const row = await this.db
        .insertInto('images')
        .values({
          name: image.name,
          arn: image.arn,
          state: image.state,
          state_reason: image.stateReason ?? null,
          description: image.description ?? null,
          latest_version: image.latestVersion ?? null,
          latest_active_version: image.latestActiveVersion ?? null,
          latest_failed_version: image.latestFailedVersion ?? null,
          tags: JSON.stringify(image.tags),
          version_counter: 0,
          created_at: image.createdAt,
          updated_at: image.updatedAt,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toImage(row);
    } catch (e) {
      if (isUniqueViolation(e))
        throw new StoreConflictError('image', image.name, 'an image with this name exists', { cause: e });
      throw e;
    }
  }

  async get(name: string): Promise<ImageRecord | undefined> {
    const row = await this.db.selectFrom('images').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toImage(row);
  }

  /** Images ordered by name. */
  async list(req: ImageListRequest = {}): Promise<Page<ImageRecord>> {
    const limit = pageLimit(req);
    let q = this.db.selectFrom('images').selectAll();
    if (req.nameFilter) {
      const pattern = `%${escapeLike(req.nameFilter.toLowerCase())}%`;
      q = q.where(sql<boolean>`lower(name) like ${pattern} escape '\\'`);
    }
    if (req.cursor !== undefined) {
      const [after] = decodeCursor<[string]>(LISTING, req.cursor, ['string']);
      q = q.where('name', '>', after);
    }
    const rows = await q
      .orderBy('name')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [r.name], toImage);
  }

  /** Applies `patch`; returns the updated image. StoreNotFoundError if there is no such image. */
  async update(name: string, patch: ImagePatch): Promise<ImageRecord> {
    const set: Updateable<ImagesTable> = {
      state: patch.state,
      state_reason: patchValue(patch.stateReason, String),
      description: patchValue(patch.description, String),
      latest_version: patchValue(patch.latestVersion, String),
      latest_active_version: patchValue(patch.latestActiveVersion, String),
      latest_failed_version: patchValue(patch.latestFailedVersion, String),
      tags: patch.tags === undefined ? undefined : JSON.stringify(patch.tags),
      updated_at: patch.updatedAt ?? this.now().toISOString(),
    };
    const row = await this.db
      .updateTable('images')
      .set(compact(set))
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new StoreNotFoundError('image', name);
    return toImage(row);
  }

  /**
   * Deletes the image and, through the schema's cascades, its versions and their builds.
   * Returns false if there was no such image. MicroVMs and client tokens are kept.
   */
  async delete(name: string): Promise<boolean> {
    const res = await this.db.deleteFrom('images').where('name', '=', name).executeTakeFirst();
    return res.numDeletedRows > 0n;
  }
}

function toImage(row: Selectable<ImagesTable>): ImageRecord {
  return compact({
    name: row.name,
    arn: row.arn,
    state: row.state as ImageState,
    stateReason: opt(row.state_reason),
    description: opt(row.description),
    latestVersion: opt(row.latest_version),
    latestActiveVersion: opt(row.latest_active_version),
    latestFailedVersion: opt(row.latest_failed_version),
    tags: fromJson<Record<string, string>>(row.tags, 'images', 'tags'),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}
