import { describe, expect, it } from 'vitest';
import {
  buildQuery,
  buildResponse,
  DNS_RCODE,
  DNS_TYPE,
  DnsFormatError,
  encodeName,
  errorResponseFor,
  ipv4AnswersFor,
  parseMessage,
  readName,
} from './dns-wire.js';

/** A hand-assembled response for www.example.com: CNAME to cdn.example.net, A 93.184.216.34, with compression. */
function compressedAnswer(): Buffer {
  const header = Buffer.from([0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0]);
  const qname = encodeName('www.example.com'); // at offset 12
  const q = Buffer.concat([qname, Buffer.from([0, 1, 0, 1])]);
  // CNAME: name = pointer to 12; rdata = "cdn" + pointer to "example" label? use "cdn.example.net" literal
  const cnameTarget = encodeName('cdn.example.net');
  const cname = Buffer.concat([
    Buffer.from([0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, cnameTarget.length]),
    cnameTarget,
  ]);
  const targetOffset = 12 + q.length + 12; // where cdn.example.net starts
  const a = Buffer.from([0xc0, targetOffset, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 93, 184, 216, 34]);
  const aaaa = Buffer.concat([
    Buffer.from([0xc0, targetOffset, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]),
    Buffer.from('20010db8000000000000000000000001', 'hex'),
  ]);
  return Buffer.concat([header, q, cname, a, aaaa]);
}

describe('DNS wire format', () => {
  it('builds and parses a query', () => {
    const q = parseMessage(buildQuery(0xbeef, 'Db.Internal', DNS_TYPE.A));
    expect(q).toMatchObject({ id: 0xbeef, isResponse: false, opcode: 0, recursionDesired: true });
    expect(q.questions).toEqual([{ name: 'db.internal', type: DNS_TYPE.A, class: 1 }]);
    expect(q.answers).toEqual([]);
  });

  it('parses A, AAAA and CNAME answers through compression pointers', () => {
    const m = parseMessage(compressedAnswer());
    expect(m.isResponse).toBe(true);
    expect(m.answers).toEqual([
      { name: 'www.example.com', type: DNS_TYPE.CNAME, class: 1, ttlSeconds: 30, target: 'cdn.example.net' },
      { name: 'cdn.example.net', type: DNS_TYPE.A, class: 1, ttlSeconds: 256, address: '93.184.216.34' },
      {
        name: 'cdn.example.net',
        type: DNS_TYPE.AAAA,
        class: 1,
        ttlSeconds: 60,
        address: '2001:db8:0:0:0:0:0:1',
      },
    ]);
    // The address is reached through the CNAME; the TTL is the smallest along the chain.
    expect(ipv4AnswersFor(m, 'www.example.com')).toEqual({ addresses: ['93.184.216.34'], ttlSeconds: 30 });
    expect(ipv4AnswersFor(m, 'other.example.com')).toEqual({ addresses: [], ttlSeconds: 0 });
  });

  it('round-trips responses it builds (used for REFUSED and by test servers)', () => {
    const query = parseMessage(buildQuery(7, 'a.svc.internal', DNS_TYPE.A));
    const r = parseMessage(
      buildResponse(query, DNS_RCODE.NOERROR, [
        { name: 'a.svc.internal', type: DNS_TYPE.CNAME, ttlSeconds: 5, target: 'b.svc.internal' },
        { name: 'b.svc.internal', type: DNS_TYPE.A, ttlSeconds: 120, address: '10.0.0.9' },
        { name: 'b.svc.internal', type: DNS_TYPE.AAAA, ttlSeconds: 120, address: 'fd00::9' },
      ]),
    );
    expect(r).toMatchObject({ id: 7, isResponse: true, rcode: 0, recursionDesired: true });
    expect(r.questions[0]!.name).toBe('a.svc.internal');
    expect(r.answers[2]!.address).toBe('fd00:0:0:0:0:0:0:9');
    expect(ipv4AnswersFor(r, 'a.svc.internal')).toEqual({ addresses: ['10.0.0.9'], ttlSeconds: 5 });
    const refused = parseMessage(buildResponse(query, DNS_RCODE.REFUSED));
    expect(refused.rcode).toBe(DNS_RCODE.REFUSED);
    expect(refused.answers).toEqual([]);
  });

  it('escapes odd bytes in names so they can never equal a rule name', () => {
    const b = Buffer.from([3, 0x64, 0x2e, 0x62, 2, 0x41, 0x00, 0]); // "d.b" "A\0"
    expect(readName(b, 0).name).toBe('d\\046b.a\\000');
  });

  const hostile: [string, Buffer][] = [
    ['shorter than a header', Buffer.from([1, 2, 3])],
    ['question past the end', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 0x61])],
    ['pointer loop to itself', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1])],
    ['forward pointer', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0, 0, 1, 0, 1])],
    ['pointer past the end', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff])],
    ['extended label type', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0, 0, 1, 0, 1])],
    ['answer count larger than the data', Buffer.from([0, 1, 0x81, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0])],
    [
      'A record of 5 bytes',
      Buffer.from([0, 1, 0x81, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5]),
    ],
    [
      'record data past the end',
      Buffer.from([0, 1, 0x81, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 200, 1, 2]),
    ],
    [
      'name longer than 255 bytes',
      Buffer.concat([
        Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        Buffer.from(Array.from({ length: 5 }, () => [63, ...Buffer.alloc(63, 0x61)]).flat()),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
    ],
  ];
  it.each(hostile)('refuses a malformed message (%s) with DnsFormatError only', (_, b) => {
    expect(() => parseMessage(b)).toThrow(DnsFormatError);
  });

  it('survives random garbage: parse only ever throws DnsFormatError', () => {
    let seed = 42;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed);
    const base = compressedAnswer();
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.from(base);
      for (let k = 0; k < 1 + (rnd() % 6); k++) b[rnd() % b.length] = rnd() & 255;
      const cut = b.subarray(0, rnd() % (b.length + 1));
      try {
        parseMessage(cut);
      } catch (e) {
        expect(e).toBeInstanceOf(DnsFormatError);
      }
    }
  });

  it('answers unparseable queries with a bare error header, never responses or runts', () => {
    const q = buildQuery(0x4242, 'x.test', DNS_TYPE.A);
    const r = parseMessage(errorResponseFor(q, DNS_RCODE.FORMERR)!);
    expect(r).toMatchObject({ id: 0x4242, isResponse: true, rcode: DNS_RCODE.FORMERR, questions: [] });
    expect(errorResponseFor(Buffer.from([1, 2, 3]), DNS_RCODE.FORMERR)).toBeUndefined();
    expect(errorResponseFor(buildResponse(parseMessage(q), 0), DNS_RCODE.FORMERR)).toBeUndefined();
  });

  it('refuses to encode impossible names', () => {
    expect(() => encodeName('a'.repeat(64) + '.com')).toThrow(RangeError);
    expect(() => encodeName('a..b')).toThrow(RangeError);
    expect(() => encodeName(Array(130).fill('ab').join('.'))).toThrow(RangeError);
    expect(encodeName('.')).toEqual(Buffer.from([0]));
  });
});
