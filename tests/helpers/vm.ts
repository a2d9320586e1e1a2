import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Engine } from '../../src/vmm/engine.js';
import { httpGet } from '../../src/util/http-get.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import type { NetworkManager, TapNetwork } from '../../src/net/vm-network.js';
import { testDataDir } from './env.js';

export function openEngine(): Promise<Engine> {
  return Engine.open({ dataDir: testDataDir() });
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

/** The host URL of `path` on guest port `port` (the engine's endpoint for it: forwarded either way). */
export async function vmUrl(vm: MicroVm, port = 8080, path = '/'): Promise<string> {
  if (!vm.hostAddress) throw new Error(`VM ${vm.id} is not running (${vm.state})`);
  const at = await vm.tcpEndpoint(port);
  return `http://${at.host}:${at.port}${path}`;
}

/** GET a JSON path from the VM's port 8080, through the engine's endpoint for it. */
export async function getJson<T = Record<string, unknown>>(vm: MicroVm, path = '/', port = 8080): Promise<T> {
  const res = await httpGet(await vmUrl(vm, port, path));
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
  return JSON.parse(res.body) as T;
}

/** Runs a shell command in the guest through the agent and returns stdout (throws on non-zero exit). */
export async function sh(vm: MicroVm, script: string): Promise<string> {
  const agent = await vm.agent();
  const r = await agent.exec('/bin/sh', ['-c', script], { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`guest command failed (${r.exitCode}): ${r.stderr.toString()}`);
  return r.stdout.toString();
}

export interface Leftovers {
  qemuPids: number[];
  /** Networks held by VMs (the engine's ready spares are not leftovers). */
  networksInUse: number;
  runDirs: string[];
  /** Control groups of this data directory not belonging to the excepted VMs. */
  cgroups: string[];
}

/** What is held on the host for VMs of the test data directory: processes, networks, socket dirs. */
export async function leftovers(engine: Engine, exceptVmIds: string[] = []): Promise<Leftovers> {
  const dataDir = testDataDir();
  const qemuPids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const argv = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!argv[0]?.endsWith('qemu-system-x86_64')) continue;
    if (!argv.some((a) => a.includes(dataDir.vmsDir + '/'))) continue;
    if (exceptVmIds.some((id) => argv.some((a) => a.includes(`/vms/${id}/`)))) continue;
    qemuPids.push(Number(d));
  }
  const runDirs: string[] = [];
  for (const id of await readdir(dataDir.vmsDir).catch(() => [] as string[])) {
    if (exceptVmIds.includes(id)) continue;
    const entries = await readdir(join(dataDir.vmsDir, id)).catch(() => [] as string[]);
    if (entries.includes('run')) runDirs.push(id);
  }
  // A QEMU's control group is removed right after the process exits (give that a moment).
  let cgroups: string[] = [];
  for (let i = 0; i < 40; i++) {
    cgroups = [...((await engine.ctx.cgroups?.names()) ?? [])].filter(
      (g) => !exceptVmIds.some((id) => g.startsWith(`${id.slice(0, 55)}-`)),
    );
    if (cgroups.length === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { qemuPids, networksInUse: engine.ctx.network.activeCount - exceptVmIds.length, runDirs, cgroups };
}

export const NOTHING_LEFT: Leftovers = { qemuPids: [], networksInUse: 0, runDirs: [], cgroups: [] };

/** Network namespaces this data directory still owns (after an engine closed: must be none). */
export async function recordedNetworks(): Promise<string[]> {
  return readdir(join(testDataDir().root, 'run', 'net')).catch(() => [] as string[]);
}

/** The VM's namespace network (these tests run as root, with network namespaces). */
export function tapNet(vm: MicroVm): TapNetwork {
  const n = vm.network;
  if (!n || n.kind === 'user') throw new Error(`VM ${vm.id} has no namespace network`);
  return n;
}

/** The engine's namespace network manager (root mode). */
export function networkManager(engine: Engine): NetworkManager {
  if (engine.ctx.network.mode !== 'namespaces') throw new Error('the engine does not use network namespaces');
  return engine.ctx.network as NetworkManager;
}

/** Tries a TCP connection from inside the guest (3 s timeout); resolves to "connected" or the error's class name. */
export async function guestConnect(vm: MicroVm, host: string, port: number): Promise<string> {
  const script = `
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print('connected')
except Exception as e:
    print(type(e).__name__)
`;
  const r = await (
    await vm.agent()
  ).exec('/usr/bin/python3', ['-c', script, host, String(port)], {
    timeoutMs: 20_000,
  });
  return r.stdout.toString().trim();
}
