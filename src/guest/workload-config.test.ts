import { describe, expect, it } from 'vitest';
import {
  MAX_ARGS,
  MAX_CONFIG_BYTES,
  MAX_ENV,
  bootConfigArchive,
  encodeBootConfig,
  type GuestBootConfig,
} from './workload-config.js';

/** Splits an encoded config back into [key, value] pairs, checking it is a whole number of pairs. */
function decode(buf: Buffer): [string, string][] {
  const s = buf.toString('utf8');
  expect(s.endsWith('\0')).toBe(true);
  const items = s.slice(0, -1).split('\0');
  expect(items.length % 2).toBe(0);
  const pairs: [string, string][] = [];
  for (let i = 0; i < items.length; i += 2) pairs.push([items[i]!, items[i + 1]!]);
  return pairs;
}

describe('encodeBootConfig', () => {
  it('encodes only the hostname when there is no workload or network', () => {
    expect(encodeBootConfig({ hostname: 'vm1' }).toString()).toBe('hostname\0vm1\0');
  });

  it('encodes all keys as NUL-terminated pairs in order: hostname, args, env, cwd, user, on-exit, ip, gateway, mtu', () => {
    const cfg: GuestBootConfig = {
      hostname: 'box',
      workload: {
        argv: ['/bin/app', '--port', '8080', ''],
        env: ['A=1', 'PATH=/usr/bin:/bin', 'EMPTY='],
        cwd: '/srv',
        user: '1000:1000',
        onExit: 'poweroff',
      },
      network: { ipCidr: '172.16.0.2/30', gateway: '172.16.0.1', mtu: 1400 },
    };
    expect(decode(encodeBootConfig(cfg))).toEqual([
      ['hostname', 'box'],
      ['arg', '/bin/app'],
      ['arg', '--port'],
      ['arg', '8080'],
      ['arg', ''],
      ['env', 'A=1'],
      ['env', 'PATH=/usr/bin:/bin'],
      ['env', 'EMPTY='],
      ['cwd', '/srv'],
      ['user', '1000:1000'],
      ['on-exit', 'poweroff'],
      ['ip', '172.16.0.2/30'],
      ['gateway', '172.16.0.1'],
      ['mtu', '1400'],
    ]);
  });

  it('omits optional keys that are not set', () => {
    const pairs = decode(
      encodeBootConfig({
        hostname: 'h',
        workload: { argv: ['sleep', 'inf'] },
        network: { ipCidr: '10.0.0.2/30', gateway: '10.0.0.1' },
      }),
    );
    expect(pairs).toEqual([
      ['hostname', 'h'],
      ['arg', 'sleep'],
      ['arg', 'inf'],
      ['ip', '10.0.0.2/30'],
      ['gateway', '10.0.0.1'],
    ]);
  });

  it('keeps UTF-8 values intact', () => {
    const pairs = decode(
      encodeBootConfig({ hostname: 'h', workload: { argv: ['echo', 'grüße ✓'], env: ['GREETING=héllo'] } }),
    );
    expect(pairs).toContainEqual(['arg', 'grüße ✓']);
    expect(pairs).toContainEqual(['env', 'GREETING=héllo']);
  });

  it('accepts exactly MAX_ARGS arguments and MAX_ENV environment entries', () => {
    const argv = Array.from({ length: MAX_ARGS }, (_, i) => `a${i}`);
    const env = Array.from({ length: MAX_ENV }, (_, i) => `V${i}=${i}`);
    const pairs = decode(encodeBootConfig({ hostname: 'h', workload: { argv, env } }));
    expect(pairs.filter(([k]) => k === 'arg').length).toBe(MAX_ARGS);
    expect(pairs.filter(([k]) => k === 'env').length).toBe(MAX_ENV);
  });

  it('rejects NUL bytes in the hostname', () => {
    expect(() => encodeBootConfig({ hostname: 'a\0b' })).toThrow(RangeError);
  });

  it('rejects NUL bytes in arguments, env, cwd, user, ip and gateway', () => {
    const base = { hostname: 'h' };
    expect(() => encodeBootConfig({ ...base, workload: { argv: ['ok', 'b\0ad'] } })).toThrow(
      /argument must not contain NUL/,
    );
    expect(() => encodeBootConfig({ ...base, workload: { argv: ['x'], env: ['A=\0'] } })).toThrow(
      /environment entry must not contain NUL/,
    );
    expect(() => encodeBootConfig({ ...base, workload: { argv: ['x'], cwd: '/a\0' } })).toThrow(/cwd/);
    expect(() => encodeBootConfig({ ...base, workload: { argv: ['x'], user: 'r\0oot' } })).toThrow(/user/);
    expect(() =>
      encodeBootConfig({ ...base, network: { ipCidr: '10.0.0.2/30\0', gateway: '10.0.0.1' } }),
    ).toThrow(/ip/);
    expect(() => encodeBootConfig({ ...base, network: { ipCidr: '10.0.0.2/30', gateway: '\0' } })).toThrow(
      /gateway/,
    );
  });

  it('rejects an empty argv', () => {
    expect(() => encodeBootConfig({ hostname: 'h', workload: { argv: [] } })).toThrow(
      /argv must not be empty/,
    );
  });

  it('rejects more than MAX_ARGS arguments', () => {
    const argv = Array.from({ length: MAX_ARGS + 1 }, () => 'x');
    expect(() => encodeBootConfig({ hostname: 'h', workload: { argv } })).toThrow(RangeError);
  });

  it('rejects more than MAX_ENV environment entries', () => {
    const env = Array.from({ length: MAX_ENV + 1 }, (_, i) => `V${i}=1`);
    expect(() => encodeBootConfig({ hostname: 'h', workload: { argv: ['x'], env } })).toThrow(/too many/);
  });

  it('rejects environment entries without a NAME= prefix', () => {
    for (const bad of ['NOEQUALS', '=value', '']) {
      expect(() => encodeBootConfig({ hostname: 'h', workload: { argv: ['x'], env: [bad] } }), bad).toThrow(
        /NAME=value/,
      );
    }
  });

  it('rejects a config larger than MAX_CONFIG_BYTES', () => {
    const big = 'x'.repeat(Math.ceil(MAX_CONFIG_BYTES / 100));
    const argv = Array.from({ length: 100 }, () => big);
    expect(() => encodeBootConfig({ hostname: 'h', workload: { argv } })).toThrow(/at most 262144/);
  });

  it('accepts a config just under MAX_CONFIG_BYTES', () => {
    const overhead = 'hostname\0h\0'.length + 'arg\0'.length + 1;
    const buf = encodeBootConfig({
      hostname: 'h',
      workload: { argv: ['y'.repeat(MAX_CONFIG_BYTES - overhead)] },
    });
    expect(buf.length).toBe(MAX_CONFIG_BYTES);
  });
});

describe('bootConfigArchive', () => {
  it('contains hearth/ and hearth/workload.cfg holding the encoded config', () => {
    const cfg: GuestBootConfig = { hostname: 'web-1', workload: { argv: ['/app'] } };
    const archive = bootConfigArchive(cfg);
    expect(archive.length % 512).toBe(0);
    expect(archive.toString('ascii', 0, 6)).toBe('070701');
    // Read the entries back: header (110 bytes) + name, padded to 4; data padded to 4.
    const entries: { name: string; mode: number; data: Buffer }[] = [];
    let off = 0;
    for (;;) {
      expect(archive.toString('ascii', off, off + 6)).toBe('070701');
      const mode = parseInt(archive.toString('ascii', off + 14, off + 22), 16);
      const size = parseInt(archive.toString('ascii', off + 54, off + 62), 16);
      const nameSize = parseInt(archive.toString('ascii', off + 94, off + 102), 16);
      const name = archive.toString('utf8', off + 110, off + 110 + nameSize - 1);
      const dataStart = (off + 110 + nameSize + 3) & ~3;
      entries.push({ name, mode, data: archive.subarray(dataStart, dataStart + size) });
      off = (dataStart + size + 3) & ~3;
      if (name === 'TRAILER!!!') break;
    }
    expect(entries.map((e) => e.name)).toEqual(['hearth', 'hearth/workload.cfg', 'TRAILER!!!']);
    expect(entries[0]!.mode).toBe(0o040755);
    expect(entries[1]!.mode).toBe(0o100644);
    expect(entries[1]!.data.equals(encodeBootConfig(cfg))).toBe(true);
  });

  it('rejects an invalid config like encodeBootConfig does', () => {
    expect(() => bootConfigArchive({ hostname: 'h', workload: { argv: [] } })).toThrow(RangeError);
  });
});
