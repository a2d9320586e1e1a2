import { readdir, readFile } from 'node:fs/promises';

/**
 * Finds QEMU processes started for VMs under `vmsDir` (their command line names files there) and
 * SIGKILLs them, except `keepPids` (adopted VMs). Used when an engine opens a data directory after a
 * crash. Returns how many.
 */
export async function killOrphanQemus(vmsDir: string, keepPids: readonly number[] = []): Promise<number> {
  const prefix = vmsDir.endsWith('/') ? vmsDir : vmsDir + '/';
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid || keepPids.includes(pid)) continue;
    const argv = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!argv[0]?.endsWith('qemu-system-x86_64')) continue;
    if (argv.some((a) => a.includes(prefix))) pids.push(pid);
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  // Wait until they are really gone, so their tap devices and files are released.
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline && pids.some((p) => alive(p))) await new Promise((r) => setTimeout(r, 20));
  return pids.length;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
