/**
 * Hearth without root: an unprivileged user runs the engine (cold boot, template, clones, suspend
 * and resume) and `hearth serve` (a rootless build, a launch, the gateway) on a data directory
 * root prepared for it with `hearth setup --for-user`. The test process is root: it prepares, then
 * starts the user's processes with setpriv and looks at what they started.
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, chown, copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DataDir } from '../../src/config/data-dir.js';
import {
  createEndpointToken,
  CreateMicrovmImageCommand,
  DeleteMicrovmImageCommand,
  hearthClient,
  hostInfo,
  ListMicrovmsCommand,
  managedConnectorArn,
  ResumeMicrovmCommand,
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TerminateMicrovmCommand,
  waitForImageVersion,
  waitForMicrovm,
  type HearthConnection,
} from '../../src/sdk/index.js';
import { httpGet } from '../../src/util/http-get.js';
import { BASE_ARN, fixtureImage } from '../helpers/images.js';
import {
  copyTemplate,
  ensureTestUser,
  hearthCli,
  prepareUserDataDir,
  spawnAsUser,
  type TestUser,
} from '../helpers/rootless.js';
import { callEndpoint } from '../helpers/server.js';

type Event = { event: string } & Record<string, unknown>;

/** The Uid/Gid/CapEff/Seccomp/NoNewPrivs lines of /proc/<pid>/status. */
async function processFacts(pid: number): Promise<Record<string, string>> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const out: Record<string, string> = {};
  for (const k of ['Uid', 'Gid', 'CapEff', 'Seccomp', 'NoNewPrivs']) {
    out[k] = (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '').replace(/\s+/g, ' ');
  }
  return out;
}

/** Collects a child's stderr (for failure messages) and its exit. */
function watch(child: ChildProcess): { stderr: () => string; exited: Promise<number | null> } {
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-20_000)));
  return { stderr: () => err, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

let user: TestUser;
let dataDir: DataDir;
let hostServer: Server;
let hostPort: number;

beforeAll(async () => {
  user = await ensureTestUser();
  dataDir = await prepareUserDataDir(user);
  await copyTemplate(inject('counterTemplate'), dataDir, user);
  // A host service on every address: the guest must reach it on none.
  hostServer = createServer((s) => s.end('host secret\n'));
  await new Promise<void>((r) => hostServer.listen(0, '0.0.0.0', r));
  hostPort = (hostServer.address() as { port: number }).port;
});

afterAll(() => {
  hostServer?.close();
});

describe('the engine run by an unprivileged user (user-mode networking)', () => {
  const events = new Map<string, Event>();
  let qemu: Record<string, string> = {};
  let qemuCmdline = '';
  let fromRoot = '';

  beforeAll(async () => {
    const child = spawnAsUser(user, dataDir, [
      'tests/fixtures/scripts/rootless-engine.ts',
      inject('counterTemplate'),
      String(hostPort),
    ]);
    const w = watch(child);
    for await (const line of createInterface({ input: child.stdout! })) {
      if (!line.startsWith('{')) continue;
      const e = JSON.parse(line) as Event;
      events.set(e.event, e);
      if (e.event === 'inspect') {
        const pid = e.pid as number;
        qemu = await processFacts(pid);
        qemuCmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
        // The forward serves any local client, root included (as a namespace endpoint does).
        const at = e.endpoint as { host: string; port: number };
        fromRoot = (await httpGet(`http://${at.host}:${at.port}/`)).body;
        child.stdin!.end('go\n');
      }
    }
    const code = await w.exited;
    if (code !== 0) throw new Error(`the user's engine exited with ${code}:\n${w.stderr()}`);
  }, 600_000);

  it('runs as the user and says what it cannot enforce', () => {
    const opened = events.get('opened')!;
    expect(opened.uid).toBe(user.uid);
    expect(opened.protections).toMatchObject({
      jail: false,
      cgroups: false,
      network: 'user-mode',
      enforced: ['qemu-seccomp', 'egress-deny-all'],
      notEnforced: ['qemu-jail', 'cgroup-limits', 'egress-connectors'],
    });
  });

  it('cold-boots, makes a template recorded as user-mode, and clones it; the app is reached through forwards', () => {
    const t = events.get('template')!;
    expect(t.first).toMatchObject({ count: 1 });
    expect(t.bootEndpoint).toMatchObject({ host: '127.0.0.1' });
    expect(t.fingerprint).toMatchObject({ network: true, networkMode: 'user-mode' });
    const i = events.get('inspect')!;
    // The clone continues from the template's memory: its counter goes on from there.
    expect(i.reply).toMatchObject({ count: 2 });
    expect(i.endpoint).toMatchObject({ host: '127.0.0.1' });
    expect((i.endpoint as { port: number }).port).not.toBe(8080);
    expect(JSON.parse(fromRoot)).toMatchObject({ count: 3 });
    console.log(
      `rootless: cold boot ${Math.round(t.bootMs as number)} ms; clone to first reply ${Math.round(i.cloneToReplyMs as number)} ms`,
    );
  });

  it('QEMU runs as the user, without capabilities, under seccomp, with restricted user-mode networking', () => {
    expect(qemu.Uid!.split(' ')).toEqual(Array(4).fill(String(user.uid)));
    expect(qemu.Gid!.split(' ')).toEqual(Array(4).fill(String(user.gid)));
    expect(qemu.CapEff).toBe('0000000000000000');
    expect(qemu.Seccomp).toBe('2'); // filter mode
    expect(qemuCmdline).toContain('-netdev user,id=net0,');
    expect(qemuCmdline).toContain('restrict=on');
    expect(qemuCmdline).not.toContain('hostfwd');
  });

  it('the guest reaches nothing: not the host (loopback or its addresses), not 10.0.2.2, not the outside; DNS fails at once', () => {
    const { probes, dns, hostV4 } = events.get('probes') as Event & {
      probes: Record<string, string>;
      dns: string;
      hostV4: string[];
    };
    expect(probes['guest itself 127.0.0.1:8080']).toBe('connected'); // the probe works
    expect(hostV4.length).toBeGreaterThan(0);
    for (const [what, result] of Object.entries(probes)) {
      if (what.startsWith('guest itself')) continue;
      expect(result, what).toMatch(/^(ConnectionRefusedError|TimeoutError|OSError|ConnectionResetError)$/);
    }
    expect(dns).toMatch(/^failed /);
    expect(Number(dns.split(' ')[1])).toBeLessThan(3);
  });

  it('suspends and resumes: the forwards come back (same host port) and the app continues', () => {
    const r = events.get('resumed') as Event & {
      suspendedPorts: [number, number][];
      portsAfterResume: [number, number][];
    };
    expect(r.suspendedPorts).toEqual([]); // they went with the process
    const before = (events.get('inspect')!.endpoint as { port: number }).port;
    expect(r.portsAfterResume).toEqual([[8080, before]]);
    expect(r.afterResume).toMatchObject({ count: 4 });
    console.log(`rootless: resume ${Math.round(r.resumeMs as number)} ms`);
  });

  it('refuses egress policies with NET_EGRESS_UNENFORCEABLE and a namespaces template with VMM_SNAPSHOT_INCOMPATIBLE', () => {
    const r = events.get('refused')!;
    expect(r.egress).toMatchObject({
      code: 'NET_EGRESS_UNENFORCEABLE',
      message: expect.stringContaining('egress connectors cannot be enforced'),
    });
    expect(r.allowList).toMatchObject({ code: 'NET_EGRESS_UNENFORCEABLE' });
    expect(r.foreign).toMatchObject({
      code: 'VMM_SNAPSHOT_INCOMPATIBLE',
      message: expect.stringContaining(
        'made with network namespaces (a Hearth run as root) but this Hearth uses user-mode networking',
      ),
    });
    expect(r.vms).toEqual([expect.stringMatching(/^rl-a-/)]); // nothing of the refused launches
    expect(events.get('done')).toBeDefined();
  });

  it('leaves nothing behind: no QEMU process, no VM directory', async () => {
    const qemus: number[] = [];
    for (const d of await readdir('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      const argv = await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '');
      if (argv.startsWith('qemu-system') && argv.includes(`${dataDir.vmsDir}/rl-`)) qemus.push(Number(d));
    }
    expect(qemus).toEqual([]);
    const vms = await readdir(dataDir.vmsDir).catch(() => [] as string[]);
    expect(vms.filter((v) => v.startsWith('rl-'))).toEqual([]);
  });
});

describe('without root, setup and serve check the host instead of preparing it', () => {
  /** Runs the CLI as the test user; resolves with its exit code and stderr. */
  async function cliAsUser(args: string[], dir: DataDir): Promise<{ code: number | null; stderr: string }> {
    const child = spawnAsUser(user, dir, ['src/cli/main.ts', ...args]);
    child.stdin!.end();
    child.stdout!.resume();
    const w = watch(child);
    return { code: await w.exited, stderr: w.stderr() };
  }

  it('says what is missing (and the command that prepares it) rather than trying apt or useradd', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'hearth-rl-empty-'));
    try {
      await chown(empty, user.uid, user.gid);
      for (const command of ['setup', 'serve']) {
        const r = await cliAsUser([command, '--data-dir', empty], new DataDir(empty));
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr).toContain('error [HOST_NOT_SET_UP]');
        expect(r.stderr).toContain(`hearth setup --for-user ${user.name} --data-dir ${empty}`);
      }
      const forUser = await cliAsUser(
        ['setup', '--for-user', user.name, '--data-dir', empty],
        new DataDir(empty),
      );
      expect(forUser.stderr).toContain('error [HOST_NOT_ROOT]');
      expect(await readdir(empty)).toEqual([]); // nothing was prepared
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe('hearth serve run by an unprivileged user', () => {
  let server: ChildProcess;
  let conn: HearthConnection;
  let ca: string;
  let gatewayPort: number;
  let appDir: string;
  let serverExited: Promise<number | null>;
  let serverStderr: () => string;

  beforeAll(async () => {
    server = spawnAsUser(user, dataDir, [
      'src/cli/main.ts',
      'serve',
      '--data-dir',
      dataDir.root,
      '--api-port',
      '0',
      '--gateway-port',
      '0',
      '--gateway-host',
      '127.0.0.1',
    ]);
    const w = watch(server);
    serverExited = w.exited;
    serverStderr = w.stderr;
    for await (const line of createInterface({ input: server.stdout! })) {
      const m = /^hearth serving: API (\S+), endpoints https:\/\/\S+:(\d+)$/.exec(line);
      if (m) {
        gatewayPort = Number(m[2]);
        break;
      }
    }
    if (!gatewayPort) throw new Error(`hearth serve did not start:\n${w.stderr()}`);
    conn = JSON.parse(await readFile(join(dataDir.root, 'api-credentials.json'), 'utf8')) as HearthConnection;
    ca = await readFile(join(dataDir.root, 'tls', 'ca.crt'), 'utf8');
    // A build context the user can read: the lifecycle app (counter on 8080, every hook on 9000,
    // recorded in GET /state) with a RUN step, which runs in a rootless container.
    appDir = await mkdtemp(join(tmpdir(), 'hearth-rl-app-'));
    await writeFile(
      join(appDir, 'Dockerfile'),
      'FROM hearth/base:bookworm\nRUN test "$(id -u)" = 0 && mkdir -p /srv && echo ok > /srv/run-step\n' +
        'COPY app.py /srv/app.py\nCMD ["python3", "-u", "/srv/app.py"]\n',
    );
    await copyFile(join(fixtureImage('lifecycle'), 'app.py'), join(appDir, 'app.py'));
    await chmod(appDir, 0o755);
    for (const f of ['Dockerfile', 'app.py']) await chmod(join(appDir, f), 0o644);
  }, 120_000);

  afterAll(async () => {
    // hearth serve leaves running microVMs for the next start to adopt: terminate them first.
    const client = conn && hearthClient(conn);
    const left = client ? ((await client.send(new ListMicrovmsCommand({}))).items ?? []) : [];
    for (const m of left.filter((x) => x.state !== 'TERMINATED'))
      await client!
        .send(new TerminateMicrovmCommand({ microvmIdentifier: m.microvmId! }))
        .catch(() => undefined);
    server?.kill('SIGTERM');
    await serverExited;
    if (appDir) await rm(appDir, { recursive: true, force: true });
  });

  it('answers GET /hearth/v1/host, and hearth host prints it', async () => {
    expect(await hostInfo(conn)).toMatchObject({
      network: 'user-mode',
      jail: false,
      cgroups: false,
      notEnforced: ['qemu-jail', 'cgroup-limits', 'egress-connectors'],
      warnings: [
        expect.stringContaining(`QEMU runs as this user (uid ${user.uid})`),
        expect.stringContaining('without memory, task and CPU limits'),
        expect.stringContaining('egress connectors cannot be enforced'),
      ],
    });
    const printed = await hearthCli(['info', '--data-dir', dataDir.root]);
    expect(printed).toMatch(/^network\s+user-mode$/m);
    expect(printed).toMatch(/^not enforced\s+qemu-jail, cgroup-limits, egress-connectors$/m);
  });

  it('builds an image rootless (a RUN step, a ready hook), launches it, serves it through the gateway, calls its hooks, suspends and resumes it, refuses egress', async () => {
    const client = hearthClient(conn);
    const name = `rl-app-${Date.now().toString(36)}`;
    await client.send(
      new CreateMicrovmImageCommand({
        name,
        codeArtifact: { uri: appDir },
        baseImageArn: BASE_ARN,
        buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
        hooks: {
          port: 9000,
          microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 120 },
          microvmHooks: { run: 'ENABLED', suspend: 'ENABLED', resume: 'ENABLED' },
        },
      }),
    );
    const v = await waitForImageVersion(client, name, '1.0', { timeoutMs: 300_000 });
    expect(v.state, v.stateReason).toBe('SUCCESSFUL');

    const refused = await client
      .send(
        new RunMicrovmCommand({
          imageIdentifier: name,
          egressNetworkConnectors: [managedConnectorArn(conn.region, 'INTERNET_EGRESS')],
        }),
      )
      .catch((e: Error & { code?: string; $metadata?: { httpStatusCode?: number } }) => e);
    expect(refused).toMatchObject({
      name: 'ValidationException',
      code: 'NET_EGRESS_UNENFORCEABLE',
      message:
        'this Hearth runs without root (user-mode networking): egress connectors cannot be enforced; run it as root or without egress connectors',
    });

    const run = await client.send(new RunMicrovmCommand({ imageIdentifier: name, runHookPayload: 'hi' }));
    const vm = await waitForMicrovm(client, run.microvmId!, ['RUNNING']);
    const token = await createEndpointToken(client, vm.microvmId!);
    expect(vm.endpoint).toBe(`${vm.microvmId}.microvm.localhost:${gatewayPort}`);
    const state = async () => {
      const r = await callEndpoint({ ca }, vm.endpoint!, { token, path: '/state' });
      expect(r.status, r.body).toBe(200);
      return JSON.parse(r.body) as { hooks: string[]; payload: string | null };
    };
    // ready (before the snapshot) and run (after the launch) reached port 9000 through forwards.
    expect(await state()).toMatchObject({ hooks: ['ready', 'run'], payload: 'hi' });
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.microvmId! }));
    await waitForMicrovm(client, vm.microvmId!, ['SUSPENDED']);
    await client.send(new ResumeMicrovmCommand({ microvmIdentifier: vm.microvmId! }));
    await waitForMicrovm(client, vm.microvmId!, ['RUNNING']);
    expect((await state()).hooks).toEqual(['ready', 'run', 'suspend', 'resume']);
    // A port nothing listens on: QEMU accepts, then closes (no refusal to see): still a 502.
    const none = await callEndpoint({ ca }, vm.endpoint!, {
      token: await createEndpointToken(client, vm.microvmId!, { ports: [9999] }),
      port: 9999,
    });
    expect(none.status).toBe(502);
    expect(JSON.parse(none.body)).toMatchObject({ code: 'UPSTREAM_RESET' });
    await client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.microvmId! }));
    await waitForMicrovm(client, vm.microvmId!, ['TERMINATED']);
    await client.send(new DeleteMicrovmImageCommand({ imageIdentifier: name })); // its disk and snapshot go
    expect(serverStderr()).not.toMatch(/\bERROR\b/);
  });
});
