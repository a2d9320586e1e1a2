import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { aptUpdate } from '../host/packages.js';

/**
 * Downloads one Debian package with `apt-get download` (no install) and unpacks it into a fresh
 * temporary directory under `workDir`. The caller removes the returned directory.
 */
export async function downloadAndExtract(pkg: string, workDir: string): Promise<string> {
  const dir = await mkdtemp(join(workDir, '.dl-'));
  const download = () =>
    run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg], {
      cwd: dir,
      timeoutMs: 600_000,
    });
  try {
    try {
      await download();
    } catch {
      await aptUpdate();
      await download();
    }
    const debs = (await readdir(dir)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1) throw new Error(`expected one .deb for ${pkg}, found ${debs.length}`);
    const root = join(dir, 'root');
    await run('dpkg-deb', ['-x', join(dir, debs[0]!), root]);
    return dir;
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The version apt would install for `pkg` (from local package lists; no network). */
export async function candidateVersion(pkg: string): Promise<string | undefined> {
  const res = await run('apt-cache', ['policy', pkg], { allowFailure: true });
  const m = /Candidate:\s*(\S+)/.exec(res.stdout);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}
