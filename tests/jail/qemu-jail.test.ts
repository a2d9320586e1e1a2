import { closeSync, openSync, readlinkSync, writeSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { vmUid } from '../../src/jail/jailer.js';
import type { Engine, Template } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { testDataDir } from '../helpers/env.js';
import { getJson, openEngine, tapNet, uniqueId } from '../helpers/vm.js';

/** Field `name` of /proc/<pid>/status. */
function field(status: string, name: string): string {
  return new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
}

describe('the jail around each QEMU (Firecracker-style: own uid, namespaces, only its own files)', () => {
  let engine: Engine;
  let template: Template;
  let a: MicroVm;
  let b: MicroVm;

  beforeAll(async () => {
    engine = await openEngine();
    template = await engine.template(inject('counterTemplate'));
    [a, b] = await Promise.all([
      engine.clone(template, { vmId: uniqueId('jail-a') }),
      engine.clone(template, { vmId: uniqueId('jail-b') }),
    ]);
  });

  afterAll(async () => {
    await engine.destroy(a.id);
    await engine.destroy(b.id);
    await engine.close();
  });

  it('runs as its own unprivileged uid/gid (one per VM), with no capabilities, seccomp and no_new_privs', async () => {
    for (const vm of [a, b]) {
      const status = await readFile(`/proc/${vm.process!.pid}/status`, 'utf8');
      const uid = vmUid(vm.network!.slot);
      expect(field(status, 'Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(field(status, 'Gid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(field(status, 'Groups')).toBe('');
      expect(field(status, 'CapEff')).toBe('0000000000000000');
      expect(field(status, 'CapPrm')).toBe('0000000000000000');
      expect(field(status, 'Seccomp')).toBe('2');
      expect(field(status, 'NoNewPrivs')).toBe('1');
    }
    expect(vmUid(a.network!.slot)).not.toBe(vmUid(b.network!.slot));
    // And the VM still works.
    expect((await getJson(a)).count).toBeGreaterThan(0);
  });

  it('is pid 1 of its own pid namespace, in new mount, IPC and UTS namespaces, and in its VM network namespace', async () => {
    const pid = a.process!.pid;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    expect(field(status, 'NSpid')).toBe(`${pid}\t1`);
    for (const ns of ['mnt', 'pid', 'ipc', 'uts']) {
      expect(readlinkSync(`/proc/${pid}/ns/${ns}`)).not.toBe(readlinkSync(`/proc/self/ns/${ns}`));
    }
    expect(readlinkSync(`/proc/${pid}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'));
    expect((await stat(`/proc/${pid}/ns/net`)).ino).toBe((await stat(tapNet(a).netnsPath)).ino);
    expect(readlinkSync(`/proc/${pid}/ns/mnt`)).not.toBe(readlinkSync(`/proc/${b.process!.pid}/ns/mnt`));
  });

  it('sees only /usr, its devices, its kernel, initrd and backing disks, and its own VM directory', async () => {
    const root = `/proc/${a.process!.pid}/root`;
    const top = (await readdir(root)).sort();
    // /usr, /dev, /proc, /tmp, the merged-/usr links, and the first component of the data directory.
    const dataTop = testDataDir().root.split('/')[1]!;
    expect(top.filter((e) => !['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'].includes(e))).toEqual(
      ['dev', 'proc', 'tmp', 'usr', dataTop].filter((v, i, l) => l.indexOf(v) === i).sort(),
    );
    expect((await readdir(join(root, 'dev'))).sort()).toEqual(
      ['fd', 'net', 'null', 'stderr', 'stdin', 'stdout', 'urandom'].sort(),
    );
    const dd = testDataDir();
    // Its own VM directory, not its neighbour's; no database, no keys, no other template.
    expect(await readdir(join(root, dd.vmsDir))).toEqual([a.id]);
    expect(await readdir(join(root, dd.root))).not.toContain('hearth.db');
    expect((await readdir(join(root, dd.templatesDir))).sort()).toEqual([template.id]);
    expect((await readdir(join(root, dd.templatesDir, template.id))).sort()).toEqual([
      'disk.qcow2',
      'initrd.img',
    ]);
    await expect(stat(join(root, 'etc/shadow'))).rejects.toThrow(/ENOENT/);
    await expect(stat(join(root, 'root'))).rejects.toThrow(/ENOENT/);
  });

  it('owns only the files it must write: its disk layer, console and run directory; snapshots stay root-owned', async () => {
    const uid = vmUid(a.network!.slot);
    const L = a.layout;
    expect((await stat(L.layer(a.activeLayer))).uid).toBe(uid);
    expect((await stat(L.consoleLog)).uid).toBe(uid);
    expect((await stat(L.runDir)).uid).toBe(uid);
    expect((await stat(L.recordFile)).uid).toBe(0);
    const tplDisk = await stat(join(template.dir, 'disk.qcow2'));
    expect(tplDisk.uid).toBe(0);
    expect(tplDisk.mode & 0o777).toBe(0o444);
  });

  it('a restored QEMU is in its own control group, every thread of it, with the limits of its memory', async () => {
    for (const vm of [a, b]) {
      const g = vm.cgroup!;
      expect(g).toBeDefined();
      const pid = vm.process!.pid;
      const tids = await readdir(`/proc/${pid}/task`);
      expect(tids.length).toBeGreaterThan(1);
      for (const tid of tids) {
        const lines = (await readFile(`/proc/${pid}/task/${tid}/cgroup`, 'utf8')).trim().split('\n');
        // v2: the one line; v1: the memory, cpu and pids hierarchies (cpuacct may share cpu's).
        const groupOf = (c: string) =>
          lines.find((l) => l.startsWith('0::') || l.split(':')[1]!.split(',').includes(c));
        for (const c of ['memory', 'cpu', 'pids']) expect(groupOf(c)).toMatch(new RegExp(`/${g.name}$`));
      }
      expect(await g.limits()).toEqual({ memoryMaxBytes: 896 * 2 ** 20, pidsMax: 256, cpuQuotaPercent: 100 });
    }
    expect(a.cgroup!.name).not.toBe(b.cgroup!.name);
  });

  it('has rlimits: 1024 files, 256 tasks, a bounded file size, no core dumps', async () => {
    const limits = await readFile(`/proc/${a.process!.pid}/limits`, 'utf8');
    expect(limits).toMatch(/^Max open files\s+1024\s+1024\s/m);
    expect(limits).toMatch(/^Max processes\s+256\s+256\s/m);
    expect(limits).toMatch(/^Max core file size\s+0\s+0\s/m);
    const fsize = Number(/^Max file size\s+(\d+)\s/m.exec(limits)?.[1]);
    expect(fsize).toBeGreaterThan(template.manifest.baseDisk.sizeBytes);
    expect(fsize).toBeLessThan(template.manifest.baseDisk.sizeBytes + 2 * 2 ** 30);
  });

  it("maps the template's RAM from a sealed copy that nobody can change, not even root", async () => {
    const pid = a.process!.pid;
    const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
    expect(maps).toContain(`/memfd:hearth-ram-${template.id} (deleted)`);
    // QEMU's fd 3 is the sealed copy: opened read-write, a write is still refused.
    expect(readlinkSync(`/proc/${pid}/fd/3`)).toBe(`/memfd:hearth-ram-${template.id} (deleted)`);
    const fd = openSync(`/proc/${pid}/fd/3`, 'r+');
    try {
      expect(() => writeSync(fd, Buffer.from('x'), 0, 1, 4096)).toThrow(/EPERM/);
    } finally {
      closeSync(fd);
    }
    // Both clones map the same copy and still differ in what they wrote.
    expect(await readFile(`/proc/${b.process!.pid}/maps`, 'utf8')).toContain(`hearth-ram-${template.id}`);
    await getJson(a);
    await getJson(a);
    const [ra, rb] = [(await getJson(a)).count as number, (await getJson(b)).count as number];
    expect(ra).toBeGreaterThan(rb);
  });

  it('a jailed clone suspends and resumes: the resumed QEMU is jailed again, with its state', async () => {
    const before = (await getJson(b)).count as number;
    await engine.suspend(b);
    b = await engine.resume(b.id);
    const status = await readFile(`/proc/${b.process!.pid}/status`, 'utf8');
    const uid = vmUid(b.network!.slot);
    expect(field(status, 'Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
    expect(field(status, 'NSpid')).toMatch(/\t1$/);
    expect((await getJson(b)).count).toBe(before + 1);
    // The suspended snapshot's files went back to root, read-only.
    const gen = b.layout.generationDir(b.generation);
    for (const f of ['devices.state', 'memory.diff']) {
      const st = await stat(join(gen, f));
      expect([f, st.uid, st.mode & 0o222]).toEqual([f, 0, 0]);
    }
  });
});
