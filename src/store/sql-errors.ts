/**
 * Recognises constraint violations from either driver: better-sqlite3 reports SQLite extended result
 * codes as strings ("SQLITE_CONSTRAINT_UNIQUE"), pg reports SQLSTATE codes ("23505").
 */

function driverCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = (err as { code: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** A primary key or unique constraint rejected the write. */
export function isUniqueViolation(err: unknown): boolean {
  const code = driverCode(err);
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** A foreign key rejected the write: the parent row does not exist. */
export function isForeignKeyViolation(err: unknown): boolean {
  const code = driverCode(err);
  return code === '23503' || code === 'SQLITE_CONSTRAINT_FOREIGNKEY';
}
