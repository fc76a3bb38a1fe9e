/**
 * Replication against real servers started by the suite (test/servers.ts): a primary
 * publishing its commits to NATS JetStream, read replicas following it, and
 * projections into PostgreSQL. Kills (SIGKILL) of the publisher and of a replica,
 * restarts of nats-server and PostgreSQL mid-run; at the end every replica's content
 * digest equals the primary's and the PostgreSQL projection equals the SQLite
 * projection of the same events, row for row. Skips only when the servers are not
 * installed (`.ci/run` installs them).
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import pg from 'pg';
import { Athanor, InvalidArgumentError, bytes, NotFoundError, PgMigrations, ReadOnlyError, i64, type PgClient, type PgHandler, type Replica, type StoredEvent, type Tx } from '../dist/index.js';
import { NatsServer, PgServer, serversMissing } from './fixtures/servers.mjs';
import { Sandbox, expectRejects, expectThrows, killAfterReady } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'replication-child.mjs');
const missing = serversMissing();
if (missing !== undefined) console.warn(`test/replication.test.ts skipped: ${missing}`);
const suite = missing === undefined ? describe : describe.skip;

/** The workload of every test (the child's too): state writes, deletes and events of two types. */
function tick(n: number): (tx: Tx) => void {
  return (tx) => {
    tx.update(`acct:${n % 10}`, (v) => i64((v?.asI64() ?? 0n) + 1n));
    tx.set(`item:${n}`, i64(n));
    if (n % 3 === 0) tx.delete(`item:${n - 1}`);
    tx.log(n % 2 === 0 ? 'Deposited' : 'Withdrawn', { n, account: `acct:${n % 10}`, amount: n * 10 });
  };
}

/** Commits ticks `from..from+count-1`, 8 in flight (so commits group). Resolves to the last commit seq. */
async function work(db: Athanor, from: number, count: number): Promise<bigint> {
  let next = from;
  let last = 0n;
  const end = from + count;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < end) {
        const r = await db.transaction().execute(tick(next++), { maxAttempts: 1000 });
        if (r.commitSeq > last) last = r.commitSeq;
      }
    }),
  );
  return last;
}

async function expectSameContents(primary: Athanor, replica: Athanor): Promise<void> {
  const [a, b] = await Promise.all([primary.contentDigest(), replica.contentDigest()]);
  expect(b).toEqual(a);
}

const WAIT = { timeout: 60_000, interval: 50 };

suite('replication through NATS JetStream', () => {
  const box = new Sandbox();
  const nats = new NatsServer();
  const replicas: Replica[] = [];
  let streams = 0;
  const names = () => {
    streams++;
    return { stream: `S${streams}`, subject: `athanor.s${streams}.commits` };
  };
  const openReplica = async (dir: string, stream: string, durableName: string) => {
    const r = await Athanor.openReplica(dir, { servers: nats.url, stream, durableName, maxBackoffMs: 500 });
    replicas.push(r);
    return r;
  };

  beforeAll(async () => {
    await nats.start();
  });
  afterEach(async () => {
    for (const r of replicas.splice(0)) await r.close();
    await box.cleanup();
  });
  afterAll(async () => {
    await nats.dispose();
  });

  it('two replicas follow a primary under write load and end with its exact contents; reads, snapshots and waitFor work; writes are refused', async () => {
    const { stream, subject } = names();
    const primary = await box.open();
    const publisher = await primary.replication.publish({ servers: nats.url, stream, subject, streamOptions: { max_age: 3600 * 1e9 } });
    const r1 = await openReplica(box.dir(), stream, 'r1');
    const writing = work(primary, 1, 300);
    const r2 = await openReplica(box.dir(), stream, 'r2');
    const last = await writing;
    await Promise.all([r1.waitFor(last), r2.waitFor(last)]);
    await expectSameContents(primary, r1);
    await expectSameContents(primary, r2);
    expect(r1.get('acct:3').asI64()).toBe(30n);
    expect(r2.getOpt('item:299')).toBeUndefined(); // deleted by tick 300
    using snap = r1.snapshot();
    expect(snap.commitSeq).toBe(last);
    expect([...r1.events.read({ from: 1n, limit: 2 })].map((e) => e.type)).toEqual(['Withdrawn', 'Deposited']);
    expect(r1.lag()).toEqual({ commits: 0, ms: 0 });
    expectThrows(() => r1.transaction(), ReadOnlyError, 'ERR_READ_ONLY');
    // Read-your-writes on a replica: wait for the commit seq the primary gave.
    const mine = await primary.transaction().execute((tx) => tx.set('mine', i64(7)));
    await r2.waitFor(mine.commitSeq);
    expect(r2.get('mine').asI64()).toBe(7n);
    await publisher.waitPublished(mine.commitSeq);
    expect(publisher.metrics()).toMatchObject({ publishedSeq: mine.commitSeq, pending: 0, connected: true });
    expect((await primary.metrics()).replication).toEqual({ publisher: { publishedSeq: mine.commitSeq, pending: 0, errors: 0, connected: true }, pgProjections: [] });
    expect((await r2.metrics()).replication?.replica).toMatchObject({ lagCommits: 0, lagMs: 0, failed: false });
    expect(await primary.metrics({ format: 'prometheus' })).toContain('athanor_replication_pending_commits 0');
  });

  it('a SQL projection runs on a replica from the replicated log', async () => {
    const { stream, subject } = names();
    const primary = await box.open();
    await primary.replication.publish({ servers: nats.url, stream, subject });
    const last = await work(primary, 1, 40);
    const r = await openReplica(box.dir(), stream, 'proj');
    r.sql.exec('CREATE TABLE moves (event_id INTEGER PRIMARY KEY, amount INTEGER)');
    const p = r.projection({ name: 'moves', on: { Deposited: { sql: 'INSERT INTO moves VALUES (?, ?)', params: ['@id', '$.amount'] } } });
    await r.waitFor(last);
    await p.catchUp();
    expect(r.sql.get('SELECT count(*) AS n, sum(amount) AS s FROM moves')).toEqual({ n: 20, s: 4200 });
    await p.close();
  });

  it('vector collections and documents reach a replica, and vector search works there', async () => {
    const { stream, subject } = names();
    const primary = await box.open();
    await primary.replication.publish({ servers: nats.url, stream, subject });
    primary.vectors.create<{ n: number }>('docs', { dimension: 3, metric: 'cosine' });
    const axes = [new Float32Array([1, 0, 0]), new Float32Array([0, 1, 0]), new Float32Array([0, 0, 1])];
    await primary.transaction().execute((tx) => {
      axes.forEach((v, n) => tx.vectors('docs').upsert(`d${n}`, v, { n }));
    });
    const { commitSeq } = await primary.transaction().execute((tx) => tx.vectors('docs').delete('d2'));
    const r = await openReplica(box.dir(), stream, 'vectors');
    await r.waitFor(commitSeq);
    await expectSameContents(primary, r);
    const hits = r.vectors.open<{ n: number }>('docs').search(new Float32Array([0.9, 0.1, 0]), { k: 3, exact: true });
    expect(hits.map((h) => [h.id, h.metadata])).toEqual([['d0', { n: 0 }], ['d1', { n: 1 }]]);
  });

  it('a database that published late: an empty replica reports the missing commits, one restored from a backup catches up', async () => {
    const { stream, subject } = names();
    const primary = await box.open();
    await work(primary, 1, 30);
    const publisher = await primary.replication.publish({ servers: nats.url, stream, subject });
    await work(primary, 31, 10);
    const backupDir = path.join(box.dir(), 'backup');
    await primary.backup(backupDir);
    const last = await work(primary, 41, 20);
    await publisher.waitPublished(last);
    const empty = await openReplica(box.dir(), stream, 'empty');
    await expectRejects(empty.waitFor(last), NotFoundError, 'ERR_NOT_FOUND');
    expect(empty.replicaMetrics()).toMatchObject({ failed: true, commitSeq: 0n });
    expect(empty.replicaMetrics().lastError).toContain('start the replica from a backup');
    const restoredDir = path.join(box.dir(), 'restored');
    await Athanor.restore(backupDir, restoredDir);
    const restored = await openReplica(restoredDir, stream, 'restored');
    await restored.waitFor(last);
    await expectSameContents(primary, restored);
  });

  it('NATS down at start and restarted mid-run: commits never wait, the publisher and replicas retry and catch up with nothing lost', async () => {
    const { stream, subject } = names();
    await nats.stop();
    const primary = await box.open();
    const publisher = await primary.replication.publish({ servers: nats.url, stream, subject, maxBackoffMs: 300 });
    const before = await work(primary, 1, 50);
    await vi.waitFor(() => expect(publisher.metrics().errors).toBeGreaterThan(0), WAIT);
    expect(publisher.metrics()).toMatchObject({ pending: 50, publishedSeq: 0n, connected: false });
    expect((await primary.metrics()).replication?.publisher).toMatchObject({ pending: 50, connected: false });
    await nats.start();
    await publisher.waitPublished(before);
    const r = await openReplica(box.dir(), stream, 'nats-down');
    const writing = work(primary, 51, 200);
    await r.waitFor(before + 20n);
    await nats.restart();
    const last = await writing;
    await r.waitFor(last);
    await expectSameContents(primary, r);
    // The replica may see the last commits before the publisher has stored the stream's
    // acknowledgements: wait for those, then nothing may be left pending.
    await publisher.waitPublished(last);
    expect(publisher.metrics().pending).toBe(0);
  });

  it('kill -9 of the publisher and of a replica, and a nats-server restart between: each resumes exactly', async () => {
    const { stream, subject } = names();
    const pDir = box.dir();
    const rDir = box.dir();
    const [pub, rep] = await Promise.all([
      killAfterReady(CHILD, ['publisher', pDir, nats.url, stream, subject, '1'], 400),
      // The replica child waits for the stream's first commit, then is killed while applying.
      killAfterReady(CHILD, ['replica', rDir, nats.url, stream, 'killed'], 150),
    ]);
    expect(pub, pub.stderr).toMatchObject({ signal: 'SIGKILL', ready: true });
    expect(rep, rep.stderr).toMatchObject({ signal: 'SIGKILL', ready: true });
    await nats.restart();
    const primary = await box.open(pDir);
    const publisher = await primary.replication.publish({ servers: nats.url, stream, subject });
    const last = await work(primary, 1_000_000, 30);
    await publisher.waitPublished(last);
    const r = await openReplica(rDir, stream, 'killed');
    await r.waitFor(last);
    await expectSameContents(primary, r);
    // A replica started afresh from the same stream agrees too: nothing was published twice or skipped.
    const fresh = await openReplica(box.dir(), stream, 'fresh');
    await fresh.waitFor(last);
    await expectSameContents(primary, fresh);
  });

  it.skipIf(process.platform !== 'linux')("a replica whose disk is full (its store file may not grow): the apply fails with ERR_IO, shown in metrics and lag, is retried with backoff, and once it may grow the replica catches up with nothing lost", async () => {
    const { stream, subject } = names();
    const primary = await box.open();
    const publisher = await primary.replication.publish({ servers: nats.url, stream, subject });
    const first = await work(primary, 1, 20);
    await publisher.waitPublished(first);
    const rDir = box.dir();
    // The replica runs in a child process: the file size limit standing for the full disk is per process.
    const child: ChildProcess = fork(CHILD, ['replica-ipc', rDir, nats.url, stream, 'full'], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    type State = { metrics: ReturnType<Replica['replicaMetrics']>; lag: ReturnType<Replica['lag']>; db: { lagCommits: number; errors: number; failed: boolean }; digest?: unknown; error?: string };
    const answers: ((s: State) => void)[] = [];
    child.on('message', (m: State & { ready?: true }) => {
      if (m.ready !== true) answers.shift()?.(m);
    });
    const ask = async (q: { ask: 'metrics' } | { ask: 'waitFor'; seq: bigint }): Promise<State> => {
      const s = await new Promise<State>((resolve) => {
        answers.push(resolve);
        child.send(q);
      });
      if (s.error !== undefined) throw new Error(`replica child: ${s.error}\n${stderr}`);
      return s;
    };
    try {
      await ask({ ask: 'waitFor', seq: first });
      // RLIMIT_FSIZE at the store file's size: writing past its end fails (EFBIG; Node
      // ignores SIGXFSZ) as on a full disk, where it fails with ENOSPC: both are ERR_IO.
      const size = fs.statSync(path.join(rDir, 'canonical', 'data.mdb')).size;
      execFileSync('prlimit', ['--pid', String(child.pid), `--fsize=${size}:unlimited`]);
      const blob = new Uint8Array(256 * 1024).fill(7);
      let last = first;
      for (let i = 0; i < 8; i++) {
        last = (await primary.transaction().execute((tx) => {
          tx.set(`blob:${i}`, bytes(blob));
          tx.log('BlobStored', { i });
        })).commitSeq;
      }
      await publisher.waitPublished(last);
      await vi.waitFor(async () => expect((await ask({ ask: 'metrics' })).metrics.errors).toBeGreaterThan(0), WAIT);
      const full = await ask({ ask: 'metrics' });
      // Nothing of the failed batch was applied, the follower has not given up, and the lag shows it.
      expect(full.metrics).toMatchObject({ commitSeq: first, failed: false });
      expect(full.metrics.lastError).toMatch(/^I\/O error: File too large/);
      expect(full.lag.commits).toBeGreaterThan(0);
      expect(full.db).toMatchObject({ lagCommits: full.lag.commits, failed: false });
      expect(full.db.errors).toBeGreaterThan(0);
      // It keeps retrying (with backoff) while the disk stays full.
      await vi.waitFor(async () => expect((await ask({ ask: 'metrics' })).metrics.errors).toBeGreaterThan(full.metrics.errors), WAIT);
      execFileSync('prlimit', ['--pid', String(child.pid), '--fsize=unlimited']);
      const done = await ask({ ask: 'waitFor', seq: last });
      expect(done.digest).toEqual(await primary.contentDigest());
      expect(done.lag).toEqual({ commits: 0, ms: 0 });
      expect(done.metrics).toMatchObject({ commitSeq: last, failed: false });
    } finally {
      child.kill('SIGKILL');
    }
  });
});

suite('projections into PostgreSQL', () => {
  const box = new Sandbox();
  const server = new PgServer();
  const pools: pg.Pool[] = [];
  let database = 'postgres';
  const pool = () => {
    const p = new pg.Pool({ connectionString: server.connectionString.replace(/\/postgres$/, `/${database}`), max: 4 });
    // A server restart ends idle clients with an error event; the projection retries.
    p.on('error', () => undefined);
    pools.push(p);
    return p;
  };

  let databases = 0;
  beforeAll(async () => {
    await server.start();
  });
  // Each test in a database of its own.
  beforeEach(async () => {
    database = 'postgres';
    const admin = pool();
    database = `t${++databases}`;
    await admin.query(`CREATE DATABASE ${database}`);
  });
  afterEach(async () => {
    await box.cleanup();
    for (const p of pools.splice(0)) await p.end();
  });
  afterAll(async () => {
    await server.dispose();
  });

  const migrations = (p: pg.Pool) =>
    new PgMigrations(p).add(
      { version: 1, name: 'moves', up: 'CREATE TABLE moves (event_id bigint PRIMARY KEY, kind text NOT NULL, account text NOT NULL, amount bigint NOT NULL)', down: 'DROP TABLE moves' },
      { version: 2, name: 'balances', up: 'CREATE TABLE balances (account text PRIMARY KEY, total bigint NOT NULL)', down: 'DROP TABLE balances' },
    );

  const onPg: Record<string, PgHandler> = {
    Deposited: (e, c) => apply(e, c, 1),
    Withdrawn: (e, c) => apply(e, c, -1),
  };
  async function apply(e: StoredEvent, c: PgClient, sign: number): Promise<void> {
    const p = e.payload as { account: string; amount: number };
    await c.query('INSERT INTO moves (event_id, kind, account, amount) VALUES ($1, $2, $3, $4)', [e.id.toString(), e.type, p.account, p.amount]);
    await c.query('INSERT INTO balances (account, total) VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = balances.total + $2', [p.account, sign * p.amount]);
  }

  it('equals the SQLite projection of the same events row for row, through a PostgreSQL restart mid-run and with two runners', async () => {
    const p1 = pool();
    const applied = await migrations(p1).run();
    expect(applied.map((m) => m.version)).toEqual([1, 2]);
    expect(await migrations(p1).run()).toEqual([]);
    const db = await box.open();
    db.sql.exec('CREATE TABLE moves (event_id INTEGER PRIMARY KEY, kind TEXT, account TEXT, amount INTEGER)');
    const sqlite = db.projection({
      name: 'moves',
      on: {
        Deposited: { sql: 'INSERT INTO moves VALUES (?, ?, ?, ?)', params: ['@id', '@type', '$.account', '$.amount'] },
        Withdrawn: { sql: 'INSERT INTO moves VALUES (?, ?, ?, ?)', params: ['@id', '@type', '$.account', '$.amount'] },
      },
    });
    // Two runners of one projection (as on two machines): one applies, the other waits on the lock.
    const a = db.pgProjection({ name: 'moves', pool: p1, on: onPg, batchSize: 25, maxBackoffMs: 300 });
    const b = db.pgProjection({ name: 'moves', pool: pool(), on: onPg, batchSize: 25, maxBackoffMs: 300 });
    await work(db, 1, 150);
    await vi.waitFor(() => expect(a.metrics().cursor + b.metrics().cursor).toBeGreaterThan(0n), WAIT);
    await server.restart();
    await work(db, 151, 150);
    // The runner holding the lock finishes; then the other takes over after a stop.
    // (Right after the restart both may be reconnecting, neither holding it.)
    await vi.waitFor(() => expect(a.metrics().holdsLock || b.metrics().holdsLock).toBe(true), WAIT);
    const [holder, waiter] = a.metrics().holdsLock ? [a, b] : [b, a];
    await holder.catchUp();
    await holder.stop();
    await work(db, 301, 20);
    await waiter.catchUp();
    await sqlite.catchUp();
    const check = pool();
    const pgRows = (await check.query('SELECT event_id::text AS id, kind, account, amount::int AS amount FROM moves ORDER BY event_id')).rows;
    const liteRows = db.sql.all<{ id: bigint; kind: string; account: string; amount: bigint }>('SELECT event_id AS id, kind, account, amount FROM moves ORDER BY event_id');
    expect(pgRows.length).toBe(320);
    expect(pgRows).toEqual(liteRows.map((r) => ({ id: String(r.id), kind: r.kind, account: r.account, amount: Number(r.amount) })));
    const totals = (await check.query('SELECT sum(total)::int AS t FROM balances')).rows[0];
    const expected = liteRows.reduce((s, r) => s + (r.kind === 'Deposited' ? 1 : -1) * Number(r.amount), 0);
    expect(totals).toEqual({ t: expected });
    const cursor = (await check.query("SELECT cursor::text AS c FROM athanor_pg_cursors WHERE name = 'moves'")).rows[0];
    expect(cursor).toEqual({ c: db.events.lastId.toString() });
    expect(a.metrics().errors + b.metrics().errors).toBeGreaterThan(0);
    await waiter.stop();
    await sqlite.close();
  });

  it('a declarative PostgreSQL projection (the SQLite form, with $n parameters, prepared statements) equals its SQLite twin row for row, through a PostgreSQL restart', async () => {
    const p1 = pool();
    await migrations(p1).run();
    const db = await box.open();
    await work(db, 1, 60);
    const action = { sql: 'INSERT INTO moves (event_id, kind, account, amount) VALUES ($1, $2, $3, $4)', params: ['@id', '@type', '$.account', '$.amount'] as const };
    // A handler runs on the batch's connection: it sees the statements prepared there.
    const preparedOn = (seen: string[]): PgHandler => async (_e, c) => {
      seen.push(...(await c.query('SELECT statement FROM pg_prepared_statements')).rows.map((r) => String(r['statement'])));
    };
    const seen: string[] = [];
    // Event by event (no merged statements), so that every INSERT runs prepared.
    const proj = db.pgProjection({ name: 'decl', pool: p1, maxBackoffMs: 100, mergeStatements: false, on: { '*': action, Probe: preparedOn(seen) } });
    db.sql.exec('CREATE TABLE moves (event_id INTEGER PRIMARY KEY, kind TEXT, account TEXT, amount INTEGER)');
    const lite = db.projection({ name: 'decl', on: { '*': { sql: 'INSERT INTO moves VALUES (?, ?, ?, ?)', params: ['@id', '@type', '$.account', '$.amount'] } } });
    await Promise.all([proj.catchUp(), lite.catchUp()]);
    // The prepared statements are gone with the server's sessions: the new connection prepares them again.
    await server.restart();
    await work(db, 61, 20);
    await db.transaction().execute((tx) => tx.log('Probe', {}));
    await Promise.all([proj.catchUp(), lite.catchUp()]);
    expect(seen).toEqual([action.sql]);
    const pgRows = (await p1.query('SELECT event_id::text AS id, kind, account, amount::int AS amount FROM moves ORDER BY event_id')).rows;
    const liteRows = db.sql.all<{ id: bigint; kind: string; account: string; amount: bigint }>("SELECT event_id AS id, kind, account, amount FROM moves WHERE kind <> 'Probe' ORDER BY event_id");
    expect(pgRows.length).toBe(80);
    expect(pgRows).toEqual(liteRows.map((r) => ({ id: String(r.id), kind: r.kind, account: r.account, amount: Number(r.amount) })));
    await proj.stop();
    await lite.close();
    // prepare: false (a pooler in transaction mode) runs the same actions unprepared.
    const p2 = pool();
    await p2.query('CREATE TABLE plain (event_id bigint PRIMARY KEY, amount bigint)');
    const seenPlain: string[] = [];
    const plain = db.pgProjection({ name: 'plain', pool: p2, prepare: false, on: { '*': { sql: 'INSERT INTO plain VALUES ($1, $2)', params: ['@id', '$.amount'] }, Probe: preparedOn(seenPlain) } });
    await plain.catchUp();
    expect(seenPlain).toEqual([]);
    expect((await p2.query('SELECT count(*)::int AS n, sum(amount)::int AS s FROM plain')).rows[0]).toEqual({ n: 80, s: liteRows.reduce((t, r) => t + Number(r.amount), 0) });
    await plain.stop();
    for (const bad of [{ sql: '' }, { sql: 'SELECT $1', params: ['$.a..b'] }, { sql: 'SELECT $1', params: ['@nope'] }, { sql: 'SELECT $1', params: [{ value: {} }] }]) {
      expectThrows(() => db.pgProjection({ name: 'bad', pool: p1, on: { T: bad as never } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
  });

  /** The actions of the model below: upserts, deletes, an accumulating upsert, first-wins inserts, a plain INSERT, two actions for one type, an unmergeable statement. */
  const MODEL_SCHEMA = `CREATE TABLE kv (k text PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE totals (k text PRIMARY KEY, n bigint NOT NULL);
    CREATE TABLE firsts (k text PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE seen (id bigint PRIMARY KEY, k text NOT NULL, v bigint)`;
  const MODEL_ON = {
    Put: { sql: 'INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v', params: ['$.k', '$.v'] },
    Add: { sql: 'INSERT INTO totals AS t (k, n) VALUES ($1, $2::bigint) ON CONFLICT (k) DO UPDATE SET n = t.n + EXCLUDED.n', params: ['$.k', '$.v'] },
    Del: { sql: 'DELETE FROM kv WHERE k = $1', params: ['$.k'] },
    First: { sql: 'INSERT INTO firsts (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING', params: ['$.k', '$.v'] },
    Move: [
      { sql: 'INSERT INTO seen (id, k, v) VALUES ($1, $2, $3)', params: ['@id', '$.k', '$.v'] },
      { sql: 'DELETE FROM totals WHERE k = $1', params: ['$.k'] },
    ],
    Bump: { sql: 'UPDATE kv SET v = v + $2 WHERE k = $1', params: ['$.k', '$.v'] },
  } as const;
  const modelEvent = fc.record({ type: fc.constantFrom('Put', 'Add', 'Del', 'First', 'Move', 'Bump', 'Other'), k: fc.constantFrom('a', 'b', 'c', 'd'), v: fc.integer({ min: -1000, max: 1000 }) });
  const snapshot = async (p: pg.Pool) => {
    const out: Record<string, unknown[]> = {};
    for (const t of ['kv', 'totals', 'firsts', 'seen']) out[t] = (await p.query(`SELECT * FROM ${t} ORDER BY 1`)).rows;
    return out;
  };
  /** A pool whose clients count the statements they send (one round trip each). */
  const counted = (p: pg.Pool, count: { n: number }) => ({
    connect: async () => {
      const c = await p.connect();
      const query = c.query.bind(c) as (...args: unknown[]) => Promise<unknown>;
      const client: PgClient = {
        query: (...args: unknown[]) => {
          count.n++;
          return query(...args) as never;
        },
        release: (destroy?: boolean | Error) => c.release(destroy),
        on: (event: 'error', listener: (e: Error) => void) => c.on(event, listener),
        removeListener: (event: 'error', listener: (e: Error) => void) => c.removeListener(event, listener),
      };
      return client;
    },
  });

  it('merged declarative statements leave the tables exactly as event-by-event application does, on random event sequences and batch sizes', async () => {
    const admin = pool();
    for (const schema of ['merged', 'single']) await admin.query(`CREATE SCHEMA ${schema}; SET search_path = ${schema}; ${MODEL_SCHEMA}; RESET search_path`);
    const inSchema = (schema: string) => {
      const p = new pg.Pool({ connectionString: server.connectionString.replace(/\/postgres$/, `/${database}`), max: 2, options: `-c search_path=${schema}` });
      pools.push(p);
      return p;
    };
    const merged = inSchema('merged');
    const single = inSchema('single');
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(modelEvent, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: 40 }), async (commits, batchSize) => {
        // Two names: one advisory lock each (the lock is per database and name).
        const run = ++runs;
        for (const p of [merged, single]) await p.query('TRUNCATE kv, totals, firsts, seen');
        const db = await box.open();
        try {
          for (const events of commits) await db.transaction().execute((tx) => events.forEach((e) => tx.log(e.type, { k: e.k, v: e.v })));
          const a = db.pgProjection({ name: `merged${run}`, pool: merged, batchSize, on: MODEL_ON });
          const b = db.pgProjection({ name: `single${run}`, pool: single, batchSize, mergeStatements: false, on: MODEL_ON });
          await Promise.all([a.catchUp(), b.catchUp()]);
          await Promise.all([a.stop(), b.stop()]);
          expect(await snapshot(merged)).toEqual(await snapshot(single));
          // No merged statement failed and was redone: the upsert runs were split where a key repeats.
          expect(a.metrics().errors).toBe(0);
        } finally {
          await db.close();
        }
      }),
      { numRuns: 25 },
    );
  });

  it('a run of one declarative action costs one statement per batch, and a failing merged statement names the exact event it fails on', async () => {
    const p1 = pool();
    await p1.query(MODEL_SCHEMA);
    const db = await box.open();
    await db.transaction().execute((tx) => {
      for (let i = 0; i < 1000; i++) tx.log('Move', { k: `k${i}`, v: i });
    });
    const count = { n: 0 };
    const on = { Move: MODEL_ON.Move[0] };
    const proj = db.pgProjection({ name: 'runs', pool: counted(p1, count), batchSize: 500, on });
    await proj.catchUp();
    await proj.stop();
    expect((await p1.query('SELECT count(*)::int AS n, sum(v)::int AS s FROM seen')).rows[0]).toEqual({ n: 1000, s: 499_500 });
    // Setup (lock, cursor table and row), then per batch: BEGIN with the cursor's move,
    // one INSERT of 500 rows, COMMIT; then the unlock.
    expect(count.n).toBe(1 + 1 + 2 * 3 + 1);
    // A plain INSERT of a key already there, in the middle of a run: the merged statement
    // fails, the batch is redone event by event, and the error names the event.
    await db.transaction().execute((tx) => {
      for (const k of ['x', 'y', 'z']) tx.log('Move', { k, v: 1 });
      tx.log('Put', { k: 'x', v: 1 });
    });
    await p1.query('INSERT INTO seen VALUES (1002, $1, 0)', ['taken']);
    const failing = db.pgProjection({ name: 'runs', pool: p1, batchSize: 500, maxHandlerRetries: 0, maxBackoffMs: 100, on: { ...on, Put: MODEL_ON.Put } });
    await expect(failing.catchUp()).rejects.toMatchObject({ code: 'ERR_HANDLER', eventId: 1002n, message: expect.stringMatching(/Move failed on event 1002: .*duplicate key/) as unknown });
    expect((await p1.query("SELECT count(*)::int AS n FROM seen WHERE k IN ('x', 'y', 'z')")).rows[0]).toEqual({ n: 0 });
    await failing.stop();
  });

  it('a handler of runs gets each run of consecutive events of its types at once, in order, inside the batch transaction', async () => {
    const p1 = pool();
    await p1.query(MODEL_SCHEMA);
    const db = await box.open();
    const types = ['Move', 'Move', 'Other', 'Move', 'Put', 'Move', 'Move', 'Move'];
    await db.transaction().execute((tx) => types.forEach((type, i) => tx.log(type, { k: `k${i}`, v: i })));
    const runs: bigint[][] = [];
    const proj = db.pgProjection({
      name: 'runs',
      pool: p1,
      batchSize: 7,
      on: {
        Put: MODEL_ON.Put,
        Move: {
          run: async (events, c) => {
            runs.push(events.map((e) => e.id));
            const payloads = events.map((e) => e.payload as { k: string; v: number });
            await c.query('INSERT INTO seen (id, k, v) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])', [events.map((e) => e.id.toString()), payloads.map((p) => p.k), payloads.map((p) => p.v)]);
          },
        },
      },
    });
    await proj.catchUp();
    await proj.stop();
    // An event of a type without an entry does not end a run; one with its own entry does, and so does the batch's end.
    expect(runs).toEqual([[1n, 2n, 4n], [6n, 7n], [8n]]);
    expect((await p1.query('SELECT count(*)::int AS n, sum(v)::int AS s FROM seen')).rows[0]).toEqual({ n: 6, s: 0 + 1 + 3 + 5 + 6 + 7 });
    expect((await p1.query('SELECT k, v::int AS v FROM kv')).rows).toEqual([{ k: 'k4', v: 4 }]);
  });

  it('a running projection keeps its cursor in memory yet notices the row moved under it (a replay asked for by resetting it) and re-reads it, applying each event once', async () => {
    const p1 = pool();
    await migrations(p1).run();
    const db = await box.open();
    await work(db, 1, 30);
    const proj = db.pgProjection({ name: 'replayed', pool: p1, on: onPg, batchSize: 10, maxBackoffMs: 100 });
    await proj.catchUp();
    expect(proj.metrics()).toMatchObject({ cursor: 30n, errors: 0 });
    // An operator replays the projection: empties its tables and resets its cursor row.
    await p1.query("BEGIN; TRUNCATE moves, balances; UPDATE athanor_pg_cursors SET cursor = 0 WHERE name = 'replayed'; COMMIT");
    await work(db, 31, 5);
    await proj.catchUp();
    await vi.waitFor(async () => expect((await p1.query("SELECT cursor::int AS c FROM athanor_pg_cursors WHERE name = 'replayed'")).rows[0]).toEqual({ c: 35 }), WAIT);
    expect((await p1.query('SELECT count(*)::int AS n, min(event_id)::int AS lo, max(event_id)::int AS hi FROM moves')).rows[0]).toEqual({ n: 35, lo: 1, hi: 35 });
    expect(proj.metrics().errors).toBe(1);
    expect(proj.metrics().lastError).toMatch(/cursor row no longer says 30/);
    await proj.stop();
  });

  it('a runner whose connection is killed while it idles notices at once, takes the lock again on a new one, and goes on', async () => {
    const p1 = pool();
    await migrations(p1).run();
    const db = await box.open();
    await work(db, 1, 10);
    const proj = db.pgProjection({ name: 'idle', pool: p1, on: onPg, maxBackoffMs: 100 });
    await proj.catchUp();
    const holderPid = async () => (await p1.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")).rows.map((r) => Number(r['pid']));
    const [first] = await holderPid();
    expect(first).toBeDefined();
    await p1.query('SELECT pg_terminate_backend($1)', [first]);
    // No event arrives meanwhile: the break is noticed from the connection's error alone.
    await vi.waitFor(() => expect(proj.metrics().errors).toBe(1), WAIT);
    await vi.waitFor(async () => expect(proj.metrics().holdsLock && (await holderPid()).length === 1).toBe(true), WAIT);
    expect(await holderPid()).not.toEqual([first]);
    await work(db, 11, 10);
    await proj.catchUp();
    expect((await p1.query('SELECT count(*)::int AS n FROM moves')).rows[0]).toEqual({ n: 20 });
    await proj.stop();
  });

  it('a handler that throws rolls its batch back: nothing of it is applied, and the cursor stays', async () => {
    const p1 = pool();
    await new PgMigrations(p1).add({ version: 1, name: 'seen', up: 'CREATE TABLE seen (event_id bigint PRIMARY KEY)' }).run();
    const db = await box.open();
    await work(db, 1, 6);
    const proj = db.pgProjection({
      name: 'fails',
      pool: p1,
      maxHandlerRetries: 1,
      maxBackoffMs: 100,
      on: {
        Deposited: async (e, c) => {
          await c.query('INSERT INTO seen VALUES ($1)', [e.id.toString()]);
          if (e.id === 4n) throw new Error('boom');
        },
      },
    });
    await expect(proj.catchUp()).rejects.toMatchObject({ code: 'ERR_HANDLER' });
    expect(proj.metrics()).toMatchObject({ failed: true, cursor: 0n });
    expect((await p1.query('SELECT count(*)::int AS n FROM seen')).rows[0]).toEqual({ n: 0 });
    await proj.stop();
  });
});

describe('replication options', () => {
  const box = new Sandbox();
  afterEach(() => box.cleanup());

  it('bad options are refused with typed errors naming the fix, before anything is written', async () => {
    const db = await box.open();
    const ok = { servers: 'nats://127.0.0.1:1', stream: 'S', subject: 'a.b' };
    for (const bad of [{ ...ok, servers: [] }, { ...ok, stream: 'a.b' }, { ...ok, subject: 'a.*' }, { ...ok, batchSize: 0 }, { ...ok, streamOptions: 3 }]) {
      await expectRejects(db.replication.publish(bad as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(db.replication.publisher).toBeUndefined();
    for (const bad of [{ servers: 'x', stream: 'S' }, { servers: 'x', stream: 'S', durableName: 'a b' }, { servers: 7, stream: 'S', durableName: 'd' }]) {
      await expectRejects(Athanor.openReplica(box.dir(), bad as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    const pool = { connect: () => Promise.reject(new Error('never called')) };
    for (const bad of [{ name: 'a b', pool, on: {} }, { name: 'p', pool: {}, on: {} }, { name: 'p', pool, on: { T: 3 } }, { name: 'p', pool, on: { T: [] } }, { name: 'p', pool, on: {}, batchSize: 0 }, { name: 'p', pool, on: {}, prepare: 'no' }, { name: 'p', pool, on: {}, mergeStatements: 1 }, { name: 'p', pool, on: { T: { run: 3 } } }]) {
      expectThrows(() => db.pgProjection(bad as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(() => new PgMigrations(pool).add({ version: 0, name: 'x', up: '' })).toThrow(InvalidArgumentError);
    expect(db.commitSeq).toBe(0n);
  });
});
