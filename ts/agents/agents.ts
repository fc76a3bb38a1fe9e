/**
 * `db.agents`: agent records (identity, status, metadata, state data, version, soft
 * delete) kept in state under athanor's reserved keys, each change logged as an
 * `athanor.agent.*` event in the same commit, its history read back from the log
 * through the projection's index of event ids per agent.
 */
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError, NotFoundError, PreflightError, WrongExpectedVersionError } from '../errors.js';
import { json, type Json } from '../state/codec.js';
import type { Tx } from '../state/transaction.js';
import type { Processor } from '../processing/processor.js';
import type { MetadataFilter } from '../vectors/types.js';
import { checkFilter, matchesFilter } from './filter.js';
import { readRecord, type Memory } from './host.js';
import { AGENTS_PREFIX, checkId, checkJson, checkNamespace, decodeCursor, encodeCursor, kindPrefix, recordKey } from './keys.js';
import { EV } from './schema.js';

/** An agent as stored. */
export interface Agent {
  /** The agent's id (unique in its namespace). */
  id: string;
  /** Display name. */
  name: string;
  /** Status, free text (`'idle'`, `'running'`, ...). */
  status: string;
  /** Metadata: a JSON object that `list({ metadata })` filters on. */
  metadata: { [key: string]: Json };
  /** The agent's state data: any JSON value. */
  data: Json;
  /** 1 after the first save, incremented by every change. */
  version: number;
  /** Soft-deleted (`delete()`); hidden from `get` and `list` unless asked for. */
  deleted: boolean;
  /** When first saved (ms since the epoch). */
  createdAt: number;
  /** When last changed (ms since the epoch). */
  updatedAt: number;
}

/** What {@link Agents.save} takes: the id and the fields to set (others keep their value, or their default on creation). */
export interface AgentInput {
  /** The agent's id. */
  id: string;
  /** Display name (default: the id). */
  name?: string;
  /** Status (default `'idle'`). */
  status?: string;
  /** Metadata object (default `{}`). */
  metadata?: { [key: string]: Json };
  /** State data (default `null`). */
  data?: Json;
}

/** Who changed what and why, recorded in the change's event. */
export interface ChangeOptions {
  /** Why (kept in the history). */
  reason?: string;
  /** Who (kept in the history). */
  actor?: string;
  /** Refuse the change with `ERR_WRONG_EXPECTED_VERSION` unless the agent's version is this (0: it must not exist). */
  expectedVersion?: number;
}

/** The part of an agent a transition records. */
export interface AgentSide {
  /** Status. */
  status: string;
  /** Version. */
  version: number;
  /** Soft-deleted. */
  deleted: boolean;
}

/** One change of an agent, read from the log. */
export interface Transition {
  /** The event that recorded it. */
  eventId: bigint;
  /** What happened: `saved`, `status`, `deleted`, `restored`, `purged`, `snapshot_taken`, `snapshot_restored`, `snapshot_purged`. */
  kind: string;
  /** Commit time (ms since the epoch). */
  at: number;
  /** The agent before (null when it did not exist). */
  before: AgentSide | null;
  /** The agent after (null once purged). */
  after: AgentSide | null;
  /** The reason given, if any. */
  reason: string | null;
  /** The actor given, if any. */
  actor: string | null;
  /** The snapshot, for snapshot events. */
  snapshotId: string | null;
}

/** Options of {@link Agents.list}. */
export interface AgentListOptions {
  /** Only agents with this status. */
  status?: string;
  /** Only agents whose metadata matches (the vector collections' filter language). */
  metadata?: MetadataFilter;
  /** Include soft-deleted agents (default false). */
  includeDeleted?: boolean;
  /** At most this many agents (1..10000, default 100). */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

/** A page of {@link Agents.list}. */
export interface AgentPage {
  /** The agents, in id order (byte order of the escaped id). */
  agents: Agent[];
  /** Pass as `cursor` for the next page; absent once the list reached its end (a full page may be followed by an empty one). */
  nextCursor?: string;
}

/** A stored snapshot of an agent. */
export interface AgentSnapshot {
  /** Its id (opaque). */
  snapshotId: string;
  /** The agent it copies. */
  agentId: string;
  /** The agent's version when taken. */
  version: number;
  /** Free text. */
  description: string | null;
  /** When taken (ms since the epoch). */
  createdAt: number;
  /** When it expires (ms since the epoch), or null. */
  expiresAt: number | null;
  /** The agent as it was. */
  agent: Agent;
}

/** The payload of every `athanor.agent.*` event. @internal */
export interface AgentEventPayload {
  ns: string;
  id: string;
  before: AgentSide | null;
  after: Agent | null;
  reason: string | null;
  actor: string | null;
  snapshotId?: string;
}

const side = (a: Agent | undefined): AgentSide | null => (a === undefined ? null : { status: a.status, version: a.version, deleted: a.deleted });

function checkChange(o: ChangeOptions | undefined): ChangeOptions {
  if (o === undefined) return {};
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('options must be an object { reason, actor, expectedVersion }');
  for (const k of Object.keys(o)) if (k !== 'reason' && k !== 'actor' && k !== 'expectedVersion') throw new InvalidArgumentError(`unknown option ${JSON.stringify(k)}; expected reason, actor, expectedVersion`);
  if (o.reason !== undefined && typeof o.reason !== 'string') throw new InvalidArgumentError('reason must be a string');
  if (o.actor !== undefined && typeof o.actor !== 'string') throw new InvalidArgumentError('actor must be a string');
  if (o.expectedVersion !== undefined && (!Number.isSafeInteger(o.expectedVersion) || o.expectedVersion < 0)) throw new InvalidArgumentError('expectedVersion must be a non-negative integer (0: the agent must not exist yet)');
  return o;
}

function checkStatus(status: unknown): string {
  if (typeof status !== 'string' || status.length === 0 || status.length > 200) throw new InvalidArgumentError('status must be a non-empty string of at most 200 characters');
  return status;
}

/**
 * Agent records of one namespace. `db.agents` is the default namespace;
 * `db.agents.namespace('team-a')` a view that reads, lists and changes only team-a's.
 */
export class Agents {
  readonly #mem: Memory;
  /** The namespace of this view (`''`: the default one). */
  readonly namespaceName: string;

  /** @internal */
  constructor(mem: Memory, ns = '') {
    this.#mem = mem;
    this.namespaceName = ns;
  }

  /**
   * The declarative projection that keeps the SQL views of agents, sessions and tasks
   * (tables `athanor_agents`, `athanor_agent_events`, `athanor_sessions`, ...) in
   * projection.db: reads catch it up themselves; `rebuild()` replays the log.
   */
  get views(): Processor {
    return this.#mem.processor;
  }

  /**
   * A view of the namespace `name` (namespaces do not nest: called on a view, it gives
   * the sibling namespace). It cannot read, list or change anything of another namespace.
   */
  namespace(name: string): Agents {
    return new Agents(this.#mem, checkNamespace(name));
  }

  #key(id: string): string {
    return recordKey('agent', this.namespaceName, id);
  }

  #read(tx: Tx, id: string): Agent | undefined {
    const v = tx.getOpt(this.#key(id));
    return v === undefined ? undefined : (JSON.parse(v.asJsonText()) as Agent);
  }

  #expect(cur: Agent | undefined, id: string, o: ChangeOptions): void {
    if (o.expectedVersion === undefined) return;
    const have = cur?.version ?? 0;
    if (have !== o.expectedVersion) {
      throw new WrongExpectedVersionError(`agent ${JSON.stringify(id)} is at version ${have}, not the expected ${o.expectedVersion}: nothing was written; read it again and retry`);
    }
  }

  #log(tx: Tx, type: string, id: string, before: Agent | undefined, after: Agent | null, o: ChangeOptions, snapshotId?: string): void {
    const p: AgentEventPayload = { ns: this.namespaceName, id, before: side(before), after, reason: o.reason ?? null, actor: o.actor ?? null, ...(snapshotId !== undefined ? { snapshotId } : {}) };
    tx.log(type, p);
  }

  /** Creates or updates an agent: version + 1, logged as `athanor.agent.saved` in the same commit. Resolves to the agent saved. */
  async save(agent: AgentInput, options?: ChangeOptions): Promise<Agent> {
    if (agent === null || typeof agent !== 'object') throw new InvalidArgumentError('save() takes an object { id, name, status, metadata, data }');
    for (const k of Object.keys(agent)) if (!['id', 'name', 'status', 'metadata', 'data'].includes(k)) throw new InvalidArgumentError(`unknown agent field ${JSON.stringify(k)}; expected id, name, status, metadata, data`);
    const id = checkId(agent.id, 'agent id');
    if (agent.name !== undefined && typeof agent.name !== 'string') throw new InvalidArgumentError('name must be a string');
    if (agent.status !== undefined) checkStatus(agent.status);
    if (agent.metadata !== undefined && (agent.metadata === null || typeof agent.metadata !== 'object' || Array.isArray(agent.metadata))) throw new InvalidArgumentError('metadata must be a JSON object');
    if (agent.metadata !== undefined) checkJson(agent.metadata, 'metadata');
    if (agent.data !== undefined) checkJson(agent.data, 'data');
    const o = checkChange(options);
    const r = await this.#mem.host.transaction().execute((tx) => {
      const cur = this.#read(tx, id);
      this.#expect(cur, id, o);
      if (cur?.deleted === true) throw new PreflightError(this.#key(id), `agent ${JSON.stringify(id)} is deleted: restore() it before saving, or purge() it to start over`);
      const now = Date.now();
      const next: Agent = {
        id,
        name: agent.name ?? cur?.name ?? id,
        status: agent.status ?? cur?.status ?? 'idle',
        metadata: agent.metadata ?? cur?.metadata ?? {},
        data: agent.data !== undefined ? agent.data : (cur?.data ?? null),
        version: (cur?.version ?? 0) + 1,
        deleted: false,
        createdAt: cur?.createdAt ?? now,
        updatedAt: now,
      };
      tx.set(this.#key(id), json(next));
      this.#log(tx, EV.agentSaved, id, cur, next, o);
      return next;
    });
    return r.value;
  }

  async #change(id: string, o: ChangeOptions, type: string, fn: (cur: Agent) => Agent): Promise<Agent> {
    return (
      await this.#mem.host.transaction().execute((tx) => {
        const cur = this.#read(tx, id);
        this.#expect(cur, id, o);
        if (cur === undefined) throw new NotFoundError(`agent ${JSON.stringify(id)} does not exist${this.namespaceName ? ` in namespace ${JSON.stringify(this.namespaceName)}` : ''}`);
        const next = { ...fn(cur), version: cur.version + 1, updatedAt: Date.now() };
        tx.set(this.#key(id), json(next));
        this.#log(tx, type, id, cur, next, o);
        return next;
      })
    ).value;
  }

  /** Sets an agent's status, logged as `athanor.agent.status` with the reason and actor. */
  async setStatus(id: string, status: string, options?: ChangeOptions): Promise<Agent> {
    checkId(id, 'agent id');
    checkStatus(status);
    const o = checkChange(options);
    return this.#change(id, o, EV.agentStatus, (cur) => {
      if (cur.deleted) throw new PreflightError(this.#key(id), `agent ${JSON.stringify(id)} is deleted: restore() it first`);
      return { ...cur, status };
    });
  }

  /** Soft-deletes an agent: hidden from `get` and `list` (unless `includeDeleted`), kept with its history. */
  async delete(id: string, options?: ChangeOptions): Promise<Agent> {
    checkId(id, 'agent id');
    const o = checkChange(options);
    return this.#change(id, o, EV.agentDeleted, (cur) => {
      if (cur.deleted) throw new PreflightError(this.#key(id), `agent ${JSON.stringify(id)} is already deleted`);
      return { ...cur, deleted: true };
    });
  }

  /** Undoes a soft delete. */
  async restore(id: string, options?: ChangeOptions): Promise<Agent> {
    checkId(id, 'agent id');
    const o = checkChange(options);
    return this.#change(id, o, EV.agentRestored, (cur) => {
      if (!cur.deleted) throw new PreflightError(this.#key(id), `agent ${JSON.stringify(id)} is not deleted; nothing to restore`);
      return { ...cur, deleted: false };
    });
  }

  /** Removes an agent and its snapshots from state for good (its history stays in the log, ending with `purged`). */
  async purge(id: string, options?: ChangeOptions): Promise<void> {
    checkId(id, 'agent id');
    const o = checkChange(options);
    await this.#mem.host.transaction().execute((tx) => {
      const cur = this.#read(tx, id);
      this.#expect(cur, id, o);
      if (cur === undefined) throw new NotFoundError(`agent ${JSON.stringify(id)} does not exist${this.namespaceName ? ` in namespace ${JSON.stringify(this.namespaceName)}` : ''}`);
      // Reading the agent's snapshot marker before listing its snapshots (the list reads the
      // newest state, at least this attempt's snapshot): a snapshot committed after this
      // read changes the marker, so this attempt conflicts and runs again, and finds it.
      tx.getOpt(recordKey('snapmark', this.namespaceName, id));
      const snaps = this.#snapshotKeys(id);
      tx.delete(this.#key(id));
      tx.delete(recordKey('snapmark', this.namespaceName, id));
      for (const s of snaps) {
        tx.delete(s.key);
        tx.delete(recordKey('snapid', this.namespaceName, s.snapshotId));
      }
      this.#log(tx, EV.agentPurged, id, cur, null, o);
    });
  }

  /** The agent, or `undefined` when it does not exist or is soft-deleted (unless `includeDeleted`). Synchronous, from state. */
  get(id: string, options: { includeDeleted?: boolean } = {}): Agent | undefined {
    checkId(id, 'agent id');
    const a = readRecord<Agent>(this.#mem.host.getOpt(this.#key(id)));
    if (a === undefined || (a.deleted && options.includeDeleted !== true)) return undefined;
    return a;
  }

  /**
   * A page of agents, read from state (so it sees every acknowledged save at once), in
   * id order, filtered by status, metadata and deletion. `nextCursor` is opaque and
   * stable: it names the last agent examined, so agents saved meanwhile are seen if
   * their ids sort after it.
   */
  list(options: AgentListOptions = {}): AgentPage {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('list() options must be an object');
    for (const k of Object.keys(options)) if (!['status', 'metadata', 'includeDeleted', 'limit', 'cursor'].includes(k)) throw new InvalidArgumentError(`unknown list() option ${JSON.stringify(k)}; expected status, metadata, includeDeleted, limit, cursor`);
    const { status, includeDeleted = false, limit = 100 } = options;
    if (status !== undefined) checkStatus(status);
    const filter = options.metadata === undefined ? undefined : checkFilter(options.metadata);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer from 1 to 10000');
    const prefix = kindPrefix('agent', this.namespaceName);
    let after = options.cursor === undefined ? undefined : decodeCursor(options.cursor, prefix);
    const agents: Agent[] = [];
    for (;;) {
      const page = this.#mem.host.list({ prefix, ...(after !== undefined ? { after } : {}), limit: Math.max(limit, 256) });
      for (const { key, value } of page) {
        after = key;
        const a = JSON.parse(value.asJsonText()) as Agent;
        if (a.deleted && !includeDeleted) continue;
        if (status !== undefined && a.status !== status) continue;
        if (filter !== undefined && !matchesFilter(a.metadata, filter)) continue;
        agents.push(a);
        if (agents.length === limit) return { agents, nextCursor: encodeCursor(key) };
      }
      if (page.length < Math.max(limit, 256)) return { agents };
    }
  }

  /** The agent's history, newest first, read from the log (`before`: only events older than this id). */
  async transitions(id: string, options: { limit?: number; before?: bigint } = {}): Promise<Transition[]> {
    checkId(id, 'agent id');
    const { limit = 100, before } = options;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer from 1 to 10000');
    if (before !== undefined && typeof before !== 'bigint') throw new InvalidArgumentError('before must be a bigint event id');
    await this.#mem.ready();
    const rows = this.#mem.host.sql.all<{ event_id: number | bigint }>(
      'SELECT event_id FROM athanor_agent_events WHERE ns = ? AND agent_id = ? AND event_id < ? ORDER BY event_id DESC LIMIT ?',
      [this.namespaceName, id, before ?? 9223372036854775807n, limit],
    );
    const out: Transition[] = [];
    for (const r of rows) {
      const e = this.#mem.host.event(BigInt(r.event_id));
      if (e === undefined) continue;
      const p = e.payload as AgentEventPayload;
      if (p.ns !== this.namespaceName || p.id !== id) continue;
      out.push({
        eventId: e.id,
        kind: e.type.slice('athanor.agent.'.length),
        at: e.at,
        before: p.before,
        after: p.after === null ? null : side(p.after),
        reason: p.reason,
        actor: p.actor,
        snapshotId: p.snapshotId ?? null,
      });
    }
    return out;
  }

  #snapshotKeys(agentId: string): Array<{ key: string; snapshotId: string; snap: AgentSnapshot }> {
    const prefix = recordKey('snap', this.namespaceName, agentId) + '/';
    const out: Array<{ key: string; snapshotId: string; snap: AgentSnapshot }> = [];
    let after: string | undefined;
    for (;;) {
      const page = this.#mem.host.list({ prefix, ...(after !== undefined ? { after } : {}), limit: 1000 });
      for (const { key, value } of page) {
        const snap = JSON.parse(value.asJsonText()) as AgentSnapshot;
        out.push({ key, snapshotId: snap.snapshotId, snap });
        after = key;
      }
      if (page.length < 1000) return out;
    }
  }

  /** Stores a copy of the agent as it is now (`ttlMs`: it expires after that long), logged as `athanor.agent.snapshot_taken`. */
  async snapshot(id: string, options: { description?: string; ttlMs?: number; actor?: string } = {}): Promise<AgentSnapshot> {
    checkId(id, 'agent id');
    const { description, ttlMs, actor } = options;
    if (description !== undefined && typeof description !== 'string') throw new InvalidArgumentError('description must be a string');
    if (ttlMs !== undefined && (!Number.isSafeInteger(ttlMs) || ttlMs < 1)) throw new InvalidArgumentError('ttlMs must be a positive integer (milliseconds)');
    const snapshotId = randomUUID();
    return (
      await this.#mem.host.transaction().execute((tx) => {
        const cur = this.#read(tx, id);
        if (cur === undefined || cur.deleted) throw new NotFoundError(`agent ${JSON.stringify(id)} does not exist${cur?.deleted ? ' (it is deleted)' : ''}`);
        const now = Date.now();
        const snap: AgentSnapshot = { snapshotId, agentId: id, version: cur.version, description: description ?? null, createdAt: now, expiresAt: ttlMs === undefined ? null : now + ttlMs, agent: cur };
        tx.set(recordKey('snap', this.namespaceName, id, snapshotId), json(snap));
        tx.set(recordKey('snapid', this.namespaceName, snapshotId), json(id));
        tx.set(recordKey('snapmark', this.namespaceName, id), json(snapshotId));
        this.#log(tx, EV.snapshotTaken, id, cur, cur, { ...(actor !== undefined ? { actor } : {}), ...(description !== undefined ? { reason: description } : {}) }, snapshotId);
        return snap;
      })
    ).value;
  }

  /** The agent's snapshots that have not expired at `now` (default: the current time), oldest first. */
  snapshots(id: string, now = Date.now()): AgentSnapshot[] {
    checkId(id, 'agent id');
    return this.#snapshotKeys(id)
      .map((s) => s.snap)
      .filter((s) => s.expiresAt === null || s.expiresAt > now)
      .sort((a, b) => a.createdAt - b.createdAt || (a.snapshotId < b.snapshotId ? -1 : 1));
  }

  /** Puts the agent back as the snapshot holds it (a new version, logged as `athanor.agent.snapshot_restored`). */
  async restoreSnapshot(snapshotId: string, options?: ChangeOptions): Promise<Agent> {
    checkId(snapshotId, 'snapshotId');
    const o = checkChange(options);
    return (
      await this.#mem.host.transaction().execute((tx) => {
        const owner = tx.getOpt(recordKey('snapid', this.namespaceName, snapshotId));
        const agentId = owner === undefined ? undefined : (JSON.parse(owner.asJsonText()) as string);
        const sv = agentId === undefined ? undefined : tx.getOpt(recordKey('snap', this.namespaceName, agentId, snapshotId));
        const snap = sv === undefined ? undefined : (JSON.parse(sv.asJsonText()) as AgentSnapshot);
        if (agentId === undefined || snap === undefined || (snap.expiresAt !== null && snap.expiresAt <= Date.now())) {
          throw new NotFoundError(`snapshot ${JSON.stringify(snapshotId)} does not exist or has expired${this.namespaceName ? ` in namespace ${JSON.stringify(this.namespaceName)}` : ''}`);
        }
        const cur = this.#read(tx, agentId);
        this.#expect(cur, agentId, o);
        const now = Date.now();
        const next: Agent = { ...snap.agent, version: (cur?.version ?? 0) + 1, deleted: false, createdAt: cur?.createdAt ?? snap.agent.createdAt, updatedAt: now };
        tx.set(this.#key(agentId), json(next));
        this.#log(tx, EV.snapshotRestored, agentId, cur, next, o, snapshotId);
        return next;
      })
    ).value;
  }

  /**
   * Deletes every expired snapshot of this namespace from state, each logged as
   * `athanor.agent.snapshot_purged`. Expired snapshots are already invisible (lists skip
   * them, `restoreSnapshot` refuses them); this frees their space. The scheduler does it
   * in the background with {@link scheduleSnapshotPurge}. `now` is the time expiry is
   * judged at (default: the current time). Resolves to the number purged.
   */
  async purgeExpiredSnapshots(now = Date.now()): Promise<number> {
    let purged = 0;
    for (;;) {
      const batch = expiredSnapshots(this.#mem, kindPrefix('snap', this.namespaceName), now, PURGE_BATCH);
      if (batch.length === 0) return purged;
      await this.#mem.host.transaction().execute((tx) => purgeSnapshotsIn(tx, batch));
      purged += batch.length;
      if (batch.length < PURGE_BATCH) return purged;
    }
  }

  /**
   * Registers a task on the scheduler (`db.scheduler`, started by you) that purges the
   * expired snapshots of every namespace every `everyMs` (default 10 minutes), at most
   * 1,000 per run: each run's deletes and `snapshot_purged` events commit with the
   * scheduler's record of the run, so each is done exactly once across processes.
   */
  async scheduleSnapshotPurge(scheduler: PurgeScheduler, options: { everyMs?: number } = {}): Promise<void> {
    const everyMs = options.everyMs ?? 600_000;
    if (!Number.isSafeInteger(everyMs) || everyMs < 1000) throw new InvalidArgumentError('everyMs must be an integer of at least 1000 (milliseconds)');
    await scheduler.register<ExpiredSnapshot[]>(SNAPSHOT_PURGE_TASK, {
      every: everyMs,
      missed: 'runOnce',
      prepare: () => expiredSnapshots(this.#mem, `${AGENTS_PREFIX}snap/`, Date.now(), PURGE_BATCH),
      run: (tx, _run, batch) => purgeSnapshotsIn(tx, batch),
    });
  }
}

/** The scheduler task that purges expired snapshots. */
export const SNAPSHOT_PURGE_TASK = 'athanor.agents.snapshot-purge';

/** What {@link Agents.scheduleSnapshotPurge} needs of `db.scheduler`. */
export interface PurgeScheduler {
  /** Registers a task (see `Scheduler.register`). */
  register<P>(name: string, options: { every: number; missed: 'runOnce'; prepare: () => P; run: (tx: Tx, run: unknown, prepared: P) => void }): Promise<unknown>;
}

const PURGE_BATCH = 1000;

/** An expired snapshot found by a scan: where it is, and which it is. */
interface ExpiredSnapshot {
  ns: string;
  agentId: string;
  snapshotId: string;
}

/** Expired snapshots under `prefix` (one namespace's, or all), at most `limit`. */
function expiredSnapshots(mem: Memory, prefix: string, now: number, limit: number): ExpiredSnapshot[] {
  const out: ExpiredSnapshot[] = [];
  let after: string | undefined;
  for (;;) {
    const page = mem.host.list({ prefix, ...(after !== undefined ? { after } : {}), limit: 1000 });
    for (const { key, value } of page) {
      after = key;
      const s = JSON.parse(value.asJsonText()) as AgentSnapshot;
      if (s.expiresAt === null || s.expiresAt > now) continue;
      // The namespace is the escaped component after `snap/`.
      const ns = decodeURIComponent(key.slice(`${AGENTS_PREFIX}snap/`.length).split('/')[0]!);
      out.push({ ns, agentId: s.agentId, snapshotId: s.snapshotId });
      if (out.length === limit) return out;
    }
    if (page.length < 1000) return out;
  }
}

/** Deletes the snapshots still there, each with its `snapshot_purged` event, in `tx`. */
function purgeSnapshotsIn(tx: Tx, batch: readonly ExpiredSnapshot[]): void {
  for (const s of batch) {
    const k = recordKey('snap', s.ns, s.agentId, s.snapshotId);
    if (!tx.exists(k)) continue;
    tx.delete(k);
    tx.delete(recordKey('snapid', s.ns, s.snapshotId));
    const p: AgentEventPayload = { ns: s.ns, id: s.agentId, before: null, after: null, reason: 'expired', actor: null, snapshotId: s.snapshotId };
    tx.log(EV.snapshotExpired, p);
  }
}
