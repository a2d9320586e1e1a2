import { sql, type Kysely } from 'kysely';
import type { Database, Migration } from './schema.js';

/** Migrations this database has and this build does not know: written by a newer Hearth. */
export class UnknownMigrationsError extends Error {
  constructor(readonly names: string[]) {
    super(`the database has migrations this version of Hearth does not know: ${names.join(', ')}`);
  }
}

/**
 * Brings the schema up to date: applies, in order, each migration not yet recorded in the
 * `migrations` table. Each one runs in its own transaction that first inserts its row; when several
 * processes migrate the same PostgreSQL database at once, the others wait on that row and then skip
 * the migration, so every migration runs exactly once without dialect-specific locks.
 *
 * Throws UnknownMigrationsError (before changing anything) if the database has migrations that
 * `migrations` does not list. Returns the names it applied.
 */
export async function migrate(
  db: Kysely<Database>,
  migrations: readonly Migration[],
  now: () => Date,
): Promise<string[]> {
  await createMigrationsTable(db);
  const known = new Set(migrations.map((m) => m.name));
  const recorded = await db.selectFrom('migrations').select('name').execute();
  const unknown = recorded.map((r) => r.name).filter((n) => !known.has(n));
  if (unknown.length > 0) throw new UnknownMigrationsError(unknown);

  const done = new Set(recorded.map((r) => r.name));
  const applied: string[] = [];
  for (const m of migrations) {
    if (done.has(m.name)) continue;
    const ran = await db.transaction().execute(async (trx) => {
      const ins = await trx
        .insertInto('migrations')
        .values({ name: m.name, applied_at: now().toISOString() })
        .onConflict((oc) => oc.column('name').doNothing())
        .executeTakeFirst();
      if (ins.numInsertedOrUpdatedRows === 0n) return false; // another process applied it
      await m.up(trx);
      return true;
    });
    if (ran) applied.push(m.name);
  }
  return applied;
}

/**
 * CREATE TABLE IF NOT EXISTS can still race in PostgreSQL: two sessions both see no table and the
 * loser fails on a catalog index (23505, 42P07 or 42710, depending on which it hits first) once the
 * winner commits. The table then exists, so the statement is tried again; an error that is not
 * such a race (permissions, say) repeats and is thrown.
 */
async function createMigrationsTable(db: Kysely<Database>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await db.schema
        .createTable('migrations')
        .ifNotExists()
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('applied_at', 'text', (c) => c.notNull())
        .execute();
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
  // Touch it, so a table of the same name but another shape fails here and not halfway through.
  await sql`select name, applied_at from migrations where 1 = 0`.execute(db);
}
