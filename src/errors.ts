/**
 * The base of every error Hearth raises on purpose. Each subclass has a stable machine-readable
 * `code` (never reworded once shipped), a message that says what happened, and, where there is one,
 * a `hint` that says what to do next.
 */
export abstract class HearthError extends Error {
  abstract readonly code: string;
  readonly hint: string | undefined;

  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }

  /** The message followed by the hint, for people reading a terminal or a log. */
  describe(): string {
    return this.hint ? `${this.message}\n  hint: ${this.hint}` : this.message;
  }
}

/** True when `err` is a HearthError with the given code. */
export function hasCode(err: unknown, code: string): boolean {
  return err instanceof HearthError && err.code === code;
}
