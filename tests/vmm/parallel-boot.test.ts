import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { openEngine, sh, uniqueId } from '../helpers/vm.js';

describe('cold boots on a busy host', () => {
  let engine: Engine;
  const vms: MicroVm[] = [];

  beforeAll(async () => {
    engine = await openEngine();
  });

  afterAll(async () => {
    for (const vm of vms) await engine.destroy(vm.id);
    await engine.close();
  });

  it('boots four VMs at once (twice the cores): the guests never calibrate the TSC against the PIT', async () => {
    // Under TCG with more vCPUs than cores, PIT calibration fails and, with no HPET on microvm, the
    // guest kernel marked the TSC unstable and hung in early boot. It is now told the frequency.
    const booted = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        engine.boot({
          vmId: uniqueId(`busy-${i}`),
          workload: { argv: ['sleep', '1000'] },
          bootTimeoutMs: 60_000,
        }),
      ),
    );
    vms.push(...booted);
    for (const vm of booted) {
      const kernelLog = await sh(vm, 'dmesg');
      expect(kernelLog).not.toMatch(/Unable to calibrate against PIT|Marking TSC unstable/);
      expect(kernelLog).toMatch(/tsc: Detected \d+\.\d+ MHz/);
    }
  });
});
