import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildQuery, DNS_TYPE, parseMessage } from '../../src/net/dns-wire.js';
import type { EgressPolicy } from '../../src/net/policy.js';
import { rootTableName } from '../../src/net/root-firewall.js';
import { startFakeDns, type FakeDns } from '../../src/net/testing.js';
import { NetworkManager, type TapNetwork } from '../../src/net/vm-network.js';
import { run } from '../../src/util/exec.js';
import { testDataDir } from '../helpers/env.js';

const CHILD = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'net-child.ts');
const POLICY: EgressPolicy = {
  internet: true,
  allow: [{ hostname: 'db.internal', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] }],
};

/** Sends a DNS query over UDP from inside a namespace (source: its endpoint address); prints the reply in hex. */
const ASK_FROM_NAMESPACE = `
const s = require('dgram').createSocket('udp4');
const [host, port, hex] = process.argv.slice(1);
s.on('message', (m) => { console.log(m.toString('hex')); process.exit(0); });
setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);
s.send(Buffer.from(hex, 'hex'), Number(port), host);
`;

async function nsRuleset(net: TapNetwork): Promise<string> {
  return (await run('ip', ['netns', 'exec', net.netnsName, 'nft', 'list', 'ruleset'])).stdout;
}

async function hostSet(table: string): Promise<string> {
  const r = await run('nft', ['list', 'set', 'inet', table, 'vm_ifaces'], { allowFailure: true });
  return r.exitCode === 0 ? r.stdout : '';
}

function dnatPort(ruleset: string): number {
  return Number(/dnat ip to [\d.]+:(\d+)/.exec(ruleset)?.[1]);
}

describe('NetworkManager egress lifecycle (no guest: crash, adoption, cost)', () => {
  let dns: FakeDns;
  const stateDir = join(testDataDir().root, 'run', 'net-lifecycle-test');
  const table = rootTableName(stateDir);

  /** Runs net-child.ts until it has a network with POLICY, then SIGKILLs it. */
  async function crashedManager(): Promise<TapNetwork> {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, stateDir, JSON.stringify(POLICY)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, HEARTH_DNS_UPSTREAM: `127.0.0.1:${dns.port}` },
    });
    const exited = new Promise((r) => child.on('exit', r));
    let net: TapNetwork | undefined;
    for await (const line of createInterface({ input: child.stdout! })) {
      if (line.startsWith('ready ')) {
        net = JSON.parse(line.slice(6)) as TapNetwork;
        break;
      }
    }
    child.kill('SIGKILL');
    await exited;
    if (!net) throw new Error('net-child.ts exited before it had a network');
    return net;
  }

  async function expectGone(net: TapNetwork): Promise<void> {
    expect(existsSync(net.netnsPath)).toBe(false);
    expect(readdirSync('/sys/class/net')).not.toContain(net.hostVeth);
    expect(await hostSet(table)).not.toContain(`"${net.hostVeth}"`);
    expect(readdirSync(stateDir)).toEqual([]);
  }

  beforeAll(async () => {
    await rm(stateDir, { recursive: true, force: true });
    dns = await startFakeDns({ 'db.internal': ['10.77.0.10'] });
  });

  afterAll(async () => {
    await dns.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('after a SIGKILL, the next manager removes the namespace, link, host table entry and state', async () => {
    const net = await crashedManager();
    // What the crash left behind: the policy in the namespace (host-resolved name included) and the
    // link in the host table.
    const rules = await nsRuleset(net);
    expect(rules).toContain('table inet hearth_egress');
    expect(rules).toMatch(/set host_0 \{[^}]*10\.77\.0\.10 timeout/);
    expect(await hostSet(table)).toContain(`"${net.hostVeth}"`);

    const next = new NetworkManager({ stateDir, spares: 0 });
    expect(await next.reapOrphans()).toBe(1);
    await expectGone(net);
    await next.drain();
    expect((await run('nft', ['list', 'tables'])).stdout).not.toContain(table);
  });

  it('a network adopted after a crash keeps its policy, and its guest DNS moves to the new forwarder', async () => {
    const net = await crashedManager();
    const oldPort = dnatPort(await nsRuleset(net));
    const next = new NetworkManager({
      stateDir,
      spares: 0,
      dnsUpstream: [{ address: '127.0.0.1', port: dns.port }],
    });
    next.adopt(net);
    expect(await next.reapOrphans(new Set([net.slot]))).toBe(0);
    let rules = '';
    for (let i = 0; i < 100 && dnatPort((rules = await nsRuleset(net))) === oldPort; i++)
      await new Promise((r) => setTimeout(r, 50));
    const port = dnatPort(rules);
    expect(port).not.toBe(oldPort);
    expect(rules).toContain('ip daddr @host_0 tcp dport 5432'); // the policy is still there
    expect((await run('nft', ['list', 'table', 'inet', table])).stdout).toContain(`th dport ${port} return`);

    // The new forwarder answers the adopted VM's address.
    const query = buildQuery(0x4242, 'db.internal', DNS_TYPE.A).toString('hex');
    const out = await run('ip', [
      'netns',
      'exec',
      net.netnsName,
      process.execPath,
      '-e',
      ASK_FROM_NAMESPACE,
      net.hostIp,
      String(port),
      query,
    ]);
    const reply = parseMessage(Buffer.from(out.stdout.trim(), 'hex'));
    expect(reply.id).toBe(0x4242);
    expect(reply.answers.map((a) => a.address)).toEqual(['10.77.0.10']);

    next.release(net);
    await next.drain();
    await expectGone(net);
    expect((await run('nft', ['list', 'tables'])).stdout).not.toContain(table);
  });

  it('take() hands a network over before its policy lands; released meanwhile, it goes back to the pool deny-all', async () => {
    const m = new NetworkManager({
      stateDir,
      spares: 2,
      dnsUpstream: [{ address: '127.0.0.1', port: dns.port }],
    });
    try {
      m.release(await m.acquire()); // the pool exists
      await new Promise((r) => setTimeout(r, 1_200));
      const { net, policyApplied } = await m.take(POLICY);
      m.release(net); // before the policy's nft batch ran
      await policyApplied.catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1_200)); // recycling done
      expect(existsSync(net.netnsPath)).toBe(true); // recycled into the pool, not destroyed
      expect(await nsRuleset(net)).not.toContain('hearth_egress');
      // And a policy applied through take() is in place once policyApplied resolves.
      const t = await m.take(POLICY);
      await t.policyApplied;
      expect(await nsRuleset(t.net)).toContain('table inet hearth_egress');
      m.release(t.net);
    } finally {
      await m.drain();
    }
    expect(readdirSync(stateDir)).toEqual([]);
  });

  it('a network released with a CIDR-only policy keeps it for the next VM with that policy; other policies do not take it', async () => {
    const m = new NetworkManager({
      stateDir,
      spares: 2,
      dnsUpstream: [{ address: '127.0.0.1', port: dns.port }],
    });
    const cidrOnly: EgressPolicy = {
      internet: true,
      allow: [{ cidr: '10.77.0.0/24', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] }],
    };
    const settle = () => new Promise((r) => setTimeout(r, 1_200));
    try {
      const first = await m.acquire(cidrOnly);
      m.release(first);
      await settle();
      // Kept as it was: same slot, rules still there, nothing left to apply.
      const again = await m.take(cidrOnly);
      expect(again.net.slot).toBe(first.slot);
      await again.policyApplied;
      const rules = await nsRuleset(again.net);
      expect(rules).toContain('table inet hearth_egress');
      expect(rules).toContain('ip daddr 10.77.0.0/24 tcp dport 5432');
      expect(rules).toMatch(/dnat ip to [\d.]+:\d+/); // internet: guest DNS goes to the forwarder
      // A different policy never gets that network while it is kept for its own policy.
      const other = await m.acquire({ ...cidrOnly, internet: false });
      expect(other.slot).not.toBe(first.slot);
      expect(await nsRuleset(other)).not.toMatch(/dnat ip to [\d.]+:\d+/);
      m.release(other);
      m.release(again.net);
      // A host-name policy holds addresses learnt from its guest: its table goes at release.
      const named = await m.acquire(POLICY);
      m.release(named);
      await settle();
      expect(await nsRuleset(named)).not.toContain('hearth_egress');
      // The deny-all pool never hands out a network that kept a policy.
      for (let i = 0; i < 3; i++) {
        const d = await m.acquire();
        expect(await nsRuleset(d)).not.toContain('hearth_egress');
        m.release(d);
      }
    } finally {
      await m.drain();
    }
    expect(readdirSync(stateDir)).toEqual([]);
  });

  it('a new policy costs one namespace nft batch on top of a pooled acquire; a kept one costs none (measured)', async () => {
    const m = new NetworkManager({
      stateDir,
      spares: 4, // room to keep the policy used every round while two new ones pass through
      dnsUpstream: [{ address: '127.0.0.1', port: dns.port }],
    });
    let fresh = 6000;
    /** A CIDR rule on a port no earlier call used: no network can have kept it. */
    const cidrRule = (port: number): EgressPolicy['allow'] => [
      { cidr: '10.77.0.0/24', protocol: 'tcp', ports: [{ from: port, to: port }] },
    ];
    const policies: [string, () => EgressPolicy][] = [
      ['deny-all', () => ({ internet: false, allow: [] })],
      ['internet, new', () => ({ internet: true, allow: cidrRule(fresh++) })],
      ['cidr, new', () => ({ internet: false, allow: cidrRule(fresh++) })],
      ['cidr, kept', () => ({ internet: false, allow: cidrRule(5432) })],
      ['hostname', () => POLICY],
    ];
    const times = new Map<string, number[]>(policies.map(([k]) => [k, []]));
    const settle = () => new Promise((r) => setTimeout(r, 1_200)); // refill and recycling done
    try {
      // Warm up: the pool, the host table, forwarding, the DNS forwarder, the name cache.
      for (const [, p] of policies) m.release(await m.acquire(p()));
      for (let round = 0; round < 5; round++) {
        for (const [name, p] of policies) {
          await settle();
          const policy = p();
          const t0 = performance.now();
          const net = await m.acquire(policy);
          times.get(name)!.push(performance.now() - t0);
          m.release(net);
        }
      }
    } finally {
      await m.drain();
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const summary = Object.fromEntries([...times].map(([k, xs]) => [k, Math.round(median(xs))]));
    console.log('acquire median ms (pooled):', JSON.stringify(summary));
    expect(summary['deny-all']).toBeLessThan(20); // a spare, no command
    expect(summary['cidr, kept']).toBeLessThan(20); // a network that kept the policy, no command
    for (const k of ['internet, new', 'cidr, new', 'hostname']) expect(summary[k]).toBeLessThan(500);
    expect(readdirSync(stateDir)).toEqual([]);
  });
});
