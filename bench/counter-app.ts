/** The counter app (tests/fixtures/counter-app.py) that the engine-level benchmarks boot and clone. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { httpGet } from '../src/util/http-get.js';
import type { MicroVm } from '../src/vmm/microvm.js';

/** The app's source, run as `python3 -c COUNTER_APP`; it serves HTTP on port 8080. */
export const COUNTER_APP = await readFile(
  join(import.meta.dirname, '..', 'tests', 'fixtures', 'counter-app.py'),
  'utf8',
);

/** One GET / to the app in `vm`; throws unless it answers 200. */
export async function firstReply(vm: MicroVm): Promise<void> {
  const at = await vm.tcpEndpoint(8080);
  const res = await httpGet(`http://${at.host}:${at.port}/`);
  if (res.status !== 200) throw new Error(`reply ${res.status}`);
}
