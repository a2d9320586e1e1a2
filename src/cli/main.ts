#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { DataDir } from '../config/data-dir.js';
import { HearthError } from '../errors.js';
import { setupHost } from '../setup/setup.js';
import type { AccelSetting } from '../vmm/accel.js';
import { API_COMMANDS, CliUsageError, connectionFactory, type ApiCommand } from './api-commands.js';
import { runDemo } from './demo.js';
import type { OutputMode } from './format.js';

const LOCAL_COMMANDS = `
Host and server:
  setup [--accelerator auto|kvm|tcg]     prepare this host (packages, guest kernel, base image); idempotent
  setup --for-user NAME [--data-dir D]   as root: prepare a data directory (default /var/lib/hearth-NAME)
                                         that NAME then serves from without root
  setup --upgrade-guest-kernel           move the guest kernel to Debian's newest cloud kernel (otherwise
                                         the first one stays); images built before must then be rebuilt
  serve [--config FILE] [options]        run the API, the engine and the gateway (see README, Configuration)
  demo [--exit]                          the main job: serve, build examples/flask, launch, call, idle, resume
`;

function usage(): string {
  const lines = API_COMMANDS.map(
    (c) => `  ${[c.name, ...(c.aliases ?? [])].join(', ').padEnd(44)} ${c.summary}`,
  );
  return `hearth: self-hosted microVM sandboxes

Usage: hearth <command> [options]      (hearth <command> --help for its options)
${LOCAL_COMMANDS}
API commands (AWS CLI names, short aliases), through the API of a running \`hearth serve\`:
${lines.join('\n')}

Global options:
  --output table|json      default table
  --endpoint URL           API endpoint (default: from HEARTH_ENDPOINT or the credentials file)
  --data-dir DIR           data directory (env HEARTH_DATA_DIR, default /var/lib/hearth)
  -h, --help
`;
}

function findCommand(name: string): ApiCommand | undefined {
  return API_COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
}

const GLOBAL = {
  output: { type: 'string' as const },
  endpoint: { type: 'string' as const },
  region: { type: 'string' as const },
  'data-dir': { type: 'string' as const },
  help: { type: 'boolean' as const, short: 'h' },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(usage());
    return command ? 0 : 2;
  }
  if (command === 'setup' || command === 'demo' || command === 'serve') return local(command, rest);
  const spec = findCommand(command);
  if (!spec) throw new CliUsageError(`unknown command '${command}'; see hearth --help`);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { ...GLOBAL, ...spec.options },
  });
  if (values.help) {
    process.stdout.write(`${spec.usage}\n\n${spec.summary}\n`);
    return 0;
  }
  const output = (values.output ?? 'table') as OutputMode;
  if (output !== 'table' && output !== 'json')
    throw new CliUsageError(`--output must be table or json, not '${output}'`);
  if (values['data-dir']) process.env.HEARTH_DATA_DIR = values['data-dir'];
  return spec.run({
    opts: values as Record<string, string | boolean | string[] | undefined>,
    args: positionals,
    output,
    ...connectionFactory({
      ...(values.endpoint ? { endpoint: values.endpoint } : {}),
      ...(values.region ? { region: values.region } : {}),
    }),
  });
}

async function local(command: string, rest: string[]): Promise<number> {
  if (command === 'serve') {
    const { serveMain } = await import('../server/serve.js');
    return serveMain(rest);
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      ...GLOBAL,
      accelerator: { type: 'string' },
      exit: { type: 'boolean' },
      'for-user': { type: 'string' },
      'upgrade-guest-kernel': { type: 'boolean' },
    },
  });
  const forUser = values['for-user'];
  const dataDir = values['data-dir']
    ? new DataDir(values['data-dir'])
    : forUser && command === 'setup'
      ? new DataDir(`/var/lib/hearth-${forUser}`)
      : DataDir.fromEnv();
  if (command === 'setup') {
    const accel = (values.accelerator ?? 'auto') as AccelSetting;
    if (!['auto', 'kvm', 'tcg'].includes(accel))
      throw new CliUsageError(`--accelerator must be auto, kvm or tcg, not '${accel}'`);
    const a = await setupHost(dataDir, {
      accelerator: accel,
      ...(forUser ? { forUser } : {}),
      upgradeGuestKernel: values['upgrade-guest-kernel'] ?? false,
    });
    process.stdout.write(`host ready: accelerator ${a.accel.accel} (${a.accel.reason})\n`);
    if (forUser)
      process.stdout.write(
        `${dataDir.root} is ${forUser}'s; as ${forUser}, without root: hearth serve --data-dir ${dataDir.root}\n`,
      );
    return 0;
  }
  process.env.HEARTH_LOG_LEVEL ??= 'warn';
  return runDemo(dataDir, { exitWhenDone: values.exit ?? false });
}

/** Prints an error the way a user can act on: the API's exception name, message and hint. */
function report(e: unknown): void {
  const err = e as Error & { code?: string; hint?: string; $metadata?: { httpStatusCode?: number } };
  if (e instanceof HearthError) process.stderr.write(`error [${e.code}]: ${e.describe()}\n`);
  else if (e instanceof CliUsageError) process.stderr.write(`usage: ${err.message}\n`);
  else if (err.$metadata || err.name?.endsWith('Exception')) {
    process.stderr.write(`error [${err.name}]: ${err.message}${err.hint ? `\n  hint: ${err.hint}` : ''}\n`);
  } else if ((err as { code?: string }).code === 'ECONNREFUSED') {
    process.stderr.write(
      `error: cannot reach the Hearth API (${err.message})\n  hint: start it with \`hearth serve\`, or set HEARTH_ENDPOINT\n`,
    );
  } else process.stderr.write(`error: ${err.stack ?? String(e)}\n`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    report(e);
    process.exit(e instanceof CliUsageError ? 2 : 1);
  },
);
