/** The database handle. */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { bool, decodeValue, type Json, type Value } from './state/codec.js';
import { ClosedError, CorruptError, InvalidArgumentError, IoError, NotFoundError, ReadOnlyError, errorFor, fromNative } from './errors.js';
import { Core } from './state/core.js';
import { EventLog, readFrom, type EventSource, type ReadOptions, type StoredEvent } from './state/events.js';
import { Streams, handleStreams } from './state/streams.js';
import type { NativeSnapshot } from './internal/native.js';
import { TransactionBuilder } from './state/transaction.js';
import { Projections, type QueryOptions } from './processing/projections.js';
import type { DeclarativeSpec } from './processing/declarative.js';
import type { Processor } from './processing/processor.js';
import type { ProcessorBuilder } from './processing/builder.js';
import type { ProcessorOptions } from './processing/types.js';
import type { Migrations } from './sql/migrations.js';
import type { NamedParams, Row, Sql, SqlBindable } from './sql/sql.js';
import { VectorStore } from './vectors/store.js';
import { Scheduler } from './ops/scheduler.js';
import { INTERNAL } from './state/reserved.js';
import { Metrics, type MetricsOptions, type MetricsSnapshot } from './ops/metrics.js';
import { mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describeThrown } from './internal/thrown.js';
import { readStateList } from './internal/state-list.js';
import { restoreBackup, takeBackup, type BackupManifest, type BackupOptions, type ContentDigest, type RestoreOptions } from './ops/backup.js';
import type { VectorProjection, VectorProjectionSpec } from './processing/vector-projection.js';
import { Idempotency } from './state/idempotency.js';
import { Accumulators } from './eventsourcing/accumulators.js';
import { Queue, type QueueOptions } from './eventsourcing/queue.js';
import { ConsumerGroup, type ConsumerGroupOptions } from './eventsourcing/consumer-group.js';
import type { StoreHost } from './eventsourcing/records.js';
import { compactEvents, type RetentionHost } from './eventsourcing/retention.js';
import { existsSync } from 'node:fs';
import { native } from './internal/native.js';
import { Replication } from './replication/publisher.js';
import { ReplicaFollower, checkReplicaOptions, type ReplicaLag, type ReplicaMetrics, type ReplicaOptions } from './replication/follower.js';
import { PgProjection, type PgProjectionSpec } from './replication/pg-projection.js';
import { loadNats } from './replication/peers.js';
import { Memory } from './agents/host.js';
import { Agents } from './agents/agents.js';
import { Sessions, Tasks } from './agents/sessions.js';
import { FullTextShared, Search } from './agents/fulltext.js';
import { AuditTrail } from './security/audit.js';
import { callerHandle, secureRoot, type Security } from './security/handle.js';
import { checkCaller, type Caller } from './security/permissions.js';
import { SECURE_MARKER } from './security/handle.js';
import { Roles, acquireRoleVersion, releaseRoleVersion, type RoleStore } from './security/roles.js';
import { checkNamespaceName, encodeNamespaceOptions, namespaceInfo, type NamespaceInfo, type NamespaceOptions, type OpenNamespaceOptions } from './state/namespaces.js';

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
  /**
   * Create the database when `dir` holds none (default `true`). Tools that only
   * inspect a database pass `false`: a missing directory or one without a
   * database is then a `NotFoundError` naming it, and nothing is created.
   */
  create?: boolean;
  /**
   * Start the event log's hash chain at the next event when the database has none
   * (default `false`; a chain once started stays on). See `db.events.proof()`.
   */
  chain?: boolean;
  /**
   * With `chain` (or `secure`), start the chain with HMAC-SHA-256 under this key
   * instead of plain SHA-256, so only a key holder can forge links. Never stored; the native copy is zeroed when
   * the database closes. A keyed chain is appended to and verified only when opened
   * with its key.
   */
  hmacKey?: Uint8Array | string;
  /**
   * Refuse every call not made through a caller handle (`db.as(caller)`), force
   * `durability: 'full'`, and start the hash chain.
   */
  secure?: boolean;
  /** How long the audit trail keeps records, ms (default 90 days; 0 = forever). */
  auditRetentionMs?: number;
}

/** Options of {@link Athanor.verify}. */
export interface VerifyOptions {
  /**
   * Run the check in a child Node process that opens the database on its own, so
   * that damage LMDB cannot read safely kills the child, not this process: a child
   * killed by a signal is reported as `CorruptError`. Resolves to the result.
   */
  deep: true;
}

/** What {@link Athanor.verify} checked. */
export interface VerifyResult {
  /** Number of events in the log, all checked. */
  events: number;
}

/** Options of {@link Athanor.verify} that ask for the whole {@link VerifyReport}. */
export interface VerifyReportOptions {
  /** Return the report (counts and every violation) instead of throwing on the first violation. */
  report: true;
  /** Run the check in a child process (see {@link VerifyOptions.deep}); the result is then a promise. */
  deep?: boolean;
}

/** A broken invariant found by {@link Athanor.verify}. */
export interface VerifyViolation {
  /**
   * What kind: `event_ids` (ids not dense), `event_record` (an event does not decode),
   * `last_event_id` (meta disagrees with the log), `type_index_missing` (an event without
   * its type index entry), `type_index_orphan` (an entry without its event), `state_value`,
   * `idempotency_record`, `idempotency_past_log` (a record naming events past the log),
   * `cursor_past_log` (a processor or vector projection ahead of the log), `dead_letter_missing_event`,
   * `vector_index` (stored documents and the index disagree), `stream_index` (a stream's
   * versions not dense up to its version, or naming an event not in the log).
   */
  kind: string;
  /** What exactly is wrong, and where. */
  detail: string;
}

/** What {@link Athanor.verify} with `{ report: true }` counted and found. */
export interface VerifyReport {
  /** True when no violation was found. */
  ok: boolean;
  /** Events in the log. */
  events: number;
  /** The newest event id the store's meta records. */
  lastEventId: number;
  /** State keys (athanor's own included). */
  stateKeys: number;
  /** Entries of the event-type index (one per event when intact). */
  typeIndexEntries: number;
  /** Idempotency records stored (expired ones not yet pruned included). */
  idempotencyRecords: number;
  /** Processors with a cursor (SQL ones in projection.db, vector projections in the store), and the last event each applied. */
  processors: Array<{
    /** The processor's name. */
    name: string;
    /** The id of the last event it applied (0: none yet). */
    cursor: number;
  }>;
  /** Dead letters in projection.db (all processors). */
  deadLetters: number;
  /** Vector collections and their stored documents. */
  vectorCollections: Array<{
    /** The collection's name. */
    name: string;
    /** Documents stored in it. */
    documents: number;
  }>;
  /** Vector documents, all collections. */
  vectorDocuments: number;
  /** Index dumps checked (manifests and checksums). */
  indexDumps: number;
  /** Each namespace and the events in its log (its ids, hash chain and type index are checked too). */
  namespaces: Array<{
    /** The namespace's name. */
    name: string;
    /** Events in its log. */
    events: number;
  }>;
  /** Every violation found; empty when `ok`. */
  violations: VerifyViolation[];
}

/** Options of {@link Athanor.list}. */
export interface ListOptions {
  /** Only keys starting with this (default: every key). */
  prefix?: string;
  /** Start after this key (exclusive): pass the last key of the previous page. */
  after?: string;
  /** At most this many entries (1..100000, default 1000). */
  limit?: number;
}

/** One state entry returned by {@link Athanor.list}. */
export interface StateEntry {
  /** The state key. */
  key: string;
  /** Its current value. */
  value: Value;
}

function checkDir(dir: unknown): asserts dir is string {
  if (typeof dir !== 'string' || dir.length === 0) throw new InvalidArgumentError('dir must be a non-empty path string');
}

/** The open options once checked. */
type CheckedOptions = Required<Omit<OpenOptions, 'hmacKey'>> & { hmacKey: Buffer | undefined };

function checkOpenOptions(o: OpenOptions): CheckedOptions {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('options must be an object');
  const secure = o.secure ?? false;
  if (typeof secure !== 'boolean') throw new InvalidArgumentError(`secure must be a boolean, got ${typeof secure}`);
  if (secure && o.durability !== undefined && o.durability !== 'full') {
    throw new InvalidArgumentError(`a secure database commits with durability 'full'; remove durability: ${describeThrown(o.durability)} or open without secure`);
  }
  const chain = o.chain ?? secure;
  if (typeof chain !== 'boolean') throw new InvalidArgumentError(`chain must be a boolean, got ${typeof chain}`);
  if (secure && !chain) throw new InvalidArgumentError('a secure database keeps the hash chain on; remove chain: false or open without secure');
  // Never echoed: the key's value must not reach an error message.
  if (o.hmacKey !== undefined && !(o.hmacKey instanceof Uint8Array) && typeof o.hmacKey !== 'string') throw new InvalidArgumentError('hmacKey must be a Uint8Array or a string');
  if (o.hmacKey !== undefined && o.hmacKey.length < 16) throw new InvalidArgumentError('hmacKey must be at least 16 bytes; use 32 random bytes');
  const hmacKey = o.hmacKey === undefined ? undefined : typeof o.hmacKey === 'string' ? Buffer.from(o.hmacKey, 'utf8') : Buffer.from(o.hmacKey);
  const auditRetentionMs = o.auditRetentionMs ?? 90 * 24 * 3600 * 1000;
  if (!Number.isSafeInteger(auditRetentionMs) || auditRetentionMs < 0) throw new InvalidArgumentError('auditRetentionMs must be a non-negative integer (0 keeps records forever)');
  const durability = o.durability ?? 'full';
  if (durability !== 'full' && durability !== 'batched' && durability !== 'none') {
    throw new InvalidArgumentError(`durability must be 'full', 'batched' or 'none', got ${describeThrown(durability)}`);
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
  const create = o.create ?? true;
  if (typeof create !== 'boolean') throw new InvalidArgumentError(`create must be a boolean, got ${typeof create}`);
  return { durability, syncIntervalMs, mapSize, idempotencyWindowMs, create, chain, hmacKey, secure, auditRetentionMs };
}

/** The child of a deep verify: opens without creating, verifies, prints one JSON line. */
const DEEP_VERIFY_CHILD = `
const [index, dir, mode] = process.argv.slice(1);
const { Athanor } = await import(index);
let out;
try {
  const db = await Athanor.open(dir, { create: false });
  try { out = mode === 'report' ? { report: db.verify({ report: true }) } : { events: db.verify().events }; } finally { await db.close(); }
} catch (e) {
  out = { error: { code: e?.code ?? 'ERR_INTERNAL', message: String(e?.message ?? e) } };
}
process.stdout.write(JSON.stringify(out) + '\\n');
`;

/** Runs {@link DEEP_VERIFY_CHILD} on `dir` and turns its outcome into a result or a typed error. */
function verifyInChild(dir: string, mode: 'count' | 'report'): Promise<{ events?: number; report?: VerifyReport }> {
  const index = new URL('./index.js', import.meta.url).href;
  return new Promise((resolveResult, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', DEEP_VERIFY_CHILD, index, dir, mode],
      { encoding: 'utf8', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        const signal = err && 'signal' in err ? (err.signal as NodeJS.Signals | null) : null;
        if (signal) {
          reject(new CorruptError(`the deep check of ${dir} was killed by ${signal} while reading the store: it is damaged in a way LMDB cannot read safely; restore the database from a backup`));
          return;
        }
        let parsed: { events?: number; report?: VerifyReport; error?: { code: string; message: string } };
        try {
          parsed = JSON.parse(stdout.trim().split('\n').pop() ?? '') as typeof parsed;
        } catch {
          reject(new IoError(`the deep check of ${dir} could not run (${err?.message ?? 'no result'}${stderr ? `: ${stderr.trim().split('\n')[0]}` : ''})`));
          return;
        }
        if (parsed.error) reject(errorFor(parsed.error.code, parsed.error.message));
        else resolveResult(parsed.report !== undefined ? { report: parsed.report } : { events: parsed.events ?? 0 });
      },
    );
  });
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
  /** Entity streams as of this snapshot. */
  readonly streams: Streams;

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
    const upcast = (e: StoredEvent[]): StoredEvent[] => core.upcasters.apply(e);
    this.streams = new Streams({
      readStream: (st, f, l, r) => this.#live().readStream(st, f, l, r),
      streamVersion: (st) => this.#live().streamVersion(st),
      listStreams: (p, a, l) => this.#live().listStreams(p, a, l),
    }, upcast);
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
    return readFrom(this.#src, options, (e) => this.#core.upcasters.apply(e)) as IterableIterator<StoredEvent<P>>;
  }

  /** Releases the snapshot (its read transaction pins old pages until then). Idempotent. */
  close(): void {
    if (this.#native === null) return;
    this.#native.close();
    this.#native = null;
    this.#onClose(this);
  }

  /** Closes the snapshot (for `using`). */
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
  /** Entity streams (`tx.append` writes them): read, version, list. */
  readonly streams: Streams;
  /** The vector collections. */
  readonly vectors: VectorStore;
  /** Idempotency keys: `db.idempotency.get(key)` says what the transaction with that key did. */
  readonly idempotency: Idempotency;
  /** Agent memory: agent records with history and snapshots (`db.agents.namespace(name)` for another namespace). */
  readonly agents: Agents;
  /** Agent sessions and their events. */
  readonly sessions: Sessions;
  /** Tasks: assignment, status history, dependencies. */
  readonly tasks: Tasks;
  /** Full-text (FTS5) and hybrid search over events. */
  readonly search: Search;

  readonly #proj: Projections;

  /** The options it was opened with (for its namespaces' handles). */
  readonly #options: CheckedOptions;

  /** @internal Use {@link open}, {@link openSync} or {@link openReplica}; `space`: a namespace's handle, whose projection.db lies in `space.projectionDir`. */
  protected constructor(dir: string, o: CheckedOptions, core: Core, space?: { projectionDir: string }) {
    this.dir = dir;
    this.durability = o.durability;
    this.#options = o;
    this.#core = core;
    this.#core.observer = this.#metrics;
    this.events = new EventLog(this.#core);
    this.events.setCompactor((options) => compactEvents(this.#retentionHost(), options));
    this.streams = new Streams(handleStreams(this.#core), (e) => core.upcasters.apply(e));
    this.#proj = new Projections(this.#core, space?.projectionDir ?? dir);
    this.vectors = new VectorStore(this.#core, () => this.transaction()[INTERNAL]());
    this.idempotency = new Idempotency(this.#core);
    const proj = this.#proj;
    const memory = new Memory({
      transaction: () => this.transaction()[INTERNAL](),
      getOpt: (k) => this.getOpt(k),
      list: (o) => this.list(o),
      get sql() {
        return proj.sql;
      },
      projection: (spec) => this.projection(spec),
      event: (id) => this.events.get(id),
      head: () => this.events.lastId,
      assertOpen: () => this.#core.assertOpen(),
    });
    this.agents = new Agents(memory);
    this.sessions = new Sessions(memory);
    this.tasks = new Tasks(memory);
    this.search = new Search(memory, new FullTextShared(memory));
  }

  /**
   * Opens (creating if needed, unless `create: false`) the database in `dir`. Opening
   * a directory that is already open in this process shares the same engine. A store
   * whose files are damaged in a way that can be seen before mapping it (truncated,
   * emptied or missing where the directory shows it existed) is a `CorruptError`.
   */
  static async open(dir: string, options: OpenOptions = {}): Promise<Athanor> {
    checkDir(dir);
    const o = checkOpenOptions(options);
    const path = resolve(dir);
    let core: Core;
    try {
      core = await Core.open(path, o);
    } finally {
      o.hmacKey?.fill(0); // the addon keeps its own copy, zeroed at close
    }
    const db = new Athanor(path, o, core);
    const secure = db.#secureMode(o, options.secure);
    if (secure === true && !db.#marked()) {
      try {
        await db.transaction()[INTERNAL]().execute((tx) => tx.set(SECURE_MARKER, bool(true)));
      } catch (e) {
        await db.close();
        throw e;
      }
    }
    return Athanor.#finish(db, o, secure);
  }

  /** A secure database is handed out as its secure root (see `security/handle.ts`). */
  static #finish(db: Athanor, o: CheckedOptions, secure: boolean): Athanor {
    db.#auditRetentionMs = o.auditRetentionMs;
    db.#secure = secure;
    return secure ? secureRoot(db, db.#securityParts().audit) : db;
  }

  /** Whether the store carries the marker of a secure database. */
  #marked(): boolean {
    return this.getOpt(SECURE_MARKER) !== undefined;
  }

  /**
   * A database once opened secure stays secure: opening it again without
   * `secure` gives the secure root too, so no handle skips the checks by leaving
   * the option out. Refused (the handle closed): `secure: false` or a durability
   * other than 'full' on such a database.
   */
  #secureMode(o: CheckedOptions, asked: boolean | undefined): boolean {
    if (o.secure) return true;
    if (!this.#marked()) return false;
    const refuse = asked === false ? 'secure: false' : o.durability !== 'full' ? `durability: '${o.durability}'` : undefined;
    if (refuse !== undefined) {
      // Nothing was written; the native handle is released before the error reaches the caller.
      this.#core.close();
      throw new InvalidArgumentError(`${this.dir} is a secure database (it was opened with { secure: true }): it cannot be opened with ${refuse}; open it with { secure: true }`);
    }
    return true;
  }

  #secure = false;

  /** Whether this is a secure database (every call goes through `db.as(caller)`). */
  get secure(): boolean {
    return this.#secure;
  }

  #auditRetentionMs = 0;
  #security: Security | undefined;
  /** The real path the roles' shared version is held under (see `acquireRoleVersion`). */
  #rolesDir: string | undefined;

  #securityParts(): Security {
    if (this.#security === undefined) {
      const store: RoleStore = {
        internalTransaction: () => this.transaction()[INTERNAL](),
        list: (o) => this.list(o),
        getOpt: (k) => this.getOpt(k),
      };
      const audit = new AuditTrail(store, { retentionMs: this.#auditRetentionMs });
      // This process's handles on the database share the version, so a role change
      // through one (bumped as it commits) reaches them all; another writer's change is
      // read again when it commits. Watched before the first read, so none is missed.
      this.#rolesDir = realpathSync(this.dir);
      const version = acquireRoleVersion(this.#rolesDir);
      const roles = new Roles(store, audit, version);
      this.#core.onOtherCommit(() => roles.refresh());
      roles.refresh();
      this.#security = { store, audit, version, roles };
    }
    return this.#security;
  }

  /**
   * A handle acting for `caller`: the same API as the database, where each call first
   * checks that the caller's roles grant what it needs (else `ForbiddenError`, naming
   * the permission, with nothing done) and is recorded in the audit trail. Members
   * not classified for callers (and the objects behind the handle) are refused.
   * athanor does not authenticate the caller: the application vouches for its id.
   */
  as(caller: Caller): Athanor {
    this.#core.assertOpen();
    const c = checkCaller(caller);
    const sec = this.#securityParts();
    const unknown = c.roles.filter((r) => sec.roles.get(r) === undefined);
    if (unknown.length > 0) throw new InvalidArgumentError(`caller ${JSON.stringify(c.id)} has roles that are not defined: ${unknown.join(', ')}; define them with db.roles.define or use admin, developer, viewer, auditor`);
    return callerHandle(this, c, sec);
  }

  /**
   * A handle on namespace `name`: the same API as the database (state, transactions,
   * events, streams, idempotency, SQL projections and processors, vector collections
   * and vector projections, the scheduler, agent memory), where every key, event,
   * stream, collection and projection lives in the namespace. The
   * core puts the namespace's id in front of every key it writes, so nothing read or
   * written through the handle, whatever key or id it names, reaches another namespace
   * or the database's own data. Event ids are the namespace's own, dense from 1. Its
   * projection.db is `<dir>/namespaces/<id>/projection.db`, its vector collections'
   * index dumps are under `<dir>/namespaces/<id>/index/`. Backups, compaction and
   * replication belong to the database and are refused on the handle.
   * Throws `NotFoundError` when the namespace does not exist, unless `create: true`.
   * The same handle is returned for the same name until it is closed or dropped.
   */
  namespace(name: string, options: OpenNamespaceOptions = {}): Athanor {
    this.#core.assertOpen();
    checkNamespaceName(name);
    const optionsJson = encodeNamespaceOptions(options);
    const open = this.#namespaceHandles.get(name);
    if (open !== undefined && !open.closed) return open;
    let found = this.#nativeCall(() => this.#core.native.findNamespace(name));
    if (found === null) {
      if (options.create !== true) throw new NotFoundError(`namespace ${JSON.stringify(name)} does not exist; create it with db.namespaces.create(${JSON.stringify(name)}) or db.namespace(${JSON.stringify(name)}, { create: true })`);
      found = this.#nativeCall(() => this.#core.native.createNamespace(name, optionsJson));
    }
    const projectionDir = join(this.dir, 'namespaces', String(found.id));
    mkdirSync(projectionDir, { recursive: true });
    const core = this.#nativeCall(() => Core.view(this.#core, this.dir, found.id));
    const handle = new NamespaceHandle(this, this.#options, core, projectionDir, namespaceInfo(found));
    this.#namespaceHandles.set(name, handle);
    return handle;
  }

  readonly #namespaceHandles = new Map<string, Athanor>();

  /** The namespaces of this database: create, list, get, drop. */
  get namespaces(): Namespaces {
    this.#core.assertOpen();
    this.#namespaceAdmin ??= {
      create: (name, options) => {
        this.#core.assertOpen();
        checkNamespaceName(name);
        const json = encodeNamespaceOptions(options);
        return namespaceInfo(this.#nativeCall(() => this.#core.native.createNamespace(name, json)));
      },
      get: (name) => {
        this.#core.assertOpen();
        checkNamespaceName(name);
        const n = this.#nativeCall(() => this.#core.native.findNamespace(name));
        return n === null ? undefined : namespaceInfo(n);
      },
      list: () => {
        this.#core.assertOpen();
        return this.#nativeCall(() => this.#core.native.listNamespaces()).map(namespaceInfo);
      },
      drop: async (name) => {
        this.#core.assertOpen();
        checkNamespaceName(name);
        const open = this.#namespaceHandles.get(name);
        this.#namespaceHandles.delete(name);
        if (open !== undefined) await open.close();
        const dropped = this.#nativeCall(() => this.#core.native.dropNamespace(name));
        if (dropped === null) return false;
        // Its projection.db goes with it; ids are never reused, so a leftover folder (a
        // crash before this line) is never opened again and `verify` ignores it.
        rmSync(join(this.dir, 'namespaces', String(dropped.id)), { recursive: true, force: true });
        return true;
      },
    };
    return this.#namespaceAdmin;
  }

  #namespaceAdmin: Namespaces | undefined;

  #nativeCall<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Custom roles (define, get, list, drop); each change is recorded in the audit trail. */
  get roles(): Roles {
    this.#core.assertOpen();
    return this.#securityParts().roles;
  }

  /** The audit trail of caller handles' decisions and role changes: `db.audit.query({ ... })`. */
  get audit(): AuditTrail {
    this.#core.assertOpen();
    return this.#securityParts().audit;
  }

  /**
   * Restores the backup in `backupDir` into `targetDir`. Every file is checked against
   * the manifest (and, for an encrypted backup, authenticated with `encryptionKey`)
   * before anything is written; the database is assembled beside the target and renamed
   * into place, so an interrupted restore leaves no half database. A target that holds
   * files is refused unless `overwrite: true`. Resolves to the restored content digest,
   * equal to the backup's. Open the restored directory with {@link open}.
   */
  static async restore(backupDir: string, targetDir: string, options: RestoreOptions = {}): Promise<ContentDigest> {
    return restoreBackup(backupDir, targetDir, options);
  }

  /**
   * Opens (creating if needed) a read replica in `dir`: a local database that applies
   * the commits its primary publishes (`db.replication.publish()`) to the JetStream
   * stream `stream`, in order, each batch in one LMDB transaction with the stream
   * position, so a replica killed at any moment resumes exactly. Reads, snapshots,
   * processors and SQL projections (on the replica's own projection.db) work as on
   * any database; writes are refused with `ReadOnlyError`. An empty directory starts
   * from the stream's first commit; a directory restored from a backup of the primary
   * catches up from the stream. NATS being unreachable is retried with backoff (see
   * {@link Replica.replicaMetrics}).
   */
  static async openReplica(dir: string, options: ReplicaOptions & OpenOptions): Promise<Replica> {
    checkDir(dir);
    const r = checkReplicaOptions(options);
    const { servers: _s, stream: _st, durableName: _d, subject: _su, batchSize: _b, maxBackoffMs: _m, ...openOptions } = options;
    const o = checkOpenOptions(openOptions);
    const nats = await loadNats('Athanor.openReplica()');
    const path = resolve(dir);
    const core = await Core.open(path, o);
    let follower: ReplicaFollower;
    try {
      follower = new ReplicaFollower(core, r, nats);
    } catch (e) {
      core.close();
      throw fromNative(e);
    }
    return new Replica(path, o, core, follower);
  }

  /** Synchronous {@link open}, for scripts. */
  static openSync(dir: string, options: OpenOptions = {}): Athanor {
    checkDir(dir);
    const o = checkOpenOptions(options);
    const path = resolve(dir);
    let core: Core;
    try {
      core = Core.openSync(path, o);
    } finally {
      o.hmacKey?.fill(0);
    }
    const db = new Athanor(path, o, core);
    const secure = db.#secureMode(o, options.secure);
    if (secure === true && !db.#marked()) db.transaction()[INTERNAL]().executeSync((tx) => tx.set(SECURE_MARKER, bool(true)));
    return Athanor.#finish(db, o, secure);
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
    return this.#proj.vectorProjection(spec, this.vectors, () => this.transaction()[INTERNAL]());
  }

  /**
   * The durable scheduler: tasks on a cron expression, an interval or a time, stored
   * in this database and run exactly once per occurrence across processes.
   */
  get scheduler(): Scheduler {
    this.#core.assertOpen();
    this.#scheduler ??= new Scheduler({ observer: this.#metrics, transaction: () => this.transaction()[INTERNAL](), getOpt: (k) => this.getOpt(k), assertOpen: () => this.#core.assertOpen() });
    return this.#scheduler;
  }

  #scheduler: Scheduler | undefined;

  /** How the event-sourcing helpers reach this handle: internal transactions, committed reads. */
  #storeHost(): StoreHost {
    return {
      transaction: () => this.transaction()[INTERNAL](),
      getOpt: (k) => this.getOpt(k),
      list: (o) => this.list(o),
      assertOpen: () => this.#core.assertOpen(),
    };
  }

  /** What `events.compact()` reads and calls. */
  #retentionHost(): RetentionHost {
    return {
      ...this.#storeHost(),
      processorCursors: () =>
        existsSync(join(this.dir, 'projection.db'))
          ? this.sql[INTERNAL]().cursors()
          : [],
      readEvents: (from, to) => this.events.read({ from, to }),
      heads: () => {
        const h = this.#core.native.heads();
        return { last: h[0]!, first: h[2]! };
      },
      compactEvents: (before, types) => {
        const r = this.#core.native.compactEvents(before, types);
        return [r[0]!, r[1]!];
      },
      compressFile: (src, dst, level) => native.compressFile(src, dst, level),
    };
  }

  /**
   * Exactly-once additive values with reservations (exposures), margins and a dedupe
   * window; usable inside transactions through `db.accumulators.in(tx)`.
   */
  get accumulators(): Accumulators {
    this.#core.assertOpen();
    this.#accumulators ??= new Accumulators(this.#storeHost());
    return this.#accumulators;
  }

  #accumulators: Accumulators | undefined;

  /**
   * A durable work queue stored in this database: priorities, delays, dedupe keys,
   * leases with fencing tokens, retries with backoff and dead letters. Handles of one
   * queue in several processes share its jobs.
   */
  queue<P = Json>(name: string, options?: QueueOptions): Queue<P> {
    this.#core.assertOpen();
    return new Queue<P>(this.#storeHost(), name, options);
  }

  /**
   * A member of a consumer group on the event log: members share the group's events
   * (of `types`), each pending until acked, delivered again after `ackTimeoutMs`.
   */
  consumerGroup(name: string, options?: ConsumerGroupOptions): ConsumerGroup {
    this.#core.assertOpen();
    return new ConsumerGroup(this.#storeHost(), { read: (from, limit) => [...this.events.read({ from, limit })], firstId: () => this.events.firstId }, name, options);
  }

  /**
   * Publishing this database's commits to NATS JetStream, for read replicas
   * ({@link openReplica}): `await db.replication.publish({ servers, stream, subject })`.
   */
  get replication(): Replication {
    this.#core.assertOpen();
    this.#replication ??= new Replication(this.#core);
    return this.#replication;
  }

  #replication: Replication | undefined;
  readonly #pgProjections = new Set<PgProjection>();

  /**
   * Starts a projection of this database's events into PostgreSQL: each batch of
   * events runs through the `on` handlers in one PostgreSQL transaction with the
   * projection's cursor row, exactly once even with several runners (one at a time
   * holds the projection's advisory lock; the others wait). Runs until `stop()` or
   * this handle's close. Works on a primary and on a replica.
   */
  pgProjection(spec: PgProjectionSpec): PgProjection {
    this.#core.assertOpen();
    const p: PgProjection = new PgProjection(this.events, spec, () => this.#pgProjections.delete(p));
    this.#pgProjections.add(p);
    return p;
  }

  /**
   * Takes an online backup into `targetDir` (new or empty): a consistent compacted copy
   * of the store and of projection.db (whose cursors never point past the copied log),
   * and a manifest with each file's SHA-256 and the content digest, computed in one pass
   * while the store is copied. Writers are not paused beyond the moment the copy starts
   * (about a millisecond): the copy reads one committed state. Optional zstd compression and AES-256-GCM
   * encryption (`encryptionKey`, 32 bytes, never stored). Vector indexes are rebuilt on restore.
   */
  async backup(targetDir: string, options: BackupOptions = {}): Promise<BackupManifest> {
    this.#core.assertOpen();
    const native = this.#core.native;
    const backupCanonical = async (dst: string, zstdLevel: number | null) => {
      const r = await native.backupCanonical(dst, zstdLevel);
      return { file: r.file, digest: r.digest as unknown as ContentDigest };
    };
    return takeBackup({ dir: this.dir, backupCanonical }, targetDir, options);
  }

  /**
   * A digest of the logical contents (state, events, vector documents), independent of
   * page layout and of how commits were grouped: two databases with the same contents
   * give the same digest. Computed off the event loop on the newest committed state.
   */
  async contentDigest(): Promise<ContentDigest> {
    this.#core.assertOpen();
    try {
      return (await this.#core.native.contentDigest()) as unknown as ContentDigest;
    } catch (e) {
      throw fromNative(e);
    }
  }

  readonly #metrics = new Metrics();

  /**
   * Operational metrics of this handle: commit latency (p50/p95/p99) and outcomes, group
   * sizes, queue depth and conflicts; the store's map and file size and heads; each
   * processor's cursor, lag and dead letters; scheduler runs; every vector index's size.
   * `{ format: 'prometheus' }` gives the Prometheus text exposition (prom-client).
   */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'object' }): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  async metrics(options: MetricsOptions = {}): Promise<MetricsSnapshot | string> {
    this.#core.assertOpen();
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('metrics() options must be an object, e.g. { format: "prometheus" }');
    const format = options.format ?? 'object';
    if (format !== 'object' && format !== 'prometheus') throw new InvalidArgumentError(`format must be 'object' or 'prometheus', got ${describeThrown(format)}`);
    const snapshot = await this.#metrics.snapshot(() => {
      const [lastEventId, commitSeq] = this.#core.native.heads();
      let fileBytes = 0;
      try {
        fileBytes = statSync(join(this.dir, 'canonical', 'data.mdb')).size;
      } catch {
        /* not readable: reported as 0 */
      }
      return {
        queueDepth: this.#core.pendingCount,
        syncs: this.#core.native.syncStats(),
        store: { mapSizeBytes: this.#core.native.mapSize(), fileBytes, commitSeq: commitSeq!, lastEventId: lastEventId! },
        processors: this.#proj.processors().map((p) => ({ name: p.name, cursor: p.cursor(), lag: p.lag(), deadLetters: p.deadLetters.count() })),
        vectors: this.vectors.list().map((c) => {
          const st = this.vectors.open(c.name).stats();
          return { collection: c.name, documents: st.count, pending: st.pending, tombstones: st.tombstones, graphPoints: st.graphPoints, dumps: st.dumps };
        }),
        ...this.#replicationMetrics(),
      };
    });
    return format === 'prometheus' ? this.#metrics.prometheus(snapshot) : snapshot;
  }

  #replicationMetrics(): Pick<MetricsSnapshot, 'replication'> {
    const pub = this.#replication?.publisher?.metrics();
    const rep = this.replicaFollower()?.metrics();
    const pgs = [...this.#pgProjections].map((p) => ({ name: p.name, ...p.metrics() }));
    if (pub === undefined && rep === undefined && pgs.length === 0) return {};
    return {
      replication: {
        ...(pub !== undefined ? { publisher: { publishedSeq: pub.publishedSeq, pending: pub.pending, errors: pub.errors, connected: pub.connected } } : {}),
        ...(rep !== undefined ? { replica: { lagCommits: rep.commits, lagMs: rep.ms, errors: rep.errors, connected: rep.connected, failed: rep.failed } } : {}),
        pgProjections: pgs.map((p) => ({ name: p.name, cursor: p.cursor, lag: p.lag, errors: p.errors, holdsLock: p.holdsLock })),
      },
    };
  }

  /** @internal The replica follower of a {@link Replica}; none on a primary. */
  protected replicaFollower(): ReplicaFollower | undefined {
    return undefined;
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
   * Checks the database: the canonical store's page structure (read from the file,
   * not through LMDB) and invariants (dense event ids, type index matches the log,
   * every value decodes), projection.db (SQLite's integrity check, every processor
   * cursor within the log) and the index dumps (checksums). Throws `CorruptError`
   * on the first violation. With `{ deep: true }` the check runs in a child process
   * (see {@link VerifyOptions}) and the result is a promise. With `{ report: true }` it
   * returns a {@link VerifyReport} instead: counts, and every violation it found
   * (also idempotency records, processor cursors and dead letters within the log, and
   * vector documents against their index); damage that makes a file unreadable is
   * still thrown as `CorruptError`.
   */
  verify(): VerifyResult;
  verify(options: VerifyReportOptions & { deep: true }): Promise<VerifyReport>;
  verify(options: VerifyReportOptions): VerifyReport;
  verify(options: VerifyOptions): Promise<VerifyResult>;
  verify(options?: VerifyOptions | VerifyReportOptions): VerifyResult | VerifyReport | Promise<VerifyResult | VerifyReport> {
    this.#core.assertOpen();
    if (options !== undefined) {
      const o = options as Partial<VerifyReportOptions> & { deep?: unknown } | null;
      const known = o !== null && typeof o === 'object' && Object.keys(o).every((k) => k === 'deep' || k === 'report');
      if (!known || (o.report !== undefined && o.report !== true) || (o.deep !== undefined && typeof o.deep !== 'boolean') || (o.report !== true && o.deep !== true)) {
        throw new InvalidArgumentError('verify options must be { deep: true }, { report: true } or { report: true, deep: true } (or omitted for the in-process check)');
      }
      if (o.deep === true) {
        return o.report === true
          ? verifyInChild(this.dir, 'report').then((r) => r.report as VerifyReport)
          : verifyInChild(this.dir, 'count').then((r) => ({ events: r.events ?? 0 }));
      }
      try {
        return JSON.parse(this.#core.native.verifyReport()) as VerifyReport;
      } catch (e) {
        throw fromNative(e);
      }
    }
    try {
      return { events: this.#core.native.verify() };
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * State entries whose keys start with `prefix`, in key order (byte order of the
   * UTF-8 keys), at most `limit` (default 1000), from the newest committed state.
   * Page through many with `after`: the last key of the previous page. Synchronous.
   */
  list(options: ListOptions = {}): StateEntry[] {
    this.#core.assertOpen();
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('list options must be an object { prefix, after, limit }');
    const { prefix = '', after, limit = 1000 } = options;
    if (typeof prefix !== 'string') throw new InvalidArgumentError('prefix must be a string');
    if (after !== undefined && typeof after !== 'string') throw new InvalidArgumentError('after must be a string (the last key of the previous page)');
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new InvalidArgumentError('limit must be an integer from 1 to 100000');
    let packed: Buffer;
    try {
      packed = this.#core.native.stateList(prefix, after, limit);
    } catch (e) {
      throw fromNative(e);
    }
    return readStateList(packed, (key, buf, off, len): StateEntry => ({ key, value: decodeValue(buf, off, len) }));
  }

  /** Size and counters, for monitoring. */
  stats(): {
    /** The LMDB map size, bytes (it grows by itself). */
    mapSize: number;
    /** Commit seq of the newest transaction. */
    commitSeq: bigint;
    /** Id of the newest event (0n when the log is empty). */
    lastEventId: bigint;
    /** Transactions handed over and not yet settled. */
    pendingCommits: number;
    /** Snapshots opened and not yet closed. */
    openSnapshots: number;
  } {
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
    this.#closing ??= this.#close();
    return this.#closing;
  }

  #closing: Promise<void> | undefined;
  /** @internal What a subclass stops first at close (a replica's follower). */
  #beforeClose: (() => Promise<void>) | undefined;

  /** @internal */
  protected onClose(f: () => Promise<void>): void {
    this.#beforeClose = f;
  }

  async #close(): Promise<void> {
    if (this.#core.closed) return;
    try {
      // Only when there is one: close() inside db.sql.transaction(fn) must reach the
      // SQL connection before the callback returns, so no needless await comes first.
      if (this.#scheduler !== undefined) await this.#scheduler.stop();
      if (this.#replication !== undefined) await this.#replication.close();
      if (this.#pgProjections.size > 0) await Promise.all([...this.#pgProjections].map((p) => p.stop()));
      if (this.#beforeClose !== undefined) await this.#beforeClose();
      if (this.#security !== undefined) await this.#security.audit.close();
      if (this.#rolesDir !== undefined) releaseRoleVersion(this.#rolesDir);
      this.#rolesDir = undefined;
      for (const h of this.#namespaceHandles.values()) await h.close();
      this.#namespaceHandles.clear();
      await this.#proj.close();
    } finally {
      while (this.#core.pendingCount > 0) await this.#core.drain();
      for (const s of [...this.#snapshots]) s.close();
      this.#core.close();
    }
  }

  /** Closes the database (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The namespaces of a database (`db.namespaces`). */
export interface Namespaces {
  /** Creates namespace `name`; durable when it returns. `InvalidArgumentError` when it exists or the name is not valid. */
  create(name: string, options?: NamespaceOptions): NamespaceInfo;
  /** The namespace named `name`, or `undefined`. */
  get(name: string): NamespaceInfo | undefined;
  /** Every namespace, by name. */
  list(): NamespaceInfo[];
  /**
   * Drops namespace `name` with everything in it (state, events, streams, idempotency
   * records, its projection.db), after closing its open handle; its transactions
   * still queued fail with `NotFoundError`. Resolves to whether it existed.
   */
  drop(name: string): Promise<boolean>;
}

/** What a namespace handle refuses: what belongs to the database as a whole. */
function refusedInNamespace(what: string): never {
  throw new InvalidArgumentError(`${what} belong(s) to the database, not to a namespace: call it on the database handle`);
}


/**
 * A handle on one namespace ({@link Athanor.namespace}): the database's API confined
 * to the namespace by the core's key encoding.
 */
export class NamespaceHandle extends Athanor {
  /** The namespace this handle reads and writes. */
  readonly info: NamespaceInfo;
  readonly #database: Athanor;

  /** @internal */
  constructor(database: Athanor, o: CheckedOptions, core: Core, projectionDir: string, info: NamespaceInfo) {
    super(database.dir, o, core, { projectionDir });
    this.info = info;
    this.#database = database;
  }

  /** The database's caller handle for `caller`, in this namespace (`db.as(caller).namespace(name)`): roles and the audit trail are the database's. */
  override as(caller: Caller): Athanor {
    return this.#database.as(caller).namespace(this.info.name);
  }

  /** The database's roles (a namespace has none of its own). */
  override get roles(): Roles {
    return this.#database.roles;
  }

  /** The database's audit trail, which records decisions in every namespace. */
  override get audit(): AuditTrail {
    return this.#database.audit;
  }

  /** Refused: namespaces do not nest. */
  override namespace(_name: string): Athanor {
    return refusedInNamespace('db.namespace()');
  }

  /** Refused: namespaces are listed, created and dropped on the database. */
  override get namespaces(): Namespaces {
    return refusedInNamespace('db.namespaces');
  }

  /** Refused: a backup copies the whole database. */
  override backup(_targetDir: string, _options?: BackupOptions): Promise<BackupManifest> {
    return Promise.reject(new InvalidArgumentError('a backup copies the whole database, its namespaces included: call backup() on the database handle'));
  }

  /** Refused: replication publishes the database's commits, which namespaces are not part of yet. */
  override get replication(): Replication {
    return refusedInNamespace('replication');
  }
}

/**
 * A read replica ({@link Athanor.openReplica}): an {@link Athanor} whose contents come
 * only from its primary's commit stream. Reads, snapshots, processors and queries work;
 * `transaction()` throws `ReadOnlyError`.
 */
export class Replica extends Athanor {
  readonly #follower: ReplicaFollower;

  /** @internal */
  constructor(dir: string, o: CheckedOptions, core: Core, follower: ReplicaFollower) {
    super(dir, o, core);
    this.#follower = follower;
    this.onClose(() => follower.stop());
  }

  /** Refused: a replica changes only by applying its primary's commits. Write on the primary, then {@link waitFor} its commit seq. */
  override transaction(): TransactionBuilder {
    throw new ReadOnlyError('this database is a read replica: write on the primary, then replica.waitFor(commitSeq) to read your write here');
  }

  /** How far behind the stream this replica is: commits not applied yet, and how old the oldest of them is (ms). */
  lag(): ReplicaLag {
    return this.#follower.lag();
  }

  /**
   * Resolves once this replica holds the primary's commit `commitSeq` (e.g. the
   * `commitSeq` a commit on the primary resolved to): read-your-writes on a replica.
   * Rejects if the replica stops or fails first.
   */
  waitFor(commitSeq: bigint | number): Promise<void> {
    if (typeof commitSeq !== 'bigint' && !Number.isSafeInteger(commitSeq)) throw new InvalidArgumentError('waitFor needs a commit seq (bigint or integer)');
    const seq = BigInt(commitSeq);
    if (seq < 0n) throw new InvalidArgumentError('a commit seq is not negative');
    return this.#follower.waitFor(seq);
  }

  /** @internal */
  protected override replicaFollower(): ReplicaFollower {
    return this.#follower;
  }

  /** The follower's progress and health: commit seq, stream position, lag, errors. */
  replicaMetrics(): ReplicaMetrics {
    return this.#follower.metrics();
  }
}
