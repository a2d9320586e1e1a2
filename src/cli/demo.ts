import type { DataDir } from '../config/data-dir.js';
import { Engine } from '../vmm/engine.js';
import { httpGet } from '../util/http-get.js';

// A tiny app for the demo: answers with its hostname and a request counter kept in memory.
const DEMO_APP = `
import http.server, socket
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        b = ('hello from %s, request %d\\n' % (socket.gethostname(), n)).encode()
        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
print('demo app listening on 8080', flush=True)
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
`;

/**
 * The main job for now: boot a microVM from the Debian base disk, show it answering HTTP, turn it
 * into a template and launch a clone from it, and keep the clone serving until interrupted.
 */
export async function runDemo(dataDir: DataDir, opts: { exitWhenDone: boolean }): Promise<number> {
  const engine = await Engine.open({ dataDir });
  const say = (s: string) => process.stdout.write(s + '\n');
  try {
    for (const id of ['demo-boot', 'demo']) await engine.destroy(id);
    await engine.deleteTemplate('demo');
    let t = Date.now();
    const booted = await engine.boot({
      vmId: 'demo-boot',
      workload: { argv: ['python3', '-c', DEMO_APP] },
      waitForPort: 8080,
    });
    say(
      `booted microVM ${booted.id} (${booted.record.machine.accel}, ${booted.record.machine.memoryMiB} MiB) in ${Date.now() - t} ms`,
    );
    say(
      `  GET http://${booted.hostAddress}:8080/ -> ${(await httpGet(`http://${booted.hostAddress}:8080/`)).body.trim()}`,
    );
    t = Date.now();
    const template = await engine.createTemplate(booted, 'demo');
    say(`snapshotted it as template '${template.id}' in ${Date.now() - t} ms`);
    t = Date.now();
    const vm = await engine.clone(template, { vmId: 'demo' });
    const reply = (await httpGet(`http://${vm.hostAddress}:8080/`)).body.trim();
    say(`launched clone ${vm.id} from the snapshot and got its first reply in ${Date.now() - t} ms`);
    say(`  GET http://${vm.hostAddress}:8080/ -> ${reply}`);
    if (opts.exitWhenDone) return 0;
    say(
      `\nthe clone keeps serving at http://${vm.hostAddress}:8080/ (console: ${vm.layout.consoleLog}); Ctrl-C to stop`,
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  } finally {
    await engine.close();
  }
}
