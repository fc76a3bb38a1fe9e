/**
 * `db.sessions` and `db.tasks`: an agent's sessions and their events, and tasks with
 * assignment, status history and dependencies. The current record of each lives in
 * state (reserved keys), each change is an `athanor.session.*` / `athanor.task.*`
 * event in the same commit, and the lists and histories are read from the
 * projection's tables.
 */
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError, NotFoundError, PreflightError, WrongExpectedVersionError } from '../errors.js';
import { json, type Json } from '../state/codec.js';
import { readRecord, type Memory } from './host.js';
import { checkId, checkJson, checkNamespace, recordKey } from './keys.js';
import { EV } from './schema.js';

/** A session of an agent. */
export interface Session {
  /** Its id. */
  id: string;
  /** The agent it belongs to. */
  agentId: string;
  /** `'active'` until `end()`. */
  status: 'active' | 'ended';
  /** Metadata given at start. */
  metadata: { [key: string]: Json };
  /** Start time (ms since the epoch). */
  startedAt: number;
  /** End time, or null while active. */
  endedAt: number | null;
}

/** One event of a session (a message, a tool call, an observation). */
export interface SessionEvent {
  /** The event's id in the log. */
  eventId: bigint;
  /** The session. */
  sessionId: string;
  /** Who: `'user'`, `'agent'`, `'tool'`, `'system'`... */
  actorType: string;
  /** Which one. */
  actorId: string | null;
  /** The content: text or JSON (indexed by full-text search when text). */
  content: Json;
  /** Commit time (ms since the epoch). */
  at: number;
}

function nsText(ns: string): string {
  return ns ? ` in namespace ${JSON.stringify(ns)}` : '';
}

function checkMeta(m: unknown): { [key: string]: Json } {
  if (m === undefined) return {};
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new InvalidArgumentError('metadata must be a JSON object');
  checkJson(m, 'metadata');
  return m as { [key: string]: Json };
}

/** Sessions of one namespace (`db.sessions`, or `.namespace(name)`). */
export class Sessions {
  readonly #mem: Memory;
  /** The namespace of this view (`''`: the default one). */
  readonly namespaceName: string;

  /** @internal */
  constructor(mem: Memory, ns = '') {
    this.#mem = mem;
    this.namespaceName = ns;
  }

  /** A view of another namespace. */
  namespace(name: string): Sessions {
    return new Sessions(this.#mem, checkNamespace(name));
  }

  /** Starts a session of `agentId` (id generated unless given). */
  async start(agentId: string, metadata?: { [key: string]: Json }, options: { id?: string } = {}): Promise<Session> {
    checkId(agentId, 'agent id');
    const meta = checkMeta(metadata);
    const id = options.id === undefined ? randomUUID() : checkId(options.id, 'session id');
    const key = recordKey('session', this.namespaceName, id);
    return (
      await this.#mem.host.transaction().execute((tx) => {
        if (tx.exists(key)) throw new PreflightError(key, `session ${JSON.stringify(id)} already exists${nsText(this.namespaceName)}`);
        const s: Session = { id, agentId, status: 'active', metadata: meta, startedAt: Date.now(), endedAt: null };
        tx.set(key, json(s));
        tx.log(EV.sessionStarted, { ns: this.namespaceName, ...s });
        return s;
      })
    ).value;
  }

  /** Ends an active session. */
  async end(id: string): Promise<Session> {
    checkId(id, 'session id');
    const key = recordKey('session', this.namespaceName, id);
    return (
      await this.#mem.host.transaction().execute((tx) => {
        const s = readRecord<Session>(tx.getOpt(key));
        if (s === undefined) throw new NotFoundError(`session ${JSON.stringify(id)} does not exist${nsText(this.namespaceName)}`);
        if (s.status === 'ended') throw new PreflightError(key, `session ${JSON.stringify(id)} has already ended`);
        const next: Session = { ...s, status: 'ended', endedAt: Date.now() };
        tx.set(key, json(next));
        tx.log(EV.sessionEnded, { ns: this.namespaceName, id });
        return next;
      })
    ).value;
  }

  /** The session, or undefined. Synchronous, from state. */
  get(id: string): Session | undefined {
    checkId(id, 'session id');
    return readRecord<Session>(this.#mem.host.getOpt(recordKey('session', this.namespaceName, id)));
  }

  /** Sessions of this namespace (optionally of one agent, or one status), by id. */
  async list(options: { agentId?: string; status?: 'active' | 'ended'; limit?: number } = {}): Promise<Session[]> {
    const { agentId, status, limit = 100 } = options;
    if (agentId !== undefined) checkId(agentId, 'agent id');
    if (status !== undefined && status !== 'active' && status !== 'ended') throw new InvalidArgumentError("status must be 'active' or 'ended'");
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer from 1 to 10000');
    await this.#mem.ready();
    const rows = this.#mem.host.sql.all<{ id: string; agent_id: string; status: 'active' | 'ended'; metadata: string | null; started_at: number; ended_at: number | null }>(
      `SELECT id, agent_id, status, metadata, started_at, ended_at FROM athanor_sessions WHERE ns = ?${agentId !== undefined ? ' AND agent_id = ?' : ''}${status !== undefined ? ' AND status = ?' : ''} ORDER BY id LIMIT ?`,
      [this.namespaceName, ...(agentId !== undefined ? [agentId] : []), ...(status !== undefined ? [status] : []), limit],
    );
    return rows.map((r) => ({ id: r.id, agentId: r.agent_id, status: r.status, metadata: r.metadata === null ? {} : (JSON.parse(r.metadata) as { [key: string]: Json }), startedAt: Number(r.started_at), endedAt: r.ended_at === null ? null : Number(r.ended_at) }));
  }

  /** Appends an event to an active session (logged as `athanor.session.event`; full-text search indexes its content). */
  async append(sessionId: string, event: { actorType: string; actorId?: string; content: Json }): Promise<bigint> {
    checkId(sessionId, 'session id');
    if (event === null || typeof event !== 'object') throw new InvalidArgumentError('a session event is an object { actorType, actorId, content }');
    if (typeof event.actorType !== 'string' || event.actorType.length === 0) throw new InvalidArgumentError('actorType must be a non-empty string');
    if (event.actorId !== undefined && typeof event.actorId !== 'string') throw new InvalidArgumentError('actorId must be a string');
    if (event.content === undefined) throw new InvalidArgumentError('content is required (text or JSON)');
    checkJson(event.content, 'content');
    const key = recordKey('session', this.namespaceName, sessionId);
    const r = await this.#mem.host.transaction().execute((tx) => {
      const s = readRecord<Session>(tx.getOpt(key));
      if (s === undefined) throw new NotFoundError(`session ${JSON.stringify(sessionId)} does not exist${nsText(this.namespaceName)}`);
      if (s.status !== 'active') throw new PreflightError(key, `session ${JSON.stringify(sessionId)} has ended; start a new one`);
      tx.log(EV.sessionEvent, { ns: this.namespaceName, sessionId, agentId: s.agentId, actorType: event.actorType, actorId: event.actorId ?? null, content: event.content });
    });
    return r.firstEventId!;
  }

  /** A session's events, oldest first. */
  async events(sessionId: string, options: { limit?: number; after?: bigint } = {}): Promise<SessionEvent[]> {
    checkId(sessionId, 'session id');
    const { limit = 1000, after = 0n } = options;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new InvalidArgumentError('limit must be an integer from 1 to 100000');
    await this.#mem.ready();
    const rows = this.#mem.host.sql.all<{ event_id: number; actor_type: string; actor_id: string | null; content: string | null; at: number }>(
      'SELECT event_id, actor_type, actor_id, content, at FROM athanor_session_events WHERE ns = ? AND session_id = ? AND event_id > ? ORDER BY event_id LIMIT ?',
      [this.namespaceName, sessionId, after, limit],
    );
    return rows.map((r) => {
      const e = this.#mem.host.event(BigInt(r.event_id));
      const content = (e?.payload as { content?: Json } | undefined)?.content ?? r.content;
      return { eventId: BigInt(r.event_id), sessionId, actorType: r.actor_type, actorId: r.actor_id, content, at: Number(r.at) };
    });
  }
}

/** A task. */
export interface Task {
  /** Its id. */
  id: string;
  /** Title. */
  title: string;
  /** Free-text status (`'pending'` at creation). */
  status: string;
  /** Who it is assigned to, or null. */
  assignedTo: string | null;
  /** Tasks that must be `'done'` before this one can be. */
  dependsOn: string[];
  /** Metadata. */
  metadata: { [key: string]: Json };
  /** Incremented by every change. */
  version: number;
  /** Creation time (ms since the epoch). */
  createdAt: number;
  /** Last change (ms since the epoch). */
  updatedAt: number;
}

/** The part of a task a change records. */
export interface TaskSide {
  /** Status. */
  status: string;
  /** Assignee, or null. */
  assignedTo: string | null;
}

/** One change of a task, from the log. */
export interface TaskChange {
  /** The event. */
  eventId: bigint;
  /** `created`, `assigned` or `status`. */
  kind: string;
  /** Commit time. */
  at: number;
  /** Status and assignee before (null at creation). */
  before: TaskSide | null;
  /** Status and assignee after. */
  after: TaskSide;
  /** The reason given. */
  reason: string | null;
  /** The actor given. */
  actor: string | null;
}

/** Tasks of one namespace (`db.tasks`, or `.namespace(name)`). */
export class Tasks {
  readonly #mem: Memory;
  /** The namespace of this view (`''`: the default one). */
  readonly namespaceName: string;

  /** @internal */
  constructor(mem: Memory, ns = '') {
    this.#mem = mem;
    this.namespaceName = ns;
  }

  /** A view of another namespace. */
  namespace(name: string): Tasks {
    return new Tasks(this.#mem, checkNamespace(name));
  }

  #key(id: string): string {
    return recordKey('task', this.namespaceName, id);
  }

  /** Creates a task (status `'pending'`); every task in `dependsOn` must exist in this namespace. */
  async create(task: { id?: string; title: string; assignedTo?: string; dependsOn?: string[]; metadata?: { [key: string]: Json } }, options: { actor?: string } = {}): Promise<Task> {
    if (task === null || typeof task !== 'object') throw new InvalidArgumentError('create() takes { id, title, assignedTo, dependsOn, metadata }');
    const id = task.id === undefined ? randomUUID() : checkId(task.id, 'task id');
    if (typeof task.title !== 'string') throw new InvalidArgumentError('title must be a string');
    if (task.assignedTo !== undefined) checkId(task.assignedTo, 'assignedTo');
    const deps = task.dependsOn ?? [];
    if (!Array.isArray(deps)) throw new InvalidArgumentError('dependsOn must be an array of task ids');
    for (const d of deps) checkId(d, 'a dependency id');
    const meta = checkMeta(task.metadata);
    return (
      await this.#mem.host.transaction().execute((tx) => {
        if (tx.exists(this.#key(id))) throw new PreflightError(this.#key(id), `task ${JSON.stringify(id)} already exists${nsText(this.namespaceName)}`);
        for (const d of deps) if (!tx.exists(this.#key(d))) throw new NotFoundError(`task ${JSON.stringify(id)} depends on ${JSON.stringify(d)}, which does not exist${nsText(this.namespaceName)}`);
        const now = Date.now();
        const t: Task = { id, title: task.title, status: 'pending', assignedTo: task.assignedTo ?? null, dependsOn: [...deps], metadata: meta, version: 1, createdAt: now, updatedAt: now };
        tx.set(this.#key(id), json(t));
        tx.log(EV.taskCreated, { ns: this.namespaceName, id, before: null, after: t, reason: null, actor: options.actor ?? null });
        return t;
      })
    ).value;
  }

  async #change(id: string, type: string, o: { reason?: string; actor?: string; expectedVersion?: number }, fn: (t: Task, tx: { exists(k: string): boolean; getOpt: (k: string) => unknown }) => Task): Promise<Task> {
    return (
      await this.#mem.host.transaction().execute((tx) => {
        const t = readRecord<Task>(tx.getOpt(this.#key(id)));
        if (t === undefined) throw new NotFoundError(`task ${JSON.stringify(id)} does not exist${nsText(this.namespaceName)}`);
        if (o.expectedVersion !== undefined && o.expectedVersion !== t.version) throw new WrongExpectedVersionError(`task ${JSON.stringify(id)} is at version ${t.version}, not the expected ${o.expectedVersion}: nothing was written`);
        const next = { ...fn(t, tx), version: t.version + 1, updatedAt: Date.now() };
        tx.set(this.#key(id), json(next));
        tx.log(type, { ns: this.namespaceName, id, before: { status: t.status, assignedTo: t.assignedTo }, after: next, reason: o.reason ?? null, actor: o.actor ?? null });
        return next;
      })
    ).value;
  }

  /** Assigns the task (null: unassigns). */
  async assign(id: string, assignee: string | null, options: { reason?: string; actor?: string; expectedVersion?: number } = {}): Promise<Task> {
    checkId(id, 'task id');
    if (assignee !== null) checkId(assignee, 'assignee');
    return this.#change(id, EV.taskAssigned, options, (t) => ({ ...t, assignedTo: assignee }));
  }

  /** Changes the task's status; `'done'` is refused (`ERR_PREFLIGHT`) while a dependency is not done. */
  async setStatus(id: string, status: string, options: { reason?: string; actor?: string; expectedVersion?: number } = {}): Promise<Task> {
    checkId(id, 'task id');
    if (typeof status !== 'string' || status.length === 0 || status.length > 200) throw new InvalidArgumentError('status must be a non-empty string of at most 200 characters');
    return this.#change(id, EV.taskStatus, options, (t, tx) => {
      if (status === 'done') {
        for (const d of t.dependsOn) {
          const dep = readRecord<Task>(tx.getOpt(this.#key(d)) as never);
          if (dep?.status !== 'done') throw new PreflightError(this.#key(d), `task ${JSON.stringify(id)} cannot be done before its dependency ${JSON.stringify(d)} (status ${JSON.stringify(dep?.status ?? 'missing')})`);
        }
      }
      return { ...t, status };
    });
  }

  /** The task, or undefined. Synchronous, from state. */
  get(id: string): Task | undefined {
    checkId(id, 'task id');
    return readRecord<Task>(this.#mem.host.getOpt(this.#key(id)));
  }

  /** Tasks of this namespace, by id, optionally of one assignee and/or status. */
  async list(options: { assignedTo?: string; status?: string; limit?: number } = {}): Promise<Task[]> {
    const { assignedTo, status, limit = 100 } = options;
    if (assignedTo !== undefined) checkId(assignedTo, 'assignedTo');
    if (status !== undefined && typeof status !== 'string') throw new InvalidArgumentError('status must be a string');
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer from 1 to 10000');
    await this.#mem.ready();
    const rows = this.#mem.host.sql.all<{ id: string }>(
      `SELECT id FROM athanor_tasks WHERE ns = ?${assignedTo !== undefined ? ' AND assigned_to = ?' : ''}${status !== undefined ? ' AND status = ?' : ''} ORDER BY id LIMIT ?`,
      [this.namespaceName, ...(assignedTo !== undefined ? [assignedTo] : []), ...(status !== undefined ? [status] : []), limit],
    );
    return rows.map((r) => this.get(r.id)).filter((t): t is Task => t !== undefined);
  }

  /** The task's changes, oldest first, from the log. */
  async history(id: string): Promise<TaskChange[]> {
    checkId(id, 'task id');
    await this.#mem.ready();
    const rows = this.#mem.host.sql.all<{ event_id: number }>('SELECT event_id FROM athanor_task_events WHERE ns = ? AND task_id = ? ORDER BY event_id', [this.namespaceName, id]);
    const out: TaskChange[] = [];
    for (const r of rows) {
      const e = this.#mem.host.event(BigInt(r.event_id));
      if (e === undefined) continue;
      const p = e.payload as { before: TaskChange['before']; after: Task; reason: string | null; actor: string | null };
      out.push({ eventId: e.id, kind: e.type.slice('athanor.task.'.length), at: e.at, before: p.before, after: { status: p.after.status, assignedTo: p.after.assignedTo }, reason: p.reason, actor: p.actor });
    }
    return out;
  }
}
