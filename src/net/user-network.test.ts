import { describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import {
  hostfwdAddCommand,
  hostfwdRemoveCommand,
  parseUsernetForwards,
  slirpNetdevArg,
  UserNetworks,
} from './user-network.js';
import { GUEST_GATEWAY, GUEST_IP } from './vm-network.js';

/** The key=value options of a -netdev value (after its backend name). */
function options(arg: string): Map<string, string> {
  const [, ...kv] = arg.split(',');
  return new Map(kv.map((x) => x.split('=') as [string, string]));
}

describe('slirpNetdevArg', () => {
  const arg = slirpNetdevArg();
  const o = options(arg);

  it('is a restricted user-mode netdev without IPv6', () => {
    expect(arg.startsWith('user,')).toBe(true);
    expect(o.get('id')).toBe('net0');
    expect(o.get('restrict')).toBe('on');
    expect(o.get('ipv6')).toBe('off');
    expect(arg).not.toContain('hostfwd'); // forwards come later, on demand, on loopback only
  });

  it("matches every guest's static configuration: its /30, slirp at the guest's gateway", () => {
    expect(o.get('net')).toBe('172.16.0.0/30');
    expect(o.get('host')).toBe(GUEST_GATEWAY);
    // A forward without a guest address goes to the DHCP start: make that the guest.
    expect(o.get('dhcpstart')).toBe(GUEST_IP);
  });

  it('gives QEMU a DNS address it accepts: in the network, neither the host nor the DHCP start', () => {
    const dns = o.get('dns')!;
    expect(dns.startsWith('172.16.0.')).toBe(true);
    expect(Number(dns.split('.')[3])).toBeLessThan(4);
    expect([GUEST_GATEWAY, GUEST_IP]).not.toContain(dns);
  });

  it('takes another netdev id', () => {
    expect(options(slirpNetdevArg('n1')).get('id')).toBe('n1');
  });
});

describe('hostfwd commands', () => {
  it('forward from loopback only, to the guest address', () => {
    expect(hostfwdAddCommand(0, 8080)).toBe('hostfwd_add net0 tcp:127.0.0.1:0-172.16.0.2:8080');
    expect(hostfwdAddCommand(40123, 9000)).toBe('hostfwd_add net0 tcp:127.0.0.1:40123-172.16.0.2:9000');
    expect(hostfwdRemoveCommand(40123)).toBe('hostfwd_remove net0 tcp:127.0.0.1:40123');
  });

  it('refuse ports out of range (nothing odd reaches the monitor)', () => {
    expect(() => hostfwdAddCommand(0, 0)).toThrow(RangeError);
    expect(() => hostfwdAddCommand(0, 65_536)).toThrow(RangeError);
    expect(() => hostfwdAddCommand(-1, 80)).toThrow(RangeError);
    expect(() => hostfwdAddCommand(0, 1.5)).toThrow(RangeError);
    expect(() => hostfwdRemoveCommand(0)).toThrow(RangeError);
  });
});

describe('parseUsernetForwards', () => {
  it("reads the forwards of QEMU 7.2's table and skips connections through them", () => {
    const text =
      'Hub -1 (net0):\r\n' +
      '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n' +
      '  TCP[ESTABLISHED]   19       127.0.0.1 18080      172.16.0.2  8080     0     0\r\n' +
      '  TCP[HOST_FORWARD]  19       127.0.0.1 32943      172.16.0.2  8082     0     0\r\n' +
      '  TCP[HOST_FORWARD]  18       127.0.0.1 18080      172.16.0.2  8080     0     0\r\n' +
      '  UDP[236 sec]       20       127.0.0.1  5353      172.16.0.2  5353     0     0\r\n';
    expect(parseUsernetForwards(text)).toEqual([
      { hostAddress: '127.0.0.1', hostPort: 32943, guestAddress: '172.16.0.2', guestPort: 8082 },
      { hostAddress: '127.0.0.1', hostPort: 18080, guestAddress: '172.16.0.2', guestPort: 8080 },
    ]);
  });

  it('finds nothing in a table without forwards, or in an error message', () => {
    expect(parseUsernetForwards('Hub -1 (net0):\n  Protocol[State]    FD  Source Address ...\n')).toEqual([]);
    expect(parseUsernetForwards("Could not set up host forwarding rule 'x'")).toEqual([]);
  });
});

describe('UserNetworks', () => {
  it('gives each running VM its own slot and reuses released ones', async () => {
    const n = new UserNetworks();
    const a = await n.acquire();
    const b = await n.acquire();
    expect(a).toMatchObject({ kind: 'user', slot: 1 });
    expect(b.slot).toBe(2);
    expect(n.activeCount).toBe(2);
    n.release(a);
    expect((await n.acquire()).slot).toBe(1);
    n.adopt({ kind: 'user', slot: 7, macAddress: a.macAddress });
    expect(n.activeCount).toBe(3);
    expect(await n.reapOrphans()).toBe(0);
  });

  it('gives deny-all and refuses every other egress policy with a stable code', async () => {
    const n = new UserNetworks();
    expect(() => n.checkEgress({ internet: false, allow: [] })).not.toThrow();
    for (const p of [
      { internet: true, allow: [] },
      { internet: false, allow: [{ cidr: '10.0.5.0/24', protocol: 'tcp' as const, ports: [] }] },
    ]) {
      let caught: unknown;
      try {
        n.checkEgress(p);
      } catch (e) {
        caught = e;
      }
      expect(hasCode(caught, 'NET_EGRESS_UNENFORCEABLE')).toBe(true);
      expect((caught as Error).message).toContain('egress connectors cannot be enforced');
      await expect(n.take(p)).rejects.toMatchObject({ code: 'NET_EGRESS_UNENFORCEABLE' });
    }
    expect(n.activeCount).toBe(0); // a refused policy takes nothing
  });
});
