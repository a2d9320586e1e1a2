import { describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { decodeCursor, encodeCursor, pageLimit, toPage } from './pagination.js';

describe('cursors', () => {
  it('round-trip a key for their own listing', () => {
    const c = encodeCursor('microvms', ['2025-01-01T00:00:00.000Z', 'vm-1']);
    expect(c).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeCursor<[string, string]>('microvms', c, ['string', 'string'])).toEqual([
      '2025-01-01T00:00:00.000Z',
      'vm-1',
    ]);
    expect(decodeCursor<[number]>('v', encodeCursor('v', [7]), ['number'])).toEqual([7]);
  });

  it('are refused by another listing, with the wrong shape, or garbled', () => {
    const bad = [
      () => decodeCursor('images', encodeCursor('microvms', ['a']), ['string']),
      () => decodeCursor('images', encodeCursor('images', ['a', 'b']), ['string']),
      () => decodeCursor('images', encodeCursor('images', [1]), ['string']),
      () => decodeCursor('images', 'not base64 json', ['string']),
      () => decodeCursor('images', Buffer.from('null').toString('base64url'), ['string']),
      () => decodeCursor('images', Buffer.from('{"l":"images","k":"a"}').toString('base64url'), ['string']),
    ];
    for (const f of bad) {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, 'STORE_INVALID_ARGUMENT')).toBe(true);
    }
  });
});

describe('pages', () => {
  it('default to 50 rows and allow 1..1000', () => {
    expect(pageLimit({})).toBe(50);
    expect(pageLimit({ limit: 1 })).toBe(1);
    expect(pageLimit({ limit: 1000 })).toBe(1000);
    expect(() => pageLimit({ limit: 0 })).toThrow(/invalid limit/);
    expect(() => pageLimit({ limit: Number.NaN })).toThrow(/invalid limit/);
  });

  it('carry a cursor only when more rows were fetched than the limit', () => {
    const key = (n: number) => [n];
    const id = (n: number) => n;
    expect(toPage([1, 2], 2, 'x', key, id)).toEqual({ items: [1, 2] });
    const page = toPage([1, 2, 3], 2, 'x', key, id);
    expect(page.items).toEqual([1, 2]);
    expect(decodeCursor<[number]>('x', page.nextCursor!, ['number'])).toEqual([2]);
    expect(toPage([], 2, 'x', key, id)).toEqual({ items: [] });
  });
});
