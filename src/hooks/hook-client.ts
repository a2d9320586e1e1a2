import { request } from 'node:http';

export type HookName = 'ready' | 'validate' | 'run' | 'resume' | 'suspend' | 'terminate';

/** Where an app serves its hooks: POST /hearth/runtime/v1/<hook> on its hook port. */
export function hookPath(hook: HookName): string {
  return `/hearth/runtime/v1/${hook}`;
}

export interface HookResult {
  /** HTTP status, or 0 when no HTTP answer came (refused, reset, timed out). */
  status: number;
  body: string;
  /** Why there was no answer, when status is 0. */
  error?: string;
}

/**
 * One hook call: POST with a JSON body to the app's hook port, on a fresh connection, answered or
 * abandoned within `timeoutMs`. Never throws: a failure is a result with status 0.
 */
export function callHook(
  host: string,
  port: number,
  hook: HookName,
  body: unknown,
  timeoutMs: number,
): Promise<HookResult> {
  const payload = Buffer.from(JSON.stringify(body ?? {}));
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: HookResult) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(r);
      }
    };
    const req = request(
      {
        host,
        port,
        path: hookPath(hook),
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= 64 * 1024) chunks.push(c);
        });
        res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', (e) => done({ status: 0, body: '', error: e.message }));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      done({ status: 0, body: '', error: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('error', (e) => done({ status: 0, body: '', error: e.message }));
    req.end(payload);
  });
}

/**
 * Calls a hook until it answers 200, while it answers 503 (or cannot be reached yet), for at most
 * `deadlineMs`. Resolves with the last result; `ok` says whether a 200 came.
 */
export async function callHookUntilOk(
  host: string,
  port: number,
  hook: HookName,
  body: unknown,
  deadlineMs: number,
  opts: { retryDelayMs?: number; abort?: () => Error | undefined } = {},
): Promise<HookResult & { ok: boolean; attempts: number }> {
  const end = Date.now() + deadlineMs;
  let attempts = 0;
  for (;;) {
    attempts++;
    const r = await callHook(host, port, hook, body, Math.max(100, Math.min(30_000, end - Date.now())));
    if (r.status === 200) return { ...r, ok: true, attempts };
    const retryable = r.status === 503 || r.status === 0;
    const fatal = opts.abort?.();
    if (fatal) throw fatal;
    if (!retryable || Date.now() >= end) return { ...r, ok: false, attempts };
    await new Promise((res) => setTimeout(res, opts.retryDelayMs ?? 100));
  }
}
