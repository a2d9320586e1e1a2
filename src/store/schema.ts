/**
 * The control plane's tables, as Kysely sees them, and the migrations that create them. One schema
 * for SQLite and PostgreSQL: only types both understand (text, integer, bigint), nested objects as
 * JSON in text columns, dates as ISO-8601 strings in text columns (they sort chronologically).
 * Columns are snake_case; the repositories map them to the camelCase records of src/core/model.ts.
 */
import type { ColumnType, Kysely } from 'kysely';

/** A bigint column: pg returns int8 as a string (it may exceed 2^53); read it with Number(). */
export type BigIntColumn = ColumnType<number | string | null, number | null, number | null>;

export interface ImagesTable {
  name: string;
  arn: string;
  state: string;
  state_reason: string | null;
  description: string | null;
  latest_version: string | null;
  latest_active_version: string | null;
  latest_failed_version: string | null;
  /** JSON object of string values. */
  tags: string;
  /** The last version number handed out; the next version is this + 1 (never reused). */
  version_counter: number;
  created_at: string;
  updated_at: string;
}

export interface ImageVersionsTable {
  image_name: string;
  /** "1.0", "2.0", ... */
  version: string;
  /** The numeric part of `version`, for ordering ("10.0" after "9.0"). */
  version_number: number;
  id: string;
  state: string;
  status: string;
  state_reason: string | null;
  /** JSON ImageVersionConfig. */
  config: string;
  created_at: string;
  updated_at: string;
}

export interface ImageBuildsTable {
  id: string;
  image_name: string;
  version: string;
  build_state: string;
  failure_code: string | null;
  state_reason: string | null;
  architecture: string;
  snapshot_memory_size_in_bytes: BigIntColumn;
  snapshot_disk_size_in_bytes: BigIntColumn;
  code_install_size_in_bytes: BigIntColumn;
  started_at: string;
  ended_at: string | null;
}

export interface MicrovmsTable {
  microvm_id: string;
  image_name: string;
  image_version: string;
  state: string;
  state_reason: string | null;
  /** JSON IdlePolicy or null. */
  idle_policy: string | null;
  maximum_duration_in_seconds: number;
  run_hook_payload: string | null;
  /** JSON string arrays. */
  ingress_network_connectors: string;
  egress_network_connectors: string;
  client_token: string | null;
  token_generation: number;
  started_at: string;
  suspended_at: string | null;
  terminated_at: string | null;
  updated_at: string;
  /** JSON MicrovmUsage or null (added by 0003). */
  usage: string | null;
}

export interface ApiKeysTable {
  access_key_id: string;
  secret_access_key: string;
  description: string | null;
  created_at: string;
}

export interface IdempotencyTable {
  scope: string;
  client_token: string;
  request_hash: string;
  /** JSON of the operation's result; null while the operation has not finished. */
  result: string | null;
  created_at: string;
}

export interface NetworkConnectorsTable {
  name: string;
  arn: string;
  description: string | null;
  /** JSON array of ConnectorEgressRule. */
  egress_rules: string;
  /** JSON object of string values. */
  tags: string;
  created_at: string;
}

export interface MigrationsTable {
  name: string;
  applied_at: string;
}

export interface Database {
  images: ImagesTable;
  image_versions: ImageVersionsTable;
  image_builds: ImageBuildsTable;
  microvms: MicrovmsTable;
  api_keys: ApiKeysTable;
  idempotency: IdempotencyTable;
  network_connectors: NetworkConnectorsTable;
  migrations: MigrationsTable;
}

/**
 * One schema change. `up` runs inside a transaction together with the insert of its row in
 * `migrations`, so it is applied completely or not at all. It must use only what both dialects
 * accept: Kysely's schema builder with the column types above.
 */
export interface Migration {
  /** Never renamed once shipped: the `migrations` table records names. */
  name: string;
  // The schema at migration time is not `Database` (that is the schema after all of them).
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  up(db: Kysely<any>): Promise<void>;
}

/** Applied in this order; append only. */
export const MIGRATIONS: readonly Migration[] = [
  {
    name: '0001-initial',
    async up(db) {
      await db.schema
        .createTable('images')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('arn', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('description', 'text')
        .addColumn('latest_version', 'text')
        .addColumn('latest_active_version', 'text')
        .addColumn('latest_failed_version', 'text')
        .addColumn('tags', 'text', (c) => c.notNull())
        .addColumn('version_counter', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('image_versions')
        .addColumn('image_name', 'text', (c) => c.notNull().references('images.name').onDelete('cascade'))
        .addColumn('version', 'text', (c) => c.notNull())
        .addColumn('version_number', 'integer', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('config', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('image_versions_pk', ['image_name', 'version'])
        .addUniqueConstraint('image_versions_number_unique', ['image_name', 'version_number'])
        .execute();

      await db.schema
        .createTable('image_builds')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('image_name', 'text', (c) => c.notNull())
        .addColumn('version', 'text', (c) => c.notNull())
        .addColumn('build_state', 'text', (c) => c.notNull())
        .addColumn('failure_code', 'text')
        .addColumn('state_reason', 'text')
        .addColumn('architecture', 'text', (c) => c.notNull())
        .addColumn('snapshot_memory_size_in_bytes', 'bigint')
        .addColumn('snapshot_disk_size_in_bytes', 'bigint')
        .addColumn('code_install_size_in_bytes', 'bigint')
        .addColumn('started_at', 'text', (c) => c.notNull())
        .addColumn('ended_at', 'text')
        .addForeignKeyConstraint(
          'image_builds_version_fk',
          ['image_name', 'version'],
          'image_versions',
          ['image_name', 'version'],
          (fk) => fk.onDelete('cascade'),
        )
        .execute();
      await db.schema
        .createIndex('image_builds_by_version')
        .on('image_builds')
        .columns(['image_name', 'version', 'started_at', 'id'])
        .execute();

      // No foreign key to images: a microVM's record outlives the image it was launched from.
      await db.schema
        .createTable('microvms')
        .addColumn('microvm_id', 'text', (c) => c.primaryKey())
        .addColumn('image_name', 'text', (c) => c.notNull())
        .addColumn('image_version', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('idle_policy', 'text')
        .addColumn('maximum_duration_in_seconds', 'integer', (c) => c.notNull())
        .addColumn('run_hook_payload', 'text')
        .addColumn('ingress_network_connectors', 'text', (c) => c.notNull())
        .addColumn('egress_network_connectors', 'text', (c) => c.notNull())
        .addColumn('client_token', 'text')
        .addColumn('token_generation', 'integer', (c) => c.notNull())
        .addColumn('started_at', 'text', (c) => c.notNull())
        .addColumn('suspended_at', 'text')
        .addColumn('terminated_at', 'text')
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('microvms_by_start')
        .on('microvms')
        .columns(['started_at', 'microvm_id'])
        .execute();
      await db.schema.createIndex('microvms_by_state').on('microvms').columns(['state']).execute();
      await db.schema
        .createIndex('microvms_by_image')
        .on('microvms')
        .columns(['image_name', 'image_version'])
        .execute();

      await db.schema
        .createTable('api_keys')
        .addColumn('access_key_id', 'text', (c) => c.primaryKey())
        .addColumn('secret_access_key', 'text', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();

      // No foreign keys: client tokens stay reserved after the resource they created is deleted.
      await db.schema
        .createTable('idempotency')
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('client_token', 'text', (c) => c.notNull())
        .addColumn('request_hash', 'text', (c) => c.notNull())
        .addColumn('result', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('idempotency_pk', ['scope', 'client_token'])
        .execute();
    },
  },
  {
    name: '0002-network-connectors',
    async up(db) {
      // Which microVMs use a connector is read from the microVMs' own connector lists.
      await db.schema
        .createTable('network_connectors')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('arn', 'text', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('egress_rules', 'text', (c) => c.notNull())
        .addColumn('tags', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  {
    name: '0003-microvm-usage',
    async up(db) {
      await db.schema.alterTable('microvms').addColumn('usage', 'text').execute();
    },
  },
];
