/** IPv4 addresses and networks as unsigned 32-bit numbers: parsing, formatting, overlap. */

/** An IPv4 network: `base` has no host bits set. */
export interface Cidr {
  base: number;
  prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** The address as a number, or undefined if `s` is not a dotted-quad IPv4 address. */
export function parseIpv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses 'a.b.c.d/p' (or a bare address, as /32). Undefined if malformed; `hostBits` is true when the
 * address has bits set below the prefix (e.g. 10.0.5.7/24), which callers may refuse.
 */
export function parseCidr(s: string): (Cidr & { hostBits: boolean }) | undefined {
  const [addr, len, extra] = s.split('/');
  if (extra !== undefined || addr === undefined) return undefined;
  const ip = parseIpv4(addr);
  if (ip === undefined) return undefined;
  if (len !== undefined && !/^(3[0-2]|[12]?\d)$/.test(len)) return undefined;
  const prefix = len === undefined ? 32 : Number(len);
  const base = (ip & mask(prefix)) >>> 0;
  return { base, prefix, hostBits: base !== ip };
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.base)}/${c.prefix}`;
}

/** Whether two networks share at least one address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  const m = mask(Math.min(a.prefix, b.prefix));
  return (a.base & m) >>> 0 === (b.base & m) >>> 0;
}

/** Whether `ip` (a number) lies in `c`. */
export function cidrContains(c: Cidr, ip: number): boolean {
  return (ip & mask(c.prefix)) >>> 0 === c.base;
}

/** Parses a CIDR the caller knows is well formed (constants); throws otherwise. */
export function cidr(s: string): Cidr {
  const c = parseCidr(s);
  if (!c || c.hostBits) throw new RangeError(`bad CIDR constant '${s}'`);
  return { base: c.base, prefix: c.prefix };
}
