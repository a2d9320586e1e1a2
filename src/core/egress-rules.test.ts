import { describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import {
  DEFAULT_VM_SUBNET,
  checkEgressRules,
  cidrProblem,
  egressPolicyOf,
  hostnameProblem,
  overlaps,
  parseIpv4Cidr,
  type EgressRuleInput,
} from './egress-rules.js';

const SUBNET = DEFAULT_VM_SUBNET;

describe('parseIpv4Cidr', () => {
  it('parses networks', () => {
    expect(parseIpv4Cidr('10.0.5.0/24')).toEqual({ base: 0x0a000500, prefix: 24 });
    expect(parseIpv4Cidr('255.255.255.255/32')).toEqual({ base: 0xffffffff, prefix: 32 });
    expect(parseIpv4Cidr('0.0.0.0/0')).toEqual({ base: 0, prefix: 0 });
  });

  it('says what is wrong with anything else', () => {
    expect(parseIpv4Cidr('10.0.5.0')).toMatch(/not an IPv4 CIDR like 10.0.5.0\/24/);
    expect(parseIpv4Cidr('fd00::/8')).toMatch(/IPv6 is not supported/);
    expect(parseIpv4Cidr('10.0.5.256/32')).toMatch(/0\.\.255/);
    expect(parseIpv4Cidr('10.0.05.0/24')).toMatch(/leading zeros/);
    expect(parseIpv4Cidr('10.0.5.0/33')).toMatch(/prefix length 33; it must be 0\.\.32/);
    expect(parseIpv4Cidr('10.0.5.0/')).toMatch(/not an IPv4 CIDR/);
  });
});

describe('overlaps', () => {
  const n = (t: string) => parseIpv4Cidr(t) as { base: number; prefix: number };
  it('is true when one network contains the other', () => {
    expect(overlaps(n('10.0.0.0/8'), n('10.201.0.0/16'))).toBe(true);
    expect(overlaps(n('10.201.3.4/32'), n('10.201.0.0/16'))).toBe(true);
    expect(overlaps(n('0.0.0.0/0'), n('127.0.0.0/8'))).toBe(true);
    expect(overlaps(n('10.200.0.0/16'), n('10.201.0.0/16'))).toBe(false);
    expect(overlaps(n('128.0.0.0/1'), n('127.0.0.0/8'))).toBe(false);
  });
});

describe('cidrProblem', () => {
  it('accepts canonical networks outside the forbidden ranges', () => {
    for (const c of ['10.0.5.0/24', '10.0.5.7/32', '192.168.0.0/16', '8.8.8.8/32', '10.202.0.0/16'])
      expect(cidrProblem(c, SUBNET), c).toBeUndefined();
  });

  it('refuses host bits, giving the canonical form', () => {
    expect(cidrProblem('10.0.5.1/24', SUBNET)).toBe(
      "'10.0.5.1/24' has host bits set; the network is 10.0.5.0/24",
    );
  });

  it.each([
    ['127.0.0.1/32', '127.0.0.0/8 (loopback'],
    ['169.254.169.254/32', '169.254.0.0/16 (link-local'],
    ['0.0.0.0/0', '0.0.0.0/8 ("this network"'],
    ['0.1.2.0/24', '0.0.0.0/8'],
    ['239.1.0.0/16', '224.0.0.0/4 (multicast'],
    ['255.255.255.255/32', '240.0.0.0/4 (reserved'],
    ['10.201.7.0/24', "10.201.0.0/16, this server's VM subnet"],
    ['10.0.0.0/8', "10.201.0.0/16, this server's VM subnet"],
  ])('refuses %s, naming the range it overlaps', (cidr, range) => {
    expect(cidrProblem(cidr, SUBNET)).toContain(`overlaps ${range}`);
  });

  it('follows the configured VM subnet', () => {
    expect(cidrProblem('10.201.0.0/24', '172.31.0.0/16')).toBeUndefined();
    expect(cidrProblem('172.31.9.0/24', '172.31.0.0/16')).toContain('VM subnet');
  });
});

describe('hostnameProblem', () => {
  it('accepts DNS names and wildcards', () => {
    for (const h of ['db.internal', 'db', '*.example.com', 'a-b.c9.example', `${'a'.repeat(63)}.com`])
      expect(hostnameProblem(h), h).toBeUndefined();
  });

  it.each([
    ['exa_mple.com', "label 'exa_mple'"],
    ['-a.com', "label '-a'"],
    ['a..com', "label ''"],
    ['*', "label '*'"],
    ['a.*.com', "label '*'"],
    ['*.', "label ''"],
    [`${'a'.repeat(64)}.com`, '1..63'],
    [`${'a.'.repeat(126)}ab`, 'at most 253'],
    ['10.0.0.1', "give it as cidr '10.0.0.1/32'"],
    ['localhost', 'loopback'],
    ['*.app.localhost', 'loopback'],
  ])('refuses %s', (hostname, problem) => {
    expect(hostnameProblem(hostname)).toContain(problem);
  });
});

describe('checkEgressRules', () => {
  const check = (rules: EgressRuleInput[]) => checkEgressRules(rules, SUBNET);
  const failure = (rules: EgressRuleInput[]) => {
    try {
      check(rules);
    } catch (e) {
      expect(hasCode(e, 'VALIDATION')).toBe(true);
      return (e as Error).message;
    }
    throw new Error('no failure');
  };

  it('normalizes: protocol ALL by default, host names in lower case, no empty port lists', () => {
    expect(
      check([
        { cidr: '10.0.5.0/24', ports: [] },
        { hostname: 'DB.Internal', protocol: 'TCP', ports: [{ port: 5432 }] },
      ]),
    ).toEqual([
      { cidr: '10.0.5.0/24', protocol: 'ALL' },
      { hostname: 'db.internal', protocol: 'TCP', ports: [{ port: 5432 }] },
    ]);
  });

  it('names the rule and field of a problem', () => {
    expect(failure([{ cidr: '10.0.5.0/24' }, { cidr: '10.0.5.1/24' }])).toBe(
      "egressRules.2.member.cidr: '10.0.5.1/24' has host bits set; the network is 10.0.5.0/24",
    );
    expect(failure([{ hostname: 'bad_name' }])).toMatch(/^egressRules\.1\.member\.hostname: /);
    expect(failure([{}])).toBe('egressRules.1.member: give exactly one of cidr and hostname');
    expect(failure([{ cidr: '10.0.5.0/24', hostname: 'x.com' }])).toBe(
      'egressRules.1.member: give exactly one of cidr and hostname',
    );
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
