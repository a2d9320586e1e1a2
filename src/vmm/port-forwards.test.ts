import { describe, expect, it } from 'vitest';
import { PortForwards, type HmpCommand } from './port-forwards.js';

/**
 * A QEMU monitor that keeps a slirp forward table like QEMU 7.2: hostfwd_add answers '' or an
 * error line; port 0 gets the next free port; `info usernet` lists the table. `taken` are host
 * ports other processes hold.
 */
function fakeQemu(taken: Set<number> = new Set()) {
  const forwards: { host: number; guest: number }[] = [];
  const commands: string[] = [];
  let next = 40_000;
  let delayMs = 0;
  const hmp: HmpCommand = async (cmd) => {
    commands.push(cmd);
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const add = /^hostfwd_add net0 tcp:127\.0\.0\.1:(\d+)-172\.16\.0\.2:(\d+)$/.exec(cmd);
    if (add) {
      let host = Number(add[1]);
      if (host === 0) {
        while (taken.has(next) || forwards.some((f) => f.host === next)) next++;
        host = next++;
      }
      if (taken.has(host) || forwards.some((f) => f.host === host))
        return `Could not set up host forwarding rule '${cmd.slice(12)}'\r\n`;
      forwards.push({ host, guest: Number(add[2]) });
      return '';
    }
    if (cmd === 'info usernet')
      return (
        'Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n' +
        forwards
          .map(
            (f) =>
              `  TCP[HOST_FORWARD]  18       127.0.0.1 ${f.host}      172.16.0.2  ${f.guest}     0     0\r\n`,
          )
          .join('')
      );
    return `unknown command: ${cmd}\r\n`;
  };
  return {
    hmp,
    forwards,
    commands,
    setDelay: (ms: number) => (delayMs = ms),
    adds: () => commands.filter((c) => c.startsWith('hostfwd_add')).length,
  };
}

describe('PortForwards', () => {
  it('adds a forward on first use, with a port the kernel picks, and reuses it after', async () => {
    const q = fakeQemu();
    const f = new PortForwards('vm1');
    await f.attach(q.hmp, 'fresh');
    const a = await f.endpoint(8080);
    expect(a).toEqual({ host: '127.0.0.1', port: 40_000 });
    expect(await f.endpoint(8080)).toEqual(a);
    const b = await f.endpoint(9000);
    expect(b.port).not.toBe(a.port);
    expect(q.adds()).toBe(2);
    expect(q.commands[0]).toBe('hostfwd_add net0 tcp:127.0.0.1:0-172.16.0.2:8080');
    expect([...f.ports]).toEqual([
      [8080, 40_000],
      [9000, 40_001],
    ]);
  });

  it('shares one add between concurrent askers of a port, and serialises adds of different ports', async () => {
    const q = fakeQemu();
    q.setDelay(5);
    const f = new PortForwards('vm1');
    await f.attach(q.hmp, 'fresh');
    const got = await Promise.all([f.endpoint(8080), f.endpoint(8080), f.endpoint(8081), f.endpoint(8080)]);
    expect(q.adds()).toBe(2);
    expect(got[0]).toEqual(got[1]);
    expect(got[0]).toEqual(got[3]);
    expect(got[2]!.port).not.toBe(got[0]!.port);
    // Each guest port got the forward that QEMU listed for it.
    for (const [guest, host] of f.ports) expect(q.forwards).toContainEqual({ host, guest });
  });

  it('after a restore adds the forwards again, on the same host ports when still free', async () => {
    const q1 = fakeQemu();
    const f = new PortForwards('vm1');
    await f.attach(q1.hmp, 'fresh');
    const a = await f.endpoint(8080);
    const b = await f.endpoint(9000);
    f.detach(); // the process exits (suspend)
    expect(f.ports.size).toBe(0);
    const q2 = fakeQemu(new Set([b.port])); // someone took 9000's old host port meanwhile
    await f.attach(q2.hmp, 'restore');
    expect(f.ports.get(8080)).toBe(a.port);
    expect(f.ports.get(9000)).toBeDefined();
    expect(f.ports.get(9000)).not.toBe(b.port);
    expect(await f.endpoint(8080)).toEqual(a);
    expect(q2.adds()).toBe(3); // 8080 on its old port; 9000 refused there, then a new port
  });

  it('takes over the forwards an adopted QEMU already has', async () => {
    const q = fakeQemu();
    const before = new PortForwards('vm1');
    await before.attach(q.hmp, 'fresh');
    const a = await before.endpoint(8080);
    const after = new PortForwards('vm1'); // a new server adopting the running QEMU
    await after.attach(q.hmp, 'adopt');
    expect(await after.endpoint(8080)).toEqual(a);
    expect(q.adds()).toBe(1);
  });

  it('fails with a stable code when QEMU refuses or does not list the forward, and retries later', async () => {
    const q = fakeQemu();
    const f = new PortForwards('vm1');
    await f.attach(async (cmd) => (cmd.startsWith('hostfwd_add') ? 'Could not set up\r\n' : ''), 'fresh');
    await expect(f.endpoint(8080)).rejects.toMatchObject({ code: 'VMM_PORT_FORWARD_FAILED' });
    await f.attach(async (cmd) => (cmd === 'info usernet' ? '' : ''), 'fresh');
    await expect(f.endpoint(8080)).rejects.toThrow(/does not list the new forward/);
    await f.attach(q.hmp, 'fresh');
    expect((await f.endpoint(8080)).port).toBe(40_000); // a failure is not remembered
  });

  it('refuses when no QEMU process is attached, and bad ports', async () => {
    const f = new PortForwards('vm1');
    await expect(f.endpoint(8080)).rejects.toMatchObject({ code: 'VMM_PORT_FORWARD_FAILED' });
    await f.attach(fakeQemu().hmp, 'fresh');
    await expect(f.endpoint(0)).rejects.toThrow(RangeError);
    await expect(f.endpoint(70_000)).rejects.toThrow(RangeError);
  });

  it('never lets an add of an exited process land in the next one', async () => {
    const q1 = fakeQemu();
    q1.setDelay(20);
    const f = new PortForwards('vm1');
    await f.attach(q1.hmp, 'fresh');
    const late = f.endpoint(8080);
    f.detach();
    await late.catch(() => undefined);
    const q2 = fakeQemu();
    await f.attach(q2.hmp, 'restore');
    expect(f.ports.size).toBe(0);
    expect(q2.adds()).toBe(0);
  });

  it('clear() forgets the wanted forwards too (the VM is gone)', async () => {
    const f = new PortForwards('vm1');
    await f.attach(fakeQemu().hmp, 'fresh');
    await f.endpoint(8080);
    f.clear();
    const q = fakeQemu();
    await f.attach(q.hmp, 'restore');
    expect(q.adds()).toBe(0);
  });
});
