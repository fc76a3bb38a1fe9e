// db.metrics(): commit latency, outcomes, group sizes and conflicts as this handle saw them;
// the store's heads and sizes; processors' lag and dead letters; scheduler runs; vector
// index sizes; and the same as Prometheus text (prom-client).
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, i64, type Clock } from '../dist/index.js';
import { Sandbox, expectRejects } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

const clock = (t: number): Clock => ({ now: () => t, setTimeout: () => 0, clearTimeout: () => {} });

describe('metrics', () => {
  it('reports commits, conflicts, processors, scheduler runs and vector indexes', async () => {
    const db = await sandbox.open();
    // 20 transactions in flight share group commits.
    await Promise.all(Array.from({ length: 20 }, (_, i) => db.transaction().execute((tx) => tx.set(`k${i}`, i64(i)))));
    // Two read-modify-writes of one key on the same snapshot: the second conflicts once and is re-run.
    await db.transaction().execute((tx) => tx.set('hot', i64(0n)));
    await Promise.all(
      [1n, 2n].map((n) =>
        db.transaction().execute((tx) => {
          tx.set('hot', i64(tx.get('hot').asI64() + n));
          tx.log('bumped', { n: Number(n) });
        }),
      ),
    );
    await db.transaction().execute((tx) => tx.set('dup', i64(1n)), { idempotencyKey: 'once' });
    await db.transaction().execute((tx) => tx.set('dup', i64(2n)), { idempotencyKey: 'once' });

    db.migrations.add({ version: 1, name: 't', up: 'CREATE TABLE t (n INTEGER)', down: 'DROP TABLE t' });
    db.migrations.run();
    const p = db.processor('bumps').on('bumped', (sql, e) => void sql.run('INSERT INTO t VALUES (?)', [(e.payload as { n: number }).n])).build();
    await p.processBatch(); // consumes both events
    await db.transaction().execute((tx) => tx.log('bumped', { n: 3 })); // one behind now

    const docs = db.vectors.create('docs', { dimension: 2, metric: 'l2' });
    await docs.upsertMany(['a', 'b', 'c'], new Float32Array([0, 1, 1, 0, 1, 1]));
    await docs.waitIndexed();

    db.scheduler.configure({ clock: clock(Date.UTC(2026, 0, 1)) });
    await db.scheduler.register('once', { at: Date.UTC(2025, 0, 1), run: () => {} });
    await db.scheduler.runDue();

    const m = await db.metrics();
    expect(m.commits.applied).toBeGreaterThanOrEqual(25); // 20 + 1 + 2 + 1 + the scheduler's and the processor's own
    expect(m.commits.duplicate).toBe(0); // the retry with the same key was answered before reaching the writer
    expect(m.commits.failed).toBe(0);
    expect(m.commits.conflicts).toBe(1);
    expect(m.commits.latencyMs.count).toBe(m.commits.applied + m.commits.duplicate + m.commits.conflicts + m.commits.failed);
    expect(m.commits.latencyMs.p50).toBeGreaterThan(0);
    expect(m.commits.latencyMs.p50).toBeLessThanOrEqual(m.commits.latencyMs.p95);
    expect(m.commits.latencyMs.p95).toBeLessThanOrEqual(m.commits.latencyMs.p99);
    expect(m.commits.groupSize.max).toBeGreaterThan(1); // the 20 in flight shared groups
    expect(m.commits.queueDepth).toBe(0);
    expect(m.store.lastEventId).toBe(db.events.lastId);
    expect(m.store.commitSeq).toBe(db.commitSeq);
    expect(m.store.fileBytes).toBeGreaterThan(0);
    expect(m.processors).toEqual([{ name: 'bumps', cursor: 2n, lag: 1n, deadLetters: 0 }]);
    expect(m.scheduler).toEqual([{ task: 'once', outcome: 'ok', runs: 1 }]);
    expect(m.vectors).toMatchObject([{ collection: 'docs', documents: 3, pending: 0, tombstones: 0, graphPoints: 3 }]);
  });

  it('gives the Prometheus text exposition', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.set('a', i64(1n)));
    db.vectors.create('v', { dimension: 2, metric: 'cosine' });
    const text = await db.metrics({ format: 'prometheus' });
    expect(text).toContain('# HELP athanor_commits_total ');
    expect(text).toContain('# TYPE athanor_commit_duration_seconds histogram');
    expect(text).toMatch(/^athanor_commits_total\{outcome="applied"\} 1$/m);
    expect(text).toMatch(/^athanor_commit_duration_seconds_count 1$/m);
    expect(text).toMatch(/^athanor_commit_seq 1$/m);
    expect(text).toMatch(/^athanor_vector_documents\{collection="v"\} 0$/m);
    // Every sample line is `name{labels} value` with a finite number.
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$/);
  });

  it("times the store's fsyncs: durable commits add to athanor_fsync_seconds, durability 'none' adds nothing", async () => {
    const durable = await sandbox.open(undefined, { durability: 'full' });
    const start = (await durable.metrics()).store.fsyncMs.count;
    for (let i = 0; i < 3; i++) await durable.transaction().execute((tx) => tx.set(`k${i}`, i64(BigInt(i))));
    const first = (await durable.metrics()).store.fsyncMs;
    expect(first.count).toBeGreaterThanOrEqual(start + 3); // each awaited commit is a group of its own, synced
    expect(first.totalMs).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) await durable.transaction().execute((tx) => tx.set(`k${i}`, i64(BigInt(i + 1))));
    const second = (await durable.metrics()).store.fsyncMs;
    expect(second.count).toBeGreaterThanOrEqual(first.count + 3);
    expect(second.totalMs).toBeGreaterThan(first.totalMs);
    const text = await durable.metrics({ format: 'prometheus' });
    expect(text).toContain('# TYPE athanor_fsync_seconds histogram');
    const count = Number(/^athanor_fsync_seconds_count (\S+)$/m.exec(text)?.[1]);
    expect(count).toBeGreaterThanOrEqual(second.count);
    expect(text).toMatch(new RegExp(`^athanor_fsync_seconds_bucket\\{le="\\+Inf"\\} ${count}$`, 'm'));
    expect(Number(/^athanor_fsync_seconds_sum (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);

    // The same commits without fsync: counted as commits, not as syncs.
    const scratch = await sandbox.open(undefined, { durability: 'none' });
    for (let i = 0; i < 3; i++) await scratch.transaction().execute((tx) => tx.set(`k${i}`, i64(BigInt(i))));
    const m = await scratch.metrics();
    expect(m.commits.applied).toBe(3);
    expect(m.store.fsyncMs).toEqual({ count: 0, p50: 0, p95: 0, p99: 0, totalMs: 0 });
    expect(await scratch.metrics({ format: 'prometheus' })).toMatch(/^athanor_fsync_seconds_count 0$/m);
  });

  it('refuses unknown formats before doing anything', async () => {
    const db = await sandbox.open();
    await expectRejects(db.metrics({ format: 'xml' as 'object' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });
});
