import { DataDir } from '../src/config/data-dir.js';
import { Engine } from '../src/vmm/engine.js';
import { NetworkManager } from '../src/net/vm-network.js';
import { createOverlay } from '../src/vmm/disk.js';
const engine = await Engine.open({ dataDir: new DataDir('/var/lib/hearth') });
const get = async (vm: any) => (await fetch(`http://${vm.hostAddress}:8080/`)).text();
try {
  const tpl = await engine.template('smoke');
  const nm = new NetworkManager({ stateDir: '/tmp/nmtest' });
  let t = Date.now(); const n = await nm.create(); console.log('net create', Date.now() - t); t = Date.now(); await nm.destroy(n); console.log('net destroy', Date.now() - t);
  t = Date.now(); await createOverlay('/tmp/x.qcow2', tpl.dir + '/disk.qcow2', 'qcow2'); console.log('overlay', Date.now() - t);
  for (let i = 0; i < 3; i++) {
    await engine.destroy('t' + i);
    t = Date.now();
    const c = await engine.clone(tpl, { vmId: 't' + i });
    const tc = Date.now() - t;
    await get(c); const t1 = Date.now() - t;
    let t2 = Date.now(); await get(c); const w1 = Date.now() - t2;
    t2 = Date.now(); await get(c); const w2 = Date.now() - t2;
    console.log('clone', tc, 'first reply at', t1, 'warm requests', w1, w2);
  }
} finally { await engine.close(); }
