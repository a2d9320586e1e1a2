import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { run } from '../util/exec.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { createLogger } from '../util/log.js';
import { candidateVersion, downloadAndExtract } from './debian-download.js';

const log = createLogger('setup.agent');

export interface AgentBundle {
  /** Debian version of qemu-guest-agent. */
  version: string;
  /** Directory with qemu-ga, its shared libraries and the ELF loader (ld-linux-x86-64.so.2). */
  dir: string;
}

/**
 * Makes a self-contained qemu-guest-agent: Debian's binary plus every shared library it needs and
 * the loader, so it runs inside any image (another libc, or none) as
 * `ld-linux-x86-64.so.2 --library-path <dir> <dir>/qemu-ga`. Cached per package version.
 */
export async function ensureAgentBundle(guestDir: string): Promise<AgentBundle> {
  await mkdir(guestDir, { recursive: true });
  const version = (await candidateVersion('qemu-guest-agent')) ?? 'unknown';
  const dir = join(guestDir, `agent-${version.replace(/[^A-Za-z0-9.+-]/g, '_')}`);
  const manifest = join(dir, 'agent.json');
  if (existsSync(manifest)) return { ...(JSON.parse(await readFile(manifest, 'utf8')) as AgentBundle), dir };

  log.info('bundling qemu-guest-agent', { version });
  const work = await downloadAndExtract('qemu-guest-agent', guestDir);
  try {
    const binary = join(work, 'root', 'usr', 'sbin', 'qemu-ga');
    const staging = `${dir}.staging`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    await copyFile(binary, join(staging, 'qemu-ga'));
    const ldd = (await run('ldd', [binary])).stdout;
    for (const line of ldd.split('\n')) {
      const lib = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S*ld-linux\S*)/.exec(line)?.[1];
      if (!lib) continue;
      await copyFile(lib, join(staging, basename(lib)));
    }
    if (!existsSync(join(staging, 'ld-linux-x86-64.so.2')))
      throw new Error('ldd did not report the ELF loader');
    const bundle: AgentBundle = { version, dir };
    await writeFileAtomic(join(staging, 'agent.json'), JSON.stringify(bundle, null, 2));
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    return bundle;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
