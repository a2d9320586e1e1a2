/**
 * The two ways Hearth networks its guests, behind one interface so the engine does not care which:
 *
 *   - 'namespaces' (root): each VM in its own network namespace, a tap device, nftables rules;
 *     egress policies enforced (vm-network.ts, NetworkManager).
 *   - 'user-mode' (no root, no CAP_NET_ADMIN): QEMU's own user-mode stack (libslirp) with
 *     `restrict=on`, so the guest reaches nothing; the host reaches guest ports through forwards
 *     QEMU listens on at 127.0.0.1, added on demand; egress policies other than deny-all cannot be
 *     enforced and are refused (user-network.ts, UserNetworks).
 *
 * Guests see the same thing in both: 172.16.0.2/30, gateway 172.16.0.1 (clones of one snapshot
 * share their memory, so they share their IP configuration).
 */
import type { EgressPolicy } from './policy.js';
import type { UserNetwork } from './user-network.js';
import type { TapNetwork } from './vm-network.js';

/** How guests are networked on this host. */
export type NetworkMode = 'namespaces' | 'user-mode';

/** What a VM holds while its QEMU runs: a namespace with a tap, or a slot of user-mode networking. */
export type VmNetwork = TapNetwork | UserNetwork;

/** Narrows a VM's network to a tap network; undefined for a user-mode one. */
export function asTapNetwork(net: VmNetwork | undefined): TapNetwork | undefined {
  return net && net.kind !== 'user' ? net : undefined;
}

/** Creates and gives back VM networks of one mode. One per engine. */
export interface VmNetworks {
  readonly mode: NetworkMode;
  /**
   * Throws if this kind of network cannot give a guest `policy`: NET_POLICY_INVALID for a malformed
   * or forbidden policy, NET_EGRESS_UNENFORCEABLE for any policy but deny-all in user mode. Nothing
   * is taken; call it before recording a launch.
   */
  checkEgress(policy: Readonly<EgressPolicy>): void;
  /**
   * Takes a network for a VM whose guest may reach what `egress` allows. Resolves as soon as one is
   * taken; `policyApplied` settles once its rules are in place (the guest must not run before). If
   * it rejects, release the network.
   */
  take(egress?: Readonly<EgressPolicy>): Promise<{ net: VmNetwork; policyApplied: Promise<void> }>;
  /** Like take, resolving once the policy is applied (the network is released if it fails). */
  acquire(egress?: Readonly<EgressPolicy>): Promise<VmNetwork>;
  /** Marks the network of a VM adopted from an earlier server (still running) as in use. */
  adopt(net: VmNetwork): void;
  /** Gives a VM's network back (its QEMU has exited or is being killed). Never throws. */
  release(net: VmNetwork): void;
  /** Removes what a crashed predecessor left, except the networks of `inUse` slots. */
  reapOrphans(inUse: ReadonlySet<number>): Promise<number>;
  /** Stops background work and removes spares. Call before exiting. */
  drain(): Promise<void>;
  /** How many networks VMs hold right now. */
  readonly activeCount: number;
}
