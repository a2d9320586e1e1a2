import { describe, expect, it } from 'vitest';
import { run } from '../util/exec.js';
import {
  dnsRedirectRuleset,
  EGRESS_RESET_RULESET,
  egressRuleset,
  hostnameMatches,
  isLearnable,
  learnRuleset,
  setsForName,
  validateEgressPolicy,
  type EgressRulesetInput,
} from './egress-rules.js';
import { NetworkPolicyError } from './errors.js';
import { cidr, cidrOverlaps, parseCidr } from './ipv4.js';
import type { EgressPolicy } from './policy.js';

const SUBNET = cidr('10.201.0.0/16');
const tcp = (from: number, to = from) => ({ from, to });

function input(policy: EgressPolicy, extra: Partial<EgressRulesetInput> = {}): EgressRulesetInput {
  return {
    policy: validateEgressPolicy(policy, SUBNET),
    vmSubnet: SUBNET,
    hostIp: '10.201.0.5',
    guestGateway: '172.16.0.1',
    tapName: 'tap0',
    ...extra,
  };
}

/** The forward chain's rules, in order. */
function forwardRules(text: string): string[] {
  const chain = text.slice(text.indexOf('chain forward {'));
  return chain
    .split('\n')
    .slice(2)
    .map((l) => l.trim())
    .filter((l) => l && l !== '}');
}

/** Applies nft scripts in turn in a throwaway network namespace; returns the ruleset left. */
async function nftSteps(scripts: string[]): Promise<string> {
  const loop = 'for s in "$@"; do printf "%s" "$s" | nft -f - || exit 1; done; nft list ruleset';
  return (await run('unshare', ['--net', 'sh', '-c', loop, 'sh', ...scripts])).stdout;
}

describe('IPv4 helpers', () => {
  it('parses CIDRs, notes host bits, detects overlap', () => {
    expect(parseCidr('10.0.5.0/24')).toEqual({ base: 0x0a000500, prefix: 24, hostBits: false });
    expect(parseCidr('10.0.5.7/24')?.hostBits).toBe(true);
    expect(parseCidr('10.0.5.7')).toMatchObject({ prefix: 32, hostBits: false });
    for (const bad of ['10.0.5/24', '10.0.5.0/33', '256.0.0.0/8', '01.0.0.0/8', '1.2.3.4/2/3', '']) {
      expect(parseCidr(bad)).toBeUndefined();
    }
    expect(cidrOverlaps(cidr('10.0.0.0/8'), SUBNET)).toBe(true);
    expect(cidrOverlaps(cidr('10.200.0.0/16'), SUBNET)).toBe(false);
    expect(cidrOverlaps(cidr('0.0.0.0/0'), cidr('127.0.0.0/8'))).toBe(true);
  });
});

describe('egress policy validation', () => {
  it('normalises host names and keeps valid rules', () => {
    const p = validateEgressPolicy(
      {
        internet: false,
        allow: [
          { hostname: 'DB.Internal.', protocol: 'tcp', ports: [tcp(5432)] },
          { hostname: '*.Example.com', protocol: 'all', ports: [] },
          { cidr: '192.168.7.0/24', protocol: 'udp', ports: [tcp(1000, 2000)] },
        ],
      },
      SUBNET,
    );
    expect(p.allow.map((r) => r.hostname ?? r.cidr)).toEqual([
      'db.internal',
      '*.example.com',
      '192.168.7.0/24',
    ]);
  });

  const refused: [string, EgressPolicy['allow'][number], RegExp][] = [
    ['the VM subnet', { cidr: '10.201.3.0/24', protocol: 'all', ports: [] }, /VM subnet/],
    ['a range containing the VM subnet', { cidr: '10.0.0.0/8', protocol: 'tcp', ports: [] }, /VM subnet/],
    ['everything', { cidr: '0.0.0.0/0', protocol: 'all', ports: [] }, /overlaps/],
    ['loopback', { cidr: '127.0.0.1/32', protocol: 'tcp', ports: [] }, /loopback/],
    ['the metadata address', { cidr: '169.254.169.254/32', protocol: 'tcp', ports: [tcp(80)] }, /link-local/],
    ['multicast', { cidr: '239.1.1.0/24', protocol: 'udp', ports: [] }, /multicast/],
    ['broadcast', { cidr: '255.255.255.255/32', protocol: 'udp', ports: [] }, /broadcast/],
    ['host bits', { cidr: '192.168.1.7/24', protocol: 'tcp', ports: [] }, /host bits.*192\.168\.1\.0\/24/],
    ['a bad CIDR', { cidr: '192.168.1/24', protocol: 'tcp', ports: [] }, /not an IPv4 CIDR/],
    ['port 0', { cidr: '192.168.1.0/24', protocol: 'tcp', ports: [tcp(0)] }, /port range/],
    ['reversed ports', { cidr: '192.168.1.0/24', protocol: 'tcp', ports: [tcp(90, 80)] }, /port range/],
    ['a bad protocol', { cidr: '192.168.1.0/24', protocol: 'icmp' as 'tcp', ports: [] }, /protocol/],
    [
      'both cidr and hostname',
      { cidr: '192.168.1.0/24', hostname: 'a.b', protocol: 'tcp', ports: [] },
      /exactly one/,
    ],
    ['neither', { protocol: 'tcp', ports: [] }, /exactly one/],
    ['a bad host name', { hostname: 'a b.com', protocol: 'tcp', ports: [] }, /not a host name/],
    ['a wildcard in the middle', { hostname: 'a.*.com', protocol: 'tcp', ports: [] }, /not a host name/],
    ['a nft injection', { hostname: 'x" accept; #', protocol: 'tcp', ports: [] }, /not a host name/],
  ];
  it.each(refused)('refuses %s with NET_POLICY_INVALID', (_, rule, message) => {
    let err: unknown;
    try {
      validateEgressPolicy({ internet: true, allow: [rule] }, SUBNET);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NetworkPolicyError);
    expect((err as NetworkPolicyError).code).toBe('NET_POLICY_INVALID');
    expect((err as Error).message).toMatch(message);
    expect((err as NetworkPolicyError).hint).toBeTruthy();
  });

  it('a different VM subnet moves what is refused', () => {
    expect(() =>
      validateEgressPolicy(
        { internet: false, allow: [{ cidr: '10.0.0.0/8', protocol: 'tcp', ports: [] }] },
        cidr('172.30.0.0/16'),
      ),
    ).not.toThrow();
  });
});

describe('host name matching', () => {
  it('exact names and wildcards below a domain (not the domain itself)', () => {
    expect(hostnameMatches('db.internal', 'db.internal')).toBe(true);
    expect(hostnameMatches('db.internal', 'xdb.internal')).toBe(false);
    expect(hostnameMatches('*.example.com', 'a.example.com')).toBe(true);
    expect(hostnameMatches('*.example.com', 'a.b.example.com')).toBe(true);
    expect(hostnameMatches('*.example.com', 'example.com')).toBe(false);
    expect(hostnameMatches('*.example.com', 'badexample.com')).toBe(false);
    expect(hostnameMatches('*.example.com', 'a.example.com.evil.net')).toBe(false);
  });

  it('finds every set covering a name', () => {
    const p = validateEgressPolicy(
      {
        internet: false,
        allow: [
          { cidr: '192.168.0.0/24', protocol: 'tcp', ports: [] },
          { hostname: 'api.example.com', protocol: 'tcp', ports: [tcp(443)] },
          { hostname: '*.example.com', protocol: 'tcp', ports: [tcp(80)] },
        ],
      },
      SUBNET,
    );
    expect(setsForName(p, 'api.example.com')).toEqual(['host_1', 'host_2']);
    expect(setsForName(p, 'www.example.com')).toEqual(['host_2']);
    expect(setsForName(p, 'example.org')).toEqual([]);
  });

  it('never learns addresses no rule may open', () => {
    expect(isLearnable('10.77.0.10', SUBNET)).toBe(true);
    expect(isLearnable('203.0.113.10', SUBNET)).toBe(true);
    for (const a of [
      '10.201.0.6',
      '127.0.0.1',
      '169.254.169.254',
      '224.0.0.1',
      '255.255.255.255',
      '0.0.0.0',
      'x',
    ])
      expect(isLearnable(a, SUBNET)).toBe(false);
  });
});

describe('egress ruleset', () => {
  const full: EgressPolicy = {
    internet: true,
    allow: [
      { cidr: '10.77.0.0/24', protocol: 'tcp', ports: [tcp(5432), tcp(6000, 6010)] },
      { cidr: '192.168.1.0/24', protocol: 'all', ports: [] },
      { cidr: '192.168.2.0/24', protocol: 'all', ports: [tcp(53)] },
      { cidr: '192.168.3.0/24', protocol: 'udp', ports: [] },
      { hostname: 'db.internal', protocol: 'tcp', ports: [tcp(5432)] },
      { hostname: '*.example.com', protocol: 'all', ports: [] },
    ],
  };

  it('matches the expected text for a full policy', () => {
    const text = egressRuleset(
      input(full, {
        dnsPort: 40000,
        learnt: [
          { set: 'host_4', address: '10.77.0.10', timeoutSeconds: 61.2 },
          { set: 'host_4', address: '127.0.0.1', timeoutSeconds: 60 },
        ],
      }),
    );
    expect(text).toMatchSnapshot();
  });

  it('allows in order: DNS to the forwarder, never-ranges refused, rules, then private refused, then the internet', () => {
    const rules = forwardRules(egressRuleset(input(full, { dnsPort: 40000 })));
    const at = (re: RegExp) => rules.findIndex((r) => re.test(r));
    expect(at(/^ct status dnat ip daddr 10\.201\.0\.5 /)).toBeLessThan(at(/^ip daddr @never return$/));
    expect(at(/^ip daddr @never return$/)).toBeLessThan(
      at(/^ip daddr 10\.77\.0\.0\/24 tcp dport \{ 5432, 6000-6010 \}/),
    );
    expect(at(/^ip daddr @host_4 tcp dport \{ 5432 \}/)).toBeLessThan(at(/^ip daddr @private return$/));
    expect(rules.at(-1)).toBe('meta mark set 0x00000045 accept');
    // Every accept marks; nothing is accepted unmarked (unmarked packets are refused by the namespace).
    for (const r of rules.filter((r) => r.endsWith('accept')))
      expect(r).toMatch(/meta mark set 0x00000045 accept$/);
  });

  it('without internet there is no catch-all, no private set, and no DNS unless asked', () => {
    const text = egressRuleset(
      input({ internet: false, allow: [{ cidr: '10.77.0.0/24', protocol: 'tcp', ports: [tcp(5432)] }] }),
    );
    const rules = forwardRules(text);
    expect(rules.at(-1)).toBe('ip daddr 10.77.0.0/24 tcp dport { 5432 } meta mark set 0x00000045 accept');
    expect(text).not.toContain('set private');
    expect(text).not.toContain('chain dns');
    expect(text).not.toContain('ct status dnat');
  });

  it('drops learnt addresses in never-ranges and starts sets with the others', () => {
    const text = egressRuleset(
      input(full, {
        dnsPort: 1,
        learnt: [
          { set: 'host_4', address: '10.77.0.10', timeoutSeconds: 100 },
          { set: 'host_4', address: '169.254.169.254', timeoutSeconds: 100 },
        ],
      }),
    );
    expect(text).toContain('elements = { 10.77.0.10 timeout 100s }');
    expect(text).not.toContain('169.254.169.254 timeout');
  });

  it.skipIf(process.getuid?.() !== 0)(
    'is accepted by nft (needs root); set updates, DNS re-pointing and the reset apply on top',
    async () => {
      const setup = egressRuleset(
        input(full, {
          dnsPort: 40000,
          learnt: [{ set: 'host_5', address: '93.184.216.34', timeoutSeconds: 60 }],
        }),
      );
      const applied = await nftSteps([
        setup,
        setup, // re-applying replaces the table
        learnRuleset([{ set: 'host_4', address: '10.77.0.10', timeoutSeconds: 61 }]),
        dnsRedirectRuleset({
          hostIp: '10.201.0.5',
          guestGateway: '172.16.0.1',
          tapName: 'tap0',
          dnsPort: 41000,
        }),
      ]);
      expect(applied).toMatch(/10\.77\.0\.10 timeout 1m1s/);
      expect(applied).toMatch(/93\.184\.216\.34 timeout 1m/);
      expect(applied).toContain('dnat ip to 10.201.0.5:41000');
      expect(applied).not.toContain(':40000');
      expect((await nftSteps([setup, EGRESS_RESET_RULESET])).trim()).toBe('');
      expect((await nftSteps([EGRESS_RESET_RULESET])).trim()).toBe('');
    },
  );
});
