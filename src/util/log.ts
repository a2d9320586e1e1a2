/**
 * Structured logging to stderr. Text by default; one JSON object per line with HEARTH_LOG_FORMAT=json.
 * Level from HEARTH_LOG_LEVEL (debug, info, warn, error; default info). Never pass secrets (tokens,
 * keys) as fields: log lines are meant to be shared.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(component: string): Logger;
}

type Sink = (line: string) => void;
let sink: Sink = (line) => process.stderr.write(line + '\n');

/** Redirects all log output (tests capture it this way). Returns the previous sink. */
export function setLogSink(next: Sink): Sink {
  const prev = sink;
  sink = next;
  return prev;
}

function threshold(): number {
  const lvl = (process.env.HEARTH_LOG_LEVEL ?? 'info') as LogLevel;
  return ORDER[lvl] ?? ORDER.info;
}

function fmtValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === 'string') return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[level] < threshold()) return;
    const time = new Date().toISOString();
    if (process.env.HEARTH_LOG_FORMAT === 'json') {
      const extra: LogFields = {};
      for (const [k, v] of Object.entries(fields ?? {})) extra[k] = v instanceof Error ? v.message : v;
      sink(JSON.stringify({ time, level, component, msg, ...extra }));
    } else {
      const kv = Object.entries(fields ?? {})
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${fmtValue(v)}`)
        .join(' ');
      sink(`${time} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}${kv ? ' ' + kv : ''}`);
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(`${component}.${c}`),
  };
}
