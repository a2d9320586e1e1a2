/**
 * Translation benchmark: how much guest code TCG translates for one launch, in blocks (QEMU's
 * `info jit` TB count), and the vCPU time it took. Block counts depend on the guest's code paths,
 * not on how fast the host is that day, so they compare across runs and hosts where CPU seconds do
 * not. For clones of a counter-app template (a 512 MiB Python HTTP app), three phases:
 *   restore   clone -> RUNNING (device state, restore hygiene);
 *   reply     the first HTTP reply;
 *   settle    the next 5 s of an idle guest.
 * Ends with one JSON line.
 *
 *   npm run bench -- translation [--clones 5] [--settle-ms 5000]
 */
import { parseArgs } from 'node:util';
import { DataDir } from '../src/config/data-dir.js';
import { setupHost } from '../src/setup/setup.js';
import { Engine } from '../src/vmm/engine.js';
import { vcpuTimeNs } from '../src/vmm/guest-quiesce.js';
import { hmpOf } from '../src/vmm/launch.js';
import type { MicroVm } from '../src/vmm/microvm.js';
import { percentile, summary } from './stats.js';
import { COUNTER_APP, firstReply } from './counter-app.js';

const TEMPLATE = 'bench-translation';

/** Translated blocks and vCPU time (ms) of a VM's QEMU: so far, or over a phase. */
interface Sample {
  blocks: number;
  vcpuMs: number;
}

async function sample(vm: MicroVm): Promise<Sample> {
  const jit = await hmpOf(vm)('info jit');
  const blocks = Number(/TB count\s+(\d+)/.exec(jit)?.[1]);
  if (!Number.isFinite(blocks)) throw new Error(`unexpected 'info jit' output: ${jit.slice(0, 200)}`);
  return { blocks, vcpuMs: Number(await vcpuTimeNs(vm.process!.pid)) / 1e6 };
}

function delta(from: Sample, to: Sample): Sample {
  return { blocks: to.blocks - from.blocks, vcpuMs: to.vcpuMs - from.vcpuMs };
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      clones: { type: 'string', default: '5' },
      'settle-ms': { type: 'string', default: '5000' },
      'data-dir': { type: 'string' },
    },
  });
  const dataDir = values['data-dir'] ? new DataDir(values['data-dir']) : DataDir.fromEnv();
  await setupHost(dataDir);
  const engine = await Engine.open({ dataDir });
  const say = (s: string) => process.stdout.write(s + '\n');
  const phases = ['restore', 'reply', 'settle', 'total'] as const;
  type Phase = (typeof phases)[number];
  const blocks = Object.fromEntries(phases.map((k) => [k, [] as number[]])) as Record<Phase, number[]>;
  const vcpuMs = Object.fromEntries(phases.map((k) => [k, [] as number[]])) as Record<Phase, number[]>;
  const ids: string[] = [];
  try {
    await engine.deleteTemplate(TEMPLATE);
    const boot = await engine.boot({
      vmId: 'bench-translation-boot',
      workload: { argv: ['python3', '-c', COUNTER_APP] },
      waitForPort: 8080,
    });
    ids.push(boot.id);
    await firstReply(boot);
    const template = await engine.createTemplate(boot, TEMPLATE);
    if (template.manifest.machine.accel !== 'tcg')
      throw new Error('this benchmark measures TCG: KVM translates nothing');
    for (let i = 0; i < Number(values.clones); i++) {
      const id = `bench-translation-${i}`;
      ids.push(id);
      const vm = await engine.clone(template, { vmId: id });
      const a = await sample(vm);
      await firstReply(vm);
      const b = await sample(vm);
      await new Promise((r) => setTimeout(r, Number(values['settle-ms'])));
      const c = await sample(vm);
      const got: Record<Phase, Sample> = { restore: a, reply: delta(a, b), settle: delta(b, c), total: c };
      for (const k of phases) {
        blocks[k].push(got[k].blocks);
        vcpuMs[k].push(got[k].vcpuMs);
      }
      await engine.destroy(id);
    }
    for (const k of phases) {
      say(summary(`${k}: blocks translated`, blocks[k], 'blocks'));
      say(summary(`${k}: vCPU time`, vcpuMs[k]));
    }
    const total = percentile(blocks.total, 50);
    const result = {
      restore_blocks_p50: percentile(blocks.restore, 50),
      reply_blocks_p50: percentile(blocks.reply, 50),
      settle_blocks_p50: percentile(blocks.settle, 50),
      total_blocks_p50: total,
      total_vcpu_ms_p50: Math.round(percentile(vcpuMs.total, 50)),
      vcpu_us_per_block: Math.round((percentile(vcpuMs.total, 50) * 1000) / total),
    };
    say(JSON.stringify(result));
  } finally {
    for (const id of ids) await engine.destroy(id).catch(() => undefined);
    await engine.deleteTemplate(TEMPLATE).catch(() => undefined);
    await engine.close();
  }
}
