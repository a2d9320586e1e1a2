#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { DataDir } from '../config/data-dir.js';
import { HearthError } from '../errors.js';
import { setupHost } from '../setup/setup.js';
import type { AccelSetting } from '../vmm/accel.js';
import { runDemo } from './demo.js';

const USAGE = `hearth: self-hosted microVM sandboxes

Usage:
  hearth setup [--accelerator auto|kvm|tcg]   prepare this host (packages, guest kernel, base disk); idempotent
  hearth demo [--exit]                        boot a microVM from the Debian base disk, show it answering HTTP,
                                              clone it from a snapshot; keeps running until Ctrl-C unless --exit

Options:
  --data-dir <dir>   where Hearth keeps everything (env HEARTH_DATA_DIR, default /var/lib/hearth)
  -h, --help         this help
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      accelerator: { type: 'string' },
      exit: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command] = positionals;
  if (values.help || !command) {
    process.stdout.write(USAGE);
    return command || values.help ? 0 : 2;
  }
  const dataDir = values['data-dir'] ? new DataDir(values['data-dir']) : DataDir.fromEnv();
  switch (command) {
    case 'setup': {
      const accel = (values.accelerator ?? 'auto') as AccelSetting;
      if (!['auto', 'kvm', 'tcg'].includes(accel))
        throw new UsageError(`--accelerator must be auto, kvm or tcg, not '${accel}'`);
      const a = await setupHost(dataDir, { accelerator: accel });
      process.stdout.write(`host ready: accelerator ${a.accel.accel} (${a.accel.reason})\n`);
      return 0;
    }
    case 'demo':
      process.env.HEARTH_LOG_LEVEL ??= 'warn';
      return runDemo(dataDir, { exitWhenDone: values.exit ?? false });
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

class UsageError extends HearthError {
  readonly code = 'CLI_USAGE';
  constructor(message: string) {
    super(message, { hint: 'run `hearth --help`' });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof HearthError) process.stderr.write(`error [${e.code}]: ${e.describe()}\n`);
    else process.stderr.write(`error: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
