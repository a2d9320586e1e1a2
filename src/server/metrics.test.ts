import { describe, expect, it } from 'vitest';
import type { MicrovmRecord } from '../core/model.js';
import { emptyUsage } from '../core/usage.js';
import { escapeLabel, metricsText } from './metrics.js';

const rec = (id: string, image: string): MicrovmRecord => ({
  microvmId: id,
  imageName: image,
  imageVersion: '1.0',
  state: 'RUNNING',
  maximumDurationInSeconds: 60,
  ingressNetworkConnectors: [],
  egressNetworkConnectors: [],
  tokenGeneration: 1,
  startedAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
});

describe('metrics text (Prometheus 0.0.4)', () => {
  it('has HELP and TYPE for every family, every state, and one sample per live microVM', () => {
    const text = metricsText({
      live: [rec('microvm-a', 'app')],
      counts: new Map([['RUNNING', 1]]),
      usageOf: () => ({
        ...emptyUsage(2048),
        cpuSeconds: 12.5,
        cpuSecondsAboveBaseline: 2,
        memoryBytes: 1024,
      }),
      trafficOf: () => ({ requests: 3, bytesIn: 10, bytesOut: 20, errors: 0, openStreams: 1 }),
    });
    const lines = text.trimEnd().split('\n');
    for (const l of lines)
      expect(l).toMatch(/^(# (HELP|TYPE) hearth_\w+ .+|hearth_\w+(\{[^}]*\})? [-\d.e+]+)$/);
    expect(text).toContain('hearth_microvms{state="RUNNING"} 1\nhearth_microvms{state="SUSPENDING"} 0');
    expect(text).toContain(
      'hearth_microvm_cpu_seconds_total{microvm="microvm-a",image="app",version="1.0"} 12.5',
    );
    expect(text).toContain('hearth_microvm_peak_vcpus{microvm="microvm-a",image="app",version="1.0"} 4');
    expect(text).toContain(
      'hearth_microvm_endpoint_bytes_total{microvm="microvm-a",image="app",version="1.0",direction="out"} 20',
    );
    expect(text.match(/^# TYPE /gm)).toHaveLength(9);
  });

  it('escapes label values', () => {
    expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  });
});
