import { describe, expect, it } from 'vitest';
import {
  GUEST_AGENT_PORT,
  GUEST_CONTROL_PORT,
  defaultCmdline,
  qemuArgs,
  type MachineConfig,
  type ProcessPaths,
} from './qemu-args.js';

const machine: MachineConfig = {
  memoryMiB: 256,
  vcpus: 2,
  accel: 'tcg',
  kernelPath: '/data/kernel/bzImage',
  initrdPath: '/data/initrd.img',
  cmdline: 'console=ttyS0 quiet',
  tcgCacheMiB: 64,
  network: false,
};

const paths: ProcessPaths = {
  memoryFile: '/data/vm/mem.ram',
  memoryShared: true,
  rootDisk: '/data/vm/root.qcow2',
  qmpSocket: '/run/vm/qmp.sock',
  agentSocket: '/run/vm/agent.sock',
  controlSocket: '/run/vm/ctl.sock',
  consoleLog: '/data/vm/console.log',
  incoming: false,
};

/** The value following each occurrence of `flag`. */
function valuesOf(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag && i + 1 < args.length) out.push(args[i + 1]!);
  });
  return out;
}

describe('qemuArgs', () => {
  it('backs guest RAM with a shared memory-backend-file when memoryShared', () => {
    const args = qemuArgs('vm1', machine, { ...paths, memoryShared: true });
    expect(valuesOf(args, '-object')).toContain(
      'memory-backend-file,id=ram,size=256M,mem-path=/data/vm/mem.ram,share=on',
    );
    expect(valuesOf(args, '-machine')[0]).toContain('memory-backend=ram');
    expect(valuesOf(args, '-m')).toEqual(['256M']);
  });

  it('maps guest RAM privately (share=off) when not memoryShared', () => {
    const args = qemuArgs('vm1', machine, { ...paths, memoryShared: false });
    expect(valuesOf(args, '-object')).toContain(
      'memory-backend-file,id=ram,size=256M,mem-path=/data/vm/mem.ram,share=off',
    );
    expect(args.join(' ')).not.toContain('share=on');
  });

  it('adds -incoming defer -S only for an incoming (restoring) process', () => {
    const normal = qemuArgs('vm1', machine, paths);
    expect(normal).not.toContain('-incoming');
    expect(normal).not.toContain('-S');

    const incoming = qemuArgs('vm1', machine, { ...paths, incoming: true });
    const i = incoming.indexOf('-incoming');
    expect(i).toBeGreaterThan(0);
    expect(incoming.slice(i, i + 3)).toEqual(['-incoming', 'defer', '-S']);
  });

  it('adds the tap netdev and virtio-net device only for a networked machine', () => {
    const without = qemuArgs('vm1', machine, { ...paths, tapName: 'htap0', macAddress: '52:54:00:12:34:56' });
    expect(without).not.toContain('-netdev');
    expect(without.join(' ')).not.toContain('virtio-net');

    const withNet = qemuArgs(
      'vm1',
      { ...machine, network: true },
      { ...paths, tapName: 'htap0', macAddress: '52:54:00:12:34:56' },
    );
    expect(valuesOf(withNet, '-netdev')).toEqual([
      'tap,id=net0,ifname=htap0,script=no,downscript=no,vhost=off',
    ]);
    expect(valuesOf(withNet, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56');
  });

  it('backs the network with restricted user-mode networking for a user-mode machine (no tap needed)', () => {
    const args = qemuArgs(
      'vm1',
      { ...machine, network: true, networkMode: 'user-mode' },
      { ...paths, macAddress: '52:54:00:12:34:56' },
    );
    const [netdev, ...more] = valuesOf(args, '-netdev');
    expect(more).toEqual([]);
    expect(netdev).toMatch(/^user,id=net0,/);
    expect(netdev).toContain('restrict=on');
    expect(args.join(' ')).not.toContain('tap,');
    expect(valuesOf(args, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56');
    expect(() => qemuArgs('vm1', { ...machine, network: true, networkMode: 'user-mode' }, paths)).toThrow(
      /macAddress/,
    );
  });

  it("keeps the tap backend for machines recorded before networkMode existed and for 'namespaces'", () => {
    const p = { ...paths, tapName: 'htap0', macAddress: '52:54:00:12:34:56' };
    const legacy = qemuArgs('vm1', { ...machine, network: true }, p);
    const explicit = qemuArgs('vm1', { ...machine, network: true, networkMode: 'namespaces' }, p);
    expect(explicit).toEqual(legacy);
  });

  it('uses KVM with the host CPU for accel kvm', () => {
    const args = qemuArgs('vm1', { ...machine, accel: 'kvm' }, paths);
    expect(valuesOf(args, '-accel')).toEqual(['kvm']);
    expect(valuesOf(args, '-cpu')).toEqual(['host,-arch-capabilities']);
    expect(args.join(' ')).not.toContain('tcg');
  });

  it('uses TCG with the configured translation cache and a CPU with ARAT (tickless idle) for accel tcg', () => {
    const args = qemuArgs('vm1', { ...machine, accel: 'tcg', tcgCacheMiB: 96 }, paths);
    expect(valuesOf(args, '-accel')).toEqual(['tcg,tb-size=96']);
    expect(valuesOf(args, '-cpu')).toEqual(['qemu64,+arat']);
    expect(args).not.toContain('kvm');
  });

  it('wires the kernel, initrd, cmdline, disk, sockets and serial ports from the config', () => {
    const args = qemuArgs('abc', machine, paths);
    expect(valuesOf(args, '-name')).toEqual(['hearth-abc,debug-threads=on']);
    expect(valuesOf(args, '-smp')).toEqual(['2']);
    expect(valuesOf(args, '-kernel')).toEqual([machine.kernelPath]);
    expect(valuesOf(args, '-initrd')).toEqual([machine.initrdPath]);
    expect(valuesOf(args, '-append')).toEqual([machine.cmdline]);
    expect(valuesOf(args, '-qmp')).toEqual(['unix:/run/vm/qmp.sock,server=on,wait=off']);
    expect(valuesOf(args, '-drive')[0]).toContain('file=/data/vm/root.qcow2,format=qcow2');
    const chardevs = valuesOf(args, '-chardev');
    expect(chardevs).toContain('socket,id=agent,path=/run/vm/agent.sock,server=on,wait=off');
    expect(chardevs).toContain('socket,id=control,path=/run/vm/ctl.sock,server=on,wait=off');
    expect(chardevs).toContain('file,id=console,path=/data/vm/console.log,append=on');
    const devices = valuesOf(args, '-device');
    expect(devices).toContain(`virtserialport,chardev=agent,name=${GUEST_AGENT_PORT}`);
    expect(devices).toContain(`virtserialport,chardev=control,name=${GUEST_CONTROL_PORT}`);
  });

  it('produces the same device list for a template and its restore (only -incoming differs)', () => {
    const template = qemuArgs('t', machine, { ...paths, memoryShared: true });
    const restore = qemuArgs('t', machine, { ...paths, memoryShared: false, incoming: true });
    const devices = (a: string[]) => valuesOf(a, '-device');
    expect(devices(restore)).toEqual(devices(template));
  });

  it('rejects a networked machine without a tap name', () => {
    expect(() =>
      qemuArgs('vm1', { ...machine, network: true }, { ...paths, macAddress: '52:54:00:12:34:56' }),
    ).toThrow(TypeError);
  });

  it('rejects a networked machine without a MAC address', () => {
    expect(() => qemuArgs('vm1', { ...machine, network: true }, { ...paths, tapName: 'htap0' })).toThrow(
      /tapName and macAddress/,
    );
  });
});

describe('defaultCmdline', () => {
  it('starts with the serial console and appends extra arguments', () => {
    const c = defaultCmdline(['hearth.debug=1']);
    expect(c.startsWith('console=ttyS0 ')).toBe(true);
    expect(c.endsWith(' hearth.debug=1')).toBe(true);
  });
});
