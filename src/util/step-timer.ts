/** Records how long each named step of an operation took, for logs and benchmarks. */
export class StepTimer {
  private last = performance.now();
  private readonly start = this.last;
  readonly steps: Record<string, number> = {};

  /** Ends the current step under `name`. */
  mark(name: string): void {
    const now = performance.now();
    this.steps[name] = Math.round(now - this.last);
    this.last = now;
  }

  get totalMs(): number {
    return Math.round(performance.now() - this.start);
  }

  /** "a=1 b=2" */
  toString(): string {
    return Object.entries(this.steps)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
  }
}
