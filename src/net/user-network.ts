/**
 * User-mode networking: what a Hearth without root (no CAP_NET_ADMIN) gives its guests.
 *
 * QEMU's `-netdev user` (libslirp) is a TCP/IP stack inside the QEMU process: guest packets become
 * the host sockets of QEMU's user. With `restrict=on` the guest reaches nothing through it: not the
 * host (slirp's host address 172.16.0.1, which otherwise maps to the host's loopback), not the
 * outside, not slirp's DNS relay; its TCP connections are reset at once and everything else is
 * dropped. Only host forwards remain: QEMU listens on 127.0.0.1:<host port> and connects each
 * accepted connection to <guest>:<guest port>. Forwards are added while the VM runs, on demand,
 * through QMP (`human-monitor-command hostfwd_add`; see src/vmm/port-forwards.ts).
 *
 * The slirp network matches the static configuration every guest has (vm-network.ts): the guest is
 * 172.16.0.2/30 with gateway 172.16.0.1 (slirp's own address). Slirp's DNS address must be in the
 * network and differ from the host address and the DHCP start: 172.16.0.3, never used (guests of a
 * user-mode Hearth get no resolver: their resolv.conf names their own loopback, so a lookup fails
 * at once instead of waiting for a reply that never comes).
 *
 * There is no host state to create or clean up: the network lives and dies with the QEMU process.
 * The "slot" of a user network only tells running VMs apart (and gives a jailed QEMU its uid when
 * root forces user mode).
 */
import { EgressUnenforceableError } from './errors.js';
import { DENY_ALL_EGRESS, type EgressPolicy } from './policy.js';
import type { NetworkMode, VmNetwork, VmNetworks } from './vm-networks.js';
import { GUEST_GATEWAY, GUEST_IP, GUEST_MAC } from './vm-network.js';

/** A running VM's user-mode network: nothing on the host but what its QEMU holds. */
export interface UserNetwork {
  kind: 'user';
  /** Unique among this engine's running VMs, 1..USER_SLOT_MAX. */
  slot: number;
  macAddress: string;
}

/** The QEMU netdev id of the guest's network (hostfwd_add names it). */
export const USER_NETDEV_ID = 'net0';
/** Slirp's network: exactly the guest's /30. */
export const SLIRP_NETWORK = '172.16.0.0/30';
/** Slirp's DNS relay address: required by QEMU to be in the network, unused (see the module doc). */
export const SLIRP_DNS = '172.16.0.3';
/** Where forwards listen on the host: loopback only. */
export const FORWARD_HOST_ADDRESS = '127.0.0.1';
const USER_SLOT_MAX = 65_535;

/**
 * The `-netdev` value of a user-mode network: slirp on the guest's /30 (host = the guest's
 * gateway, DHCP start = the guest's address, so a forward without a guest address still reaches
 * it), restricted (the guest reaches nothing), no IPv6.
 */
export function slirpNetdevArg(id = USER_NETDEV_ID): string {
  return [
    'user',
    `id=${id}`,
    `net=${SLIRP_NETWORK}`,
    `host=${GUEST_GATEWAY}`,
    `dns=${SLIRP_DNS}`,
    `dhcpstart=${GUEST_IP}`,
    'restrict=on',
    'ipv6=off',
  ].join(',');
}

function checkPort(what: string, port: number, min = 1): void {
  if (!Number.isInteger(port) || port < min || port > 65_535)
    throw new RangeError(`${what} must be an integer in ${min}..65535, not ${port}`);
}

/**
 * The HMP command adding a forward from 127.0.0.1:`hostPort` (0: a port the kernel picks) to the
 * guest's `guestPort`. QEMU answers an empty string on success, a message otherwise.
 */
export function hostfwdAddCommand(hostPort: number, guestPort: number, netdev = USER_NETDEV_ID): string {
  checkPort('host port', hostPort, 0);
  checkPort('guest port', guestPort);
  return `hostfwd_add ${netdev} tcp:${FORWARD_HOST_ADDRESS}:${hostPort}-${GUEST_IP}:${guestPort}`;
}

/** The HMP command removing the forward listening on 127.0.0.1:`hostPort`. */
export function hostfwdRemoveCommand(hostPort: number, netdev = USER_NETDEV_ID): string {
  checkPort('host port', hostPort);
  return `hostfwd_remove ${netdev} tcp:${FORWARD_HOST_ADDRESS}:${hostPort}`;
}

/** One TCP forward as `info usernet` lists it. */
export interface UsernetForward {
  hostAddress: string;
  hostPort: number;
  guestAddress: string;
  guestPort: number;
}

/**
 * The TCP forwards in the output of HMP `info usernet` (libslirp's connection table), e.g.
 * `  TCP[HOST_FORWARD]  18   127.0.0.1 18080   172.16.0.2  8080     0     0`. Connections through
 * a forward (TCP[ESTABLISHED] ...) and UDP entries are not forwards and are skipped.
 */
export function parseUsernetForwards(text: string): UsernetForward[] {
  const out: UsernetForward[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*TCP\[HOST_FORWARD\]\s+-?\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s/.exec(line);
    if (!m) continue;
    out.push({ hostAddress: m[1]!, hostPort: Number(m[2]), guestAddress: m[3]!, guestPort: Number(m[4]) });
  }
  return out;
}

/**
 * User-mode networks of one engine: slots only (QEMU holds the rest). Deny-all is the only egress
 * policy it gives; any other is refused with NET_EGRESS_UNENFORCEABLE before anything starts.
 */
export class UserNetworks implements VmNetworks {
  readonly mode: NetworkMode = 'user-mode';
  private readonly inUse = new Set<number>();

  checkEgress(policy: Readonly<EgressPolicy>): void {
    if (policy.internet !== false || !Array.isArray(policy.allow) || policy.allow.length > 0)
      throw new EgressUnenforceableError();
  }

  take(
    egress: Readonly<EgressPolicy> = DENY_ALL_EGRESS,
  ): Promise<{ net: VmNetwork; policyApplied: Promise<void> }> {
    try {
      this.checkEgress(egress);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    let slot = 1;
    while (this.inUse.has(slot)) slot++;
    if (slot > USER_SLOT_MAX) return Promise.reject(new RangeError('no free user-mode network slot'));
    this.inUse.add(slot);
    const net: UserNetwork = { kind: 'user', slot, macAddress: GUEST_MAC };
    return Promise.resolve({ net, policyApplied: Promise.resolve() });
  }

  async acquire(egress: Readonly<EgressPolicy> = DENY_ALL_EGRESS): Promise<VmNetwork> {
    return (await this.take(egress)).net;
  }

  adopt(net: VmNetwork): void {
    this.inUse.add(net.slot);
  }

  release(net: VmNetwork): void {
    this.inUse.delete(net.slot);
  }

  reapOrphans(): Promise<number> {
    return Promise.resolve(0); // nothing outlives QEMU (killOrphanQemus kills those)
  }

  drain(): Promise<void> {
    return Promise.resolve();
  }

  get activeCount(): number {
    return this.inUse.size;
  }
}
