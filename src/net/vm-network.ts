import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { createLogger } from '../util/log.js';
import { NetworkExhaustedError, NetworkSetupError } from './errors.js';
import { DENY_ALL_EGRESS, type EgressPolicy } from './policy.js';

const log = createLogger('net');

/**
 * The guest side is identical in every VM (clones of one snapshot share their memory, so they share
 * their IP configuration too); each VM lives in its own network namespace, so identical addresses
 * never meet. The host reaches a VM at its slot's address, which the namespace forwards (DNAT) to
 * the guest.
 */
export const GUEST_IP = '172.16.0.2';
export const GUEST_GATEWAY = '172.16.0.1';
export const GUEST_PREFIX = 30;
export const GUEST_MAC = '02:48:54:00:00:02';
/** The resolver address guests are given (the namespace end of their link). */
export const GUEST_DNS = GUEST_GATEWAY;
export const TAP_NAME = 'tap0';

export interface VmNetwork {
  slot: number;
  netnsName: string;
  /** For `nsenter --net=`: QEMU runs here to open the tap. */
  netnsPath: string;
  hostVeth: string;
  /** Host end of the link. */
  hostIp: string;
  /** Address the host connects to for the VM's ports (forwarded to the guest). */
  endpointIp: string;
  tapName: string;
  macAddress: string;
  guest: { ipCidr: string; gateway: string };
}

export interface NetworkManagerOptions {
  /**
   * Networks kept ready so a launch or resume does not wait for one to be built (~25 ms of ip/nft
   * commands). Default 2; 0 disables the pool.
   */
  spares?: number;
  /** IPv4 /16 for host<->VM links, one /30 per VM. Default 10.201.0.0/16 (env HEARTH_VM_SUBNET). */
  subnet?: string;
  /** Directory recording which slots this data directory owns (for cleanup after a crash). */
  stateDir: string;
  /** The uid (and gid) owning slot's tap device, so an unprivileged QEMU can open it; default root's. */
  tapOwnerUid?: (slot: number) => number;
}

function tapOwner(uid: number | undefined): string {
  return uid === undefined ? '' : ` user ${uid} group ${uid}`;
}

function slotAddresses(base: number[], slot: number): { hostIp: string; endpointIp: string } {
  const offset = slot * 4;
  const ip = (n: number) => `${base[0]}.${base[1]}.${(offset + n) >> 8}.${(offset + n) & 255}`;
  return { hostIp: ip(1), endpointIp: ip(2) };
}

/**
 * Creates and removes per-VM networks. A slot is claimed atomically with `ip netns add` (which fails
 * if the name exists), so several Hearth processes on one host never share a slot. Guest traffic is
 * denied by default: the namespace forwards nothing the guest starts, answers nothing on its own
 * addresses, and has IPv6 disabled; only the host's connections to the guest (and their replies) pass.
 */
export class NetworkManager {
  private readonly base: number[];
  private readonly slots: number;
  private nextHint = 0;
  private readonly spares: VmNetwork[] = [];
  private readonly inUse = new Set<number>();
  private readonly background = new Set<Promise<unknown>>();
  private refillTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: NetworkManagerOptions) {
    const subnet = opts.subnet ?? process.env.HEARTH_VM_SUBNET ?? '10.201.0.0/16';
    const m = /^(\d+)\.(\d+)\.0\.0\/16$/.exec(subnet);
    if (!m) throw new RangeError(`vm subnet '${subnet}' must be an IPv4 /16 like 10.201.0.0/16`);
    this.base = [Number(m[1]), Number(m[2])];
    this.slots = 65536 / 4 - 1;
  }

  static netnsName(slot: number): string {
    return `hearth-${slot}`;
  }

  /** Marks the network of a VM adopted from an earlier server as in use. */
  adopt(net: VmNetwork): void {
    this.inUse.add(net.slot);
  }

  /** How many networks VMs hold right now (spares not counted). */
  get activeCount(): number {
    return this.inUse.size;
  }

  /**
   * A ready network for a VM whose guest may reach what `egress` allows: a spare if one is ready
   * (the pool is then refilled in the background, a little later, so the refill does not compete
   * with the launch), else a new one.
   */
  async acquire(egress: Readonly<EgressPolicy> = DENY_ALL_EGRESS): Promise<VmNetwork> {
    if (egress.internet || egress.allow.length > 0)
      throw new NetworkSetupError('egress policy', {
        cause: new Error('egress connectors are not implemented yet'),
      });
    const net = this.spares.shift() ?? (await this.create());
    this.inUse.add(net.slot);
    this.scheduleRefill();
    return net;
  }

  /**
   * Gives a VM's network back, in the background (see `drain`); never throws. Networks are
   * identical for every VM, so one is recycled as a spare when the pool has room: its connection
   * tracking table is flushed first, so no flow of the previous VM is known to the next. Otherwise
   * it is destroyed.
   */
  release(net: VmNetwork): void {
    this.inUse.delete(net.slot);
    const recycle = !this.closed && this.spares.length < (this.opts.spares ?? 2);
    const work = recycle
      ? run('nsenter', [`--net=${net.netnsPath}`, '--', 'conntrack', '-F'], { allowFailure: true }).then(
          async (r) => {
            if (r.exitCode === 0 && !this.closed) this.spares.push(net);
            else await this.destroy(net);
          },
        )
      : this.destroy(net);
    this.track(
      work.catch((e: Error) => log.error('network cleanup failed', { slot: net.slot, error: e.message })),
    );
  }

  private track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  private scheduleRefill(): void {
    const want = this.opts.spares ?? 2;
    if (this.closed || this.refillTimer || this.spares.length >= want) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.track(
        (async () => {
          while (!this.closed && this.spares.length < want) this.spares.push(await this.create());
        })().catch((e: Error) => log.warn('could not prepare a spare VM network', { error: e.message })),
      );
    }, 300);
    this.refillTimer.unref();
  }

  /** Stops refilling, removes the spares and waits for background work. Call before exiting. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
    for (const n of this.spares.splice(0)) await this.destroy(n).catch(() => undefined);
  }

  /** Claims a slot and builds its namespace, veth pair, tap and rules. */
  async create(): Promise<VmNetwork> {
    await mkdir(this.opts.stateDir, { recursive: true });
    for (let tries = 0; tries < this.slots; tries++) {
      const slot = 1 + ((this.nextHint + tries) % this.slots);
      const name = NetworkManager.netnsName(slot);
      if (existsSync(`/run/netns/${name}`)) continue;
      const claimed = await run('ip', ['netns', 'add', name], { allowFailure: true });
      if (claimed.exitCode !== 0) {
        if (/exists/i.test(claimed.stderr)) continue;
        throw new NetworkSetupError('ip netns add', { cause: new Error(claimed.stderr.trim()) });
      }
      this.nextHint = slot;
      await writeFile(join(this.opts.stateDir, String(slot)), `${process.pid}\n`);
      const net = this.describe(slot);
      try {
        await this.configure(net);
      } catch (e) {
        await this.destroy(net).catch(() => undefined);
        throw e;
      }
      return net;
    }
    throw new NetworkExhaustedError(this.slots);
  }

  describe(slot: number): VmNetwork {
    const name = NetworkManager.netnsName(slot);
    return {
      slot,
      netnsName: name,
      netnsPath: `/run/netns/${name}`,
      hostVeth: `hv-${slot}`,
      ...slotAddresses(this.base, slot),
      tapName: TAP_NAME,
      macAddress: GUEST_MAC,
      guest: { ipCidr: `${GUEST_IP}/${GUEST_PREFIX}`, gateway: GUEST_GATEWAY },
    };
  }

  private async configure(n: VmNetwork): Promise<void> {
    const rootBatch = [
      `link add ${n.hostVeth} type veth peer name eth0 netns ${n.netnsName}`,
      `addr add ${n.hostIp}/30 dev ${n.hostVeth}`,
      `link set ${n.hostVeth} up`,
    ].join('\n');
    try {
      await run('ip', ['-b', '-'], { input: rootBatch + '\n' });
    } catch (e) {
      throw new NetworkSetupError('host veth', { cause: e });
    }
    const nsBatch = [
      'link set lo up',
      `addr add ${n.endpointIp}/30 dev eth0`,
      'link set eth0 up',
      `tuntap add ${n.tapName} mode tap${tapOwner(this.opts.tapOwnerUid?.(n.slot))}`,
      `addr add ${GUEST_GATEWAY}/${GUEST_PREFIX} dev ${n.tapName}`,
      `link set ${n.tapName} up`,
    ].join('\n');
    const rules = `
table inet hearth {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip daddr ${n.endpointIp} meta l4proto tcp dnat ip to ${GUEST_IP}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth0" oifname "${n.tapName}" ip daddr ${GUEST_IP} meta l4proto tcp ct state new accept
    # Refuse (not drop) what the guest starts, so its connections and DNS lookups fail at once
    # instead of hanging until a timeout.
    iifname "${n.tapName}" meta l4proto tcp reject with tcp reset
    iifname "${n.tapName}" reject with icmpx type admin-prohibited
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    ct state established,related accept
    iifname "${n.tapName}" meta l4proto tcp reject with tcp reset
    iifname "${n.tapName}" reject with icmpx type port-unreachable
  }
}
`;
    const script = [
      'set -e',
      'echo 1 > /proc/sys/net/ipv4/ip_forward',
      'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6',
      'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6',
      `printf '%s\\n' "$1" | ip -b -`,
      `printf '%s\\n' "$2" | nft -f -`,
    ].join('\n');
    try {
      await run('nsenter', [`--net=${n.netnsPath}`, '--', 'sh', '-c', script, 'sh', nsBatch, rules]);
    } catch (e) {
      throw new NetworkSetupError('namespace devices and rules', { cause: e });
    }
  }

  /** Removes the namespace (and with it the veth pair, tap and rules). Idempotent. */
  async destroy(n: Pick<VmNetwork, 'slot' | 'netnsName' | 'hostVeth'>): Promise<void> {
    await run('ip', ['link', 'del', n.hostVeth], { allowFailure: true });
    const r = await run('ip', ['netns', 'del', n.netnsName], { allowFailure: true });
    if (r.exitCode !== 0 && existsSync(`/run/netns/${n.netnsName}`)) {
      throw new NetworkSetupError('ip netns del', { cause: new Error(r.stderr.trim()) });
    }
    await rm(join(this.opts.stateDir, String(n.slot)), { force: true });
  }

  /** Removes every network this data directory recorded but `inUse` does not contain (after a crash). */
  async reapOrphans(inUse: ReadonlySet<number> = new Set()): Promise<number> {
    let reaped = 0;
    for (const f of await readdir(this.opts.stateDir).catch(() => [] as string[])) {
      const slot = Number(f);
      if (!Number.isInteger(slot) || inUse.has(slot)) continue;
      await this.destroy(this.describe(slot));
      reaped++;
    }
    if (reaped) log.info('removed orphaned VM networks', { count: reaped });
    return reaped;
  }
}
