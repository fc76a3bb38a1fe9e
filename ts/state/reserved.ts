/**
 * Names that belong to athanor, refused to users with `ERR_INVALID_ARGUMENT` before
 * anything is written (users may read what they name):
 * - state keys under {@link RESERVED_PREFIX} (`\0athanor/`): vector projection cursors,
 *   collection model bindings, scheduler tasks, accumulators, queues, consumer groups
 *   (`eventsourcing/`);
 * - event types starting with {@link RESERVED_EVENT_PREFIX} (`athanor.`), kept for the
 *   events athanor itself will log (none today);
 * - vector collection names starting with `.`: `index/.tmp-*` and `index/.old-*` are the
 *   folders of dumps being written or replaced, swept at open;
 * - SQL tables `_athanor_*` in projection.db (cursors, dead letters, migrations, the
 *   format version): refused by the connection's authorizer in native/core
 *   (projection/sql.rs); only native/core's bookkeeping writes them (sql/bookkeeping.ts).
 * Only code holding {@link INTERNAL} (never exported from the package) can write them.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';
import type { Value } from './codec.js';

/** The prefix of athanor's own state keys. @internal */
export const RESERVED_PREFIX = '\u0000athanor/';

/** The prefix of the event types athanor reserves for its own events. @internal */
export const RESERVED_EVENT_PREFIX = 'athanor.';

/** The capability to write reserved keys: a symbol only athanor's modules can name. @internal */
export const INTERNAL: unique symbol = Symbol('athanor.internal');

/**
 * The capability to write a record of athanor's audit trail (a key under
 * {@link TRAIL_PREFIX}) into the database's default namespace from a transaction of
 * any namespace, in that transaction's commit (a trail put, native/core/src/txn.rs). @internal
 */
export const TRAIL: unique symbol = Symbol('athanor.trail');

/**
 * The capability to count one decision of athanor's audit trail in a transaction's
 * commit: a trail count (native/core/src/txn.rs), which the writer merges with the
 * group commit's equal ones into one record. @internal
 */
export const TRAIL_COUNT: unique symbol = Symbol('athanor.trailCount');

/** What every audit trail key starts with (records and profiles). @internal */
export const TRAIL_PREFIX = `${RESERVED_PREFIX}audit`;

/** A transaction that takes trail puts. @internal */
export interface TrailWriter {
  /** Writes `value` under `key` (under {@link TRAIL_PREFIX}) in the default namespace, in this transaction's commit. */
  [TRAIL](key: string, value: Value): void;
}

/** A transaction that takes trail counts. @internal */
export interface TrailCounter {
  /**
   * Counts a decision made at `at` (ms since the epoch) under `key` (under
   * {@link TRAIL_PREFIX}) with `value`, a `bytes` value: stored as `value` followed by
   * the count and the span (see `ts/security/audit-format.ts`), merged with the equal
   * ones of the same group commit.
   */
  [TRAIL_COUNT](key: string, at: number, value: Value): void;
}

/** Throws unless `key` may be written by a user transaction. @internal */
export function checkWritableKey(key: string): void {
  if (key.startsWith(RESERVED_PREFIX)) {
    throw new InvalidArgumentError(
      `keys starting with "\\0athanor/" are reserved for athanor's own records (projection cursors, model bindings, schedules): choose another key than ${JSON.stringify(key)}`,
    );
  }
}

/** Throws unless a user transaction may log events of this type. @internal */
export function checkWritableEventType(type: string): void {
  if (type.startsWith(RESERVED_EVENT_PREFIX)) {
    throw new InvalidArgumentError(
      `event types starting with "${RESERVED_EVENT_PREFIX}" are reserved for athanor's own events: choose another type than ${JSON.stringify(type)} (for example without the "${RESERVED_EVENT_PREFIX}" prefix, or with your application's name)`,
    );
  }
}

/** Throws unless a user may create a vector collection of this name. @internal */
export function checkNewCollectionName(name: string): void {
  if (name.startsWith('.')) {
    throw new InvalidArgumentError(
      `collection names starting with "." are reserved (athanor keeps the folders of index dumps being written or replaced there): choose another name than ${JSON.stringify(name)}`,
    );
  }
}
