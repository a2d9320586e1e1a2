import { randomBytes } from 'node:crypto';
import type { MicroVm } from './microvm.js';

/** Bytes of fresh host entropy given to the guest RNG after every restore. */
export const RESEED_BYTES = 64;

/**
 * Makes a restored VM its own again, before anything reaches it: guest wall clock set to the host's
 * (the snapshot's clock is stale by however long it sat), the RNG reseeded with fresh host entropy
 * (clones of one snapshot would otherwise share their CSPRNG state), hostname and machine-id set to
 * this VM's. With `thaw`, the filesystems frozen for the snapshot are thawed at the same time.
 */
export async function applyRestoreHygiene(
  vm: MicroVm,
  opts: { thaw: boolean; timeoutMs?: number },
): Promise<void> {
  // Generous: on a host busy launching many VMs (TCG, few cores) the guest can take seconds to answer.
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const control = await vm.control(timeoutMs);
  await control.fixup(
    {
      realtimeNs: BigInt(Date.now()) * 1_000_000n,
      entropy: randomBytes(RESEED_BYTES),
      hostname: vm.record.hostname,
      machineId: vm.record.machineId,
    },
    timeoutMs,
    { thaw: opts.thaw },
  );
}
