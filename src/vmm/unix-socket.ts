import { connect, type Socket } from 'node:net';

/**
 * Connects to a Unix socket, retrying while the server (QEMU) is still creating it.
 * Rejects with the last error once `timeoutMs` has passed, or at once if `abort` says the server died.
 */
export async function connectUnix(
  path: string,
  timeoutMs: number,
  abort?: () => Error | undefined,
): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  let delayMs = 1;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once('connect', () => {
          s.removeAllListeners('error');
          resolve(s);
        });
        s.once('error', (e) => {
          s.destroy();
          reject(e);
        });
      });
    } catch (e) {
      const fatal = abort?.();
      if (fatal) throw fatal;
      if (Date.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 20);
    }
  }
}

/** Splits a byte stream into lines and hands each to `onLine` (without the newline). */
export function onLines(socket: Socket, onLine: (line: string) => void): void {
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.length > 0) onLine(line);
    }
  });
}
