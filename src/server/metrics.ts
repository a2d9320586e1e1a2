import type { MicrovmService } from '../core/microvms.js';
import { MICROVM_STATES, type MicrovmRecord, type MicrovmState } from '../core/model.js';
import type { VmMetrics } from '../gateway/metrics.js';

/**
 * Hearth's metrics in the Prometheus text format (version 0.0.4): microVMs by state, and per
 * microVM that is not TERMINATED its usage against its baseline (CPU, burst above the baseline,
 * memory) and its endpoint traffic. Served at GET /hearth/v1/metrics (SigV4, like the API) and, when
 * `metricsPort` is set, without authentication on its own listener for a Prometheus scraper.
 */

interface Family {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
  samples: { labels: Record<string, string>; value: number }[];
}

/** Escapes a label value as the text format requires (backslash, double quote, newline). */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function render(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',');
      out.push(`${f.name}${labels ? `{${labels}}` : ''} ${Number.isFinite(s.value) ? s.value : 0}`);
    }
  }
  return out.join('\n') + '\n';
}

/**
 * The metrics text for `live` (microVMs not TERMINATED) and `counts` (microVMs by state, TERMINATED
 * ones still listed included), with usage from the service and traffic from the gateway.
 */
export function metricsText(o: {
  live: readonly MicrovmRecord[];
  counts: ReadonlyMap<MicrovmState, number>;
  usageOf: (id: string) => MicrovmRecord['usage'];
  trafficOf: (id: string) => VmMetrics;
}): string {
  const f = (name: string, type: Family['type'], help: string): Family => ({ name, type, help, samples: [] });
  const byState = f('hearth_microvms', 'gauge', 'microVMs by state.');
  for (const s of MICROVM_STATES) byState.samples.push({ labels: { state: s }, value: o.counts.get(s) ?? 0 });
  const cpu = f(
    'hearth_microvm_cpu_seconds_total',
    'counter',
    'CPU time used by the microVM (all its runs).',
  );
  const above = f(
    'hearth_microvm_cpu_above_baseline_seconds_total',
    'counter',
    'CPU time above the microVM baseline, added up per sampling interval.',
  );
  const baseline = f('hearth_microvm_baseline_vcpus', 'gauge', 'Cores guaranteed (baseline memory / 2 GiB).');
  const peak = f('hearth_microvm_peak_vcpus', 'gauge', 'Cores the microVM may burst to.');
  const memory = f('hearth_microvm_memory_bytes', 'gauge', 'Resident host memory of its QEMU now.');
  const requests = f('hearth_microvm_requests_total', 'counter', 'Requests to its endpoint.');
  const bytes = f('hearth_microvm_endpoint_bytes_total', 'counter', 'Endpoint bytes, by direction.');
  const streams = f(
    'hearth_microvm_open_streams',
    'gauge',
    'Open requests, streams, WebSockets and tunnels.',
  );
  for (const rec of o.live) {
    const labels = { microvm: rec.microvmId, image: rec.imageName, version: rec.imageVersion };
    const u = o.usageOf(rec.microvmId);
    if (u) {
      cpu.samples.push({ labels, value: u.cpuSeconds });
      above.samples.push({ labels, value: u.cpuSecondsAboveBaseline });
      baseline.samples.push({ labels, value: u.baselineVcpus });
      peak.samples.push({ labels, value: u.peakVcpus });
      memory.samples.push({ labels, value: u.memoryBytes });
    }
    const t = o.trafficOf(rec.microvmId);
    requests.samples.push({ labels, value: t.requests });
    bytes.samples.push({ labels: { ...labels, direction: 'in' }, value: t.bytesIn });
    bytes.samples.push({ labels: { ...labels, direction: 'out' }, value: t.bytesOut });
    streams.samples.push({ labels, value: t.openStreams });
  }
  return render([byState, cpu, above, baseline, peak, memory, requests, bytes, streams]);
}

/** The metrics of a running Hearth, now. */
export async function collectMetrics(
  microvms: MicrovmService,
  trafficOf: (id: string) => VmMetrics,
): Promise<string> {
  const all = await microvms.listByStates(MICROVM_STATES);
  const counts = new Map<MicrovmState, number>();
  for (const r of all) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
  const byId = new Map(all.map((r) => [r.microvmId, r]));
  return metricsText({
    live: all.filter((r) => r.state !== 'TERMINATED'),
    counts,
    usageOf: (id) => microvms.usageOf(id) ?? byId.get(id)?.usage,
    trafficOf,
  });
}
