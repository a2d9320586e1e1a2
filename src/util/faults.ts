/**
 * Fault-injection points for tests: code calls `await faultPoint('suspend.after-save')` at the steps
 * where a crash must be survivable, and a test registers what happens there (kill QEMU, throw, exit
 * the process). With no handler registered a fault point costs one Map lookup.
 */
type Handler = (name: string) => void | Promise<void>;

const handlers = new Map<string, Handler>();

export function onFault(name: string, handler: Handler): () => void {
  handlers.set(name, handler);
  return () => {
    if (handlers.get(name) === handler) handlers.delete(name);
  };
}

export function clearFaults(): void {
  handlers.clear();
}

export async function faultPoint(name: string): Promise<void> {
  const h = handlers.get(name);
  if (h) await h(name);
  else if (process.env.HEARTH_FAULT === name) {
    // Out-of-process crash tests set HEARTH_FAULT=<point> to kill the whole process at that point.
    process.kill(process.pid, 'SIGKILL');
  }
}
