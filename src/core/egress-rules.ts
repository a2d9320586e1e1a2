/**
 * The rules of egress allow-list connectors: what a destination may be (checked when a connector is
 * created; the API's shapes have already checked types, lengths, enums and port ranges), and how
 * rules become the engine's EgressPolicy. What no rule may open is the network side's decision
 * (validateEgressPolicy in src/net/egress-rules.ts): connectors are checked with it when created,
 * and a microVM's whole policy again at RunMicrovm, so a launch never meets a policy it refuses.
 */
import { hasCode } from '../errors.js';
import { validateEgressPolicy } from '../net/egress-rules.js';
import { cidr, parseIpv4 } from '../net/ipv4.js';
import type { EgressPolicy, EgressRule } from '../net/policy.js';
import { ValidationError } from './image-spec.js';
import type { ConnectorEgressRule } from './model.js';

/** The host side of the VM links when HEARTH_VM_SUBNET is not set (as src/net uses it). */
export const DEFAULT_VM_SUBNET = '10.201.0.0/16';

/** A rule as a request gives it: the protocol defaults to ALL. */
export type EgressRuleInput = Omit<ConnectorEgressRule, 'protocol'> & {
  protocol?: ConnectorEgressRule['protocol'];
};

/**
 * Checks `policy` as the network side will when the VM gets its network; a ValidationError on
 * `field` with the network's reason if it would be refused.
 */
export function checkPolicy(policy: EgressPolicy, vmSubnet: string, field: string): EgressPolicy {
  try {
    return validateEgressPolicy(policy, cidr(vmSubnet));
  } catch (e) {
    if (hasCode(e, 'NET_POLICY_INVALID')) throw new ValidationError(field, (e as Error).message);
    throw e;
  }
}

/** What Hearth refuses in a hostname beyond what the network side does: addresses and localhost. */
function hostnameProblem(hostname: string): string | undefined {
  const name = hostname.startsWith('*.') ? hostname.slice(2) : hostname;
  if (parseIpv4(name) !== undefined) return `'${hostname}' is an IPv4 address: give it as cidr '${name}/32'`;
  if (name === 'localhost' || name.endsWith('.localhost'))
    return `'${hostname}' is loopback (RFC 6761), which no rule may open`;
  return undefined;
}

/**
 * Checks every rule (the path of a field in messages is as the API's validation writes it, e.g.
 * `egressRules.2.member.cidr`) and returns them normalized: protocol given (default ALL), host names
 * in lower case, `ports` absent when empty (every port). ValidationError at the first problem:
 * not exactly one of cidr and hostname; a CIDR that is not canonical IPv4 or overlaps what no VM
 * may reach (loopback, link-local, 0/8, multicast, reserved, `vmSubnet`); a host name that is not
 * a DNS name (or `*.` and one), or is an IPv4 address or localhost.
 */
export function checkEgressRules(rules: readonly EgressRuleInput[], vmSubnet: string): ConnectorEgressRule[] {
  return rules.map((input, i) => {
    const at = `egressRules.${i + 1}.member`;
    if ((input.cidr === undefined) === (input.hostname === undefined))
      throw new ValidationError(at, 'give exactly one of cidr and hostname');
    const field = `${at}.${input.cidr !== undefined ? 'cidr' : 'hostname'}`;
    const r: ConnectorEgressRule = { ...input, protocol: input.protocol ?? 'ALL' };
    const [checked] = checkPolicy({ internet: false, allow: [toPolicyRule(r)] }, vmSubnet, field).allow;
    const hostname = checked?.hostname;
    const problem = hostname === undefined ? undefined : hostnameProblem(hostname);
    if (problem !== undefined) throw new ValidationError(field, problem);
    return {
      ...(hostname === undefined ? { cidr: checked?.cidr as string } : { hostname }),
      protocol: r.protocol,
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
