import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { createLogger } from '../util/log.js';
import { DnsForwarder, type DnsClient } from './dns-forwarder.js';
import { defaultUpstreams, type DnsUpstream } from './dns-upstream.js';
import {
  dnsRedirectRuleset,
  EGRESS_MARK,
  EGRESS_RESET_RULESET,
  egressRuleset,
  isDenyAll,
  isLearnable,
  learnRuleset,
  setsForName,
  validateEgressPolicy,
  type LearntAddress,
} from './egress-rules.js';
import { NetworkExhaustedError, NetworkSetupError } from './errors.js';
import { cidr, type Cidr } from './ipv4.js';
import { DENY_ALL_EGRESS, needsDns, type EgressPolicy } from './policy.js';
import { RootFirewall } from './root-firewall.js';
import type { NetworkMode, VmNetwork, VmNetworks } from './vm-networks.js';

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
/**
 * The namespace end of the guest link (tap0) has the same MAC address in every namespace: a clone
 * keeps its template's neighbour cache, so a per-namespace random address would leave the guest
 * sending its first packets to a stale address until ARP re-resolves it (seconds).
 */
export const GUEST_GATEWAY_MAC = '02:48:54:00:00:01';
/** The resolver address guests are given (the namespace end of their link). */
export const GUEST_DNS = GUEST_GATEWAY;
export const TAP_NAME = 'tap0';

/** A VM's network namespace with its tap (absent `kind`: recorded before user-mode networks existed). */
export interface TapNetwork {
  kind?: 'tap';
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
   * commands): once fewer than half this many deny-all networks are left, the pool is refilled to
   * this many; networks VMs give back are kept up to twice as many, and as many again keep the
   * egress policy they had (see release).
   * Default 2; 0 disables the pool.
   */
  spares?: number;
  /** IPv4 /16 for host<->VM links, one /30 per VM. Default 10.201.0.0/16 (env HEARTH_VM_SUBNET). */
  subnet?: string;
  /** Directory recording which slots this data directory owns (for cleanup after a crash). */
  stateDir: string;
  /** The uid (and gid) owning slot's tap device, so an unprivileged QEMU can open it; default root's. */
  tapOwnerUid?: (slot: number) => number;
  /**
   * Resolvers Hearth's guest DNS forwarder asks. Default: HEARTH_DNS_UPSTREAM ('ip[:port],...'),
   * else the host's /etc/resolv.conf.
   */
  dnsUpstream?: DnsUpstream[];
  /** How long acquire waits for the host to resolve a policy's host names. Default 1000. */
  hostnameResolveTimeoutMs?: number;
}

/** A namespace network handed back to the manager (a user-mode one here is a bug of the caller). */
function tapOnly(net: VmNetwork): TapNetwork {
  if (net.kind === 'user')
    throw new TypeError(`network slot ${net.slot} is a user-mode network, not a tap network`);
  return net;
}

function tapOwner(uid: number | undefined): string {
  return uid === undefined ? '' : ` user ${uid} group ${uid}`;
}

/** A VM network with a policy other than deny-all, while a VM holds it. */
interface ActiveEgress {
  net: TapNetwork;
  policy: EgressPolicy;
  dns: DnsClient;
  /** 'set address' -> when its set element expires (ms since epoch), to skip redundant updates. */
  learnt: Map<string, number>;
  /** Set updates running now (release waits for them before resetting the namespace). */
  pending: Set<Promise<unknown>>;
  /** This manager applied the rules (not adopted from an earlier server): release may keep them. */
  ownRules: boolean;
}

/** A released network whose policy table stayed in place, ready for the next VM with that policy. */
interface WarmNetwork {
  net: TapNetwork;
  /** policyKey() of its policy. */
  key: string;
  /** The forwarder port its guest DNS is redirected to (if its policy needs DNS). */
  dnsPort?: number;
}

/** Equal for two validated policies exactly when they produce the same rules. */
function policyKey(p: Readonly<EgressPolicy>): string {
  return JSON.stringify(p);
}

/**
 * Whether a network may keep `p`'s rules for the next VM with the same policy: only if the rules
 * hold nothing learnt from the guest (host-name rules fill sets from its DNS answers).
 */
function reusable(p: Readonly<EgressPolicy>): boolean {
  return !p.allow.some((r) => r.hostname !== undefined);
}

/** Names the host or a guest resolved: addresses and until when they hold (ms since epoch). */
interface CachedName {
  addresses: string[];
  expiresAtMs: number;
}

const NAME_CACHE_MAX = 4096;
const NEGATIVE_CACHE_MS = 30_000;
/** Allow-set entries live at least this long, whatever the TTL (guests cache answers too). */
const MIN_LEARNT_SECONDS = 60;
const NFT_TIMEOUT_MS = 10_000;

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
 *
 * An egress policy opens what it allows, in the namespace (egress-rules.ts: one `nft -f` batch at
 * acquire); the host side (root-firewall.ts: masquerade, the host itself unreachable, nothing routed
 * into VM links) is shared by all VMs of the manager, and guests that need DNS are redirected to one
 * forwarder (dns-forwarder.ts). Releasing a network takes its policy away before it is recycled.
 */
export class NetworkManager implements VmNetworks {
  readonly mode: NetworkMode = 'namespaces';
  private readonly base: number[];
  private readonly subnet: Cidr;
  private readonly root: RootFirewall;
  private rootReady: Promise<void> | undefined;
  private dns: Promise<DnsForwarder> | undefined;
  private readonly egress = new Map<number, ActiveEgress>();
  /** Policies being applied by take(), by slot (release waits for them). */
  private readonly applying = new Map<number, Promise<void>>();
  private readonly slotByEndpoint = new Map<string, number>();
  private readonly names = new Map<string, CachedName>();
  private readonly slots: number;
  private nextHint = 0;
  private readonly spares: TapNetwork[] = [];
  /** Released networks that kept their policy, oldest first (see release). */
  private readonly warm: WarmNetwork[] = [];
  private readonly inUse = new Set<number>();
  private readonly background = new Set<Promise<unknown>>();
  private refillTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: NetworkManagerOptions) {
    const subnet = opts.subnet ?? process.env.HEARTH_VM_SUBNET ?? '10.201.0.0/16';
    const m = /^(\d+)\.(\d+)\.0\.0\/16$/.exec(subnet);
    if (!m) throw new RangeError(`vm subnet '${subnet}' must be an IPv4 /16 like 10.201.0.0/16`);
    this.base = [Number(m[1]), Number(m[2])];
    this.subnet = cidr(subnet);
    this.slots = 65536 / 4 - 1;
    this.root = new RootFirewall(opts.stateDir, log);
  }

  /** NetworkManagerOptions.spares. */
  private get poolSize(): number {
    return this.opts.spares ?? 2;
  }

  /** The host table of this manager (named after its state directory): `inet <name>`. */
  get rootTable(): string {
    return this.root.table;
  }

  static netnsName(slot: number): string {
    return `hearth-${slot}`;
  }

  /**
   * Marks the network of a VM adopted from an earlier server as in use. Its egress policy (kept in
   * the slot's state file) is taken back: the DNS forwarder answers it again, its guest DNS is
   * pointed at this process's forwarder and its link is put back in the host table, in the
   * background.
   */
  adopt(vmNet: VmNetwork): void {
    const net = tapOnly(vmNet);
    this.inUse.add(net.slot);
    const policy = this.readSlotPolicy(net.slot);
    if (!isDenyAll(policy)) this.activate(net, policy, false);
    this.track(
      (async () => {
        await this.ensureRoot();
        await run('nft', [this.root.addIfaceCommand(net.hostVeth)], { timeoutMs: NFT_TIMEOUT_MS });
        if (!needsDns(policy)) return;
        const f = await this.dnsForwarder();
        await this.nsNft(
          net,
          dnsRedirectRuleset({
            hostIp: net.hostIp,
            guestGateway: GUEST_GATEWAY,
            tapName: net.tapName,
            dnsPort: f.port,
          }),
          'guest DNS redirect',
        );
      })().catch((e: Error) =>
        log.error('could not restore the egress of an adopted VM', { slot: net.slot, error: e.message }),
      ),
    );
  }

  /** How many networks VMs hold right now (spares not counted). */
  get activeCount(): number {
    return this.inUse.size;
  }

  /** Throws NET_POLICY_INVALID for a malformed policy or one opening what no VM may reach. */
  checkEgress(policy: Readonly<EgressPolicy>): void {
    validateEgressPolicy(policy, this.subnet);
  }

  /**
   * A ready network for a VM whose guest may reach what `egress` allows: a spare if one is ready
   * (the pool is then refilled in the background, a little later, so the refill does not compete
   * with the launch), else a new one.
   */
  async acquire(egress: Readonly<EgressPolicy> = DENY_ALL_EGRESS): Promise<TapNetwork> {
    const { net, policyApplied } = await this.take(egress);
    try {
      await policyApplied;
    } catch (e) {
      this.release(net);
      throw e;
    }
    return net;
  }

  /**
   * Like acquire, but resolves as soon as a network is taken (a spare: no command at all); its
   * egress policy is applied meanwhile, and `policyApplied` settles once the rules are in place.
   * A VM may start on the network at once, but its guest must not run before `policyApplied`
   * resolves; if it rejects, release the network. Throws NET_POLICY_INVALID for a bad policy
   * before any network is taken.
   */
  async take(
    egress: Readonly<EgressPolicy> = DENY_ALL_EGRESS,
  ): Promise<{ net: TapNetwork; policyApplied: Promise<void> }> {
    const policy = validateEgressPolicy(egress, this.subnet);
    const warm = isDenyAll(policy) ? undefined : await this.takeWarm(policy);
    if (warm) {
      this.inUse.add(warm.slot);
      this.activate(warm, policy, true);
      return { net: warm, policyApplied: Promise.resolve() };
    }
    const net = this.spares.shift() ?? (await this.create());
    this.inUse.add(net.slot);
    this.scheduleRefill();
    if (isDenyAll(policy)) return { net, policyApplied: Promise.resolve() };
    const policyApplied = this.applyEgress(net, policy);
    // release() waits for it, so a policy never lands on a network that went back to the pool.
    this.applying.set(net.slot, policyApplied);
    void policyApplied
      .catch(() => undefined)
      .finally(() => {
        if (this.applying.get(net.slot) === policyApplied) this.applying.delete(net.slot);
      });
    return { net, policyApplied };
  }

  /**
   * A released network that kept exactly `policy`'s rules (and, if it needs DNS, is redirected to
   * the forwarder running now), taken out of the pool; undefined if there is none.
   */
  private async takeWarm(policy: EgressPolicy): Promise<TapNetwork | undefined> {
    const key = policyKey(policy);
    if (!this.warm.some((w) => w.key === key)) return undefined;
    const dnsPort = needsDns(policy) ? (await this.dnsForwarder()).port : undefined;
    const i = this.warm.findIndex((w) => w.key === key && w.dnsPort === dnsPort);
    return i < 0 ? undefined : this.warm.splice(i, 1)[0]!.net;
  }

  /**
   * Opens a network to `policy` (validated, not deny-all): host forwarding on, the DNS forwarder
   * started if the policy needs it, the policy's host names resolved (bounded), then one
   * `nft -f` batch in the namespace.
   */
  private async applyEgress(net: TapNetwork, policy: EgressPolicy): Promise<void> {
    const t0 = performance.now();
    await this.root.enableForwarding();
    const dns = needsDns(policy) ? await this.dnsForwarder() : undefined;
    const learnt = dns ? await this.knownAddresses(dns, policy) : [];
    const e = this.activate(net, policy, true);
    for (const l of learnt) e.learnt.set(`${l.set} ${l.address}`, Date.now() + l.timeoutSeconds * 1000);
    await this.nsNft(
      net,
      egressRuleset({
        policy,
        vmSubnet: this.subnet,
        hostIp: net.hostIp,
        guestGateway: GUEST_GATEWAY,
        tapName: net.tapName,
        ...(dns ? { dnsPort: dns.port } : {}),
        learnt,
      }),
      'egress policy rules',
    );
    // Kept with the slot so that a server adopting the VM after a crash knows its policy.
    await writeFile(
      this.slotFile(net.slot),
      JSON.stringify({ pid: process.pid, egress: policy }) + '\n',
    ).catch((e: unknown) => {
      throw new NetworkSetupError('slot state file', { cause: e });
    });
    log.debug('egress policy applied', {
      slot: net.slot,
      internet: policy.internet,
      rules: policy.allow.length,
      ms: Math.round(performance.now() - t0),
    });
  }

  /** Records a network's policy so the DNS forwarder serves it. */
  private activate(net: TapNetwork, policy: EgressPolicy, ownRules: boolean): ActiveEgress {
    const e: ActiveEgress = {
      net,
      policy,
      ownRules,
      learnt: new Map(),
      pending: new Set(),
      dns: {
        policy,
        learn: (name, addresses, ttlSeconds) => {
          const p = this.learn(e, name, addresses, ttlSeconds);
          e.pending.add(p);
          return p.finally(() => e.pending.delete(p));
        },
      },
    };
    this.egress.set(net.slot, e);
    this.slotByEndpoint.set(net.endpointIp, net.slot);
    return e;
  }

  /** The DNS client for a query's source address: only endpoint addresses of networks in use. */
  private dnsClientFor(address: string): DnsClient | undefined {
    const slot = this.slotByEndpoint.get(address);
    return slot === undefined ? undefined : this.egress.get(slot)?.dns;
  }

  /**
   * Adds addresses a guest's resolver answer gave for `name` to the VM's sets of the hostname rules
   * covering it, with a timeout of max(TTL, 60 s). Skips entries already there for long enough.
   */
  private async learn(e: ActiveEgress, name: string, addresses: string[], ttlSeconds: number): Promise<void> {
    const timeoutSeconds = Math.max(ttlSeconds, MIN_LEARNT_SECONDS);
    const now = Date.now();
    this.remember(name, { addresses, expiresAtMs: now + timeoutSeconds * 1000 });
    const items: LearntAddress[] = [];
    for (const set of setsForName(e.policy, name)) {
      for (const address of addresses) {
        if (!isLearnable(address, this.subnet)) continue;
        const key = `${set} ${address}`;
        if ((e.learnt.get(key) ?? 0) - now > (timeoutSeconds * 1000) / 2) continue;
        e.learnt.set(key, now + timeoutSeconds * 1000);
        items.push({ set, address, timeoutSeconds });
      }
    }
    if (items.length === 0 || this.egress.get(e.net.slot) !== e) return;
    try {
      await this.nsNft(e.net, learnRuleset(items), 'allow set update', 2_000);
    } catch (err) {
      for (const i of items) e.learnt.delete(`${i.set} ${i.address}`);
      throw err;
    }
  }

  private remember(name: string, c: CachedName): void {
    this.names.delete(name);
    this.names.set(name, c);
    if (this.names.size > NAME_CACHE_MAX) this.names.delete(this.names.keys().next().value!);
  }

  /**
   * Addresses to start the policy's hostname sets with: its exact names resolved on the host (in
   * parallel, within hostnameResolveTimeoutMs; best effort), plus every fresh name in the cache a
   * rule covers (wildcards too).
   */
  private async knownAddresses(dns: DnsForwarder, policy: EgressPolicy): Promise<LearntAddress[]> {
    const timeoutMs = this.opts.hostnameResolveTimeoutMs ?? 1_000;
    const exact = [
      ...new Set(
        policy.allow.flatMap((r) => (r.hostname && !r.hostname.startsWith('*.') ? [r.hostname] : [])),
      ),
    ];
    await Promise.all(
      exact.map(async (name) => {
        const c = this.names.get(name);
        if (c && c.expiresAtMs > Date.now()) return;
        const r = await dns.resolveIpv4(name, timeoutMs);
        const ttlMs = r.addresses.length
          ? Math.max(r.ttlSeconds, MIN_LEARNT_SECONDS) * 1000
          : NEGATIVE_CACHE_MS;
        this.remember(name, { addresses: r.addresses, expiresAtMs: Date.now() + ttlMs });
      }),
    );
    const now = Date.now();
    const out: LearntAddress[] = [];
    for (const [name, c] of this.names) {
      if (c.expiresAtMs <= now || c.addresses.length === 0) continue;
      for (const set of setsForName(policy, name))
        for (const address of c.addresses)
          out.push({ set, address, timeoutSeconds: (c.expiresAtMs - now) / 1000 });
    }
    return out;
  }

  /** The forwarder, started on first use (and the host table opened to its port). */
  private dnsForwarder(): Promise<DnsForwarder> {
    if (!this.dns) {
      const p = (async () => {
        await this.ensureRoot();
        const f = await DnsForwarder.start({
          upstreams: this.opts.dnsUpstream ?? defaultUpstreams(),
          clientFor: (a) => this.dnsClientFor(a),
          log: log.child('dns'),
        });
        try {
          await this.root.ensure(f.port);
        } catch (e) {
          await f.close();
          throw e;
        }
        return f;
      })();
      this.dns = p;
      p.catch(() => {
        if (this.dns === p) this.dns = undefined;
      });
    }
    return this.dns;
  }

  /** Creates (or rewrites) the host table once per manager. */
  private ensureRoot(): Promise<void> {
    if (!this.rootReady) {
      const p = this.root.ensure();
      this.rootReady = p;
      p.catch(() => {
        if (this.rootReady === p) this.rootReady = undefined;
      });
    }
    return this.rootReady;
  }

  /** Runs an nft script inside a VM's namespace. NetworkSetupError(step) on failure. */
  private async nsNft(
    net: Pick<TapNetwork, 'netnsPath'>,
    script: string,
    step: string,
    timeoutMs = NFT_TIMEOUT_MS,
  ): Promise<void> {
    try {
      await run('nsenter', [`--net=${net.netnsPath}`, '--', 'nft', '-f', '-'], { input: script, timeoutMs });
    } catch (e) {
      throw new NetworkSetupError(step, { cause: e });
    }
  }

  private slotFile(slot: number): string {
    return join(this.opts.stateDir, String(slot));
  }

  /** The policy recorded for a slot (deny-all if none or unreadable). */
  private readSlotPolicy(slot: number): EgressPolicy {
    try {
      const rec = JSON.parse(readFileSync(this.slotFile(slot), 'utf8')) as { egress?: EgressPolicy } | number;
      if (typeof rec === 'object' && rec.egress) return validateEgressPolicy(rec.egress, this.subnet);
    } catch (e) {
      log.warn('no usable egress policy recorded for an adopted network: deny-all', {
        slot,
        error: (e as Error).message,
      });
    }
    return { ...DENY_ALL_EGRESS, allow: [] };
  }

  /**
   * Gives a VM's network back, in the background (see `drain`); never throws. Its connection
   * tracking table is flushed first, so no flow of the previous VM is known to the next. A network
   * whose policy holds nothing learnt from its guest keeps its policy table while the pool has room
   * for it: the next VM with the same policy takes it without a command. Otherwise its policy table
   * goes and it is recycled as a deny-all spare when the pool has room, or destroyed.
   */
  release(vmNet: VmNetwork): void {
    const net = tapOnly(vmNet);
    this.inUse.delete(net.slot);
    const applying = this.applying.get(net.slot);
    const work = (async () => {
      const applied = await applying?.then(
        () => true,
        () => false,
      );
      const e = this.egress.get(net.slot);
      if (e) {
        this.egress.delete(net.slot);
        this.slotByEndpoint.delete(net.endpointIp);
      }
      const keepPolicy =
        !this.closed &&
        e !== undefined &&
        e.ownRules &&
        applied !== false &&
        reusable(e.policy) &&
        this.poolSize > 0;
      if (e) await this.forgetEgress(e);
      if (!keepPolicy) return this.recycle(net, e !== undefined);
      // Kept with its policy: only its tracked flows go.
      const r = await run('nsenter', [`--net=${net.netnsPath}`, '--', 'conntrack', '-F'], {
        allowFailure: true,
        timeoutMs: NFT_TIMEOUT_MS,
      });
      if (r.exitCode !== 0 || this.closed) return this.destroy(net);
      const dnsPort = needsDns(e.policy)
        ? await this.dns?.then((f) => f.port).catch(() => undefined)
        : undefined;
      this.warm.push({ net, key: policyKey(e.policy), ...(dnsPort !== undefined ? { dnsPort } : {}) });
      // The pool keeps the policies used last; older ones go back to deny-all.
      while (this.warm.length > this.poolSize) await this.recycle(this.warm.shift()!.net, true);
    })();
    this.track(
      work.catch((e: Error) => log.error('network cleanup failed', { slot: net.slot, error: e.message })),
    );
  }

  /**
   * Host-side leftovers of a policy: pending set updates finish, and the host's tracked flows of
   * the VM's address go.
   */
  private async forgetEgress(e: ActiveEgress): Promise<void> {
    await Promise.allSettled([...e.pending]);
    await run('conntrack', ['-D', '-s', e.net.endpointIp], { allowFailure: true, timeoutMs: NFT_TIMEOUT_MS });
  }

  /**
   * Puts a network no VM holds back in the pool as a deny-all spare if the pool has room (twice
   * its size), else destroys it. Back to deny-all: its policy table, if it had a policy, goes (and
   * the slot's state file says so), then every tracked flow.
   */
  private async recycle(net: TapNetwork, hadPolicy: boolean): Promise<void> {
    if (this.closed || this.spares.length >= 2 * this.poolSize) return this.destroy(net);
    const r = await run(
      'nsenter',
      [
        `--net=${net.netnsPath}`,
        '--',
        ...(hadPolicy ? ['sh', '-c', 'nft -f - && conntrack -F'] : ['conntrack', '-F']),
      ],
      {
        ...(hadPolicy ? { input: EGRESS_RESET_RULESET } : {}),
        allowFailure: true,
        timeoutMs: NFT_TIMEOUT_MS,
      },
    );
    if (r.exitCode !== 0 || this.closed) return this.destroy(net);
    if (hadPolicy && existsSync(this.slotFile(net.slot)))
      await writeFile(this.slotFile(net.slot), `${process.pid}\n`);
    this.spares.push(net);
  }

  private track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  /**
   * Refills the pool to its size, a little later, once it is down to less than half of it (so a
   * launch whose network comes back at once, when its VM goes, does not cause one to be built).
   */
  private scheduleRefill(): void {
    const want = this.poolSize;
    if (this.closed || this.refillTimer || this.spares.length >= Math.ceil(want / 2)) return;
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

  /**
   * Stops refilling, removes the spares, waits for background work and closes the DNS forwarder.
   * If no VM holds a network any more, the host table goes too (and IPv4 forwarding is turned back
   * off if Hearth turned it on and no VM link of any Hearth is left). Call before exiting.
   */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
    for (const n of [...this.spares.splice(0), ...this.warm.splice(0).map((w) => w.net)])
      await this.destroy(n).catch(() => undefined);
    const dns = this.dns;
    this.dns = undefined;
    await dns?.then((f) => f.close()).catch(() => undefined);
    if (this.inUse.size === 0) {
      await this.root
        .remove()
        .catch((e: Error) => log.warn('could not remove the host table', { error: e.message }));
      this.rootReady = undefined;
    }
  }

  /** Claims a slot and builds its namespace, veth pair, tap and rules. */
  async create(): Promise<TapNetwork> {
    await mkdir(this.opts.stateDir, { recursive: true });
    await this.ensureRoot();
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

  describe(slot: number): TapNetwork {
    const name = NetworkManager.netnsName(slot);
    return {
      kind: 'tap',
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

  private async configure(n: TapNetwork): Promise<void> {
    const rootBatch = [
      `link add ${n.hostVeth} type veth peer name eth0 netns ${n.netnsName}`,
      `addr add ${n.hostIp}/30 dev ${n.hostVeth}`,
      `link set ${n.hostVeth} up`,
    ].join('\n');
    try {
      await run('sh', [
        '-c',
        'printf "%s\\n" "$1" | ip -b - && nft "$2"',
        'sh',
        rootBatch,
        this.root.addIfaceCommand(n.hostVeth),
      ]);
    } catch (e) {
      throw new NetworkSetupError('host veth', { cause: e });
    }
    const nsBatch = [
      'link set lo up',
      `addr add ${n.endpointIp}/30 dev eth0`,
      'link set eth0 up',
      `tuntap add ${n.tapName} mode tap${tapOwner(this.opts.tapOwnerUid?.(n.slot))}`,
      `link set ${n.tapName} address ${GUEST_GATEWAY_MAC}`,
      `addr add ${GUEST_GATEWAY}/${GUEST_PREFIX} dev ${n.tapName}`,
      `link set ${n.tapName} up`,
      // Used only by what an egress policy lets through (see egress-rules.ts); nothing otherwise.
      `route add default via ${n.hostIp}`,
    ].join('\n');
    const rules = `
table inet hearth {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip daddr ${n.endpointIp} meta l4proto tcp dnat ip to ${GUEST_IP}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" ip saddr ${GUEST_IP} snat ip to ${n.endpointIp}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth0" oifname "${n.tapName}" ip daddr ${GUEST_IP} meta l4proto tcp ct state new accept
    # Marked by the egress policy table (hearth_egress), present only when the VM has a policy.
    iifname "${n.tapName}" oifname "eth0" meta mark ${EGRESS_MARK} accept
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
  async destroy(n: Pick<TapNetwork, 'slot' | 'netnsName' | 'hostVeth'>): Promise<void> {
    await run(
      'sh',
      [
        '-c',
        'ip link del "$1"; nft "$2"',
        'sh',
        n.hostVeth,
        `delete element inet ${this.root.table} vm_ifaces { "${n.hostVeth}" }`,
      ],
      {
        allowFailure: true,
      },
    );
    const r = await run('ip', ['netns', 'del', n.netnsName], { allowFailure: true });
    if (r.exitCode !== 0 && existsSync(`/run/netns/${n.netnsName}`)) {
      throw new NetworkSetupError('ip netns del', { cause: new Error(r.stderr.trim()) });
    }
    await rm(join(this.opts.stateDir, String(n.slot)), { force: true });
  }

  /** Removes every network this data directory recorded but `inUse` does not contain (after a crash). */
  async reapOrphans(inUse: ReadonlySet<number> = new Set()): Promise<number> {
    await this.ensureRoot();
    const keep = new Set([
      ...inUse,
      ...this.inUse,
      ...this.spares.map((s) => s.slot),
      ...this.warm.map((w) => w.net.slot),
    ]);
    let reaped = 0;
    for (const f of await readdir(this.opts.stateDir).catch(() => [] as string[])) {
      const slot = Number(f);
      if (!Number.isInteger(slot) || keep.has(slot)) continue;
      await this.destroy(this.describe(slot));
      reaped++;
    }
    // Links the host table still lists for slots nobody holds (a crash between steps).
    const stale = (await this.root.listIfaces()).filter((i) => !keep.has(Number(i.slice(3))));
    await this.root.removeIfaces(stale);
    if (reaped || stale.length)
      log.info('removed orphaned VM networks', { count: reaped, hostEntries: stale.length });
    return reaped;
  }
}
