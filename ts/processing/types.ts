/**
 * The shapes processors share: the public options, results and dead letters, and
 * the internal contracts between a processor, its applier and its host.
 */
import type { StoredEvent } from '../state/events.js';
import type { Core } from '../state/core.js';
import type { Sql } from '../sql/sql.js';
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
  | {
      /** Retries with backoff, then dead-letters or stops. */
      retry: RetryPolicy;
    }
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


/** Shared services a processor needs. @internal */
export interface ProcessorHost {
  core: Core;
  sql: Sql;
  migrations: Migrations;
  /** Reads one event from the log. */
  event(id: bigint): StoredEvent | undefined;
  unregister(name: string): void;
}
