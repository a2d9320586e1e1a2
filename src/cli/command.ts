/**
 * What the API commands of the CLI share: the command definition, the context a command runs
 * with, and the parsing of its options.
 */
import type { HearthConnection, LambdaMicrovmsClient } from '../sdk/index.js';
import type { OutputMode } from './format.js';

/** What every API command gets: parsed options, positionals, the connection and the output mode. */
export interface CommandContext {
  opts: Record<string, string | boolean | string[] | undefined>;
  args: string[];
  output: OutputMode;
  connection(): Promise<HearthConnection>;
  client(): Promise<LambdaMicrovmsClient>;
}

export interface ApiCommand {
  name: string;
  aliases?: string[];
  summary: string;
  usage: string;
  options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;
  run(ctx: CommandContext): Promise<number>;
}

/** A user error in the command line: what was wrong and what to write instead. */
export class CliUsageError extends Error {
  readonly code = 'CLI_USAGE';
}

export function str(ctx: CommandContext, name: string, required = false): string | undefined {
  const v = ctx.opts[name];
  if (typeof v === 'string') return v;
  if (required) throw new CliUsageError(`--${name} is required`);
  return undefined;
}

export function json<T>(ctx: CommandContext, name: string): T | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v) as T;
  } catch (e) {
    throw new CliUsageError(
      `--${name} must be JSON (${(e as Error).message}), e.g. --${name} '{"key": "value"}'`,
    );
  }
}

export function int(ctx: CommandContext, name: string): number | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new CliUsageError(`--${name} must be a whole number, got '${v}'`);
  return n;
}

export const LIST_OPTS = {
  'max-results': { type: 'string' as const },
  'next-token': { type: 'string' as const },
  all: { type: 'boolean' as const },
};

/**
 * Every page, as the AWS CLI does; one page only when the caller pages by hand (--max-results or
 * --next-token without --all).
 */
export async function listAll<T>(
  ctx: CommandContext,
  fetch: (nextToken?: string) => Promise<{ items: T[]; nextToken?: string }>,
): Promise<{ items: T[]; nextToken?: string }> {
  const first = await fetch(str(ctx, 'next-token'));
  const byHand = str(ctx, 'max-results') !== undefined || str(ctx, 'next-token') !== undefined;
  if (byHand && !ctx.opts.all) return first;
  const items = [...first.items];
  let token = first.nextToken;
  while (token) {
    const page = await fetch(token);
    items.push(...page.items);
    token = page.nextToken;
  }
  return { items };
}
