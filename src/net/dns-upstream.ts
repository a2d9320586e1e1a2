/**
 * The resolvers Hearth's guest DNS forwarder asks, and one question/answer exchange with one of
 * them over UDP or TCP, bounded by a timeout.
 */
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, isIP } from 'node:net';

export interface DnsUpstream {
  address: string;
  port: number;
}

/** Parses 'a.b.c.d', 'a.b.c.d:port', '[v6]:port' or a bare IPv6 address, comma-separated. */
export function parseUpstreams(spec: string): DnsUpstream[] {
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
      const v4 = /^([\d.]+)(?::(\d+))?$/.exec(s);
      const [address, port] = v6 ? [v6[1]!, v6[2]] : v4 ? [v4[1]!, v4[2]] : [s, undefined];
      const p = port === undefined ? 53 : Number(port);
      if (!isIP(address) || !Number.isInteger(p) || p < 1 || p > 65535)
        throw new RangeError(`DNS upstream '${s}' must be an IP address with an optional :port`);
      return { address, port: p };
    });
}

/** The `nameserver` lines of a resolv.conf text (IPv6 zone ids are dropped with their entry). */
export function resolvConfUpstreams(text: string): DnsUpstream[] {
  const out: DnsUpstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && !m[1]!.includes('%') && isIP(m[1]!)) out.push({ address: m[1]!, port: 53 });
  }
  return out;
}

/** HEARTH_DNS_UPSTREAM if set, else the host's /etc/resolv.conf. */
export function defaultUpstreams(): DnsUpstream[] {
  const env = process.env.HEARTH_DNS_UPSTREAM;
  if (env) return parseUpstreams(env);
  try {
    return resolvConfUpstreams(readFileSync('/etc/resolv.conf', 'utf8'));
  } catch {
    return [];
  }
}

/** Whether a reply to `query` has the query's id (the check that keeps stray packets out). */
function sameId(query: Buffer, reply: Buffer): boolean {
  return reply.length >= 12 && reply.readUInt16BE(0) === query.readUInt16BE(0);
}

/**
 * Sends `query` over UDP from a fresh socket (random source port) and resolves with the first
 * reply from the upstream's address and port that carries the query's id; rejects after timeoutMs.
 */
export function exchangeUdp(up: DnsUpstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(isIP(up.address) === 6 ? 'udp6' : 'udp4');
    let finished = false;
    const done = (err: Error | undefined, reply?: Buffer) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => done(new Error(`no answer from ${up.address}:${up.port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('error', (e) => done(e));
    sock.on('message', (msg, rinfo) => {
      if (rinfo.address === up.address && rinfo.port === up.port && sameId(query, msg)) done(undefined, msg);
    });
    sock.send(query, up.port, up.address);
  });
}

/** One query over TCP (two-byte length prefix each way); rejects after timeoutMs. */
export function exchangeTcp(up: DnsUpstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: up.address, port: up.port });
    let buf = Buffer.alloc(0);
    let finished = false;
    const done = (err: Error | undefined, reply?: Buffer) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => done(new Error(`no answer from ${up.address}:${up.port} (tcp) within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('error', (e) => done(e));
    sock.on('close', () => done(new Error(`${up.address}:${up.port} closed the connection`)));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      sock.write(Buffer.concat([len, query]));
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const n = buf.readUInt16BE(0);
      if (buf.length < 2 + n) return;
      const reply = buf.subarray(2, 2 + n);
      if (sameId(query, reply)) done(undefined, reply);
      else done(new Error('answer id does not match the query'));
    });
  });
}
