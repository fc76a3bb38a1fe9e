/**
 * Retry pacing shared by the publisher, the replica follower and PostgreSQL
 * projections: exponential backoff with jitter, capped, and a sleep that a stop cuts short.
 */

/** The delay before retry number `attempt` (0-based): 100 ms doubling up to `maxMs`, with ±20% jitter. */
export function backoffMs(attempt: number, maxMs: number): number {
  const base = Math.min(maxMs, 100 * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** A wake-up that is either rung or times out; `ring()` ends the current and next wait at once. */
export class Bell {
  #rung = false;
  #wake: (() => void) | undefined;

  /** Ends the pending wait, or makes the next one return at once. */
  ring(): void {
    this.#rung = true;
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** Waits until rung or `ms` passed (no timer when `ms` is Infinity). */
  wait(ms: number): Promise<void> {
    if (this.#rung) {
      this.#rung = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = ms === Infinity ? undefined : setTimeout(done, ms);
      const self = this;
      function done(): void {
        if (timer !== undefined) clearTimeout(timer);
        if (self.#wake === done) self.#wake = undefined;
        self.#rung = false;
        resolve();
      }
      this.#wake = done;
    });
  }
}
