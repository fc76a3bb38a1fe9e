/**
 * Vector collections through the public API: real files on disk, the real
 * writer and indexer threads.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Athanor,
  InvalidArgumentError,
  NotFoundError,
  VectorDimensionError,
  ClosedError,
  i64,
  type VectorCollection,
  type VectorMetric,
} from '../dist/index.js';
import { lowRank, mulberry32 } from './fixtures/lowrank.mjs';
import { Sandbox, expectRejects, expectThrows, fingerprint, loopDuring, expectLoopTurned } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

function randomVectors(n: number, dim: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < out.length; i++) out[i] = r() * 2 - 1;
  return out;
}

function row(data: Float32Array, i: number, dim: number): Float32Array {
  return data.subarray(i * dim, (i + 1) * dim);
}

/** The score the API promises for each metric. */
function score(metric: VectorMetric, a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  let l2 = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
    l2 += (a[i]! - b[i]!) ** 2;
  }
  if (metric === 'cosine') return dot / Math.sqrt(na * nb);
  if (metric === 'dot') return dot;
  return -Math.sqrt(l2);
}

/** Brute-force top-k ids over `docs`, best first. */
function bruteForce(metric: VectorMetric, docs: Map<string, Float32Array>, q: Float32Array, k: number, keep: (id: string) => boolean = () => true): { id: string; score: number }[] {
  return [...docs]
    .filter(([id]) => keep(id))
    .map(([id, v]) => ({ id, score: score(metric, q, v) }))
    .sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : 1))
    .slice(0, k);
}

describe('collections', () => {
  it('are created, listed, opened and dropped; definitions persist', async () => {
    const dir = sb.dir();
    const db = await sb.open(dir);
    const docs = db.vectors.create('docs', { dimension: 4, metric: 'cosine', m: 8, efConstruction: 50, efSearch: 20, quantization: 'none' });
    expect(docs.info).toEqual({ name: 'docs', dimension: 4, metric: 'cosine', m: 8, efConstruction: 50, efSearch: 20, quantization: 'none' });
    // Same parameters: the same collection.
    expect(db.vectors.create('docs', { dimension: 4, metric: 'cosine', m: 8, efConstruction: 50, efSearch: 20 }).name).toBe('docs');
    db.vectors.create('other', { dimension: 2, metric: 'l2' });
    expect(db.vectors.list().map((c) => c.name)).toEqual(['docs', 'other']);
    expect(db.vectors.has('docs')).toBe(true);
    await docs.upsert('a', [1, 0, 0, 0]);
    await db.close();
    const db2 = await sb.open(dir);
    const again = db2.vectors.open('docs');
    expect(again.info.m).toBe(8);
    expect(again.count()).toBe(1);
    expect(db2.vectors.drop('docs')).toBe(true);
    expect(db2.vectors.drop('docs')).toBe(false);
    expectThrows(() => again.count(), NotFoundError, 'ERR_NOT_FOUND');
    expectThrows(() => db2.vectors.open('docs'), NotFoundError, 'ERR_NOT_FOUND');
    expect(db2.vectors.create('docs', { dimension: 3 }).count()).toBe(0);
    expect(db2.vectors.list().map((c) => [c.name, c.metric, c.m, c.efConstruction, c.efSearch])).toEqual([
      ['docs', 'cosine', 16, 200, 64],
      ['other', 'l2', 16, 200, 64],
    ]);
  });

  it('rejects bad parameters with typed errors and writes nothing', async () => {
    const db = await sb.open();
    const bad: [string, unknown][] = [
      ['', { dimension: 3 }],
      ['a/b', { dimension: 3 }],
      ['x', { dimension: 0 }],
      ['x', { dimension: 4097 }],
      ['x', { dimension: 1.5 }],
      ['x', { dimension: 3, metric: 'manhattan' }],
      ['x', { dimension: 3, m: 1 }],
      ['x', { dimension: 3, m: 300 }],
      ['x', { dimension: 3, m: 16, efConstruction: 8 }],
      ['x', { dimension: 3, efSearch: 0 }],
      ['x', null],
    ];
    for (const [name, opts] of bad) {
      expectThrows(() => db.vectors.create(name, opts as { dimension: number }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    db.vectors.create('x', { dimension: 3 });
    // Existing name, different parameters.
    expectThrows(() => db.vectors.create('x', { dimension: 4 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.vectors.list().map((c) => c.name)).toEqual(['x']);
  });

  it('refuse names with lone surrogates everywhere, before anything is written', async () => {
    const db = await sb.open();
    // Both lone surrogates would become U+FFFD in UTF-8: they must not alias this collection.
    const replacement = db.vectors.create('a\uFFFD', { dimension: 2 });
    await replacement.upsert('d', [1, 0]);
    for (const name of ['a\uD800', 'a\uDC00', '\uDBFF']) {
      expectThrows(() => db.vectors.drop(name), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.vectors.create(name, { dimension: 2 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.vectors.open(name), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.vectors.has(name), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      await expectRejects(
        db.transaction().execute((tx) => tx.vectors(name).upsert('e', [0, 1])),
        InvalidArgumentError,
        'ERR_INVALID_ARGUMENT',
      );
    }
    expect(db.vectors.list().map((c) => c.name)).toEqual(['a\uFFFD']);
    expect(replacement.count()).toBe(1);
    expect(replacement.get('e')).toBeUndefined();
  });
});

describe('documents', () => {
  it('upsert, get, count, delete; get returns the vector as written and the metadata', async () => {
    const db = await sb.open();
    const c = db.vectors.create<{ lang: string }>('docs', { dimension: 3, metric: 'cosine' });
    await c.upsert('a', new Float32Array([3, 0, 4]), { lang: 'en' });
    await c.upsert('b', [0, 1, 0]);
    expect(c.count()).toBe(2);
    const a = c.get('a')!;
    expect([...a.vector]).toEqual([3, 0, 4]);
    expect(a.metadata).toEqual({ lang: 'en' });
    expect(c.get('b')!.metadata).toBeUndefined();
    expect(c.get('zz')).toBeUndefined();
    await c.upsert('a', [1, 1, 1], { lang: 'fr' });
    expect(c.count()).toBe(2);
    expect(c.get('a')!.metadata).toEqual({ lang: 'fr' });
    await c.delete('a');
    await c.delete('never-existed');
    expect(c.count()).toBe(1);
    expect(c.get('a')).toBeUndefined();
    expect(c.verify()).toEqual({ documents: 1 });
  });

  it('refuses bad vectors with typed errors before anything is written', async () => {
    const db = await sb.open();
    const c = db.vectors.create('docs', { dimension: 3, metric: 'cosine' });
    await db.transaction().execute((tx) => tx.set('k', i64(1)));
    await c.upsert('ok', [1, 2, 3]);
    const before = fingerprint(db, ['k']);
    await expectRejects(c.upsert('x', [1, 2]), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
    await expectRejects(c.upsert('x', [1, NaN, 2]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsert('x', [1, Infinity, 2]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsert('x', [0, 0, 0]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsert('', [1, 2, 3]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsert('x'.repeat(501), [1, 2, 3]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsert('x', [1, 2, 3], { bad: NaN }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // Bulk: the wrong length, and NaN / zero vectors caught in Rust before queueing.
    await expectRejects(c.upsertMany(['p', 'q'], new Float32Array(5)), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
    const withNaN = new Float32Array([1, 1, 1, 1, NaN, 1]);
    await expectRejects(c.upsertMany(['p', 'q'], withNaN), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const withZero = new Float32Array([1, 1, 1, 0, 0, 0]);
    await expectRejects(c.upsertMany(['p', 'q'], withZero), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(c.upsertMany(['p', 'q'], new Float32Array(6).fill(1), [{}]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // In a transaction, the whole transaction fails: its state write and event too.
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.set('k', i64(2));
        tx.log('e', {});
        tx.vectors('docs').upsertMany(['p', 'q'], withZero);
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.set('k', i64(2));
        tx.vectors('nope').delete('a');
      }),
      NotFoundError,
      'ERR_NOT_FOUND',
    );
    expect(fingerprint(db, ['k'])).toEqual(before);
    expect(c.count()).toBe(1);
    expect(c.get('p')).toBeUndefined();
    expectThrows(() => c.search([1, 2]), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
    expectThrows(() => c.search([0, 0, 0]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => c.search([1, 2, 3], { k: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => c.search([1, 2, 3], { filter: { x: { like: 1 } } as never }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('commit atomically with state and events in one transaction', async () => {
    const dir = sb.dir();
    const db = await sb.open(dir);
    const c = db.vectors.create('docs', { dimension: 2, metric: 'l2' });
    const r = await db.transaction().execute((tx) => {
      tx.set('n', i64(2));
      tx.log('indexed', { ids: ['a', 'b'] });
      const v = tx.vectors('docs');
      v.upsert('a', [0, 0]);
      v.upsertMany(['b', 'c'], new Float32Array([1, 0, 5, 5]));
      v.delete('c');
      return 'done';
    });
    expect(r.value).toBe('done');
    expect(r.eventCount).toBe(1);
    expect(c.count()).toBe(2);
    expect(c.search([0.9, 0], { k: 5 }).map((h) => h.id)).toEqual(['b', 'a']);
    await db.close();
    const db2 = await sb.open(dir);
    expect(db2.get('n').asI64()).toBe(2n);
    expect(db2.vectors.open('docs').count()).toBe(2);
    expect([...db2.events.read()].length).toBe(1);
  });
});

describe('search', () => {
  for (const metric of ['cosine', 'dot', 'l2'] as const) {
    it(`scores and orders results for ${metric}`, async () => {
      const db = await sb.open();
      const dim = 8;
      const c = db.vectors.create(metric, { dimension: dim, metric });
      const n = 300;
      const data = randomVectors(n, dim, 7);
      const ids = Array.from({ length: n }, (_, i) => `d${i}`);
      await c.upsertMany(ids, data);
      const docs = new Map(ids.map((id, i) => [id, row(data, i, dim)]));
      const q = randomVectors(1, dim, 99);
      const hits = c.search(q, { k: 10 });
      const want = bruteForce(metric, docs, q, 10);
      expect(hits.map((h) => h.id)).toEqual(want.map((w) => w.id));
      for (let i = 0; i < hits.length; i++) expect(hits[i]!.score).toBeCloseTo(want[i]!.score, 4);
    });
  }

  it('sees an acknowledged write at once and never returns a deleted document', async () => {
    const db = await sb.open(undefined, { durability: 'none' });
    const dim = 16;
    const c = db.vectors.create('g', { dimension: dim, metric: 'cosine' });
    const n = 3000;
    const data = lowRank({ n, dim, intrinsic: 8, seed: 3 });
    await c.upsertMany(Array.from({ length: n }, (_, i) => `v${i}`), data);
    // Not waiting for the indexer: pending documents are searched exactly.
    expect(c.search(row(data, 5, dim), { k: 1 })[0]!.id).toBe('v5');
    expect(await c.waitIndexed()).toBe(true);
    expect(c.stats()).toMatchObject({ count: n, pending: 0, graphPoints: n });
    for (let i = 0; i < 60; i++) {
      await c.delete(`v${i}`);
      expect(c.search(row(data, i, dim), { k: 5 }).some((h) => h.id === `v${i}`)).toBe(false);
    }
    await c.upsert('fresh', row(data, 0, dim));
    expect(c.search(row(data, 0, dim), { k: 1 })[0]!.id).toBe('fresh');
  });

  it('filters on metadata (equality, in, range) inside the walk and exactly when selective', async () => {
    const db = await sb.open(undefined, { durability: 'none' });
    const dim = 12;
    type Meta = { i: number; lang: string; tags: string[] };
    const c = db.vectors.create<Meta>('f', { dimension: dim, metric: 'cosine' });
    const n = 4000;
    const data = lowRank({ n, dim, intrinsic: 6, seed: 5 });
    const langs = ['en', 'fr', 'de', 'es'];
    const metas: Meta[] = Array.from({ length: n }, (_, i) => ({ i, lang: langs[i % 4]!, tags: i % 10 === 0 ? ['ten'] : [] }));
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    await c.upsertMany(ids, data, metas);
    await c.waitIndexed();
    const docs = new Map(ids.map((id, i) => [id, row(data, i, dim)]));
    const meta = new Map(ids.map((id, i) => [id, metas[i]!]));
    const q = lowRank({ n: 1, dim, intrinsic: 6, seed: 77, basisSeed: 5 });
    const cases: [Parameters<typeof c.search>[1], (m: Meta) => boolean][] = [
      [{ filter: { lang: 'fr' } }, (m) => m.lang === 'fr'],
      [{ filter: { lang: { in: ['de', 'es'] } } }, (m) => m.lang === 'de' || m.lang === 'es'],
      [{ filter: { i: { gte: 100, lt: 120 } } }, (m) => m.i >= 100 && m.i < 120],
      [{ filter: { i: { lt: 3 } } }, (m) => m.i < 3],
      [{ filter: { tags: 'ten', lang: 'en' } }, (m) => m.tags.includes('ten') && m.lang === 'en'],
      [{ filter: { lang: 'xx' } }, () => false],
    ];
    for (const [opts, keep] of cases) {
      const hits = c.search(q, { k: 10, ...opts });
      const want = bruteForce('cosine', docs, q, 10, (id) => keep(meta.get(id)!));
      expect(hits.length).toBe(want.length);
      for (const h of hits) expect(keep(h.metadata!)).toBe(true);
      // Exact mode must agree with brute force exactly.
      expect(c.search(q, { k: 10, exact: true, ...opts }).map((h) => h.id)).toEqual(want.map((w) => w.id));
    }
  });

  it('returns metadata numbers exactly as stored, as get() does', async () => {
    const db = await sb.open();
    const c = db.vectors.create<{ xs: number[]; p: number }>('nums', { dimension: 2 });
    const r = mulberry32(42);
    // Doubles with 17 significant digits: the ones an inexact JSON number parser gets wrong in the last digit.
    const xs = Array.from({ length: 2000 }, () => (r() - 0.5) * 10 ** Math.floor(r() * 40 - 20));
    const meta = { xs, p: 0.1 + 0.2 };
    await c.upsert('a', [1, 0], meta);
    expect(c.get('a')!.metadata).toEqual(meta);
    const [hit] = c.search([1, 0], { k: 1 });
    expect(hit!.metadata!.p).toBe(0.1 + 0.2);
    const wrong = hit!.metadata!.xs.filter((x, i) => x !== xs[i]).length;
    expect(wrong).toBe(0);
    expect((await c.searchBatch(new Float32Array([1, 0]), { k: 1 }))[0]![0]!.metadata).toEqual(meta);
  });

  it('refuses metadata keys reserved for athanor', async () => {
    const db = await sb.open();
    const c = db.vectors.create('r', { dimension: 2 });
    await expectRejects(c.upsert('a', [1, 0], { '\u0000athanor/event': '1' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(c.count()).toBe(0);
  });

  it('searchBatch answers like single searches, off the main thread', async () => {
    const db = await sb.open(undefined, { durability: 'none' });
    const dim = 16;
    const c = db.vectors.create('b', { dimension: dim, metric: 'l2' });
    const n = 2000;
    await c.upsertMany(Array.from({ length: n }, (_, i) => `d${i}`), randomVectors(n, dim, 1));
    await c.waitIndexed();
    const queries = randomVectors(50, dim, 2);
    const batch = await c.searchBatch(queries, { k: 7, efSearch: 80 });
    expect(batch.length).toBe(50);
    for (let i = 0; i < 50; i++) expect(batch[i]!.map((h) => h.id)).toEqual(c.search(row(queries, i, dim), { k: 7, efSearch: 80 }).map((h) => h.id));
    // Off the main thread: the event loop keeps turning while a long batch runs.
    const many = randomVectors(10_000, dim, 3);
    const long = await loopDuring(() => c.searchBatch(many, { k: 7, exact: true }));
    expect(long.value).toHaveLength(10_000);
    expectLoopTurned(long);
    await expectRejects(c.searchBatch(new Float32Array(dim + 1)), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
  });

  it('rebuilds on demand and by itself past the tombstone threshold, and loads its dump on reopen', async () => {
    const dir = sb.dir();
    const db = await sb.open(dir, { durability: 'none' });
    const dim = 8;
    const c = db.vectors.create('r', { dimension: dim, metric: 'cosine' });
    const n = 2000;
    const data = lowRank({ n, dim, intrinsic: 8, seed: 11 });
    const ids = Array.from({ length: n }, (_, i) => `d${i}`);
    await c.upsertMany(ids, data);
    await c.waitIndexed();
    c.rebuild();
    await c.waitIndexed();
    expect(c.stats().rebuilds).toBe(1);
    await db.transaction().execute((tx) => {
      for (let i = 0; i < n / 2; i++) tx.vectors('r').delete(`d${i}`);
    });
    await c.waitIndexed();
    expect(c.stats()).toMatchObject({ count: n / 2, tombstones: 0, graphPoints: n / 2, rebuilds: 2 });
    expect(c.search(row(data, n - 1, dim), { k: 1 })[0]!.id).toBe(`d${n - 1}`);
    await db.close();
    expectThrows(() => c.count(), ClosedError, 'ERR_CLOSED');
    const db2 = await sb.open(dir);
    const c2 = db2.vectors.open('r');
    expect(c2.verify()).toEqual({ documents: n / 2 });
    // The graph dumped at close is loaded as is: nothing left to index.
    expect(c2.stats()).toMatchObject({ count: n / 2, pending: 0, graphPoints: n / 2, tombstones: 0 });
    expect(fs.existsSync(path.join(dir, 'index', 'r', 'manifest.json'))).toBe(true);
    await c2.waitIndexed();
    expect(c2.search(row(data, n - 2, dim), { k: 1 })[0]!.id).toBe(`d${n - 2}`);
  });

  it('property: past the exact-search threshold, after random upserts and deletes, exact search equals brute force and the graph walk returns live documents with their current scores', async () => {
    const db = await sb.open(undefined, { durability: 'none' });
    const dim = 16;
    // Well past the 1000 live documents under which every search is exact
    // (EXACT_THRESHOLD in native/core/src/vector/index.rs), so the graph is walked.
    const base = 2000;
    const baseData = randomVectors(base, dim, 99);
    const baseIds = Array.from({ length: base }, (_, i) => `d${i}`);
    const walk = { k: 5, efSearch: 16 };
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: base + 200 }), fc.integer({ min: 1, max: 1 << 30 })), { minLength: 1, maxLength: 120 }),
        fc.integer({ min: 1, max: 1 << 30 }),
        async (ops, qseed) => {
          const name = `p${round++}`;
          const c: VectorCollection = db.vectors.create(name, { dimension: dim, metric: 'l2' });
          const model = new Map<string, Float32Array>(baseIds.map((id, i) => [id, row(baseData, i, dim)]));
          await c.upsertMany(baseIds, baseData);
          expect(await c.waitIndexed()).toBe(true);
          // These land on an indexed graph: replaced and deleted points, pending new ones.
          await db.transaction().execute((tx) => {
            for (const [del, id, seed] of ops) {
              if (del) {
                tx.vectors(name).delete(`d${id}`);
                model.delete(`d${id}`);
              } else {
                const v = randomVectors(1, dim, seed);
                tx.vectors(name).upsert(`d${id}`, v);
                model.set(`d${id}`, v);
              }
            }
          });
          const q = randomVectors(1, dim, qseed);
          const exact = c.search(q, { k: 5, exact: true });
          const want = bruteForce('l2', model, q, 5);
          // Same scores in the same order; ids may differ only between equal vectors.
          expect(exact.length).toBe(want.length);
          for (let i = 0; i < want.length; i++) {
            expect(exact[i]!.score).toBeCloseTo(want[i]!.score, 4);
            expect(score('l2', q, model.get(exact[i]!.id)!)).toBeCloseTo(exact[i]!.score, 4);
          }
          expect(c.explain(walk)).toMatchObject({ plan: 'graph', reason: 'cost' });
          const walked = c.search(q, walk);
          expect(walked).toHaveLength(5);
          for (const h of walked) {
            expect(model.has(h.id), `deleted ${h.id} returned`).toBe(true);
            // Scored on the document's current vector, not one it replaced.
            expect(score('l2', q, model.get(h.id)!)).toBeCloseTo(h.score, 4);
          }
          expect(c.count()).toBe(model.size);
          db.vectors.drop(name);
        },
      ),
      { numRuns: 8 },
    );
  }, 120_000);
});

describe('recall', () => {
  it('recall@10 is at least 0.95 at default parameters on a low-rank dataset', async () => {
    const db = await sb.open(undefined, { durability: 'none' });
    const dim = 128;
    const n = 10_000;
    const data = lowRank({ n, dim, intrinsic: 32, seed: 1 });
    const queries = lowRank({ n: 100, dim, intrinsic: 32, seed: 2, basisSeed: 1 });
    const c = db.vectors.create('recall', { dimension: dim, metric: 'cosine' });
    await c.upsertMany(Array.from({ length: n }, (_, i) => String(i)), data);
    expect(await c.waitIndexed()).toBe(true);
    expect(c.explain({ k: 10 }).plan).toBe('graph');
    // Ground truth by brute force over the raw vectors, independent of athanor's exact search.
    const docs = new Map(Array.from({ length: n }, (_, i) => [String(i), row(data, i, dim)]));
    let found = 0;
    for (let i = 0; i < 100; i++) {
      const q = row(queries, i, dim);
      const truth = new Set(bruteForce('cosine', docs, q, 10).map((h) => h.id));
      for (const h of c.search(q, { k: 10 })) if (truth.has(h.id)) found++;
    }
    expect(found / 1000).toBeGreaterThanOrEqual(0.95);
  }, 120_000);
});

describe('several processes', () => {
  it('a process sees the vector writes, creates and drops of another one', async () => {
    const dir = sb.dir();
    const db = await sb.open(dir);
    const c = db.vectors.create('mp', { dimension: 3, metric: 'l2' });
    db.vectors.create('gone', { dimension: 2 });
    await c.upsertMany(['a', 'b', 'c'], new Float32Array([0, 0, 0, 1, 0, 0, 2, 0, 0]));
    expect(c.search([0, 0, 0], { k: 2 }).map((h) => h.id)).toEqual(['a', 'b']);
    const dist = new URL('../dist/index.js', import.meta.url).href;
    const code = `
      import { Athanor } from ${JSON.stringify(dist)};
      const db = await Athanor.open(${JSON.stringify(dir)});
      const c = db.vectors.open('mp');
      await db.transaction().execute((tx) => {
        tx.vectors('mp').delete('a');
        tx.vectors('mp').upsert('d', [0.1, 0, 0], { from: 'child' });
        tx.vectors('mp').upsert('c', [5, 0, 0]);
      });
      db.vectors.drop('gone');
      const o = db.vectors.create('other', { dimension: 2 });
      await o.upsert('x', [1, 1]);
      await db.close();
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const hits = c.search([0, 0, 0], { k: 3 });
    expect(hits.map((h) => h.id)).toEqual(['d', 'b', 'c']);
    expect(hits[0]!.metadata).toEqual({ from: 'child' });
    expect(hits[2]!.score).toBeCloseTo(-5, 5);
    expect(c.count()).toBe(3);
    expect(c.verify()).toEqual({ documents: 3 });
    expect(db.vectors.list().map((x) => x.name)).toEqual(['mp', 'other']);
    expect(db.vectors.open('other').count()).toBe(1);
    // This process keeps writing on top.
    await c.upsert('e', [0, 0, 0]);
    expect(c.search([0, 0, 0], { k: 1 })[0]!.id).toBe('e');
  });
});

describe('lifecycle', () => {
  it('a closed database refuses vector calls', async () => {
    const db: Athanor = await Athanor.open(sb.dir());
    const c = db.vectors.create('x', { dimension: 2 });
    await db.close();
    expectThrows(() => c.search([1, 0]), ClosedError, 'ERR_CLOSED');
    expectThrows(() => db.vectors.list(), ClosedError, 'ERR_CLOSED');
  });
});
