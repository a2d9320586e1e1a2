/**
 * Per-microVM counters (requests, bytes each way, errors answered by the gateway) and the activity
 * feed to the backend. Bytes are added up and sent as one 'bytes' event per VM per flush, so the
 * hot path only adds numbers.
 */
import type { GatewayBackend } from './backend.js';

export interface VmMetrics {
  /** Requests that named this microVM (authenticated or not), WebSocket upgrades included. */
  requests: number;
  /** Body/frame/tunnel bytes from clients to the app. */
  bytesIn: number;
  /** Body/frame/tunnel bytes from the app to clients. */
  bytesOut: number;
  /** Responses the gateway produced itself with an error status (4xx/5xx JSON). */
  errors: number;
  /** Exchanges (requests, HTTP/2 streams, WebSockets, CONNECT tunnels) currently open to the app. */
  openStreams: number;
}

export class GatewayMetrics {
  private readonly byVm = new Map<string, VmMetrics>();
  private readonly pendingBytes = new Map<string, number>();

  constructor(private readonly backend: GatewayBackend) {}

  private vm(id: string): VmMetrics {
    let m = this.byVm.get(id);
    if (!m) {
      m = { requests: 0, bytesIn: 0, bytesOut: 0, errors: 0, openStreams: 0 };
      this.byVm.set(id, m);
    }
    return m;
  }

  request(id: string): void {
    this.vm(id).requests++;
  }

  error(id: string | undefined): void {
    this.vm(id ?? '-').errors++;
  }

  /** An authenticated request: activity for the idle policy. */
  activityRequest(id: string): void {
    this.backend.activity(id, { kind: 'request' });
  }

  bytesIn(id: string, n: number): void {
    this.vm(id).bytesIn += n;
    this.pendingBytes.set(id, (this.pendingBytes.get(id) ?? 0) + n);
  }

  bytesOut(id: string, n: number): void {
    this.vm(id).bytesOut += n;
    this.pendingBytes.set(id, (this.pendingBytes.get(id) ?? 0) + n);
  }

  streamOpen(id: string): void {
    this.vm(id).openStreams++;
    this.backend.activity(id, { kind: 'stream-open' });
  }

  streamClose(id: string): void {
    this.vm(id).openStreams--;
    this.backend.activity(id, { kind: 'stream-close' });
  }

  /** Sends the bytes added up since the last flush, one event per VM. */
  flush(): void {
    for (const [id, bytes] of this.pendingBytes)
      if (bytes > 0) this.backend.activity(id, { kind: 'bytes', bytes });
    this.pendingBytes.clear();
  }

  get(id: string): VmMetrics {
    return { ...(this.byVm.get(id) ?? { requests: 0, bytesIn: 0, bytesOut: 0, errors: 0, openStreams: 0 }) };
  }

  all(): Record<string, VmMetrics> {
    return Object.fromEntries([...this.byVm].map(([k, v]) => [k, { ...v }]));
  }

  /** Forgets a microVM's counters (after it is terminated). */
  forget(id: string): void {
    this.byVm.delete(id);
    this.pendingBytes.delete(id);
  }
}
