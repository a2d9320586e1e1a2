/**
 * What VM egress needs in the host's (root) network namespace, in one nftables table per state
 * directory (`inet hearth_<hash>`), so two Hearths on one host never touch each other's rules:
 *
 *   set vm_ifaces   host ends (`hv-<slot>`) of this Hearth's VM links
 *   input           from vm_ifaces: replies and the DNS forwarder's port pass, everything else new
 *                   is refused (the guest never reaches the host, on any of its addresses); the
 *                   forwarder's port is closed to every other interface
 *   forward         nothing forwards new connections into a VM link (VM to VM, or from outside);
 *                   VM traffic leaving by another interface is accepted
 *   postrouting     VM traffic leaving by another interface is masqueraded
 *
 * Destinations are filtered inside each VM's namespace (egress-rules.ts), not here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { sha256 } from '../util/hash.js';
import { run } from '../util/exec.js';
import type { Logger } from '../util/log.js';
import { NetworkSetupError } from './errors.js';

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
/** Host-wide (tmpfs) marker: Hearth turned IPv4 forwarding on, and it was off before. */
const FORWARD_MARKER_DIR = '/run/hearth';
const FORWARD_MARKER = `${FORWARD_MARKER_DIR}/ip_forward-was-0`;
/** Host-wide table that keeps forwarding to VM traffic while Hearth holds ip_forward on. */
export const FORWARD_GUARD_TABLE = 'hearth_forward_guard';
const VM_IFACE_GLOB = 'hv-*';

const FORWARD_GUARD_RULESET = `table inet ${FORWARD_GUARD_TABLE}
delete table inet ${FORWARD_GUARD_TABLE}
table inet ${FORWARD_GUARD_TABLE} {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${VM_IFACE_GLOB}" return
    oifname "${VM_IFACE_GLOB}" ct state established,related return
    drop
  }
}
`;

export function rootTableName(stateDir: string): string {
  return `hearth_${sha256(stateDir).slice(0, 10)}`;
}

async function nft(script: string, step: string): Promise<void> {
  try {
    await run('nft', ['-f', '-'], { input: script, timeoutMs: 10_000 });
  } catch (e) {
    throw new NetworkSetupError(step, { cause: e });
  }
}

export class RootFirewall {
  readonly table: string;
  private enabling: Promise<void> | undefined;

  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.table = rootTableName(stateDir);
  }

  /** The rules text for `ensure` (exposed for tests). */
  ruleset(dnsPort: number | undefined): string {
    const t = `inet ${this.table}`;
    const dns = dnsPort === undefined ? [] : [`meta l4proto { tcp, udp } th dport ${dnsPort}`];
    return [
      `table ${t} {`,
      '  set vm_ifaces {\n    type ifname\n  }',
      '  chain input {\n    type filter hook input priority filter; policy accept;\n  }',
      '  chain forward {\n    type filter hook forward priority filter; policy accept;\n  }',
      '  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n  }',
      '}',
      `flush chain ${t} input`,
      `flush chain ${t} forward`,
      `flush chain ${t} postrouting`,
      ...dns.map((d) => `add rule ${t} input iifname != @vm_ifaces ${d} drop`),
      `add rule ${t} input iifname != @vm_ifaces return`,
      `add rule ${t} input ct state established,related return`,
      ...dns.map((d) => `add rule ${t} input ${d} return`),
      `add rule ${t} input meta l4proto tcp reject with tcp reset`,
      `add rule ${t} input reject with icmpx type admin-prohibited`,
      `add rule ${t} forward oifname "${VM_IFACE_GLOB}" ct state new drop`,
      `add rule ${t} forward iifname @vm_ifaces oifname != "${VM_IFACE_GLOB}" accept`,
      `add rule ${t} postrouting iifname @vm_ifaces oifname != "${VM_IFACE_GLOB}" masquerade`,
      '',
    ].join('\n');
  }

  /**
   * Creates the table or rewrites its chains (idempotent; the set's elements are kept, so VMs
   * adopted from an earlier server stay covered). `dnsPort`: the guest DNS forwarder's port, if one
   * runs.
   */
  async ensure(dnsPort?: number): Promise<void> {
    await nft(this.ruleset(dnsPort), 'host nftables table');
  }

  /** The nft command (as one argument for `nft`) that adds a link to vm_ifaces. */
  addIfaceCommand(iface: string): string {
    return `add element inet ${this.table} vm_ifaces { "${iface}" }`;
  }

  /** Removes links from vm_ifaces; names not in the set are ignored. */
  async removeIfaces(ifaces: string[]): Promise<void> {
    const present = new Set(await this.listIfaces());
    const gone = ifaces.filter((i) => present.has(i));
    if (gone.length === 0) return;
    await nft(
      `delete element inet ${this.table} vm_ifaces { ${gone.map((i) => `"${i}"`).join(', ')} }\n`,
      'host nftables element',
    );
  }

  /** The links in vm_ifaces ([] if the table does not exist). */
  async listIfaces(): Promise<string[]> {
    const r = await run('nft', ['-j', 'list', 'set', 'inet', this.table, 'vm_ifaces'], {
      allowFailure: true,
      timeoutMs: 10_000,
    });
    if (r.exitCode !== 0) return [];
    try {
      const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
      const elems = doc.nftables.find((o) => o.set)?.set?.elem ?? [];
      return elems.filter((e): e is string => typeof e === 'string');
    } catch (e) {
      throw new NetworkSetupError('reading the host table', { cause: e });
    }
  }

  /**
   * Makes sure the host forwards IPv4 (VM egress needs it). If it was off, Hearth turns it on, says
   * so in the log, and installs a guard table (`inet hearth_forward_guard`) that drops every
   * forwarded packet that is not VM traffic, so the host does not become a router for anything else.
   * Cheap when forwarding is already on.
   */
  enableForwarding(): Promise<void> {
    if (readFileSync(IP_FORWARD, 'utf8').trim() === '1') return Promise.resolve();
    // Concurrent launches share one change.
    this.enabling ??= this.turnForwardingOn().finally(() => (this.enabling = undefined));
    return this.enabling;
  }

  private async turnForwardingOn(): Promise<void> {
    if (readFileSync(IP_FORWARD, 'utf8').trim() === '1') return;
    await nft(FORWARD_GUARD_RULESET, 'forwarding guard table');
    await mkdir(FORWARD_MARKER_DIR, { recursive: true });
    await writeFile(FORWARD_MARKER, `${process.pid}\n`);
    try {
      await writeFile(IP_FORWARD, '1\n');
    } catch (e) {
      throw new NetworkSetupError('net.ipv4.ip_forward=1', { cause: e });
    }
    this.log.warn('turned IPv4 forwarding on for VM egress (net.ipv4.ip_forward was 0)', {
      guardTable: `inet ${FORWARD_GUARD_TABLE}`,
      note: 'only traffic from and back to VM links (hv-*) is forwarded',
    });
  }

  /**
   * Deletes this Hearth's table. If Hearth turned forwarding on and no VM link of any Hearth is
   * left on the host, turns it back off and removes the guard table.
   */
  async remove(): Promise<void> {
    await run('nft', ['delete', 'table', 'inet', this.table], { allowFailure: true, timeoutMs: 10_000 });
    if (!existsSync(FORWARD_MARKER)) return;
    const links = await readdir('/sys/class/net').catch(() => [] as string[]);
    if (links.some((l) => l.startsWith('hv-'))) return;
    await writeFile(IP_FORWARD, '0\n').catch(() => undefined);
    await run('nft', ['delete', 'table', 'inet', FORWARD_GUARD_TABLE], {
      allowFailure: true,
      timeoutMs: 10_000,
    });
    await rm(FORWARD_MARKER, { force: true });
    this.log.info('turned IPv4 forwarding back off (no VM links left)');
  }
}
