import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_KEYS, flagName, loadServerConfig } from './server-config.js';

describe('loadServerConfig: remote code artifacts', () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hearth-config-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('has no S3 endpoint, region us-east-1 and a 300 s fetch timeout by default', async () => {
    const c = await loadServerConfig({ env: { HEARTH_DATA_DIR: tmp } });
    expect(c.s3Endpoint).toBeUndefined();
    expect(c.s3Region).toBe('us-east-1');
    expect(c.artifactFetchTimeoutSeconds).toBe(300);
  });

  it('reads them from the environment and from the file', async () => {
    const env = {
      HEARTH_DATA_DIR: tmp,
      HEARTH_S3_ENDPOINT: 'http://127.0.0.1:9000',
      HEARTH_S3_REGION: 'eu-west-3',
      HEARTH_ARTIFACT_FETCH_TIMEOUT_SECONDS: '60',
    };
    expect(await loadServerConfig({ env })).toMatchObject({
      s3Endpoint: 'http://127.0.0.1:9000',
      s3Region: 'eu-west-3',
      artifactFetchTimeoutSeconds: 60,
    });
    const file = join(tmp, 'config.json');
    await writeFile(
      file,
      JSON.stringify({ s3Endpoint: 'https://s3.example.com', artifactFetchTimeoutSeconds: 30 }),
    );
    expect(await loadServerConfig({ file, env: { HEARTH_DATA_DIR: tmp } })).toMatchObject({
      s3Endpoint: 'https://s3.example.com',
      artifactFetchTimeoutSeconds: 30,
    });
  });

  it('refuses an endpoint that is not an http(s) URL and a zero timeout', async () => {
    for (const env of [
      { HEARTH_S3_ENDPOINT: 's3.example.com' },
      { HEARTH_S3_ENDPOINT: 'ftp://s3.example.com' },
      { HEARTH_ARTIFACT_FETCH_TIMEOUT_SECONDS: '0' },
    ]) {
      await expect(loadServerConfig({ env: { HEARTH_DATA_DIR: tmp, ...env } })).rejects.toMatchObject({
        code: 'CONFIG_INVALID',
      });
    }
  });
});

describe('configuration sources', () => {
  it('names a flag for every key, in kebab case', () => {
    expect(flagName('apiPort')).toBe('api-port');
    expect(flagName('maxMemoryMiB')).toBe('max-memory-mib');
    expect(new Set(CONFIG_KEYS.map(flagName)).size).toBe(CONFIG_KEYS.length);
    expect(CONFIG_KEYS).toContain('databaseUrl');
  });

  it('lets flags win over the environment, which wins over the file, which wins over defaults', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'hearth-config-'));
    try {
      const file = join(tmp, 'c.json');
      await writeFile(file, JSON.stringify({ apiPort: 1, gatewayPort: 2, maxMicrovms: 3 }));
      const c = await loadServerConfig({
        file,
        env: { HEARTH_DATA_DIR: tmp, HEARTH_GATEWAY_PORT: '20', HEARTH_MAX_MICROVMS: '30' },
        flags: { maxMicrovms: '300' },
      });
      expect([c.apiPort, c.gatewayPort, c.maxMicrovms, c.apiHost]).toEqual([1, 20, 300, '127.0.0.1']);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('refuses unknown keys in the file and malformed numbers, saying which', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'hearth-config-'));
    try {
      const file = join(tmp, 'c.json');
      await writeFile(file, JSON.stringify({ apiPrt: 1 }));
      await expect(loadServerConfig({ file, env: {} })).rejects.toThrow(/unknown option 'apiPrt'/);
      await expect(loadServerConfig({ env: {}, flags: { apiPort: 'x' } })).rejects.toMatchObject({
        code: 'CONFIG_INVALID',
        message: expect.stringContaining('apiPort'),
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
