/**
 * Exactly-once projections across crashes (DESIGN.md invariant 4): a child process
 * runs a processor (TypeScript handlers, then a declarative projection) while it
 * appends events, and is killed with SIGKILL at a random moment, many times in the
 * same directory. After every kill the parent checks that each event up to the
 * processor's cursor has its effect exactly once and no event beyond it has any;
 * at the end it catches up and checks every event of the log.
 *
 * ATHANOR_PROJECTION_TRIALS sets the number of trials per mode (default 10).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Athanor } from '../dist/index.js';
import { killAfterReady, removeDir, tempDir, type KilledChild } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'projection-child.mjs');
const TRIALS = Math.max(1, Number(process.env.ATHANOR_PROJECTION_TRIALS ?? 10) || 10);
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

function runChild(dir: string, mode: 'ts' | 'decl', batch: number, delayMs: number): Promise<KilledChild> {
  return killAfterReady(CHILD, [dir, mode, String(batch)], delayMs);
}

/** Checks the projection of `mode` against the log; returns its cursor. */
function check(db: Athanor, mode: 'ts' | 'decl', label: string): bigint {
  const name = mode === 'ts' ? 'crash_ts' : 'crash_decl';
  const cur = db.sql.get<{ id: number }>('SELECT last_event_id AS id FROM _athanor_cursors WHERE name = ?', [name]);
  const cursor = BigInt(cur?.id ?? 0);
  expect(cursor <= db.events.lastId, `${label}: cursor within the log`).toBe(true);
  const tot = db.sql.get<{ n: number; s: number }>(`SELECT n, s FROM totals_${mode} WHERE k = 1`) ?? { n: 0, s: 0 };
  const agg = db.sql.get<{ c: number; mn: number | null; mx: number | null; s: number | null }>(`SELECT count(*) AS c, min(event_id) AS mn, max(event_id) AS mx, sum(amount) AS s FROM applied_${mode}`)!;
  // Exactly the events 1..cursor, each once.
  expect(agg.c, `${label}: one row per event up to the cursor`).toBe(Number(cursor));
  if (cursor > 0n) {
    expect(agg.mn, label).toBe(1);
    expect(agg.mx, label).toBe(Number(cursor));
  }
  expect(tot.n, `${label}: no event applied twice`).toBe(agg.c);
  expect(tot.s, `${label}: totals match the rows`).toBe(agg.s ?? 0);
  // And the amounts are the logged ones.
  let expected = 0;
  for (const e of db.events.read<{ amount: number }>({ to: cursor })) expected += e.payload.amount;
  expect(agg.s ?? 0, `${label}: amounts come from the log`).toBe(expected);
  return cursor;
}

describe('projection crash safety (kill -9)', () => {
  it(`applies every event exactly once across ${TRIALS} kills per mode, TS handlers and declarative`, async () => {
    const dir = tempDir('athanor-projcrash-');
    dirs.push(dir);
    const progress = { ts: 0n, decl: 0n };
    for (let t = 0; t < TRIALS * 2; t++) {
      const mode = t % 2 === 0 ? 'ts' : 'decl';
      const batch = 1 + Math.floor(Math.random() * 40);
      const delay = 20 + Math.floor(Math.random() * 250);
      const run = await runChild(dir, mode, batch, delay);
      const label = `${mode} trial ${t} (batch ${batch}, kill after ${delay} ms)`;
      expect(run.stderr, label).toBe('');
      expect(run.signal, label).toBe('SIGKILL');
      const db = await Athanor.open(dir);
      try {
        const c = check(db, mode, label);
        expect(c >= progress[mode], `${label}: the cursor never goes back`).toBe(true);
        progress[mode] = c;
      } finally {
        await db.close();
      }
    }
    // Restart both, catch up completely, and check the whole log.
    const db = await Athanor.open(dir);
    try {
      const ts = db.processor('crash_ts').on<{ amount: number }>('Dep', (sql, e) => {
        sql.run('INSERT OR IGNORE INTO applied_ts(event_id, amount) VALUES (?, ?)', [e.id, e.payload.amount]);
        sql.run('UPDATE totals_ts SET n = n + 1, s = s + ? WHERE k = 1', [e.payload.amount]);
      }).build();
      const decl = db.projection({
        name: 'crash_decl',
        on: {
          Dep: [
            { sql: 'INSERT OR IGNORE INTO applied_decl(event_id, amount) VALUES (?, ?)', params: ['@id', '$.amount'] },
            { sql: 'UPDATE totals_decl SET n = n + 1, s = s + :a WHERE k = 1', params: { a: '$.amount' } },
          ],
        },
      });
      await ts.catchUp();
      await decl.catchUp();
      const last = db.events.lastId;
      expect(last > 0n).toBe(true);
      expect(check(db, 'ts', 'final ts')).toBe(last);
      expect(check(db, 'decl', 'final decl')).toBe(last);
    } finally {
      await db.close();
    }
  });
});
