/**
 * Whether a guest TCP port accepts connections from the host, seen from inside the guest.
 *
 * With user-mode networking a connection to a forward always succeeds on the host side: QEMU
 * accepts it, then connects to the guest, and closes it if the guest refuses (measured: `connect`
 * after ~10 ms, then end-of-stream ~30 ms later). So "the host's connection succeeded" says nothing
 * about the app; instead Hearth reads the guest's own socket tables (/proc/net/tcp and tcp6,
 * through the guest agent) for a listening socket the forward reaches: on any address, or on the
 * guest's address.
 */
import { GUEST_IP } from '../net/vm-network.js';
import type { GuestAgentClient } from './guest-agent-client.js';

/** A listening TCP socket of the guest: its local address ('0.0.0.0', '::', dotted, ::ffff:...) and port. */
export interface GuestListener {
  address: string;
  port: number;
}

const TCP_LISTEN = '0A';

/** An address of /proc/net/tcp{,6}: hex of 32-bit words in host (little-endian) byte order. */
function decodeAddress(hex: string): string {
  const words: number[] = [];
  for (let i = 0; i < hex.length; i += 8) {
    const w = hex.slice(i, i + 8);
    words.push(parseInt(w.slice(6, 8) + w.slice(4, 6) + w.slice(2, 4) + w.slice(0, 2), 16) >>> 0);
  }
  const dotted = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  if (words.length === 1) return dotted(words[0]!);
  if (words.every((w) => w === 0)) return '::';
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return `::ffff:${dotted(words[3]!)}`;
  return words.map((w) => `${(w >>> 16).toString(16)}:${(w & 0xffff).toString(16)}`).join(':');
}

/** The listening sockets in the text of /proc/net/tcp or /proc/net/tcp6. */
export function parseListeners(procNetTcp: string): GuestListener[] {
  const out: GuestListener[] = [];
  for (const line of procNetTcp.split('\n')) {
    const m =
      /^\s*\d+:\s+([0-9A-Fa-f]+):([0-9A-Fa-f]{4})\s+[0-9A-Fa-f]+:[0-9A-Fa-f]{4}\s+([0-9A-Fa-f]{2})\s/.exec(
        line,
      );
    if (!m || m[3]!.toUpperCase() !== TCP_LISTEN) continue;
    if (m[1]!.length !== 8 && m[1]!.length !== 32) continue;
    out.push({ address: decodeAddress(m[1]!), port: parseInt(m[2]!, 16) });
  }
  return out;
}

/** Whether one of `listeners` takes connections to GUEST_IP:`port` (the address forwards connect to). */
export function acceptsFromHost(listeners: readonly GuestListener[], port: number): boolean {
  const reachable = new Set(['0.0.0.0', '::', GUEST_IP, `::ffff:${GUEST_IP}`]);
  return listeners.some((l) => l.port === port && reachable.has(l.address));
}

const POLL_MS = 100;

/**
 * Resolves once the guest listens on TCP `port` where the host's forwards reach it; rejects when
 * `deadline` (ms since the epoch) passes, or with `abort()`'s error as soon as it returns one (QEMU
 * exited). `agent` gives the guest agent (it may not be up yet early in a boot: retried).
 */
export async function waitForGuestListener(
  agent: (timeoutMs: number) => Promise<GuestAgentClient>,
  port: number,
  deadline: number,
  abort: () => Error | undefined,
): Promise<void> {
  let last = 'no answer from the guest agent';
  for (;;) {
    const fatal = abort();
    if (fatal) throw fatal;
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error(`guest port ${port} not accepting connections in time (${last})`);
    try {
      const a = await agent(Math.max(1, Math.min(remaining, 5_000)));
      const tables = await Promise.all(
        ['/proc/net/tcp', '/proc/net/tcp6'].map((f) =>
          a.readFile(f, 4 * 1024 * 1024).then(
            (b) => b.toString(),
            () => '', // tcp6 is absent when the guest kernel has no IPv6
          ),
        ),
      );
      if (acceptsFromHost(tables.flatMap(parseListeners), port)) return;
      last = 'nothing listens on it';
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
