/**
 * A tiny authoritative DNS server for tests (UDP and TCP on one port): answers A queries for the
 * names it is given, NXDOMAIN for others, and counts the questions it was asked.
 */
import { createSocket } from 'node:dgram';
import { createServer, type Socket } from 'node:net';
import { buildResponse, DNS_RCODE, DNS_TYPE, parseMessage, type AnswerSpec } from './dns-wire.js';

export interface FakeDns {
  port: number;
  /** Names asked, in order (lower case). */
  asked: string[];
  close(): Promise<void>;
}

/** `records`: name -> IPv4 addresses, or { cname } to answer with a CNAME then the target's addresses. */
export async function startFakeDns(
  records: Record<string, string[] | { cname: string }>,
  opts: { host?: string; ttlSeconds?: number } = {},
): Promise<FakeDns> {
  const host = opts.host ?? '127.0.0.1';
  const ttlSeconds = opts.ttlSeconds ?? 300;
  const asked: string[] = [];
  const answer = (packet: Buffer): Buffer | undefined => {
    let q;
    try {
      q = parseMessage(packet);
    } catch {
      return undefined;
    }
    const name = q.questions[0]?.name ?? '';
    asked.push(name);
    const answers: AnswerSpec[] = [];
    let current = name;
    for (let i = 0; i < 8; i++) {
      const r = records[current];
      if (!r) break;
      if (Array.isArray(r)) {
        if (q.questions[0]!.type === DNS_TYPE.A)
          for (const address of r) answers.push({ name: current, type: DNS_TYPE.A, ttlSeconds, address });
        break;
      }
      answers.push({ name: current, type: DNS_TYPE.CNAME, ttlSeconds, target: r.cname });
      current = r.cname;
    }
    return buildResponse(q, records[name] ? DNS_RCODE.NOERROR : DNS_RCODE.NXDOMAIN, answers);
  };
  // UDP and TCP on one port: retry when the TCP side of a free UDP port happens to be taken.
  for (let attempt = 0; ; attempt++) {
    const udp = createSocket('udp4');
    udp.on('message', (msg, rinfo) => {
      const r = answer(msg);
      if (r) udp.send(r, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => udp.bind(0, host, r));
    const port = udp.address().port;
    const conns = new Set<Socket>();
    const tcp = createServer((sock) => serveTcp(sock, conns));
    const ok = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false));
      tcp.listen(port, host, () => r(true));
    });
    if (!ok) {
      udp.close();
      if (attempt < 10) continue;
      throw new Error('fake DNS: no free UDP+TCP port');
    }
    return {
      port,
      asked,
      close: async () => {
        for (const c of conns) c.destroy();
        await Promise.all([
          new Promise<void>((r) => tcp.close(() => r())),
          new Promise<void>((r) => udp.close(() => r())),
        ]);
      },
    };
  }

  function serveTcp(sock: Socket, conns: Set<Socket>): void {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    let buf = Buffer.alloc(0);
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const r = answer(msg);
        if (!r) continue;
        const len = Buffer.alloc(2);
        len.writeUInt16BE(r.length);
        sock.write(Buffer.concat([len, r]));
      }
    });
  }
}
