/**
 * What the event-sourcing helpers (accumulators, queues, consumer groups) share: how
 * they reach the database, where their records live, the checks of their names.
 * Their records are JSON values under athanor's reserved prefix, written with the
 * INTERNAL capability, so they commit in the same transaction as a user's state and
 * events.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';
import { json, type Json, type Value } from '../state/codec.js';
import { INTERNAL, RESERVED_PREFIX } from '../state/reserved.js';
import { TxImpl, type TransactionBuilder, type Tx } from '../state/transaction.js';

/** How a helper reaches the database. @internal */
export interface StoreHost {
  /** A transaction builder allowed to write reserved keys. */
  transaction(): TransactionBuilder;
  /** The newest committed value of a key. */
  getOpt(key: string): Value | undefined;
  /** A page of committed state entries by prefix (keys in byte order). */
  list(options: { prefix: string; after?: string; limit?: number }): { key: string; value: Value }[];
  /** Throws `ClosedError` once the handle is closed. */
  assertOpen(): void;
}

/** Where time is read: the wall clock by default; tests pass a hand-moved one. */
export interface TimeSource {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

/** The wall clock. @internal */
export const wallClock: TimeSource = { now: () => Date.now() };

/** The root of every record of one helper kind, e.g. `\0athanor/acc/`. @internal */
export const recordPrefix = (kind: string): string => `${RESERVED_PREFIX}${kind}/`;

/**
 * Runs `fn` inside a user's transaction with the capability to write athanor's
 * records; refuses anything but a live transaction callback's `tx`. @internal
 */
export function elevated<T>(tx: Tx, fn: (tx: Tx) => T): T {
  if (!(tx instanceof TxImpl)) throw new InvalidArgumentError('pass the `tx` of a db.transaction() callback');
  return tx[INTERNAL](fn);
}

/** Reads a JSON record, or undefined. @internal */
export function readRecord<T>(v: Value | undefined): T | undefined {
  return v === undefined ? undefined : (v.toJS() as T);
}

/** Encodes a JSON record. @internal */
export function record(v: unknown): Value {
  return json(v as Json);
}

/** Checks a name that becomes part of state keys: non-empty, at most 100 UTF-8 bytes, no `/` or NUL. @internal */
export function checkName(name: unknown, what: string): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty string`);
  if (!name.isWellFormed()) throw new InvalidArgumentError(`${what} must not contain lone surrogates`);
  if (Buffer.byteLength(name) > 100) throw new InvalidArgumentError(`${what} is at most 100 UTF-8 bytes`);
  if (name.includes('/') || name.includes('\0')) throw new InvalidArgumentError(`${what} must not contain "/" or NUL, got ${JSON.stringify(name)}`);
}

/** Checks an id chosen by the caller (dedupe key, exposure id): non-empty, at most 256 UTF-8 bytes. @internal */
export function checkId(id: unknown, what: string): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty string`);
  if (!id.isWellFormed()) throw new InvalidArgumentError(`${what} must not contain lone surrogates`);
  if (Buffer.byteLength(id) > 256) throw new InvalidArgumentError(`${what} is at most 256 UTF-8 bytes (hash longer identifiers)`);
}

/** A non-negative safe integer option, or its default. @internal */
export function intOption(v: unknown, what: string, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${what} must be an integer of at least ${min}, got ${String(v)}`);
  return v;
}

/** Checks a clock option. @internal */
export function clockOption(v: unknown): TimeSource {
  if (v === undefined) return wallClock;
  if (v === null || typeof v !== 'object' || typeof (v as TimeSource).now !== 'function') throw new InvalidArgumentError('clock must be an object with now(): number');
  return v as TimeSource;
}

/** A decimal, zero-padded, so that byte order is numeric order (for index keys). @internal */
export function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** Every committed entry under a prefix, a page at a time. @internal */
export function* pages(host: StoreHost, prefix: string, pageSize = 1000): Generator<{ key: string; value: Value }> {
  let after: string | undefined;
  for (;;) {
    const page = host.list(after === undefined ? { prefix, limit: pageSize } : { prefix, after, limit: pageSize });
    yield* page;
    if (page.length < pageSize) return;
    after = page[page.length - 1]!.key;
  }
}
