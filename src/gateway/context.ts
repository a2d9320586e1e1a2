/** What the protocol modules share: one per gateway. */
import type { Logger } from '../util/log.js';
import type { Admission } from './admission.js';
import type { ConnectionRegistry } from './connections.js';
import type { GatewayMetrics } from './metrics.js';
import type { RoutingConfig } from './routing.js';
import type { Upstreams } from './upstream.js';

export interface GatewayContext {
  routing: RoutingConfig;
  admission: Admission;
  upstreams: Upstreams;
  metrics: GatewayMetrics;
  registry: ConnectionRegistry;
  log: Logger;
  /** How long closeConnections waits for a clean close before destroying. */
  closeGraceMs: number;
}
