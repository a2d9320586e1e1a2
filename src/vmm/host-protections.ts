/**
 * What this Hearth enforces around its microVMs, and what it cannot here: said once per missing
 * protection when the engine opens, and served by the API (GET /hearth/v1/host) and `hearth host`.
 */
import type { NetworkMode } from '../net/vm-networks.js';
import type { Accelerator } from './qemu-args.js';

/** Stable names of the protections Hearth may enforce (API values: never renamed once shipped). */
export const PROTECTIONS = {
  'qemu-seccomp': 'QEMU runs under its seccomp sandbox (no exec, no fork, no set*id)',
  'qemu-jail': 'QEMU runs as its own unprivileged uid per VM, in a pivot_root jail with its own namespaces',
  'cgroup-limits': 'each QEMU has memory, task and CPU limits (its own control group)',
  'egress-deny-all':
    'a guest without egress connectors reaches nothing: not the host, not other VMs, not the outside',
  'egress-connectors': 'egress connectors (INTERNET_EGRESS, allow-lists) are enforced per VM',
} as const;

export type ProtectionName = keyof typeof PROTECTIONS;

/** The engine's view of the host, as GET /hearth/v1/host answers it. */
export interface HostProtections {
  accelerator: Accelerator;
  /** QEMU runs inside hearth-jailer (root only). */
  jail: boolean;
  /** Each QEMU runs in its own control group with limits (needs a writable cgroup tree). */
  cgroups: boolean;
  network: NetworkMode;
  enforced: ProtectionName[];
  notEnforced: ProtectionName[];
  /** What each missing protection means for the microVMs: warnings[i] is about notEnforced[i]. */
  warnings: string[];
}

export interface HostFacts {
  accelerator: Accelerator;
  jail: boolean;
  cgroups: boolean;
  network: NetworkMode;
  /** The uid Hearth (and so an unjailed QEMU) runs as. */
  uid: number;
}

/** What is and is not enforced on a host with these facts, with a warning for each gap. */
export function hostProtections(f: HostFacts): HostProtections {
  const on: Record<ProtectionName, boolean> = {
    'qemu-seccomp': true,
    'qemu-jail': f.jail,
    'cgroup-limits': f.cgroups,
    'egress-deny-all': true,
    'egress-connectors': f.network === 'namespaces',
  };
  const warning: Partial<Record<ProtectionName, string>> = {
    'qemu-jail': `no jail: QEMU runs as this user (uid ${f.uid}) and sees every file this user can read; VMs are not separated by uid (the jail needs root)`,
    'cgroup-limits': 'no control groups: microVMs run without memory, task and CPU limits',
    'egress-connectors':
      'user-mode networking (no root): guests reach nothing, but egress connectors cannot be enforced, so microVMs asking for INTERNET_EGRESS or an allow-list are refused',
  };
  const names = Object.keys(PROTECTIONS) as ProtectionName[];
  const notEnforced = names.filter((n) => !on[n]);
  return {
    accelerator: f.accelerator,
    jail: f.jail,
    cgroups: f.cgroups,
    network: f.network,
    enforced: names.filter((n) => on[n]),
    notEnforced,
    warnings: notEnforced.map((n) => warning[n] ?? `${n} is not enforced here`),
  };
}
