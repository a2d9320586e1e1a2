import { basename } from 'node:path';
import type { TestProject } from 'vitest/node';
import { setupHost } from '../src/setup/setup.js';
import { sha256 } from '../src/util/hash.js';
import { Engine } from '../src/vmm/engine.js';
import { GUEST_GATEWAY_MAC } from '../src/net/vm-network.js';
import { httpGet } from '../src/util/http-get.js';
import { COUNTER_APP, COUNTER_PORT, TEMPLATE_REQUESTS, testDataDir } from './helpers/env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    counterTemplate: string;
  }
}

/**
 * Once per test run: set the host up (cached) and build the shared template the VM tests clone
 * (a cold boot of the counter app, ~10 s under TCG), so each test clones instead of booting.
 * The template is reused across runs while the app and the guest image are unchanged.
 */
export default async function setup(project: TestProject): Promise<void> {
  const dataDir = testDataDir();
  const artifacts = await setupHost(dataDir);
  // The gateway MAC is in the guest's neighbour cache, hence in the template.
  const templateId = `counter-${sha256(COUNTER_APP + basename(artifacts.initramfs) + artifacts.baseDisk.name + GUEST_GATEWAY_MAC).slice(0, 10)}`;
  project.provide('counterTemplate', templateId);
  const engine = await Engine.open({ dataDir });
  try {
    try {
      await engine.template(templateId);
      return;
    } catch {
      await engine.deleteTemplate(templateId);
    }
    await engine.destroy('tpl-counter');
    const vm = await engine.boot({
      vmId: 'tpl-counter',
      workload: { argv: ['python3', '-c', COUNTER_APP] },
      waitForPort: COUNTER_PORT,
    });
    // Serve a few requests first: clones must continue from this state (count 3), not from a fresh start.
    const at = await vm.tcpEndpoint(COUNTER_PORT);
    for (let i = 0; i < TEMPLATE_REQUESTS; i++) await httpGet(`http://${at.host}:${at.port}/`);
    await engine.createTemplate(vm, templateId);
  } finally {
    await engine.close();
  }
}
