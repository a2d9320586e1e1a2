/**
 * Isolation benchmark: what the jail and per-VM network rules cost at launch, and what is left
 * behind after many launches and a kill -9 of the process that made them.
 *
 *   npm run bench -- isolation [--rounds 12] [--per-round 5] [--launches 100] [--killed 5]
 *
 * 1. Launch latency, clone -> first HTTP reply, measured side by side in alternating rounds:
 *    "plain" = QEMU unjailed, no control group, a deny-all network from the pool;
 *    "jailed" = QEMU in hearth-jailer (own uid, namespaces, pivot_root) and its control group, with
 *    an egress policy (INTERNET_EGRESS plus an allow-list rule) on its network: the same policy for
 *    every launch, as for the VMs of one app (a released network keeps it for the next such VM);
 *    "jailed, new policy" = the same, but every launch has a policy no earlier one had (its rules
 *    are written while QEMU starts). What the jail and rules add (`jail_and_rules_add_ms`,
 *    `jail_and_new_rules_add_ms`) is the median over rounds of the mode's median minus plain's in
 *    the same round: short rounds side by side, so drift of a shared host cancels out.
 * 2. Leftovers: `--launches` launch/destroy cycles (every other one with a new policy), then
 *    `--killed` VMs left running by a child process that is killed with SIGKILL; a new engine opens
 *    (cleanup after the crash), destroys them as the control plane would, and closes.
 *    Then every network device, namespace, nftables table or set, QEMU/jailer process and control
 *    group that did not exist before the benchmark counts as leaked.
 * Ends with one JSON line.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DataDir } from '../src/config/data-dir.js';
import type { EgressPolicy } from '../src/net/policy.js';
import { setupHost } from '../src/setup/setup.js';
import { run } from '../src/util/exec.js';
import { Engine, type Template } from '../src/vmm/engine.js';
import { percentile, summary } from './stats.js';
import { COUNTER_APP, firstReply } from './counter-app.js';

const TEMPLATE = 'bench-isolation';
/** What a jailed launch's network allows (exercises the rule path, reaches nothing here). */
const POLICY: EgressPolicy = {
  internet: true,
  allow: [{ cidr: '10.99.0.0/24', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] }],
};

let newPort = 20_000;
/** POLICY with one more allow rule, on a port no earlier launch used. */
function newPolicy(): EgressPolicy {
  const port = newPort++;
  return {
    ...POLICY,
    allow: [...POLICY.allow, { cidr: '10.98.0.0/24', protocol: 'tcp', ports: [{ from: port, to: port }] }],
  };
}

interface Mode {
  name: 'plain' | 'jailed' | 'jailed-new-policy';
  engine: { jail: boolean; cgroups: boolean };
  egress?: () => EgressPolicy;
}
const MODES: Mode[] = [
  { name: 'plain', engine: { jail: false, cgroups: false } },
  { name: 'jailed', engine: { jail: true, cgroups: true }, egress: () => POLICY },
  { name: 'jailed-new-policy', engine: { jail: true, cgroups: true }, egress: newPolicy },
];

/** The template every launch clones: made once by a cold boot, then kept. */
async function ensureTemplate(dataDir: DataDir): Promise<void> {
  const engine = await Engine.open({ dataDir });
  try {
    await engine.template(TEMPLATE).catch(async () => {
      await engine.deleteTemplate(TEMPLATE);
      await engine.destroy(`${TEMPLATE}-boot`);
      const vm = await engine.boot({
        vmId: `${TEMPLATE}-boot`,
        workload: { argv: ['python3', '-c', COUNTER_APP] },
        waitForPort: 8080,
      });
      await engine.createTemplate(vm, TEMPLATE);
    });
  } finally {
    await engine.close();
  }
}

/** Launch latencies (clone -> first reply) of `n` launches in one mode; each VM is destroyed after. */
async function launchRound(dataDir: DataDir, mode: Mode, n: number, round: number): Promise<number[]> {
  const engine = await Engine.open({ dataDir, ...mode.engine });
  const ms: number[] = [];
  try {
    const template: Template = await engine.warmTemplate(TEMPLATE);
    // One unmeasured launch: the sealed RAM copy and the network pool are made once per engine.
    await engine.destroy(
      (
        await engine.clone(template, {
          vmId: `bench-iso-warm-${round}`,
          ...(mode.egress ? { egress: mode.egress() } : {}),
        })
      ).id,
    );
    for (let i = 0; i < n; i++) {
      const id = `bench-iso-${mode.name}-${round}-${i}`;
      const t = performance.now();
      const vm = await engine.clone(template, {
        vmId: id,
        ...(mode.egress ? { egress: mode.egress() } : {}),
      });
      await firstReply(vm);
      ms.push(performance.now() - t);
      await engine.destroy(id);
    }
  } finally {
    await engine.close();
  }
  return ms;
}

/** Everything VM-related on the host that could leak, as sets of names. */
async function hostState(): Promise<Record<string, Set<string>>> {
  const links = (await run('ip', ['-o', 'link', 'show'])).stdout
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n);
  const netns = await readdir('/run/netns').catch(() => [] as string[]);
  const nft = (await run('nft', ['list', 'ruleset'], { allowFailure: true })).stdout
    .split('\n')
    .map((l) => /^\s*(table|set|chain|map) (.+?) \{/.exec(l)?.slice(1).join(' '))
    .filter((n): n is string => !!n);
  const procs: string[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const argv0 = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0')[0] ?? '';
    if (/qemu-system|hearth-jailer|hearth-seal/.test(argv0)) procs.push(`${d} ${argv0}`);
  }
  const cgroups: string[] = [];
  for (const root of ['/sys/fs/cgroup/memory', '/sys/fs/cgroup']) {
    for (const d of await readdir(root).catch(() => [] as string[])) {
      if (!d.startsWith('hearth-')) continue;
      for (const g of await readdir(join(root, d), { withFileTypes: true }).catch(() => []))
        if (g.isDirectory()) cgroups.push(`${root}/${d}/${g.name}`);
    }
  }
  return {
    netdevs: new Set(links),
    netns: new Set(netns),
    rules: new Set(nft),
    procs: new Set(procs),
    cgroups: new Set(cgroups),
  };
}

function leaked(before: Set<string>, after: Set<string>): string[] {
  return [...after].filter((x) => !before.has(x));
}

/** Starts a child that launches `n` VMs and waits; resolves once they run, with the child. */
async function startDoomed(dataDir: DataDir, n: number, prefix: string) {
  const child = spawn(
    process.execPath,
    [
      ...['--import', 'tsx', join(import.meta.dirname, 'isolation-child.ts')],
      ...[dataDir.root, TEMPLATE, String(n), prefix],
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('running\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`the child exited (${code}) before its VMs ran`)));
  });
  return child;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string', default: '12' },
      'per-round': { type: 'string', default: '5' },
      launches: { type: 'string', default: '100' },
      killed: { type: 'string', default: '5' },
      'data-dir': { type: 'string' },
    },
  });
  const dataDir = values['data-dir'] ? new DataDir(values['data-dir']) : DataDir.fromEnv();
  const say = (s: string) => process.stdout.write(s + '\n');
  await setupHost(dataDir);
  await ensureTemplate(dataDir);
  const before = await hostState();

  const latency: Record<Mode['name'], number[]> = { plain: [], jailed: [], 'jailed-new-policy': [] };
  /** Per round, each mode's median minus plain's: rounds are minutes apart, modes of a round not. */
  const added: Record<Mode['name'], number[]> = { plain: [], jailed: [], 'jailed-new-policy': [] };
  for (let r = 0; r < Number(values.rounds); r++) {
    const round: Partial<Record<Mode['name'], number>> = {};
    // Rotate which mode goes first, so drift on a noisy host hits all alike.
    for (const mode of [...MODES.slice(r % MODES.length), ...MODES.slice(0, r % MODES.length)]) {
      const ms = await launchRound(dataDir, mode, Number(values['per-round']), r);
      latency[mode.name].push(...ms);
      round[mode.name] = percentile(ms, 50);
    }
    for (const m of MODES) added[m.name].push(round[m.name]! - round.plain!);
  }
  say(summary('launch, plain', latency.plain));
  say(summary('launch, jailed + rules', latency.jailed));
  say(summary('launch, jailed + new rules', latency['jailed-new-policy']));
  say(summary('added by jail + rules, per round', added.jailed));
  say(summary('added by jail + new rules, per round', added['jailed-new-policy']));

  // Leftovers: many launches, then a crash with VMs running, then the next engine's cleanup.
  const engine = await Engine.open({ dataDir });
  try {
    const template = await engine.template(TEMPLATE);
    for (let i = 0; i < Number(values.launches); i++) {
      const vm = await engine.clone(template, {
        vmId: `bench-iso-many-${i}`,
        egress: i % 2 ? POLICY : newPolicy(),
      });
      await firstReply(vm);
      await engine.destroy(vm.id);
    }
  } finally {
    await engine.close();
  }
  say(`${values.launches} launches done; starting ${values.killed} VMs in a child, then kill -9`);
  const prefix = `bench-iso-doomed-${Date.now().toString(36)}`;
  const child = await startDoomed(dataDir, Number(values.killed), prefix);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  // The next engine cleans up after the crash; the VMs' files stay for the control plane, which
  // terminates them (here: destroyed, as it would).
  const next = await Engine.open({ dataDir });
  for (let i = 0; i < Number(values.killed); i++) await next.destroy(`${prefix}-${i}`);
  await next.close();
  const after = await hostState();
  const leaks = Object.fromEntries(Object.keys(before).map((k) => [k, leaked(before[k]!, after[k]!)]));
  for (const [k, v] of Object.entries(leaks)) if (v.length) say(`leaked ${k}: ${v.join(', ')}`);

  const p50 = (v: number[]) => Math.round(percentile(v, 50));
  say(
    JSON.stringify({
      launch_p50_ms_plain: p50(latency.plain),
      launch_p50_ms_jailed: p50(latency.jailed),
      jail_and_rules_add_ms: p50(added.jailed),
      launch_p50_ms_jailed_new_policy: p50(latency['jailed-new-policy']),
      jail_and_new_rules_add_ms: p50(added['jailed-new-policy']),
      leaked_netdevs: leaks.netdevs!.length + leaks.netns!.length,
      leaked_rules: leaks.rules!.length,
      leaked_procs: leaks.procs!.length,
      leaked_cgroups: leaks.cgroups!.length,
    }),
  );
}
