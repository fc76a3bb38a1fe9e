/**
 * The SQL connection to `<dir>/projection.db` (SQLite, WAL), in the style of
 * better-sqlite3: synchronous `exec`/`prepare`/`run`/`get`/`all`/`iterate` on
 * the JS thread, prepared statements with cached plans, named and positional
 * parameters, bigint-safe integers and nestable transactions.
 */
import { ClosedError, InvalidArgumentError, fromNative } from '../errors.js';
import type { NativeSql } from '../internal/native.js';
import { INTERNAL } from '../state/reserved.js';
import { Bookkeeping } from './bookkeeping.js';

/** A value SQLite can store, as a parameter. Booleans bind as 0/1, integral numbers as INTEGER. */
export type SqlBindable = number | bigint | string | boolean | null | undefined | Uint8Array;

/** Named parameters: `{ id: 1 }` binds `:id`, `@id` and `$id`. */
export type NamedParams = { readonly [name: string]: SqlBindable };

/** The parameters of one call: positional values, one array of them, or one object of named values. */
export type BindParams = SqlBindable[] | [readonly SqlBindable[]] | [NamedParams];

/** A value as read back: integers beyond ±(2^53-1) (or all integers with `safeIntegers`) are bigint, blobs are Buffers. */
export type SqlReadValue = number | bigint | string | null | Buffer;

/** A result row keyed by column name. */
export type Row = Record<string, SqlReadValue>;

/** What a write statement did. */
export interface RunResult {
  /** Rows inserted, updated or deleted by this statement (0 for read-only statements). */
  changes: number;
  /** Rowid of the most recent successful INSERT on the connection (bigint beyond 2^53, or with `safeIntegers`). */
  lastInsertRowid: number | bigint;
}

/** Raw statement functions installed by the addon (see native/node/src/projection.rs). @internal */
export interface SqlFast {
  run(handle: number, ...params: unknown[]): number;
  get(handle: number, ...params: unknown[]): Row | undefined;
  all(handle: number, ...params: unknown[]): Row[];
  iterStart(handle: number, ...params: unknown[]): number;
  iterNext(handle: number, generation: number): Row | undefined;
}

/**
 * {@link fromNative}, keeping the cause the addon attached (what a throwing getter or a
 * revoked proxy threw while a parameter was read).
 */
function nativeError(e: unknown): Error {
  const t = fromNative(e);
  if (t !== e && e instanceof Error && e.cause !== undefined && t.cause === undefined) {
    Object.defineProperty(t, 'cause', { value: e.cause, writable: true, configurable: true });
  }
  return t;
}

const finalizer = new FinalizationRegistry<{ native: NativeSql; id: number; owner: Sql }>((h) => {
  if (!h.owner.closed) h.native.finalize(h.id);
});

/**
 * A prepared statement. Cheap to call repeatedly: the plan is compiled once and
 * parameters are bound straight from the JS values.
 *
 * ```ts
 * const ins = db.sql.prepare('INSERT INTO moves(id, amount) VALUES (?, ?)');
 * ins.run(1, 250);
 * db.sql.prepare<{ total: number }>('SELECT sum(amount) AS total FROM moves').get()?.total;
 * ```
 */
export class Statement<R = Row> {
  /** The SQL text. */
  readonly source: string;
  /** Whether the statement leaves the database unchanged (a SELECT). */
  readonly reader: boolean;
  /** Result column names (empty for statements that return no rows). */
  readonly columns: readonly string[];
  readonly #owner: Sql;
  readonly #fast: SqlFast;
  readonly #rowid: Float64Array;
  readonly #rowidBig: BigInt64Array;
  #id: number;
  #handle: number;

  /** @internal */
  constructor(owner: Sql, fast: SqlFast, rowid: Float64Array, rowidBig: BigInt64Array, id: number, source: string, info: [boolean, number, string[]]) {
    this.#owner = owner;
    this.#fast = fast;
    this.#rowid = rowid;
    this.#rowidBig = rowidBig;
    this.#id = id;
    this.#handle = id * 2;
    this.source = source;
    this.reader = info[0];
    this.columns = info[2];
  }

  /** Returns integers as bigint always (`true`) or only beyond ±(2^53-1) (`false`, the default). */
  safeIntegers(on = true): this {
    this.#live();
    this.#handle = this.#id * 2 + (on ? 1 : 0);
    return this;
  }

  #live(): void {
    if (this.#id < 0) throw new InvalidArgumentError('this statement was finalized; prepare it again');
    this.#owner.assertOpen();
  }

  /** Runs the statement to completion. */
  run(...params: BindParams): RunResult {
    let changes: number;
    try {
      changes = this.#fast.run(this.#handle, ...params);
    } catch (e) {
      throw nativeError(this.#id < 0 ? new InvalidArgumentError('this statement was finalized; prepare it again') : e);
    }
    const f = this.#rowid[0]!;
    return { changes, lastInsertRowid: Number.isSafeInteger(f) && (this.#handle & 1) === 0 ? f : this.#rowidBig[1]! };
  }

  /** The first row, or `undefined` when there is none. */
  get(...params: BindParams): R | undefined {
    try {
      return this.#fast.get(this.#handle, ...params) as R | undefined;
    } catch (e) {
      throw nativeError(e);
    }
  }

  /** Every row. */
  all(...params: BindParams): R[] {
    try {
      return this.#fast.all(this.#handle, ...params) as R[];
    } catch (e) {
      throw nativeError(e);
    }
  }

  /**
   * Rows one at a time (lazy). Running the same statement again before the loop
   * ends invalidates the iteration (its next step throws); `break` ends it cleanly.
   */
  *iterate(...params: BindParams): Generator<R, void, undefined> {
    const handle = this.#handle;
    let gen: number;
    try {
      gen = this.#fast.iterStart(handle, ...params);
    } catch (e) {
      throw nativeError(e);
    }
    let done = false;
    try {
      for (;;) {
        let row: Row | undefined;
        try {
          row = this.#fast.iterNext(handle, gen);
        } catch (e) {
          throw fromNative(e);
        }
        if (row === undefined) {
          done = true;
          return;
        }
        yield row as R;
      }
    } finally {
      if (!done && this.#id >= 0 && !this.#owner.closed) this.#owner.resetIfCurrent(this.#id);
    }
  }

  /** Releases the statement now instead of when it is garbage-collected. */
  finalize(): void {
    if (this.#id < 0) return;
    this.#owner.release(this, this.#id);
    this.#id = -1;
    this.#handle = -2;
  }
}

/** A function wrapped by {@link Sql.transaction}. */
export interface TransactionFunction<A extends unknown[], T> {
  (...args: A): T;
  /** Same, but takes the write lock up front (`BEGIN IMMEDIATE`) instead of at the first write. */
  immediate(...args: A): T;
}

const CACHE_MAX = 256;

/**
 * The SQL connection of a database handle (`db.sql`). Synchronous, on the JS
 * thread; for reads off the main thread see `db.query()`.
 */
export class Sql {
  readonly #native: NativeSql;
  readonly #fast: SqlFast;
  readonly #scratch = new ArrayBuffer(16);
  readonly #rowid = new Float64Array(this.#scratch);
  readonly #rowidBig = new BigInt64Array(this.#scratch);
  readonly #cache = new Map<string, Statement<Row>>();
  #own: Bookkeeping | undefined;
  readonly #assertOpen: () => void;
  /** @internal */
  closed = false;

  /** @internal */
  constructor(native: NativeSql, assertOpen: () => void) {
    this.#native = native;
    this.#assertOpen = assertOpen;
    const fast = {} as SqlFast;
    native.install(Buffer.from(this.#scratch), fast as unknown as object);
    this.#fast = fast;
  }

  /** @internal */
  assertOpen(): void {
    this.#assertOpen();
  }

  /**
   * Runs a script of any number of statements (no parameters, no results). A script of
   * several statements runs inside a savepoint: if one fails, none of them is applied,
   * and it may not hold transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE).
   */
  exec(sql: string): void {
    checkSql(sql);
    this.#assertOpen();
    try {
      this.#native.exec(sql);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * The tables one statement reads and changes, as SQLite compiles it (views',
   * triggers' and foreign keys' bodies included; not run): `[table, write]` pairs, an
   * empty table name standing for what is not one table's (PRAGMA, ATTACH, VACUUM). @internal
   */
  accessOf(sql: string): [string, boolean][] {
    checkSql(sql);
    this.#assertOpen();
    try {
      return this.#native.tableAccess(sql);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Prepares one statement. `R` types its rows. */
  prepare<R = Row>(sql: string): Statement<R> {
    checkSql(sql);
    return this.#prepare<R>(sql);
  }

  #prepare<R>(sql: string): Statement<R> {
    this.#assertOpen();
    let id: number;
    let info: [boolean, number, string[]];
    try {
      id = this.#native.prepare(sql);
      info = this.#native.describe(id);
    } catch (e) {
      throw fromNative(e);
    }
    const s = new Statement<R>(this, this.#fast, this.#rowid, this.#rowidBig, id, sql, info);
    finalizer.register(s, { native: this.#native, id, owner: this }, s);
    return s;
  }

  /** A cached statement for `sql` (prepared on first use, reused after). */
  #cached(sql: string): Statement<Row> {
    let s = this.#cache.get(sql);
    if (s === undefined) {
      s = this.prepare(sql);
      if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(sql, s);
    }
    return s;
  }

  /**
   * athanor's bookkeeping on this connection (cursors, dead letters, migration history):
   * the connection's authorizer refuses user SQL that changes those tables. @internal
   */
  [INTERNAL](): Bookkeeping {
    return (this.#own ??= new Bookkeeping(this.#native, this.#assertOpen));
  }

  /** Runs `sql` with `params` through the statement cache. */
  run(sql: string, params?: readonly SqlBindable[] | NamedParams): RunResult {
    const s = this.#cached(sql);
    return params === undefined ? s.run() : s.run(params as SqlBindable[]);
  }

  /** First row of `sql` (statement cache), or `undefined`. */
  get<R = Row>(sql: string, params?: readonly SqlBindable[] | NamedParams): R | undefined {
    const s = this.#cached(sql);
    return (params === undefined ? s.get() : s.get(params as SqlBindable[])) as R | undefined;
  }

  /** All rows of `sql` (statement cache). */
  all<R = Row>(sql: string, params?: readonly SqlBindable[] | NamedParams): R[] {
    const s = this.#cached(sql);
    return (params === undefined ? s.all() : s.all(params as SqlBindable[])) as R[];
  }

  /** Rows of `sql` one at a time (statement cache). */
  iterate<R = Row>(sql: string, params?: readonly SqlBindable[] | NamedParams): Generator<R, void, undefined> {
    const s = this.#cached(sql);
    return (params === undefined ? s.iterate() : s.iterate(params as SqlBindable[])) as Generator<R, void, undefined>;
  }

  /** Whether a transaction is open on this connection. */
  get inTransaction(): boolean {
    this.#assertOpen();
    return this.#native.inTransaction();
  }

  /**
   * Wraps `fn` so each call runs in a transaction: committed when `fn` returns,
   * rolled back when it throws (the error is rethrown). Calls nested inside another
   * transaction (including a processor's batch) use a savepoint instead. `fn` must be
   * synchronous: a transaction cannot span an `await`. Inside, statements that would
   * end the transaction (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) are refused with
   * `ERR_INVALID_ARGUMENT`. If the database is closed inside `fn`, SQLite rolls the
   * transaction back and the call throws `ERR_CLOSED`.
   */
  transaction<A extends unknown[], T>(fn: (...args: A) => T): TransactionFunction<A, T> {
    if (typeof fn !== 'function') throw new InvalidArgumentError('transaction() needs a function');
    const wrap = (immediate: boolean) =>
      (...args: A): T => this.#inTransaction(immediate, () => fn(...args));
    const f = wrap(false) as TransactionFunction<A, T>;
    f.immediate = wrap(true);
    return f;
  }

  #inTransaction<T>(immediate: boolean, body: () => T): T {
    this.txBegin(immediate);
    let r: T;
    try {
      r = body();
      if (r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function') {
        throw new InvalidArgumentError('transaction functions must be synchronous: a SQLite transaction cannot span an await');
      }
    } catch (e) {
      this.txAbandon();
      throw e;
    }
    this.txEnd(true);
    return r;
  }

  /**
   * Opens a transaction level athanor owns (BEGIN or BEGIN IMMEDIATE, or a savepoint
   * inside an open transaction); until {@link txEnd}, user statements cannot end it. @internal
   */
  txBegin(immediate: boolean): void {
    this.#assertOpen();
    try {
      this.#native.txBegin(immediate);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Commits (`true`) or rolls back the innermost level from {@link txBegin}; it is closed either way. @internal */
  txEnd(commit: boolean): void {
    if (this.closed) throw new ClosedError('the database was closed inside the transaction; SQLite rolled it back, nothing of it was written');
    try {
      this.#native.txEnd(commit);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Rolls back the innermost level from {@link txBegin} while another error is on its way; never throws. @internal */
  txAbandon(): void {
    if (this.closed) return;
    try {
      this.#native.txEnd(false);
    } catch {
      /* the error being thrown matters more; the level is closed either way */
    }
  }

  /**
   * The transaction athanor owns, as a handler left it: `'ok'`, `'violated'` (a statement
   * was refused for transaction control since the last call; clears the mark) or `'lost'`
   * (a statement such as `INSERT OR ROLLBACK` rolled it back). @internal
   */
  txState(): 'ok' | 'violated' | 'lost' {
    let s: number;
    try {
      s = this.#native.txState();
    } catch (e) {
      throw fromNative(e);
    }
    return s === 0 ? 'ok' : s === 1 ? 'violated' : 'lost';
  }

  /** @internal */
  release(s: Statement<unknown>, id: number): void {
    finalizer.unregister(s);
    for (const [k, v] of this.#cache) if (v === s) this.#cache.delete(k);
    if (!this.closed) this.#native.finalize(id);
  }

  /** @internal */
  resetIfCurrent(id: number): void {
    this.#native.reset(id);
  }

  /** @internal */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#cache.clear();
    this.#native.close();
  }
}

function checkSql(sql: unknown): asserts sql is string {
  if (typeof sql !== 'string') throw new InvalidArgumentError('SQL text must be a string');
}
