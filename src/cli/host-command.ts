/** `hearth host` (alias `hearth info`): what the running Hearth enforces, through GET /hearth/v1/host. */
import { hostInfo, type HostInfo } from '../sdk/index.js';
import type { ApiCommand } from './command.js';
import { print, record } from './format.js';

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** The host description as a terminal reads it: facts, then one "warning:" line per missing protection. */
export function showHost(h: HostInfo): string {
  return (
    record({
      accelerator: h.accelerator,
      network: h.network,
      jail: yesNo(h.jail),
      cgroups: yesNo(h.cgroups),
      enforced: h.enforced.join(', ') || '-',
      'not enforced': h.notEnforced.join(', ') || '-',
    }) + h.warnings.map((w) => `warning: ${w}\n`).join('')
  );
}

export const HOST_COMMAND: ApiCommand = {
  name: 'host',
  aliases: ['info'],
  summary: 'what the server enforces around microVMs (jail, cgroups, network mode) and what it cannot',
  usage: 'hearth host',
  options: {},
  async run(ctx) {
    const h = await hostInfo(await ctx.connection());
    print(ctx.output, h, () => showHost(h));
    return 0;
  },
};
