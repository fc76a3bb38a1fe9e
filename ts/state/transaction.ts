/**
 * Transactions: a synchronous callback reads one consistent snapshot and
 * buffers its writes; the batch crosses into Rust in one call and the single
 * writer validates what was read (optimistic concurrency) before applying it.
 */
import { INTERNAL, TRAIL, TRAIL_COUNT, TRAIL_PREFIX, checkWritableKey, type TrailCounter, type TrailWriter } from './reserved.js';
import { stringifyStrict } from '../internal/json.js';
import { Value, writeValue } from './codec.js';
import type { ByteWriter } from '../internal/bytes.js';
import { ConflictError, InvalidArgumentError, NotFoundError, PreflightError, fromNative } from '../errors.js';
import type { CommitInfo, Core } from './core.js';
import type { Json } from './codec.js';
import { checkEventType, checkIdempotencyKey, checkKey, checkStreamId } from './keys.js';
import { collectionInfo, TxVectorsImpl, VectorOps, type TxVectors } from './tx-vectors.js';

/** What one event to log looks like. */
export interface EventInput {
  /** Event type name: 1..200 UTF-8 bytes, no NUL. */
  type: string;
  /** A JSON-serialisable value, or bytes (`Uint8Array`). */
  payload: unknown;
  /** The payload's schema version (default 1); see {@link LogOptions.schemaVersion}. */
  schemaVersion?: number;
}

/** Options of {@link Tx.log}. */
export interface LogOptions {
  /**
   * The payload's schema version (an integer from 1, default 1), stored with the
   * event; readers bring older versions up to date with `db.events.upcaster()`.
   */
  schemaVersion?: number;
}

/** What a stream append expects of the stream's version when the writer applies it. */
export type ExpectedVersion = number | 'none' | 'any';

/** Options of {@link Tx.append}. */
export interface AppendOptions {
  /**
   * The stream's version (its number of events; 0: none) the append requires, checked
   * by the writer at commit: `'none'` (the stream has no events, same as `0`), `'any'`
   * (default: no check) or a number. A mismatch fails the transaction with
   * `WrongExpectedVersionError`, nothing written, and it is not retried.
   */
  expectedVersion?: ExpectedVersion;
}

/** Options of the numeric ops ({@link Tx.add} and the others). */
export interface NumericOptions {
  /** The result must be at least this, else `BoundsError`. */
  min?: bigint | number;
  /** The result must be at most this, else `BoundsError`. */
  max?: bigint | number;
  /** The value type: by default the stored value's, and `'i64'` for a missing key. A stored value of another type is `BoundsError`. */
  type?: 'i64' | 'u256';
}

/** Options of {@link TransactionBuilder.execute}. */
export interface ExecuteOptions {
  /**
   * Makes the commit idempotent: if a transaction with this key was already
   * applied (within the database's idempotency window, across restarts), nothing
   * is applied again and the result has `outcome: 'duplicate'`.
   */
  idempotencyKey?: string;
  /**
   * How many attempts may conflict before the transaction gives up with
   * `ConflictError` (default 10; `1` turns retries off).
   *
   * With {@link TransactionBuilder.execute}, the first attempt counts. When it
   * conflicts, the transaction queues for this handle's retry turn, which retried
   * transactions take one at a time, and re-runs holding it. An attempt made while
   * holding the turn counts only if nothing committed between its snapshot and its
   * conflict; a conflict means another transaction committed a change to a key it
   * read, so in practice those attempts never count. The guarantee: a transaction
   * gives up only with `maxAttempts: 1`; otherwise it retries until it commits,
   * fails for another reason (a preflight check, its callback throwing), or finds
   * its idempotency key recorded. It waits only while other transactions keep
   * committing changes to what it reads (each of its conflicts is another commit
   * made), and while it holds the turn no other retried transaction of this handle
   * competes with it; it re-runs at once, on the newest snapshot.
   *
   * {@link TransactionBuilder.executeSync} has no retry turn: it makes at most
   * `maxAttempts` attempts, with exponential backoff between them.
   */
  maxAttempts?: number;
}

/** Fields every commit result has. */
interface CommitResultBase {
  /** Commit sequence number (of the original commit, for a duplicate). Read-only transactions report the snapshot's. */
  commitSeq: bigint;
  /** Id of the first event logged, or `null` when none was. */
  firstEventId: bigint | null;
  /** Number of events logged. */
  eventCount: number;
  /** How many times the callback ran (1 unless it conflicted and was retried; for a duplicate, the runs before its key was found, often 0). */
  attempts: number;
}

/** The transaction was applied now. */
export interface AppliedResult<T> extends CommitResultBase {
  /** Applied now. */
  outcome: 'applied';
  /** What the callback returned. */
  value: T;
}

/**
 * A transaction with this idempotency key had already been applied: nothing was
 * applied now, and the ids are those of the original commit. Every attempt (the
 * first and each re-run after a conflict) looks the key up on the snapshot it is
 * about to read, before preflight checks and the callback: when the key is there,
 * neither runs. When the original commits after that snapshot, the writer finds
 * the key before validating what the attempt read, so the answer is still
 * `'duplicate'`, never a conflict or a second application.
 */
export interface DuplicateResult extends CommitResultBase {
  /** Applied before, under the same idempotency key. */
  outcome: 'duplicate';
  /** The callback's value is not kept: there is none for a duplicate. */
  value: undefined;
}

/** The outcome of a committed transaction: check `outcome` before using `value`. */
export type CommitResult<T = void> = AppliedResult<T> | DuplicateResult;

/** Reads and writes available inside a transaction callback. */
export interface Tx {
  /** The commit seq of the snapshot this attempt reads. */
  readonly snapshotSeq: bigint;
  /** Reads a key (your own writes included). Throws `NotFoundError` when absent. */
  get(key: string): Value;
  /** Reads a key, or `undefined` when absent. */
  getOpt(key: string): Value | undefined;
  /** Whether a key exists. */
  exists(key: string): boolean;
  /** Writes a value. */
  set(key: string, value: Value): void;
  /** Deletes a key (no error if absent). */
  delete(key: string): void;
  /** Reads a key and writes what `fn` returns; returning `undefined` deletes the key. */
  update(key: string, fn: (current: Value | undefined) => Value | undefined): void;
  /**
   * Appends an event; its id is assigned at commit. `payload` is bytes
   * (`Uint8Array`, stored as is) or a JSON-serialisable value, stored as JSON text.
   *
   * Integers keep every digit, so `i64` balances can go into payloads as they are:
   * - a `bigint` is written as a JSON integer literal with all its digits;
   * - on every read path (`events.read/tail/get`, processors' `event.payload`,
   *   vector projections' metadata) an integer literal that is not a safe integer
   *   (beyond ±(2^53-1)) is a `bigint`, and every other number is a `number`. So a
   *   bigint comes back as the same bigint when it is beyond the safe range and as a
   *   `number` of the same value when it is within it: compare with
   *   `BigInt(payload.amount)` when it may be either;
   * - a `number` comes back as the same number: an integer-valued number beyond
   *   the safe range (already rounded by JavaScript) is written in exponent form
   *   (`1.152921504606847e+18`) so that it does not read back as a bigint;
   * - declarative projections bind integers within the signed 64-bit range as
   *   SQLite INTEGER, exactly, and `json_extract` sees the same digits.
   *
   * NaN, Infinity, cycles and functions are refused with `ERR_INVALID_ARGUMENT`.
   */
  log(type: string, payload: unknown, options?: LogOptions): void;
  /** Appends several events in order. */
  logMany(events: Iterable<EventInput>): void;
  /**
   * Appends events to an entity stream: they get the stream's next versions and
   * their global ids, atomically with the rest of the transaction. See
   * {@link AppendOptions.expectedVersion} for the check the writer makes.
   * Stream ids: 1..256 UTF-8 bytes, no NUL.
   */
  append(streamId: string, events: EventInput | Iterable<EventInput>, options?: AppendOptions): void;
  /**
   * Adds `delta` to an `i64` or `u256` key (a missing key starts at 0), applied by
   * the writer at commit against the value then current. It records no read, so
   * concurrent adds to one key never conflict. A result outside the type's range or
   * `min`/`max` fails the transaction alone with `BoundsError`. The key cannot be
   * read, set or deleted in the same transaction (`InvalidArgumentError`): its
   * value is only known at commit.
   */
  add(key: string, delta: bigint | number, options?: NumericOptions): void;
  /** Subtracts `delta`; see {@link Tx.add}. */
  sub(key: string, delta: bigint | number, options?: NumericOptions): void;
  /** Raises the value to `value` if it is below; see {@link Tx.add}. */
  max(key: string, value: bigint | number, options?: NumericOptions): void;
  /** Lowers the value to `value` if it is above; see {@link Tx.add}. */
  min(key: string, value: bigint | number, options?: NumericOptions): void;
  /**
   * Writes to a vector collection in this transaction: its upserts and deletes
   * commit atomically with the transaction's state writes and events.
   * Throws `NotFoundError` when the collection does not exist.
   */
  vectors<M = Json>(collection: string): TxVectors<M>;
}

type Check = { key: string; test: (v: Value | undefined) => string | null };

const DELETED = null;
/** Wire format version of native/core/src/txn.rs. */
const WIRE_VERSION = 5;
const NUMERIC_OPS = { add: 1, sub: 2, max: 3, min: 4 } as const;
const U256_LIMIT = 1n << 256n;

/** The wire's integer: sign byte, then the magnitude in 32 bytes big-endian. */
function writeInt(w: ByteWriter, v: bigint): void {
  w.u8(v < 0n ? 1 : 0);
  let m = v < 0n ? -v : v;
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0 && m > 0n; i--) {
    out[i] = Number(m & 0xffn);
    m >>= 8n;
  }
  w.bytes(out);
}

function toBigInt(v: unknown, what: string): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v !== 'bigint') throw new InvalidArgumentError(`${what} must be a bigint or a safe integer number, got ${typeof v === 'number' ? v : typeof v}`);
  if (v <= -U256_LIMIT || v >= U256_LIMIT) throw new InvalidArgumentError(`${what} is beyond 256 bits`);
  return v;
}

function schemaVersionOf(options: LogOptions): number {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('log() options must be an object');
  const v = options.schemaVersion ?? 1;
  if (!Number.isSafeInteger(v) || v < 1 || v > 0xffffffff) throw new InvalidArgumentError(`schemaVersion must be an integer in 1..2^32-1, got ${String(v)}`);
  return v;
}

/** A trail count (write op 4): key, then the time as a u64, then the value. */
function writeCount(w: ByteWriter, key: string, at: number, value: Value): void {
  w.u8(4);
  w.str16(key);
  w.u32(at % 0x1_0000_0000);
  w.u32(Math.floor(at / 0x1_0000_0000));
  writeValue(w, value);
}

type Append = { stream: string; expect: 0 | 1 | 2; version: bigint; first: number; count: number };
type NumericOp = { op: number; type: number; key: string; operand: bigint; min: bigint | undefined; max: bigint | undefined };
/** One attempt of a transaction callback. @internal */
export class TxImpl implements Tx, TrailWriter, TrailCounter {
  #snapshotSeq: bigint | undefined;
  readonly #core: Core;
  readonly #reads = new Map<string, bigint>();
  readonly #writes = new Map<string, Value | null>();
  /** Audit trail records for the default namespace (see {@link TRAIL}), key then value. */
  readonly #trail: (string | Value)[] = [];
  /** The trail counts (see {@link TRAIL_COUNT}): most transactions have one, so the first has fields of its own. */
  #countKey: string | undefined;
  #countAt = 0;
  #countValue: Value | undefined;
  /** Any further ones, flat triples: key, time, value. */
  #moreCounts: (string | number | Value)[] | undefined;
  /** Flat triples: kind (1 json, 2 bytes), type, payload (JSON text or bytes). */
  readonly #events: (number | string | Uint8Array)[] = [];
  #vectorOps: VectorOps | undefined;
  readonly #vectorWriters = new Map<string, TxVectorsImpl<unknown>>();
  #open = true;
  #internal: boolean;
  readonly #appends: Append[] = [];
  readonly #numeric: NumericOp[] = [];
  /** Keys a numeric op changes: their value is only known at commit. */
  readonly #numericKeys = new Set<string>();

  constructor(core: Core, internal = false) {
    core.assertOpen();
    this.#core = core;
    this.#internal = internal;
  }

  /**
   * The snapshot is pinned at the first read, not at construction: a transaction
   * that only writes (blind `set`/`log`) needs no snapshot and has nothing to validate.
   */
  get snapshotSeq(): bigint {
    if (this.#snapshotSeq === undefined) this.#snapshotSeq = this.#core.txBegin();
    return this.#snapshotSeq;
  }

  #live(): void {
    if (!this.#open) throw new InvalidArgumentError('this transaction has finished; do not keep `tx` beyond its callback');
  }

  getOpt(key: string): Value | undefined {
    this.#live();
    checkKey(key);
    if (this.#numericKeys.has(key)) throw new InvalidArgumentError(`key ${JSON.stringify(key)} has a numeric op pending in this transaction; its value is known only at commit: read it after`);
    const w = this.#writes.get(key);
    if (w !== undefined) return w === DELETED ? undefined : w;
    if (this.#snapshotSeq === undefined) this.#snapshotSeq = this.#core.txBegin();
    const entry = this.#core.txGet(key);
    if (!this.#reads.has(key)) this.#reads.set(key, entry === undefined ? 0n : entry.version);
    return entry?.value;
  }

  get(key: string): Value {
    const v = this.getOpt(key);
    if (v === undefined) throw new NotFoundError(`key ${JSON.stringify(key)} does not exist; use getOpt() when absence is expected`);
    return v;
  }

  exists(key: string): boolean {
    return this.getOpt(key) !== undefined;
  }

  set(key: string, value: Value): void {
    this.#live();
    checkKey(key);
    if (!this.#internal) checkWritableKey(key);
    if (!Value.isValue(value)) throw new InvalidArgumentError(`set(${JSON.stringify(key)}) needs a Value: wrap it with i64(), str(), json(), ...`);
    this.#notNumeric(key);
    this.#writes.set(key, value);
  }

  delete(key: string): void {
    this.#live();
    checkKey(key);
    if (!this.#internal) checkWritableKey(key);
    this.#notNumeric(key);
    this.#writes.set(key, DELETED);
  }

  update(key: string, fn: (current: Value | undefined) => Value | undefined): void {
    if (typeof fn !== 'function') throw new InvalidArgumentError('update() needs a function (current) => next');
    checkKey(key);
    if (!this.#internal) checkWritableKey(key);
    const next = fn(this.getOpt(key));
    if (next === undefined) this.delete(key);
    else this.set(key, next);
  }

  log(type: string, payload: unknown, options?: LogOptions): void {
    this.#live();
    checkEventType(type, this.#internal);
    const version = options === undefined ? 1 : schemaVersionOf(options);
    if (version === 1) {
      if (payload instanceof Uint8Array) this.#events.push(2, type, new Uint8Array(payload));
      else this.#events.push(1, type, stringifyStrict(payload, `payload of event ${JSON.stringify(type)}`));
      return;
    }
    // Kinds 3 and 4 (txn.rs): the payload led by its schema version, u32 big-endian.
    const body = payload instanceof Uint8Array ? payload : Buffer.from(stringifyStrict(payload, `payload of event ${JSON.stringify(type)}`), 'utf8');
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, version);
    out.set(body, 4);
    this.#events.push(payload instanceof Uint8Array ? 4 : 3, type, out);
  }

  logMany(events: Iterable<EventInput>): void {
    if (events === null || typeof (events as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] !== 'function') {
      throw new InvalidArgumentError('logMany() needs an iterable of { type, payload }');
    }
    for (const e of events) {
      if (e === null || typeof e !== 'object') throw new InvalidArgumentError('logMany() entries must be { type, payload } objects');
      this.log(e.type, e.payload, e.schemaVersion === undefined ? undefined : { schemaVersion: e.schemaVersion });
    }
  }

  #notNumeric(key: string): void {
    if (this.#numericKeys.has(key)) throw new InvalidArgumentError(`key ${JSON.stringify(key)} has a numeric op pending in this transaction; set or delete it in another one`);
  }

  append(streamId: string, events: EventInput | Iterable<EventInput>, options: AppendOptions = {}): void {
    this.#live();
    checkStreamId(streamId);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('append() options must be an object');
    const ev = options.expectedVersion ?? 'any';
    let expect: 0 | 1 | 2;
    let version = 0n;
    if (ev === 'any') expect = 0;
    else if (ev === 'none') expect = 1;
    else if (typeof ev === 'number' && Number.isSafeInteger(ev) && ev >= 0) {
      expect = 2;
      version = BigInt(ev);
    } else throw new InvalidArgumentError(`expectedVersion must be a non-negative integer, 'none' or 'any', got ${String(ev)}`);
    const list: EventInput[] =
      events !== null && typeof events === 'object' && typeof (events as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function'
        ? [...(events as Iterable<EventInput>)]
        : [events as EventInput];
    if (list.length === 0) throw new InvalidArgumentError('append() needs at least one event');
    for (const e of list) {
      if (e === null || typeof e !== 'object') throw new InvalidArgumentError('append() events must be { type, payload } objects');
    }
    const first = this.#events.length / 3;
    try {
      for (const e of list) this.log(e.type, e.payload, e.schemaVersion === undefined ? undefined : { schemaVersion: e.schemaVersion });
    } catch (err) {
      this.#events.length = first * 3;
      throw err;
    }
    this.#appends.push({ stream: streamId, expect, version, first, count: list.length });
  }

  #numericOp(op: keyof typeof NUMERIC_OPS, key: string, operand: bigint | number, options: NumericOptions): void {
    this.#live();
    checkKey(key);
    if (!this.#internal) checkWritableKey(key);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError(`${op}() options must be an object`);
    if (this.#writes.has(key)) throw new InvalidArgumentError(`key ${JSON.stringify(key)} is set or deleted in this transaction; change it with ${op}() in another one`);
    const { min, max, type } = options;
    if (type !== undefined && type !== 'i64' && type !== 'u256') throw new InvalidArgumentError(`type must be 'i64' or 'u256', got ${String(type)}`);
    this.#numeric.push({
      op: NUMERIC_OPS[op],
      type: type === undefined ? 0 : type === 'i64' ? 1 : 2,
      key,
      operand: toBigInt(operand, `${op}() operand`),
      min: min === undefined ? undefined : toBigInt(min, 'min'),
      max: max === undefined ? undefined : toBigInt(max, 'max'),
    });
    this.#numericKeys.add(key);
  }

  add(key: string, delta: bigint | number, options: NumericOptions = {}): void {
    this.#numericOp('add', key, delta, options);
  }

  sub(key: string, delta: bigint | number, options: NumericOptions = {}): void {
    this.#numericOp('sub', key, delta, options);
  }

  max(key: string, value: bigint | number, options: NumericOptions = {}): void {
    this.#numericOp('max', key, value, options);
  }

  min(key: string, value: bigint | number, options: NumericOptions = {}): void {
    this.#numericOp('min', key, value, options);
  }

  vectors<M = Json>(collection: string): TxVectors<M> {
    this.#live();
    let w = this.#vectorWriters.get(collection);
    if (w === undefined) {
      const info = collectionInfo(this.#core.native, collection);
      this.#vectorOps ??= new VectorOps();
      w = new TxVectorsImpl<unknown>(info, this.#vectorOps, () => this.#live());
      this.#vectorWriters.set(collection, w);
    }
    return w as TxVectors<M>;
  }

  /**
   * Runs `fn` with athanor's capability to write reserved keys in this attempt: how
   * athanor's own records (accumulators, queues) commit inside a user's transaction. @internal
   */
  [INTERNAL]<T>(fn: (tx: Tx) => T): T {
    const was = this.#internal;
    this.#internal = true;
    try {
      return fn(this);
    } finally {
      this.#internal = was;
    }
  }

  /** See {@link TRAIL}. @internal */
  [TRAIL](key: string, value: Value): void {
    this.#live();
    if (!key.startsWith(TRAIL_PREFIX)) throw new InvalidArgumentError(`a trail put writes only athanor's audit trail, not ${JSON.stringify(key)}`);
    this.#trail.push(key, value);
  }

  /** See {@link TRAIL_COUNT}. @internal */
  [TRAIL_COUNT](key: string, at: number, value: Value): void {
    this.#live();
    if (!key.startsWith(TRAIL_PREFIX)) throw new InvalidArgumentError(`a trail count writes only athanor's audit trail, not ${JSON.stringify(key)}`);
    if (value.type !== 'bytes') throw new InvalidArgumentError(`a trail count carries a bytes value, not ${value.type}`);
    if (!Number.isSafeInteger(at) || at < 0) throw new InvalidArgumentError(`a trail count's time must be ms since the epoch, got ${at}`);
    if (this.#countKey === undefined) {
      this.#countKey = key;
      this.#countAt = at;
      this.#countValue = value;
    } else (this.#moreCounts ??= []).push(key, at, value);
  }

  /** Whether committing changes anything. */
  get isWrite(): boolean {
    return this.#writes.size > 0 || this.#trail.length > 0 || this.#countKey !== undefined || this.#events.length > 0 || (this.#vectorOps?.count ?? 0) > 0 || this.#numeric.length > 0;
  }

  /** Appends the batch, in the wire format of native/core/src/txn.rs, to `w`. */
  encode(w: ByteWriter, idempotencyKey: string | undefined): void {
    this.#open = false;
    w.u8(WIRE_VERSION);
    w.u32(this.#reads.size);
    for (const [k, version] of this.#reads) {
      w.str16(k);
      w.u64(version);
    }
    const trail = this.#trail;
    const more = this.#moreCounts;
    w.u32(this.#writes.size + trail.length / 2 + (this.#countKey === undefined ? 0 : 1) + (more === undefined ? 0 : more.length / 3));
    for (const [k, v] of this.#writes) {
      w.u8(v === DELETED ? 2 : 1);
      w.str16(k);
      if (v !== DELETED) writeValue(w, v);
    }
    for (let i = 0; i < trail.length; i += 2) {
      w.u8(3);
      w.str16(trail[i] as string);
      writeValue(w, trail[i + 1] as Value);
    }
    if (this.#countKey !== undefined) {
      writeCount(w, this.#countKey, this.#countAt, this.#countValue!);
      if (more !== undefined) for (let i = 0; i < more.length; i += 3) writeCount(w, more[i] as string, more[i + 1] as number, more[i + 2] as Value);
    }
    const ev = this.#events;
    w.u32(ev.length / 3);
    for (let i = 0; i < ev.length; i += 3) {
      const kind = ev[i] as number;
      w.u8(kind);
      w.str16(ev[i + 1] as string);
      if (kind === 1) w.str32(ev[i + 2] as string);
      else {
        const b = ev[i + 2] as Uint8Array;
        w.u32(b.length);
        w.bytes(b);
      }
    }
    const vo = this.#vectorOps;
    if (vo === undefined) w.u32(0);
    else {
      w.u32(vo.count);
      w.bytes(vo.w.view());
    }
    if (idempotencyKey === undefined) w.u16(0);
    else w.str16(idempotencyKey);
    w.u32(this.#appends.length);
    for (const a of this.#appends) {
      w.str16(a.stream);
      w.u8(a.expect);
      w.u64(a.version);
      w.u32(a.first);
      w.u32(a.count);
    }
    w.u32(this.#numeric.length);
    for (const n of this.#numeric) {
      w.u8(n.op);
      w.u8(n.type);
      w.str16(n.key);
      writeInt(w, n.operand);
      w.u8((n.min === undefined ? 0 : 1) | (n.max === undefined ? 0 : 2));
      if (n.min !== undefined) writeInt(w, n.min);
      if (n.max !== undefined) writeInt(w, n.max);
    }
  }

  close(): void {
    this.#open = false;
  }
}

/**
 * Builds a transaction: optional preflight checks, then {@link execute} (async,
 * group-committed) or {@link executeSync} (blocks the thread; for scripts).
 */
export class TransactionBuilder {
  readonly #core: Core;
  readonly #checks: Check[] = [];

  /** @internal */
  constructor(core: Core) {
    this.#core = core;
  }

  #internal = false;

  /** Lets this builder's transactions write athanor's reserved keys. @internal */
  [INTERNAL](): this {
    this.#internal = true;
    return this;
  }

  /** Requires `predicate(value)` to hold on the snapshot, else `PreflightError`. */
  require(key: string, predicate: (value: Value | undefined) => boolean, message?: string): this {
    checkKey(key);
    if (typeof predicate !== 'function') throw new InvalidArgumentError('require() needs a predicate function');
    this.#checks.push({ key, test: (v) => (predicate(v) ? null : (message ?? `preflight check on ${JSON.stringify(key)} failed`)) });
    return this;
  }

  /** Requires the key to exist. */
  requireExists(key: string): this {
    checkKey(key);
    this.#checks.push({ key, test: (v) => (v === undefined ? `key ${JSON.stringify(key)} must exist` : null) });
    return this;
  }

  /** Requires the key to be absent. */
  requireMissing(key: string): this {
    checkKey(key);
    this.#checks.push({ key, test: (v) => (v === undefined ? null : `key ${JSON.stringify(key)} must not exist`) });
    return this;
  }

  /** Requires an integer value (i64 or u256) of at least `min`. */
  requireMin(key: string, min: bigint | number): this {
    return this.#numeric(key, min, (x, m) => x >= m, 'at least');
  }

  /** Requires an integer value (i64 or u256) of at most `max`. */
  requireMax(key: string, max: bigint | number): this {
    return this.#numeric(key, max, (x, m) => x <= m, 'at most');
  }

  /** Requires the value to equal `expected` (same type and content). */
  requireEquals(key: string, expected: Value): this {
    checkKey(key);
    if (!Value.isValue(expected)) throw new InvalidArgumentError('requireEquals() needs a Value: wrap it with i64(), str(), ...');
    this.#checks.push({
      key,
      test: (v) => (v !== undefined && v.equals(expected) ? null : `key ${JSON.stringify(key)} must equal ${expected.toString()}, found ${v?.toString() ?? 'nothing'}`),
    });
    return this;
  }

  #numeric(key: string, bound: bigint | number, ok: (x: bigint, b: bigint) => boolean, words: string): this {
    checkKey(key);
    if (typeof bound !== 'bigint' && !(typeof bound === 'number' && Number.isSafeInteger(bound))) {
      throw new InvalidArgumentError(`the bound must be a bigint or a safe integer number, got ${typeof bound === 'number' ? bound : typeof bound}`);
    }
    const b = BigInt(bound);
    this.#checks.push({
      key,
      test: (v) => {
        if (v === undefined) return `key ${JSON.stringify(key)} must hold an integer ${words} ${b}, but it does not exist`;
        if (v.type !== 'i64' && v.type !== 'u256') return `key ${JSON.stringify(key)} must hold an integer ${words} ${b}, but holds ${v.type}`;
        const x = v.type === 'i64' ? v.asI64() : v.asU256();
        return ok(x, b) ? null : `key ${JSON.stringify(key)} is ${x}; it must be ${words} ${b}`;
      },
    });
    return this;
  }

  /**
   * Runs one attempt on a fresh snapshot. With an idempotency key, the key is
   * looked up on that same snapshot first: found there, the attempt is a
   * duplicate and neither the checks nor the callback run.
   */
  #attempt<T>(fn: (tx: Tx) => T, idempotencyKey: string | undefined): Attempt<T> {
    const core = this.#core;
    if (core.inCallback) throw new InvalidArgumentError('transactions cannot be nested: finish this callback first, or do both in one transaction');
    const tx = new TxImpl(core, this.#internal);
    if (idempotencyKey !== undefined) {
      void tx.snapshotSeq; // pins the snapshot the lookup and the callback share
      const known = core.idempotencyRecord(idempotencyKey, true);
      if (known !== undefined) {
        tx.close();
        return { duplicate: known };
      }
    }
    core.inCallback = true;
    try {
      for (const c of this.#checks) {
        const failure = c.test(tx.getOpt(c.key));
        if (failure !== null) throw new PreflightError(c.key, failure);
      }
      const value = fn(tx);
      if (value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function') {
        Promise.resolve(value).catch(() => {}); // the refused callback's own later rejection must not crash the process
        throw new InvalidArgumentError('the transaction callback must be synchronous (it returned a Promise); read what you need first, then run the transaction');
      }
      return { duplicate: undefined, tx, value, write: tx.isWrite || idempotencyKey !== undefined };
    } finally {
      tx.close();
      core.inCallback = false;
    }
  }

  /**
   * Runs `fn` on a snapshot and commits its writes atomically; resolves once the
   * commit is durable (under the database's durability mode).
   *
   * On a conflict (something it read changed before it committed), `fn` runs again
   * on a newer snapshot. The first conflict puts the transaction in this handle's
   * retry turn, where retried transactions run one at a time and retry until they
   * commit: see {@link ExecuteOptions.maxAttempts} for exactly when it gives up
   * with `ConflictError` (only with `maxAttempts: 1` when nothing else fails).
   * With an idempotency key, every attempt checks the key first
   * (see {@link DuplicateResult}).
   */
  async execute<T = void>(fn: (tx: Tx) => T, options?: ExecuteOptions & { idempotencyKey?: undefined }): Promise<AppliedResult<T>>;
  async execute<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions): Promise<CommitResult<T>>;
  async execute<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions = {}): Promise<CommitResult<T>> {
    const { idempotencyKey, maxAttempts } = checkOptions(options);
    checkCallback(fn);
    let release: (() => void) | undefined;
    let counted = 0;
    try {
      for (let attempt = 1; ; attempt++) {
        const a = this.#attempt(fn, idempotencyKey);
        if (a.duplicate !== undefined) return duplicateOf(a.duplicate, attempt - 1);
        if (!a.write) return readOnlyResult(a.tx, a.value, attempt);
        try {
          const info = await this.#core.commit(a.tx, idempotencyKey);
          return result(info, a.value, attempt);
        } catch (e) {
          if (!(e instanceof ConflictError)) throw e;
          // In the turn, a conflict counts only if nothing committed since the
          // attempt's snapshot: otherwise the database advanced, which is progress.
          if (release === undefined || this.#core.newestCommitSeq() <= a.tx.snapshotSeq) counted++;
          if (counted >= maxAttempts) {
            throw new ConflictError(`gave up after ${attempt} attempts: ${e.message}`, { cause: e });
          }
          release ??= await this.#core.retryTurn();
        }
      }
    } finally {
      release?.();
    }
  }

  /** Like {@link execute} but blocks until the commit is durable. For scripts and CLIs, not servers. */
  executeSync<T = void>(fn: (tx: Tx) => T, options?: ExecuteOptions & { idempotencyKey?: undefined }): AppliedResult<T>;
  executeSync<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions): CommitResult<T>;
  executeSync<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions = {}): CommitResult<T> {
    const { idempotencyKey, maxAttempts } = checkOptions(options);
    checkCallback(fn);
    for (let attempt = 1; ; attempt++) {
      const a = this.#attempt(fn, idempotencyKey);
      if (a.duplicate !== undefined) return duplicateOf(a.duplicate, attempt - 1);
      if (!a.write) return readOnlyResult(a.tx, a.value, attempt);
      try {
        const info = this.#core.commitSync(a.tx, idempotencyKey);
        return result(info, a.value, attempt);
      } catch (e) {
        if (e instanceof ConflictError && attempt < maxAttempts) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, backoffMs(attempt));
          continue;
        }
        if (e instanceof ConflictError) throw new ConflictError(`gave up after ${attempt} attempts: ${e.message}`, { cause: e });
        throw fromNative(e);
      }
    }
  }
}

/** One attempt: either the key was found on its snapshot, or the callback ran. */
type Attempt<T> = { duplicate: CommitInfo } | { duplicate: undefined; tx: TxImpl; value: T; write: boolean };

function checkCallback(fn: unknown): void {
  if (typeof fn !== 'function') throw new InvalidArgumentError(`the transaction callback must be a function, got ${fn === null ? 'null' : typeof fn}`);
}

function checkOptions(o: ExecuteOptions): { idempotencyKey: string | undefined; maxAttempts: number } {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('options must be an object');
  const { idempotencyKey, maxAttempts = 10 } = o;
  if (idempotencyKey !== undefined) checkIdempotencyKey(idempotencyKey);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new InvalidArgumentError('maxAttempts must be a positive integer');
  return { idempotencyKey, maxAttempts };
}

function result<T>(info: CommitInfo, value: T, attempts: number): CommitResult<T> {
  const { commitSeq, firstEventId, eventCount } = info;
  return info.outcome === 'applied' ? { outcome: 'applied', commitSeq, firstEventId, eventCount, value, attempts } : duplicateOf(info, attempts);
}

function duplicateOf(info: CommitInfo, attempts: number): DuplicateResult {
  const { commitSeq, firstEventId, eventCount } = info;
  return { outcome: 'duplicate', commitSeq, firstEventId, eventCount, value: undefined, attempts };
}

function readOnlyResult<T>(tx: TxImpl, value: T, attempts: number): CommitResult<T> {
  return { outcome: 'applied', commitSeq: tx.snapshotSeq, firstEventId: null, eventCount: 0, value, attempts };
}

/** Exponential backoff with jitter: 0.1 ms doubling to a 50 ms cap. */
function backoffMs(attempt: number): number {
  const cap = Math.min(50, 0.1 * 2 ** (attempt - 1));
  return cap / 2 + Math.random() * (cap / 2);
}

