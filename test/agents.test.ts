/**
 * Agent memory (ts/agents/): agents with history and snapshots against an in-memory
 * model (before and after a rebuild), kill -9 during a burst of saves, sessions and
 * tasks, full-text search (ranking, snippets, prefix, phrase, syntax errors), hybrid
 * search on the real test model, and namespace isolation against crafted names.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Athanor, Embedder, InvalidArgumentError, NotFoundError, PreflightError, WrongExpectedVersionError, type Agent, type AgentSide } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectRejects, expectThrows, killAfterReady } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

type Op =
  | { kind: 'save'; id: string; status?: string; team?: string; data?: number; expectedVersion?: number }
  | { kind: 'status'; id: string; status: string; reason: string; expectedVersion?: number }
  | { kind: 'delete' | 'restore' | 'purge'; id: string; expectedVersion?: number };

interface ModelAgent {
  name: string;
  status: string;
  metadata: { team?: string };
  data: unknown;
  version: number;
  deleted: boolean;
}
interface ModelTransition {
  kind: string;
  before: AgentSide | null;
  after: AgentSide | null;
  reason: string | null;
}

const IDS = ['a', 'b', 'c', 'd/e', 'x%2F'];
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('save' as const), id: fc.constantFrom(...IDS), status: fc.option(fc.constantFrom('idle', 'busy'), { nil: undefined }), team: fc.option(fc.constantFrom('red', 'blue'), { nil: undefined }), data: fc.option(fc.integer({ min: 0, max: 9 }), { nil: undefined }), expectedVersion: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }) }, { requiredKeys: ['kind', 'id'] }),
  fc.record({ kind: fc.constant('status' as const), id: fc.constantFrom(...IDS), status: fc.constantFrom('idle', 'busy', 'done'), reason: fc.constantFrom('r1', 'r2'), expectedVersion: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }) }, { requiredKeys: ['kind', 'id', 'status', 'reason'] }),
  fc.record({ kind: fc.constantFrom('delete' as const, 'restore' as const, 'purge' as const), id: fc.constantFrom(...IDS), expectedVersion: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }) }, { requiredKeys: ['kind', 'id'] }),
);

const sideOf = (a: ModelAgent | undefined): AgentSide | null => (a === undefined ? null : { status: a.status, version: a.version, deleted: a.deleted });

/** Applies `op` to the model; returns the error code the database must give, or null. */
function applyModel(agents: Map<string, ModelAgent>, history: Map<string, ModelTransition[]>, op: Op): string | null {
  const cur = agents.get(op.id);
  if (op.expectedVersion !== undefined && (cur?.version ?? 0) !== op.expectedVersion) return 'ERR_WRONG_EXPECTED_VERSION';
  const push = (kind: string, before: ModelAgent | undefined, after: ModelAgent | undefined, reason: string | null = null) => {
    history.set(op.id, [...(history.get(op.id) ?? []), { kind, before: sideOf(before), after: sideOf(after), reason }]);
  };
  if (op.kind === 'save') {
    if (cur?.deleted) return 'ERR_PREFLIGHT';
    const next: ModelAgent = {
      name: cur?.name ?? op.id,
      status: op.status ?? cur?.status ?? 'idle',
      metadata: op.team !== undefined ? { team: op.team } : (cur?.metadata ?? {}),
      data: op.data !== undefined ? op.data : (cur?.data ?? null),
      version: (cur?.version ?? 0) + 1,
      deleted: false,
    };
    agents.set(op.id, next);
    push('saved', cur, next);
    return null;
  }
  if (cur === undefined) return 'ERR_NOT_FOUND';
  if (op.kind === 'purge') {
    agents.delete(op.id);
    push('purged', cur, undefined);
    return null;
  }
  if (op.kind === 'status' && cur.deleted) return 'ERR_PREFLIGHT';
  if (op.kind === 'delete' && cur.deleted) return 'ERR_PREFLIGHT';
  if (op.kind === 'restore' && !cur.deleted) return 'ERR_PREFLIGHT';
  const next: ModelAgent = { ...cur, version: cur.version + 1, ...(op.kind === 'status' ? { status: op.status } : {}), ...(op.kind === 'delete' ? { deleted: true } : {}), ...(op.kind === 'restore' ? { deleted: false } : {}) };
  agents.set(op.id, next);
  push(op.kind === 'status' ? 'status' : op.kind === 'delete' ? 'deleted' : 'restored', cur, next, op.kind === 'status' ? op.reason : null);
  return null;
}

async function applyDb(db: Athanor, op: Op): Promise<string | null> {
  const ev = op.expectedVersion !== undefined ? { expectedVersion: op.expectedVersion } : {};
  try {
    if (op.kind === 'save') {
      await db.agents.save({ id: op.id, ...(op.status !== undefined ? { status: op.status } : {}), ...(op.team !== undefined ? { metadata: { team: op.team } } : {}), ...(op.data !== undefined ? { data: op.data } : {}) }, ev);
    } else if (op.kind === 'status') await db.agents.setStatus(op.id, op.status, { reason: op.reason, ...ev });
    else if (op.kind === 'delete') await db.agents.delete(op.id, ev);
    else if (op.kind === 'restore') await db.agents.restore(op.id, ev);
    else await db.agents.purge(op.id, ev);
    return null;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

const strip = (a: Agent | undefined) => (a === undefined ? undefined : { name: a.name, status: a.status, metadata: a.metadata, data: a.data, version: a.version, deleted: a.deleted });

/** Every id of a list, read page by page with `limit` and the opaque cursor. */
function pagedIds(db: Athanor, o: Parameters<Athanor['agents']['list']>[0], limit: number): string[] {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = db.agents.list({ ...o, limit, ...(cursor !== undefined ? { cursor } : {}) });
    ids.push(...page.agents.map((a) => a.id));
    if (page.nextCursor === undefined) return ids;
    cursor = page.nextCursor;
  }
}

async function compare(db: Athanor, agents: Map<string, ModelAgent>, history: Map<string, ModelTransition[]>): Promise<void> {
  for (const id of IDS) {
    expect(strip(db.agents.get(id, { includeDeleted: true }))).toEqual(agents.get(id));
    expect(db.agents.get(id) === undefined).toBe(agents.get(id) === undefined || agents.get(id)!.deleted);
    const ts = await db.agents.transitions(id, { limit: 1000 });
    expect(ts.map((t) => ({ kind: t.kind, before: t.before, after: t.after, reason: t.reason })).reverse()).toEqual(history.get(id) ?? []);
    // Paging transitions with `before` gives the same history.
    if (ts.length > 1) {
      const older = await db.agents.transitions(id, { limit: 1000, before: ts[0]!.eventId });
      expect(older.map((t) => t.eventId)).toEqual(ts.slice(1).map((t) => t.eventId));
    }
  }
  const live = [...agents].filter(([, a]) => !a.deleted);
  const sortIds = (ids: string[]) => ids.sort((x, y) => (encodeURIComponent(x) < encodeURIComponent(y) ? -1 : 1));
  expect(pagedIds(db, {}, 2)).toEqual(sortIds(live.map(([id]) => id)));
  expect(pagedIds(db, { includeDeleted: true }, 1)).toEqual(sortIds([...agents.keys()]));
  expect(pagedIds(db, { status: 'busy' }, 3)).toEqual(sortIds(live.filter(([, a]) => a.status === 'busy').map(([id]) => id)));
  expect(pagedIds(db, { metadata: { team: 'red' } }, 2)).toEqual(sortIds(live.filter(([, a]) => a.metadata.team === 'red').map(([id]) => id)));
  // The SQL view agrees with state.
  const rows = db.sql.all<{ id: string; status: string; version: number; deleted: number }>("SELECT id, status, version, deleted FROM athanor_agents WHERE ns = '' ORDER BY id");
  expect(rows.map((r) => [r.id, r.status, r.version, r.deleted === 1])).toEqual([...agents].sort(([x], [y]) => (x < y ? -1 : 1)).map(([id, a]) => [id, a.status, a.version, a.deleted]));
}

describe('agents', () => {
  it('a random sequence of operations gives the model\'s get, list and transitions, before and after a rebuild', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        const db = await sb.open(undefined, { durability: 'none' });
        const agents = new Map<string, ModelAgent>();
        const history = new Map<string, ModelTransition[]>();
        for (const op of ops) expect(await applyDb(db, op), JSON.stringify(op)).toBe(applyModel(agents, history, op));
        await compare(db, agents, history);
        await db.agents.views.rebuild();
        await compare(db, agents, history);
        await sb.cleanup();
      }),
      { numRuns: 12 },
    );
  });

  it('refuses bad input before writing anything, with typed errors', async () => {
    const db = await sb.open();
    await db.agents.save({ id: 'a', name: 'A' });
    const seq = db.commitSeq;
    await expectRejects(db.agents.save({ id: '' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.agents.save({ id: 'a', data: Number.NaN }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.agents.save({ id: 'a', metadata: [] as never }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.agents.save({ id: 'a', colour: 'red' } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.agents.save({ id: '\ud800' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.agents.save({ id: 'a' }, { expectedVersion: 7 }), WrongExpectedVersionError, 'ERR_WRONG_EXPECTED_VERSION');
    await expectRejects(db.agents.setStatus('nobody', 'x'), NotFoundError, 'ERR_NOT_FOUND');
    await expectRejects(db.agents.restore('a'), PreflightError, 'ERR_PREFLIGHT');
    expectThrows(() => db.agents.list({ limit: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.agents.list({ cursor: 'not-a-cursor' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.commitSeq).toBe(seq);
    // Users cannot forge athanor's events or keys.
    await expectRejects(db.transaction().execute((tx) => tx.log('athanor.agent.saved', {})), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.commitSeq).toBe(seq);
  });

  it('snapshots: taken, listed, restored as an event in the history; expired ones vanish and are purged', async () => {
    const db = await sb.open();
    await db.agents.save({ id: 'a', data: { step: 1 } });
    const keep = await db.agents.snapshot('a', { description: 'step 1' });
    const short = await db.agents.snapshot('a', { ttlMs: 1 });
    await db.agents.save({ id: 'a', data: { step: 2 }, status: 'busy' });
    const later = Date.now() + 1000;
    expect(db.agents.snapshots('a', later).map((s) => s.snapshotId)).toEqual([keep.snapshotId]);
    expect(db.agents.snapshots('a', short.createdAt).map((s) => s.snapshotId).sort()).toEqual([keep.snapshotId, short.snapshotId].sort());
    const restored = await db.agents.restoreSnapshot(keep.snapshotId, { reason: 'undo', actor: 'ops' });
    expect(restored.data).toEqual({ step: 1 });
    expect(restored.status).toBe('idle');
    expect(restored.version).toBe(3);
    const [last] = await db.agents.transitions('a', { limit: 1 });
    expect(last).toMatchObject({ kind: 'snapshot_restored', snapshotId: keep.snapshotId, reason: 'undo', actor: 'ops', before: { status: 'busy', version: 2 }, after: { status: 'idle', version: 3 } });
    expect(await db.agents.purgeExpiredSnapshots(later)).toBe(1);
    expect(db.agents.snapshots('a', short.createdAt).map((s) => s.snapshotId)).toEqual([keep.snapshotId]);
    await expectRejects(db.agents.restoreSnapshot(short.snapshotId), NotFoundError, 'ERR_NOT_FOUND');
    expect((await db.agents.transitions('a')).map((t) => t.kind)).toContain('snapshot_purged');
    await db.agents.purge('a');
    await expectRejects(db.agents.restoreSnapshot(keep.snapshotId), NotFoundError, 'ERR_NOT_FOUND');
    expect(db.list({ prefix: '\u0000athanor/agents/' })).toEqual([]);
  });

  it('a purge racing a snapshot leaves no snapshot of the purged agent behind', async () => {
    const db = await sb.open();
    for (let i = 0; i < 5; i++) {
      await db.agents.save({ id: 'a' });
      const [snap] = await Promise.allSettled([db.agents.snapshot('a'), db.agents.purge('a')]);
      expect(db.agents.get('a', { includeDeleted: true })).toBeUndefined();
      // Either the snapshot lost the race (the agent was gone) or the purge removed it too.
      expect(db.list({ prefix: '\u0000athanor/agents/snap' })).toEqual([]);
      if (snap.status === 'fulfilled') await expectRejects(db.agents.restoreSnapshot(snap.value.snapshotId), NotFoundError, 'ERR_NOT_FOUND');
    }
  });

  it('the scheduler purges expired snapshots of every namespace in the background, each once', async () => {
    const db = await sb.open();
    let t = Date.UTC(2026, 0, 5, 12);
    db.scheduler.configure({ clock: { now: () => t, setTimeout: () => 0, clearTimeout: () => undefined } });
    await db.agents.scheduleSnapshotPurge(db.scheduler, { everyMs: 60_000 });
    const expiring = [];
    for (const view of [db.agents, db.agents.namespace('team-a')]) {
      await view.save({ id: 'a' });
      expiring.push(await view.snapshot('a', { ttlMs: 1 }));
      await view.snapshot('a', { description: 'kept' });
    }
    // Wall time (what expiry compares with) passes the snapshots' expiry.
    while (Date.now() <= Math.max(...expiring.map((s) => s.expiresAt!)));
    t += 60_000;
    const runs = await db.scheduler.runDue();
    expect(runs.map((r) => r.outcome)).toEqual(['ok']);
    for (const [i, view] of [db.agents, db.agents.namespace('team-a')].entries()) {
      expect(view.snapshots('a', 0).map((s) => s.description)).toEqual(['kept']);
      const purged = (await view.transitions('a')).filter((x) => x.kind === 'snapshot_purged');
      expect(purged.map((x) => x.snapshotId)).toEqual([expiring[i]!.snapshotId]);
    }
    t += 60_000;
    await db.scheduler.runDue();
    expect([...db.events.read({ type: 'athanor.agent.snapshot_purged' })].length).toBe(2);
  });

  it('kill -9 during a burst of saves: state and history agree after reopen', async () => {
    const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'agents-child.mjs');
    const dir = sb.dir();
    const acks = path.join(dir, '..', `${path.basename(dir)}-acks.txt`);
    sb.dirs.push(acks);
    for (let trial = 0; trial < 2; trial++) {
      const r = await killAfterReady(CHILD, [dir, acks], 150 + 100 * trial);
      expect(r.ready, r.stderr).toBe(true);
      expect(r.signal).toBe('SIGKILL');
    }
    const acked = new Map<string, number>();
    for (const line of fs.readFileSync(acks, 'utf8').split('\n')) {
      const m = /^(\S+) (\d+)$/.exec(line);
      if (m) acked.set(m[1]!, Math.max(acked.get(m[1]!) ?? 0, Number(m[2])));
    }
    expect(acked.size).toBeGreaterThan(0);
    const db = await sb.open(dir);
    for (let i = 0; i < 8; i++) {
      const id = `agent-${i}`;
      const a = db.agents.get(id);
      const ts = await db.agents.transitions(id, { limit: 10_000 });
      if (a === undefined) {
        expect(acked.has(id)).toBe(false);
        expect(ts).toEqual([]);
        continue;
      }
      expect(a.version).toBeGreaterThanOrEqual(acked.get(id) ?? 0);
      // Every version is one logged save, in order, and the newest is the state's.
      expect(ts.map((t) => t.after!.version)).toEqual(Array.from({ length: a.version }, (_, k) => a.version - k));
      expect(ts[0]!.after!.status).toBe(a.status);
    }
    // The SQL view equals state and a rebuild gives the same rows.
    const view = () => db.sql.all('SELECT ns, id, status, version, deleted FROM athanor_agents ORDER BY ns, id');
    const before = view();
    expect(before.length).toBe(db.agents.list({ limit: 100 }).agents.length);
    await db.agents.views.rebuild();
    expect(view()).toEqual(before);
    expect(db.verify().events).toBeGreaterThan(0);
  }, 60_000);
});

describe('sessions and tasks', () => {
  it('sessions start, take events, end; lists and events come from the log', async () => {
    const db = await sb.open();
    const s1 = await db.sessions.start('agent-1', { channel: 'web' }, { id: 's1' });
    const s2 = await db.sessions.start('agent-2');
    await db.sessions.append('s1', { actorType: 'user', actorId: 'u1', content: 'hello there' });
    await db.sessions.append('s1', { actorType: 'agent', content: { text: 'hi', tool: null } });
    await db.sessions.end('s1');
    await expectRejects(db.sessions.append('s1', { actorType: 'user', content: 'late' }), PreflightError, 'ERR_PREFLIGHT');
    await expectRejects(db.sessions.start('agent-1', {}, { id: 's1' }), PreflightError, 'ERR_PREFLIGHT');
    await expectRejects(db.sessions.end('nope'), NotFoundError, 'ERR_NOT_FOUND');
    expect(db.sessions.get('s1')).toMatchObject({ id: 's1', agentId: 'agent-1', status: 'ended', metadata: { channel: 'web' } });
    expect((await db.sessions.list({ status: 'active' })).map((s) => s.id)).toEqual([s2.id]);
    expect((await db.sessions.list({ agentId: 'agent-1' })).map((s) => s.id)).toEqual([s1.id]);
    const evs = await db.sessions.events('s1');
    expect(evs.map((e) => [e.actorType, e.actorId, e.content])).toEqual([['user', 'u1', 'hello there'], ['agent', null, { text: 'hi', tool: null }]]);
  });

  it('tasks: assignment and status changes with history, dependencies, list by assignee and status', async () => {
    const db = await sb.open();
    await db.tasks.create({ id: 'build', title: 'Build' });
    await db.tasks.create({ id: 'ship', title: 'Ship', dependsOn: ['build'] });
    await expectRejects(db.tasks.create({ id: 'x', title: 'X', dependsOn: ['missing'] }), NotFoundError, 'ERR_NOT_FOUND');
    await db.tasks.assign('build', 'ann', { actor: 'lead' });
    await db.tasks.assign('ship', 'ann');
    await db.tasks.setStatus('build', 'in_progress', { reason: 'started' });
    await expectRejects(db.tasks.setStatus('ship', 'done'), PreflightError, 'ERR_PREFLIGHT');
    await db.tasks.setStatus('build', 'done');
    await db.tasks.setStatus('ship', 'done', { expectedVersion: 2 });
    await expectRejects(db.tasks.setStatus('ship', 'reopened', { expectedVersion: 1 }), WrongExpectedVersionError, 'ERR_WRONG_EXPECTED_VERSION');
    expect((await db.tasks.list({ assignedTo: 'ann' })).map((t) => t.id)).toEqual(['build', 'ship']);
    expect((await db.tasks.list({ status: 'done', assignedTo: 'ann' })).length).toBe(2);
    expect((await db.tasks.list({ assignedTo: 'bob' })).length).toBe(0);
    const h = await db.tasks.history('build');
    expect(h.map((c) => [c.kind, c.before?.status ?? null, c.after.status, c.after.assignedTo, c.reason, c.actor])).toEqual([
      ['created', null, 'pending', null, null, null],
      ['assigned', 'pending', 'pending', 'ann', null, 'lead'],
      ['status', 'pending', 'in_progress', 'ann', 'started', null],
      ['status', 'in_progress', 'done', 'ann', null, null],
    ]);
  });
});

describe('rebuild', () => {
  it('every view of agents, sessions and tasks rebuilt from the log equals the incremental one', async () => {
    const db = await sb.open();
    for (const view of [db.agents, db.agents.namespace('n1')]) {
      await view.save({ id: 'a', metadata: { k: 1 }, data: [1, 2] });
      await view.setStatus('a', 'busy', { reason: 'r' });
      await view.save({ id: 'b' });
      await view.delete('b');
      await view.snapshot('a');
      await view.save({ id: 'c' });
      await view.purge('c');
    }
    for (const [sessions, tasks] of [[db.sessions, db.tasks], [db.sessions.namespace('n1'), db.tasks.namespace('n1')]] as const) {
      await sessions.start('a', { m: true }, { id: 's' });
      await sessions.append('s', { actorType: 'user', content: { nested: ['json'] } });
      await sessions.end('s');
      await tasks.create({ id: 't1', title: 'one' });
      await tasks.create({ id: 't2', title: 'two', dependsOn: ['t1'], assignedTo: 'a' });
      await tasks.setStatus('t1', 'done');
    }
    const tables = ['athanor_agents', 'athanor_agent_events', 'athanor_sessions', 'athanor_session_events', 'athanor_tasks', 'athanor_task_events'];
    await db.agents.views.catchUp();
    const dump = () => Object.fromEntries(tables.map((t) => [t, db.sql.all(`SELECT * FROM ${t} ORDER BY 1, 2`)]));
    const before = dump();
    for (const t of tables) expect(before[t]!.length, t).toBeGreaterThan(0);
    await db.agents.views.rebuild();
    expect(dump()).toEqual(before);
    // And after a reopen, the views continue from their cursor (nothing applied twice).
    const dir = db.dir;
    await db.close();
    const db2 = await sb.open(dir);
    await db2.agents.views.catchUp();
    expect(Object.fromEntries(tables.map((t) => [t, db2.sql.all(`SELECT * FROM ${t} ORDER BY 1, 2`)]))).toEqual(before);
  });
});

describe('full-text search', () => {
  const CORPUS = [
    { docId: 'd1', title: 'LMDB storage', body: 'lmdb lmdb memory mapped storage engine' },
    { docId: 'd2', title: 'Notes', body: 'one mention of lmdb among many other words about databases and other things' },
    { docId: 'd3', title: 'Cooking', body: 'a recipe for bread with flour and water' },
  ];

  async function seeded() {
    const db = await sb.open();
    await db.transaction().execute((tx) => {
      for (const d of CORPUS) tx.log('doc.written', d);
      tx.log('doc.other', { text: 'lmdb is not indexed for this type' });
    });
    const fts = db.search.fullText({ on: { 'doc.written': { fields: ['$.title', '$.body'], id: '$.docId' }, 'doc.removed': { delete: true, id: '$.docId', fields: [] } } });
    return { db, fts };
  }

  it('ranks by BM25, highlights snippets, answers prefix and phrase queries, filters by type and session', async () => {
    const { db, fts } = await seeded();
    const hits = await fts.search('lmdb');
    expect(hits.map((h) => h.docId)).toEqual(['d1', 'd2']);
    expect(hits[0]!.score).toBeGreaterThan(hits[1]!.score);
    expect(hits[0]!.snippet).toContain('<b>LMDB</b>');
    expect((await fts.search('lmdb', { highlight: ['[', ']'] }))[1]!.snippet).toContain('[lmdb]');
    expect((await fts.search('stor*')).map((h) => h.docId)).toEqual(['d1']);
    expect((await fts.search('"other words"')).map((h) => h.docId)).toEqual(['d2']);
    expect((await fts.search('"words other"')).map((h) => h.docId)).toEqual([]);
    expect((await fts.search('bread OR lmdb', { limit: 1 })).length).toBe(1);
    expect(await fts.search('lmdb', { types: ['doc.other'] })).toEqual([]);
    // Session events are indexed by default, and filter by session.
    const s = await db.sessions.start('agent', {}, { id: 'chat' });
    await db.sessions.append('chat', { actorType: 'user', content: 'my lmdb question' });
    const bySession = await fts.search('lmdb', { sessionId: 'chat' });
    expect(bySession.map((h) => [h.type, h.sessionId])).toEqual([['athanor.session.event', s.id]]);
    // Session ids whose tokens overlap, or that have none, still select exactly their session.
    for (const id of ['a-b', 'x-a-b', 'a b', '---', '"q"']) {
      await db.sessions.start('agent', {}, { id });
      await db.sessions.append(id, { actorType: 'user', content: `lmdb in ${id}` });
    }
    for (const id of ['a-b', 'x-a-b', 'a b', '---', '"q"']) {
      expect((await fts.search('lmdb', { sessionId: id })).map((h) => h.sessionId)).toEqual([id]);
    }
    // A query word that is also a session id's token does not match the id.
    expect((await fts.search('chat')).map((h) => h.sessionId)).toEqual([]);
    // A document's newer event replaces its text; a delete rule removes it.
    await db.transaction().execute((tx) => tx.log('doc.written', { docId: 'd1', title: 'Rewritten', body: 'now about sourdough bread' }));
    expect((await fts.search('lmdb', { types: ['doc.written'] })).map((h) => h.docId)).toEqual(['d2']);
    expect((await fts.search('bread')).map((h) => h.docId).sort()).toEqual(['d1', 'd3']);
    await db.transaction().execute((tx) => tx.log('doc.removed', { docId: 'd3' }));
    expect((await fts.search('bread')).map((h) => h.docId)).toEqual(['d1']);
    // An event its rules cannot index (a document without its id) is dead-lettered; search goes on.
    await db.transaction().execute((tx) => tx.log('doc.written', { title: 'no id', body: 'bread' }));
    expect((await fts.search('bread')).map((h) => h.docId)).toEqual(['d1']);
    expect(fts.processor.deadLetters.count()).toBe(1);
  });

  it('turns query syntax errors into ERR_INVALID_ARGUMENT that says how to fix the query', async () => {
    const { fts } = await seeded();
    for (const q of ['"unclosed', 'lmdb AND', 'foo:bar', '(lmdb', 'NEAR(', '*']) {
      const e = await expectRejects(fts.search(q), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expect(e.message).toContain('FTS5 syntax');
      expect(e.message).toContain('Quote words');
    }
    await expectRejects(fts.search('  '), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(fts.search('x', { limit: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('is exactly once and rebuilds to the same index; changed rules rebuild it at next open', async () => {
    const { db, fts } = await seeded();
    await fts.catchUp();
    const dump = () => db.sql.all('SELECT rowid, body, ns, type, session_id, doc_id FROM athanor_fts ORDER BY rowid');
    const before = dump();
    expect(before.length).toBe(3);
    await fts.processor.rebuild();
    expect(dump()).toEqual(before);
    await fts.catchUp();
    expect(dump()).toEqual(before);
    const dir = db.dir;
    await db.close();
    const db2 = await sb.open(dir);
    const fts2 = db2.search.fullText({ on: { 'doc.other': { fields: '$.text' } } });
    expect((await fts2.search('lmdb')).map((h) => h.type)).toEqual(['doc.other']);
    expectThrows(() => db2.search.fullText({ on: { 'doc.written': { fields: '$.body' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('a filtered search returns the best-ranked matching hits, ranked as unfiltered, when many others rank higher', async () => {
    const db = await sb.open();
    const fts = db.search.fullText({ on: { note: { fields: '$.text', sessionId: '$.s' }, memo: { fields: '$.text', sessionId: '$.s' }, team: { fields: '$.text', sessionId: '$.s', namespace: '$.ns' } } });
    // 300 short texts dense in "kiwi" (they rank first), then 12 of each filtered kind with
    // the word once among a number of others that varies, so their BM25 scores differ.
    const pad = (i: number) => Array.from({ length: i % 7 }, (_, k) => `pad${k}`).join(' ');
    await db.transaction().execute((tx) => {
      for (let i = 0; i < 300; i++) tx.log('note', { text: 'kiwi kiwi kiwi', s: 'busy' });
      // Texts without the word, so that it is rare enough for a positive BM25 weight.
      for (let i = 0; i < 500; i++) tx.log('note', { text: `filler ${i}`, s: 'busy' });
      for (let i = 0; i < 12; i++) {
        tx.log('memo', { text: `kiwi ${pad(i)} memo${i}`, s: 'busy' });
        tx.log('note', { text: `kiwi ${pad(i + 3)} quiet${i}`, s: 'quiet' });
        tx.log('team', { text: `kiwi ${pad(i + 5)} other${i}`, s: 'busy', ns: 'team-b' });
      }
    });
    const all = await fts.search('kiwi', { limit: 10_000 });
    expect(all.length).toBe(324);
    expect(all.slice(0, 300).every((h) => h.sessionId === 'busy' && h.type === 'note')).toBe(true);
    const scoreOf = new Map(all.map((h) => [h.eventId, h.score]));
    const expectBest = (hits: Array<{ eventId: bigint; score: number }>, expected: typeof all) => {
      expect(hits.map((h) => h.eventId)).toEqual(expected.map((h) => h.eventId));
      // The scores are BM25 on the text alone, the same as in the unfiltered search.
      for (const h of hits) expect(h.score).toBeCloseTo(scoreOf.get(h.eventId)!, 9);
    };
    expectBest(await fts.search('kiwi', { types: ['memo'], limit: 5 }), all.filter((h) => h.type === 'memo').slice(0, 5));
    expectBest(await fts.search('kiwi', { sessionId: 'quiet', limit: 5 }), all.filter((h) => h.sessionId === 'quiet').slice(0, 5));
    expectBest(await fts.search('kiwi', { sessionId: 'busy', types: ['memo'], limit: 20 }), all.filter((h) => h.type === 'memo'));
    expect((await fts.search('kiwi', { sessionId: 'quiet', limit: 3 })).map((h) => h.snippet)).toEqual(all.filter((h) => h.sessionId === 'quiet').slice(0, 3).map((h) => h.snippet));
    // The other namespace's texts, alone and ranked among themselves.
    const teamB = await db.search.namespace('team-b').fullText().search('kiwi', { limit: 4 });
    expect(teamB.map((h) => h.sessionId)).toEqual(['busy', 'busy', 'busy', 'busy']);
    expect(teamB.every((h, i) => i === 0 || teamB[i - 1]!.score >= h.score)).toBe(true);
    expect(all.some((h) => teamB.some((b) => b.eventId === h.eventId))).toBe(false);
    // A query cannot reach the session tags, even written with their private-use mark.
    const tag = '\uE000' + Buffer.from('quiet').toString('hex');
    expect(await fts.search(`"${tag}"`)).toEqual([]);
    expect(await fts.search('\uE000*')).toEqual([]);
    expect(await fts.search(`kiwi OR "${tag}"`, { limit: 1000 })).toHaveLength(324);
    await db.close();
  });

  it('on a large log, single-term searches give the hits, scores, snippets and order of the rank plan, of their namespace only', async () => {
    const db = await sb.open(undefined, { durability: 'batched' });
    const fts = db.search.fullText({ on: { note: { fields: '$.text' }, team: { fields: '$.text', namespace: '$.ns' } } });
    // 100,000 events (single-term searches for up to 10 hits take the top-k statement): texts
    // of one word repeated 1..30 times rank in a known order (BM25 rises with the count), 30
    // texts of equal length tie; another namespace holds the best "kiwi" texts of all.
    const batch = 10_000;
    for (let start = 0; start < 100_000; start += batch) {
      await db.transaction().execute((tx) => {
        for (let i = start; i < start + batch; i++) {
          const k = i % 1000;
          if (i < 30) tx.log('note', { text: `${i % 2 === 0 ? 'plum' : 'kiwi'} `.repeat(k + 1).trim() });
          else if (i < 30_000 && k === 30) tx.log('note', { text: `fig plum kiwi filler${i}` });
          else if (i >= 99_000 && k < 20) tx.log('team', { text: 'kiwi '.repeat(50 + k).trim(), ns: 'team-b' });
          else tx.log('note', { text: `filler${i % 5000} other${i % 77}` });
        }
      });
    }
    await fts.catchUp();
    // The connection that searches keeps a 64 MiB page cache (the other connections 16 MB).
    expect(db.sql.get<{ cache_size: number }>('PRAGMA cache_size')?.cache_size).toBe(-65_536);
    const view = (h: { eventId: bigint; type: string; score: number; snippet: string }) => [h.eventId, h.type, h.score, h.snippet];
    // A parenthesized term has the same meaning and keeps FTS5's rank plan: the reference.
    for (const q of ['plum', 'plu*', 'kiwi', 'kiw*', 'fig']) {
      for (const limit of [1, 7, 10, 25]) {
        const hits = await fts.search(q, { limit });
        expect(hits.map(view)).toEqual((await fts.search(`(${q})`, { limit })).map(view));
        expect(hits.length).toBe(Math.min(limit, q === 'fig' ? 30 : 45));
        expect(hits.every((h) => h.type === 'note')).toBe(true);
      }
    }
    const best = await fts.search('plum', { limit: 3, highlight: ['[', ']'], snippetTokens: 4 });
    expect(best.map((h) => h.snippet)).toEqual(['[plum] [plum] [plum] [plum]…', '[plum] [plum] [plum] [plum]…', '[plum] [plum] [plum] [plum]…']);
    expect(best[0]!.score).toBeGreaterThan(best[1]!.score);
    // The other namespace sees only its own texts, and nothing of the default one's.
    const teamB = db.search.namespace('team-b').fullText();
    const kiwiB = await teamB.search('kiwi', { limit: 10 });
    expect(kiwiB.length).toBe(10);
    expect(kiwiB.every((h) => h.type === 'team')).toBe(true);
    expect(kiwiB.map(view)).toEqual((await teamB.search('(kiwi)', { limit: 10 })).map(view));
    expect(await teamB.search('plum', { limit: 5 })).toEqual([]);
    expect(await teamB.search('fig', { limit: 10 })).toEqual([]);
    // The default namespace's best "kiwi" hits, although team-b's rank above them all.
    for (let i = 0; i < 3; i++) expect((await fts.search('kiwi', { limit: 5 })).every((h) => h.type === 'note')).toBe(true);
    await db.close();
  });

  it('an index of the older layout (session ids indexed, no tags) is dropped and rebuilt from the log', async () => {
    const { db, fts } = await seeded();
    await db.sessions.start('agent', {}, { id: 'chat' });
    await db.sessions.append('chat', { actorType: 'user', content: 'my lmdb question' });
    const before = (await fts.search('lmdb')).map((h) => [h.eventId, h.score]);
    expect(before.length).toBe(3);
    const dir = db.dir;
    await db.close();
    // What an older athanor left: its table, empty here so that only a rebuild finds anything.
    const old = await sb.open(dir);
    old.sql.exec(`DROP TABLE athanor_fts; CREATE VIRTUAL TABLE athanor_fts USING fts5(
      body, ns UNINDEXED, type UNINDEXED, session_id, doc_id UNINDEXED, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')`);
    await old.close();
    const db2 = await sb.open(dir);
    const fts2 = db2.search.fullText({ on: { 'doc.written': { fields: ['$.title', '$.body'], id: '$.docId' }, 'doc.removed': { delete: true, id: '$.docId', fields: [] } } });
    expect((await fts2.search('lmdb')).map((h) => [h.eventId, h.score])).toEqual(before);
    expect((await fts2.search('lmdb', { sessionId: 'chat' })).map((h) => h.sessionId)).toEqual(['chat']);
    expect(db2.sql.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE name = 'athanor_fts'")!.sql).toContain('tags');
    await db2.close();
  });
});

describe('hybrid search', () => {
  let embedder: Embedder;
  beforeAll(async () => {
    embedder = await Embedder.open(await ensureTestModel());
  });
  afterAll(() => embedder?.close());

  it('fuses BM25 and vector rankings: documents found only by keyword and only by meaning both come back', async () => {
    const db = await sb.open();
    const docs = [
      { id: 'pw', text: 'How do I reset my password?', team: 'accounts' },
      { id: 'pw2', text: 'Password reset email never arrives', team: 'accounts' },
      { id: 'signin', text: 'Cannot sign in, the login page rejects the credentials', team: 'accounts' },
      { id: 'code', text: 'Invoice zq7x lists shipping and tax totals', team: 'platform' },
      { id: 'bread', text: 'Recipe for sourdough bread', team: 'kitchen' },
      { id: 'ship', text: 'My parcel has not arrived yet', team: 'logistics' },
    ];
    const col = db.vectors.create<{ team: string }>('tickets', { embedder });
    await col.upsertTexts(docs.map((d) => ({ id: d.id, text: d.text, metadata: { team: d.team } })));
    await db.transaction().execute((tx) => {
      for (const d of docs) tx.log('ticket.opened', { ticketId: d.id, body: d.text });
    });
    const fts = db.search.fullText({ on: { 'ticket.opened': { fields: '$.body', id: '$.ticketId' } } });
    const hits = await fts.searchHybrid('forgot password zq7x', { collection: col, k: 6, candidates: 3 });
    const byId = new Map(hits.map((h) => [h.id, h]));
    // Found by keyword only: its rare token is in the text, its meaning is far from the query.
    expect(byId.get('code')?.text).not.toBeNull();
    expect(byId.get('code')?.vector).toBeNull();
    // Found by meaning only: no query word in its text.
    expect(byId.get('signin')?.text).toBeNull();
    expect(byId.get('signin')?.vector).not.toBeNull();
    // Found by both ranks first.
    expect(['pw', 'pw2']).toContain(hits[0]!.id);
    expect(hits[0]!.text).not.toBeNull();
    expect(hits[0]!.vector).not.toBeNull();
    for (const h of hits) expect(h.score).toBeCloseTo((h.text ? 1 / (60 + h.text.rank) : 0) + (h.vector ? 1 / (60 + h.vector.rank) : 0), 12);
    // The filter applies to both sides; weights can turn a side off.
    const platform = await fts.searchHybrid('forgot password zq7x', { collection: col, k: 6, filter: { team: 'platform' } });
    expect(platform.map((h) => h.id)).toEqual(['code']);
    const textOnly = await fts.searchHybrid('password', { collection: col, k: 6, weights: { vector: 0 } });
    expect(textOnly.every((h) => h.vector === null && h.text !== null)).toBe(true);
    expect(textOnly.map((h) => h.id).sort()).toEqual(['pw', 'pw2']);
    // A namespace that indexed none of these documents finds none of them, by either source.
    expect(await db.search.namespace('elsewhere').fullText().searchHybrid('forgot password zq7x', { collection: col, k: 6 })).toEqual([]);
  }, 60_000);
});

describe('namespaces', () => {
  const CRAFTED = ['team-a', 'team-a/x', 'team-a%2Fx', "te'am", 'te\u0000am', '%', '%25', 'team', 'a/b/c'];

  it('a namespace view can neither read, list nor search another namespace, whatever the names', async () => {
    const db = await sb.open();
    const fts = db.search.fullText();
    const ids = ['x', 'a/x', 'x/', '%2F', "'", '\u0000', '..', 'team-a'];
    for (const ns of CRAFTED) {
      const agents = db.agents.namespace(ns);
      for (const id of ids) await agents.save({ id, metadata: { ns } });
      await agents.snapshot('x');
      const sessions = db.sessions.namespace(ns);
      await sessions.start('x', { ns }, { id: 's' });
      await sessions.append('s', { actorType: 'user', content: `secret of ${ns} zebra` });
      await db.tasks.namespace(ns).create({ id: 't', title: ns, assignedTo: 'x' });
    }
    await db.agents.save({ id: 'x', metadata: { ns: '' } });
    for (const ns of CRAFTED) {
      const agents = db.agents.namespace(ns);
      expect(agents.list({ limit: 100 }).agents.map((a) => a.metadata.ns)).toEqual(ids.map(() => ns));
      for (const id of ids) expect(agents.get(id)?.metadata).toEqual({ ns });
      expect(agents.get('nope')).toBeUndefined();
      expect((await agents.transitions('x')).length).toBe(2);
      // Another namespace's snapshot is not found from here.
      for (const other of CRAFTED.filter((o) => o !== ns)) {
        const snap = db.agents.namespace(other).snapshots('x')[0]!;
        await expectRejects(agents.restoreSnapshot(snap.snapshotId), NotFoundError, 'ERR_NOT_FOUND');
      }
      expect(db.sessions.namespace(ns).get('s')?.metadata).toEqual({ ns });
      expect((await db.sessions.namespace(ns).list()).length).toBe(1);
      const own = await db.sessions.namespace(ns).events('s');
      expect(own.map((e) => e.content)).toEqual([`secret of ${ns} zebra`]);
      expect((await db.tasks.namespace(ns).list({ assignedTo: 'x' })).map((t) => t.title)).toEqual([ns]);
      const hits = await db.search.namespace(ns).fullText().search('zebra');
      expect(hits.map((h) => h.eventId)).toEqual([own[0]!.eventId]);
      // A cursor of one namespace is refused by another.
      const page = agents.list({ limit: 1 });
      for (const other of CRAFTED.filter((o) => o !== ns)) expectThrows(() => db.agents.namespace(other).list({ cursor: page.nextCursor! }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    // The default namespace sees only its own.
    expect(db.agents.list().agents.map((a) => a.id)).toEqual(['x']);
    expect(await fts.search('zebra')).toEqual([]);
    expect(await db.sessions.list()).toEqual([]);
    expectThrows(() => db.agents.namespace(''), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  }, 60_000);
});
