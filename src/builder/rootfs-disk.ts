import { rm, stat } from 'node:fs/promises';
import { run } from '../util/exec.js';
import { CommandFailedError } from '../util/errors.js';

/** The root filesystem does not fit the disk size asked for, or the host ran out of space. */
export class DiskFullError extends Error {
  readonly code = 'DISK_STORAGE_FULL';
}

const NO_SPACE = /No space left|Could not allocate block|not enough space|too small|ENOSPC|File too large/i;

/**
 * Makes an ext4 disk image of `sizeMiB` (sparse: only written blocks use host space) holding the
 * tree at `rootfs`, with ownership, modes, links and special files as they are. Throws
 * DiskFullError when the content does not fit or the host disk is full; leaves no file on failure.
 */
export async function rootfsToDisk(
  rootfs: string,
  diskPath: string,
  sizeMiB: number,
): Promise<{ allocatedBytes: number }> {
  try {
    await run(
      'mkfs.ext4',
      ['-q', '-F', '-L', 'hearth-root', '-E', 'root_owner=0:0', '-d', rootfs, diskPath, `${sizeMiB}M`],
      {
        timeoutMs: 600_000,
      },
    );
  } catch (e) {
    await rm(diskPath, { force: true });
    const detail = e instanceof CommandFailedError ? e.stderrTail : (e as Error).message;
    if (NO_SPACE.test(detail))
      throw new DiskFullError(
        `the root filesystem does not fit a ${sizeMiB} MiB disk (${detail.split('\n').pop()})`,
      );
    throw e;
  }
  const st = await stat(diskPath);
  return { allocatedBytes: st.blocks * 512 };
}

/** Bytes of file content under `dir` (du -sb), for the code install size of a build. */
export async function treeBytes(dir: string): Promise<number> {
  const r = await run('du', ['-sb', '--one-file-system', dir], { allowFailure: true });
  return Number(r.stdout.split(/\s/)[0]) || 0;
}
