/**
 * Subordinate uid and gid ranges (/etc/subuid, /etc/subgid): what rootless buildah maps root and
 * the other in-image users of a build to. `hearth setup --for-user` gives the user one when it has
 * none, the way it gives `hearth-builder` its range.
 */
import { appendFile, readFile } from 'node:fs/promises';
import { VM_SLOT_MAX, VM_UID_BASE } from '../jail/jailer.js';

/** How many subordinate ids a user gets (a build's image may use uids up to 65535). */
export const SUBID_COUNT = 65_536;
/** Where Debian's useradd starts handing out ranges. */
const FIRST_SUBID = 100_000;

interface Range {
  user: string;
  start: number;
  count: number;
}

function parseRanges(text: string): Range[] {
  const out: Range[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length !== 3) continue;
    const start = Number(f[1]);
    const count = Number(f[2]);
    if (Number.isSafeInteger(start) && Number.isSafeInteger(count) && count > 0)
      out.push({ user: f[0]!, start, count });
  }
  return out;
}

const overlaps = (a: number, aCount: number, b: number, bCount: number) => a < b + bCount && b < a + aCount;

/**
 * The range `user` has in a subuid/subgid file's `text`, or a new one: the first `count` ids at a
 * multiple of 65536 from 100000 on that overlap no other range and not the uids jailed VMs run as
 * (VM_UID_BASE...). `added` says whether the text needs the new line.
 */
export function subIdRange(
  text: string,
  user: string,
  count = SUBID_COUNT,
): { start: number; count: number; added: boolean } {
  const ranges = parseRanges(text);
  const own = ranges.find((r) => r.user === user);
  if (own) return { start: own.start, count: own.count, added: false };
  const taken = [...ranges, { user: '(vm uids)', start: VM_UID_BASE, count: VM_SLOT_MAX + 1 }];
  let start = Math.ceil(FIRST_SUBID / SUBID_COUNT) * SUBID_COUNT;
  for (;;) {
    const clash = taken.find((r) => overlaps(start, count, r.start, r.count));
    if (!clash) return { start, count, added: true };
    start = Math.ceil((clash.start + clash.count) / SUBID_COUNT) * SUBID_COUNT;
  }
}

/**
 * Gives `user` a subordinate uid and gid range if it has none (appends to /etc/subuid and
 * /etc/subgid; root only). Idempotent. Resolves with the ranges it has.
 */
export async function ensureSubIds(
  user: string,
  files: readonly string[] = ['/etc/subuid', '/etc/subgid'],
): Promise<{ file: string; start: number; count: number }[]> {
  const out = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const r = subIdRange(text, user);
    if (r.added)
      await appendFile(file, `${text && !text.endsWith('\n') ? '\n' : ''}${user}:${r.start}:${r.count}\n`);
    out.push({ file, start: r.start, count: r.count });
  }
  return out;
}

/** Whether `user` has a subordinate range in every one of `files` (what rootless buildah needs). */
export async function hasSubIds(
  user: string,
  files: readonly string[] = ['/etc/subuid', '/etc/subgid'],
): Promise<boolean> {
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (!parseRanges(text).some((r) => r.user === user)) return false;
  }
  return true;
}
