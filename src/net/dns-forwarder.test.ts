import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DnsForwarder, type DnsClient } from './dns-forwarder.js';
import { buildQuery, DNS_RCODE, DNS_TYPE, parseMessage, type DnsMessage } from './dns-wire.js';
import { parseUpstreams, resolvConfUpstreams } from './dns-upstream.js';
import { DnsForwarderError } from './errors.js';
import { startFakeDns, type FakeDns } from './testing.js';
import type { EgressPolicy } from './policy.js';

/** Sends one UDP packet from `from` and waits for a reply (undefined after waitMs). */
function udpAsk(
  port: number,
  packet: Buffer,
  from = '127.0.0.1',
  waitMs = 2_000,
): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, waitMs);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.bind(0, from, () => s.send(packet, port, '127.0.0.1'));
  });
}

async function ask(
  port: number,
  name: string,
  from?: string,
  waitMs?: number,
): Promise<DnsMessage | undefined> {
  const r = await udpAsk(port, buildQuery(Math.floor(Math.random() * 65536), name, DNS_TYPE.A), from, waitMs);
  return r && parseMessage(r);
}

function tcpAsk(port: number, packet: Buffer, from = '127.0.0.1'): Promise<Buffer | 'closed'> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: from });
    let buf = Buffer.alloc(0);
    s.on('error', () => resolve('closed'));
    s.on('close', () => resolve('closed'));
    s.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(packet.length);
      s.write(Buffer.concat([len, packet]));
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        s.destroy();
      }
    });
  });
}

describe('guest DNS forwarder', () => {
  let upstream: FakeDns;
  let fwd: DnsForwarder;
  const clients = new Map<string, DnsClient>();
  const learnt: { name: string; addresses: string[]; ttlSeconds: number; at: number }[] = [];
  let learnBehaviour: 'ok' | 'hang' | 'fail' = 'ok';

  function client(policy: EgressPolicy): DnsClient {
    return {
      policy,
      learn: async (name, addresses, ttlSeconds) => {
        if (learnBehaviour === 'hang') await new Promise(() => undefined);
        if (learnBehaviour === 'fail') throw new Error('nft said no');
        await new Promise((r) => setTimeout(r, 50)); // the answer must wait for this
        learnt.push({ name, addresses, ttlSeconds, at: Date.now() });
      },
    };
  }

  beforeAll(async () => {
    upstream = await startFakeDns(
      {
        'db.internal': ['10.77.0.10'],
        'other.internal': ['10.77.0.11'],
        'a.svc.internal': { cname: 'lb.svc.internal' },
        'lb.svc.internal': ['10.77.0.12', '10.77.0.13'],
        'svc.internal': ['10.77.0.14'],
        'public.example': ['203.0.113.10'],
      },
      { ttlSeconds: 30 },
    );
    fwd = await DnsForwarder.start({
      upstreams: [{ address: '127.0.0.1', port: upstream.port }],
      bindAddress: '127.0.0.1',
      clientFor: (a) => clients.get(a),
      learnTimeoutMs: 500,
      queryTimeoutMs: 1_500,
      attemptTimeoutMs: 700,
    });
    // 127.0.0.1: a VM with only hostname rules; 127.0.0.3: a VM with internet; 127.0.0.2: unknown.
    clients.set(
      '127.0.0.1',
      client({
        internet: false,
        allow: [
          { hostname: 'db.internal', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] },
          { hostname: '*.svc.internal', protocol: 'tcp', ports: [] },
        ],
      }),
    );
    clients.set(
      '127.0.0.3',
      client({ internet: true, allow: [{ hostname: 'db.internal', protocol: 'tcp', ports: [] }] }),
    );
  });

  afterEach(() => {
    learnt.length = 0;
    learnBehaviour = 'ok';
  });

  afterAll(async () => {
    await fwd.close();
    await upstream.close();
  });

  it('answers an allowed name, after its addresses were learnt', async () => {
    const r = await ask(fwd.port, 'DB.internal');
    const answeredAt = Date.now();
    expect(r?.rcode).toBe(DNS_RCODE.NOERROR);
    expect(r?.answers.map((a) => a.address)).toEqual(['10.77.0.10']);
    expect(learnt).toEqual([
      { name: 'db.internal', addresses: ['10.77.0.10'], ttlSeconds: 30, at: expect.any(Number) },
    ]);
    expect(learnt[0]!.at).toBeLessThanOrEqual(answeredAt);
  });

  it('wildcards cover names below the domain, through CNAMEs, not the domain itself', async () => {
    const r = await ask(fwd.port, 'a.svc.internal');
    expect(r?.rcode).toBe(DNS_RCODE.NOERROR);
    expect(learnt.map((l) => [l.name, l.addresses])).toEqual([
      ['a.svc.internal', ['10.77.0.12', '10.77.0.13']],
    ]);
    const before = upstream.asked.length;
    expect((await ask(fwd.port, 'svc.internal'))?.rcode).toBe(DNS_RCODE.REFUSED);
    expect(upstream.asked.length).toBe(before);
  });

  it('refuses other names without asking upstream', async () => {
    const before = upstream.asked.length;
    for (const name of ['other.internal', 'db.internal.evil.example', 'xdb.internal', 'public.example']) {
      const r = await ask(fwd.port, name);
      expect(r?.rcode).toBe(DNS_RCODE.REFUSED);
      expect(r?.questions[0]?.name).toBe(name);
    }
    expect(upstream.asked.length).toBe(before);
    expect(learnt).toEqual([]);
  });

  it('with internet forwards any name, and learns only names a rule covers', async () => {
    const r = await ask(fwd.port, 'public.example', '127.0.0.3');
    expect(r?.answers[0]?.address).toBe('203.0.113.10');
    expect((await ask(fwd.port, 'nowhere.example', '127.0.0.3'))?.rcode).toBe(DNS_RCODE.NXDOMAIN);
    expect(learnt).toEqual([]);
    await ask(fwd.port, 'db.internal', '127.0.0.3');
    expect(learnt.map((l) => l.name)).toEqual(['db.internal']);
  });

  it('does not answer sources that are not VMs in use (UDP and TCP)', async () => {
    const before = upstream.asked.length;
    expect(await ask(fwd.port, 'db.internal', '127.0.0.2', 600)).toBeUndefined();
    expect(await tcpAsk(fwd.port, buildQuery(1, 'db.internal', DNS_TYPE.A), '127.0.0.2')).toBe('closed');
    expect(upstream.asked.length).toBe(before);
  });

  it('answers over TCP', async () => {
    const r = await tcpAsk(fwd.port, buildQuery(99, 'db.internal', DNS_TYPE.A));
    expect(r).not.toBe('closed');
    const m = parseMessage(r as Buffer);
    expect(m).toMatchObject({ id: 99, rcode: DNS_RCODE.NOERROR });
    expect(m.answers[0]?.address).toBe('10.77.0.10');
  });

  it('still answers when learning fails or hangs (bounded by learnTimeoutMs)', async () => {
    learnBehaviour = 'fail';
    expect((await ask(fwd.port, 'db.internal'))?.answers[0]?.address).toBe('10.77.0.10');
    learnBehaviour = 'hang';
    const t0 = Date.now();
    expect((await ask(fwd.port, 'db.internal'))?.answers[0]?.address).toBe('10.77.0.10');
    expect(Date.now() - t0).toBeLessThan(1_500);
  });

  it('survives hostile packets: FORMERR or silence, and keeps serving', async () => {
    const q = buildQuery(5, 'db.internal', DNS_TYPE.A);
    const loop = Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    const twoQuestions = Buffer.concat([q.subarray(0, 5), Buffer.from([2]), q.subarray(6), q.subarray(12)]);
    const response = Buffer.from(q);
    response.writeUInt8(response[2]! | 0x80, 2);
    const r1 = await udpAsk(fwd.port, loop);
    expect(parseMessage(r1!)).toMatchObject({ id: 7, rcode: DNS_RCODE.FORMERR });
    expect(parseMessage((await udpAsk(fwd.port, twoQuestions))!).rcode).toBe(DNS_RCODE.FORMERR);
    expect(await udpAsk(fwd.port, Buffer.from([1, 2, 3]), undefined, 300)).toBeUndefined();
    expect(await udpAsk(fwd.port, response, undefined, 300)).toBeUndefined();
    const garbage = Array.from({ length: 300 }, (_, i) =>
      Buffer.from(Array.from({ length: i % 40 }, (_, k) => (i * 31 + k * 7) & 255)),
    );
    await Promise.all(garbage.map((g) => udpAsk(fwd.port, g, undefined, 200)));
    expect((await ask(fwd.port, 'db.internal'))?.rcode).toBe(DNS_RCODE.NOERROR);
  });

  it('answers SERVFAIL within its deadline when no upstream answers', async () => {
    const dead = createSocket('udp4');
    await new Promise<void>((r) => dead.bind(0, '127.0.0.1', r));
    const f = await DnsForwarder.start({
      upstreams: [{ address: '127.0.0.1', port: dead.address().port }],
      bindAddress: '127.0.0.1',
      clientFor: (a) => clients.get(a),
      queryTimeoutMs: 800,
      attemptTimeoutMs: 300,
    });
    try {
      const t0 = Date.now();
      expect((await ask(f.port, 'db.internal'))?.rcode).toBe(DNS_RCODE.SERVFAIL);
      expect(Date.now() - t0).toBeLessThan(1_500);
      expect(await f.resolveIpv4('db.internal', 300)).toEqual({ addresses: [], ttlSeconds: 0 });
    } finally {
      await f.close();
      dead.close();
    }
  });

  it('resolves names on the host through the same upstreams', async () => {
    expect(await fwd.resolveIpv4('a.svc.internal', 1_000)).toEqual({
      addresses: ['10.77.0.12', '10.77.0.13'],
      ttlSeconds: 30,
    });
    expect(await fwd.resolveIpv4('missing.internal', 1_000)).toEqual({ addresses: [], ttlSeconds: 0 });
  });

  it('refuses to start without upstreams', async () => {
    await expect(DnsForwarder.start({ upstreams: [], clientFor: () => undefined })).rejects.toBeInstanceOf(
      DnsForwarderError,
    );
  });

  it('reads upstreams from resolv.conf text and HEARTH_DNS_UPSTREAM syntax', () => {
    expect(
      resolvConfUpstreams(
        '# c\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver ::1\nsearch x\n',
      ),
    ).toEqual([
      { address: '10.255.255.53', port: 53 },
      { address: '::1', port: 53 },
    ]);
    expect(parseUpstreams('127.0.0.1:5353, 1.1.1.1,[::1]:54')).toEqual([
      { address: '127.0.0.1', port: 5353 },
      { address: '1.1.1.1', port: 53 },
      { address: '::1', port: 54 },
    ]);
    expect(() => parseUpstreams('dns.example:53')).toThrow(RangeError);
  });
});
