/**
 * The rules of egress allow-list connectors: what a destination may be (checked when a connector is
 * created; the API's shapes have already checked types, lengths, enums and port ranges), and how
 * rules become the engine's EgressPolicy.
 */
import type { EgressPolicy, EgressRule } from '../net/policy.js';
import { ValidationError } from './image-spec.js';
import type { ConnectorEgressRule } from './model.js';

/** The host side of the VM links when HEARTH_VM_SUBNET is not set (as src/net uses it). */
export const DEFAULT_VM_SUBNET = '10.201.0.0/16';

/** An IPv4 network: its first address as an unsigned 32-bit number, and the prefix length. */
export interface Ipv4Network {
  base: number;
  prefix: number;
}

/** Ranges a rule may never open, whatever the user asks (besides the server's VM subnet). */
const FORBIDDEN: readonly { cidr: string; why: string }[] = [
  { cidr: '0.0.0.0/8', why: '"this network" addresses' },
  { cidr: '127.0.0.0/8', why: 'loopback: the microVM itself' },
  { cidr: '169.254.0.0/16', why: 'link-local, where metadata services live' },
  { cidr: '224.0.0.0/4', why: 'multicast' },
  { cidr: '240.0.0.0/4', why: 'reserved (and broadcast)' },
];

const DOTTED_QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses `a.b.c.d/n`; a problem text when it is not one (host bits are not checked here). */
export function parseIpv4Cidr(text: string): Ipv4Network | string {
  const slash = text.indexOf('/');
  const m = DOTTED_QUAD.exec(slash < 0 ? text : text.slice(0, slash));
  const prefixText = slash < 0 ? '' : text.slice(slash + 1);
  if (!m || !/^\d{1,2}$/.test(prefixText))
    return `'${text}' is not an IPv4 CIDR like 10.0.5.0/24 (IPv6 is not supported)`;
  const octets = m.slice(1).map(Number);
  if (octets.some((o) => o > 255) || octets.some((o, i) => String(o) !== m[i + 1]))
    return `'${text}' is not an IPv4 address: each of the four numbers is 0..255, without leading zeros`;
  const prefix = Number(prefixText);
  if (prefix > 32) return `'${text}' has prefix length ${prefix}; it must be 0..32`;
  const base = octets.reduce((acc, o) => acc * 256 + o, 0);
  return { base, prefix };
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function formatNetwork(n: Ipv4Network): string {
  const b = n.base;
  return `${b >>> 24}.${(b >>> 16) & 255}.${(b >>> 8) & 255}.${b & 255}/${n.prefix}`;
}

/** Whether two networks share an address (one then contains the other). */
export function overlaps(a: Ipv4Network, b: Ipv4Network): boolean {
  const m = mask(Math.min(a.prefix, b.prefix));
  return (a.base & m) >>> 0 === (b.base & m) >>> 0;
}

function parseKnown(cidr: string): Ipv4Network {
  const n = parseIpv4Cidr(cidr);
  if (typeof n === 'string') throw new RangeError(n);
  return n;
}

/**
 * The problem with `cidr` as an allow-list destination, or undefined when it is fine: it must be a
 * canonical IPv4 network (no host bits set) that overlaps none of the forbidden ranges nor `vmSubnet`.
 */
export function cidrProblem(cidr: string, vmSubnet: string): string | undefined {
  const n = parseIpv4Cidr(cidr);
  if (typeof n === 'string') return n;
  const canonical = formatNetwork({ base: (n.base & mask(n.prefix)) >>> 0, prefix: n.prefix });
  if (canonical !== cidr) return `'${cidr}' has host bits set; the network is ${canonical}`;
  for (const f of FORBIDDEN) {
    if (overlaps(n, parseKnown(f.cidr)))
      return `${cidr} overlaps ${f.cidr} (${f.why}), which no rule may open`;
  }
  if (overlaps(n, parseKnown(vmSubnet)))
    return `${cidr} overlaps ${vmSubnet}, this server's VM subnet (HEARTH_VM_SUBNET): it would reach the host or other microVMs; allow narrower ranges outside it`;
  return undefined;
}

/** A rule as a request gives it: the protocol defaults to ALL. */
export type EgressRuleInput = Omit<ConnectorEgressRule, 'protocol'> & {
  protocol?: ConnectorEgressRule['protocol'];
};

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const MAX_HOSTNAME_LENGTH = 253;

/**
 * The problem with `hostname` (already lower case) as an allow-list destination, or undefined: a
 * DNS name of letters, digits and hyphens (labels of 1..63 characters, at most 253 in all), or `*.`
 * followed by one; not an IPv4 address (use cidr) and not localhost.
 */
export function hostnameProblem(hostname: string): string | undefined {
  const name = hostname.startsWith('*.') ? hostname.slice(2) : hostname;
  if (hostname.length > MAX_HOSTNAME_LENGTH)
    return `'${hostname.slice(0, 64)}...' is ${hostname.length} characters long; at most ${MAX_HOSTNAME_LENGTH}`;
  if (DOTTED_QUAD.test(name)) return `'${hostname}' is an IPv4 address: give it as cidr '${name}/32'`;
  const bad = name.split('.').find((label) => !LABEL.test(label));
  if (bad !== undefined)
    return `'${hostname}' is not a DNS name: label '${bad}' must be 1..63 letters, digits or hyphens, not starting or ending with a hyphen (a wildcard is only '*.' at the start)`;
  if (name === 'localhost' || name.endsWith('.localhost'))
    return `'${hostname}' is loopback (RFC 6761), which no rule may open`;
  return undefined;
}

/**
 * Checks every rule (the path of a field in messages is as the API's validation writes it, e.g.
 * `egressRules.2.member.cidr`) and returns them normalized: protocol given (default ALL), host names in lower
 * case, `ports` absent when empty (every port). ValidationError at the first problem.
 */
export function checkEgressRules(rules: readonly EgressRuleInput[], vmSubnet: string): ConnectorEgressRule[] {
  return rules.map((r, i) => {
    const at = `egressRules.${i + 1}.member`;
    if ((r.cidr === undefined) === (r.hostname === undefined))
      throw new ValidationError(at, 'give exactly one of cidr and hostname');
    const hostname = r.hostname?.toLowerCase();
    const problem =
      r.cidr !== undefined ? cidrProblem(r.cidr, vmSubnet) : hostnameProblem(hostname as string);
    if (problem !== undefined)
      throw new ValidationError(`${at}.${r.cidr !== undefined ? 'cidr' : 'hostname'}`, problem);
    return {
      ...(r.cidr !== undefined ? { cidr: r.cidr } : { hostname: hostname as string }),
      protocol: r.protocol ?? 'ALL',
      ...(r.ports?.length ? { ports: r.ports } : {}),
    };
  });
}

/** One connector rule as the engine's policy rule: protocol in lower case, ports as {from, to}. */
export function toPolicyRule(r: ConnectorEgressRule): EgressRule {
  return {
    ...(r.cidr !== undefined ? { cidr: r.cidr } : {}),
    ...(r.hostname !== undefined ? { hostname: r.hostname } : {}),
    protocol: r.protocol === 'TCP' ? 'tcp' : r.protocol === 'UDP' ? 'udp' : 'all',
    ports: (r.ports ?? []).map((p) =>
      'port' in p ? { from: p.port, to: p.port } : { from: p.range.startPort, to: p.range.endPort },
    ),
  };
}

/** The policy of a microVM: the internet if INTERNET_EGRESS is attached, plus every rule of its allow-lists. */
export function egressPolicyOf(internet: boolean, rules: readonly ConnectorEgressRule[]): EgressPolicy {
  return { internet, allow: rules.map(toPolicyRule) };
}
