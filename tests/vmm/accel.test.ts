import { access, constants } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/util/log.js';
import { chooseAccelerator, probeBoot } from '../../src/vmm/accel.js';
import { loadHostArtifacts } from '../../src/setup/host-artifacts.js';
import { testDataDir } from '../helpers/env.js';

describe('accelerator choice', () => {
  it('chose the accelerator by booting a real guest, and says why', async () => {
    const a = await loadHostArtifacts(testDataDir());
    const kvmDevice = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    );
    if (a.accel.accel === 'tcg') {
      // On these machines /dev/kvm exists but cannot run a guest: the probe must have noticed.
      expect(a.accel.reason).toMatch(
        kvmDevice ? /KVM guest did not reach userspace/ : /\/dev\/kvm is absent/,
      );
    } else {
      expect(a.accel.reason).toMatch(/KVM guest reached userspace in \d+ ms/);
    }
    expect(a.accel.probeBootMs).toBeGreaterThan(0);
  });

  it('boots the probe guest under TCG', async () => {
    const a = await loadHostArtifacts(testDataDir());
    const probe = await probeBoot('tcg', a.kernel.vmlinuz, a.initramfs, 60_000);
    expect(probe).toEqual({ ms: expect.any(Number) });
    expect(probe.ms).toBeGreaterThan(0);
  });

  it('honours an accelerator forced by configuration without probing', async () => {
    const a = await loadHostArtifacts(testDataDir());
    const choice = await chooseAccelerator({
      setting: 'tcg',
      cacheFile: '/nonexistent/never-written.json',
      kernel: a.kernel.vmlinuz,
      initrd: a.initramfs,
      log: createLogger('test'),
    });
    expect(choice).toMatchObject({
      accel: 'tcg',
      reason: expect.stringContaining('forced by configuration'),
    });
  });
});
