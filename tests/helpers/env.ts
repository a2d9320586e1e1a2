import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataDir } from '../../src/config/data-dir.js';

/** Tests use their own data directory, so they never touch a real installation's VMs. */
export function testDataDir(): DataDir {
  return new DataDir(process.env.HEARTH_TEST_DATA_DIR ?? '/var/lib/hearth-test');
}

export const COUNTER_APP = readFileSync(
  join(import.meta.dirname, '..', 'fixtures', 'counter-app.py'),
  'utf8',
);
export const COUNTER_PORT = 8080;
/** Requests the template served before its snapshot: every clone's counter starts after this. */
export const TEMPLATE_REQUESTS = 3;
