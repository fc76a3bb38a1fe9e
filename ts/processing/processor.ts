/**
 * Processors: named consumers of the event log that apply events to
 * projection.db through handlers, exactly once. Each batch is one SQLite
 * transaction holding the handlers' writes and the processor's cursor, read
 * and written inside that transaction (DESIGN.md invariant 4).
 */
import { ClosedError, HandlerError, InvalidArgumentError, MigrationsPendingError, fromNative } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import type { Sql } from '../sql/sql.js';
import { describeThrown } from '../internal/thrown.js';
import { readCursor, recordDeadLetter, writeCursor } from './bookkeeping.js';
import { DeadLetters } from './dead-letters.js';
import { checkRebuild, dropDerived, type RebuildPlan } from './rebuild.js';
import { checkCallOptions } from './options.js';
import { sleep, strategyOf, type Strategy } from './strategy.js';
import type { Applier, BatchResult, CursorStore, ErrorAction, ProcessorHost, ProcessorOptions, Progress } from './types.js';


interface Waiter {
  id: bigint;
  resolve: (cursor: bigint) => void;
}

/**
 * A named processor: applies the event log to projection.db through its handlers,
 * exactly once, in batches. Several processors (each with its own cursor) can run
 * on one database; the same processor in two processes never applies an event twice.
 */
export class Processor {
  /** The processor's name (its cursor's and dead letters' key). */
  readonly name: string;
  /** Its dead-letter queue. */
  readonly deadLetters: DeadLetters;
  /** @internal */
  readonly applier: Applier;
  readonly #host: ProcessorHost;
  readonly #batchSize: number;
  readonly #pollMs: number;
  readonly #strategy: Strategy;
  readonly #allowPending: boolean;
  readonly #reset: ((sql: Sql) => void) | undefined;
  readonly #log: (message: string, error: Error, event: StoredEvent) => void;
  #cursor = -1n;
  #busy: Promise<unknown> = Promise.resolve();
  #stop: AbortController | null = null;
  #running: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #waiters: Waiter[] = [];
  /** Aborted when the database closes: ends backoff waits of batches not started by `run()`. */
  readonly #halt = new AbortController();
  #checked = false;
  readonly #store: CursorStore | undefined;

  /** @internal */
  constructor(host: ProcessorHost, name: string, applier: Applier, o: ProcessorOptions, store?: CursorStore) {
    this.#host = host;
    this.#store = store;
    this.name = name;
    this.applier = applier;
    this.#batchSize = o.batchSize ?? 1000;
    this.#pollMs = o.pollIntervalMs ?? 0;
    this.#strategy = strategyOf(o.onError ?? 'failFast');
    this.#allowPending = o.allowPendingMigrations ?? false;
    this.#reset = o.reset;
    const log = o.onLog ?? ((m: string, e: Error) => process.emitWarning(`athanor processor ${JSON.stringify(name)}: ${m}: ${e.message}`));
    // A log callback that throws must not change what the processor does.
    this.#log = (m, e, ev) => {
      try {
        log(m, e, ev);
      } catch (x) {
        process.emitWarning(`athanor processor ${JSON.stringify(name)}: onLog threw ${describeThrown(x)} (ignored)`);
      }
    };
    this.deadLetters = new DeadLetters(this, host);
  }

  /** The id of the last event applied (or passed over); 0n before the first. */
  cursor(): bigint {
    this.#host.sql.assertOpen();
    this.#cursor = this.#store !== undefined ? this.#store.read() : readCursor(this.#host.sql, this.name);
    return this.#cursor;
  }

  /** How many events of the log the processor has not applied yet. */
  lag(): bigint {
    const c = this.cursor();
    const last = this.#head();
    return last > c ? last - c : 0n;
  }

  /** The newest event id in the log. */
  #head(): bigint {
    this.#host.core.assertOpen();
    try {
      return this.#host.core.native.heads()[0]!;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Whether `run()` is active. */
  get running(): boolean {
    return this.#running !== null;
  }

  #ready(): void {
    this.#host.sql.assertOpen();
    if (this.#checked || this.#allowPending || this.#store !== undefined) return;
    const pending = this.#host.migrations.pending();
    if (pending.length > 0) {
      throw new MigrationsPendingError(
        `processor ${JSON.stringify(this.name)} will not start: ${pending.length} migration(s) pending (first: ${pending[0]!.version} ${pending[0]!.name}); run db.migrations.run() first, or build the processor with allowPendingMigrations`,
      );
    }
    this.#checked = true;
  }

  /**
   * Applies one batch (at most `batchSize` events after the cursor) in one SQLite
   * transaction with the cursor. A failing event is handled by the error strategy
   * (retries wait here). Rejects with `HandlerError` when the strategy says stop;
   * the events before the failing one stay committed.
   */
  processBatch(): Promise<BatchResult> {
    return this.#queueBatch(undefined);
  }

  /** A batch after the ones queued before it; `caller` (a `catchUp` signal) also ends its retry waits. */
  #queueBatch(caller: AbortSignal | undefined): Promise<BatchResult> {
    const p = this.#busy.then(() => this.#processBatch(caller));
    this.#busy = p.catch(() => undefined);
    return p;
  }

  async #processBatch(caller: AbortSignal | undefined): Promise<BatchResult> {
    if (this.#halt.signal.aborted) throw new ClosedError();
    this.#ready();
    const own = this.#stop?.signal ?? this.#halt.signal;
    const signal = caller === undefined ? own : AbortSignal.any([own, caller]);
    let attempt = 0;
    let processed = 0;
    let failedId = -1n;
    for (;;) {
      const r = await this.applier.batch(this.#batchSize);
      processed += r.consumed;
      this.#advanced(r.cursor);
      if (r.failure === undefined) return { processed, skipped: 0, deadLettered: 0, cursor: r.cursor };
      const { event, error } = r.failure;
      attempt = event.id === failedId ? attempt + 1 : 1;
      failedId = event.id;
      let action: ErrorAction;
      try {
        action = this.#strategy.decide(error, event, attempt);
      } catch (e) {
        throw new HandlerError(`the error strategy of processor ${JSON.stringify(this.name)} threw ${describeThrown(e)}`, { cause: e, eventId: event.id });
      }
      switch (action) {
        case 'retry': {
          this.#log(`event ${event.id} (${event.type}) failed (attempt ${attempt}); retrying`, error, event);
          await sleep(this.#strategy.delay(attempt), signal);
          if (signal.aborted) return { processed, skipped: 0, deadLettered: 0, cursor: r.cursor };
          continue;
        }
        case 'skip':
        case 'deadLetter': {
          const dead = action === 'deadLetter' ? { error, attempts: attempt } : undefined;
          let moved: boolean;
          if (this.#store !== undefined) {
            moved = await this.#store.passOver(r.cursor, event, dead);
            if (moved) this.#advanced(event.id);
          } else {
            moved = this.#passOver(r.cursor, event, dead);
          }
          if (action === 'skip' && moved) this.#log(`skipped event ${event.id} (${event.type})`, error, event);
          return {
            processed,
            skipped: action === 'skip' && moved ? 1 : 0,
            deadLettered: action === 'deadLetter' && moved ? 1 : 0,
            cursor: moved ? event.id : r.cursor,
          };
        }
        case 'stop':
          throw new HandlerError(`processor ${JSON.stringify(this.name)} stopped at event ${event.id} (${event.type}): ${error.message}`, {
            cause: error,
            eventId: event.id,
          });
        default:
          throw new InvalidArgumentError(`the error strategy returned ${describeThrown(action)}; expected 'stop', 'skip', 'retry' or 'deadLetter'`);
      }
    }
  }

  /** Moves the cursor from `expect` over `event` (recording a dead letter), if nobody else moved it. */
  #passOver(expect: bigint, event: StoredEvent, dead: { error: Error; attempts: number } | undefined): boolean {
    const sql = this.#host.sql;
    return sql.transaction(() => {
      if (readCursor(sql, this.name) !== expect) return false;
      if (dead !== undefined) recordDeadLetter(sql, this.name, event, dead.error, dead.attempts);
      writeCursor(sql, this.name, event.id);
      this.#advanced(event.id);
      return true;
    }).immediate();
  }

  #advanced(cursor: bigint): void {
    this.#cursor = cursor;
    if (this.#waiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.#waiters) {
      if (cursor >= w.id) w.resolve(cursor);
      else keep.push(w);
    }
    this.#waiters = keep;
  }

  /**
   * Processes batches until the cursor reaches the newest event as of this call.
   * `onProgress` is called after each batch.
   */
  async catchUp(options: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<{
    /** Events applied (or passed over). */
    processed: number;
    /** The cursor afterwards. */
    cursor: bigint;
  }> {
    const { onProgress, signal } = checkCallOptions(options, 'catchUp', ['onProgress', 'signal']);
    this.#ready();
    return this.#catchUp(onProgress, signal);
  }

  async #catchUp(onProgress: ((p: Progress) => void) | undefined, signal: AbortSignal | undefined): Promise<{ processed: number; cursor: bigint }> {
    const target = this.#head();
    let processed = 0;
    let cursor = this.cursor();
    while (cursor < target && signal?.aborted !== true) {
      const r = await this.#queueBatch(signal);
      processed += r.processed + r.skipped + r.deadLettered;
      cursor = r.cursor;
      if (onProgress !== undefined) {
        try {
          onProgress({ cursor, target, processed });
        } catch (e) {
          throw new HandlerError(`onProgress of processor ${JSON.stringify(this.name)} threw ${describeThrown(e)}; the batches so far are committed (cursor ${cursor})`, { cause: e });
        }
      }
      if (r.processed + r.skipped + r.deadLettered === 0) cursor = this.cursor();
    }
    return { processed, cursor };
  }

  /**
   * Resolves with the cursor once this processor has applied every event up to `eventId`
   * (default: the newest event now). Progress is made by `run()` or `processBatch()` calls.
   */
  waitFor(eventId?: bigint, options: { signal?: AbortSignal } = {}): Promise<bigint> {
    let signal: AbortSignal | undefined;
    let id: bigint;
    let c: bigint;
    try {
      signal = checkCallOptions(options, 'waitFor', ['signal']).signal;
      if (eventId !== undefined && typeof eventId !== 'bigint') throw new InvalidArgumentError('eventId must be a bigint');
      id = eventId ?? this.#head();
      c = this.cursor();
    } catch (e) {
      return Promise.reject(e);
    }
    if (c >= id) return Promise.resolve(c);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const w: Waiter = { id, resolve };
      this.#waiters.push(w);
      signal?.addEventListener(
        'abort',
        () => {
          this.#waiters = this.#waiters.filter((x) => x !== w);
          reject(signal!.reason);
        },
        { once: true },
      );
    });
  }

  /**
   * Runs until stopped (`stop()` or `signal`): applies batches while events are
   * pending, then sleeps until a commit notice wakes it: this process's commits are
   * pushed by the writer, other processes' are seen by watching the commit notify file
   * (no polling). Idle, it uses no CPU. `pollInterval` adds a timer for file systems
   * where watching files does not work (some network mounts).
   * Rejects if a batch fails with a stop decision or a fatal error.
   */
  run(options: { signal?: AbortSignal } = {}): Promise<void> {
    let outer: AbortSignal | undefined;
    try {
      outer = checkCallOptions(options, 'run', ['signal']).signal;
      if (this.#running !== null) throw new InvalidArgumentError(`processor ${JSON.stringify(this.name)} is already running`);
      this.#ready();
    } catch (e) {
      return Promise.reject(e);
    }
    const stop = new AbortController();
    this.#stop = stop;
    const onAbort = () => stop.abort();
    if (outer?.aborted) stop.abort();
    outer?.addEventListener('abort', onAbort, { once: true });
    this.#running = this.#loop(stop.signal).finally(() => {
      outer?.removeEventListener('abort', onAbort);
      this.#running = null;
      this.#stop = null;
    });
    return this.#running;
  }

  async #loop(signal: AbortSignal): Promise<void> {
    const core = this.#host.core;
    let pending = true;
    const wake = () => {
      pending = true;
      const w = this.#wake;
      this.#wake = null;
      w?.();
    };
    const unsubscribe = core.subscribe((n) => {
      if (n.lastEventId > this.#cursor) wake();
    });
    const timer =
      this.#pollMs > 0
        ? setInterval(() => {
            try {
              if (!core.closed && core.native.heads()[0]! > this.#cursor) wake();
            } catch {
              /* closed meanwhile: the loop ends on its next batch */
            }
          }, this.#pollMs)
        : undefined;
    signal.addEventListener('abort', wake, { once: true });
    try {
      while (!signal.aborted) {
        if (!pending) {
          await new Promise<void>((r) => (this.#wake = r));
          continue;
        }
        pending = false;
        const r = await this.processBatch();
        if (r.processed + r.skipped + r.deadLettered > 0) {
          // More may be waiting: go again, letting other work run between batches.
          pending = true;
          await new Promise<void>((res) => setImmediate(res));
        }
      }
    } finally {
      unsubscribe();
      if (timer !== undefined) clearInterval(timer);
      signal.removeEventListener('abort', wake);
    }
  }

  /** Stops `run()` (ending a backoff wait early) and resolves once its loop has exited. */
  async stop(): Promise<void> {
    this.#stop?.abort();
    await this.#running?.catch(() => undefined);
  }

  /** Stops everything for a closing database and resolves once no batch is in flight. @internal */
  async halt(): Promise<void> {
    this.#halt.abort();
    await this.stop();
    await this.#busy;
  }

  /**
   * Rebuilds the projection from the whole log: drops its data (the `reset` hook, or
   * with `{ schema: 'migrations' }` every migration rolled back and re-applied, which
   * resets every processor's cursor), resets the cursor and dead letters, and replays
   * every event with progress reporting. The result equals the incremental one.
   */
  async rebuild(options: { onProgress?: (p: Progress) => void; schema?: 'reset' | 'migrations' } = {}): Promise<{
    /** Events applied (or passed over). */
    processed: number;
    /** The cursor afterwards. */
    cursor: bigint;
  }> {
    const { onProgress, schema } = checkCallOptions(options, 'rebuild', ['onProgress', 'schema']);
    if (schema !== undefined && schema !== 'reset' && schema !== 'migrations') {
      throw new InvalidArgumentError(`rebuild's schema must be 'reset' or 'migrations', got ${describeThrown(schema)}`);
    }
    if (this.#running !== null) throw new InvalidArgumentError(`stop processor ${JSON.stringify(this.name)} before rebuilding it`);
    const plan: RebuildPlan = { name: this.name, mode: schema ?? (this.#reset !== undefined ? 'reset' : 'migrations'), reset: this.#reset, store: this.#store };
    checkRebuild(plan, this.#host);
    await this.#busy;
    await dropDerived(plan, this.#host);
    this.#cursor = 0n;
    return this.#catchUp(onProgress, undefined);
  }

  /** Stops and forgets this processor in this handle (its cursor stays in projection.db). */
  async close(): Promise<void> {
    await this.stop();
    this.#host.unregister(this.name);
  }
}
