import { callHook, callHookUntilOk } from '../hooks/hook-client.js';
import type { WorkloadSpec } from '../guest/workload-config.js';
import type { Engine, Template } from '../vmm/engine.js';
import type { MicroVm } from '../vmm/microvm.js';
import type { HooksConfig } from '../core/model.js';
import { BuildFailure } from './build-failure.js';
import { httpGet } from '../util/http-get.js';

export interface BakeOptions {
  /** Engine id of the bake VM (and of the template it becomes). */
  vmId: string;
  templateId: string;
  rootDisk: string;
  memoryMiB: number;
  vcpus: number;
  workload: WorkloadSpec;
  appPort: number;
  hooks?: HooksConfig;
  /** Ready timeout when no ready hook (with its own timeout) is enabled. Default DEFAULT_READY_TIMEOUT_S. */
  defaultReadyTimeoutS?: number;
  log: (line: string) => void;
}

/** How long the app may take to become ready when no ready hook (with its own timeout) is enabled. */
export const DEFAULT_READY_TIMEOUT_S = 300;
const DEFAULT_VALIDATE_TIMEOUT_S = 300;

function readyTimeoutS(o: BakeOptions): number {
  const hooks = o.hooks?.microvmImageHooks;
  if (hooks?.ready === 'ENABLED' && hooks.readyTimeoutInSeconds !== undefined)
    return hooks.readyTimeoutInSeconds;
  return o.defaultReadyTimeoutS ?? DEFAULT_READY_TIMEOUT_S;
}

/**
 * Boots the built root disk, starts the workload, waits until it is ready, and snapshots it as
 * template `templateId`; then, if enabled, runs the `validate` hook on a clone of that template.
 *
 * Ready means: the `ready` hook answered 200 (503 and no answer are retried) when it is enabled,
 * else the app port accepts connections; within the ready timeout, else READY_TIMEOUT with the
 * last console lines. On failure the bake VM and any template are removed.
 */
export async function bake(engine: Engine, o: BakeOptions): Promise<Template> {
  const timeoutS = readyTimeoutS(o);
  const started = Date.now();
  let vm: MicroVm | undefined;
  let template: Template | undefined;
  try {
    o.log(`booting the image (${o.memoryMiB} MiB, ${o.vcpus} vCPU)`);
    try {
      vm = await engine.boot({
        vmId: o.vmId,
        memoryMiB: o.memoryMiB,
        vcpus: o.vcpus,
        workload: o.workload,
        baseDisk: { path: o.rootDisk, format: 'raw' },
        bootTimeoutMs: timeoutS * 1000,
      });
    } catch (e) {
      throw new BuildFailure('READY_TIMEOUT', `the VM did not start: ${(e as Error).message}`);
    }
    const remainingMs = () => Math.max(1, timeoutS * 1000 - (Date.now() - started));
    const abort = () => vm?.process?.exitError();
    const readyHook = o.hooks?.microvmImageHooks?.ready === 'ENABLED';
    if (readyHook) {
      const port = o.hooks!.port!;
      o.log(`waiting for the ready hook on port ${port} (up to ${timeoutS} s)`);
      const at = await vm.tcpEndpoint(port);
      const r = await callHookUntilOk(at.host, at.port, 'ready', {}, remainingMs(), { abort });
      if (!r.ok) {
        const tail = await vm.consoleTail(15);
        if (r.status !== 0 && r.status !== 503) {
          throw new BuildFailure(
            'READY_HOOK_FAILED',
            `the ready hook answered ${r.status}: ${r.body.slice(0, 300)}\nLast console lines:\n${tail}`,
          );
        }
        throw new BuildFailure(
          'READY_TIMEOUT',
          `the ready hook did not answer 200 within ${timeoutS} s (last: ${r.status || r.error}). Last console lines:\n${tail}`,
        );
      }
    } else {
      o.log(`waiting for port ${o.appPort} to accept connections (up to ${timeoutS} s)`);
      let at;
      try {
        at = await vm.waitForPort(o.appPort, remainingMs());
      } catch {
        throw new BuildFailure(
          'READY_TIMEOUT',
          `port ${o.appPort} did not accept connections within ${timeoutS} s. Last console lines:\n${await vm.consoleTail(15)}`,
        );
      }
      // One request before the snapshot, so that what an app does lazily on its first request
      // (imports, route compilation, caches) is already done in every microVM launched from it.
      const warm = await warmUp(at.host, at.port, Math.min(30_000, remainingMs()));
      o.log(warm);
    }
    o.log(`ready after ${((Date.now() - started) / 1000).toFixed(1)} s; snapshotting memory and disk`);
    try {
      template = await engine.createTemplate(vm, o.templateId);
      vm = undefined;
    } catch (e) {
      throw new BuildFailure('SNAPSHOT_FAILED', `snapshot failed: ${(e as Error).message}`);
    }
    if (o.hooks?.microvmImageHooks?.validate === 'ENABLED') await validate(engine, template, o);
    return template;
  } catch (e) {
    if (vm) await engine.destroy(vm.id).catch(() => undefined);
    if (template) await engine.deleteTemplate(template.id).catch(() => undefined);
    throw e;
  }
}

async function validate(engine: Engine, template: Template, o: BakeOptions): Promise<void> {
  const timeoutS = o.hooks?.microvmImageHooks?.validateTimeoutInSeconds ?? DEFAULT_VALIDATE_TIMEOUT_S;
  const id = `${o.vmId}-validate`;
  o.log(`running the validate hook on a microVM restored from the snapshot (up to ${timeoutS} s)`);
  const clone = await engine.clone(template, { vmId: id });
  try {
    const at = await clone.tcpEndpoint(o.hooks!.port!);
    const r = await callHook(at.host, at.port, 'validate', {}, timeoutS * 1000);
    if (r.status !== 200) {
      throw new BuildFailure(
        'VALIDATE_HOOK_FAILED',
        `the validate hook answered ${r.status || r.error}${r.body ? `: ${r.body.slice(0, 300)}` : ''}. Last console lines:\n${await clone.consoleTail(15)}`,
      );
    }
    o.log('validate hook passed');
  } finally {
    await engine.destroy(id).catch(() => undefined);
  }
}

/** GET / on the app port; any HTTP answer will do (an app that is not HTTP is snapshotted as it is). */
async function warmUp(host: string, port: number, timeoutMs: number): Promise<string> {
  try {
    const r = await httpGet(`http://${host}:${port}/`, timeoutMs);
    return `warm-up request GET / answered ${r.status}`;
  } catch (e) {
    return `warm-up request GET / got no HTTP answer (${(e as Error).message}); snapshotting anyway`;
  }
}
