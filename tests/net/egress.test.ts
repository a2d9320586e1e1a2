import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Engine } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import type { EgressPolicy } from '../../src/net/policy.js';
import { GUEST_GATEWAY } from '../../src/net/vm-network.js';
import { startFakeDns, type FakeDns } from '../../src/net/testing.js';
import { run } from '../../src/util/exec.js';
import { waitForTcp } from '../../src/util/net-wait.js';
import { networkManager, openEngine, recordedNetworks, tapNet, uniqueId } from '../helpers/vm.js';

/**
 * A fake internet and a private network, linked to the host's namespace by veths:
 *   hearth-test-inet  203.0.113.10/24 (a documentation range, public as far as Hearth is concerned):
 *                     HTTP on port 80
 *   hearth-test-priv  10.77.0.10/24 and 10.77.0.11/24: TCP services on ports 5432 and 6000
 * and a dummy host interface (a veth pair where the kernel has no dummy driver) with 198.51.100.7/32:
 * one more address of the host itself.
 */
const INET = { ns: 'hearth-test-inet', veth: 'ht-inet', host: '203.0.113.1/24', addrs: ['203.0.113.10/24'] };
const PRIV = {
  ns: 'hearth-test-priv',
  veth: 'ht-priv',
  host: '10.77.0.1/24',
  addrs: ['10.77.0.10/24', '10.77.0.11/24'],
};
const DUMMY = { link: 'ht-dummy', addr: '198.51.100.7' };
const PUBLIC_IP = '203.0.113.10';
const DB_IP = '10.77.0.10';
const OTHER_IP = '10.77.0.11';

const PROBE = `
import json, socket, sys, urllib.request
out = []
for p in json.loads(sys.argv[1]):
    try:
        if p['kind'] == 'connect':
            socket.create_connection((p['host'], p['port']), timeout=3).close()
            r = 'connected'
        elif p['kind'] == 'resolve':
            r = socket.gethostbyname(p['name'])
        else:
            r = urllib.request.urlopen(p['url'], timeout=3).read().decode().strip()
    except Exception as e:
        r = type(e).__name__
    out.append(r)
print(json.dumps(out))
`;

type Probe =
  | { kind: 'connect'; host: string; port: number }
  | { kind: 'resolve'; name: string }
  | { kind: 'get'; url: string };
const connect = (host: string, port: number): Probe => ({ kind: 'connect', host, port });
const resolve = (name: string): Probe => ({ kind: 'resolve', name });
const get = (url: string): Probe => ({ kind: 'get', url });

/** Runs the probes in the guest, in order; each result is 'connected', an address, a body, or the error's name. */
async function probe(vm: MicroVm, probes: Probe[]): Promise<string[]> {
  const agent = await vm.agent();
  const r = await agent.exec('/usr/bin/python3', ['-c', PROBE, JSON.stringify(probes)], {
    timeoutMs: 120_000,
  });
  const text = r.stdout.toString().trim();
  if (r.exitCode !== 0) throw new Error(`probe failed: ${r.stderr.toString()}`);
  return JSON.parse(text) as string[];
}

/** A connection that failed: refused, timed out, unreachable, or a name that did not resolve. */
const BLOCKED = /^(TimeoutError|ConnectionRefusedError|OSError|gaierror|URLError)$/;

async function sh(script: string): Promise<void> {
  await run('sh', ['-ec', script]);
}

async function makeNamespace(n: typeof INET): Promise<void> {
  await sh(`
ip netns del ${n.ns} 2>/dev/null || true
ip link del ${n.veth} 2>/dev/null || true
ip netns add ${n.ns}
ip link add ${n.veth} type veth peer name eth0 netns ${n.ns}
ip addr add ${n.host} dev ${n.veth}
ip link set ${n.veth} up
ip -n ${n.ns} link set lo up
${n.addrs.map((a) => `ip -n ${n.ns} addr add ${a} dev eth0`).join('\n')}
ip -n ${n.ns} link set eth0 up
ip -n ${n.ns} route add default via ${n.host.split('/')[0]}
`);
}

function serveIn(ns: string, code: string): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: 'ignore' });
  child.on('error', () => undefined);
  return child;
}

describe('per-VM egress (real guests, a fake internet)', () => {
  let engine: Engine;
  let dns: FakeDns;
  let hostServer: Server;
  let hostPort: number;
  const servers: ChildProcess[] = [];
  const seenSlots = new Set<number>();
  let forwardBefore: string;
  let inet: MicroVm;
  let allowCidr: MicroVm;
  let allowName: MicroVm;

  const clone = async (prefix: string, egress: EgressPolicy) => {
    const vm = await engine.clone(await engine.template(inject('counterTemplate')), {
      vmId: uniqueId(prefix),
      egress,
    });
    seenSlots.add(vm.network!.slot);
    return vm;
  };

  beforeAll(async () => {
    // A Hearth that died with forwarding turned on left its marker: the original state was off.
    forwardBefore = existsSync('/run/hearth/ip_forward-was-0')
      ? '0'
      : readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    await makeNamespace(INET);
    await makeNamespace(PRIV);
    await sh(`
ip link del ${DUMMY.link} 2>/dev/null || true
ip link add ${DUMMY.link} type dummy 2>/dev/null || { ip link add ${DUMMY.link} type veth peer name ${DUMMY.link}-p; ip link set ${DUMMY.link}-p up; }
ip addr add ${DUMMY.addr}/32 dev ${DUMMY.link}
ip link set ${DUMMY.link} up
`);
    servers.push(
      serveIn(INET.ns, `require('http').createServer((q, s) => s.end('public hello\\n')).listen(80)`),
    );
    servers.push(
      serveIn(
        PRIV.ns,
        `for (const p of [5432, 6000]) require('net').createServer((s) => { s.on('error', () => {}); s.end('private ' + p + '\\n'); }).listen(p)`,
      ),
    );
    await waitForTcp(PUBLIC_IP, 80, 10_000);
    await waitForTcp(DB_IP, 5432, 10_000);
    await waitForTcp(OTHER_IP, 6000, 10_000);
    // The "API/gateway" of the host: listening on every address.
    hostServer = createServer((s) => s.end('host secret\n'));
    await new Promise<void>((r) => hostServer.listen(0, '0.0.0.0', r));
    hostPort = (hostServer.address() as { port: number }).port;
    dns = await startFakeDns({
      'public.test': [PUBLIC_IP],
      'db.internal': [DB_IP],
      'other.internal': [OTHER_IP],
      'api.svc.internal': [OTHER_IP],
      'svc.internal': [OTHER_IP],
    });
    process.env.HEARTH_DNS_UPSTREAM = `127.0.0.1:${dns.port}`;
    engine = await openEngine();
    [inet, allowCidr, allowName] = await Promise.all([
      clone('eg-inet', { internet: true, allow: [] }),
      clone('eg-cidr', {
        internet: false,
        allow: [{ cidr: `${DB_IP}/32`, protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] }],
      }),
      clone('eg-name', {
        internet: false,
        allow: [
          { hostname: 'db.internal', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] },
          { hostname: '*.svc.internal', protocol: 'tcp', ports: [{ from: 6000, to: 6000 }] },
        ],
      }),
    ]);
  });

  afterAll(async () => {
    delete process.env.HEARTH_DNS_UPSTREAM;
    await engine?.close();
    hostServer?.close();
    await dns?.close();
    for (const s of servers) s.kill('SIGKILL');
    await sh(`
ip netns del ${INET.ns} 2>/dev/null || true
ip netns del ${PRIV.ns} 2>/dev/null || true
ip link del ${INET.veth} 2>/dev/null || true
ip link del ${PRIV.veth} 2>/dev/null || true
ip link del ${DUMMY.link} 2>/dev/null || true
`);
  });

  /** What a VM with internet egress may not reach, whatever it tries. */
  function forbiddenForInternet(other: MicroVm): Probe[] {
    // Every IPv4 address of the host but loopback and other VM links (the VM subnet is covered below).
    const hostAddrs = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.201.'))
      .map((a) => a!.address);
    expect(hostAddrs).toEqual(expect.arrayContaining([DUMMY.addr, INET.host.split('/')[0]]));
    return [
      connect(tapNet(inet).hostIp, hostPort), // the host's end of the VM's own link
      ...hostAddrs.map((a) => connect(a, hostPort)), // the dummy one, the "internet" link's, the main one
      connect(GUEST_GATEWAY, hostPort),
      connect(tapNet(other).endpointIp, 8080), // another VM
      connect(tapNet(other).hostIp, hostPort),
      connect('169.254.169.254', 80), // metadata
      connect(DB_IP, 5432), // private ranges
      connect('fe80::1%eth0', 80), // IPv6 link-local
    ];
  }

  it('internet: reaches a public address and resolves a public name through Hearth', async () => {
    const r = await probe(inet, [
      get(`http://${PUBLIC_IP}/`),
      resolve('public.test'),
      get('http://public.test/'),
    ]);
    expect(r).toEqual(['public hello', PUBLIC_IP, 'public hello']);
    expect(dns.asked).toContain('public.test');
  });

  it('internet: never the host (any address), other VMs, metadata, private ranges or IPv6 link-local', async () => {
    const probes = forbiddenForInternet(allowCidr);
    const r = await probe(inet, probes);
    r.forEach((result, i) =>
      expect(`${JSON.stringify(probes[i])} -> ${result}`).toMatch(
        / -> (TimeoutError|ConnectionRefusedError|OSError|gaierror)$/,
      ),
    );
  });

  it('internet: the namespace has no IPv6 at all', async () => {
    const r = await run('ip', ['-n', tapNet(inet).netnsName, '-6', 'addr']);
    expect(r.stdout.trim()).toBe('');
  });

  it('cidr rule: the private service on the allowed port only, nothing else, no DNS', async () => {
    const r = await probe(allowCidr, [
      connect(DB_IP, 5432),
      connect(DB_IP, 6000),
      connect(OTHER_IP, 5432),
      connect(PUBLIC_IP, 80),
      connect(tapNet(inet).endpointIp, 8080),
      connect(tapNet(allowCidr).hostIp, hostPort),
      resolve('public.test'),
    ]);
    expect(r[0]).toBe('connected');
    for (const x of r.slice(1)) expect(x).toMatch(BLOCKED);
  });

  /**
   * The name VM: db.internal on 5432 and *.svc.internal on 6000 (api.svc.internal is 10.77.0.11).
   * `fresh`: nothing resolved in the guest yet, so the wildcard's address is not allowed until the
   * guest resolves a name under it (the forwarder snoops the answer); otherwise (after a resume)
   * both addresses are allowed before any lookup (re-applied at acquire).
   */
  async function hostnameRuleHolds(vm: MicroVm, fresh: boolean): Promise<void> {
    const allowed: [Probe, string][] = [
      [connect(DB_IP, 5432), 'connected'], // resolved by the host when the VM got its network
      ...(fresh ? [] : ([[connect(OTHER_IP, 6000), 'connected']] as [Probe, string][])),
      [resolve('db.internal'), DB_IP],
      [connect('db.internal', 5432), 'connected'],
      [resolve('api.svc.internal'), OTHER_IP],
      [connect('api.svc.internal', 6000), 'connected'],
      [connect(OTHER_IP, 6000), 'connected'],
    ];
    const blocked = [
      connect('db.internal', 6000),
      connect(OTHER_IP, 5432),
      resolve('other.internal'),
      resolve('public.test'),
      resolve('svc.internal'),
      connect(PUBLIC_IP, 80),
      connect(tapNet(vm).hostIp, hostPort),
    ];
    const r = await probe(vm, [
      ...(fresh ? [connect(OTHER_IP, 6000)] : []),
      ...allowed.map(([p]) => p),
      ...blocked,
    ]);
    if (fresh) expect(r.shift()).toMatch(BLOCKED); // before the guest resolved a name under *.svc.internal
    expect(r.slice(0, allowed.length)).toEqual(allowed.map(([, want]) => want));
    for (const [i, x] of r.slice(allowed.length).entries())
      expect(`${JSON.stringify(blocked[i])} -> ${x}`).toMatch(
        / -> (TimeoutError|ConnectionRefusedError|OSError|gaierror)$/,
      );
  }

  it('hostname rule: the allowed name resolves and connects on its port; other names refused, other addresses blocked', async () => {
    const before = dns.asked.length;
    await hostnameRuleHolds(allowName, true);
    // Refused names never reached the upstream.
    for (const name of ['other.internal', 'public.test', 'svc.internal'])
      expect(dns.asked.slice(before)).not.toContain(name);
  });

  it('the same rules hold after suspend and resume', async () => {
    await engine.suspend(inet);
    await engine.suspend(allowName);
    inet = await engine.resume(inet.id);
    allowName = await engine.resume(allowName.id);
    seenSlots.add(inet.network!.slot);
    seenSlots.add(allowName.network!.slot);
    // The new namespace's allow sets start with the names' addresses (host-resolved, or learnt before).
    const set = await run('ip', [
      'netns',
      'exec',
      tapNet(allowName).netnsName,
      'nft',
      'list',
      'set',
      'inet',
      'hearth_egress',
      'host_0',
    ]);
    expect(set.stdout).toContain(DB_IP);
    await hostnameRuleHolds(allowName, false);
    expect(await probe(inet, [get(`http://${PUBLIC_IP}/`), resolve('public.test')])).toEqual([
      'public hello',
      PUBLIC_IP,
    ]);
    const probes = forbiddenForInternet(allowName);
    const r = await probe(inet, probes);
    r.forEach((result, i) =>
      expect(`${JSON.stringify(probes[i])} -> ${result}`).toMatch(
        / -> (TimeoutError|ConnectionRefusedError|OSError|gaierror)$/,
      ),
    );
  });

  it('leaves no rules, sets, namespaces or links behind after destroy and close', async () => {
    const table = networkManager(engine).rootTable;
    for (const vm of [inet, allowCidr, allowName]) await engine.destroy(vm.id);
    await engine.close();
    expect(await recordedNetworks()).toEqual([]);
    const tables = (await run('nft', ['list', 'tables'])).stdout;
    expect(tables).not.toContain(table);
    const links = readdirSync('/sys/class/net');
    const namespaces = readdirSync('/run/netns');
    for (const slot of seenSlots) {
      expect(links).not.toContain(`hv-${slot}`);
      expect(namespaces).not.toContain(`hearth-${slot}`);
    }
    // With no VM link of any Hearth left, forwarding is back as it was and the guard table is gone.
    if (!links.some((l) => l.startsWith('hv-'))) {
      expect(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()).toBe(forwardBefore);
      expect(tables).not.toContain('hearth_forward_guard');
    }
  });
});
