/**
 * Recall of the graph walk on collections well past the exact-search threshold,
 * for each metric and quantization, against a brute-force oracle computed here
 * (not athanor's exact search), with deletes and filters; and the memory a
 * quantized graph saves.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, type MetadataFilter, type VectorCollection, type VectorMetric, type VectorQuantization } from '../dist/index.js';
import { lowRank, mulberry32 } from './fixtures/lowrank.mjs';
import { Sandbox, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

const N = 20_000;
/** Binary codes keep one bit per component: they need more components to rank by. */
const dimOf = (q: VectorQuantization) => (q === 'binary' ? 128 : 32);
const QUERIES = 100;
const K = 10;

/** Low-rank rows with norms spread over 0.5..2, so l2 and dot rank differently from cosine. */
function data(n: number, seed: number, DIM: number): Float32Array {
  const v = lowRank({ n, dim: DIM, intrinsic: DIM >= 128 ? 32 : 12, seed, basisSeed: 7 });
  const r = mulberry32(seed + 1);
  for (let i = 0; i < n; i++) {
    const s = 0.5 + 1.5 * r();
    for (let d = 0; d < DIM; d++) v[i * DIM + d]! *= s;
  }
  return v;
}

/** Higher is nearer: the oracle's similarity for each metric. */
function similarity(metric: VectorMetric, a: Float32Array, ai: number, b: Float32Array, bi: number, DIM: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  let l2 = 0;
  for (let d = 0; d < DIM; d++) {
    const x = a[ai * DIM + d]!;
    const y = b[bi * DIM + d]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
    l2 += (x - y) * (x - y);
  }
  if (metric === 'cosine') return dot / Math.sqrt(na * nb);
  if (metric === 'dot') return dot;
  return -l2;
}

function bruteForce(metric: VectorMetric, docs: Float32Array, live: (i: number) => boolean, queries: Float32Array, qi: number, DIM: number): string[] {
  const best: [number, number][] = [];
  for (let i = 0; i < N; i++) {
    if (!live(i)) continue;
    const s = similarity(metric, docs, i, queries, qi, DIM);
    if (best.length < K || s > best[best.length - 1]![0]) {
      best.push([s, i]);
      best.sort((x, y) => y[0] - x[0]);
      if (best.length > K) best.pop();
    }
  }
  return best.map(([, i]) => `d${i}`);
}

/** Mean recall@10 of `search` against the oracle over the query set. */
function recall(metric: VectorMetric, c: VectorCollection, docs: Float32Array, queries: Float32Array, live: (i: number) => boolean, filter?: MetadataFilter): number {
  const DIM = c.info.dimension;
  let found = 0;
  for (let q = 0; q < QUERIES; q++) {
    const want = new Set(bruteForce(metric, docs, live, queries, q, DIM));
    const hits = c.search(queries.subarray(q * DIM, (q + 1) * DIM), { k: K, ...(filter ? { filter } : {}) });
    for (const h of hits) {
      const i = Number(h.id.slice(1));
      expect(live(i)).toBe(true);
      if (want.has(h.id)) found++;
    }
  }
  return found / (QUERIES * K);
}

const deleted = (i: number) => i % 20 === 7;
const tag = (i: number) => i % 10;

describe('quantization', () => {
  const ids = Array.from({ length: N }, (_, i) => `d${i}`);
  const metadata = ids.map((_, i) => ({ tag: tag(i) }));

  for (const quantization of ['none', 'int8', 'binary'] as VectorQuantization[]) {
    it(`${quantization}: recall@10 >= 0.95 at default settings for every metric, after deletes, with and without filters; scores are exact`, async () => {
      const DIM = dimOf(quantization);
      const docs = data(N, 31, DIM);
      const queries = data(QUERIES, 97, DIM);
      const db = await sb.open(sb.dir(), { durability: 'none' });
      for (const metric of ['cosine', 'l2', 'dot'] as VectorMetric[]) {
        const c = db.vectors.create(`q-${metric}`, { dimension: DIM, metric, quantization });
        expect(c.info.quantization).toBe(quantization);
        await c.upsertMany(ids, docs, metadata);
        await db.transaction().execute((tx) => {
          for (let i = 0; i < N; i++) if (deleted(i)) tx.vectors(`q-${metric}`).delete(`d${i}`);
        });
        await c.waitIndexed();
        expect(c.explain({ k: K }).plan).toBe('graph');
        const live = (i: number) => !deleted(i);
        const r = recall(metric, c, docs, queries, live);
        expect(r, `${metric} unfiltered`).toBeGreaterThanOrEqual(0.95);
        // A filter matching half the documents (walked or scanned, as the planner estimates).
        const half: MetadataFilter = { tag: { lt: 5 } };
        const rf = recall(metric, c, docs, queries, (i) => live(i) && tag(i) < 5, half);
        expect(rf, `${metric} filtered`).toBeGreaterThanOrEqual(0.95);
        // Scores are the exact similarity, not the quantized estimate.
        const hit = c.search(queries.subarray(0, DIM), { k: 1 })[0]!;
        const i = Number(hit.id.slice(1));
        const exact = similarity(metric, docs, i, queries, 0, DIM);
        expect(hit.score).toBeCloseTo(metric === 'l2' ? -Math.sqrt(-exact) : exact, 4);
      }
      await db.close();
    });
  }

  it('at 384 dimensions an int8 graph takes at most 0.4x the memory of the f32 graph; each reloads from its dump', async () => {
    const DIM = 384;
    const n = 3000;
    const docs = data(n, 31, DIM);
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    const dir = sb.dir();
    const db = await sb.open(dir, { durability: 'none' });
    const bytes: Record<string, number> = {};
    for (const quantization of ['none', 'int8', 'binary'] as VectorQuantization[]) {
      const c = db.vectors.create(`m-${quantization}`, { dimension: DIM, metric: 'cosine', quantization });
      await c.upsertMany(ids, docs);
      await c.waitIndexed();
      bytes[quantization] = c.stats().graphBytes;
    }
    expect(bytes.int8! / bytes.none!).toBeLessThanOrEqual(0.4);
    expect(bytes.binary!).toBeLessThan(bytes.int8!);
    await db.close();
    const db2 = await sb.open(dir);
    for (const quantization of ['none', 'int8', 'binary'] as VectorQuantization[]) {
      const c = db2.vectors.open(`m-${quantization}`)!;
      expect(c.info.quantization).toBe(quantization);
      await c.ready();
      expect(c.stats()).toMatchObject({ loadedFromDump: true, pending: 0, graphPoints: n, graphBytes: bytes[quantization] });
      expect(c.search(docs.subarray(5 * DIM, 6 * DIM), { k: 1 })[0]!.id).toBe('d5');
    }
    await db2.close();
  });

  it('refuses an unknown quantization before creating anything', async () => {
    const db = await sb.open(sb.dir());
    expectThrows(() => db.vectors.create('x', { dimension: 4, quantization: 'int4' as VectorQuantization }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.vectors.list()).toEqual([]);
    // The same name with another quantization is another collection's parameters.
    db.vectors.create('y', { dimension: 4, quantization: 'int8' });
    expectThrows(() => db.vectors.create('y', { dimension: 4 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await db.close();
  });
});
