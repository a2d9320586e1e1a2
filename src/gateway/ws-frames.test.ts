import { describe, expect, it } from 'vitest';
import { FrameBoundaryTracker, closeFrame } from './ws-frames.js';

function frame(payloadLen: number, masked: boolean, opcode = 0x2): Buffer {
  const len7 = payloadLen < 126 ? payloadLen : payloadLen < 65536 ? 126 : 127;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  const b = Buffer.alloc(2 + ext + (masked ? 4 : 0) + payloadLen, 0xaa);
  b[0] = 0x80 | opcode;
  b[1] = (masked ? 0x80 : 0) | len7;
  if (len7 === 126) b.writeUInt16BE(payloadLen, 2);
  if (len7 === 127) b.writeBigUInt64BE(BigInt(payloadLen), 2);
  return b;
}

describe('FrameBoundaryTracker', () => {
  it('finds boundaries across every header size, masked or not, split byte by byte', () => {
    for (const len of [0, 5, 125, 126, 300, 65535, 65536, 70000])
      for (const masked of [false, true]) {
        const f = frame(len, masked);
        const t = new FrameBoundaryTracker();
        for (let i = 0; i < Math.min(f.length, 20); i++) {
          t.advance(f.subarray(i, i + 1));
          expect(t.atBoundary).toBe(i === f.length - 1);
        }
        t.advance(f.subarray(Math.min(f.length, 20)));
        expect(t.atBoundary).toBe(true);
      }
  });

  it('stops at the first boundary inside a chunk', () => {
    const a = frame(10, true);
    const b = frame(3, true);
    const t = new FrameBoundaryTracker();
    expect(t.advance(a.subarray(0, 4))).toBe(4);
    const rest = Buffer.concat([a.subarray(4), b]);
    expect(t.advance(rest, true)).toBe(a.length - 4);
    expect(t.atBoundary).toBe(true);
    expect(t.advance(rest.subarray(a.length - 4))).toBe(b.length);
    expect(t.atBoundary).toBe(true);
  });

  it('builds masked and unmasked close frames', () => {
    const u = closeFrame(1012, 'service restart', false);
    expect(u[0]).toBe(0x88);
    expect(u[1]).toBe(17);
    expect(u.readUInt16BE(2)).toBe(1012);
    expect(u.subarray(4).toString()).toBe('service restart');
    const m = closeFrame(1001, 'x', true);
    expect(m[1]).toBe(0x80 | 3);
    const key = m.subarray(2, 6);
    const p = Buffer.from(m.subarray(6).map((v, i) => v ^ key[i & 3]!));
    expect(p.readUInt16BE(0)).toBe(1001);
  });
});
