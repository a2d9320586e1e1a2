import type { Kysely, Selectable, Updateable } from 'kysely';
import type { BuildFailureCode, BuildState, ImageBuildRecord } from '../core/model.js';
import { compact, opt, optNumber, patchValue, type Patch } from './codec.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { Database, ImageBuildsTable } from './schema.js';
import { isForeignKeyViolation, isUniqueViolation } from './sql-errors.js';

/** The fields of a build that change after it starts. */
export type ImageBuildPatch = Patch<
  ImageBuildRecord,
  | 'buildState'
  | 'failureCode'
  | 'stateReason'
  | 'snapshotMemorySizeInBytes'
  | 'snapshotDiskSizeInBytes'
  | 'codeInstallSizeInBytes'
  | 'endedAt'
>;

const LISTING = 'image-builds';

export class ImageBuildRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Inserts a build of an existing version. StoreNotFoundError if the version does not exist;
   * StoreConflictError if the id is taken.
   */
  async create(build: ImageBuildRecord): Promise<ImageBuildRecord> {
    try {
      const row = await this.db
        .insertInto('image_builds')
        .values({
          id: build.id,
          image_name: build.imageName,
          version: build.version,
          build_state: build.buildState,
          failure_code: build.failureCode ?? null,
          state_reason: build.stateReason ?? null,
          architecture: build.architecture,
          snapshot_memory_size_in_bytes: build.snapshotMemorySizeInBytes ?? null,
          snapshot_disk_size_in_bytes: build.snapshotDiskSizeInBytes ?? null,
          code_install_size_in_bytes: build.codeInstallSizeInBytes ?? null,
          started_at: build.startedAt,
          ended_at: build.endedAt ?? null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toBuild(row);
    } catch (e) {
      if (isUniqueViolation(e))
        throw new StoreConflictError('image build', build.id, 'a build with this id exists', { cause: e });
      if (isForeignKeyViolation(e))
        throw new StoreNotFoundError('image version', `${build.imageName}:${build.version}`, { cause: e });
      throw e;
    }
  }

  async get(id: string): Promise<ImageBuildRecord | undefined> {
    const row = await this.db.selectFrom('image_builds').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toBuild(row);
  }

  /** The builds of one version, oldest first (by startedAt, then id). */
  async listByVersion(
    imageName: string,
    version: string,
    req: PageRequest = {},
  ): Promise<Page<ImageBuildRecord>> {
    const limit = pageLimit(req);
    let q = this.db
      .selectFrom('image_builds')
      .selectAll()
      .where('image_name', '=', imageName)
      .where('version', '=', version);
    if (req.cursor !== undefined) {
      const [startedAt, id] = decodeCursor<[string, string]>(LISTING, req.cursor, ['string', 'string']);
      q = q.where((eb) => eb(eb.refTuple('started_at', 'id'), '>', eb.tuple(startedAt, id)));
    }
    const rows = await q
      .orderBy('started_at')
      .orderBy('id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [r.started_at, r.id], toBuild);
  }

  /** Applies `patch`; returns the updated build. StoreNotFoundError if there is no such build. */
  async update(id: string, patch: ImageBuildPatch): Promise<ImageBuildRecord> {
    const set: Updateable<ImageBuildsTable> = compact({
      build_state: patch.buildState,
      failure_code: patchValue(patch.failureCode, String),
      state_reason: patchValue(patch.stateReason, String),
      snapshot_memory_size_in_bytes: patchValue(patch.snapshotMemorySizeInBytes, Number),
      snapshot_disk_size_in_bytes: patchValue(patch.snapshotDiskSizeInBytes, Number),
      code_install_size_in_bytes: patchValue(patch.codeInstallSizeInBytes, Number),
      ended_at: patchValue(patch.endedAt, String),
    });
    if (Object.keys(set).length === 0) {
      const current = await this.get(id);
      if (!current) throw new StoreNotFoundError('image build', id);
      return current;
    }
    const row = await this.db
      .updateTable('image_builds')
      .set(set)
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new StoreNotFoundError('image build', id);
    return toBuild(row);
  }
}

function toBuild(row: Selectable<ImageBuildsTable>): ImageBuildRecord {
  return compact({
    id: row.id,
    imageName: row.image_name,
    version: row.version,
    buildState: row.build_state as BuildState,
    failureCode: opt(row.failure_code) as BuildFailureCode | undefined,
    stateReason: opt(row.state_reason),
    architecture: row.architecture as ImageBuildRecord['architecture'],
    snapshotMemorySizeInBytes: optNumber(row.snapshot_memory_size_in_bytes),
    snapshotDiskSizeInBytes: optNumber(row.snapshot_disk_size_in_bytes),
    codeInstallSizeInBytes: optNumber(row.code_install_size_in_bytes),
    startedAt: row.started_at,
    endedAt: opt(row.ended_at),
  });
}
