import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './exec.js';
import { sha256 } from './hash.js';
import { createLogger } from './log.js';

const log = createLogger('setup');

/**
 * Compiles the C program `source` (static, `gcc -static -O2 -Wall -Werror`, stripped) to
 * `outDir/<name>-<sha256(source)[:16]>` unless that file exists, and returns its path. The output
 * is written to a temporary name, chmod 0755 and renamed, so a reader never sees a partial
 * binary. Precondition: only root can write to `outDir` when the binary is run as root.
 */
export async function ensureStaticBinary(source: string, outDir: string, name: string): Promise<string> {
  const hash = sha256(await readFile(source)).slice(0, 16);
  const out = join(outDir, `${name}-${hash}`);
  if (existsSync(out)) return out;
  await mkdir(outDir, { recursive: true });
  log.info(`compiling ${name}`, { hash });
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    await run('gcc', ['-static', '-O2', '-Wall', '-Werror', '-o', tmp, source]);
    await run('strip', [tmp], { allowFailure: true });
    await chmod(tmp, 0o755);
    await rename(tmp, out);
  } finally {
    await rm(tmp, { force: true });
  }
  return out;
}
