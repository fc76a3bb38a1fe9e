/**
 * Accumulators: exactly-once additive values with reservations (`db.accumulators`).
 *
 * Each accumulator is one record (value, exposure, options) under athanor's reserved
 * prefix; every applied dedupe key and every open exposure is a record of its own.
 * An operation reads the accumulator's record in its transaction, so two concurrent
 * operations on one accumulator conflict and the second re-runs on the newer value
 * (the writer validates reads): a dedupe key is seen by whichever commits second.
 * Everything an operation checks is checked before it writes, so a refused
 * operation leaves the transaction as it was.
 */
import { BoundsError, InvalidArgumentError, NotFoundError } from '../errors.js';
import type { Tx } from '../state/transaction.js';
import { checkId, checkName, clockOption, elevated, intOption, pages, readRecord, record, recordPrefix, type StoreHost, type TimeSource } from './records.js';

/** The integer type of an accumulator's value. */
export type AccumulatorType = 'i64' | 'u256';

/** Options of {@link Accumulators.create}. */
export interface AccumulatorOptions {
  /**
   * How long (ms) an applied dedupe key is remembered: a key submitted again within
   * this time after it was applied is not applied again (default 7 days). After it,
   * the key may apply again; {@link Accumulators.prune} deletes expired keys.
   */
  dedupeWindow?: number;
  /**
   * The margin kept aside, in basis points of a positive value (0..10000, default 0):
   * `margin = ceil(max(value, 0) * marginBps / 10000)`.
   */
  marginBps?: number;
  /** `i64` (default: -2^63..2^63-1) or `u256` (0..2^256-1); a result outside is refused with `ERR_BOUNDS`. */
  type?: AccumulatorType;
}

/** An accumulator's numbers. */
export interface AccumulatorState {
  /** The sum of every applied delta. */
  value: bigint;
  /** The sum of the open exposures (reservations). */
  exposure: bigint;
  /** `ceil(max(value, 0) * marginBps / 10000)`. */
  margin: bigint;
  /** `value - exposure - margin`: what a new exposure may take. */
  available: bigint;
}

/** Options of an accumulate. */
export interface AccumulateOptions {
  /** Settles this open exposure in the same commit: its amount leaves `exposure`, the exposure is closed. */
  release?: string;
}

/** What an accumulate did. */
export interface AccumulateResult {
  /** False when the dedupe key had already been applied within the window (nothing changed). */
  applied: boolean;
  /** The value after the operation. */
  value: bigint;
}

/** One reservation of {@link Accumulators.exposeMany}. */
export interface ExposureInput {
  /** The accumulator. */
  name: string;
  /** A positive amount. */
  amount: bigint | number;
  /** Names the exposure: release or settle it with this id. */
  exposureId: string;
}

interface AccRecord {
  v: 1;
  type: AccumulatorType;
  dedupeWindow: number;
  marginBps: number;
  value: string;
  exposure: string;
}

interface ExposureRecord {
  amount: string;
  at: number;
}

interface DedupeRecord {
  at: number;
}

const PREFIX = recordPrefix('acc');
const accKey = (name: string): string => `${PREFIX}${name}`;
const exposureKey = (name: string, id: string): string => `${PREFIX}${name}/x/${id}`;
const dedupePrefix = (name: string): string => `${PREFIX}${name}/d/`;
const DAY = 86_400_000;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U256_MAX = 2n ** 256n - 1n;

function toBig(v: unknown, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  throw new InvalidArgumentError(`${what} must be a bigint or a safe integer number, got ${typeof v === 'number' ? v : typeof v}`);
}

function inRange(type: AccumulatorType, x: bigint): boolean {
  return type === 'i64' ? x >= I64_MIN && x <= I64_MAX : x >= 0n && x <= U256_MAX;
}

function stateOf(r: AccRecord): AccumulatorState {
  const value = BigInt(r.value);
  const exposure = BigInt(r.exposure);
  const positive = value > 0n ? value : 0n;
  const margin = (positive * BigInt(r.marginBps) + 9999n) / 10000n;
  return { value, exposure, margin, available: value - exposure - margin };
}

/** Accumulator operations inside one transaction (`db.accumulators.in(tx)`): they commit with its other writes. */
export class TxAccumulators {
  readonly #tx: Tx;
  readonly #clock: TimeSource;

  /** @internal */
  constructor(tx: Tx, clock: TimeSource) {
    this.#tx = tx;
    this.#clock = clock;
  }

  #read(tx: Tx, name: string): AccRecord {
    checkName(name, 'an accumulator name');
    const r = readRecord<AccRecord>(tx.getOpt(accKey(name)));
    if (r === undefined) throw new NotFoundError(`no accumulator named ${JSON.stringify(name)}: create it first with db.accumulators.create()`);
    return r;
  }

  /** The accumulator's numbers as this transaction sees them (its own writes included). */
  get(name: string): AccumulatorState {
    return elevated(this.#tx, (tx) => stateOf(this.#read(tx, name)));
  }

  /**
   * Adds `delta` (negative to subtract) unless `dedupeKey` was applied within the
   * window; with `release`, also closes that exposure (settle and release, one commit).
   * Refused with `ERR_BOUNDS` when the value would leave its type's range, and with
   * `ERR_NOT_FOUND` when the exposure to release is not open; nothing is written then.
   */
  accumulate(name: string, delta: bigint | number, dedupeKey: string, options: AccumulateOptions = {}): AccumulateResult {
    const d = toBig(delta, 'delta');
    checkId(dedupeKey, 'dedupeKey');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('accumulate options must be an object { release }');
    if (options.release !== undefined) checkId(options.release, 'release (an exposure id)');
    return elevated(this.#tx, (tx) => {
      const r = this.#read(tx, name);
      const now = this.#clock.now();
      const dk = `${dedupePrefix(name)}${dedupeKey}`;
      const seen = readRecord<DedupeRecord>(tx.getOpt(dk));
      if (seen !== undefined && now - seen.at < r.dedupeWindow) return { applied: false, value: BigInt(r.value) };
      let exposure = BigInt(r.exposure);
      let releaseKey: string | undefined;
      if (options.release !== undefined) {
        releaseKey = exposureKey(name, options.release);
        const x = readRecord<ExposureRecord>(tx.getOpt(releaseKey));
        if (x === undefined) throw new NotFoundError(`accumulator ${JSON.stringify(name)} has no open exposure ${JSON.stringify(options.release)} to release`);
        exposure -= BigInt(x.amount);
      }
      const value = BigInt(r.value) + d;
      if (!inRange(r.type, value)) throw new BoundsError(`accumulating ${d} into ${JSON.stringify(name)} would make its value ${value}, outside the ${r.type} range; nothing was written`);
      if (releaseKey !== undefined) tx.delete(releaseKey);
      tx.set(dk, record({ at: now } satisfies DedupeRecord));
      tx.set(accKey(name), record({ ...r, value: String(value), exposure: String(exposure) } satisfies AccRecord));
      return { applied: true, value };
    });
  }

  /**
   * Reserves `amount` (positive) under `exposureId`. Refused with `ERR_BOUNDS` when
   * `available` is smaller than `amount`. Exposing an id that is already open with the
   * same amount does nothing (returns false), so a retried call is safe; with another
   * amount it is refused with `ERR_INVALID_ARGUMENT`.
   */
  expose(name: string, amount: bigint | number, exposureId: string): boolean {
    return this.exposeMany([{ name, amount, exposureId }]) === 1;
  }

  /** Reserves a batch: all of them or, when one is refused, none. Returns how many were new. */
  exposeMany(exposures: Iterable<ExposureInput>): number {
    if (exposures === null || typeof (exposures as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] !== 'function') {
      throw new InvalidArgumentError('exposeMany() needs an iterable of { name, amount, exposureId }');
    }
    const list = [...exposures].map((e) => {
      if (e === null || typeof e !== 'object') throw new InvalidArgumentError('each exposure is an object { name, amount, exposureId }');
      checkName(e.name, 'an accumulator name');
      checkId(e.exposureId, 'exposureId');
      const amount = toBig(e.amount, 'amount');
      if (amount <= 0n) throw new InvalidArgumentError(`an exposure's amount must be positive, got ${amount}`);
      return { name: e.name, amount, exposureId: e.exposureId };
    });
    return elevated(this.#tx, (tx) => {
      const now = this.#clock.now();
      const touched = new Map<string, AccRecord>();
      const writes: [string, ExposureRecord][] = [];
      const ids = new Set<string>();
      for (const e of list) {
        const r = touched.get(e.name) ?? this.#read(tx, e.name);
        const xk = exposureKey(e.name, e.exposureId);
        if (ids.has(xk)) throw new InvalidArgumentError(`exposure ${JSON.stringify(e.exposureId)} of ${JSON.stringify(e.name)} appears twice in one batch`);
        ids.add(xk);
        const open = readRecord<ExposureRecord>(tx.getOpt(xk));
        if (open !== undefined) {
          if (BigInt(open.amount) !== e.amount) {
            throw new InvalidArgumentError(`exposure ${JSON.stringify(e.exposureId)} of ${JSON.stringify(e.name)} is already open with amount ${open.amount}, not ${e.amount}: use a new exposure id`);
          }
          touched.set(e.name, r);
          continue;
        }
        const s = stateOf(r);
        if (s.available < e.amount) {
          throw new BoundsError(`exposing ${e.amount} on ${JSON.stringify(e.name)} needs that much available, but only ${s.available} is (value ${s.value}, exposure ${s.exposure}, margin ${s.margin}); nothing was reserved`);
        }
        touched.set(e.name, { ...r, exposure: String(s.exposure + e.amount) });
        writes.push([xk, { amount: String(e.amount), at: now }]);
      }
      for (const [name, r] of touched) tx.set(accKey(name), record(r));
      for (const [k, x] of writes) tx.set(k, record(x));
      return writes.length;
    });
  }

  /** Closes an open exposure without settling anything (its amount becomes available again). Returns false when it was not open. */
  release(name: string, exposureId: string): boolean {
    checkId(exposureId, 'exposureId');
    return elevated(this.#tx, (tx) => {
      const r = this.#read(tx, name);
      const xk = exposureKey(name, exposureId);
      const x = readRecord<ExposureRecord>(tx.getOpt(xk));
      if (x === undefined) return false;
      tx.delete(xk);
      tx.set(accKey(name), record({ ...r, exposure: String(BigInt(r.exposure) - BigInt(x.amount)) }));
      return true;
    });
  }
}

/**
 * Exactly-once additive values with reservations (`db.accumulators`).
 *
 * ```ts
 * await db.accumulators.create('wallet:42', { dedupeWindow: 86_400_000, marginBps: 100 });
 * await db.accumulators.accumulate('wallet:42', 10_000n, 'deposit:abc');
 * await db.accumulators.accumulate('wallet:42', 10_000n, 'deposit:abc'); // a retry: not applied again
 * await db.accumulators.expose('wallet:42', 5_000n, 'order:1');
 * // Inside a transaction, with your own state and events:
 * await db.transaction().execute((tx) => {
 *   db.accumulators.in(tx).accumulate('wallet:42', -4_900n, 'fill:1', { release: 'order:1' });
 *   tx.log('order.filled', { order: 1 });
 * });
 * ```
 */
export class Accumulators {
  readonly #host: StoreHost;
  #clock: TimeSource;

  /** @internal */
  constructor(host: StoreHost, clock?: TimeSource) {
    this.#host = host;
    this.#clock = clockOption(clock);
  }

  /** Replaces the clock the dedupe window is measured with (tests move time by hand). */
  configure(options: { clock?: TimeSource }): this {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object { clock }');
    this.#clock = clockOption(options.clock);
    return this;
  }

  /** The operations of this handle inside a transaction: `db.accumulators.in(tx).accumulate(...)`. */
  in(tx: Tx): TxAccumulators {
    return new TxAccumulators(tx, this.#clock);
  }

  async #run<T>(fn: (a: TxAccumulators) => T): Promise<T> {
    this.#host.assertOpen();
    const r = await this.#host.transaction().execute((tx) => fn(this.in(tx)));
    return r.value;
  }

  /**
   * Creates an accumulator with value 0. Creating one that exists with the same
   * options does nothing (returns false); with other options it is refused.
   */
  async create(name: string, options: AccumulatorOptions = {}): Promise<boolean> {
    checkName(name, 'an accumulator name');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('accumulator options must be an object { dedupeWindow, marginBps, type }');
    const dedupeWindow = intOption(options.dedupeWindow, 'dedupeWindow (ms)', 7 * DAY, 1);
    const marginBps = intOption(options.marginBps, 'marginBps', 0);
    if (marginBps > 10_000) throw new InvalidArgumentError(`marginBps is at most 10000 (100%), got ${marginBps}`);
    const type = options.type ?? 'i64';
    if (type !== 'i64' && type !== 'u256') throw new InvalidArgumentError(`type must be 'i64' or 'u256', got ${String(type)}`);
    this.#host.assertOpen();
    const r = await this.#host.transaction().execute((tx) => {
      const cur = readRecord<AccRecord>(tx.getOpt(accKey(name)));
      if (cur !== undefined) {
        if (cur.type === type && cur.dedupeWindow === dedupeWindow && cur.marginBps === marginBps) return false;
        throw new InvalidArgumentError(`accumulator ${JSON.stringify(name)} exists with other options (type ${cur.type}, dedupeWindow ${cur.dedupeWindow}, marginBps ${cur.marginBps})`);
      }
      tx.set(accKey(name), record({ v: 1, type, dedupeWindow, marginBps, value: '0', exposure: '0' } satisfies AccRecord));
      return true;
    });
    return r.value;
  }

  /** Whether an accumulator exists. */
  exists(name: string): boolean {
    checkName(name, 'an accumulator name');
    this.#host.assertOpen();
    return this.#host.getOpt(accKey(name)) !== undefined;
  }

  /** The newest committed numbers of an accumulator (`ERR_NOT_FOUND` when it does not exist). */
  get(name: string): AccumulatorState {
    checkName(name, 'an accumulator name');
    this.#host.assertOpen();
    const r = readRecord<AccRecord>(this.#host.getOpt(accKey(name)));
    if (r === undefined) throw new NotFoundError(`no accumulator named ${JSON.stringify(name)}: create it first with db.accumulators.create()`);
    return stateOf(r);
  }

  /** The sum of the applied deltas. */
  value(name: string): bigint {
    return this.get(name).value;
  }

  /** The sum of the open exposures. */
  exposure(name: string): bigint {
    return this.get(name).exposure;
  }

  /** `value - exposure - margin`. */
  available(name: string): bigint {
    return this.get(name).available;
  }

  /** Applies `delta` once per dedupe key (see {@link TxAccumulators.accumulate}), in a transaction of its own. */
  accumulate(name: string, delta: bigint | number, dedupeKey: string, options?: AccumulateOptions): Promise<AccumulateResult> {
    return this.#run((a) => a.accumulate(name, delta, dedupeKey, options));
  }

  /** Reserves an amount (see {@link TxAccumulators.expose}), in a transaction of its own. */
  expose(name: string, amount: bigint | number, exposureId: string): Promise<boolean> {
    return this.#run((a) => a.expose(name, amount, exposureId));
  }

  /** Reserves a batch, all or none (see {@link TxAccumulators.exposeMany}). */
  exposeMany(exposures: Iterable<ExposureInput>): Promise<number> {
    const list = [...exposures];
    return this.#run((a) => a.exposeMany(list));
  }

  /** Closes an open exposure without settling (see {@link TxAccumulators.release}). */
  release(name: string, exposureId: string): Promise<boolean> {
    return this.#run((a) => a.release(name, exposureId));
  }

  /** The open exposures of an accumulator, by id. */
  exposures(name: string): Map<string, bigint> {
    checkName(name, 'an accumulator name');
    this.#host.assertOpen();
    const prefix = `${PREFIX}${name}/x/`;
    const out = new Map<string, bigint>();
    for (const e of pages(this.#host, prefix)) out.set(e.key.slice(prefix.length), BigInt(readRecord<ExposureRecord>(e.value)!.amount));
    return out;
  }

  /** Deletes the dedupe keys whose window has passed; returns how many. */
  async prune(name: string): Promise<number> {
    checkName(name, 'an accumulator name');
    this.#host.assertOpen();
    const r = readRecord<AccRecord>(this.#host.getOpt(accKey(name)));
    if (r === undefined) throw new NotFoundError(`no accumulator named ${JSON.stringify(name)}`);
    const now = this.#clock.now();
    const expired = [...pages(this.#host, dedupePrefix(name))].filter((e) => now - readRecord<DedupeRecord>(e.value)!.at >= r.dedupeWindow).map((e) => e.key);
    let done = 0;
    for (let i = 0; i < expired.length; i += 1000) {
      const chunk = expired.slice(i, i + 1000);
      const res = await this.#host.transaction().execute((tx) => {
        let n = 0;
        for (const k of chunk) {
          const d = readRecord<DedupeRecord>(tx.getOpt(k));
          if (d !== undefined && now - d.at >= r.dedupeWindow) {
            tx.delete(k);
            n++;
          }
        }
        return n;
      });
      done += res.value;
    }
    return done;
  }
}
