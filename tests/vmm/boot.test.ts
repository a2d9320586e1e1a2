import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { vmUid } from '../../src/jail/jailer.js';
import {
  getJson,
  leftovers,
  NOTHING_LEFT,
  openEngine,
  recordedNetworks,
  sh,
  uniqueId,
} from '../helpers/vm.js';

// A workload that reports how it was started, and says goodbye on SIGTERM.
const APP = `
import http.server, json, os, signal, sys
def bye(*a):
    print('app: got SIGTERM', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(), 'greeting': os.environ.get('GREETING'),
                        'home': os.environ.get('HOME'), 'path': os.environ.get('PATH'), 'pid1': open('/proc/1/comm').read().strip()}).encode()
        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
print('app: listening on 8080', flush=True)
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
`;

describe('cold boot', () => {
  let engine: Engine;
  let vm: MicroVm;
  const vmId = uniqueId('boot');

  beforeAll(async () => {
    engine = await openEngine();
    vm = await engine.boot({
      vmId,
      workload: { argv: ['python3', '-c', APP], env: ['GREETING=hello'], cwd: '/tmp', user: 'nobody' },
      waitForPort: 8080,
    });
  });

  afterAll(async () => {
    await engine.destroy(vmId);
    await engine.close();
    expect(await recordedNetworks()).toEqual([]);
  });

  it('boots the base disk and answers HTTP on the app port, with the workload as configured', async () => {
    const r = await getJson<Record<string, unknown>>(vm);
    expect(r).toMatchObject({
      uid: 65534,
      cwd: '/tmp',
      greeting: 'hello',
      pid1: 'init',
      home: '/nonexistent',
    });
    expect(r.path).toContain('/usr/bin');
  });

  it('runs commands through the guest agent and captures their output', async () => {
    const agent = await vm.agent();
    const r = await agent.exec('/bin/uname', ['-r']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toMatch(/cloud-amd64$/);
    const fail = await agent.exec('/bin/sh', ['-c', 'echo oops >&2; exit 3']);
    expect(fail.exitCode).toBe(3);
    expect(fail.stderr.toString()).toBe('oops\n');
  });

  it("runs QEMU jailed, as its VM's uid, under its seccomp sandbox (Seccomp: 2), which survives QEMU's own setup", async () => {
    const status = await readFile(`/proc/${vm.process!.pid}/status`, 'utf8');
    expect(status).toMatch(/^Seccomp:\s+2$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    const uid = vmUid(vm.network!.slot);
    expect(status).toMatch(new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
    expect(status).toMatch(new RegExp(`^NSpid:\\t${vm.process!.pid}\\t1$`, 'm'));
    // The RAM file it fills (a cold boot's, which may become a template) is its own while it runs.
    expect((await stat(vm.layout.memoryFile)).uid).toBe(uid);
  });

  it('runs QEMU in its own control group, limited to its memory, 256 tasks and 4x its baseline CPU', async () => {
    const g = vm.cgroup!;
    expect(g).toBeDefined();
    expect(await readFile(`/proc/${vm.process!.pid}/cgroup`, 'utf8')).toContain(`/${g.name}\n`);
    // 512 MiB guest + 128 MiB TCG cache + 256 MiB for QEMU; 512 MiB is a quarter core of baseline.
    expect(await g.limits()).toEqual({ memoryMaxBytes: 896 * 2 ** 20, pidsMax: 256, cpuQuotaPercent: 100 });
    const u = await g.usage();
    expect(u.pids).toBeGreaterThan(1); // QEMU's threads
    expect(u.cpuUsageUsec).toBeGreaterThan(0);
    expect(u.memoryCurrentBytes).toBeGreaterThan(32 * 2 ** 20);
  });

  it('idles tickless: the guest takes far fewer than its 250 Hz timer interrupts when idle', async () => {
    const agent = await vm.agent();
    const timerInterrupts = async () => {
      const r = await agent.exec('/bin/sh', ['-c', 'grep LOC: /proc/interrupts']);
      return Number(/LOC:\s+(\d+)/.exec(r.stdout.toString())![1]);
    };
    const before = await timerInterrupts();
    await new Promise((r) => setTimeout(r, 2_000));
    const perSecond = ((await timerInterrupts()) - before) / 2;
    expect(perSecond).toBeLessThan(100); // periodic tick (no ARAT): ~250/s, each costing host CPU under TCG
  });

  it('reads and writes guest files through the agent', async () => {
    const agent = await vm.agent();
    const data = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251));
    await agent.writeFile('/tmp/blob', data);
    expect((await agent.readFile('/tmp/blob')).equals(data)).toBe(true);
    expect(await sh(vm, 'sha256sum /tmp/blob | cut -c1-64')).toMatch(/^[0-9a-f]{64}\n$/);
  });

  it('freezes and thaws the guest filesystems', async () => {
    const agent = await vm.agent();
    expect(await agent.fsfreezeFreeze()).toBeGreaterThan(0);
    expect(await agent.fsfreezeStatus()).toBe('frozen');
    await agent.fsfreezeThaw();
    expect(await agent.fsfreezeStatus()).toBe('thawed');
  });

  it('sets the guest clock through the agent', async () => {
    const agent = await vm.agent();
    const target = Date.now() + 3_600_000; // an hour ahead
    // qemu-ga then runs the image's /sbin/hwclock, absent here: it may report that, after setting the time.
    await agent
      .setTime(BigInt(target) * 1_000_000n, 15_000)
      .catch((e: Error) => expect(e.message).toMatch(/hwclock/));
    const guestSeconds = Number((await sh(vm, 'date +%s')).trim());
    expect(Math.abs(guestSeconds - target / 1000)).toBeLessThan(5);
    await agent.setTime(BigInt(Date.now()) * 1_000_000n, 15_000).catch(() => undefined);
  });

  it('reaps orphaned processes (no zombies under init)', async () => {
    await sh(vm, '(sleep 0.2 &) ; true');
    await new Promise((r) => setTimeout(r, 1500));
    const zombies = await sh(vm, 'grep -l "^State:.*Z" /proc/[0-9]*/status 2>/dev/null || true');
    expect(zombies.trim()).toBe('');
  });

  it('sets the hostname and captures the console, including the workload output', async () => {
    expect((await sh(vm, 'hostname')).trim()).toBe(vmId);
    const log = await readFile(vm.layout.consoleLog, 'utf8');
    expect(log).toContain('hearth-init: workload started');
    expect(log).toContain('app: listening on 8080');
  });

  it('stops in order: SIGTERM reaches the workload, then no process, network or socket is left', async () => {
    const pid = vm.process!.pid;
    await engine.stop(vm, { graceMs: 5_000 });
    expect(vm.state).toBe('stopped');
    const log = await readFile(vm.layout.consoleLog, 'utf8');
    expect(log).toContain('app: got SIGTERM');
    expect(log).toContain('workload exited with status 0');
    expect(() => process.kill(pid, 0)).toThrow();
    expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
  });

  it('destroy removes every file of the VM', async () => {
    await engine.destroy(vmId);
    expect(existsSync(vm.layout.dir)).toBe(false);
  });
});
