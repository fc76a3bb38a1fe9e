/**
 * The SQL views of agent memory in projection.db and the declarative projection that
 * keeps them: every row is derived from athanor's own `athanor.agent.*`,
 * `athanor.session.*` and `athanor.task.*` events, applied natively exactly once
 * (the cursor moves in the same SQLite transaction), and dropped and replayed by
 * `rebuild()`. The tables carry the namespace as a column; every read names it.
 * @internal
 */
import type { DeclarativeSpec, ParamSource, SqlAction } from '../processing/declarative.js';

/** The event types agent memory logs. @internal */
export const EV = {
  agentSaved: 'athanor.agent.saved',
  agentStatus: 'athanor.agent.status',
  agentDeleted: 'athanor.agent.deleted',
  agentRestored: 'athanor.agent.restored',
  agentPurged: 'athanor.agent.purged',
  snapshotTaken: 'athanor.agent.snapshot_taken',
  snapshotRestored: 'athanor.agent.snapshot_restored',
  snapshotExpired: 'athanor.agent.snapshot_purged',
  sessionStarted: 'athanor.session.started',
  sessionEnded: 'athanor.session.ended',
  sessionEvent: 'athanor.session.event',
  taskCreated: 'athanor.task.created',
  taskAssigned: 'athanor.task.assigned',
  taskStatus: 'athanor.task.status',
} as const;

/** The name of the processor keeping the agent tables. @internal */
export const MEMORY_PROJECTION = 'athanor.agent-memory';

/** Tables of the agent views (created if missing before the projection first runs). @internal */
export const MEMORY_SCHEMA = `
CREATE TABLE IF NOT EXISTS athanor_agents (
  ns TEXT NOT NULL, id TEXT NOT NULL, name TEXT, status TEXT, metadata TEXT, data TEXT,
  version INTEGER NOT NULL, deleted INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS athanor_agents_status ON athanor_agents (ns, status, id);
CREATE TABLE IF NOT EXISTS athanor_agent_events (
  event_id INTEGER PRIMARY KEY, ns TEXT NOT NULL, agent_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS athanor_agent_events_agent ON athanor_agent_events (ns, agent_id, event_id);
CREATE TABLE IF NOT EXISTS athanor_sessions (
  ns TEXT NOT NULL, id TEXT NOT NULL, agent_id TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT,
  started_at INTEGER NOT NULL, ended_at INTEGER, PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS athanor_sessions_agent ON athanor_sessions (ns, agent_id, id);
CREATE TABLE IF NOT EXISTS athanor_session_events (
  event_id INTEGER PRIMARY KEY, ns TEXT NOT NULL, session_id TEXT NOT NULL,
  actor_type TEXT, actor_id TEXT, content TEXT, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS athanor_session_events_session ON athanor_session_events (ns, session_id, event_id);
CREATE TABLE IF NOT EXISTS athanor_tasks (
  ns TEXT NOT NULL, id TEXT NOT NULL, title TEXT, status TEXT NOT NULL, assigned_to TEXT,
  depends_on TEXT, metadata TEXT, version INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS athanor_tasks_assignee ON athanor_tasks (ns, assigned_to, status, id);
CREATE TABLE IF NOT EXISTS athanor_task_events (
  event_id INTEGER PRIMARY KEY, ns TEXT NOT NULL, task_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS athanor_task_events_task ON athanor_task_events (ns, task_id, event_id);
`;

/** What `rebuild()` drops before replaying the log. @internal */
export const MEMORY_RESET = `
DELETE FROM athanor_agents; DELETE FROM athanor_agent_events; DELETE FROM athanor_sessions;
DELETE FROM athanor_session_events; DELETE FROM athanor_tasks; DELETE FROM athanor_task_events;
`;

const agentRow: SqlAction = {
  sql: 'INSERT OR REPLACE INTO athanor_agents (ns, id, name, status, metadata, data, version, deleted, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  params: ['$.ns', '$.id', '$.after.name', '$.after.status', '$.after.metadata', '$.after.data', '$.after.version', '$.after.deleted', '@at'],
};
const agentIndex: SqlAction = { sql: 'INSERT INTO athanor_agent_events (event_id, ns, agent_id) VALUES (?, ?, ?)', params: ['@id', '$.ns', '$.id'] };
const taskRow: SqlAction = {
  sql: 'INSERT OR REPLACE INTO athanor_tasks (ns, id, title, status, assigned_to, depends_on, metadata, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  params: ['$.ns', '$.id', '$.after.title', '$.after.status', '$.after.assignedTo', '$.after.dependsOn', '$.after.metadata', '$.after.version', '@at'],
};
const taskIndex: SqlAction = { sql: 'INSERT INTO athanor_task_events (event_id, ns, task_id) VALUES (?, ?, ?)', params: ['@id', '$.ns', '$.id'] };

/** The declarative projection of the agent views. @internal */
export function memorySpec(): DeclarativeSpec {
  const on: Record<string, SqlAction[]> = {
    [EV.agentPurged]: [{ sql: 'DELETE FROM athanor_agents WHERE ns = ? AND id = ?', params: ['$.ns', '$.id'] }, agentIndex],
    [EV.snapshotTaken]: [agentIndex],
    [EV.snapshotExpired]: [agentIndex],
    [EV.sessionStarted]: [
      {
        sql: 'INSERT OR REPLACE INTO athanor_sessions (ns, id, agent_id, status, metadata, started_at, ended_at) VALUES (?, ?, ?, \'active\', ?, ?, NULL)',
        params: ['$.ns', '$.id', '$.agentId', '$.metadata', '@at'],
      },
    ],
    [EV.sessionEnded]: [{ sql: 'UPDATE athanor_sessions SET status = \'ended\', ended_at = ? WHERE ns = ? AND id = ?', params: ['@at', '$.ns', '$.id'] }],
    [EV.sessionEvent]: [
      {
        sql: 'INSERT INTO athanor_session_events (event_id, ns, session_id, actor_type, actor_id, content, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        params: ['@id', '$.ns', '$.sessionId', '$.actorType', '$.actorId', '$.content', '@at'],
      },
    ],
  };
  for (const t of [EV.agentSaved, EV.agentStatus, EV.agentDeleted, EV.agentRestored, EV.snapshotRestored]) on[t] = [agentRow, agentIndex];
  for (const t of [EV.taskCreated, EV.taskAssigned, EV.taskStatus]) on[t] = [taskRow, taskIndex];
  return { name: MEMORY_PROJECTION, on, reset: MEMORY_RESET, allowPendingMigrations: true, batchSize: 2000 };
}

/** The name of the processor keeping the full-text index. @internal */
export const FULLTEXT_PROJECTION = 'athanor.fulltext';

/**
 * The first character of a session tag: a private-use code point, which `unicode61`
 * keeps in a token (category Co) and which no query word contains (a query that does is
 * confined to `body`), so a tag token matches only the tag query athanor writes.
 * @internal
 */
export const TAG_MARK = '\uE000';

/**
 * The full-text tables: the FTS5 index (rowid = event id) and the newest row of each
 * document. `body` is the one column user queries search, so a query runs unconfined, as
 * on a plain one-column FTS5 table (no column filter to evaluate per match, BM25's default
 * weights). `tags` holds a session event's session as one exact token
 * ({@link TAG_MARK} + the hex of the id's UTF-8): a search in one session adds
 * `AND tags : "<tag>"`, so FTS5 ranks only that session's matches. The other attributes
 * are UNINDEXED columns, checked by the statement's WHERE on hits in rank order.
 * @internal
 */
export const FULLTEXT_SCHEMA = `
CREATE VIRTUAL TABLE IF NOT EXISTS athanor_fts USING fts5(
  body, tags, ns UNINDEXED, type UNINDEXED, session_id UNINDEXED, doc_id UNINDEXED, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3');
CREATE TABLE IF NOT EXISTS athanor_fts_docs (ns TEXT NOT NULL, doc_id TEXT NOT NULL, event_id INTEGER NOT NULL, PRIMARY KEY (ns, doc_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS athanor_fulltext_spec (id INTEGER PRIMARY KEY CHECK (id = 1), spec TEXT NOT NULL);
`;

/**
 * Whether an existing `athanor_fts` has the columns of {@link FULLTEXT_SCHEMA} (a store
 * indexed by an older athanor has session ids as an indexed column and no `tags`).
 * @internal
 */
export function isCurrentFullTextTable(createSql: string): boolean {
  return /\btags\b/.test(createSql);
}

/** Drops an index of an older layout: the tables are created again and rebuilt from the log. @internal */
export const FULLTEXT_DROP_OLD = 'DROP TABLE IF EXISTS athanor_fts; DROP TABLE IF EXISTS athanor_fulltext_spec;';

/** What the full-text projection's `rebuild()` drops. @internal */
export const FULLTEXT_RESET = "DELETE FROM athanor_fts; DELETE FROM athanor_fts_docs;";

/** One event type's rule in the full-text index, as compiled. @internal */
export interface CompiledTextRule {
  fields: readonly string[];
  namespace?: string;
  sessionId?: string;
  id?: string;
  delete?: boolean;
}

function src(path: string | undefined, fallback: ParamSource): ParamSource {
  return path === undefined ? fallback : (path as ParamSource);
}

/** The declarative projection of the full-text index for these rules. @internal */
export function fullTextSpec(rules: ReadonlyMap<string, CompiledTextRule>): DeclarativeSpec {
  const on: Record<string, SqlAction[]> = {};
  for (const [type, r] of rules) {
    const ns = src(r.namespace, { value: '' });
    const actions: SqlAction[] = [];
    if (r.id !== undefined) {
      // A document's newer event replaces its older row, so a document is found once, by its newest text.
      actions.push({ sql: 'DELETE FROM athanor_fts WHERE rowid = (SELECT event_id FROM athanor_fts_docs WHERE ns = ? AND doc_id = ?)', params: [ns, src(r.id, { value: null })] });
      actions.push({ sql: 'DELETE FROM athanor_fts_docs WHERE ns = ? AND doc_id = ?', params: [ns, src(r.id, { value: null })] });
    }
    if (r.delete !== true) {
      const holes = r.fields.map(() => '?').join(', ');
      actions.push({
        // The tag is TAG_MARK (char 57344) + hex of the session id's UTF-8; none without a session.
        sql: `INSERT INTO athanor_fts (rowid, body, tags, ns, type, session_id, doc_id) VALUES (?, concat_ws(char(10), ${holes}), char(57344) || nullif(hex(?), ''), ?, ?, ?, ?)`,
        params: ['@id', ...r.fields.map((f) => f as ParamSource), src(r.sessionId, { value: null }), ns, '@type', src(r.sessionId, { value: null }), src(r.id, { value: null })],
      });
      if (r.id !== undefined) actions.push({ sql: 'INSERT INTO athanor_fts_docs (ns, doc_id, event_id) VALUES (?, ?, ?)', params: [ns, src(r.id, { value: null }), '@id'] });
    }
    on[type] = actions;
  }
  // A user event the rules cannot index (a document rule's id missing) is set aside, not a stop of search.
  return { name: FULLTEXT_PROJECTION, on, reset: FULLTEXT_RESET, allowPendingMigrations: true, batchSize: 5000, onError: 'deadLetter' };
}
