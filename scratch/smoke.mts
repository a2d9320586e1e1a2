import { DataDir } from '../src/config/data-dir.js';
import { Engine } from '../src/vmm/engine.js';

const APP = `
import http.server, os, socket
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        with open('/var/tmp/app.log','a') as f:
            f.write('%d\\n' % count); f.flush(); os.fsync(f.fileno())
        b = ('count=%d host=%s\\n' % (count, socket.gethostname())).encode()
        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
`;
const get = async (vm: any) => (await fetch(`http://${vm.hostAddress}:8080/`)).text();
const engine = await Engine.open({ dataDir: new DataDir('/var/lib/hearth') });
try {
  for (const id of ['tpl-vm', 'c1', 'c2']) await engine.destroy(id);
  await engine.deleteTemplate('smoke');
  let t = Date.now();
  const vm = await engine.boot({ vmId: 'tpl-vm', workload: { argv: ['python3', '-c', APP] }, waitForPort: 8080 });
  console.log('boot ms', Date.now() - t, await get(vm));
  const tpl = await engine.createTemplate(vm, 'smoke');
  for (const id of ['c1', 'c2']) {
    t = Date.now();
    const c = await engine.clone(tpl, { vmId: id });
    const r = await get(c);
    console.log('clone+reply ms', Date.now() - t, r.trim());
  }
  const c1 = engine.get('c1')!;
  for (let i = 0; i < 3; i++) {
    t = Date.now(); await engine.suspend(c1); const ts = Date.now() - t;
    t = Date.now(); await engine.resume('c1'); const r = await get(c1);
    console.log('suspend ms', ts, 'resume+reply ms', Date.now() - t, r.trim());
  }
  const a = await c1.agent();
  const ex = await a.exec('/bin/sh', ['-c', 'date +%s.%N; cat /var/tmp/app.log | tr "\\n" " "; hostname; cat /etc/machine-id']);
  console.log('host now', Date.now() / 1000, 'guest:', ex.stdout.toString());
} finally {
  await engine.close();
}
