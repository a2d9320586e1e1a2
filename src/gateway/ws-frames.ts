/**
 * Just enough of the WebSocket framing (RFC 6455 section 5.2) to close a tunnelled connection
 * cleanly: follow frame boundaries in a byte stream without buffering or unmasking payloads, and
 * build close frames.
 */
import { randomBytes } from 'node:crypto';

/** Close codes the gateway sends. */
export const WS_CLOSE_GOING_AWAY = 1001;
export const WS_CLOSE_SERVICE_RESTART = 1012;

/**
 * Follows frame boundaries across chunks. Only headers (2-14 bytes) are read; payload bytes are
 * counted and skipped.
 */
export class FrameBoundaryTracker {
  /** Payload bytes left in the current frame. */
  private remaining = 0;
  /** Header bytes gathered so far (a header may span chunks). */
  private readonly header = Buffer.alloc(14);
  private headerLen = 0;

  /** True between frames. */
  get atBoundary(): boolean {
    return this.remaining === 0 && this.headerLen === 0;
  }

  /**
   * Moves through `chunk`. With `stopAtBoundary`, stops at the first frame boundary (possibly 0, if
   * already at one) and returns its offset; otherwise consumes everything and returns chunk.length.
   */
  advance(chunk: Buffer, stopAtBoundary = false): number {
    let i = 0;
    const n = chunk.length;
    while (true) {
      if (stopAtBoundary && this.atBoundary) return i;
      if (i >= n) return n;
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i);
        this.remaining -= take;
        i += take;
        continue;
      }
      // In a header: gather at least 2 bytes, then the whole header.
      const need = this.headerLen < 2 ? 2 : headerLength(this.header);
      const take = Math.min(need - this.headerLen, n - i);
      chunk.copy(this.header, this.headerLen, i, i + take);
      this.headerLen += take;
      i += take;
      if (this.headerLen < 2) continue;
      const full = headerLength(this.header);
      if (this.headerLen < full) continue;
      this.remaining = payloadLength(this.header);
      this.headerLen = 0;
    }
  }
}

function headerLength(h: Buffer): number {
  const len7 = h[1]! & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (h[1]! & 0x80 ? 4 : 0);
}

function payloadLength(h: Buffer): number {
  const len7 = h[1]! & 0x7f;
  if (len7 === 126) return h.readUInt16BE(2);
  if (len7 === 127) return Number(h.readBigUInt64BE(2));
  return len7;
}

/**
 * A close frame with `code` and `reason` (at most 123 bytes of UTF-8). Frames from a client to a
 * server must be masked (`masked`), frames from a server must not.
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const r = Buffer.from(reason, 'utf8').subarray(0, 123);
  const payload = Buffer.alloc(2 + r.length);
  payload.writeUInt16BE(code, 0);
  r.copy(payload, 2);
  const head = Buffer.from([0x88, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, payload]);
}
