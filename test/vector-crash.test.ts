/**
 * Crash safety of vector writes: a child bulk-upserts (and deletes) vectors in
 * transactions and is killed with SIGKILL at a random moment; the parent
 * reopens the directory and checks that the index and the store agree, every
 * acknowledged batch is there, no batch is partial, and a search never returns
 * a deleted document. Trials run back to back in the same directory.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Athanor } from '../dist/index.js';
import { BATCH, DIM, batchVectors } from './fixtures/vector-crash-child.mjs';
import { removeDir, tempDir } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'vector-crash-child.mjs');
const TRIALS = Math.max(1, Number(process.env.ATHANOR_VECTOR_CRASH_TRIALS ?? 6) || 6);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

/** Runs the child from batch `firstN`, kills it `delayMs` after its first ack; returns the acked batches. */
function runChild(dir: string, firstN: number, delayMs: number): Promise<{ acks: number[]; stderr: string; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, String(firstN)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acks: number[] = [];
    let stderr = '';
    let pending = '';
    let timer: NodeJS.Timeout | undefined;
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const m = /^ack (\d+)$/.exec(line);
        if (m) {
          acks.push(Number(m[1]));
          timer ??= setTimeout(() => child.kill('SIGKILL'), delayMs);
        }
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      clearTimeout(timer);
      clearTimeout(watchdog);
      resolve({ acks, stderr, signal });
    });
  });
}

function row(data: Float32Array, i: number): Float32Array {
  return data.subarray(i * DIM, (i + 1) * DIM);
}

describe('vector crash safety', () => {
  it(`survives SIGKILL during bulk upserts (${TRIALS} trials)`, async () => {
    const dir = tempDir('athanor-vcrash-');
    dirs.push(dir);
    let next = 1;
    for (let trial = 0; trial < TRIALS; trial++) {
      const run = await runChild(dir, next, 20 + Math.floor(Math.random() * 400));
      expect(run.signal, run.stderr).toBe('SIGKILL');
      expect(run.acks.length, run.stderr).toBeGreaterThan(0);
      const db = await Athanor.open(dir);
      try {
        const last = Number(db.get('last').asI64());
        const label = `trial ${trial} (batches ${next}..${last})`;
        // Every acknowledged batch survived; nothing beyond the last commit exists.
        expect(last, label).toBeGreaterThanOrEqual(Math.max(...run.acks));
        const c = db.vectors.open('crash');
        await c.ready();
        // Every earlier trial ended with a clean close, which left a dump; a kill
        // while the child replaced it in the background keeps the old or the new one.
        if (trial > 0) expect(c.stats().loadedFromDump, label).toBe(true);
        // Index and store agree (same ids), and the count is what whole batches give:
        // all of the last batch plus the odd half of every earlier one.
        expect(c.verify(), label).toEqual({ documents: last * (BATCH / 2) + BATCH / 2 });
        for (const n of [1, last - 1, last, last + 1]) {
          if (n < 1) continue;
          const odd = c.get(`b${n}-1`) !== undefined;
          const even = c.get(`b${n}-0`) !== undefined;
          expect([odd, even], `${label}: batch ${n}`).toEqual([n <= last, n === last]);
        }
        // A search never returns a deleted document: before the graph has caught up
        // (pending documents are scanned exactly) and after.
        const check = () => {
          for (const n of [Math.max(1, last - 2), last - 1]) {
            if (n < 1 || n >= last) continue;
            const vecs = batchVectors(n);
            for (let i = 0; i < 40; i += 2) {
              const hits = c.search(row(vecs, i), { k: 10 });
              for (const h of hits) {
                const m = /^b(\d+)-(\d+)$/.exec(h.id)!;
                const deleted = Number(m[1]) < last && Number(m[2]) % 2 === 0;
                expect(deleted, `${label}: deleted ${h.id} returned`).toBe(false);
              }
            }
          }
        };
        check();
        expect(await c.waitIndexed(), label).toBe(true);
        check();
        const lastVecs = batchVectors(last);
        expect(c.search(row(lastVecs, 3), { k: 1 })[0]!.id, label).toBe(`b${last}-3`);
        next = last + 1;
      } finally {
        await db.close();
      }
    }
  }, 300_000);
});
