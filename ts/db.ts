/** The database handle. */
import { resolve } from 'node:path';
import { type Json, type Value } from './codec.js';
import { ClosedError, InvalidArgumentError, NotFoundError, fromNative } from './errors.js';
import { Core } from './core.js';
import { EventLog, readFrom, type EventSource, type ReadOptions, type StoredEvent } from './events.js';
import type { NativeSnapshot } from './native.js';
import { TransactionBuilder } from './transaction.js';
import { Projections, type DeclarativeSpec, type QueryOptions } from './projection.js';
import type { Processor, ProcessorBuilder, ProcessorOptions } from './processor.js';
import type { Migrations } from './migrations.js';
import type { NamedParams, Row, Sql, SqlBindable } from './sql.js';
import { VectorStore } from './vector.js';
import type { VectorProjection, VectorProjectionSpec } from './vector-projection.js';

/** How commits reach the disk. */
export type Durability =
  /** Default. A commit's promise resolves only after fsync: it survives `kill -9` and power loss. */
  | 'full'
  /**
   * Group data is fsynced, but the commit record is flushed at most every
   * `syncIntervalMs`: power loss may undo the last interval's commits (the store stays
   * consistent); a process crash loses nothing.
   */
  | 'batched'
  /** No fsync: a process crash loses nothing, power loss can lose commits and damage the store. Scratch data only. */
  | 'none';

/** Options of {@link Athanor.open}. */
export interface OpenOptions {
  /** Durability mode (default `'full'`). */
  durability?: Durability;
  /** For `'batched'`: longest time between syncs, ms (default 100). */
  syncIntervalMs?: number;
  /** Initial map size in bytes (default 256 MiB); the map grows by itself when full. */
  mapSize?: number;
  /** How long idempotency keys are remembered, ms (default 7 days; 0 = forever). */
  idempotencyWindowMs?: number;
}

function checkOpenOptions(o: OpenOptions): Required<OpenOptions> {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('options must be an object');
  const durability = o.durability ?? 'full';
  if (durability !== 'full' && durability !== 'batched' && durability !== 'none') {
    throw new InvalidArgumentError(`durability must be 'full', 'batched' or 'none', got ${String(durability)}`);
  }
  const syncIntervalMs = o.syncIntervalMs ?? 100;
  if (!Number.isInteger(syncIntervalMs) || syncIntervalMs < 1 || syncIntervalMs > 60_000) {
    throw new InvalidArgumentError('syncIntervalMs must be an integer between 1 and 60000');
  }
  const mapSize = o.mapSize ?? 256 * 1024 * 1024;
  if (!Number.isSafeInteger(mapSize) || mapSize < 1024 * 1024) throw new InvalidArgumentError('mapSize must be an integer of at least 1 MiB');
  const idempotencyWindowMs = o.idempotencyWindowMs ?? 7 * 24 * 3600 * 1000;
  if (!Number.isSafeInteger(idempotencyWindowMs) || idempotencyWindowMs < 0) {
    throw new InvalidArgumentError('idempotencyWindowMs must be a non-negative integer (0 keeps keys forever)');
  }
  return { durability, syncIntervalMs, mapSize, idempotencyWindowMs };
}

/** A consistent read-only view: every read sees the same committed state. Close it when done (or use `using`). */
export class Snapshot {
  readonly #core: Core;
  #native: NativeSnapshot | null;
  /** Commit seq this snapshot reflects. */
  readonly commitSeq: bigint;
  /** Id of the newest event visible in this snapshot (0n if none). */
  readonly lastEventId: bigint;
  readonly #src: EventSource;

  /** @internal */
  constructor(core: Core, snap: NativeSnapshot, onClose: (s: Snapshot) => void) {
    this.#core = core;
    this.#native = snap;
    const [lastEventId, commitSeq] = snap.heads();
    this.lastEventId = lastEventId!;
    this.commitSeq = commitSeq!;
    this.#onClose = onClose;
    this.#src = {
      readEvents: (f, t, ty, l, r) => this.#live().readEvents(f, t, ty, l, r),
      heads: () => this.#live().heads(),
    };
  }
  readonly #onClose: (s: Snapshot) => void;

  #live(): NativeSnapshot {
    if (this.#native === null) throw new ClosedError('this snapshot is closed; take a new one with db.snapshot()');
    return this.#native;
  }

  /** Reads a key as of the snapshot, or `undefined`. */
  getOpt(key: string): Value | undefined {
    const snap = this.#live();
    const n = this.#core.writeKey(key);
    try {
      return this.#core.decodeRead(snap.get(n), n, (k) => snap.getCopy(k));
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Reads a key as of the snapshot; throws `NotFoundError` when absent. */
  get(key: string): Value {
    const v = this.getOpt(key);
    if (v === undefined) throw new NotFoundError(`key ${JSON.stringify(key)} does not exist in this snapshot`);
    return v;
  }

  /** Whether a key exists in the snapshot. */
  exists(key: string): boolean {
    return this.getOpt(key) !== undefined;
  }

  /** Events visible in the snapshot. */
  events<P = unknown>(options: ReadOptions = {}): IterableIterator<StoredEvent<P>> {
    this.#live();
    return readFrom(this.#src, options) as IterableIterator<StoredEvent<P>>;
  }

  /** Releases the snapshot (its read transaction pins old pages until then). Idempotent. */
  close(): void {
    if (this.#native === null) return;
    this.#native.close();
    this.#native = null;
    this.#onClose(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * An open athanor database: durable typed state and an append-only event log,
 * committed together atomically.
 *
 * ```ts
 * await using db = await Athanor.open('./data');
 * await db.transaction().execute((tx) => {
 *   tx.set('acct:alice', i64(100n));
 *   tx.log('opened', { account: 'alice' });
 * });
 * db.get('acct:alice').asI64(); // 100n
 * ```
 */
export class Athanor {
  readonly #core: Core;
  readonly #snapshots = new Set<Snapshot>();
  /** The database directory (absolute). */
  readonly dir: string;
  /** The durability mode commits use. */
  readonly durability: Durability;
  /** The event log. */
  readonly events: EventLog;
  /** The vector collections. */
  readonly vectors: VectorStore;

  readonly #proj: Projections;

  private constructor(dir: string, o: Required<OpenOptions>) {
    this.dir = dir;
    this.durability = o.durability;
    this.#core = new Core(dir, o);
    this.events = new EventLog(this.#core);
    this.#proj = new Projections(this.#core, dir);
    this.vectors = new VectorStore(this.#core, () => this.transaction());
  }

  /**
   * Opens (creating if needed) the database in `dir`. Opening a directory that is
   * already open in this process shares the same engine.
   */
  static async open(dir: string, options: OpenOptions = {}): Promise<Athanor> {
    return Athanor.openSync(dir, options);
  }

  /** Synchronous {@link open}, for scripts. */
  static openSync(dir: string, options: OpenOptions = {}): Athanor {
    if (typeof dir !== 'string' || dir.length === 0) throw new InvalidArgumentError('dir must be a non-empty path string');
    return new Athanor(resolve(dir), checkOpenOptions(options));
  }

  /** Reads a key from the newest committed state; throws `NotFoundError` when absent. Synchronous. */
  get(key: string): Value {
    const v = this.#core.get(key);
    if (v === undefined) throw new NotFoundError(`key ${JSON.stringify(key)} does not exist; use getOpt() when absence is expected`);
    return v;
  }

  /** Reads a key from the newest committed state, or `undefined`. Synchronous. */
  getOpt(key: string): Value | undefined {
    return this.#core.get(key);
  }

  /** Whether a key exists in the newest committed state. */
  exists(key: string): boolean {
    return this.#core.get(key) !== undefined;
  }

  /** Starts building a transaction. */
  transaction(): TransactionBuilder {
    this.#core.assertOpen();
    return new TransactionBuilder(this.#core);
  }

  /** Opens a consistent read-only view. Close it (or `using snap = db.snapshot()`). */
  snapshot(): Snapshot {
    this.#core.assertOpen();
    let native;
    try {
      native = this.#core.native.snapshot();
    } catch (e) {
      throw fromNative(e);
    }
    const s = new Snapshot(this.#core, native, (x) => this.#snapshots.delete(x));
    this.#snapshots.add(s);
    return s;
  }

  /** The SQL connection to `<dir>/projection.db` (opened on first use): exec, prepare, run, get, all, iterate, transaction. */
  get sql(): Sql {
    return this.#proj.sql;
  }

  /** Runs a read-only query on a pool of projection.db connections, off the main thread. */
  query<R = Row>(sql: string, params?: readonly SqlBindable[] | NamedParams, options?: QueryOptions): Promise<R[]> {
    return this.#proj.query<R>(sql, params, options);
  }

  /** Starts building a processor named `name` (its cursor's key in projection.db). */
  processor(name: string): ProcessorBuilder;
  /** Creates a processor named `name` from options. */
  processor(name: string, options: ProcessorOptions): Processor;
  processor(name: string, options?: ProcessorOptions): Processor | ProcessorBuilder {
    this.#core.assertOpen();
    return this.#proj.processor(name, options);
  }

  /** Creates a declarative projection: event types mapped to SQL, executed natively. */
  projection(spec: DeclarativeSpec): Processor {
    this.#core.assertOpen();
    return this.#proj.projection(spec);
  }

  /**
   * Declares a vector projection: events of the given types are embedded into a
   * vector collection, exactly once, with the cursor committed in the same LMDB
   * commit as the vectors. Same lifecycle as processors (`run`, `catchUp`, `rebuild`,
   * `deadLetters`, error strategies); `rebuild()` recreates the collection from the log.
   *
   * ```ts
   * const p = db.vectorProjection({
   *   name: 'ticket-vectors', collection: 'tickets', embedder,
   *   on: { TicketOpened: { id: '$.ticketId', text: '$.body', metadata: { team: '$.team' } },
   *         TicketDeleted: { delete: true, id: '$.ticketId' } },
   * });
   * void p.run();
   * ```
   */
  vectorProjection<M = Json>(spec: VectorProjectionSpec<M>): VectorProjection<M> {
    this.#core.assertOpen();
    return this.#proj.vectorProjection(spec, this.vectors, () => this.transaction());
  }

  /** Schema migrations of projection.db. */
  get migrations(): Migrations {
    this.#core.assertOpen();
    return this.#proj.migrations;
  }

  /** Commit seq of the newest committed transaction (0n for a new database). */
  get commitSeq(): bigint {
    this.#core.assertOpen();
    try {
      return this.#core.native.heads()[1]!;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Flushes everything committed so far to disk (useful with `'batched'`/`'none'` durability). */
  async flush(): Promise<void> {
    this.#core.assertOpen();
    try {
      await this.#core.native.flush();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Checks the canonical store's invariants (dense event ids, type index matches
   * the log, every value decodes). Throws `CorruptError` on the first violation.
   */
  verify(): { events: number } {
    this.#core.assertOpen();
    try {
      return { events: this.#core.native.verify() };
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Size and counters, for monitoring. */
  stats(): { mapSize: number; commitSeq: bigint; lastEventId: bigint; pendingCommits: number; openSnapshots: number } {
    this.#core.assertOpen();
    const [lastEventId, commitSeq] = this.#core.native.heads();
    return { mapSize: this.#core.native.mapSize(), commitSeq: commitSeq!, lastEventId: lastEventId!, pendingCommits: this.#core.pendingCount, openSnapshots: this.#snapshots.size };
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#core.closed;
  }

  /**
   * Waits for this handle's queued commits, closes its snapshots and releases the
   * database. Later calls throw `ClosedError`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#core.closed) return;
    await this.#proj.close();
    while (this.#core.pendingCount > 0) await this.#core.drain();
    for (const s of [...this.#snapshots]) s.close();
    this.#core.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
