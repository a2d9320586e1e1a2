/**
 * What a microVM's network lets through, decided once at launch (from its network connectors) and
 * kept for its whole life, across suspend and resume. The engine stores it in the VM's record and
 * hands it to the NetworkManager every time the VM gets a network.
 *
 * Ingress (who may reach the guest) is the gateway's business and is not here: the host itself
 * always reaches the guest's ports (hooks, readiness, the gateway's upstream connections).
 */

/** A range of TCP/UDP ports, both ends included (from <= to, 1..65535). */
export interface PortRange {
  from: number;
  to: number;
}

/** One allow-list entry: a destination (an IPv4 CIDR or a host name) and what may be used there. */
export interface EgressRule {
  /** An IPv4 network, e.g. '10.0.5.0/24' or '10.0.5.7/32'. Exactly one of cidr and hostname. */
  cidr?: string;
  /**
   * A DNS name, e.g. 'db.internal', or a wildcard '*.example.com' (any name below example.com, not
   * example.com itself). Allowed addresses are the ones the name resolves to, as Hearth's resolver
   * answers the guest (and as Hearth resolves it when the VM gets its network).
   */
  hostname?: string;
  protocol: 'tcp' | 'udp' | 'all';
  /** Allowed destination ports; empty means every port (and, for 'all', ICMP too). */
  ports: PortRange[];
}

/**
 * A guest's egress. Deny by default: with `internet` false and no rules the guest reaches nothing,
 * not even a resolver.
 */
export interface EgressPolicy {
  /**
   * INTERNET_EGRESS: outbound NAT to public addresses. Never to the host, other VMs, loopback,
   * link-local (169.254.0.0/16, the metadata address), private (RFC 1918, 100.64.0.0/10),
   * multicast or reserved ranges, unless a rule below allows a private range explicitly.
   */
  internet: boolean;
  /** Allow-list rules (from egress connectors), on top of `internet`. */
  allow: EgressRule[];
}

export const DENY_ALL_EGRESS: Readonly<EgressPolicy> = Object.freeze({ internet: false, allow: [] });

/** Whether the guest needs a resolver at all (anything to reach by name, or the internet). */
export function needsDns(p: Readonly<EgressPolicy>): boolean {
  return p.internet || p.allow.some((r) => r.hostname !== undefined);
}
