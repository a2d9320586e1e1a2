import { describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import {
  DEFAULT_VM_SUBNET,
  checkEgressRules,
  checkPolicy,
  egressPolicyOf,
  type EgressRuleInput,
} from './egress-rules.js';

const SUBNET = DEFAULT_VM_SUBNET;

/** The ValidationError message of checking `rules`. */
function failure(rules: EgressRuleInput[], vmSubnet = SUBNET): string {
  try {
    checkEgressRules(rules, vmSubnet);
  } catch (e) {
    expect(hasCode(e, 'VALIDATION')).toBe(true);
    return (e as Error).message;
  }
  throw new Error('no failure');
}

describe('checkEgressRules', () => {
  it('normalizes: protocol ALL by default, host names in lower case, no empty port lists', () => {
    expect(
      checkEgressRules(
        [
          { cidr: '10.0.5.0/24', ports: [] },
          { cidr: '8.8.8.8/32', protocol: 'UDP', ports: [{ range: { startPort: 53, endPort: 53 } }] },
          { hostname: 'DB.Internal', protocol: 'TCP', ports: [{ port: 5432 }] },
          { hostname: '*.Example.com' },
        ],
        SUBNET,
      ),
    ).toEqual([
      { cidr: '10.0.5.0/24', protocol: 'ALL' },
      { cidr: '8.8.8.8/32', protocol: 'UDP', ports: [{ range: { startPort: 53, endPort: 53 } }] },
      { hostname: 'db.internal', protocol: 'TCP', ports: [{ port: 5432 }] },
      { hostname: '*.example.com', protocol: 'ALL' },
    ]);
  });

  it('accepts private ranges and networks next to the VM subnet', () => {
    for (const c of ['10.0.5.7/32', '192.168.0.0/16', '10.202.0.0/16', '172.16.0.0/12'])
      expect(checkEgressRules([{ cidr: c }], SUBNET), c).toHaveLength(1);
  });

  it('wants exactly one of cidr and hostname', () => {
    expect(failure([{}])).toBe('egressRules.1.member: give exactly one of cidr and hostname');
    expect(failure([{ cidr: '10.0.5.0/24' }, { cidr: '10.0.5.0/24', hostname: 'x.com' }])).toBe(
      'egressRules.2.member: give exactly one of cidr and hostname',
    );
  });

  it('refuses host bits, giving the network to write', () => {
    expect(failure([{ cidr: '10.0.5.0/24' }, { cidr: '10.0.5.1/24' }])).toBe(
      "egressRules.2.member.cidr: egress policy refused: '10.0.5.1/24' has host bits set (did you mean 10.0.5.0/24?)",
    );
  });

  it.each([
    ['127.0.0.1/32', 'loopback'],
    ['169.254.169.254/32', 'link-local (the metadata address)'],
    ['0.0.0.0/0', 'the VM subnet 10.201.0.0/16'],
    ['0.1.2.0/24', "'this network'"],
    ['239.1.0.0/16', 'multicast'],
    ['255.255.255.255/32', 'reserved and broadcast'],
    ['10.201.7.0/24', 'the VM subnet 10.201.0.0/16'],
    ['10.0.0.0/8', 'the VM subnet 10.201.0.0/16'],
  ])('refuses %s, naming what it overlaps', (c, what) => {
    expect(failure([{ cidr: c }])).toBe(
      `egressRules.1.member.cidr: egress policy refused: '${c}' overlaps ${what}, which no VM may reach`,
    );
  });

  it('refuses what is not an IPv4 CIDR', () => {
    for (const c of ['10.0.5.0/33', 'fd00::/8', '10.0.05.0/24', '10.0.5.256/32'])
      expect(failure([{ cidr: c }]), c).toMatch(
        /^egressRules\.1\.member\.cidr: egress policy refused: '.*' is not an IPv4 CIDR/,
      );
  });

  it('follows the configured VM subnet', () => {
    expect(checkEgressRules([{ cidr: '10.201.0.0/24' }], '172.31.0.0/16')).toHaveLength(1);
    expect(failure([{ cidr: '172.31.9.0/24' }], '172.31.0.0/16')).toContain(
      'overlaps the VM subnet 172.31.0.0/16',
    );
  });

  it.each([
    ['-a.com', 'is not a host name'],
    ['a..com', 'is not a host name'],
    ['*', 'is not a host name'],
    ['a.*.com', 'is not a host name'],
    [`${'a'.repeat(64)}.com`, 'is not a host name'],
    [`${'a.'.repeat(126)}ab`, 'is not a host name'],
    ['10.0.0.1', "is an IPv4 address: give it as cidr '10.0.0.1/32'"],
    ['*.10.0.0.1', 'is an IPv4 address'],
    ['localhost', 'is loopback (RFC 6761)'],
    ['*.app.localhost', 'is loopback'],
  ])('refuses the host name %s', (hostname, problem) => {
    const message = failure([{ hostname }]);
    expect(message).toMatch(/^egressRules\.1\.member\.hostname: /);
    expect(message).toContain(problem);
  });
});

describe('checkPolicy', () => {
  it('refuses a whole policy the network side would refuse, naming the field', () => {
    const many = egressPolicyOf(
      true,
      Array.from({ length: 65 }, (_, i) => ({ cidr: `10.0.${i}.0/24`, protocol: 'ALL' as const })),
    );
    expect(() => checkPolicy(many, SUBNET, 'egressNetworkConnectors')).toThrow(
      /^egressNetworkConnectors: egress policy refused: at most 64 allow rules$/,
    );
    expect(checkPolicy({ internet: true, allow: [] }, SUBNET, 'x')).toEqual({ internet: true, allow: [] });
  });
});

describe('egressPolicyOf', () => {
  it('turns rules into the engine policy: protocol in lower case, ports as {from, to}', () => {
    expect(
      egressPolicyOf(false, [
        {
          cidr: '10.0.5.0/24',
          protocol: 'TCP',
          ports: [{ port: 5432 }, { range: { startPort: 8000, endPort: 8100 } }],
        },
        { hostname: '*.example.com', protocol: 'ALL' },
        { hostname: 'ntp.example', protocol: 'UDP', ports: [{ port: 123 }] },
      ]),
    ).toEqual({
      internet: false,
      allow: [
        {
          cidr: '10.0.5.0/24',
          protocol: 'tcp',
          ports: [
            { from: 5432, to: 5432 },
            { from: 8000, to: 8100 },
          ],
        },
        { hostname: '*.example.com', protocol: 'all', ports: [] },
        { hostname: 'ntp.example', protocol: 'udp', ports: [{ from: 123, to: 123 }] },
      ],
    });
    expect(egressPolicyOf(true, [])).toEqual({ internet: true, allow: [] });
  });
});
