/**
 * Vector projections across crashes: a child process runs a vector projection while
 * it appends events, and is killed with SIGKILL at a random moment, several times in
 * the same directory. After every kill the parent checks that the collection holds
 * exactly what the events up to the projection's cursor say (the cursor moves in
 * the same LMDB commit as the vectors), nothing of later events, and that the index
 * agrees with the store; at the end it catches up and checks the whole log.
 *
 * ATHANOR_VECTOR_PROJECTION_TRIALS sets the number of kills (default 4).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Athanor, Embedder } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { killAfterReady, removeDir, tempDir, type KilledChild } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'vector-projection-child.mjs');
const TRIALS = Math.max(1, Number(process.env.ATHANOR_VECTOR_PROJECTION_TRIALS ?? 4) || 4);
const dirs: string[] = [];
let modelDir = '';
beforeAll(async () => {
  modelDir = await ensureTestModel();
});
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

function runChild(dir: string, batch: number, delayMs: number): Promise<KilledChild> {
  return killAfterReady(CHILD, [dir, modelDir, String(batch)], delayMs);
}

/** The documents the log up to `cursor` defines: id → n. */
function expected(db: Athanor, cursor: bigint): Map<string, number> {
  const docs = new Map<string, number>();
  if (cursor === 0n) return docs;
  for (const e of db.events.read<{ n?: number; target?: string }>({ to: cursor })) {
    if (e.type === 'Doc') docs.set(String(e.id), e.payload.n!);
    else if (e.type === 'Drop') docs.delete(e.payload.target!);
  }
  return docs;
}

function check(db: Athanor, embedderDim: number, label: string): bigint {
  const cursor = db.getOpt('\u0000athanor/vector-projection/crash_vec')?.asI64() ?? 0n;
  expect(cursor <= db.events.lastId, `${label}: cursor within the log`).toBe(true);
  if (!db.vectors.has('docs')) {
    expect(cursor, `${label}: no collection, no progress`).toBe(0n);
    return cursor;
  }
  const col = db.vectors.open<{ n: number }>('docs');
  const want = expected(db, cursor);
  expect(col.count(), `${label}: documents = live Doc events up to the cursor ${cursor}`).toBe(want.size);
  for (const [id, n] of want) {
    const d = col.get(id);
    expect(d, `${label}: document ${id}`).toBeDefined();
    expect(d!.metadata, `${label}: metadata of ${id}`).toEqual({ n });
    expect(d!.vector.length).toBe(embedderDim);
  }
  // Nothing of events after the cursor.
  for (const e of db.events.read({ from: cursor + 1n })) {
    if (e.type === 'Doc') expect(col.get(String(e.id)), `${label}: event ${e.id} is after the cursor`).toBeUndefined();
  }
  expect(col.verify().documents, `${label}: index agrees with the store`).toBe(want.size);
  return cursor;
}

describe('vector projection crash safety (kill -9)', () => {
  it(`keeps the collection equal to the log up to its cursor across ${TRIALS} kills`, async () => {
    const dir = tempDir('athanor-vprojcrash-');
    dirs.push(dir);
    let last = 0n;
    let moved = 0;
    for (let t = 0; t < TRIALS; t++) {
      const batch = 1 + Math.floor(Math.random() * 16);
      const r = await runChild(dir, batch, 300 + Math.floor(Math.random() * 1200));
      expect(r.ready, `trial ${t}: child started (${r.stderr})`).toBe(true);
      expect(r.signal, `trial ${t}: child was killed, not failed (${r.stderr})`).toBe('SIGKILL');
      const db = await Athanor.open(dir);
      try {
        const cursor = check(db, 384, `trial ${t}`);
        expect(cursor >= last, `trial ${t}: cursor never moves back`).toBe(true);
        if (cursor > last) moved++;
        last = cursor;
      } finally {
        await db.close();
      }
    }
    expect(moved, 'the projection made progress between kills').toBeGreaterThan(0);
    // A clean catch-up after the last kill reaches the end of the log, still exact.
    const db = await Athanor.open(dir);
    const embedder = await Embedder.open(modelDir);
    try {
      const p = db.vectorProjection({
        name: 'crash_vec',
        collection: 'docs',
        embedder,
        on: { Doc: { text: '$.text', metadata: { n: '$.n' } }, Drop: { delete: true, id: '$.target' } },
      });
      await p.catchUp();
      expect(p.cursor()).toBe(db.events.lastId);
      check(db, embedder.dimension, 'final');
    } finally {
      embedder.close();
      await db.close();
    }
  });
});
