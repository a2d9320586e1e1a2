import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { TestServer } from './server.js';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.ts');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `hearth <args>` (the CLI from source) against the test server; never rejects. */
export function runCli(t: TestServer, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', MAIN, ...args],
      {
        env: {
          ...process.env,
          HEARTH_ENDPOINT: t.connection.endpoint,
          HEARTH_ACCESS_KEY_ID: t.connection.accessKeyId,
          HEARTH_SECRET_ACCESS_KEY: t.connection.secretAccessKey,
          HEARTH_LOG_LEVEL: 'warn',
        },
        timeout: 600_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
