/**
 * The process bench/isolation.ts kills: opens an engine on a data directory, launches N clones of
 * a template (jailed, with an egress policy), prints "running" and waits to be killed.
 *
 *   node --import tsx bench/isolation-child.ts <data-dir> <template-id> <n> <vm-id-prefix>
 */
import { DataDir } from '../src/config/data-dir.js';
import { Engine } from '../src/vmm/engine.js';

const [root, templateId, n, prefix] = process.argv.slice(2);
const engine = await Engine.open({ dataDir: new DataDir(root!) });
const template = await engine.template(templateId!);
await Promise.all(
  Array.from({ length: Number(n) }, (_, i) =>
    engine.clone(template, {
      vmId: `${prefix}-${i}`,
      egress: { internet: true, allow: [{ cidr: '10.99.0.0/24', protocol: 'tcp', ports: [] }] },
    }),
  ),
);
process.stdout.write('running\n');
setInterval(() => undefined, 60_000);
