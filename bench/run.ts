/**
 * Benchmark runner: `npm run bench -- <name> [options]` runs bench/<name>.ts, which prints figures
 * as it goes and ends with one JSON line of results.
 */
const BENCHES = ['engine', 'build', 'api', 'gateway', 'isolation', 'translation'] as const;

const [name, ...rest] = process.argv.slice(2);
if (!name || !(BENCHES as readonly string[]).includes(name)) {
  process.stderr.write(`usage: npm run bench -- <${BENCHES.join('|')}> [options]\n`);
  process.exit(2);
}
process.env.HEARTH_LOG_LEVEL ??= 'warn';
const mod = (await import(`./${name}.ts`)) as { main: (args: string[]) => Promise<void> };
await mod.main(rest);
process.exit(0);
