/**
 * From an EgressPolicy to nftables text for the VM's own network namespace (pure functions; the
 * NetworkManager runs the text). The guest cannot touch its namespace, so this is where destinations
 * are filtered. Structure, in a table of its own (`inet hearth_egress`) so that a recycled namespace
 * goes back to deny-all by deleting one table:
 *
 *   sets    never (always refused), private (refused with `internet`), host_<i> (addresses learnt
 *           for hostname rule i, with timeouts)
 *   dns     nat prerouting: the guest's udp/tcp 53 to 172.16.0.1 -> Hearth's forwarder on the host
 *   forward filter, before the namespace's own forward chain: marks the new connections the policy
 *           allows; the `inet hearth` forward chain accepts marked packets and refuses the rest
 */
import { cidr, cidrOverlaps, formatCidr, parseCidr, parseIpv4, cidrContains, type Cidr } from './ipv4.js';
import { NetworkPolicyError } from './errors.js';
import type { EgressPolicy, EgressRule, PortRange } from './policy.js';

export const EGRESS_TABLE = 'hearth_egress';
/** Packet mark meaning "the egress policy allows this new connection" (only inside the namespace). */
export const EGRESS_MARK = '0x00000045';

/** Never reachable by any rule (the VM subnet is added per manager). */
const NEVER: readonly (readonly [string, string])[] = [
  ['0.0.0.0/8', "'this network'"],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local (the metadata address)'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved and broadcast'],
];
/** Not public: refused with `internet` unless a rule allows it explicitly. */
const PRIVATE = ['10.0.0.0/8', '100.64.0.0/10', '172.16.0.0/12', '192.168.0.0/16'] as const;

const MAX_RULES = 64;
const MAX_PORT_RANGES = 32;
const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Destinations no rule can open, for a manager whose VMs live in `vmSubnet`. */
export function neverRanges(vmSubnet: Cidr): { range: Cidr; what: string }[] {
  return [
    { range: vmSubnet, what: `the VM subnet ${formatCidr(vmSubnet)}` },
    ...NEVER.map(([r, what]) => ({ range: cidr(r), what })),
  ];
}

/** True if an IPv4 address (text) may ever be added to an allow set. */
export function isLearnable(address: string, vmSubnet: Cidr): boolean {
  const ip = parseIpv4(address);
  return ip !== undefined && !neverRanges(vmSubnet).some((n) => cidrContains(n.range, ip));
}

function normalizeHostname(h: string): string {
  const name = h.trim().toLowerCase().replace(/\.$/, '');
  const body = name.startsWith('*.') ? name.slice(2) : name;
  if (name.length > 253 || body === '' || !body.split('.').every((l) => LABEL.test(l)))
    throw new NetworkPolicyError(`'${h.slice(0, 80)}' is not a host name (or a '*.' wildcard over one)`);
  return name;
}

function checkPorts(ports: unknown): PortRange[] {
  if (!Array.isArray(ports)) throw new NetworkPolicyError('ports must be a list');
  if (ports.length > MAX_PORT_RANGES) throw new NetworkPolicyError(`at most ${MAX_PORT_RANGES} port ranges`);
  return ports.map((p: PortRange) => {
    const ok = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
    if (!p || !ok(p.from) || !ok(p.to) || p.from > p.to)
      throw new NetworkPolicyError(`port range ${JSON.stringify(p)} must be 1 <= from <= to <= 65535`);
    return { from: p.from, to: p.to };
  });
}

/**
 * Checks a policy and returns it normalised (lower-case host names, CIDRs as parsed). Refuses, with
 * NetworkPolicyError: malformed rules, CIDRs with host bits set, and CIDRs overlapping the VM subnet,
 * loopback, link-local, multicast or reserved ranges (no rule may open those).
 */
export function validateEgressPolicy(p: Readonly<EgressPolicy>, vmSubnet: Cidr): EgressPolicy {
  if (typeof p?.internet !== 'boolean' || !Array.isArray(p.allow))
    throw new NetworkPolicyError('expected { internet: boolean, allow: [...] }');
  if (p.allow.length > MAX_RULES) throw new NetworkPolicyError(`at most ${MAX_RULES} allow rules`);
  const allow = p.allow.map((r: EgressRule): EgressRule => {
    if (!['tcp', 'udp', 'all'].includes(r?.protocol))
      throw new NetworkPolicyError(`protocol must be tcp, udp or all, not '${String(r?.protocol)}'`);
    const ports = checkPorts(r.ports);
    if ((r.cidr === undefined) === (r.hostname === undefined))
      throw new NetworkPolicyError('each rule has exactly one of cidr and hostname');
    if (r.hostname !== undefined) {
      if (typeof r.hostname !== 'string') throw new NetworkPolicyError('hostname must be a string');
      return { hostname: normalizeHostname(r.hostname), protocol: r.protocol, ports };
    }
    const c = typeof r.cidr === 'string' ? parseCidr(r.cidr) : undefined;
    if (!c) throw new NetworkPolicyError(`'${String(r.cidr).slice(0, 60)}' is not an IPv4 CIDR`);
    if (c.hostBits)
      throw new NetworkPolicyError(`'${r.cidr}' has host bits set (did you mean ${formatCidr(c)}?)`);
    for (const n of neverRanges(vmSubnet))
      if (cidrOverlaps(c, n.range))
        throw new NetworkPolicyError(`'${r.cidr}' overlaps ${n.what}, which no VM may reach`);
    return { cidr: formatCidr(c), protocol: r.protocol, ports };
  });
  return { internet: p.internet, allow };
}

export function isDenyAll(p: Readonly<EgressPolicy>): boolean {
  return !p.internet && p.allow.length === 0;
}

/** Whether a query name (lower case, no trailing dot) is covered by a hostname rule's pattern. */
export function hostnameMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('*.')) return name.endsWith(pattern.slice(1)) && name.length > pattern.length - 1;
  return name === pattern;
}

/** The set name for hostname rule `index` of a policy. */
export function hostSetName(index: number): string {
  return `host_${index}`;
}

/** The sets (of a validated policy) an address learnt for `name` belongs in. */
export function setsForName(p: Readonly<EgressPolicy>, name: string): string[] {
  const sets: string[] = [];
  p.allow.forEach((r, i) => {
    if (r.hostname !== undefined && hostnameMatches(r.hostname, name)) sets.push(hostSetName(i));
  });
  return sets;
}

/** The nft match for a rule's protocol and ports (empty for 'all' on every port). */
function l4Match(r: Readonly<EgressRule>): string {
  const ports = r.ports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`)).join(', ');
  if (r.protocol === 'all') return ports ? `meta l4proto { tcp, udp } th dport { ${ports} }` : '';
  return ports ? `${r.protocol} dport { ${ports} }` : `meta l4proto ${r.protocol}`;
}

/** An address learnt for a hostname set and how long it stays, seconds. */
export interface LearntAddress {
  set: string;
  address: string;
  timeoutSeconds: number;
}

export interface EgressRulesetInput {
  policy: Readonly<EgressPolicy>;
  vmSubnet: Cidr;
  /** The slot's host end: where the guest's DNS is sent (the forwarder listens on every address). */
  hostIp: string;
  guestGateway: string;
  tapName: string;
  /** The forwarder's port, when the policy needs DNS. */
  dnsPort?: number;
  /** Addresses already known for hostname rules (resolved by the host, or learnt earlier). */
  learnt?: LearntAddress[];
}

function elements(items: string[]): string {
  return items.length ? `\n    elements = { ${items.join(', ')} }` : '';
}

/**
 * The `hearth_egress` table for a validated, non-deny-all policy, as an `nft -f` script that
 * replaces any earlier version of the table atomically.
 */
export function egressRuleset(i: EgressRulesetInput): string {
  const p = i.policy;
  const never = neverRanges(i.vmSubnet).map((n) => formatCidr(n.range));
  const sets = [
    `  set never {\n    type ipv4_addr\n    flags interval${elements(never)}\n  }`,
    ...(p.internet
      ? [`  set private {\n    type ipv4_addr\n    flags interval${elements([...PRIVATE])}\n  }`]
      : []),
  ];
  const rules: string[] = [];
  p.allow.forEach((r, idx) => {
    const l4 = l4Match(r);
    const allow = `${l4 ? l4 + ' ' : ''}meta mark set ${EGRESS_MARK} accept`;
    if (r.cidr !== undefined) {
      rules.push(`ip daddr ${r.cidr} ${allow}`);
      return;
    }
    const name = hostSetName(idx);
    const known = (i.learnt ?? [])
      .filter((l) => l.set === name && isLearnable(l.address, i.vmSubnet))
      .map((l) => `${l.address} timeout ${Math.max(1, Math.round(l.timeoutSeconds))}s`);
    sets.push(`  set ${name} {\n    type ipv4_addr\n    flags timeout${elements([...new Set(known)])}\n  }`);
    rules.push(`ip daddr @${name} ${allow}`);
  });
  const dns =
    i.dnsPort === undefined
      ? []
      : [
          '  chain dns {',
          '    type nat hook prerouting priority dstnat - 10; policy accept;',
          `    iifname "${i.tapName}" ip daddr ${i.guestGateway} meta l4proto { tcp, udp } th dport 53 dnat ip to ${i.hostIp}:${i.dnsPort}`,
          '  }',
        ];
  const forward = [
    '  chain forward {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    iifname != "${i.tapName}" return`,
    '    meta nfproto != ipv4 return',
    '    ct state != new return',
    // Only the dns chain above DNATs guest traffic, and only to the forwarder on the host end.
    ...(i.dnsPort === undefined
      ? []
      : [
          `    ct status dnat ip daddr ${i.hostIp} meta l4proto { tcp, udp } meta mark set ${EGRESS_MARK} accept`,
        ]),
    // Returning unmarked leaves the packet to the namespace's forward chain, which refuses it.
    '    ip daddr @never return',
    ...rules.map((r) => `    ${r}`),
    ...(p.internet ? ['    ip daddr @private return', `    meta mark set ${EGRESS_MARK} accept`] : []),
    '  }',
  ];
  return [
    `table inet ${EGRESS_TABLE}`,
    `delete table inet ${EGRESS_TABLE}`,
    `table inet ${EGRESS_TABLE} {`,
    ...sets,
    ...dns,
    ...forward,
    '}',
    '',
  ].join('\n');
}

/** Points the DNS redirect of an applied policy at a (new) forwarder port, e.g. after a restart. */
export function dnsRedirectRuleset(
  i: Pick<EgressRulesetInput, 'hostIp' | 'guestGateway' | 'tapName'> & { dnsPort: number },
): string {
  return [
    `flush chain inet ${EGRESS_TABLE} dns`,
    `add rule inet ${EGRESS_TABLE} dns iifname "${i.tapName}" ip daddr ${i.guestGateway} meta l4proto { tcp, udp } th dport 53 dnat ip to ${i.hostIp}:${i.dnsPort}`,
    '',
  ].join('\n');
}

/** Adds learnt addresses to their sets (refreshing the timeout of ones already there). */
export function learnRuleset(learnt: LearntAddress[]): string {
  return learnt
    .map(
      (l) =>
        `add element inet ${EGRESS_TABLE} ${l.set} { ${l.address} timeout ${Math.max(1, Math.round(l.timeoutSeconds))}s }\n`,
    )
    .join('');
}

/** Back to deny-all: removes the policy table if there is one. */
export const EGRESS_RESET_RULESET = `table inet ${EGRESS_TABLE}\ndelete table inet ${EGRESS_TABLE}\n`;
