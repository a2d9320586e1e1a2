/**
 * The small part of the DNS wire format (RFC 1035) Hearth's guest resolver needs: read a query's
 * question, read the A/AAAA/CNAME records of an answer, build queries and simple responses.
 * Packets come from guests and from the network: every read is bounds-checked, compression
 * pointers may only point backwards (no loops), and anything malformed throws DnsFormatError,
 * never anything else.
 */

export const DNS_TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  OPT: 41,
} as const;
export const DNS_CLASS_IN = 1;
export const DNS_RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const HEADER_BYTES = 12;
const MAX_NAME_BYTES = 255;
const MAX_POINTER_JUMPS = 64;
/** More questions or answers than any real resolver sends; the rest of the message is ignored. */
const MAX_RECORDS = 512;

export class DnsFormatError extends Error {
  constructor(message: string) {
    super(`malformed DNS message: ${message}`);
    this.name = 'DnsFormatError';
  }
}

export interface DnsQuestion {
  /** Lower case, no trailing dot; bytes other than letters, digits, '-' and '_' escaped as \DDD. */
  name: string;
  type: number;
  class: number;
}

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttlSeconds: number;
  /** A and AAAA: the address in text form. */
  address?: string;
  /** CNAME: the canonical name. */
  target?: string;
}

export interface DnsMessage {
  id: number;
  /** The 16 flag bits as sent (QR, opcode, AA, TC, RD, RA, Z, rcode). */
  flags: number;
  isResponse: boolean;
  opcode: number;
  rcode: number;
  truncated: boolean;
  recursionDesired: boolean;
  questions: DnsQuestion[];
  /** The answer section (authority and additional sections are not read). */
  answers: DnsRecord[];
}

function need(buf: Buffer, offset: number, bytes: number, what: string): void {
  if (offset < 0 || offset + bytes > buf.length) throw new DnsFormatError(`${what} runs past the end`);
}

function labelText(buf: Buffer, start: number, len: number): string {
  let s = '';
  for (let i = start; i < start + len; i++) {
    const c = buf[i]!;
    const lower = c >= 0x41 && c <= 0x5a ? c + 32 : c;
    const plain =
      (lower >= 0x61 && lower <= 0x7a) ||
      (lower >= 0x30 && lower <= 0x39) ||
      lower === 0x2d ||
      lower === 0x5f;
    s += plain ? String.fromCharCode(lower) : `\\${String(c).padStart(3, '0')}`;
  }
  return s;
}

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it in place. */
export function readName(buf: Buffer, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = offset;
  let next = -1;
  let jumps = 0;
  let wireBytes = 1;
  // Pointers must go strictly backwards: each jump lands before the previous label start, so a
  // chain of pointers always ends.
  let floor = offset;
  for (;;) {
    need(buf, pos, 1, 'name');
    const len = buf[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      need(buf, pos, 2, 'name pointer');
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (target >= floor) throw new DnsFormatError('name pointer does not point backwards');
      if (++jumps > MAX_POINTER_JUMPS) throw new DnsFormatError('too many name pointers');
      if (next < 0) next = pos + 2;
      pos = target;
      floor = target;
      continue;
    }
    if (kind !== 0) throw new DnsFormatError('unsupported label type');
    need(buf, pos + 1, len, 'label');
    wireBytes += len + 1;
    if (wireBytes > MAX_NAME_BYTES) throw new DnsFormatError('name longer than 255 bytes');
    labels.push(labelText(buf, pos + 1, len));
    pos += len + 1;
  }
  return { name: labels.join('.'), next };
}

function formatIpv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/**
 * Parses a message's header, question section and answer section. Throws DnsFormatError if any of
 * it is malformed.
 */
export function parseMessage(buf: Buffer): DnsMessage {
  need(buf, 0, HEADER_BYTES, 'header');
  const flags = buf.readUInt16BE(2);
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  if (qd > MAX_RECORDS || an > MAX_RECORDS) throw new DnsFormatError('too many records');
  let pos = HEADER_BYTES;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qd; i++) {
    const n = readName(buf, pos);
    need(buf, n.next, 4, 'question');
    questions.push({ name: n.name, type: buf.readUInt16BE(n.next), class: buf.readUInt16BE(n.next + 2) });
    pos = n.next + 4;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an; i++) {
    const n = readName(buf, pos);
    need(buf, n.next, 10, 'record header');
    const type = buf.readUInt16BE(n.next);
    const klass = buf.readUInt16BE(n.next + 2);
    const ttlSeconds = buf.readUInt32BE(n.next + 4);
    const rdlen = buf.readUInt16BE(n.next + 8);
    const rdata = n.next + 10;
    need(buf, rdata, rdlen, 'record data');
    const rec: DnsRecord = { name: n.name, type, class: klass, ttlSeconds };
    if (type === DNS_TYPE.A && klass === DNS_CLASS_IN) {
      if (rdlen !== 4) throw new DnsFormatError('A record is not 4 bytes');
      rec.address = [...buf.subarray(rdata, rdata + 4)].join('.');
    } else if (type === DNS_TYPE.AAAA && klass === DNS_CLASS_IN) {
      if (rdlen !== 16) throw new DnsFormatError('AAAA record is not 16 bytes');
      rec.address = formatIpv6(buf.subarray(rdata, rdata + 16));
    } else if (type === DNS_TYPE.CNAME) {
      const t = readName(buf, rdata);
      if (t.next > rdata + rdlen) throw new DnsFormatError('CNAME runs past its record');
      rec.target = t.name;
    }
    answers.push(rec);
    pos = rdata + rdlen;
  }
  return {
    id: buf.readUInt16BE(0),
    flags,
    isResponse: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    rcode: flags & 0xf,
    truncated: (flags & 0x0200) !== 0,
    recursionDesired: (flags & 0x0100) !== 0,
    questions,
    answers,
  };
}

/** Encodes a name (no compression). Throws RangeError for empty labels or names too long. */
export function encodeName(name: string): Buffer {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  if (trimmed === '') return Buffer.from([0]);
  const parts: Buffer[] = [];
  for (const label of trimmed.split('.')) {
    const b = Buffer.from(label, 'ascii');
    if (b.length < 1 || b.length > 63) throw new RangeError(`DNS label '${label}' must be 1-63 bytes`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > MAX_NAME_BYTES) throw new RangeError('DNS name longer than 255 bytes');
  return out;
}

function header(id: number, flags: number, qd: number, an: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt16BE(id & 0xffff, 0);
  h.writeUInt16BE(flags & 0xffff, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  return h;
}

function question(q: Pick<DnsQuestion, 'name' | 'type'> & { class?: number }): Buffer {
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(q.type, 0);
  tail.writeUInt16BE(q.class ?? DNS_CLASS_IN, 2);
  return Buffer.concat([encodeName(q.name), tail]);
}

/** A recursive query for one name. */
export function buildQuery(id: number, name: string, type: number): Buffer {
  return Buffer.concat([header(id, 0x0100, 1, 0), question({ name, type })]);
}

/** What `buildResponse` can put in the answer section. */
export type AnswerSpec =
  | { name: string; type: typeof DNS_TYPE.A | typeof DNS_TYPE.AAAA; ttlSeconds: number; address: string }
  | { name: string; type: typeof DNS_TYPE.CNAME; ttlSeconds: number; target: string };

function ipv6Bytes(s: string): Buffer {
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) throw new RangeError(`bad IPv6 address '${s}'`);
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

function answer(a: AnswerSpec): Buffer {
  let rdata: Buffer;
  if (a.type === DNS_TYPE.CNAME) rdata = encodeName(a.target);
  else if (a.type === DNS_TYPE.A) rdata = Buffer.from(a.address.split('.').map(Number));
  else rdata = ipv6Bytes(a.address);
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(a.type, 0);
  fixed.writeUInt16BE(DNS_CLASS_IN, 2);
  fixed.writeUInt32BE(a.ttlSeconds >>> 0, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([encodeName(a.name), fixed, rdata]);
}

/**
 * A response to `query` (its id, opcode, RD bit and question echoed) with `rcode` and, optionally,
 * answers. Recursion is reported available.
 */
export function buildResponse(
  query: Pick<DnsMessage, 'id' | 'flags' | 'questions'>,
  rcode: number,
  answers: AnswerSpec[] = [],
): Buffer {
  const flags = 0x8000 | (query.flags & 0x7900) | 0x0080 | (rcode & 0xf);
  return Buffer.concat([
    header(query.id, flags, query.questions.length, answers.length),
    ...query.questions.map(question),
    ...answers.map(answer),
  ]);
}

/**
 * A bare error response (header only) to a packet that could not be parsed, or undefined if it is
 * too short to carry a query id, or is itself a response (never answer those: no reflection loops).
 */
export function errorResponseFor(packet: Buffer, rcode: number): Buffer | undefined {
  if (packet.length < HEADER_BYTES) return undefined;
  const flags = packet.readUInt16BE(2);
  if (flags & 0x8000) return undefined;
  return header(packet.readUInt16BE(0), 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xf), 0, 0);
}

/**
 * The IPv4 addresses an answer gives for `name`, following CNAMEs within the answer section, and
 * the smallest TTL along the way (seconds; 0 if there is no address).
 */
export function ipv4AnswersFor(
  msg: Pick<DnsMessage, 'answers'>,
  name: string,
): { addresses: string[]; ttlSeconds: number } {
  const names = new Set([name]);
  let ttl = Infinity;
  for (let grew = true, rounds = 0; grew && rounds < 16; rounds++) {
    grew = false;
    for (const r of msg.answers) {
      if (r.type === DNS_TYPE.CNAME && r.target && names.has(r.name) && !names.has(r.target)) {
        names.add(r.target);
        ttl = Math.min(ttl, r.ttlSeconds);
        grew = true;
      }
    }
  }
  const addresses = new Set<string>();
  for (const r of msg.answers) {
    if (r.type === DNS_TYPE.A && r.address && names.has(r.name)) {
      addresses.add(r.address);
      ttl = Math.min(ttl, r.ttlSeconds);
    }
  }
  return { addresses: [...addresses], ttlSeconds: addresses.size ? ttl : 0 };
}
