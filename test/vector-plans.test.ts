/**
 * How filtered searches are planned (exact scan or graph walk, by estimated
 * cost) and how much the background dumps of a growing index write: real files
 * on disk, the real indexer thread.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MetadataFilter, VectorCollection } from '../dist/index.js';
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
    const c = reopened.vectors.open('bulk');
    await c.ready();
    const s = c.stats();
    expect(s.loadedFromDump).toBe(true);
    expect(s.count).toBe(n);
    // The dump holds the built (frozen) graph; what was inserted after its last merge
    // (less than a third of the documents) is indexed again.
    expect(s.pending).toBeLessThan(n / 3);
    expect(await c.waitIndexed()).toBe(true);
    expect(c.stats()).toMatchObject({ pending: 0, graphPoints: n });
  });
});

/** Mixed metadata: numbers (whole and fractional), strings, booleans, null, arrays, nested objects, missing fields, none at all. */
interface Mixed {
  n: number;
  s?: string;
  b: boolean;
  tags: string | string[];
  a: { x: number };
  z?: null;
}
function mixedMeta(i: number): Mixed | undefined {
  if (i % 7 === 0) return undefined;
  const m: Mixed = { n: i % 3 === 0 ? (i % 50) + 0.5 : i % 50, b: i % 2 === 0, tags: i % 13 === 0 ? ['x', 'y'] : 'x', a: { x: i % 5 } };
  if (i % 11 !== 0) m.s = ['red', 'green', 'blue'][i % 3];
  if (i % 17 === 0) m.z = null;
  return m;
}

/** Each filter with the same rule written independently in plain JS. */
const MIXED_FILTERS: [MetadataFilter, (m: Mixed | undefined) => boolean][] = [
  [{ n: { gte: 10, lt: 20 } }, (m) => m !== undefined && m.n >= 10 && m.n < 20],
  [{ n: 7 }, (m) => m?.n === 7],
  [{ n: { ne: 7 } }, (m) => m !== undefined && m.n !== 7],
  [{ n: { in: [1, 2.5, 3] } }, (m) => m !== undefined && [1, 2.5, 3].includes(m.n)],
  [{ s: 'red' }, (m) => m?.s === 'red'],
  [{ s: { ne: 'red' } }, (m) => m !== undefined && m.s !== 'red'],
  [{ s: { gte: 'blue', lt: 'red' } }, (m) => m?.s !== undefined && m.s >= 'blue' && m.s < 'red'],
  [{ s: { in: ['green', 'purple'] } }, (m) => m?.s === 'green'],
  [{ b: true, n: { lt: 25 } }, (m) => m !== undefined && m.b && m.n < 25],
  [{ tags: 'y' }, (m) => Array.isArray(m?.tags) && m.tags.includes('y')],
  [{ 'a.x': { gt: 2 } }, (m) => m !== undefined && m.a.x > 2],
  [{ z: null }, (m) => m !== undefined && m.z === null],
  [{ missing: { ne: 1 } }, (m) => m !== undefined],
  [{ s: 'nowhere' }, () => false],
];

function bruteForce(data: Float32Array, dim: number, metas: (Mixed | undefined)[], live: (i: number) => boolean, q: Float32Array, pred: (m: Mixed | undefined) => boolean, k: number): string[] {
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const qn = norm(q);
  const scored: [number, string][] = [];
  for (let i = 0; i < metas.length; i++) {
    if (!live(i) || !pred(metas[i])) continue;
    const v = data.subarray(i * dim, (i + 1) * dim);
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += v[d] * q[d];
    scored.push([dot / (norm(v) * qn), `d${i}`]);
  }
  scored.sort((x, y) => y[0] - x[0]);
  return scored.slice(0, k).map((x) => x[1]);
}

describe('filters read from metadata columns', () => {
  it('answer exactly what the metadata answers, for first-time filters, after writes and deletes, and after reopening', async () => {
    const dir = sb.dir();
    let db = await sb.open(dir);
    const dim = 16;
    const n = 3000;
    const data = lowRank({ n, dim, intrinsic: 8, seed: 5 });
    const metas = Array.from({ length: n }, (_, i) => mixedMeta(i));
    let col = db.vectors.create<Mixed>('mixed', { dimension: dim });
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    // Two thirds before any filter ran, a third after (the columns grow with the writes).
    const first = 2000;
    await col.upsertMany(ids.slice(0, first), data.subarray(0, first * dim), metas.slice(0, first));
    const queries = lowRank({ n: 5, dim, intrinsic: 8, seed: 6, basisSeed: 5 });
    const deleted = new Set<number>();
    const check = (upTo: number) => {
      for (let qi = 0; qi < 5; qi++) {
        const q = queries.subarray(qi * dim, (qi + 1) * dim);
        for (const [filter, pred] of MIXED_FILTERS) {
          const want = bruteForce(data, dim, metas, (i) => i < upTo && !deleted.has(i), q, pred, 15);
          const got = col.search(q, { k: 15, exact: true, filter });
          expect(got.map((h) => h.id), JSON.stringify(filter)).toEqual(want);
          // Whatever the plan, every hit passes the rule.
          const planned = col.search(q, { k: 15, filter });
          expect(planned.every((h) => pred(metas[Number(h.id.slice(1))])), JSON.stringify(filter)).toBe(true);
        }
      }
    };
    check(first);
    await col.upsertMany(ids.slice(first), data.subarray(first * dim), metas.slice(first));
    for (const i of [1, 2, 10, 100, 2001, 2500]) {
      await col.delete(`d${i}`);
      deleted.add(i);
    }
    // Replacing a document's metadata gives its slot's successor the new values.
    metas[3] = { n: 7, s: 'red', b: true, tags: ['y'], a: { x: 4 }, z: null };
    await col.upsert('d3', data.subarray(3 * dim, 4 * dim), metas[3]);
    check(n);
    expect(await col.waitIndexed()).toBe(true);
    check(n);
    await db.close();
    db = await sb.open(dir);
    col = db.vectors.open<Mixed>('mixed');
    expect(await col.waitIndexed()).toBe(true);
    check(n);
  });
});
