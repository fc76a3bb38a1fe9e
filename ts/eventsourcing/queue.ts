/**
 * The durable work queue (`db.queue(name)`).
 *
 * Layout, under `\0athanor/q/<name>/` (every index key ends with the job id, and its
 * numbers are zero-padded decimals so that byte order is numeric order):
 * - `j/<id>`: the job (payload, priority, attempts, state, fencing token, its index key);
 * - `r/<10-digit inverted priority><16-digit due><id>`: ready jobs, so a lease takes the
 *   first entries of one prefix scan: highest priority first, then oldest due time, then
 *   the order of enqueue;
 * - `d/<due><id>`: delayed jobs (a delay, a retry's backoff), moved to `r/` by the lease
 *   that finds them due;
 * - `l/<lease expiry><id>`: leased jobs; a lease that finds one expired takes it over;
 * - `x/<id>`: dead letters (attempts exhausted);
 * - `k/<dedupe key>`: the id of the pending job enqueued with that key;
 * - `token`: the queue's last fencing token; every lease takes the next one.
 *
 * Why a stale worker cannot complete a job: an ack (or `requireLease` in a user's
 * transaction) reads the job's record and compares its token; a lease taken over since
 * carries a newer token, and a takeover that commits after the ack's snapshot makes the
 * ack's transaction conflict and re-run, when it finds the newer token.
 */
import { InvalidArgumentError, NotFoundError, StaleLeaseError } from '../errors.js';
import { i64, str, type Json } from '../state/codec.js';
import { parseJson, stringifyStrict } from '../internal/json.js';
import type { Tx } from '../state/transaction.js';
import { checkId, checkName, clockOption, elevated, intOption, pad, pages, readRecord, record, recordPrefix, type StoreHost, type TimeSource } from './records.js';

/** Options of a queue handle (not stored: every handle of a queue should pass the same). */
export interface QueueOptions {
  /** Leases per job before it goes to the dead letters (default 5). A lease that expires counts as a failed attempt. */
  maxAttempts?: number;
  /** Delay before the first retry (default 1,000 ms); it doubles with each attempt. */
  backoffMs?: number;
  /** Upper bound of the retry delay (default 60,000 ms). */
  maxBackoffMs?: number;
  /** Where time is read (default the wall clock); tests pass one they move by hand. */
  clock?: TimeSource;
}

/** Options of an enqueue. */
export interface EnqueueOptions {
  /** Ready only after this many ms (default 0). */
  delayMs?: number;
  /** Higher is leased first (an integer from -1e9 to 1e9, default 0). */
  priority?: number;
  /** While a job enqueued with this key is pending (not acked or removed), enqueueing with it again adds nothing and returns that job's id. */
  dedupeKey?: string;
}

/** Options of a lease. */
export interface LeaseOptions {
  /** At most this many jobs (default 1, at most 1000). */
  count?: number;
  /** How long the lease holds before another worker may take the job (default 30,000 ms). */
  visibilityMs?: number;
}

/** A leased job: hand it back to {@link Queue.ack}, {@link Queue.nack} or {@link Queue.extend}. */
export interface Job<P = Json> {
  /** The job's id (unique in its queue). */
  readonly id: string;
  /** What was enqueued. */
  readonly payload: P;
  /** Its priority. */
  readonly priority: number;
  /** 1 on the first lease, then one more per lease. */
  readonly attempt: number;
  /** The lease's fencing token: grows with every lease of the queue; an older one is refused. */
  readonly token: number;
  /** When the lease expires (ms since the epoch). */
  readonly leasedUntil: number;
  /** When it was enqueued. */
  readonly enqueuedAt: number;
}

/** A job whose attempts ran out. */
export interface DeadJob<P = Json> {
  /** The job's id. */
  id: string;
  /** What was enqueued. */
  payload: P;
  /** Attempts made. */
  attempts: number;
  /** The last failure (a nack's error or a lease expiry). */
  lastError: string | null;
  /** When it was enqueued. */
  enqueuedAt: number;
  /** When it was dead-lettered. */
  failedAt: number;
}

/** How many jobs are in each state. */
export interface QueueCounts {
  /** Ready to lease. */
  ready: number;
  /** Waiting for their delay or backoff. */
  delayed: number;
  /** Leased (expired leases included, until taken over). */
  leased: number;
  /** Dead letters. */
  dead: number;
}

interface JobRecord {
  v: 1;
  id: string;
  payload: string;
  priority: number;
  attempts: number;
  state: 'ready' | 'delayed' | 'leased' | 'dead';
  token: number;
  due: number;
  leasedUntil: number;
  enqueuedAt: number;
  index: string;
  dedupeKey: string | null;
  lastError: string | null;
  failedAt: number | null;
}

const PRIORITY_MAX = 1_000_000_000;
const TIME_WIDTH = 16;
let idCounter = 0;
const NONCE = Math.random().toString(36).slice(2, 10).padEnd(8, '0');

/** Every job id's length: 9 base-36 digits of time, an 8-character process nonce, a 6-digit counter. */
const ID_LENGTH = 23;

/** A job id that sorts by creation time within a process and is unique across processes. */
function newId(now: number): string {
  idCounter = (idCounter + 1) % 36 ** 6;
  return `${now.toString(36).padStart(9, '0')}${NONCE}${idCounter.toString(36).padStart(6, '0')}`;
}

class Keys {
  readonly root: string;
  constructor(name: string) {
    this.root = `${recordPrefix('q')}${name}/`;
  }
  job = (id: string): string => `${this.root}j/${id}`;
  ready = (priority: number, due: number, id: string): string => `${this.root}r/${pad(PRIORITY_MAX - priority, 10)}${pad(due, TIME_WIDTH)}${id}`;
  delayed = (due: number, id: string): string => `${this.root}d/${pad(due, TIME_WIDTH)}${id}`;
  leased = (until: number, id: string): string => `${this.root}l/${pad(until, TIME_WIDTH)}${id}`;
  dead = (id: string): string => `${this.root}x/${id}`;
  dedupe = (key: string): string => `${this.root}k/${key}`;
  get token(): string {
    return `${this.root}token`;
  }
  prefix = (kind: 'r' | 'd' | 'l' | 'x'): string => `${this.root}${kind}/`;
}

/** The time in a `d/` or `l/` index key. */
function timeOf(key: string, prefix: string): number {
  return Number(key.slice(prefix.length, prefix.length + TIME_WIDTH));
}

function jobOf<P>(r: JobRecord): Job<P> {
  return Object.freeze({
    id: r.id,
    payload: parseJson(r.payload) as P,
    priority: r.priority,
    attempt: r.attempts,
    token: r.token,
    leasedUntil: r.leasedUntil,
    enqueuedAt: r.enqueuedAt,
  });
}

function checkJob(job: unknown): asserts job is Job<unknown> {
  const j = job as Job<unknown>;
  if (j === null || typeof j !== 'object' || typeof j.id !== 'string' || typeof j.token !== 'number') {
    throw new InvalidArgumentError('pass the job object lease() returned (it carries the id and the fencing token)');
  }
}

interface Settings {
  maxAttempts: number;
  backoffMs: number;
  maxBackoffMs: number;
  clock: TimeSource;
}

/** Queue operations inside one transaction (`queue.in(tx)`): they commit with its other writes. */
export class TxQueue<P = Json> {
  readonly #tx: Tx;
  readonly #keys: Keys;
  readonly #s: Settings;
  readonly #name: string;

  /** @internal */
  constructor(tx: Tx, name: string, keys: Keys, settings: Settings) {
    this.#tx = tx;
    this.#name = name;
    this.#keys = keys;
    this.#s = settings;
  }

  /**
   * Adds a job; returns its id (with a dedupe key that is pending, that job's id and
   * nothing is added). Without a dedupe key the enqueue reads nothing, so concurrent
   * enqueues never conflict.
   */
  enqueue(payload: P, options: EnqueueOptions = {}): string {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('enqueue options must be an object { delayMs, priority, dedupeKey }');
    const delayMs = intOption(options.delayMs, 'delayMs', 0);
    const priority = options.priority ?? 0;
    if (!Number.isSafeInteger(priority) || Math.abs(priority) > PRIORITY_MAX) throw new InvalidArgumentError(`priority must be an integer from -1e9 to 1e9, got ${String(priority)}`);
    if (options.dedupeKey !== undefined) checkId(options.dedupeKey, 'dedupeKey');
    const text = stringifyStrict(payload, 'a job payload');
    return elevated(this.#tx, (tx) => {
      const k = this.#keys;
      if (options.dedupeKey !== undefined) {
        const known = tx.getOpt(k.dedupe(options.dedupeKey));
        if (known !== undefined) return known.asString();
      }
      const now = this.#s.clock.now();
      const id = newId(now);
      const due = now + delayMs;
      const index = delayMs > 0 ? k.delayed(due, id) : k.ready(priority, due, id);
      const r: JobRecord = {
        v: 1, id, payload: text, priority, attempts: 0, state: delayMs > 0 ? 'delayed' : 'ready', token: 0, due, leasedUntil: 0,
        enqueuedAt: now, index, dedupeKey: options.dedupeKey ?? null, lastError: null, failedAt: null,
      };
      tx.set(k.job(id), record(r));
      tx.set(index, record(1));
      if (options.dedupeKey !== undefined) tx.set(k.dedupe(options.dedupeKey), str(id));
      return id;
    });
  }

  #held(tx: Tx, job: Job<unknown>): JobRecord {
    checkJob(job);
    const r = readRecord<JobRecord>(tx.getOpt(this.#keys.job(job.id)));
    if (r === undefined || r.state !== 'leased' || r.token !== job.token) {
      throw new StaleLeaseError(
        `job ${job.id} of queue ${JSON.stringify(this.#name)} is no longer leased with token ${job.token} (${r === undefined ? 'it was completed or removed' : r.state === 'leased' ? `another lease holds it, token ${r.token}` : `it is ${r.state}`}); nothing was written: this worker's work on it must not commit`,
      );
    }
    return r;
  }

  /**
   * Fails this transaction with `ERR_STALE_LEASE` unless `job` is still leased with
   * its token. The job's record is read, so a takeover that commits first makes this
   * transaction conflict and re-run, when it fails.
   */
  requireLease(job: Job<unknown>): void {
    elevated(this.#tx, (tx) => this.#held(tx, job));
  }

  /** Completes the job (deletes it) if its lease is current, else `ERR_STALE_LEASE`. */
  ack(job: Job<unknown>): void {
    elevated(this.#tx, (tx) => {
      const r = this.#held(tx, job);
      tx.delete(r.index);
      tx.delete(this.#keys.job(r.id));
      if (r.dedupeKey !== null) tx.delete(this.#keys.dedupe(r.dedupeKey));
    });
  }

  /**
   * Gives the job back: retried after `delayMs` (default: the backoff of its attempt),
   * or dead-lettered when its attempts ran out. Returns where it went.
   */
  nack(job: Job<unknown>, options: { delayMs?: number; error?: string } = {}): 'retry' | 'dead' {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('nack options must be an object { delayMs, error }');
    const delay = options.delayMs === undefined ? undefined : intOption(options.delayMs, 'delayMs', 0);
    if (options.error !== undefined && typeof options.error !== 'string') throw new InvalidArgumentError('error must be a string');
    return elevated(this.#tx, (tx) => {
      const r = this.#held(tx, job);
      const now = this.#s.clock.now();
      return this.#fail(tx, r, now, options.error ?? 'nacked', delay);
    });
  }

  /** Moves a failed attempt to its retry or the dead letters. @internal */
  #fail(tx: Tx, r: JobRecord, now: number, error: string, delayMs: number | undefined): 'retry' | 'dead' {
    const k = this.#keys;
    tx.delete(r.index);
    if (r.attempts >= this.#s.maxAttempts) {
      const dead: JobRecord = { ...r, state: 'dead', index: k.dead(r.id), lastError: error, failedAt: now };
      tx.set(dead.index, record(1));
      tx.set(k.job(r.id), record(dead));
      return 'dead';
    }
    const wait = delayMs ?? Math.min(this.#s.maxBackoffMs, this.#s.backoffMs * 2 ** (r.attempts - 1));
    const due = now + wait;
    const index = wait > 0 ? k.delayed(due, r.id) : k.ready(r.priority, due, r.id);
    const next: JobRecord = { ...r, state: wait > 0 ? 'delayed' : 'ready', due, index, lastError: error };
    tx.set(index, record(1));
    tx.set(k.job(r.id), record(next));
    return 'retry';
  }

  /** Extends the lease to `ms` from now; returns the job with its new expiry (`ERR_STALE_LEASE` if no longer held). */
  extend(job: Job<unknown>, ms: number): Job<P> {
    const extra = intOption(ms, 'ms', 0, 1);
    return elevated(this.#tx, (tx) => {
      const r = this.#held(tx, job);
      const until = this.#s.clock.now() + extra;
      const index = this.#keys.leased(until, r.id);
      tx.delete(r.index);
      tx.set(index, record(1));
      const next: JobRecord = { ...r, leasedUntil: until, index };
      tx.set(this.#keys.job(r.id), record(next));
      return jobOf<P>(next);
    });
  }

  /**
   * Leases up to `count` jobs: ready ones by (priority, due time, enqueue order), due
   * delayed ones, and jobs whose lease expired (their attempt counts as failed: past
   * `maxAttempts` they go to the dead letters instead). @internal (use {@link Queue.lease})
   */
  lease(list: StoreHost['list'], requests: readonly { count: number; visibilityMs: number }[]): Job<P>[][] {
    const count = requests.reduce((n, r) => n + r.count, 0);
    return elevated(this.#tx, (tx) => {
      const k = this.#keys;
      const now = this.#s.clock.now();
      const candidates: JobRecord[] = [];
      const consider = (indexKey: string): void => {
        if (tx.getOpt(indexKey) === undefined) return; // taken since the scan: the read makes a race conflict
        const r = readRecord<JobRecord>(tx.getOpt(k.job(indexKey.slice(indexKey.length - ID_LENGTH))));
        if (r !== undefined && r.index === indexKey) candidates.push(r);
      };
      // The listing is the newest committed state this process has seen, which may lag
      // another process's commits: an entry it shows may be gone from the transaction's
      // snapshot (`consider` skips it), so each index is paged on until enough are found.
      const scan = (prefix: string, due: boolean): void => {
        let after: string | undefined;
        for (;;) {
          const page = list(after === undefined ? { prefix, limit: count } : { prefix, after, limit: count });
          for (const e of page) {
            if (due && timeOf(e.key, prefix) > now) return;
            consider(e.key);
          }
          if (page.length < count || candidates.length >= count) return;
          after = page[page.length - 1]!.key;
        }
      };
      scan(k.prefix('l'), true);
      scan(k.prefix('d'), true);
      scan(k.prefix('r'), false);
      candidates.sort((a, b) => b.priority - a.priority || a.due - b.due || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      let token = Number(tx.getOpt(k.token)?.asI64() ?? 0n);
      const out: Job<P>[][] = requests.map(() => []);
      let served = 0;
      for (const r of candidates) {
        while (served < requests.length && out[served]!.length === requests[served]!.count) served++;
        if (served === requests.length) break;
        const visibilityMs = requests[served]!.visibilityMs;
        let lastError = r.lastError;
        if (r.state === 'leased') {
          // An expired lease: that attempt failed, and past maxAttempts the job is dead.
          lastError = `the lease (token ${r.token}) expired without an ack`;
          if (r.attempts >= this.#s.maxAttempts) {
            this.#fail(tx, r, now, lastError, undefined);
            continue;
          }
        }
        tx.delete(r.index);
        token++;
        const until = now + visibilityMs;
        const index = k.leased(until, r.id);
        const next: JobRecord = { ...r, state: 'leased', attempts: r.attempts + 1, token, leasedUntil: until, index, lastError };
        tx.set(index, record(1));
        tx.set(k.job(r.id), record(next));
        out[served]!.push(jobOf<P>(next));
      }
      if (tx.getOpt(k.token)?.asI64() !== BigInt(token)) tx.set(k.token, i64(BigInt(token)));
      return out;
    });
  }
}


/**
 * A durable work queue (`db.queue(name)`): jobs with priorities and delays, leases
 * with fencing tokens, retries with backoff, dead letters. Workers in several
 * processes share it through the database.
 *
 * ```ts
 * const q = db.queue<{ to: string }>('emails', { maxAttempts: 3 });
 * await q.enqueue({ to: 'a@example.com' }, { priority: 1 });
 * for (const job of await q.lease({ count: 10, visibilityMs: 30_000 })) {
 *   await db.transaction().execute((tx) => {
 *     tx.set(`sent/${job.id}`, str(job.payload.to)); // the work's own writes...
 *     q.in(tx).ack(job); // ...commit with the ack, or not at all (stale lease)
 *   });
 * }
 * ```
 */
export class Queue<P = Json> {
  readonly #host: StoreHost;
  readonly #keys: Keys;
  readonly #s: Settings;
  /** The name of the queue. */
  readonly name: string;

  /** @internal */
  constructor(host: StoreHost, name: string, options: QueueOptions = {}) {
    checkName(name, 'a queue name');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('queue options must be an object { maxAttempts, backoffMs, maxBackoffMs }');
    this.#host = host;
    this.name = name;
    this.#keys = new Keys(name);
    this.#s = {
      maxAttempts: intOption(options.maxAttempts, 'maxAttempts', 5, 1),
      backoffMs: intOption(options.backoffMs, 'backoffMs', 1000),
      maxBackoffMs: intOption(options.maxBackoffMs, 'maxBackoffMs', 60_000),
      clock: clockOption(options.clock),
    };
  }

  /** This queue's operations inside a transaction: `q.in(tx).enqueue(...)`, `.ack(job)`, `.requireLease(job)`. */
  in(tx: Tx): TxQueue<P> {
    return new TxQueue<P>(tx, this.name, this.#keys, this.#s);
  }

  async #run<T>(fn: (q: TxQueue<P>) => T): Promise<T> {
    this.#host.assertOpen();
    return (await this.#host.transaction().execute((tx) => fn(this.in(tx)))).value;
  }

  /** Adds a job in a transaction of its own; returns its id (see {@link TxQueue.enqueue}). */
  enqueue(payload: P, options?: EnqueueOptions): Promise<string> {
    return this.#run((q) => q.enqueue(payload, options));
  }

  /** Adds several jobs in one transaction; returns their ids. */
  enqueueMany(jobs: Iterable<{ payload: P } & EnqueueOptions>): Promise<string[]> {
    const list = [...jobs];
    return this.#run((q) => list.map((j) => q.enqueue(j.payload, j)));
  }

  /**
   * Leases up to `count` jobs for `visibilityMs` (see `TxQueue.lease`); an empty
   * array when none is due. The leases of one handle are taken one transaction at a
   * time (they would race for the same jobs): calls made while one is committing are
   * served together by the next, in one commit. Leases of other processes that race
   * for a job conflict, and the loser re-runs on the newer state.
   */
  lease(options: LeaseOptions = {}): Promise<Job<P>[]> {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('lease options must be an object { count, visibilityMs }');
    const count = intOption(options.count, 'count', 1, 1);
    if (count > 1000) throw new InvalidArgumentError(`count is at most 1000, got ${count}`);
    const visibilityMs = intOption(options.visibilityMs, 'visibilityMs', 30_000, 1);
    this.#host.assertOpen();
    return new Promise((resolve, reject) => {
      this.#waiting.push({ count, visibilityMs, resolve, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  readonly #waiting: { count: number; visibilityMs: number; resolve: (jobs: Job<P>[]) => void; reject: (e: unknown) => void }[] = [];
  #draining = false;

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#waiting.length > 0) {
        const batch = this.#waiting.splice(0, 64);
        try {
          const jobs = await this.#run((q) => q.lease((o) => this.#host.list(o), batch));
          batch.forEach((b, i) => b.resolve(jobs[i]!));
        } catch (e) {
          for (const b of batch) b.reject(e);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  /** Completes a job (`ERR_STALE_LEASE` when its lease was taken over). */
  ack(job: Job<unknown>): Promise<void> {
    return this.#run((q) => q.ack(job));
  }

  /** Gives a job back for a retry with backoff, or to the dead letters (see {@link TxQueue.nack}). */
  nack(job: Job<unknown>, options?: { delayMs?: number; error?: string }): Promise<'retry' | 'dead'> {
    return this.#run((q) => q.nack(job, options));
  }

  /** Extends a lease to `ms` from now; returns the job with its new `leasedUntil`. */
  extend(job: Job<unknown>, ms: number): Promise<Job<P>> {
    return this.#run((q) => q.extend(job, ms));
  }

  /** The dead letters, oldest id first. */
  deadLetters(options: { limit?: number } = {}): DeadJob<P>[] {
    this.#host.assertOpen();
    const limit = intOption(options.limit, 'limit', 1000, 1);
    const out: DeadJob<P>[] = [];
    for (const e of pages(this.#host, this.#keys.prefix('x'))) {
      if (out.length >= limit) break;
      const r = readRecord<JobRecord>(this.#host.getOpt(this.#keys.job(e.key.slice(this.#keys.prefix('x').length))));
      if (r === undefined) continue;
      out.push({ id: r.id, payload: parseJson(r.payload) as P, attempts: r.attempts, lastError: r.lastError, enqueuedAt: r.enqueuedAt, failedAt: r.failedAt ?? 0 });
    }
    return out;
  }

  #dead(tx: Tx, id: string): JobRecord {
    checkId(id, 'a job id');
    const r = readRecord<JobRecord>(tx.getOpt(this.#keys.job(id)));
    if (r === undefined || r.state !== 'dead') throw new NotFoundError(`queue ${JSON.stringify(this.name)} has no dead letter ${JSON.stringify(id)}`);
    return r;
  }

  /** Puts a dead letter back in the queue, ready now, with its attempts reset. */
  async retryDead(id: string): Promise<void> {
    this.#host.assertOpen();
    await this.#host.transaction().execute((tx) => {
      const r = this.#dead(tx, id);
      const now = this.#s.clock.now();
      const index = this.#keys.ready(r.priority, now, r.id);
      tx.delete(r.index);
      tx.set(index, record(1));
      tx.set(this.#keys.job(r.id), record({ ...r, state: 'ready', attempts: 0, due: now, index, failedAt: null } satisfies JobRecord));
    });
  }

  /** Deletes a dead letter. */
  async removeDead(id: string): Promise<void> {
    this.#host.assertOpen();
    await this.#host.transaction().execute((tx) => {
      const r = this.#dead(tx, id);
      tx.delete(r.index);
      tx.delete(this.#keys.job(r.id));
      if (r.dedupeKey !== null) tx.delete(this.#keys.dedupe(r.dedupeKey));
    });
  }

  /** How many jobs are in each state (counts every index entry: for monitoring, not hot paths). */
  counts(): QueueCounts {
    this.#host.assertOpen();
    const count = (kind: 'r' | 'd' | 'l' | 'x'): number => {
      let n = 0;
      for (const _ of pages(this.#host, this.#keys.prefix(kind), 10_000)) n++;
      return n;
    };
    return { ready: count('r'), delayed: count('d'), leased: count('l'), dead: count('x') };
  }
}
