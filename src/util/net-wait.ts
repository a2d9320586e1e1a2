import { connect } from 'node:net';

/** Resolves once a TCP connection to host:port succeeds; rejects after `timeoutMs`. */
export async function waitForTcp(
  host: string,
  port: number,
  timeoutMs: number,
  abort?: () => Error | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      const t = setTimeout(
        () => {
          s.destroy();
          resolve(false);
        },
        Math.max(50, Math.min(1000, deadline - Date.now())),
      );
      s.once('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        clearTimeout(t);
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    const fatal = abort?.();
    if (fatal) throw fatal;
    if (Date.now() >= deadline)
      throw new Error(`${host}:${port} not accepting connections after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
