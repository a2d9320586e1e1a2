import { describe, expect, it } from 'vitest';
import { acceptsFromHost, parseListeners, waitForGuestListener } from './guest-ports.js';
import type { GuestAgentClient } from './guest-agent-client.js';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
   2: 020010AC:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1236 1 0000000000000000 100 0 0 10 0
   3: 020010AC:1F90 010010AC:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 1237 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF0000020010AC:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
`;

describe('parseListeners', () => {
  it('decodes listening sockets of /proc/net/tcp (little-endian addresses), not connections', () => {
    expect(parseListeners(TCP)).toEqual([
      { address: '0.0.0.0', port: 8080 },
      { address: '127.0.0.1', port: 9000 },
      { address: '172.16.0.2', port: 80 },
    ]);
  });

  it('decodes /proc/net/tcp6: any, loopback, v4-mapped', () => {
    expect(parseListeners(TCP6)).toEqual([
      { address: '::', port: 8081 },
      { address: '0:0:0:0:0:0:0:1', port: 8082 },
      { address: '::ffff:172.16.0.2', port: 8083 },
    ]);
  });
});

describe('acceptsFromHost', () => {
  const all = [...parseListeners(TCP), ...parseListeners(TCP6)];
  it('counts listeners on any address or on the guest address', () => {
    for (const p of [8080, 80, 8081, 8083]) expect(acceptsFromHost(all, p)).toBe(true);
  });
  it('does not count loopback-only listeners or absent ports (a forward cannot reach them)', () => {
    for (const p of [9000, 8082, 1234]) expect(acceptsFromHost(all, p)).toBe(false);
  });
});

describe('waitForGuestListener', () => {
  const agentWith = (tables: () => string) => async (_timeoutMs?: number) =>
    ({
      readFile: async (f: string) => {
        if (f.endsWith('tcp6')) throw new Error('no such file');
        return Buffer.from(tables());
      },
    }) as unknown as GuestAgentClient;

  it('resolves once the port listens, polling the guest meanwhile', async () => {
    let reads = 0;
    const agent = agentWith(() => (++reads < 3 ? '' : TCP));
    await waitForGuestListener(agent, 8080, Date.now() + 5_000, () => undefined);
    expect(reads).toBe(3);
  });

  it('retries while the agent is not up yet', async () => {
    let calls = 0;
    const good = agentWith(() => TCP);
    const agent = async (ms: number) => {
      if (++calls < 2) throw new Error('agent not answering');
      return good(ms);
    };
    await waitForGuestListener(agent, 8080, Date.now() + 5_000, () => undefined);
  });

  it('fails at the deadline, saying why, and at once when QEMU has exited', async () => {
    await expect(
      waitForGuestListener(
        agentWith(() => TCP),
        9000,
        Date.now() + 250,
        () => undefined,
      ),
    ).rejects.toThrow(/guest port 9000 not accepting connections in time \(nothing listens on it\)/);
    const exited = new Error('QEMU exited');
    await expect(
      waitForGuestListener(
        agentWith(() => ''),
        8080,
        Date.now() + 5_000,
        () => exited,
      ),
    ).rejects.toBe(exited);
  });
});
