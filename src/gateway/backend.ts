/**
 * What the gateway needs from the rest of Hearth, and nothing more: where a microVM is, bringing it
 * to RUNNING, and an activity feed for the idle policy. The control plane implements it; tests use
 * FakeBackend (testing.ts).
 */
import type { MicrovmState } from '../core/model.js';

/** A host and port the gateway opens TCP connections to. */
export interface UpstreamAddress {
  host: string;
  port: number;
}

/** Where and how to reach one microVM, as the backend knows it right now. */
export interface VmRoute {
  microvmId: string;
  state: MicrovmState;
  /**
   * Host address (IPv4/IPv6 literal or name) where the VM's TCP ports are reachable, while RUNNING:
   * the gateway connects to (address, guest port), unless `connectAddress` says otherwise.
   */
  address?: string;
  /**
   * Where to connect for a guest port, when it is not (address, the same port): e.g. a Hearth
   * without root reaches each guest port through a forward on a host port of its own. Asked once
   * per request, after the route is RUNNING (keep it cheap: cache per port). A rejection is
   * answered 502 UPSTREAM_UNREACHABLE.
   */
  connectAddress?: (guestPort: number) => Promise<UpstreamAddress>;
  /** Whether a request for a SUSPENDED microVM resumes it (idlePolicy.autoResumeEnabled). */
  autoResume: boolean;
  /** Tokens minted with a lower generation are void (bumped on terminate). */
  tokenGeneration: number;
  /**
   * Increases at every start/resume: pooled upstream connections of an older instance are never
   * reused. A counter or a start timestamp will do.
   */
  instance: number;
  /** Whether an open WebSocket/HTTP2 stream/long request counts as activity (default true). */
  streamsCountAsActivity: boolean;
  /**
   * What the microVM's ingress connector lets through the gateway (fixed at RunMicrovm, unchanged
   * across suspend/resume):
   *   - 'http' (HTTP_INGRESS, the default): HTTP/1.1, HTTP/2, gRPC, WebSockets, server-sent events;
   *     a CONNECT request is refused (403 INGRESS_PROTOCOL_NOT_ALLOWED).
   *   - 'all' (ALL_INGRESS): the same, plus raw TCP tunnels to a guest port (HTTP/1.1 CONNECT).
   *   - 'none' (NO_INGRESS): nothing; every authenticated request is refused (403 INGRESS_DISABLED)
   *     before the microVM is touched (no auto-resume either).
   */
  ingress: 'http' | 'all' | 'none';
}

/** One entry of the activity feed. `bytes` is set for kind 'bytes' (both directions added up). */
export interface GatewayActivity {
  kind: 'request' | 'bytes' | 'stream-open' | 'stream-close';
  bytes?: number;
}

export interface GatewayBackend {
  /** The microVM's route, or undefined if there is no such microVM. Called for every request: keep it cheap. */
  route(microvmId: string): Promise<VmRoute | undefined>;
  /**
   * Brings the VM to RUNNING (auto-resume of a SUSPENDED/SUSPENDING VM, or waiting out PENDING) and
   * resolves with its route, which must have `address`. Concurrent calls for one VM must share one
   * resume (single flight). Rejects when it cannot (resume failed, terminated...). `signal` aborts
   * this caller's wait only (the gateway gave up: timeout or client gone); it need not cancel a
   * resume shared with others.
   */
  ensureRunning(microvmId: string, signal: AbortSignal): Promise<VmRoute>;
  /**
   * Activity feed for the idle policy: every inbound request ('request'), bytes in both directions
   * ('bytes', batched: at most one event per VM per flush interval), WebSocket/HTTP2/long-request
   * open and close ('stream-open'/'stream-close', always paired). Must not throw or block.
   */
  activity(microvmId: string, e: GatewayActivity): void;
}
