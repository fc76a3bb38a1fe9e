/**
 * How filtered searches are planned (exact scan or graph walk, by estimated
 * cost) and how much the background dumps of a growing index write: real files
 * on disk, the real indexer thread.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { VectorCollection } from '../dist/index.js';
import { lowRank } from './fixtures/lowrank.mjs';
import { Sandbox } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

/** `{ bucket: i % 100 }`: a filter `bucket < p` matches p% of the documents. */
async function load(col: VectorCollection<{ bucket: number }>, data: Float32Array, dim: number, chunk: number, afterChunk?: () => Promise<void>): Promise<void> {
  const n = data.length / dim;
  for (let at = 0; at < n; at += chunk) {
    const end = Math.min(n, at + chunk);
    const ids = Array.from({ length: end - at }, (_, i) => `d${at + i}`);
    const metas = ids.map((_, i) => ({ bucket: (at + i) % 100 }));
    await col.upsertMany(ids, data.subarray(at * dim, end * dim), metas);
    await afterChunk?.();
  }
}

function filesBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((sum, f) => sum + fs.statSync(path.join(dir, f)).size, 0);
}

describe('filtered search plans', () => {
  it('scans exactly when a filter matches few documents and walks the graph when it matches most', async () => {
    const db = await sb.open();
    const dim = 64;
    const n = 6000;
    const data = lowRank({ n, dim, intrinsic: 16, seed: 1 });
    const col = db.vectors.create<{ bucket: number }>('plans', { dimension: dim });
    await load(col, data, dim, 2000);
    expect(await col.waitIndexed()).toBe(true);

    const narrow = col.explain({ filter: { bucket: { lt: 6 } } });
    expect(narrow.plan).toBe('exact');
    expect(narrow.reason).toBe('cost');
    expect(narrow.selectivity).toBeGreaterThan(0.02);
    expect(narrow.selectivity).toBeLessThan(0.15);
    const broad = col.explain({ filter: { bucket: { lt: 90 } } });
    expect(broad.plan).toBe('graph');
    expect(broad.reason).toBe('cost');
    expect(broad.graphCost).toBeLessThan(broad.exactCost);
    expect(col.explain().plan).toBe('graph');
    expect(col.explain({ exact: true })).toMatchObject({ plan: 'exact', reason: 'requested' });

    // The plan changes the cost, never the answer of an exact-planned search.
    const queries = lowRank({ n: 5, dim, intrinsic: 16, seed: 2, basisSeed: 1 });
    for (let q = 0; q < 5; q++) {
      const v = queries.subarray(q * dim, (q + 1) * dim);
      const planned = col.search(v, { k: 10, filter: { bucket: { lt: 6 } } });
      const exact = col.search(v, { k: 10, filter: { bucket: { lt: 6 } }, exact: true });
      expect(planned).toEqual(exact);
      expect(planned.every((h) => h.metadata!.bucket < 6)).toBe(true);
      // The graph plan still returns k matching documents.
      const walked = col.search(v, { k: 10, filter: { bucket: { lt: 90 } } });
      expect(walked).toHaveLength(10);
      expect(walked.every((h) => h.metadata!.bucket < 90)).toBe(true);
    }

    const small = db.vectors.create('small', { dimension: 4 });
    await small.upsert('a', [1, 0, 0, 0], { bucket: 1 });
    expect(small.explain({ filter: { bucket: 1 } })).toMatchObject({ plan: 'exact', reason: 'small' });
  });
});

describe('background dumps', () => {
  it('write less than twice the final index however a bulk load is chunked, and stats count the bytes', async () => {
    const dir = sb.dir();
    const db = await sb.open(dir);
    const dim = 32;
    const n = 6000;
    const data = lowRank({ n, dim, intrinsic: 12, seed: 3 });
    const col = db.vectors.create<{ bucket: number }>('bulk', { dimension: dim });
    // 60 chunks, each followed by an idle indexer: the most chances to dump a dumper can get.
    await load(col, data, dim, 100, async () => {
      expect(await col.waitIdle()).toBe(true);
    });
    const background = col.stats();
    expect(background.dumps).toBeGreaterThanOrEqual(2);
    expect(background.dumpedBytes).toBeGreaterThan(0);
    await db.close();
    // The dump written at close holds the final index.
    const final = filesBytes(path.join(dir, 'index', 'bulk'));
    expect(final).toBeGreaterThan(0);
    expect(background.dumpedBytes).toBeLessThanOrEqual(2 * final);

    const reopened = await sb.open(dir);
    const s = reopened.vectors.open('bulk').stats();
    expect(s.loadedFromDump).toBe(true);
    expect(s.count).toBe(n);
    expect(s.pending).toBe(0);
  });
});
