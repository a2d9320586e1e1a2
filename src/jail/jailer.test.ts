import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import {
  ensureJailerBinary,
  jailedCommand,
  JailConfigError,
  readJailerPid,
  vmUid,
  VM_UID_BASE,
  type JailSpec,
} from './jailer.js';

const asRoot = process.getuid?.() === 0;
const UID = vmUid(60_000 + (process.pid % 5_000));

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}
interface Jailed {
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** The jailed program's host pid, from the jailer's first line. */
  pid: number;
  stderr: () => string;
  done: Promise<Finished>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function status(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

function field(statusText: string, name: string): string | undefined {
  return new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(statusText)?.[1]?.trim();
}

/** Gone, or a zombie nobody has reaped yet (the jailer was its parent and is dead). */
function deadOrZombie(pid: number): boolean {
  const s = status(pid);
  return s === '' || /^State:\s*Z/m.test(s);
}

describe.skipIf(!asRoot)('hearth-jailer (real namespaces, needs root)', () => {
  let cache: string;
  let jailer: string;
  let base: string;
  let rootDir: string;
  let roDir: string;
  let rwDir: string;
  let secretFile: string;

  beforeAll(async () => {
    cache = await mkdtemp('/tmp/hearth-jailer-cache-');
    jailer = await ensureJailerBinary(cache);
    base = await mkdtemp('/tmp/hearth-jail-test-');
    await chmod(base, 0o755);
    rootDir = join(base, 'root');
    roDir = join(base, 'ro');
    rwDir = join(base, 'rw');
    await mkdir(rootDir, { mode: 0o755 });
    await mkdir(roDir, { mode: 0o755 });
    await mkdir(rwDir, { mode: 0o755 });
    await chown(rwDir, UID, UID);
    await writeFile(join(roDir, 'hello.txt'), 'hello from the host\n', { mode: 0o644 });
    await mkdir(join(base, 'secret'), { mode: 0o755 });
    secretFile = join(base, 'secret', 'key');
    await writeFile(secretFile, 'not for the jail\n', { mode: 0o644 });
  }, 60_000);

  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
    if (cache) await rm(cache, { recursive: true, force: true });
  });

  function spec(overrides: Partial<JailSpec> = {}): JailSpec {
    return {
      uid: UID,
      gid: UID,
      rootDir,
      readOnly: ['/usr', roDir],
      readWrite: [rwDir],
      devices: ['/dev/null', '/dev/urandom'],
      cgroupProcsFiles: [],
      limits: { nofile: 256 },
      ...overrides,
    };
  }

  async function start(
    binary: string,
    args: string[],
    overrides: Partial<JailSpec> = {},
    extraFds: number[] = [],
  ): Promise<Jailed> {
    const { cmd, args: argv } = jailedCommand(jailer, spec(overrides), binary, args);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe', ...extraFds] }) as ChildProcessByStdio<
      null,
      Readable,
      Readable
    >;
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.on('exit', (code, signal) => r({ code, signal })),
    );
    const stderrEnded = new Promise((r) => child.stderr.on('end', r));
    const pid = await readJailerPid(child.stdout, 5_000);
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const stdoutEnded = new Promise((r) => child.stdout.on('end', r));
    const done = Promise.all([exited, stdoutEnded, stderrEnded]).then(([e]) => ({ ...e, stdout, stderr }));
    return { child, pid, stderr: () => stderr, done };
  }

  async function runJailed(
    binary: string,
    args: string[],
    overrides: Partial<JailSpec> = {},
    extraFds: number[] = [],
  ): Promise<Finished> {
    return (await start(binary, args, overrides, extraFds)).done;
  }

  it('caches the compiled binary by source hash (0755)', async () => {
    expect(jailer).toMatch(/\/hearth-jailer-[0-9a-f]{16}$/);
    expect((await stat(jailer)).mode & 0o777).toBe(0o755);
    expect(await ensureJailerBinary(cache)).toBe(jailer);
  });

  it('reports the host pid of a child that is pid 1 of new namespaces, as the VM uid, with no privileges', async () => {
    const j = await start('/usr/bin/sleep', ['2']);
    // The pid line comes before the child's setup: wait until it has dropped to the VM uid and
    // exec'd the program (the uid changes just before the exec).
    await waitFor('the jailed sleep', () => {
      const s = status(j.pid);
      return field(s, 'Uid') === `${UID}\t${UID}\t${UID}\t${UID}` && field(s, 'Name') === 'sleep';
    });
    const s = status(j.pid);
    expect(field(s, 'Name')).toBe('sleep');
    expect(field(s, 'Gid')).toBe(`${UID}\t${UID}\t${UID}\t${UID}`);
    expect(field(s, 'Groups')).toBe('');
    expect(field(s, 'NSpid')).toBe(`${j.pid}\t1`);
    expect(field(s, 'PPid')).toBe(String(j.child.pid));
    expect(field(s, 'NoNewPrivs')).toBe('1');
    expect(field(s, 'CapEff')).toBe('0000000000000000');
    expect(field(s, 'CapPrm')).toBe('0000000000000000');
    for (const ns of ['mnt', 'pid', 'ipc', 'uts']) {
      expect(readlinkSync(`/proc/${j.pid}/ns/${ns}`), ns).not.toBe(readlinkSync(`/proc/self/ns/${ns}`));
    }
    expect(readlinkSync(`/proc/${j.pid}/ns/net`)).toBe(readlinkSync('/proc/self/ns/net'));
    const limits = await readFile(`/proc/${j.pid}/limits`, 'utf8');
    expect(limits).toMatch(/^Max open files\s+256\s+256\s/m);
    expect(limits).toMatch(/^Max core file size\s+0\s+0\s/m);
    const done = await j.done;
    expect(done).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('shows only what was bound: read-only and read-write binds, /dev, /proc, /tmp, no host files', async () => {
    const script = [
      'echo "pid=$$ uid=$(id -u) gid=$(id -g) groups=$(id -G) host=$(hostname)"',
      'echo "root:" $(ls /)',
      'echo "dev:" $(ls /dev)',
      'echo "tmp:" $(ls /tmp)',
      'echo "proc:" $(ls /proc | grep "^[0-9]")',
      `cat ${roDir}/hello.txt`,
      `test -e ${secretFile} && echo SECRET_VISIBLE`,
      `test -e ${base}/secret && echo SECRET_DIR_VISIBLE`,
      `{ echo x > ${roDir}/new; } 2>&1 || echo RO_WRITE_FAILED`,
      `{ echo written-inside > ${rwDir}/out; } 2>&1 && echo RW_WRITE_OK`,
      'touch /newfile 2>&1 || echo ROOT_WRITE_FAILED',
      'mkdir /tmp/scratch && echo TMP_WRITE_OK',
      'head -c 8 /dev/urandom | wc -c',
      'echo "devnode:" $(stat -c "%F %t:%T %a %u:%g" /dev/null)',
      "cut -d' ' -f5,6 /proc/self/mountinfo",
    ].join('\n');
    const r = await runJailed('/bin/sh', ['-c', script], { hostname: 'vm-test' });
    expect(r.code).toBe(0);
    const out = r.stdout;
    expect(out).toContain(`pid=1 uid=${UID} gid=${UID} groups=${UID} host=vm-test`);
    const hostLinks = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'].filter((l) => {
      try {
        return readlinkSync(`/${l}`) !== '';
      } catch {
        return false;
      }
    });
    expect(/^root: (.*)$/m.exec(out)?.[1]?.split(' ').sort()).toEqual(
      [...hostLinks, 'dev', 'proc', 'tmp', 'usr'].sort(),
    );
    expect(/^dev: (.*)$/m.exec(out)?.[1]).toBe('fd null stderr stdin stdout urandom');
    // The binds' parents are mount points only: /tmp holds the test's directory and nothing of the host's /tmp.
    expect(/^tmp: (.*)$/m.exec(out)?.[1]).toBe(base.split('/')[2]);
    // Only the jail's own processes: sh (1) and the commands it started.
    expect(/^proc: (.*)$/m.exec(out)?.[1]?.split(' ')[0]).toBe('1');
    expect(out).toContain('hello from the host');
    expect(out).not.toContain('SECRET');
    expect(out).toMatch(/Read-only file system\nRO_WRITE_FAILED/);
    expect(out).toContain('RW_WRITE_OK');
    expect(await readFile(join(rwDir, 'out'), 'utf8')).toBe('written-inside\n');
    expect(existsSync(join(roDir, 'new'))).toBe(false);
    expect(out).toMatch(/Read-only file system\nROOT_WRITE_FAILED/);
    expect(out).toContain('TMP_WRITE_OK');
    expect(out).toMatch(/^8$/m);
    const mounts = new Map(
      out
        .split('\n')
        .filter((l) => /^\/\S* \S+$/.test(l))
        .map((l) => l.split(' ') as [string, string]),
    );
    expect(mounts.get('/')).toMatch(/^ro,nosuid,nodev,noexec/);
    expect(mounts.get('/usr')).toMatch(/^ro,nosuid,nodev/);
    expect(mounts.get(roDir)).toMatch(/^ro,nosuid,nodev/);
    expect(mounts.get(rwDir)).toMatch(/^rw,nosuid,nodev/);
    // Devices are nodes of the jail's /dev (made with mknod, owned by the jailed uid), not binds.
    expect(/^devnode: (.*)$/m.exec(out)?.[1]).toBe(`character special file 1:3 666 ${UID}:${UID}`);
    expect(mounts.has('/dev/null')).toBe(false);
    expect(mounts.get('/dev')).toMatch(/^rw,nosuid,noexec/);
    expect(mounts.get('/dev')).not.toMatch(/nodev/);
    expect(mounts.get('/proc')).toMatch(/^rw,nosuid,nodev,noexec/);
    // The jail's root directory on the host stays empty: the tmpfs lives in the jail's mount namespace only.
    expect(spawnSync('ls', ['-A', rootDir]).stdout.toString()).toBe('');
  });

  it('passes the --keep-fd descriptors to the program and closes every other one', async () => {
    const kept = openSync(join(roDir, 'hello.txt'), 'r');
    const other = openSync(join(roDir, 'hello.txt'), 'r');
    try {
      // fd 3 is `kept`, fd 4 is `other`: only 3 is listed.
      const r = await runJailed(
        '/bin/sh',
        ['-c', 'cat /proc/self/fd/3; ls /proc/self/fd/4 2>/dev/null || echo FD4_CLOSED'],
        { keepFds: [3] },
        [kept, other],
      );
      expect(r).toMatchObject({ code: 0, stdout: 'hello from the host\nFD4_CLOSED\n' });
    } finally {
      closeSync(kept);
      closeSync(other);
    }
    expect(() => jailedCommand(jailer, spec({ keepFds: [2] }), '/bin/true', [])).toThrow(JailConfigError);
  });

  it('cannot regain root: setuid(0) fails and su is refused', async () => {
    // python3 may be absent; perl is part of Debian's base system.
    const r = await runJailed('/usr/bin/perl', [
      '-e',
      '$< = 0; $> = 0; print "uid=$< euid=$> err=", ($! + 0), "\\n"',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`uid=${UID} euid=${UID} err=1\n`); // EPERM
  });

  it('propagates the exit code, 127 when exec fails and 125 (with the step on stderr) when setup fails', async () => {
    expect((await runJailed('/bin/sh', ['-c', 'exit 7'])).code).toBe(7);
    const noExec = await runJailed('/nonexistent/binary', []);
    expect(noExec.code).toBe(127);
    expect(noExec.stderr).toMatch(/^hearth-jailer: exec \/nonexistent\/binary: No such file or directory/);
    const badDev = await runJailed('/bin/true', [], { devices: ['/dev/does-not-exist'] });
    expect(badDev.code).toBe(125);
    expect(badDev.stderr).toMatch(/^hearth-jailer: device \/dev\/does-not-exist: No such file or directory/);
    expect(badDev.stdout).toBe('');
  });

  it('fails before reporting a pid when the jail cannot start (readJailerPid rejects)', async () => {
    const { cmd, args } = jailedCommand(jailer, spec({ netnsPath: '/nonexistent-netns' }), '/bin/true', []);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const err = await readJailerPid(child.stdout, 5_000).catch((e: unknown) => e);
    expect(hasCode(err, 'JAIL_START_FAILED')).toBe(true);
    expect(await exited).toBe(125);
    expect(stderr).toMatch(/^hearth-jailer: setns \/nonexistent-netns: No such file or directory/);
  });

  it('exits 128+9 when the child is killed with SIGKILL', async () => {
    const j = await start('/usr/bin/sleep', ['30']);
    await waitFor('sleep', () => field(status(j.pid), 'Name') === 'sleep');
    process.kill(j.pid, 'SIGKILL');
    expect(await j.done).toMatchObject({ code: 137, signal: null });
  });

  it('forwards SIGTERM to the child (which, as pid 1, must handle it)', async () => {
    const j = await start('/bin/sh', [
      '-c',
      'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.05; done',
    ]);
    let out = '';
    j.child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    await waitFor('ready', () => out.includes('ready'));
    j.child.kill('SIGTERM');
    const r = await j.done;
    expect(r.code).toBe(42);
    expect(r.stdout).toContain('got-term');
  });

  it('kills the child when the jailer itself is killed with SIGKILL (PDEATHSIG)', async () => {
    const j = await start('/usr/bin/sleep', ['30']);
    await waitFor('sleep', () => field(status(j.pid), 'Name') === 'sleep');
    j.child.kill('SIGKILL');
    await j.done;
    await waitFor('the orphaned child to die', () => deadOrZombie(j.pid));
  });

  const haveIp = spawnSync('ip', ['-V']).status === 0;
  it.skipIf(!haveIp)('enters the given network namespace', async () => {
    const name = `hearth-jail-test-${process.pid}`;
    expect(spawnSync('ip', ['netns', 'add', name]).status).toBe(0);
    try {
      const nsPath = `/run/netns/${name}`;
      const j = await start('/usr/bin/sleep', ['1'], { netnsPath: nsPath });
      await waitFor('sleep', () => field(status(j.pid), 'Name') === 'sleep');
      expect(statSync(`/proc/${j.pid}/ns/net`).ino).toBe(statSync(nsPath).ino);
      expect(readlinkSync(`/proc/${j.pid}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'));
      expect((await j.done).code).toBe(0);
    } finally {
      spawnSync('ip', ['netns', 'del', name]);
    }
  });
});

describe('jailedCommand', () => {
  const ok: JailSpec = {
    uid: vmUid(3),
    gid: vmUid(3),
    rootDir: '/run/hearth/jail/vm-1',
    readOnly: ['/usr', '/srv/images/base'],
    readWrite: ['/srv/images/base/rw', '/srv'],
    devices: ['/dev/kvm', '/dev/net/tun'],
    cgroupProcsFiles: ['/sys/fs/cgroup/hearth/vm-1/cgroup.procs'],
    netnsPath: '/run/netns/vm-1',
    limits: { nofile: 4096, nproc: 512, fsizeBytes: 2 ** 40 },
    hostname: 'vm-1',
  };

  it('builds the argv, parents before children', () => {
    const { cmd, args } = jailedCommand(
      '/var/lib/hearth/hearth-jailer-x',
      ok,
      '/usr/bin/qemu-system-x86_64',
      ['-machine', 'microvm'],
    );
    expect(cmd).toBe('/var/lib/hearth/hearth-jailer-x');
    expect(args).toEqual([
      '--netns',
      '/run/netns/vm-1',
      '--uid',
      '1950000003',
      '--gid',
      '1950000003',
      '--cgroup-procs',
      '/sys/fs/cgroup/hearth/vm-1/cgroup.procs',
      '--root',
      '/run/hearth/jail/vm-1',
      '--rw',
      '/srv',
      '--ro',
      '/srv/images/base',
      '--rw',
      '/srv/images/base/rw',
      '--ro',
      '/usr',
      '--dev',
      '/dev/kvm',
      '--dev',
      '/dev/net/tun',
      '--nofile',
      '4096',
      '--nproc',
      '512',
      '--fsize',
      '1099511627776',
      '--hostname',
      'vm-1',
      '--',
      '/usr/bin/qemu-system-x86_64',
      '-machine',
      'microvm',
    ]);
  });

  const bad: [string, Partial<JailSpec>, string?][] = [
    ['relative root', { rootDir: 'jail/vm-1' }],
    ['relative bind', { readOnly: ['usr'] }],
    ['.. in a bind', { readOnly: ['/srv/../etc'] }],
    ['. in a bind', { readWrite: ['/srv/./x'] }],
    ['trailing slash', { readOnly: ['/usr/'] }],
    ['double slash', { readOnly: ['//usr'] }],
    ['binding /', { readOnly: ['/'] }],
    ['newline', { readWrite: ['/srv/a\nb'] }],
    ['NUL', { devices: ['/dev/kvm\0'] }],
    ['device outside /dev', { devices: ['/etc/passwd'] }],
    ['both ro and rw', { readOnly: ['/srv'], readWrite: ['/srv'] }],
    ['uid 0', { uid: 0 }],
    ['gid 0', { gid: 0 }],
    ['negative uid', { uid: -5 }],
    ['fractional gid', { gid: 1.5 }],
    ['uid 2^32-1', { uid: 2 ** 32 - 1 }],
    ['nofile 0', { limits: { nofile: 0 } }],
    ['bad hostname', { hostname: 'a b' }],
    ['relative netns', { netnsPath: 'netns' }],
    ['relative cgroup file', { cgroupProcsFiles: ['cgroup.procs'] }],
  ];
  it.each(bad)('refuses %s', (_what, override) => {
    expect(() => jailedCommand('/j', { ...ok, ...override }, '/usr/bin/qemu', [])).toThrow(JailConfigError);
  });

  it('refuses a relative binary or jailer, and reports a stable code', () => {
    expect(() => jailedCommand('/j', ok, 'qemu', [])).toThrow(JailConfigError);
    expect(() => jailedCommand('j', ok, '/usr/bin/qemu', [])).toThrow(JailConfigError);
    try {
      jailedCommand('/j', { ...ok, uid: 0 }, '/usr/bin/qemu', []);
    } catch (e) {
      expect(hasCode(e, 'JAIL_INVALID_SPEC')).toBe(true);
      expect((e as JailConfigError).hint).toBeTruthy();
    }
  });
});

describe('vmUid', () => {
  it('maps slots to a range clear of the builder subuids', () => {
    expect(vmUid(0)).toBe(VM_UID_BASE);
    expect(vmUid(65_535)).toBe(1_950_065_535);
    expect(VM_UID_BASE).toBeGreaterThan(1_879_113_727);
    for (const s of [-1, 65_536, 1.5, NaN]) expect(() => vmUid(s)).toThrow(JailConfigError);
  });
});

describe('readJailerPid', () => {
  it('returns the pid and leaves what follows on the stream', async () => {
    const s = new PassThrough();
    s.write('pi');
    setTimeout(() => s.end('d 4242\nfirst line of qemu\n'), 10);
    expect(await readJailerPid(s, 1_000)).toBe(4242);
    let rest = '';
    for await (const c of s) rest += (c as Buffer).toString();
    expect(rest).toBe('first line of qemu\n');
  });

  it('rejects with JAIL_START_FAILED when the stream ends first, the line is malformed, or on timeout', async () => {
    const ended = new PassThrough();
    ended.end('pid 12');
    const malformed = new PassThrough();
    malformed.end('hello\n');
    const long = new PassThrough();
    long.write('x'.repeat(100));
    const silent = new PassThrough();
    for (const [s, re] of [
      [ended, /exited before reporting/],
      [malformed, /printed 'hello'/],
      [long, /instead of 'pid N'/],
      [silent, /within 50 ms/],
    ] as const) {
      const e = await readJailerPid(s, 50).catch((x: unknown) => x);
      expect(hasCode(e, 'JAIL_START_FAILED')).toBe(true);
      expect((e as Error).message).toMatch(re);
    }
  });
});
