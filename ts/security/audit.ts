/**
 * The audit trail: every allow and deny decision taken for a caller handle, and
 * every change to roles, kept durably in the store under athanor's reserved keys
 * (format: `audit-format.ts`: a small binary record per decision, naming a profile
 * that holds the caller's id, roles and namespace once), so it is backed up,
 * restored and replicated with the data it describes.
 *
 * - Writes made in a transaction are recorded in that transaction's own commit.
 * - Other decisions (denials, writes outside a transaction, admin operations) are
 *   recorded one by one and committed in batches.
 * - Allowed reads are counted per caller, operation and granting permission, and
 *   committed in the same batches as one record with `count`, `at` (the first
 *   read) and `until` (when the batch closed the count, at most a second after the
 *   last read): a record per point read would make the trail the store's largest
 *   write load.
 *
 * A batch is committed when 1024 records wait, one second after the first of them,
 * before `db.audit.query()` and at close. Records older than the retention are
 * pruned as batches are committed.
 */
import { randomBytes } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';
import type { Value } from '../state/codec.js';
import type { TransactionBuilder, Tx } from '../state/transaction.js';
import { TRAIL, TRAIL_COUNT, type TrailCounter, type TrailWriter } from '../state/reserved.js';
import { describeThrown } from '../internal/thrown.js';
import { AUDIT_PREFIX, decodeProfile, decodeRecord, encodeRecord, makeProfile, recordKey, type AuditRecord, type Profile, type StoredRecord } from './audit-format.js';
import { DEFAULT_NAMESPACE } from './permissions.js';


/** Filters of {@link AuditTrail.query}; every given field must match. */
export interface AuditQuery {
  /** The caller's id. */
  caller?: string;
  /** The namespace. */
  namespace?: string;
  /** The operation, e.g. `tx.execute`. */
  action?: string;
  /** `allow` or `deny`. */
  outcome?: 'allow' | 'deny';
  /** Records at or after this time (ms since the epoch, or a Date). */
  from?: number | Date;
  /** Records at or before this time. */
  to?: number | Date;
  /** At most this many records (default 10000), oldest first. */
  limit?: number;
}

/** What the audit trail needs of the database. @internal */
export interface AuditStore {
  /** A transaction builder that may write athanor's reserved keys. */
  internalTransaction(): TransactionBuilder;
  /** A page of state entries. */
  list(options: { prefix: string; after?: string; limit?: number }): { key: string; value: Value }[];
  /** One state value (newest). */
  getOpt(key: string): Value | undefined;
}

/** The audit trail's options (`Athanor.open(dir, { auditRetentionMs })`). */
export interface AuditOptions {
  /** Records older than this are pruned, ms (default 90 days; 0 keeps them forever). */
  retentionMs: number;
}

export { AUDIT_PREFIX };
export type { AuditRecord };

/** A decision waiting to be written: a record naming its caller's profile. @internal */
export type Decision = StoredRecord;

const BATCH = 1024;
const PRUNE_PER_BATCH = 1000;
const FLUSH_AFTER_MS = 1000;


function toMs(v: number | Date | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const ms = v instanceof Date ? v.getTime() : v;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) throw new InvalidArgumentError(`${what} must be a time in ms since the epoch or a Date`);
  return ms;
}

/** The audit trail of one database handle. */
export class AuditTrail {
  readonly #store: AuditStore;
  readonly #retentionMs: number;
  readonly #nonce = randomBytes(4).toString('hex');
  #seq = 0;
  #pending: { key: string; record: Decision }[] = [];
  #reads: Decision[] = [];
  #generation = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;
  readonly #profiles = new Map<string, Profile>();
  /** Profiles seen in the store: records naming them need not write them again. */
  readonly #stored = new Set<string>();
  /** The key prefix of the current millisecond (`at` in the key), reused while it lasts. */
  #keyMs = -1;
  #keyHead = '';

  /** @internal */
  constructor(store: AuditStore, options: AuditOptions) {
    this.#store = store;
    this.#retentionMs = options.retentionMs;
  }

  /** The profile of `caller` with `roles` (made once per distinct caller). @internal */
  profile(caller: string, roles: readonly string[], namespace: string = DEFAULT_NAMESPACE): Profile {
    const id = JSON.stringify([caller, roles, namespace]);
    let p = this.#profiles.get(id);
    if (p === undefined) {
      p = makeProfile(caller, roles, namespace);
      this.#profiles.set(id, p);
    }
    return p;
  }

  /** A fresh key for a record made at `at`. @internal */
  keyFor(at: number): string {
    const seq = this.#seq++;
    if (at !== this.#keyMs) {
      this.#keyMs = at;
      this.#keyHead = recordKey(at, this.#nonce, 0).slice(0, -8);
    }
    return this.#keyHead + seq.toString(16).padStart(8, '0');
  }

  /**
   * Writes `profile` into `tx` unless the store is known to hold it: the record that
   * names it then commits with it. Once seen committed, it is not written again.
   */
  #withProfile(trail: TrailWriter, profile: Profile): void {
    if (this.#stored.has(profile.key)) return;
    if (this.#store.getOpt(profile.key) !== undefined) this.#stored.add(profile.key);
    else trail[TRAIL](profile.key, profile.value);
  }

  /**
   * Writes `record` into the transaction `tx` (the commit of the write it allows), of
   * whichever namespace: the record goes to the database's trail (a trail put). @internal
   */
  inTransaction(tx: Tx, record: Decision): void {
    const trail = tx as Tx & Partial<TrailWriter>;
    if (typeof trail[TRAIL] !== 'function') throw new TypeError("an audit record joins only a transaction of athanor's own (TxImpl)");
    this.#withProfile(trail as TrailWriter, record.profile);
    trail[TRAIL](this.keyFor(record.at), encodeRecord(record));
  }

  /**
   * Counts a decision made at `at` for `profile` into `tx` (the commit of the write it
   * allows): `body` is its counted record (see `encodeCounted`), merged by the writer
   * with the equal ones of the same group commit. The hot path of an allowed transaction. @internal
   */
  countInTransaction(tx: Tx, profile: Profile, at: number, body: Value): void {
    const trail = tx as Tx & Partial<TrailWriter & TrailCounter>;
    if (typeof trail[TRAIL] !== 'function' || typeof trail[TRAIL_COUNT] !== 'function') {
      throw new TypeError("an audit record joins only a transaction of athanor's own (TxImpl)");
    }
    this.#withProfile(trail as TrailWriter, profile);
    trail[TRAIL_COUNT](this.keyFor(at), at, body);
  }

  /** Queues a record for the next batch. @internal */
  record(record: Decision): void {
    if (this.#closed) return;
    this.#pending.push({ key: this.keyFor(record.at), record });
    this.#schedule();
  }

  /**
   * Adds the record that counts allowed reads of one caller, operation and grant
   * until the next batch: its owner increments `count` while {@link generation} is
   * unchanged, then starts a new one. @internal
   */
  addRead(record: Decision): void {
    if (this.#closed) return;
    this.#reads.push(record);
    this.#schedule();
  }

  /** Changes when a batch takes the counted reads. @internal */
  get generation(): number {
    return this.#generation;
  }

  #schedule(): void {
    if (this.#pending.length + this.#reads.length >= BATCH) {
      this.flush().catch((e: unknown) => process.emitWarning(`athanor audit: a batch could not be recorded: ${describeThrown(e)}`));
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush().catch((e: unknown) => process.emitWarning(`athanor audit: a batch could not be recorded: ${describeThrown(e)}`));
      }, FLUSH_AFTER_MS);
      this.#timer.unref();
    }
  }

  /** Commits the waiting records now (durably, in one transaction). */
  flush(): Promise<void> {
    // A failed batch is reported to its caller; the next one still runs (and retries it).
    this.#flushing = this.#flushing.catch(() => undefined).then(() => this.#commitBatch());
    return this.#flushing;
  }

  async #commitBatch(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const batch = this.#pending;
    // A count closes with its batch: `until` is when, at most a second after its last read.
    const until = Date.now();
    for (const r of this.#reads) {
      if (r.count > 1) r.until = until;
      batch.push({ key: this.keyFor(r.at), record: r });
    }
    this.#pending = [];
    this.#reads = [];
    this.#generation++;
    const expired = this.#retentionMs > 0 ? this.#expiredKeys(Date.now() - this.#retentionMs) : [];
    if (batch.length === 0 && expired.length === 0) return;
    try {
      await this.#store.internalTransaction().execute((tx) => {
        const profiles = new Set<Profile>();
        for (const { record } of batch) profiles.add(record.profile);
        const trail: TrailWriter = { [TRAIL]: (k, v) => tx.set(k, v) };
        for (const p of profiles) this.#withProfile(trail, p);
        for (const { key, record } of batch) tx.set(key, encodeRecord(record));
        for (const key of expired) tx.delete(key);
      });
    } catch (e) {
      // Kept for the next batch: a failed commit must not lose decisions.
      this.#pending = batch.concat(this.#pending);
      throw e;
    }
  }

  #expiredKeys(cutoff: number): string[] {
    const page = this.#store.list({ prefix: AUDIT_PREFIX, limit: PRUNE_PER_BATCH });
    const end = recordKey(cutoff, '', 0).slice(0, AUDIT_PREFIX.length + 12);
    return page.filter((e) => e.key < end).map((e) => e.key);
  }

  /**
   * The records matching `q`, oldest first. Commits the waiting records first, so a
   * query sees every decision taken before it.
   */
  async query(q: AuditQuery = {}): Promise<AuditRecord[]> {
    if (q === null || typeof q !== 'object') throw new InvalidArgumentError('audit query must be an object { caller, namespace, action, outcome, from, to, limit }');
    const from = toMs(q.from, 'from');
    const to = toMs(q.to, 'to');
    const limit = q.limit ?? 10_000;
    if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError('limit must be a positive integer');
    if (q.outcome !== undefined && q.outcome !== 'allow' && q.outcome !== 'deny') throw new InvalidArgumentError(`outcome must be 'allow' or 'deny'`);
    await this.flush();
    const out: AuditRecord[] = [];
    const timeKey = (ms: number): string => recordKey(ms, '', 0).slice(0, AUDIT_PREFIX.length + 12);
    let after = from === undefined ? undefined : timeKey(from);
    const end = to === undefined ? undefined : timeKey(to + 1);
    const profiles = new Map<string, Profile | undefined>();
    const profileOf = (key: string): Profile | undefined => {
      if (!profiles.has(key)) {
        const v = this.#store.getOpt(key);
        profiles.set(key, v === undefined ? undefined : decodeProfile(key, v));
      }
      return profiles.get(key);
    };
    for (;;) {
      const page = this.#store.list({ prefix: AUDIT_PREFIX, after, limit: 1000 });
      for (const e of page) {
        if (end !== undefined && e.key >= end) return out;
        const r: AuditRecord = decodeRecord(e.key, e.value, profileOf);
        if (q.caller !== undefined && r.caller !== q.caller) continue;
        if (q.namespace !== undefined && r.namespace !== q.namespace) continue;
        if (q.action !== undefined && r.action !== q.action) continue;
        if (q.outcome !== undefined && r.outcome !== q.outcome) continue;
        out.push(r);
        if (out.length >= limit) return out;
      }
      if (page.length < 1000) return out;
      after = page[page.length - 1]!.key;
    }
  }

  /** Commits what waits and stops recording. @internal */
  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      this.#closed = true;
    }
  }
}
