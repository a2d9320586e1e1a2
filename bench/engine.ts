/**
 * Engine benchmark: for a 512 MiB guest running a Python HTTP app, repeated runs of
 *   cold boot -> first HTTP reply, clone -> first reply, suspend, resume -> first reply,
 * and host memory per idle VM. Ends with one JSON line.
 *
 *   npm run bench -- engine [--boots 3] [--clones 10] [--cycles 10] [--idle-vms 5]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { DataDir } from '../src/config/data-dir.js';
import { setupHost } from '../src/setup/setup.js';
import { Engine } from '../src/vmm/engine.js';
import type { MicroVm } from '../src/vmm/microvm.js';
import { percentile, round, summary } from './stats.js';
import { COUNTER_APP, firstReply } from './counter-app.js';

async function memoryOf(pid: number): Promise<{ rssMiB: number; pssMiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (text: string, key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssMiB: kb(status, 'VmRSS') / 1024, pssMiB: kb(rollup, 'Pss') / 1024 };
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      boots: { type: 'string', default: '3' },
      clones: { type: 'string', default: '10' },
      cycles: { type: 'string', default: '10' },
      'idle-vms': { type: 'string', default: '5' },
      'data-dir': { type: 'string' },
    },
  });
  const dataDir = values['data-dir'] ? new DataDir(values['data-dir']) : DataDir.fromEnv();
  await setupHost(dataDir);
  const engine = await Engine.open({ dataDir });
  const say = (s: string) => process.stdout.write(s + '\n');
  const ids: string[] = [];
  const id = (p: string) => {
    const v = `bench-${p}-${ids.length}`;
    ids.push(v);
    return v;
  };
  try {
    await engine.deleteTemplate('bench-engine');
    const coldMs: number[] = [];
    let templateSource: MicroVm | undefined;
    for (let i = 0; i < Number(values.boots); i++) {
      const t = performance.now();
      const vm = await engine.boot({ vmId: id('boot'), workload: { argv: ['python3', '-c', COUNTER_APP] } });
      // Measured to the first HTTP reply, like the other figures: poll until the app answers.
      for (;;) {
        try {
          await firstReply(vm);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      coldMs.push(performance.now() - t);
      if (!templateSource) templateSource = vm;
      else await engine.destroy(vm.id);
    }
    say(summary('cold boot -> first reply', coldMs));
    const template = await engine.createTemplate(templateSource!, 'bench-engine');

    const cloneMs: number[] = [];
    for (let i = 0; i < Number(values.clones); i++) {
      const t = performance.now();
      const vm = await engine.clone(template, { vmId: id('clone') });
      await firstReply(vm);
      cloneMs.push(performance.now() - t);
      await engine.destroy(vm.id);
    }
    say(summary('clone -> first reply', cloneMs));

    const suspendMs: number[] = [];
    const resumeMs: number[] = [];
    const cycler = await engine.clone(template, { vmId: id('cycle') });
    await firstReply(cycler);
    for (let i = 0; i < Number(values.cycles); i++) {
      let t = performance.now();
      await engine.suspend(cycler);
      suspendMs.push(performance.now() - t);
      t = performance.now();
      await engine.resume(cycler.id);
      await firstReply(cycler);
      resumeMs.push(performance.now() - t);
    }
    await engine.destroy(cycler.id);
    say(summary('suspend', suspendMs));
    say(summary('resume -> first reply', resumeMs));

    const idle: MicroVm[] = [];
    for (let i = 0; i < Number(values['idle-vms']); i++) {
      const vm = await engine.clone(template, { vmId: id('idle') });
      await firstReply(vm);
      idle.push(vm);
    }
    await new Promise((r) => setTimeout(r, 5_000)); // let them settle into idle
    const mem = await Promise.all(idle.map((vm) => memoryOf(vm.process!.pid)));
    const rss = mem.map((m) => m.rssMiB);
    const pss = mem.map((m) => m.pssMiB);
    say(summary('idle VM host RSS', rss, 'MiB'));
    say(summary('idle VM host PSS', pss, 'MiB'));
    for (const vm of idle) await engine.destroy(vm.id);

    const result = {
      cold_boot_p50_ms: Math.round(percentile(coldMs, 50)),
      clone_p50_ms: Math.round(percentile(cloneMs, 50)),
      suspend_p50_ms: Math.round(percentile(suspendMs, 50)),
      resume_p50_ms: Math.round(percentile(resumeMs, 50)),
      idle_rss_mib: round(percentile(rss, 50)),
      idle_pss_mib: round(percentile(pss, 50)),
      cold_boot_over_clone: round(percentile(coldMs, 50) / percentile(cloneMs, 50)),
      accel: template.manifest.machine.accel,
      guest_memory_mib: template.manifest.machine.memoryMiB,
    };
    say(JSON.stringify(result));
  } finally {
    for (const v of ids) await engine.destroy(v).catch(() => undefined);
    await engine.deleteTemplate('bench-engine').catch(() => undefined);
    await engine.close();
  }
}
