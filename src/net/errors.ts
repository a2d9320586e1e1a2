import { HearthError } from '../errors.js';

/** Creating or removing a VM's network (namespace, veth, tap, nftables rules) failed. */
export class NetworkSetupError extends HearthError {
  readonly code = 'NET_SETUP_FAILED';
  constructor(step: string, options?: { cause?: unknown }) {
    super(`VM network setup failed at '${step}'`, {
      ...options,
      hint: 'Hearth needs root (CAP_NET_ADMIN), iproute2 and nftables; see the cause for the command that failed',
    });
  }
}

/** Every network slot of the configured subnet is taken. */
export class NetworkExhaustedError extends HearthError {
  readonly code = 'NET_EXHAUSTED';
  constructor(slots: number) {
    super(`all ${slots} VM network slots are in use`, {
      hint: 'use a larger vmSubnet or run fewer VMs on this host',
    });
  }
}

/** An egress policy Hearth refuses to apply (malformed, or reaching what no VM may reach). */
export class NetworkPolicyError extends HearthError {
  readonly code = 'NET_POLICY_INVALID';
  constructor(reason: string) {
    super(`egress policy refused: ${reason}`, {
      hint: 'rules take an IPv4 CIDR (host bits zero) or a host name, ports 1-65535; the VM subnet, loopback, link-local, multicast and reserved ranges are never reachable',
    });
  }
}

/** Hearth's DNS forwarder for guests could not start, or a host-side lookup failed. */
export class DnsForwarderError extends HearthError {
  readonly code = 'NET_DNS_FAILED';
  constructor(step: string, options?: { cause?: unknown }) {
    super(`guest DNS forwarder failed at '${step}'`, {
      ...options,
      hint: 'check the upstream resolvers (/etc/resolv.conf or HEARTH_DNS_UPSTREAM) and that the host can bind UDP/TCP sockets',
    });
  }
}

/**
 * A guest was to get egress (an egress connector: INTERNET_EGRESS or an allow-list) on a Hearth
 * with user-mode networking, which cannot enforce one: QEMU's user-mode stack either reaches
 * everything the host reaches or nothing, so Hearth gives guests nothing and refuses the rest.
 */
export class EgressUnenforceableError extends HearthError {
  readonly code = 'NET_EGRESS_UNENFORCEABLE';
  constructor() {
    super(
      'this Hearth runs without root (user-mode networking): egress connectors cannot be enforced; run it as root or without egress connectors',
      {
        hint: 'leave egressNetworkConnectors out (the microVM then reaches nothing), or run Hearth as root, where network namespaces and nftables enforce egress connectors',
      },
    );
  }
}
