import { request } from 'node:http';

export interface SimpleResponse {
  status: number;
  body: string;
}

/**
 * One HTTP GET on a fresh connection (no keep-alive pool). VM addresses are recycled between VMs,
 * so a pooled connection to "the same" address may belong to a VM that no longer exists.
 */
export function httpGet(url: string, timeoutMs = 30_000): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no reply within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
