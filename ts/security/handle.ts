/**
 * Caller handles (`db.as(caller)`) and the secure root (`Athanor.open(dir, { secure: true })`).
 *
 * A caller handle is a Proxy over the database whose every member is looked up in a
 * table of rules: a member missing from the tables is refused (so an API added later
 * is closed until it is classified), and each allowed member checks the permissions
 * its arguments need before it runs, records the decision in the audit trail, and
 * wraps the objects it returns (the event log, a snapshot, a transaction, a vector
 * collection, the SQL connection) in their own tables. Property writes, descriptors
 * and key listings are refused, so the handle never hands out the object behind it;
 * a method taken off the prototype and called on the handle fails, as the class's
 * private fields are not the Proxy's.
 *
 * The boundary is the TypeScript API: code that loads the native addon itself, or
 * opens the directory with its own handle, is outside what a caller handle governs.
 */
import { ForbiddenError } from '../errors.js';
import type { Value } from '../state/codec.js';
import { INTERNAL, RESERVED_PREFIX, checkWritableEventType, checkWritableKey } from '../state/reserved.js';
import type { AppendOptions, CommitResult, EventInput, ExecuteOptions, LogOptions, NumericOptions, Tx, TransactionBuilder } from '../state/transaction.js';
import type { TxVectors } from '../state/tx-vectors.js';
import type { Json } from '../state/codec.js';
import type { AuditTrail, Decision } from './audit.js';
import { encodeCounted, type Profile } from './audit-format.js';
import { Roles, type RoleStore, type RoleVersion } from './roles.js';
import { checkNamespaceName } from '../state/namespaces.js';
import { DEFAULT_NAMESPACE, appliesIn, describeNeed, describePermission, grants, type Caller, type Need, type Permission } from './permissions.js';

/** The database's security parts, shared by its handles. @internal */
export interface Security {
  store: RoleStore;
  audit: AuditTrail;
  roles: Roles;
  version: RoleVersion;
}

/** Where a gate's writes of athanor's own commit (a vector collection's writes and their record). @internal */
export interface GateStore {
  internalTransaction(): TransactionBuilder;
}

/** Decides for one caller in one namespace: checks needs against its grants, records the decisions. @internal */
export class Gate {
  readonly caller: Caller;
  readonly security: Security;
  /** The namespace the gate decides in (`'default'`: the database's own). */
  readonly namespace: string;
  /** The handle of that namespace, for writes the gate makes itself. */
  readonly store: GateStore;
  /** This caller's gates of other namespaces, by name, with the handle each was made for. */
  readonly #namespaces = new Map<string, { handle: object; gate: Gate }>();
  #perms: readonly Permission[] = [];
  #texts: string[] = [];
  #version = -1;
  /** The first grant that reads every key (-1: none), so a point read needs no search. */
  #readsAllKeys = -1;
  /** The first grant that writes every key (-1: none): a transaction's writes need no search. */
  writesAllKeys = -1;
  /** The first grant that logs events of every type (-1: none). */
  writesAllEvents = -1;
  /** Per operation, this batch's counting records, by grant (see `AuditTrail.addRead`). */
  readonly #counts = new Map<string, ReadCounter>();
  /** The caller's id, roles and namespace as its records name them. */
  readonly #profile: Profile;
  /** The encoded record of an allowed transaction, by the grants it used. */
  readonly #txValues = new Map<string, Value>();

  constructor(caller: Caller, security: Security, namespace: string = DEFAULT_NAMESPACE, store: GateStore = security.store) {
    this.caller = caller;
    this.security = security;
    this.namespace = namespace;
    this.store = store;
    this.#profile = security.audit.profile(caller.id, caller.roles, namespace);
    this.#compile();
  }

  /** The same caller's gate in namespace `name`, whose handle is `handle` (one gate per handle, so its read counts add up). */
  inNamespace(name: string, handle: GateStore & object): Gate {
    const seen = this.#namespaces.get(name);
    if (seen !== undefined && seen.handle === handle) return seen.gate;
    const gate = new Gate(this.caller, this.security, name, handle);
    this.#namespaces.set(name, { handle, gate });
    return gate;
  }

  /** A gate of the same caller deciding in namespace `name`, for a decision about the namespace itself (not kept). */
  decidingIn(name: string): Gate {
    return new Gate(this.caller, this.security, name);
  }

  /** Whether any of the caller's grants applies in namespace `name`. */
  reaches(name: string): boolean {
    if (this.#version !== this.security.version.value) this.#compile();
    return this.#perms.some((p) => appliesIn(p, name));
  }

  /** The counter of allowed reads of `action` (one per member, so the hot path looks nothing up). */
  readCounter(action: string): ReadCounter {
    let c = this.#counts.get(action);
    if (c === undefined) {
      c = { action, generation: -1, records: [] };
      this.#counts.set(action, c);
    }
    return c;
  }

  #compile(): void {
    const perms: Permission[] = [];
    for (const r of this.caller.roles) perms.push(...(this.security.roles.get(r) ?? []));
    this.#perms = perms;
    this.#texts = perms.map(describePermission);
    const unnarrowed = (need: Need) => perms.findIndex((p) => grants(p, need, this.namespace) && p.resource === undefined);
    this.#readsAllKeys = unnarrowed({ action: 'read', kind: 'key', name: '' });
    this.writesAllKeys = unnarrowed({ action: 'write', kind: 'key', name: '' });
    this.writesAllEvents = unnarrowed({ action: 'write', kind: 'event', name: '' });
    this.#version = this.security.version.value;
    // Grants are numbered anew: counts and encoded records name the old numbering.
    for (const c of this.#counts.values()) c.generation = -1;
    this.#txValues.clear();
  }

  /** Counts an allowed read through grant `i` into this batch's record of `counter`. */
  #countRead(counter: ReadCounter, i: number): void {
    const audit = this.security.audit;
    if (counter.generation !== audit.generation) {
      counter.generation = audit.generation;
      counter.records = [];
    }
    const r = counter.records[i];
    if (r !== undefined) {
      r.count++;
    } else {
      const rec = this.#record(counter.action, this.#texts[i]!, 'allow');
      counter.records[i] = rec;
      audit.addRead(rec);
    }
  }

  /** A point read of `key` (the hot path of `get`, `getOpt`, `exists`). */
  readKey(counter: ReadCounter, key: unknown): void {
    if (this.#version !== this.security.version.value) this.#compile();
    // Reserved keys all start with NUL: one character code settles most keys.
    const plainKey = typeof key === 'string' && (key.charCodeAt(0) !== 0 || !key.startsWith(RESERVED_PREFIX));
    const i = this.#readsAllKeys >= 0 && plainKey ? this.#readsAllKeys : this.grant(counter.action, keyNeed('read', key));
    this.#countRead(counter, i);
  }

  #record(action: string, permission: string, outcome: 'allow' | 'deny'): Decision {
    return { at: Date.now(), count: 1, profile: this.#profile, action, permission, outcome };
  }

  /** The grant that allows `need`, or a recorded denial thrown as `ForbiddenError`. */
  grant(action: string, need: Need): number {
    if (this.#version !== this.security.version.value) this.#compile();
    const perms = this.#perms;
    const ns = this.namespace;
    for (let i = 0; i < perms.length; i++) if (grants(perms[i]!, need, ns)) return i;
    return this.deny(action, ns === DEFAULT_NAMESPACE ? describeNeed(need) : `${describeNeed(need)} in ${ns}`);
  }

  /** Records a denial of `action` for lack of `missing`, and throws it as `ForbiddenError`. */
  deny(action: string, missing: string): never {
    this.security.audit.record(this.#record(action, missing, 'deny'));
    throw new ForbiddenError(
      `caller ${JSON.stringify(this.caller.id)} (roles: ${this.caller.roles.join(', ') || 'none'}) lacks the permission "${missing}" that ${action} needs; nothing was done. Grant it with a role (db.roles.define) or call as a caller that holds it`,
      { permission: missing },
    );
  }

  /** Refuses (and records) a member that callers cannot reach at all, whatever their roles. */
  refuse(action: string): never {
    const missing = 'a member open to callers';
    this.security.audit.record(this.#record(action, missing, 'deny'));
    throw new ForbiddenError(`${action} is not available through a caller handle; nothing was done`, { permission: missing });
  }

  /** Checks every need without recording: for a write whose record joins its own commit. */
  grantTexts(action: string, needs: readonly Need[]): string[] {
    return [...new Set(needs.map((n) => this.#texts[this.grant(action, n)]!))];
  }

  /** The record of an allowed write, for its own commit. */
  writeRecord(action: string, grantTexts: Iterable<string>): Decision {
    return this.#record(action, [...grantTexts].join(', '), 'allow');
  }

  /** Checks every need, then records the decision (reads counted, others one by one). */
  allow(action: string, needs: readonly Need[]): void {
    if (needs.length === 0) return;
    const used = needs.map((n) => this.grant(action, n));
    if (needs.every((n) => n.action === 'read')) {
      const counter = this.readCounter(action);
      for (const i of used) this.#countRead(counter, i);
    } else {
      this.security.audit.record(this.#record(action, [...new Set(used.map((i) => this.#texts[i]!))].join(', '), 'allow'));
    }
  }

  /** Compiles the caller's grants again if a role changed since (before reading `writesAll*`). */
  current(): void {
    if (this.#version !== this.security.version.value) this.#compile();
  }

  /** The text of grant `i` (see {@link grant}). */
  text(i: number): string {
    return this.#texts[i]!;
  }

  /** Writes the record of an allowed transaction that used the grants `permission` names into its own commit. */
  recordTx(tx: Tx, permission: string): void {
    let value = this.#txValues.get(permission);
    if (value === undefined) {
      value = encodeCounted(this.#record('tx.execute', permission, 'allow'));
      this.#txValues.set(permission, value);
    }
    this.security.audit.countInTransaction(tx, this.#profile, Date.now(), value);
  }

  /** Whether the caller holds an unnarrowed admin grant. */
  get isAdmin(): boolean {
    if (this.#version !== this.security.version.value) this.#compile();
    return this.#perms.some((p) => p.action === 'admin' && appliesIn(p, this.namespace));
  }
}

/** One operation's counted reads in the current batch, by grant. @internal */
export interface ReadCounter {
  readonly action: string;
  /** The audit batch `records` counts into (-1: none yet). */
  generation: number;
  records: (Decision | undefined)[];
}

// ---------------------------------------------------------------------------
// needs

const ADMIN: readonly Need[] = [{ action: 'admin' }];
const AUDIT: readonly Need[] = [{ action: 'audit' }];
const READ_ALL: readonly Need[] = [{ action: 'read' }];
const WRITE_ALL: readonly Need[] = [{ action: 'write' }];
const NOTHING: readonly Need[] = [];

/** A key's need: athanor's reserved keys (audit trail, roles, cursors) need admin. */
function keyNeed(action: 'read' | 'write', key: unknown): Need {
  if (typeof key === 'string' && key.startsWith(RESERVED_PREFIX)) return { action: 'admin' };
  return { action, kind: 'key', name: typeof key === 'string' ? key : undefined };
}

function eventNeed(type: unknown): Need {
  return { action: 'read', kind: 'event', name: typeof type === 'string' ? type : '' };
}

const optionType = (o: unknown): unknown => (o !== null && typeof o === 'object' ? (o as { type?: unknown }).type : undefined);
const optionPrefix = (o: unknown): unknown => (o !== null && typeof o === 'object' ? ((o as { prefix?: unknown }).prefix ?? '') : '');

// ---------------------------------------------------------------------------
// tables

type Target = Record<PropertyKey, unknown>;

/** What one member needs and how its result is handed out. */
interface Rule {
  needs: (args: readonly unknown[], target: Target) => readonly Need[];
  /** A point read of the key in the first argument: checked on the fast path. */
  keyRead?: true;
  /** A write whose `call` commits the audit record itself (given the grants used). */
  inCommit?: (target: Target, args: readonly unknown[], gate: Gate, record: Decision) => Promise<void>;
  /** Runs instead of the member (after the check). */
  call?: (target: Target, args: readonly unknown[], gate: Gate) => unknown;
  /** Wraps what the member returns. */
  wrap?: (result: unknown, gate: Gate) => unknown;
  /** The member returns a promise without being an async function: a refusal rejects it too. */
  promise?: true;
}

type Table = Readonly<Record<string | symbol, Rule>>;

const always = (): readonly Need[] => NOTHING;
const admin = (): readonly Need[] => ADMIN;
const readAll = (): readonly Need[] => READ_ALL;
const readKey = (args: readonly unknown[]): readonly Need[] => [keyNeed('read', args[0])];
const collectionNeed = (action: 'read' | 'write') => (_: readonly unknown[], t: Target): readonly Need[] => [{ action, kind: 'collection', name: String(t.name) }];

const SNAPSHOT: Table = {
  get: { needs: readKey, keyRead: true },
  getOpt: { needs: readKey, keyRead: true },
  exists: { needs: readKey, keyRead: true },
  events: { needs: (a) => [eventNeed(optionType(a[0]))] },
  commitSeq: { needs: always },
  lastEventId: { needs: always },
  close: { needs: always },
  [Symbol.dispose]: { needs: always },
};

const EVENTS: Table = {
  read: { needs: (a) => [eventNeed(optionType(a[0]))] },
  tail: { needs: (a) => [eventNeed(optionType(a[1]))] },
  get: { needs: () => [eventNeed('')] },
  lastId: { needs: () => [eventNeed('')] },
  subscribe: { needs: () => [eventNeed('')] },
  proof: { needs: () => [eventNeed('')] },
};

const COLLECTION: Table = {
  info: { needs: collectionNeed('read') },
  name: { needs: collectionNeed('read') },
  embedder: { needs: collectionNeed('read') },
  get: { needs: collectionNeed('read') },
  count: { needs: collectionNeed('read') },
  search: { needs: collectionNeed('read') },
  searchText: { needs: collectionNeed('read') },
  searchBatch: { needs: collectionNeed('read') },
  explain: { needs: collectionNeed('read') },
  stats: { needs: collectionNeed('read') },
  verify: { needs: collectionNeed('read') },
  waitIndexed: { needs: collectionNeed('read') },
  waitIdle: { needs: collectionNeed('read') },
  upsert: { needs: collectionNeed('write'), inCommit: (t, a, g, r) => writeVectors(t, g, r, (v) => v.upsert(a[0] as string, a[1] as Float32Array, a[2] as Json)) },
  upsertMany: { needs: collectionNeed('write'), inCommit: (t, a, g, r) => writeVectors(t, g, r, (v) => v.upsertMany(a[0] as string[], a[1] as Float32Array, a[2] as Json[])) },
  upsertText: { needs: collectionNeed('write') },
  upsertTexts: { needs: collectionNeed('write') },
  delete: { needs: collectionNeed('write'), inCommit: (t, a, g, r) => writeVectors(t, g, r, (v) => v.delete(a[0] as string)) },
  rebuild: { needs: admin },
};

/**
 * A collection write as the collection makes it (one transaction), with the audit
 * record in the same commit.
 */
async function writeVectors(t: Target, gate: Gate, record: Decision, write: (v: TxVectors<Json>) => void): Promise<void> {
  await gate.store.internalTransaction().execute((tx) => {
    write(tx.vectors<Json>(String(t.name)));
    gate.security.audit.inTransaction(tx, record);
  });
}

const wrapCollection = (r: unknown, g: Gate): unknown => guard(r as object, 'collection', COLLECTION, g);
const collectionByName = (action: 'read' | 'write') => (a: readonly unknown[]): readonly Need[] => [{ action, kind: 'collection', name: typeof a[0] === 'string' ? a[0] : undefined }];

const VECTORS: Table = {
  open: { needs: collectionByName('read'), wrap: wrapCollection },
  has: { needs: collectionByName('read') },
  list: { needs: () => [{ action: 'read', kind: 'collection', name: '' }] },
  create: { needs: admin, wrap: wrapCollection },
  drop: { needs: admin },
};

interface SqlLike {
  accessOf(sql: string): [string, boolean][];
}

/**
 * What one statement needs: `read` of each table it reads and `write` of each it
 * changes (rows or schema), as SQLite's authorizer saw it compile, views and triggers
 * included; a statement that names no table, or does not compile, needs `read` of all
 * tables (`table:""`), one that changes what is not a table's (PRAGMA, VACUUM) `write` of all.
 */
function sqlNeeds(target: Target, sql: unknown): readonly Need[] {
  if (typeof sql !== 'string') return [{ action: 'write', kind: 'table', name: '' }];
  let access: [string, boolean][];
  try {
    access = (target as unknown as SqlLike).accessOf(sql);
  } catch {
    // A statement that does not compile (a missing table, a syntax error) says something
    // of the schema: only a caller who may read all of it learns what.
    return [{ action: 'read', kind: 'table', name: '' }];
  }
  if (access.length === 0) return [{ action: 'read', kind: 'table', name: '' }];
  return access.map(([table, write]): Need => ({ action: write ? 'write' : 'read', kind: 'table', name: table }));
}

const SQL_WRITE = (): readonly Need[] => [{ action: 'write', kind: 'table', name: '' }];
const SQL: Table = {
  exec: { needs: SQL_WRITE },
  run: { needs: (a, t) => sqlNeeds(t, a[0]) },
  prepare: { needs: (a, t) => sqlNeeds(t, a[0]) },
  get: { needs: (a, t) => sqlNeeds(t, a[0]) },
  all: { needs: (a, t) => sqlNeeds(t, a[0]) },
  iterate: { needs: (a, t) => sqlNeeds(t, a[0]) },
  transaction: { needs: SQL_WRITE },
  inTransaction: { needs: always },
};

const IDEMPOTENCY: Table = { get: { needs: readAll } };

const ROLES: Table = {
  define: { needs: admin },
  drop: { needs: admin },
  get: { needs: () => AUDIT },
  list: { needs: () => AUDIT },
};

const AUDIT_TABLE: Table = {
  query: { needs: () => AUDIT },
  flush: { needs: () => AUDIT },
};

interface Listed {
  key: string;
}

const DB: Table = {
  dir: { needs: always },
  durability: { needs: always },
  closed: { needs: always },
  secure: { needs: always },
  get: { needs: readKey, keyRead: true },
  getOpt: { needs: readKey, keyRead: true },
  exists: { needs: readKey, keyRead: true },
  list: {
    needs: (a) => [keyNeed('read', optionPrefix(a[0]))],
    // athanor's own records (the audit trail, roles) stay hidden from a full listing.
    wrap: (r, g) => (g.isAdmin ? r : (r as Listed[]).filter((e) => !e.key.startsWith(RESERVED_PREFIX))),
  },
  transaction: {
    needs: always,
    // The builder may write reserved keys so the audit record joins the commit; the
    // guarded transaction refuses them to the caller itself.
    call: (t, _a, g) => new GuardedBuilder((t.transaction as () => TransactionBuilder).call(t)[INTERNAL](), g),
  },
  snapshot: { needs: always, wrap: (r, g) => guard(r as object, 'snapshot', SNAPSHOT, g) },
  events: { needs: always, wrap: (r, g) => guard(r as object, 'events', EVENTS, g) },
  vectors: { needs: always, wrap: (r, g) => guard(r as object, 'vectors', VECTORS, g) },
  idempotency: { needs: always, wrap: (r, g) => guard(r as object, 'idempotency', IDEMPOTENCY, g) },
  sql: { needs: always, wrap: (r, g) => guard(r as object, 'sql', SQL, g) },
  query: { needs: (a, t) => sqlNeeds(t.sql as Target, a[0]), promise: true },
  roles: { needs: always, call: (_t, _a, g) => guard(new Roles(g.security.store, g.security.audit, g.security.version, g.caller), 'roles', ROLES, g) },
  audit: { needs: always, wrap: (r, g) => guard(r as object, 'audit', AUDIT_TABLE, g) },
  commitSeq: { needs: readAll },
  stats: { needs: readAll },
  contentDigest: { needs: readAll },
  verify: { needs: () => AUDIT },
  flush: { needs: () => WRITE_ALL },
  metrics: { needs: admin },
  processor: { needs: admin },
  projection: { needs: admin },
  vectorProjection: { needs: admin },
  scheduler: { needs: admin },
  migrations: { needs: admin },
  backup: { needs: admin },
  // Event-sourcing helpers and replication hand out objects with their own writes and
  // reads of athanor's reserved records, which no finer rule describes yet: admin only.
  accumulators: { needs: admin },
  queue: { needs: admin },
  consumerGroup: { needs: admin },
  replication: { needs: admin },
  pgProjection: { needs: admin },
  as: { needs: admin },
  close: { needs: admin },
  [Symbol.asyncDispose]: { needs: admin },
  namespace: { needs: always, call: (t, a, g) => openNamespace(t, a, g) },
  namespaces: { needs: always, call: (t, _a, g) => namespacesFor(t, g) },
};

/**
 * A namespace's handle through a caller handle: the database's table, each member
 * deciding in the namespace, less what belongs to the database as a whole (namespaces,
 * roles, the audit trail, backups, replication, closing).
 */
const NAMESPACE: Table = (() => {
  const omitted = new Set<PropertyKey>(['namespace', 'namespaces', 'roles', 'audit', 'as', 'close', Symbol.asyncDispose, 'backup', 'replication']);
  const table: Record<PropertyKey, Rule> = { info: { needs: always } };
  for (const k of Reflect.ownKeys(DB)) if (!omitted.has(k)) table[k] = DB[k as string]!;
  return Object.freeze(table);
})();

interface NamespaceOpener {
  namespace(name: string, options?: unknown): object & GateStore;
  readonly namespaces: {
    create(name: string, options?: unknown): unknown;
    get(name: string): unknown;
    list(): { name: string }[];
    drop(name: string): Promise<boolean>;
  };
}

/**
 * `db.as(caller).namespace(name, options)`: the namespace's handle guarded by the
 * caller's gate in that namespace. Opening needs some grant there (creating it, admin
 * there), so a caller learns nothing of a namespace it holds no grant in.
 */
function openNamespace(t: Target, a: readonly unknown[], g: Gate): unknown {
  const name = checkNamespaceName(a[0]);
  const options = a[1];
  const db = t as unknown as NamespaceOpener;
  const probe = g.decidingIn(name);
  if (options !== null && typeof options === 'object' && (options as { create?: unknown }).create === true) probe.allow('db.namespace', ADMIN);
  else if (!g.reaches(name)) probe.deny('db.namespace', `any permission in ${name}`);
  const handle = db.namespace(name, options);
  const gate = g.inNamespace(name, handle);
  return guard(handle, 'namespace', NAMESPACE, gate);
}

/** `db.as(caller).namespaces`: creating and dropping need admin in the namespace; listing shows the namespaces the caller holds a grant in. */
function namespacesFor(t: Target, g: Gate): unknown {
  const db = t as unknown as NamespaceOpener;
  return Object.freeze({
    create: (name: unknown, options?: unknown): unknown => {
      const n = checkNamespaceName(name);
      g.decidingIn(n).allow('namespaces.create', ADMIN);
      return db.namespaces.create(n, options);
    },
    get: (name: unknown): unknown => {
      const n = checkNamespaceName(name);
      return g.reaches(n) ? db.namespaces.get(n) : undefined;
    },
    list: (): unknown[] => db.namespaces.list().filter((n) => g.reaches(n.name)),
    drop: async (name: unknown): Promise<boolean> => {
      const n = checkNamespaceName(name);
      g.decidingIn(n).allow('namespaces.drop', ADMIN);
      return db.namespaces.drop(n);
    },
  });
}

// ---------------------------------------------------------------------------
// the Proxy

function refuse(what: string): never {
  throw new ForbiddenError(`${what} is not available through a caller handle; nothing was done`, { permission: 'admin' });
}

/** Where a member of `target` is defined: a method, an accessor or a field (found without running getters). */
function memberKind(target: object, prop: PropertyKey): 'method' | 'value' | undefined {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const d = Object.getOwnPropertyDescriptor(o, prop);
    if (d === undefined) continue;
    return typeof d.value === 'function' ? 'method' : 'value';
  }
  return undefined;
}

/**
 * Wraps `target` so that only the members of `table` are reachable, each after its check.
 * The handle is a frozen object holding one checking method or accessor per member
 * of `table` (no Proxy trap on the hot path); its prototype is a Proxy that refuses,
 * and records, every other member, so an API added later is closed until classified.
 */
function guard<T extends object>(target: T, name: string, table: Table, gate: Gate): T {
  const t = target as unknown as Target;
  const proto = Object.getPrototypeOf(target) as object | null;
  const refusing = new Proxy(Object.create(null) as object, {
    get(_, prop) {
      if (prop === 'then' || typeof prop === 'symbol') return undefined; // not a thenable: `await handle` stays the handle
      return gate.refuse(`${name}.${prop}`);
    },
    set: (_t, prop) => gate.refuse(`${name}.${String(prop)} (set)`),
    has: () => false,
    // instanceof still answers for the class the handle stands for.
    getPrototypeOf: () => proto,
  });
  const handle = Object.create(refusing) as Record<PropertyKey, unknown>;
  for (const prop of Reflect.ownKeys(table)) {
    const rule = table[prop as string]!;
    const kind = memberKind(target, prop);
    if (kind === undefined) continue;
    const action = `${name}.${String(prop)}`;
    if (kind === 'method') {
      const fn = Reflect.get(t, prop, t) as (...args: unknown[]) => unknown;
      let method: (...args: unknown[]) => unknown;
      if (rule.keyRead === true) {
        const counter = gate.readCounter(action);
        method = (key: unknown): unknown => {
          gate.readKey(counter, key);
          return fn.call(t, key);
        };
      } else if (rule.inCommit !== undefined) {
        const inCommit = rule.inCommit;
        method = (...args: unknown[]): Promise<void> => {
          try {
            return inCommit(t, args, gate, gate.writeRecord(action, gate.grantTexts(action, rule.needs(args, t))));
          } catch (e) {
            return Promise.reject(e);
          }
        };
      } else {
        const run = (args: unknown[]): unknown => {
          gate.allow(action, rule.needs(args, t));
          const r = rule.call !== undefined ? rule.call(t, args, gate) : fn.apply(t, args);
          return rule.wrap !== undefined ? rule.wrap(r, gate) : r;
        };
        // An async member refuses the way it fails otherwise: its promise rejects.
        method =
          fn.constructor.name === 'AsyncFunction' || rule.promise === true
            ? (...args: unknown[]): unknown => {
                try {
                  return run(args);
                } catch (e) {
                  return Promise.reject(e);
                }
              }
            : (...args: unknown[]): unknown => run(args);
      }
      Object.defineProperty(handle, prop, { value: method, enumerable: false, writable: false, configurable: false });
    } else {
      // The same object behind a property (db.events) gets the same wrapper each time.
      let seen: { raw: unknown; wrapped: unknown } | undefined;
      const get = (): unknown => {
        gate.allow(action, rule.needs([], t));
        if (rule.call !== undefined) return rule.call(t, [], gate);
        const value = Reflect.get(t, prop, t);
        if (rule.wrap === undefined) return value;
        if (seen !== undefined && seen.raw === value) return seen.wrapped;
        seen = { raw: value, wrapped: rule.wrap(value, gate) };
        return seen.wrapped;
      };
      Object.defineProperty(handle, prop, { get, enumerable: false, configurable: false });
    }
  }
  return Object.freeze(handle) as T;
}

/** A transaction builder whose transactions check each key, event and collection. */
class GuardedBuilder {
  readonly #raw: TransactionBuilder;
  readonly #gate: Gate;

  constructor(raw: TransactionBuilder, gate: Gate) {
    this.#raw = raw;
    this.#gate = gate;
  }

  #read(action: string, key: unknown): void {
    this.#gate.allow(`tx.${action}`, [keyNeed('read', key)]);
  }

  /** See `TransactionBuilder.require`. */
  require(key: string, predicate: (value: Value | undefined) => boolean, message?: string): this {
    this.#read('require', key);
    this.#raw.require(key, predicate, message);
    return this;
  }
  /** See `TransactionBuilder.requireExists`. */
  requireExists(key: string): this {
    this.#read('requireExists', key);
    this.#raw.requireExists(key);
    return this;
  }
  /** See `TransactionBuilder.requireMissing`. */
  requireMissing(key: string): this {
    this.#read('requireMissing', key);
    this.#raw.requireMissing(key);
    return this;
  }
  /** See `TransactionBuilder.requireMin`. */
  requireMin(key: string, min: bigint | number): this {
    this.#read('requireMin', key);
    this.#raw.requireMin(key, min);
    return this;
  }
  /** See `TransactionBuilder.requireMax`. */
  requireMax(key: string, max: bigint | number): this {
    this.#read('requireMax', key);
    this.#raw.requireMax(key, max);
    return this;
  }
  /** See `TransactionBuilder.requireEquals`. */
  requireEquals(key: string, expected: Value): this {
    this.#read('requireEquals', key);
    this.#raw.requireEquals(key, expected);
    return this;
  }

  /** See `TransactionBuilder.execute`: each operation of `fn` is checked; the audit record is part of the commit. */
  execute<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions = {}): Promise<CommitResult<T>> {
    return this.#raw.execute((tx) => runGuarded(tx, fn, this.#gate), options);
  }

  /** See `TransactionBuilder.executeSync`. */
  executeSync<T = void>(fn: (tx: Tx) => T, options: ExecuteOptions = {}): CommitResult<T> {
    return this.#raw.executeSync((tx) => runGuarded(tx, fn, this.#gate), options);
  }
}

function runGuarded<T>(raw: Tx, fn: (tx: Tx) => T, gate: Gate): T {
  if (typeof fn !== 'function') return fn; // the builder reports it
  const tx = new GuardedTx(raw, gate);
  const value = fn(tx);
  const permission = tx.grantsUsed;
  if (permission !== undefined) gate.recordTx(raw, permission);
  return value;
}

/** A transaction whose every operation checks the caller's grants first. */
class GuardedTx implements Tx {
  readonly #raw: Tx;
  readonly #gate: Gate;
  /** The first grant the transaction's writes used (most use one), recorded in its commit. */
  #first: string | undefined;
  /** Every grant they used, once they used a second one. */
  #all: Set<string> | undefined;

  constructor(raw: Tx, gate: Gate) {
    this.#raw = raw;
    this.#gate = gate;
    gate.current();
  }

  #use(i: number): void {
    const text = this.#gate.text(i);
    if (this.#first === undefined) this.#first = text;
    else if (text !== this.#first) (this.#all ??= new Set([this.#first])).add(text);
  }

  /** The grants the transaction's writes used, as its record names them (`undefined`: none). */
  get grantsUsed(): string | undefined {
    return this.#all === undefined ? this.#first : [...this.#all].join(', ');
  }

  #write(action: string, need: Need): void {
    this.#use(this.#gate.grant(`tx.${action}`, need));
  }

  /** A key write: a grant that writes every key settles a plain key without a search. */
  #writeKey(action: string, key: string): void {
    const all = this.#gate.writesAllKeys;
    if (all >= 0 && typeof key === 'string' && (key.charCodeAt(0) !== 0 || !key.startsWith(RESERVED_PREFIX))) this.#use(all);
    else this.#write(action, keyNeed('write', key));
  }

  /** An event's type: a grant that logs every type settles it without a search. */
  #writeEvent(action: string, type: unknown): void {
    const all = this.#gate.writesAllEvents;
    if (all >= 0 && typeof type === 'string') this.#use(all);
    else this.#write(action, { action: 'write', kind: 'event', name: typeof type === 'string' ? type : undefined });
  }

  get snapshotSeq(): bigint {
    return this.#raw.snapshotSeq;
  }
  get(key: string): Value {
    this.#gate.readKey(this.#gate.readCounter('tx.get'), key);
    return this.#raw.get(key);
  }
  getOpt(key: string): Value | undefined {
    this.#gate.readKey(this.#gate.readCounter('tx.getOpt'), key);
    return this.#raw.getOpt(key);
  }
  exists(key: string): boolean {
    this.#gate.readKey(this.#gate.readCounter('tx.exists'), key);
    return this.#raw.exists(key);
  }
  set(key: string, value: Value): void {
    this.#writeKey('set', key);
    checkWritableKey(key);
    this.#raw.set(key, value);
  }
  delete(key: string): void {
    this.#writeKey('delete', key);
    checkWritableKey(key);
    this.#raw.delete(key);
  }
  update(key: string, fn: (current: Value | undefined) => Value | undefined): void {
    this.#gate.allow('tx.update', [keyNeed('read', key)]);
    this.#writeKey('update', key);
    checkWritableKey(key);
    this.#raw.update(key, fn);
  }
  log(type: string, payload: unknown, options?: LogOptions): void {
    this.#writeEvent('log', type);
    if (typeof type === 'string') checkWritableEventType(type);
    this.#raw.log(type, payload, options);
  }
  logMany(events: Iterable<EventInput>): void {
    const all = events !== null && typeof (events as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] === 'function' ? [...events] : [];
    for (const e of all) {
      const type = e !== null && typeof e === 'object' ? e.type : undefined;
      this.#writeEvent('logMany', type);
      if (typeof type === 'string') checkWritableEventType(type);
    }
    this.#raw.logMany(all.length > 0 ? all : events);
  }
  append(streamId: string, events: EventInput | Iterable<EventInput>, options?: AppendOptions): void {
    // A stream append is a write of each event's type (the stream index is part of the log).
    const all: unknown[] = events !== null && typeof events === 'object' && typeof (events as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function' ? [...(events as Iterable<EventInput>)] : [events];
    for (const e of all) {
      const type = e !== null && typeof e === 'object' ? (e as { type?: unknown }).type : undefined;
      this.#writeEvent('append', type);
      if (typeof type === 'string') checkWritableEventType(type);
    }
    this.#raw.append(streamId, all as EventInput[], options);
  }
  add(key: string, delta: bigint | number, options?: NumericOptions): void {
    this.#numeric('add', key);
    this.#raw.add(key, delta, options);
  }
  sub(key: string, delta: bigint | number, options?: NumericOptions): void {
    this.#numeric('sub', key);
    this.#raw.sub(key, delta, options);
  }
  max(key: string, value: bigint | number, options?: NumericOptions): void {
    this.#numeric('max', key);
    this.#raw.max(key, value, options);
  }
  min(key: string, value: bigint | number, options?: NumericOptions): void {
    this.#numeric('min', key);
    this.#raw.min(key, value, options);
  }
  #numeric(action: string, key: string): void {
    this.#writeKey(action, key);
    checkWritableKey(key);
  }
  vectors<M = Json>(collection: string): TxVectors<M> {
    this.#write('vectors', { action: 'write', kind: 'collection', name: typeof collection === 'string' ? collection : undefined });
    return this.#raw.vectors<M>(collection);
  }
}

/** A caller handle over `db`. @internal */
export function callerHandle<T extends object>(db: T, caller: Caller, security: Security): T {
  return guard(db, 'db', DB, new Gate(caller, security));
}

/** Members of a secure database usable without a caller handle. */
const SECURE_ROOT = new Set<PropertyKey>(['as', 'close', 'closed', 'dir', 'durability', 'secure', Symbol.asyncDispose]);

/** The state key that marks a database opened with `{ secure: true }` (it stays secure). @internal */
export const SECURE_MARKER = `${RESERVED_PREFIX}security/secure`;

/**
 * The database as `Athanor.open(dir, { secure: true })` returns it: only `as`, `close`
 * and a few facts are reachable; everything else is refused (and the refusal recorded).
 * @internal
 */
export function secureRoot<T extends object>(db: T, audit: AuditTrail): T {
  const t = db as unknown as Target;
  return new Proxy(db, {
    get(_, prop) {
      if (prop === 'then') return undefined;
      if (SECURE_ROOT.has(prop)) {
        const v = Reflect.get(t, prop, t);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      }
      if (typeof prop === 'symbol') return undefined;
      audit.record({ at: Date.now(), count: 1, profile: audit.profile('', []), action: `db.${prop}`, permission: 'a caller handle', outcome: 'deny' });
      throw new ForbiddenError(`this database was opened with { secure: true }: db.${prop} is refused without a caller; call db.as({ id, roles }) and use the handle it returns`, { permission: 'a caller handle' });
    },
    set: () => refuse('setting a property of a secure database'),
    defineProperty: () => refuse('defining a property of a secure database'),
    deleteProperty: () => refuse('deleting a property of a secure database'),
    setPrototypeOf: () => refuse('changing the prototype of a secure database'),
    getOwnPropertyDescriptor: () => undefined,
    ownKeys: () => [],
  });
}
