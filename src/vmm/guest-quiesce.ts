import { readdir, readFile } from 'node:fs/promises';

/** Total CPU time of a QEMU process's vCPU threads (named "CPU <n>/TCG" or "/KVM"), ns. */
export async function vcpuTimeNs(pid: number): Promise<bigint> {
  let total = 0n;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      const comm = await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8');
      if (!comm.startsWith('CPU ')) continue;
      const schedstat = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
      total += BigInt(schedstat.split(' ')[0]!);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
}

export interface QuietOptions {
  /** Length of the window the guest must stay quiet over, ms. */
  windowMs?: number;
  /** Most of one window the vCPUs may run and still count as quiet (0..1). */
  busyFraction?: number;
  /** Give up after this long, ms. */
  maxMs?: number;
}

/**
 * Waits until a running guest is quiet: its vCPUs ran less than `busyFraction` of a `windowMs`
 * window (defaults 100 ms, 5%), or `maxMs` (2 s) passed. Resolves true if it went quiet. Used
 * before a snapshot, so that work the guest was in the middle of (a connection closing, a port
 * event) is finished once rather than redone after every restore. Precondition: `pid` is the QEMU
 * process and its vCPUs run.
 */
export async function waitForQuietGuest(pid: number, o: QuietOptions = {}): Promise<boolean> {
  const windowMs = o.windowMs ?? 100;
  const busyNs = BigInt(Math.round(windowMs * (o.busyFraction ?? 0.05) * 1e6));
  const deadline = Date.now() + (o.maxMs ?? 2_000);
  let before = await vcpuTimeNs(pid);
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, windowMs));
    const now = await vcpuTimeNs(pid);
    if (now - before < busyNs) return true;
    before = now;
  }
  return false;
}
