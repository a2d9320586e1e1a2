import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { ApiError, toApiError } from '../api/errors.js';
import type { SigV4Verifier } from '../api/sigv4.js';
import type { ImageService } from '../core/images.js';
import type { MicrovmService } from '../core/microvms.js';
import type { Engine } from '../vmm/engine.js';

/** The Prometheus text exposition format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Hearth's text routes, next to the AWS API and signed the same way (text, streamed as it is
 * written, so they are not operations of the API's table; Hearth's JSON routes such as
 * /hearth/v1/network-connectors are, see src/api/connector-operations.ts):
 *   GET /hearth/v1/microvm-images/{name}/versions/{version}/logs[?follow=true]   build log
 *   GET /hearth/v1/microvms/{id}/console[?follow=true]                           guest console
 *   GET /hearth/v1/metrics                                    Prometheus text (server/metrics.ts)
 * The returned listener answers those and resolves false for every other request.
 */
export function streamRoutes(o: {
  verifier: SigV4Verifier;
  images: ImageService;
  microvms: MicrovmService;
  engine: Engine;
  metrics: () => Promise<string>;
}): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const fail = (res: ServerResponse, e: unknown) => {
    const err = e instanceof ApiError ? e : toApiError(e);
    res.writeHead(err.status, { 'content-type': 'application/json', 'x-amzn-ErrorType': err.exception });
    res.end(JSON.stringify({ message: err.message, code: err.code, hint: err.hint }));
  };
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const logs = /^\/hearth\/v1\/microvm-images\/([^/]+)\/versions\/([^/]+)\/logs$/.exec(url.pathname);
    const con = /^\/hearth\/v1\/microvms\/([^/]+)\/console$/.exec(url.pathname);
    const metrics = url.pathname === '/hearth/v1/metrics';
    if (req.method !== 'GET' || (!logs && !con && !metrics)) return false;
    try {
      await o.verifier.authenticate(
        { method: 'GET', url: req.url ?? '/', headers: req.headers as Record<string, string> },
        new Uint8Array(),
      );
      const follow = url.searchParams.get('follow') === 'true';
      if (metrics) {
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE });
        res.end(await o.metrics());
        return true;
      }
      if (logs) {
        const name = o.images.nameFromIdentifier(decodeURIComponent(logs[1]!));
        const build = await o.images.latestBuild(name, decodeURIComponent(logs[2]!));
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        for await (const line of o.images.logs.read(build.id, { follow })) {
          if (!res.write(line + '\n')) await new Promise((r) => res.once('drain', r));
        }
        res.end();
        return true;
      }
      if (con) {
        const id = decodeURIComponent(con[1]!);
        await o.microvms.get(id);
        const file = join(o.engine.ctx.dataDir.vmsDir, id, 'console.log');
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        let offset = 0;
        for (;;) {
          if (existsSync(file)) {
            const size = (await stat(file)).size;
            if (size > offset) {
              await new Promise<void>((resolve, reject) =>
                createReadStream(file, { start: offset, end: size - 1 })
                  .on('end', resolve)
                  .on('error', reject)
                  .pipe(res, { end: false }),
              );
              offset = size;
            }
          }
          const rec = await o.microvms.current(id);
          if (!follow || !rec || rec.state === 'TERMINATED' || res.destroyed) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        res.end();
        return true;
      }
      return false;
    } catch (e) {
      if (!res.headersSent) fail(res, e);
      else res.destroy();
      return true;
    }
  };
}
