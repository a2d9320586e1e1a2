/**
 * The CLI's network connector commands (Hearth's /hearth/v1/network-connectors routes), and the
 * expansion of short connector names for run-microvm.
 */
import { isManagedConnectorName } from '../core/connector-arns.js';
import {
  createNetworkConnector,
  deleteNetworkConnector,
  getNetworkConnector,
  listNetworkConnectors,
  managedConnectorArn,
  type EgressRuleInput,
  type NetworkConnector,
} from '../sdk/index.js';
import {
  CliUsageError,
  LIST_OPTS,
  int,
  json,
  listAll,
  str,
  type ApiCommand,
  type CommandContext,
} from './command.js';
import { print, record, table } from './format.js';

/**
 * Connector ARNs for `--ingress-network-connectors` / `--egress-network-connectors` values (repeated
 * or comma-separated): ARNs as given, managed names (INTERNET_EGRESS, HTTP_INGRESS, ...) as their
 * ARN in the connection's region, other names as the ARN of that user connector (looked up, so an
 * unknown name fails here with the API's error). Undefined when the option was not given.
 */
export async function expandConnectors(
  ctx: CommandContext,
  values: string[] | undefined,
): Promise<string[] | undefined> {
  if (values === undefined) return undefined;
  const names = values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean);
  const conn = await ctx.connection();
  return Promise.all(
    names.map(async (n) => {
      if (n.startsWith('arn:')) return n;
      if (isManagedConnectorName(n)) return managedConnectorArn(conn.region, n);
      return (await getNetworkConnector(conn, n)).connectorArn;
    }),
  );
}

function connectorId(ctx: CommandContext): string {
  const id = ctx.args[0] ?? str(ctx, 'connector-identifier') ?? str(ctx, 'name');
  if (!id)
    throw new CliUsageError('which connector? give its name or ARN (e.g. hearth get-network-connector db)');
  return id;
}

/** One connector as "key  value" lines (rules as JSON). */
function show(c: NetworkConnector): string {
  return record({ ...c, egressRules: c.egressRules && JSON.stringify(c.egressRules) });
}

export const CONNECTOR_COMMANDS: ApiCommand[] = [
  {
    name: 'create-network-connector',
    summary: 'create an egress allow-list for microVMs (Hearth extension)',
    usage:
      'hearth create-network-connector --name N --egress-rules \'[{"cidr":"10.0.5.0/24","protocol":"TCP","ports":[{"port":5432}]},{"hostname":"*.example.com"}]\' [--description D] [--tags JSON]',
    options: {
      name: { type: 'string' },
      'egress-rules': { type: 'string' },
      description: { type: 'string' },
      tags: { type: 'string' },
      'client-token': { type: 'string' },
    },
    async run(ctx) {
      const egressRules = json<EgressRuleInput[]>(ctx, 'egress-rules');
      if (!egressRules) throw new CliUsageError('--egress-rules is required (a JSON list of rules)');
      const description = str(ctx, 'description');
      const tags = json<Record<string, string>>(ctx, 'tags');
      const clientToken = str(ctx, 'client-token');
      const c = await createNetworkConnector(await ctx.connection(), {
        name: str(ctx, 'name') ?? connectorId(ctx),
        egressRules,
        ...(description !== undefined ? { description } : {}),
        ...(tags ? { tags } : {}),
        ...(clientToken ? { clientToken } : {}),
      });
      print(ctx.output, c, () => show(c));
      return 0;
    },
  },
  {
    name: 'list-network-connectors',
    aliases: ['connectors'],
    summary: 'list network connectors: the managed ones, then yours',
    usage: 'hearth connectors [--max-results N] [--next-token T] [--all]',
    options: LIST_OPTS,
    async run(ctx) {
      const conn = await ctx.connection();
      const page = await listAll(ctx, async (nextToken) => {
        const maxResults = int(ctx, 'max-results');
        const r = await listNetworkConnectors(conn, {
          ...(maxResults !== undefined ? { maxResults } : {}),
          ...(nextToken ? { nextToken } : {}),
        });
        return { items: r.networkConnectors, ...(r.nextToken ? { nextToken: r.nextToken } : {}) };
      });
      const rows = page.items.map((c) => ({ ...c, rules: c.egressRules?.length }));
      print(
        ctx.output,
        { networkConnectors: page.items, ...(page.nextToken ? { nextToken: page.nextToken } : {}) },
        () =>
          table(rows, ['name', 'type', 'rules', 'connectorArn']) +
          (page.nextToken ? `(more: --next-token ${page.nextToken})\n` : ''),
      );
      return 0;
    },
  },
  {
    name: 'get-network-connector',
    aliases: ['connector'],
    summary: 'show a network connector and its rules',
    usage: 'hearth connector <name or ARN>',
    options: { 'connector-identifier': { type: 'string' } },
    async run(ctx) {
      const c = await getNetworkConnector(await ctx.connection(), connectorId(ctx));
      print(ctx.output, c, () => show(c));
      return 0;
    },
  },
  {
    name: 'delete-network-connector',
    summary: 'delete a network connector no running or suspended microVM uses',
    usage: 'hearth delete-network-connector <name or ARN>',
    options: { 'connector-identifier': { type: 'string' } },
    async run(ctx) {
      const id = connectorId(ctx);
      await deleteNetworkConnector(await ctx.connection(), id);
      print(ctx.output, {}, () => `${id}  deleted\n`);
      return 0;
    },
  },
];
