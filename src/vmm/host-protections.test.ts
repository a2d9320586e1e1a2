import { describe, expect, it } from 'vitest';
import { hostProtections, PROTECTIONS } from './host-protections.js';

describe('hostProtections', () => {
  it('as root: everything enforced, nothing to warn about', () => {
    const p = hostProtections({
      accelerator: 'tcg',
      jail: true,
      cgroups: true,
      network: 'namespaces',
      uid: 0,
    });
    expect(p.enforced).toEqual(Object.keys(PROTECTIONS));
    expect(p.notEnforced).toEqual([]);
    expect(p.warnings).toEqual([]);
  });

  it('without root: one warning per missing protection, and what stays enforced', () => {
    const p = hostProtections({
      accelerator: 'kvm',
      jail: false,
      cgroups: false,
      network: 'user-mode',
      uid: 1000,
    });
    expect(p).toMatchObject({ accelerator: 'kvm', jail: false, cgroups: false, network: 'user-mode' });
    expect(p.enforced).toEqual(['qemu-seccomp', 'egress-deny-all']);
    expect(p.notEnforced).toEqual(['qemu-jail', 'cgroup-limits', 'egress-connectors']);
    expect(p.warnings).toHaveLength(3);
    expect(p.warnings[0]).toMatch(/no jail: QEMU runs as this user \(uid 1000\)/);
    expect(p.warnings[1]).toMatch(/no control groups/);
    expect(p.warnings[2]).toMatch(/egress connectors cannot be enforced/);
  });

  it('root without writable cgroups warns about the limits only', () => {
    const p = hostProtections({
      accelerator: 'tcg',
      jail: true,
      cgroups: false,
      network: 'namespaces',
      uid: 0,
    });
    expect(p.notEnforced).toEqual(['cgroup-limits']);
    expect(p.warnings).toHaveLength(1);
  });
});
