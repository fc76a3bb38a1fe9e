/**
 * Processors: named consumers of the event log that apply events to
 * projection.db through handlers, exactly once. Each batch is one SQLite
 * transaction holding the handlers' writes and the processor's cursor, read
 * and written inside that transaction (DESIGN.md invariant 4).
 */
import { AthanorError, ClosedError, HandlerError, InvalidArgumentError, MigrationsPendingError, SqlError, fromNative } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import { parseJson } from '../state/codec.js';
import type { Core } from '../state/core.js';
import type { Sql } from '../sql/sql.js';
import { describeThrown, thrownError } from '../internal/thrown.js';
import type { Migrations } from '../sql/migrations.js';

/** What a handler does with one event. Synchronous: it runs inside the batch's SQLite transaction. */
export type HandleFn<P = unknown> = (sql: Sql, event: StoredEvent<P>) => void;

/** A TypeScript event handler. */
export interface EventHandler<P = unknown> {
  /** The event type(s) it handles; `'*'` for every event. */
  eventType: string | readonly string[];
  /** Applies one event (SQL writes through `sql`). Must not return a Promise. */
  handle: HandleFn<P>;
  /**
   * Checks the payload before `handle` runs. Returning `false` or throwing fails the
   * event with `ERR_HANDLER`, handled by the processor's error strategy.
   */
  validate?(payload: unknown): boolean | void;
}

/** What to do with an event whose handler failed. */
export type ErrorAction = 'stop' | 'skip' | 'retry' | 'deadLetter';

/** Retry with exponential backoff: the delay doubles from `initialDelayMs` up to `maxDelayMs`. */
export interface RetryPolicy {
  /** Attempts in all, the first included (default 5). */
  maxAttempts?: number;
  /** Delay before the second attempt (default 100 ms). */
  initialDelayMs?: number;
  /** Longest delay (default 30 s). */
  maxDelayMs?: number;
  /** What to do when the attempts are used up (default `'deadLetter'`). */
  then?: 'deadLetter' | 'stop';
}

/**
 * How a processor reacts to a failing event:
 * - `'failFast'` (default): stop; the batch's earlier events are committed, the cursor stays just before the failing one.
 * - `'skip'`: log it (`onLog`) and move on.
 * - `'deadLetter'`: record it in the dead-letter queue and move on.
 * - `{ retry: {...} }`: retry with exponential backoff, then dead-letter or stop.
 * - a function `(error, event, attempt) => action`; `'retry'` waits with the default backoff.
 */
export type ErrorStrategy =
  | 'failFast'
  | 'skip'
  | 'deadLetter'
  | { retry: RetryPolicy }
  | ((error: Error, event: StoredEvent, attempt: number) => ErrorAction);

/** Options of a processor (the builder sets the same things). */
export interface ProcessorOptions {
  /** Event handlers. */
  handlers?: readonly EventHandler<never>[];
  /** Events per batch (one SQLite transaction); default 1000. */
  batchSize?: number;
  /**
   * A timer for `run()` on file systems where watching files does not work (some
   * network mounts), ms (default 0: off). Commits of this process and of other
   * processes wake `run()` at once without it.
   */
  pollIntervalMs?: number;
  /** Error strategy (default `'failFast'`). */
  onError?: ErrorStrategy;
  /** Start even when registered migrations are pending (default false: refuse with `ERR_MIGRATIONS_PENDING`). */
  allowPendingMigrations?: boolean;
  /** Drops the projection's tables/rows for {@link Processor.rebuild} (runs in one transaction). */
  reset?: (sql: Sql) => void;
  /** Receives skipped events and retries (default: a process warning). */
  onLog?: (message: string, error: Error, event: StoredEvent) => void;
}

/** What one {@link Processor.processBatch} did. */
export interface BatchResult {
  /** Events the cursor moved over and whose effects were committed (including events no handler wanted). */
  processed: number;
  /** Events skipped by the error strategy. */
  skipped: number;
  /** Events sent to the dead-letter queue. */
  deadLettered: number;
  /** The cursor after the batch: id of the last event applied or passed. */
  cursor: bigint;
}

/** Progress of a catch-up or rebuild. */
export interface Progress {
  /** The cursor now. */
  cursor: bigint;
  /** Target: the newest event id when the catch-up started. */
  target: bigint;
  /** Events processed so far by this call. */
  processed: number;
}

/** A dead letter: an event a processor gave up on. */
export interface DeadLetter<P = unknown> {
  /** Dead-letter id. */
  id: number;
  /** Processor (or declarative projection) name. */
  processor: string;
  /** The event (payload read from the log). */
  event: StoredEvent<P>;
  /** Error code of the last failure. */
  errorCode: string;
  /** Error message of the last failure. */
  error: string;
  /** Failed attempts so far. */
  attempts: number;
  /** First failure, ms since the epoch. */
  firstFailedAt: number;
  /** Latest failure, ms since the epoch. */
  lastFailedAt: number;
}

/** A failure reported by an applier. @internal */
export interface Failure {
  event: StoredEvent;
  error: Error;
}

/** Applies batches for a processor: TypeScript handlers or a native declarative projection. @internal */
export interface Applier {
  /** One batch of at most `limit` events after the cursor; on a failure the prefix is committed. */
  batch(limit: number): Promise<{ consumed: number; cursor: bigint; failure?: Failure }>;
  /** Re-applies a dead letter's event and deletes it in one transaction; returns the new error if it fails again. */
  retryDeadLetter(id: number): Promise<Error | undefined>;
}

/**
 * Where a processor's cursor lives when it is not projection.db's cursor table (a
 * vector projection keeps it in LMDB, in the same commit as the vectors). @internal
 */
export interface CursorStore {
  /** The cursor as committed. */
  read(): bigint;
  /** Moves the cursor from `expect` over `event` (recording a dead letter first), unless someone else moved it. */
  passOver(expect: bigint, event: StoredEvent, dead: { error: Error; attempts: number } | undefined): Promise<boolean>;
  /** Drops the derived data, the cursor and the dead letters, for `rebuild()`. */
  reset(): Promise<void>;
}

/** Records (or updates) a dead letter in projection.db. @internal */
export function recordDeadLetter(sql: Sql, processor: string, event: StoredEvent, error: Error, attempts: number): void {
  const now = Date.now();
  sql.run(DLQ_UPSERT, [processor, event.id, event.type, codeOf(error), error.message, attempts, now, now]);
}

/** Shared services a processor needs. @internal */
export interface ProcessorHost {
  core: Core;
  sql: Sql;
  migrations: Migrations;
  /** Reads one event from the log. */
  event(id: bigint): StoredEvent | undefined;
  unregister(name: string): void;
}

const CURSOR_GET = 'SELECT last_event_id AS id FROM _athanor_cursors WHERE name = ?';
const CURSOR_SET =
  'INSERT INTO _athanor_cursors(name, last_event_id, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_event_id = excluded.last_event_id, updated_at = excluded.updated_at';
const DLQ_UPSERT =
  'INSERT INTO _athanor_dead_letters(processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ' +
  'ON CONFLICT(processor, event_id) DO UPDATE SET error_code = excluded.error_code, error = excluded.error, attempts = attempts + excluded.attempts, last_failed_at = excluded.last_failed_at';

/** Reads a processor's cursor (0n when it never ran). @internal */
export function readCursor(sql: Sql, name: string): bigint {
  const row = sql.get<{ id: number | bigint }>(CURSOR_GET, [name]);
  return row === undefined ? 0n : BigInt(row.id);
}

/** Node's Buffer has had `utf8Slice` (toString without argument juggling) since v0.x, on every version we support. */
type FastBuffer = Buffer & { utf8Slice(start: number, end: number): string };

/**
 * Decodes a batch of packed events (`Store::read_events`) for handlers. Same result as
 * `decodeEvents`, tuned for long runs of consecutive events: the type string and the
 * commit seq of the previous event are reused when their bytes repeat, and the commit
 * time is read without a BigInt.
 */
export function decodeBatch(buf: Buffer): StoredEvent[] {
  const b = buf as FastBuffer;
  const count = b.readUInt32LE(0);
  const out: StoredEvent[] = new Array(count);
  let o = 4;
  let prevType = '';
  let prevTypeOff = -1;
  let prevTypeLen = -1;
  let prevSeqLo = -1;
  let prevSeqHi = -1;
  let prevSeq = 0n;
  for (let i = 0; i < count; i++) {
    const id = b.readBigUInt64LE(o);
    const seqLo = b.readUInt32LE(o + 8);
    const seqHi = b.readUInt32LE(o + 12);
    let commitSeq = prevSeq;
    if (seqLo !== prevSeqLo || seqHi !== prevSeqHi) {
      commitSeq = prevSeq = b.readBigUInt64LE(o + 8);
      prevSeqLo = seqLo;
      prevSeqHi = seqHi;
    }
    const at = b.readUInt32LE(o + 16) + b.readUInt32LE(o + 20) * 4294967296;
    const kind = b[o + 24]!;
    const tlen = b.readUInt16LE(o + 25);
    const t0 = o + 27;
    let type = prevType;
    if (tlen !== prevTypeLen || !sameBytes(b, t0, prevTypeOff, tlen)) {
      type = prevType = b.utf8Slice(t0, t0 + tlen);
      prevTypeLen = tlen;
    }
    prevTypeOff = t0;
    o = t0 + tlen;
    const plen = b.readUInt32LE(o);
    o += 4;
    const payload = kind === 1 ? parseJson(b.utf8Slice(o, o + plen)) : new Uint8Array(b.subarray(o, o + plen));
    o += plen;
    out[i] = { id, type, payload, at, commitSeq };
  }
  return out;
}

function sameBytes(b: Buffer, x: number, y: number, n: number): boolean {
  if (y < 0) return false;
  for (let i = 0; i < n; i++) if (b[x + i] !== b[y + i]) return false;
  return true;
}

/** The error code a dead letter records for `e`. @internal */
export function codeOf(e: Error): string {
  return e instanceof AthanorError ? e.code : 'ERR_HANDLER';
}

/** Fatal (not per-event) problems: the batch is rolled back and processBatch rejects. */
class Fatal {
  constructor(readonly error: Error) {}
}

/** What one attempt at a batch found, before its transaction ends. */
interface Attempt {
  consumed: number;
  cursor: bigint;
  start: bigint;
  failure?: Failure;
  /** Whether the attempt's effects and cursor are to be committed. */
  commit: boolean;
}

/** The applier of TypeScript handlers (runs on the JS thread). @internal */
export class HandlerApplier implements Applier {
  readonly #host: ProcessorHost;
  readonly #name: string;
  readonly #byType = new Map<string, EventHandler<unknown>[]>();
  readonly #wildcard: EventHandler<unknown>[] = [];

  constructor(host: ProcessorHost, name: string, handlers: readonly EventHandler<unknown>[]) {
    this.#host = host;
    this.#name = name;
    for (const h of handlers) {
      const types = typeof h.eventType === 'string' ? [h.eventType] : h.eventType;
      for (const t of types) {
        if (t === '*') this.#wildcard.push(h);
        else {
          let list = this.#byType.get(t);
          if (list === undefined) this.#byType.set(t, (list = []));
          list.push(h);
        }
      }
    }
  }

  /** Runs the handlers of one event; throws the handler's error (as an Error) or a Fatal. */
  #dispatch(event: StoredEvent): void {
    const sql = this.#host.sql;
    const list = this.#byType.get(event.type);
    if (list !== undefined) for (const h of list) this.#one(h, sql, event);
    for (const h of this.#wildcard) this.#one(h, sql, event);
  }

  #one(h: EventHandler<unknown>, sql: Sql, event: StoredEvent): void {
    const what = `the handler for ${event.type}`;
    if (h.validate !== undefined) {
      let ok: boolean | void;
      try {
        ok = h.validate(event.payload);
      } catch (e) {
        this.#checkTransaction(event);
        throw new HandlerError(`event ${event.id} (${event.type}) failed validation: ${describeThrown(e)}`, { cause: e, eventId: event.id });
      }
      if (ok === false) throw new HandlerError(`event ${event.id} (${event.type}) failed validation`, { eventId: event.id });
    }
    let r: unknown;
    try {
      r = h.handle(sql, event);
    } catch (e) {
      this.#checkTransaction(event);
      throw thrownError(e, what, event.id);
    }
    if (r !== undefined && r !== null && typeof (r as { then?: unknown }).then === 'function') {
      throw new Fatal(
        new InvalidArgumentError(
          `the handler for ${event.type} returned a Promise; handlers must be synchronous (they run inside one SQLite transaction, which cannot span an await)`,
        ),
      );
    }
    this.#checkTransaction(event);
  }

  /**
   * A handler that tried to end the batch's transaction is a bug in it, whatever it did
   * with the refusal: stop. One whose statement rolled the transaction back (`INSERT OR
   * ROLLBACK`) failed on this event: the error strategy decides.
   */
  #checkTransaction(event: StoredEvent): void {
    const state = this.#host.sql.txState();
    if (state === 'violated') {
      throw new Fatal(
        new InvalidArgumentError(
          `the handler for ${event.type} tried to end the batch's transaction (BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE); athanor commits it with the cursor: use sql.transaction() for nested work`,
        ),
      );
    }
    if (state === 'lost') {
      throw new SqlError(
        `a statement of the handler for ${event.type} (ON CONFLICT ROLLBACK or RAISE(ROLLBACK)) rolled back the batch's transaction at event ${event.id}; nothing of the batch was written`,
      );
    }
  }

  /** Inside the batch's transaction: cursor, events, handlers, cursor. `limit` caps the events; `expect` guards a prefix re-run. */
  #apply(limit: number, expect: bigint | null): Attempt {
    const sql = this.#host.sql;
    const start = readCursor(sql, this.#name);
    if (expect !== null && start !== expect) return { consumed: 0, cursor: start, start, commit: false };
    let events: StoredEvent[];
    try {
      events = decodeBatch(this.#host.core.native.readEvents(start + 1n, null, null, limit, false));
    } catch (e) {
      throw fromNative(e);
    }
    let cursor = start;
    for (let i = 0; i < events.length; i++) {
      const ev = events[i]!;
      try {
        this.#dispatch(ev);
      } catch (e) {
        if (e instanceof Fatal) throw e.error;
        return { consumed: i, cursor, start, failure: { event: ev, error: e as Error }, commit: false };
      }
      cursor = ev.id;
    }
    if (cursor !== start) sql.run(CURSOR_SET, [this.#name, cursor, Date.now()]);
    return { consumed: events.length, cursor, start, commit: true };
  }

  /** One transaction around {@link #apply}; `committed` says whether it was committed. */
  #attempt(limit: number, expect: bigint | null): Attempt & { committed: boolean } {
    const sql = this.#host.sql;
    sql.txBegin(true);
    let r: Attempt;
    try {
      r = this.#apply(limit, expect);
    } catch (e) {
      sql.txAbandon();
      throw e;
    }
    sql.txEnd(r.commit);
    return { ...r, committed: r.commit };
  }

  batch(limit: number): Promise<{ consumed: number; cursor: bigint; failure?: Failure }> {
    try {
      const r = this.#attempt(limit, null);
      if (r.failure === undefined || r.consumed === 0) return Promise.resolve(r);
      // Commit the events before the failing one (their effects were rolled back with it).
      const p = this.#attempt(r.consumed, r.start);
      if (p.committed && p.failure === undefined && p.consumed === r.consumed) return Promise.resolve({ consumed: p.consumed, cursor: p.cursor, failure: r.failure });
      return Promise.resolve({ consumed: 0, cursor: p.start });
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** Inside the retry's transaction: the dead letter's event through the handlers. */
  #retry(id: number): { failure?: Error } {
    const sql = this.#host.sql;
    const row = sql.get<{ event_id: number | bigint }>('SELECT event_id FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#name]);
    if (row === undefined) throw new InvalidArgumentError(`processor ${JSON.stringify(this.#name)} has no dead letter ${id}`);
    const ev = this.#host.event(BigInt(row.event_id));
    if (ev === undefined) throw new InvalidArgumentError(`event ${row.event_id} of dead letter ${id} is not in the log`);
    try {
      this.#dispatch(ev);
    } catch (e) {
      if (e instanceof Fatal) throw e.error;
      return { failure: e as Error };
    }
    sql.run('DELETE FROM _athanor_dead_letters WHERE id = ?', [id]);
    return {};
  }

  retryDeadLetter(id: number): Promise<Error | undefined> {
    const sql = this.#host.sql;
    try {
      sql.txBegin(true);
      let r: { failure?: Error };
      try {
        r = this.#retry(id);
      } catch (e) {
        sql.txAbandon();
        throw e;
      }
      sql.txEnd(r.failure === undefined);
      if (r.failure === undefined) return Promise.resolve(undefined);
      const failure = r.failure;
      sql.run('UPDATE _athanor_dead_letters SET attempts = attempts + 1, error_code = ?, error = ?, last_failed_at = ? WHERE id = ?', [
        codeOf(failure),
        failure.message,
        Date.now(),
        id,
      ]);
      return Promise.resolve(failure);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
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

/** Normalised error strategy. */
interface Strategy {
  decide(error: Error, event: StoredEvent, attempt: number): ErrorAction;
  delay(attempt: number): number;
}

function strategyOf(s: ErrorStrategy): Strategy {
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

/** The dead-letter queue of one processor. */
export class DeadLetters {
  readonly #p: Processor;
  readonly #host: ProcessorHost;

  /** @internal */
  constructor(p: Processor, host: ProcessorHost) {
    this.#p = p;
    this.#host = host;
  }

  #row(r: Record<string, unknown>): DeadLetter {
    const eventId = BigInt(r.event_id as number | bigint);
    const event = this.#host.event(eventId) ?? { id: eventId, type: String(r.event_type), payload: undefined, at: 0, commitSeq: 0n };
    return {
      id: Number(r.id),
      processor: String(r.processor),
      event,
      errorCode: String(r.error_code),
      error: String(r.error),
      attempts: Number(r.attempts),
      firstFailedAt: Number(r.first_failed_at),
      lastFailedAt: Number(r.last_failed_at),
    };
  }

  /** Dead letters, oldest event first. */
  list(options: { limit?: number; offset?: number } = {}): DeadLetter[] {
    checkCallOptions(options, 'deadLetters.list', ['limit', 'offset']);
    const limit = options.limit ?? -1;
    const offset = options.offset ?? 0;
    if (!Number.isInteger(limit) || !Number.isInteger(offset) || offset < 0) throw new InvalidArgumentError('limit and offset must be integers');
    return this.#host.sql
      .all('SELECT * FROM _athanor_dead_letters WHERE processor = ? ORDER BY event_id LIMIT ? OFFSET ?', [this.#p.name, limit, offset])
      .map((r) => this.#row(r));
  }

  /** One dead letter by id, or `undefined`. */
  get(id: number): DeadLetter | undefined {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    const r = this.#host.sql.get('SELECT * FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#p.name]);
    return r === undefined ? undefined : this.#row(r);
  }

  /** Number of dead letters. */
  count(): number {
    return Number(this.#host.sql.get<{ n: number }>('SELECT count(*) AS n FROM _athanor_dead_letters WHERE processor = ?', [this.#p.name])!.n);
  }

  /**
   * Runs the event through the processor's current handlers again; on success its
   * effects and the dead letter's removal commit together and `true` is returned. On
   * failure nothing is applied, attempts/error/time are updated and `false` is returned.
   */
  async retry(id: number): Promise<boolean> {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    const e = await this.#p.applier.retryDeadLetter(id);
    return e === undefined;
  }

  /** Retries every dead letter, oldest event first. */
  async retryAll(): Promise<{ retried: number; failed: number }> {
    let retried = 0;
    let failed = 0;
    for (const d of this.list()) {
      if (await this.retry(d.id)) retried++;
      else failed++;
    }
    return { retried, failed };
  }

  /** Deletes a dead letter without applying it; returns whether it existed. */
  remove(id: number): boolean {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    return this.#host.sql.run('DELETE FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#p.name]).changes > 0;
  }

  /** Deletes every dead letter of this processor; returns how many. */
  clear(): number {
    return this.#host.sql.run('DELETE FROM _athanor_dead_letters WHERE processor = ?', [this.#p.name]).changes;
  }
}

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
    const p = this.#busy.then(() => this.#processBatch());
    this.#busy = p.catch(() => undefined);
    return p;
  }

  async #processBatch(): Promise<BatchResult> {
    if (this.#halt.signal.aborted) throw new ClosedError();
    this.#ready();
    const signal = this.#stop?.signal ?? this.#halt.signal;
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
      sql.run(CURSOR_SET, [this.name, event.id, Date.now()]);
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
  async catchUp(options: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<{ processed: number; cursor: bigint }> {
    const { onProgress, signal } = checkCallOptions(options, 'catchUp', ['onProgress', 'signal']);
    this.#ready();
    return this.#catchUp(onProgress, signal);
  }

  async #catchUp(onProgress: ((p: Progress) => void) | undefined, signal: AbortSignal | undefined): Promise<{ processed: number; cursor: bigint }> {
    const target = this.#head();
    let processed = 0;
    let cursor = this.cursor();
    while (cursor < target && signal?.aborted !== true) {
      const r = await this.processBatch();
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
  async rebuild(options: { onProgress?: (p: Progress) => void; schema?: 'reset' | 'migrations' } = {}): Promise<{ processed: number; cursor: bigint }> {
    const { onProgress, schema } = checkCallOptions(options, 'rebuild', ['onProgress', 'schema']);
    if (schema !== undefined && schema !== 'reset' && schema !== 'migrations') {
      throw new InvalidArgumentError(`rebuild's schema must be 'reset' or 'migrations', got ${describeThrown(schema)}`);
    }
    if (this.#running !== null) throw new InvalidArgumentError(`stop processor ${JSON.stringify(this.name)} before rebuilding it`);
    const sql = this.#host.sql;
    const mode = schema ?? (this.#reset !== undefined ? 'reset' : 'migrations');
    const reset = this.#reset;
    const m = this.#host.migrations;
    if (this.#store === undefined) {
      if (mode === 'reset' && reset === undefined) {
        throw new InvalidArgumentError(`processor ${JSON.stringify(this.name)} has no reset hook; give one (reset) or rebuild with { schema: 'migrations' }`);
      }
      if (mode === 'migrations') m.checkRebuild();
    }
    await this.#busy;
    if (this.#store !== undefined) {
      await this.#store.reset();
    } else if (mode === 'reset') {
      sql.transaction(() => {
        try {
          reset!(sql);
        } catch (e) {
          throw thrownError(e, `the reset hook of processor ${JSON.stringify(this.name)}`);
        }
        sql.run('DELETE FROM _athanor_cursors WHERE name = ?', [this.name]);
        sql.run('DELETE FROM _athanor_dead_letters WHERE processor = ?', [this.name]);
      }).immediate();
    } else {
      sql.transaction(() => {
        m.rollbackTo(0);
        m.run();
        sql.run('DELETE FROM _athanor_cursors');
        sql.run('DELETE FROM _athanor_dead_letters');
      }).immediate();
    }
    this.#cursor = 0n;
    return this.#catchUp(onProgress, undefined);
  }

  /** Stops and forgets this processor in this handle (its cursor stays in projection.db). */
  async close(): Promise<void> {
    await this.stop();
    this.#host.unregister(this.name);
  }
}

/**
 * Validates the options object of a processor call before it does anything: an object
 * with only `keys`, `onProgress` a function, `signal` an AbortSignal.
 */
function checkCallOptions<O extends object>(o: O, call: string, keys: readonly (keyof O & string)[]): O {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`${call}() options must be an object`);
  for (const k of Object.keys(o)) {
    if (!keys.includes(k as keyof O & string)) throw new InvalidArgumentError(`unknown ${call}() option ${JSON.stringify(k)}; expected ${keys.join(', ')}`);
  }
  const r = o as { onProgress?: unknown; signal?: unknown };
  if (r.onProgress !== undefined && typeof r.onProgress !== 'function') throw new InvalidArgumentError(`${call}() option onProgress must be a function (progress) => void`);
  if (r.signal !== undefined && !(r.signal instanceof AbortSignal)) throw new InvalidArgumentError(`${call}() option signal must be an AbortSignal`);
  return o;
}

/** Builds a {@link Processor} step by step: `db.processor('name').on('Type', fn).batchSize(500).build()`. */
export class ProcessorBuilder {
  readonly #name: string;
  readonly #make: (name: string, o: ProcessorOptions) => Processor;
  readonly #o: ProcessorOptions & { handlers: EventHandler<never>[] } = { handlers: [] };

  /** @internal */
  constructor(name: string, make: (name: string, o: ProcessorOptions) => Processor) {
    this.#name = name;
    this.#make = make;
  }

  /** Adds a handler for one event type, a list of types, or `'*'`. */
  on<P = unknown>(eventType: string | readonly string[], handle: HandleFn<P>, validate?: (payload: unknown) => boolean | void): this {
    return this.handler<P>(validate === undefined ? { eventType, handle } : { eventType, handle, validate });
  }

  /** Adds a handler object. */
  handler<P = unknown>(h: EventHandler<P>): this {
    this.#o.handlers.push(h as EventHandler<never>);
    return this;
  }

  /** Events per batch (one SQLite transaction). */
  batchSize(n: number): this {
    this.#o.batchSize = n;
    return this;
  }

  /** A poll of `run()` for file systems where watching files does not work, ms (default 0: off; other processes' commits are watched). */
  pollInterval(ms: number): this {
    this.#o.pollIntervalMs = ms;
    return this;
  }

  /** The error strategy. */
  onError(strategy: ErrorStrategy): this {
    this.#o.onError = strategy;
    return this;
  }

  /** Where skip/retry messages go. */
  onLog(log: (message: string, error: Error, event: StoredEvent) => void): this {
    this.#o.onLog = log;
    return this;
  }

  /** The reset hook used by `rebuild()`. */
  reset(fn: (sql: Sql) => void): this {
    this.#o.reset = fn;
    return this;
  }

  /** Lets the processor start while migrations are pending. */
  allowPendingMigrations(on = true): this {
    this.#o.allowPendingMigrations = on;
    return this;
  }

  /** Validates everything and returns the processor. */
  build(): Processor {
    return this.#make(this.#name, this.#o);
  }
}

/** Validates processor options; throws InvalidArgumentError naming the problem. @internal */
export function checkOptions(name: unknown, o: ProcessorOptions, needHandlers: boolean): void {
  try {
    checkOptionsOf(name, o, needHandlers);
  } catch (e) {
    if (e instanceof AthanorError) throw e;
    throw new InvalidArgumentError(`reading the processor options threw ${describeThrown(e)}; pass plain objects and arrays`, { cause: e });
  }
}

function checkOptionsOf(name: unknown, o: ProcessorOptions, needHandlers: boolean): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new InvalidArgumentError('a processor needs a name: a non-empty string of at most 200 characters');
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('processor options must be an object');
  const known = new Set(['handlers', 'batchSize', 'pollIntervalMs', 'onError', 'allowPendingMigrations', 'reset', 'onLog']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw new InvalidArgumentError(`unknown processor option ${JSON.stringify(k)}`);
  if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1 || o.batchSize > 1_000_000)) throw new InvalidArgumentError('batchSize must be an integer between 1 and 1000000');
  if (o.pollIntervalMs !== undefined && (!Number.isFinite(o.pollIntervalMs) || o.pollIntervalMs < 0)) throw new InvalidArgumentError('pollIntervalMs must be a non-negative number (0 disables polling)');
  if (o.reset !== undefined && typeof o.reset !== 'function') throw new InvalidArgumentError('reset must be a function (sql) => void');
  if (o.onLog !== undefined && typeof o.onLog !== 'function') throw new InvalidArgumentError('onLog must be a function');
  strategyOf(o.onError ?? 'failFast');
  if (!needHandlers) return;
  const hs = o.handlers ?? [];
  if (!Array.isArray(hs) || hs.length === 0) throw new InvalidArgumentError(`processor ${JSON.stringify(name)} has no handlers; add one with .on(type, fn) or handlers: [...]`);
  const claimed = new Set<string>();
  for (const h of hs as EventHandler<never>[]) {
    if (h === null || typeof h !== 'object') throw new InvalidArgumentError('a handler must be an object { eventType, handle, validate? }');
    for (const k of Object.keys(h)) if (k !== 'eventType' && k !== 'handle' && k !== 'validate') throw new InvalidArgumentError(`unknown handler key ${JSON.stringify(k)}; a handler has eventType, handle and validate`);
    const types = typeof h.eventType === 'string' ? [h.eventType] : h.eventType;
    if (!Array.isArray(types) || types.length === 0 || types.some((t) => typeof t !== 'string' || t.length === 0)) {
      throw new InvalidArgumentError("a handler's eventType must be a non-empty string, a non-empty list of them, or '*'");
    }
    if (new Set(types).size !== types.length) throw new InvalidArgumentError(`a handler lists an event type twice: ${JSON.stringify(types)}`);
    if (typeof h.handle !== 'function') throw new InvalidArgumentError(`the handler for ${JSON.stringify(h.eventType)} needs a handle(sql, event) function`);
    if (h.validate !== undefined && typeof h.validate !== 'function') throw new InvalidArgumentError('validate must be a function (payload) => boolean');
    for (const t of types) {
      if (claimed.has(t)) throw new InvalidArgumentError(`processor ${JSON.stringify(name)} has two handlers for ${JSON.stringify(t)}; one handler per event type (do both things in one handle function)`);
      claimed.add(t);
    }
  }
}
