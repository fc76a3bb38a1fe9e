/** Error strategies: what a processor does with a failing event, and how long it waits before a retry. */
import { InvalidArgumentError } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import type { ErrorAction, ErrorStrategy, RetryPolicy } from './types.js';


/** Waits `ms`, or less when `signal` aborts; never rejects. @internal */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Normalised error strategy. @internal */
export interface Strategy {
  decide(error: Error, event: StoredEvent, attempt: number): ErrorAction;
  delay(attempt: number): number;
}

/** Checks an `onError` option and normalises it. @internal */
export function strategyOf(s: ErrorStrategy): Strategy {
  const backoff = (p: RetryPolicy) => (attempt: number) => Math.min(p.maxDelayMs ?? 30_000, (p.initialDelayMs ?? 100) * 2 ** (attempt - 1));
  if (s === 'failFast') return { decide: () => 'stop', delay: () => 0 };
  if (s === 'skip') return { decide: () => 'skip', delay: () => 0 };
  if (s === 'deadLetter') return { decide: () => 'deadLetter', delay: () => 0 };
  if (typeof s === 'function') return { decide: s, delay: backoff({}) };
  if (s !== null && typeof s === 'object' && 'retry' in s && s.retry !== null && typeof s.retry === 'object') {
    const p = s.retry;
    const max = p.maxAttempts ?? 5;
    const then = p.then ?? 'deadLetter';
    if (!Number.isInteger(max) || max < 1) throw new InvalidArgumentError('retry.maxAttempts must be an integer >= 1');
    for (const [k, v] of [
      ['initialDelayMs', p.initialDelayMs],
      ['maxDelayMs', p.maxDelayMs],
    ] as const) {
      if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new InvalidArgumentError(`retry.${k} must be a non-negative number of milliseconds`);
    }
    if (then !== 'deadLetter' && then !== 'stop') throw new InvalidArgumentError("retry.then must be 'deadLetter' or 'stop'");
    return { decide: (_e, _ev, attempt) => (attempt < max ? 'retry' : then === 'stop' ? 'stop' : 'deadLetter'), delay: backoff(p) };
  }
  throw new InvalidArgumentError("onError must be 'failFast', 'skip', 'deadLetter', { retry: {...} } or a function (error, event, attempt) => action");
}
