/**
 * Opening a database loads its vector indexes in the background: the open
 * resolves at once, stats() and onProgress report the loading, searches wait
 * for it or fail with ERR_NOT_READY, and commits made meanwhile are kept.
 * The loader is held mid-load through its test seam (a file whose existence
 * pauses it), not by timing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NotReadyError, type LoadProgress } from '../dist/index.js';
import { lowRank } from './fixtures/lowrank.mjs';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => {
  delete process.env.ATHANOR_TEST_HOLD_LOADING;
  sb.cleanup();
});

describe('background loading', () => {
  it('open resolves while a collection loads; searches wait or fail with ERR_NOT_READY; commits meanwhile are kept', async () => {
    const dir = sb.dir();
    const dim = 16;
    const n = 5000;
    const data = lowRank({ n, dim, intrinsic: 8, seed: 5 });
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    const db = await sb.open(dir, { durability: 'none' });
    const c = db.vectors.create('big', { dimension: dim, metric: 'l2' });
    await c.upsertMany(ids, data);
    await c.waitIndexed();
    expect(c.stats()).toMatchObject({ state: 'ready', loaded: n, total: n });
    await db.close();

    const hold = path.join(sb.dir(), 'hold');
    fs.writeFileSync(hold, '');
    process.env.ATHANOR_TEST_HOLD_LOADING = hold;
    const db2 = await sb.open(dir, { durability: 'none' });
    const progress: LoadProgress[] = [];
    const c2 = db2.vectors.open('big', { onProgress: (p) => progress.push(p) });
    // The loader pauses after each batch of 1024 documents while the file exists.
    const st = c2.stats();
    expect(st.state).toBe('loading');
    expect(st.loaded).toBeLessThan(n);
    const q = data.subarray(7 * dim, 8 * dim);
    expectThrows(() => c2.search(q, { k: 1, wait: false }), NotReadyError, 'ERR_NOT_READY');
    await expectRejects(c2.searchBatch(q, { k: 1, wait: false }), NotReadyError, 'ERR_NOT_READY');
    // Commits while loading are held by the index and applied once it has loaded.
    const late = data.slice(0, dim).map((x) => x + 10);
    await c2.upsert('late', late);
    await db2.transaction().execute((tx) => tx.vectors('big').delete('d7'));
    expect(c2.stats().state).toBe('loading');
    // A waiting search (off the event loop) completes once loading does.
    const waiting = c2.searchBatch(new Float32Array([...q, ...late]), { k: 1 });
    fs.rmSync(hold);
    await c2.ready();
    expect(c2.stats()).toMatchObject({ state: 'ready', count: n, loaded: n, total: n, loadedFromDump: true });
    const [forD7, forLate] = await waiting;
    expect(forD7![0]!.id).not.toBe('d7');
    expect(forLate![0]!.id).toBe('late');
    expect(c2.search(late, { k: 1, wait: false })[0]!.id).toBe('late');
    expect(c2.verify()).toEqual({ documents: n });
    // onProgress: loading reports first, a last report once ready.
    await c2.ready();
    expect(progress[0]!.state).toBe('loading');
    expect(progress.at(-1)).toEqual({ state: 'ready', loaded: n, total: n });
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.loaded).toBeGreaterThanOrEqual(progress[i - 1]!.loaded);
    await db2.close();
  });

  it('a database closed while a collection loads closes cleanly and loads it at the next open', async () => {
    const dir = sb.dir();
    const dim = 8;
    const n = 3000;
    const data = lowRank({ n, dim, intrinsic: 8, seed: 9 });
    const db = await sb.open(dir, { durability: 'none' });
    await db.vectors.create('c', { dimension: dim }).upsertMany(Array.from({ length: n }, (_, i) => `d${i}`), data);
    await db.close();
    const hold = path.join(sb.dir(), 'hold');
    fs.writeFileSync(hold, '');
    process.env.ATHANOR_TEST_HOLD_LOADING = hold;
    const db2 = await sb.open(dir);
    expect(db2.vectors.open('c').stats().state).toBe('loading');
    await db2.close();
    delete process.env.ATHANOR_TEST_HOLD_LOADING;
    const db3 = await sb.open(dir);
    const c3 = db3.vectors.open('c');
    await c3.ready();
    expect(c3.count()).toBe(n);
    expect(c3.search(data.subarray(5 * dim, 6 * dim), { k: 1 })[0]!.id).toBe('d5');
    await db3.close();
  });
});
