/**
 * HTTP/2 client stream -> h2c stream to the app (gRPC, or X-Hearth-Proxy-Force-H2: true): headers,
 * DATA with flow control (pipe), trailers (grpc-status), and resets in both directions (a gRPC
 * cancel reaches the app; an app reset reaches the client). One h2c session per VM instance and
 * port, multiplexed (upstream.ts).
 */
import http2 from 'node:http2';
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { UpstreamAddress, VmRoute } from './backend.js';
import type { GatewayContext } from './context.js';
import { UpstreamProtocolError, UpstreamResetError, type GatewayError } from './errors.js';
import { grpcMessage, grpcStatusFor } from './respond.js';
import { forwardRequestHeaders, isHopByHopResponseHeader, type Target } from './routing.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;

export interface H2cExchange {
  stream: ServerHttp2Stream;
  headers: IncomingHttpHeaders;
  target: Target;
  route: VmRoute;
  /** Where the target's guest port is reached. */
  upstream: UpstreamAddress;
  secure: boolean;
  grpc: boolean;
  method: string;
  authority: string | undefined;
  /** Answers an error on the client stream (JSON, or a gRPC status). */
  fail: (err: unknown) => void;
}

function responseHeaders(h: IncomingHttpHeaders, keepStatus: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const k in h) {
    if (k.charCodeAt(0) === 58 /* ':' */ && !(keepStatus && k === ':status')) continue;
    if (isHopByHopResponseHeader(k)) continue;
    out[k] = h[k];
  }
  return out;
}

export interface H2cForwarding {
  /** Cuts the app side (client gone). */
  abort(): void;
  /**
   * Ends the exchange with `err`: gRPC gets the status in trailers (or trailers-only), others a
   * JSON error if nothing was sent yet, else a reset. The app side is cut.
   */
  cut(err: GatewayError): void;
}

/** Starts forwarding `x.stream` over h2c. */
export function forwardToH2c(ctx: GatewayContext, x: H2cExchange): H2cForwarding {
  const { stream, target, route } = x;
  const id = target.microvmId;
  let up: http2.ClientHttp2Stream | undefined;
  let cut = false;
  let trailers: OutgoingHttpHeaders | undefined;
  let finalTrailers: OutgoingHttpHeaders | undefined;
  const abort = () => {
    cut = true;
    if (up && !up.closed) up.close(NGHTTP2_CANCEL);
  };
  const cutWith = (err: GatewayError) => {
    if (!stream.headersSent) {
      x.fail(err);
    } else if (x.grpc) {
      if (up) up.unpipe(stream);
      finalTrailers = { 'grpc-status': String(grpcStatusFor(err)), 'grpc-message': grpcMessage(err) };
      stream.end(); // 'wantTrailers' sends the status
    } else {
      stream.close(NGHTTP2_CANCEL);
    }
    abort();
  };
  ctx.upstreams.h2c(route, target.port, x.upstream).then(
    (session) => {
      if (cut || stream.closed || stream.destroyed) return;
      const h = forwardRequestHeaders(x.headers, {
        remoteAddress: stream.session?.socket?.remoteAddress,
        proto: x.secure ? 'https' : 'http',
        keepTeTrailers: true,
      });
      delete h.host;
      h[':method'] = x.method;
      h[':path'] = target.path;
      h[':scheme'] = 'http';
      if (x.authority !== undefined) h[':authority'] = x.authority;
      const endStream = stream.endAfterHeaders;
      let s: http2.ClientHttp2Stream;
      try {
        s = session.request(h, { endStream });
      } catch (err) {
        x.fail(new UpstreamProtocolError(id, target.port, err));
        return;
      }
      up = s;
      let responded = false;
      s.on('response', (rh, flags) => {
        responded = true;
        const out = responseHeaders(rh, true);
        try {
          if (flags & NGHTTP2_FLAG_END_STREAM) {
            stream.respond(out, { endStream: true });
            return;
          }
          stream.respond(out, { waitForTrailers: true });
        } catch (err) {
          s.close(NGHTTP2_CANCEL);
          x.fail(new UpstreamProtocolError(id, target.port, err));
          return;
        }
        stream.once('wantTrailers', () => {
          try {
            stream.sendTrailers(finalTrailers ?? trailers ?? {});
          } catch {
            stream.close(NGHTTP2_INTERNAL_ERROR);
          }
        });
        s.on('data', (c: Buffer) => ctx.metrics.bytesOut(id, c.length));
        s.pipe(stream);
      });
      s.on('trailers', (t) => (trailers = responseHeaders(t, false)));
      s.on('error', () => undefined); // handled on 'close' with the reset code
      s.on('close', () => {
        const code = s.rstCode ?? NGHTTP2_NO_ERROR;
        if (code === NGHTTP2_NO_ERROR || cut || stream.closed) return;
        if (!responded) x.fail(new UpstreamResetError(id, target.port, new Error(`RST_STREAM ${code}`)));
        else stream.close(code);
      });
      if (!endStream) {
        stream.on('data', (c: Buffer) => ctx.metrics.bytesIn(id, c.length));
        stream.pipe(s);
      }
    },
    (err: unknown) => x.fail(err),
  );
  return { abort, cut: cutWith };
}
