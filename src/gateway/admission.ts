/**
 * The checks every request passes before it is forwarded, whatever its protocol, in this order:
 * token (signature, time, VM, port) → microVM exists → not terminated/terminating → token generation
 * → ingress connector (NO_INGRESS refuses everything; only ALL_INGRESS takes CONNECT tunnels) → rate
 * limit → RUNNING (holding the request while the backend resumes or starts the VM, bounded).
 * Authentication comes first so that nothing about a microVM is revealed to a caller without a valid
 * token for it; a caller with one learns it is terminated (410/409) rather than that the token is stale.
 */
import { HearthError } from '../errors.js';
import type { GatewayBackend, UpstreamAddress, VmRoute } from './backend.js';
import {
  GatewayError,
  IngressDisabledError,
  IngressProtocolNotAllowedError,
  MicrovmNotFoundError,
  MicrovmNotReadyError,
  MicrovmSuspendedError,
  MicrovmTerminatedError,
  MicrovmTerminatingError,
  RateLimitedError,
  ResumeFailedError,
  ResumeTimeoutError,
  UpstreamUnreachableError,
} from './errors.js';
import type { GatewayMetrics } from './metrics.js';
import type { RateLimiter } from './rate-limit.js';
import type { Target } from './routing.js';
import { generationError, type TokenAuthority } from './tokens.js';

/** The client went away while its request was held: nothing to answer. */
export class ClientGoneError extends Error {
  constructor() {
    super('client gone');
  }
}

/** What the client asks for: HTTP (HTTP/1.1, HTTP/2, gRPC, WebSocket) or a raw TCP tunnel (CONNECT). */
export type IngressKind = 'http' | 'tcp';

/**
 * A request that may be forwarded: the RUNNING route, where to connect for the requested guest
 * port, and when its token expires (cookie lifetime).
 */
export interface Admitted {
  route: VmRoute;
  upstream: UpstreamAddress;
  tokenExpiresAtS: number;
}

export interface AdmissionOptions {
  backend: GatewayBackend;
  tokens: TokenAuthority;
  metrics: GatewayMetrics;
  rateLimiter: RateLimiter | undefined;
  /** How long a request is held while a VM resumes or starts. */
  resumeTimeoutMs: number;
}

/** Where to connect for guest port `port` of a RUNNING route (UPSTREAM_UNREACHABLE if it cannot say). */
async function upstreamAddress(route: VmRoute, port: number): Promise<UpstreamAddress> {
  if (!route.connectAddress) return { host: route.address!, port };
  try {
    return await route.connectAddress(port);
  } catch (e) {
    throw new UpstreamUnreachableError(route.microvmId, port, e);
  }
}

export class Admission {
  constructor(private readonly o: AdmissionOptions) {}

  /**
   * Checks `t` (a request of kind `kind`) and resolves with the RUNNING route to forward to
   * (route.address is set) and the address of the token's port (`t.port`) there. Throws the GatewayError to answer, or ClientGoneError when the client
   * went away while the request was held (`signal()` aborted; it is only asked for when the request
   * must be held). Effects: one 'request' activity event once authenticated and let in by the
   * ingress connector; may make the backend resume the VM (never for a refused one).
   */
  async admit(t: Target, signal: () => AbortSignal, kind: IngressKind = 'http'): Promise<Admitted> {
    const id = t.microvmId;
    const v = await this.o.tokens.verify(t.token, { microvmId: id, port: t.port });
    if (!v.ok) throw v.error;
    const route = await this.o.backend.route(id);
    if (!route) throw new MicrovmNotFoundError(id);
    if (route.state === 'TERMINATED') throw new MicrovmTerminatedError(id);
    if (route.state === 'TERMINATING') throw new MicrovmTerminatingError(id);
    const stale = generationError(v.claims, route.tokenGeneration);
    if (stale) throw stale;
    if (route.ingress === 'none') throw new IngressDisabledError(id);
    if (kind === 'tcp' && route.ingress !== 'all') throw new IngressProtocolNotAllowedError(id);
    const rl = this.o.rateLimiter;
    if (rl && !rl.take(id)) throw new RateLimitedError(id, rl.limit.requestsPerSecond);
    this.o.metrics.activityRequest(id);
    const tokenExpiresAtS = v.claims.expiresAtS;
    let running = route;
    if (route.state !== 'RUNNING' || !route.address) {
      if (route.state === 'SUSPENDED' && !route.autoResume) throw new MicrovmSuspendedError(id);
      running = await this.waitRunning(route, signal());
    }
    return { route: running, upstream: await upstreamAddress(running, t.port), tokenExpiresAtS };
  }

  private async waitRunning(route: VmRoute, clientSignal: AbortSignal): Promise<VmRoute> {
    const id = route.microvmId;
    if (clientSignal.aborted) throw new ClientGoneError();
    const ac = new AbortController();
    let timedOut = false;
    const onClientAbort = () => ac.abort();
    clientSignal.addEventListener('abort', onClientAbort, { once: true });
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, this.o.resumeTimeoutMs);
    const aborted = new Promise<never>((_, reject) =>
      ac.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }),
    );
    aborted.catch(() => undefined);
    try {
      const r = await Promise.race([this.o.backend.ensureRunning(id, ac.signal), aborted]);
      if (r.state !== 'RUNNING' || !r.address)
        throw new Error(`ensureRunning resolved with state ${r.state}`);
      return r;
    } catch (err) {
      if (timedOut)
        throw route.state === 'PENDING'
          ? new MicrovmNotReadyError(id, this.o.resumeTimeoutMs)
          : new ResumeTimeoutError(id, this.o.resumeTimeoutMs);
      if (clientSignal.aborted) throw new ClientGoneError();
      if (err instanceof GatewayError) throw err;
      throw new ResumeFailedError(id, err instanceof HearthError ? err : new Error(String(err)));
    } finally {
      clearTimeout(timer);
      clientSignal.removeEventListener('abort', onClientAbort);
    }
  }
}
