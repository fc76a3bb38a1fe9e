/**
 * The CLI's demo (what `npm start` runs): it must work on a fresh directory and
 * again on the same one, where idempotency keys, migrations, processor cursors and
 * collection definitions carry over instead of repeating work.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Athanor } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { removeDir, tempDir } from './helpers.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const dir = tempDir('athanor-cli-');
afterAll(() => removeDir(dir));

let model = '';
const demo = (): string => execFileSync(process.execPath, [CLI, 'demo', '--dir', dir, '--model', model], { encoding: 'utf8' });

describe('cli demo', () => {
  it('runs on a fresh directory, then again on the same one', async () => {
    model = await ensureTestModel();
    const first = demo();
    expect(first).toContain('1 migration(s) applied now');
    expect(first).toMatch(/processor demo\.flows applied \d+ new event\(s\)/);
    expect(first).toMatch(/vector search in demo\.notes \(3 documents\): alice/);
    expect(first).toContain('memos logged as events: applied');
    expect(first).toMatch(/searchText\("paying for the apartment"\) -> event #\d+ "rent for the flat in November"/);
    expect(first).toContain('verify: ok');

    const second = demo();
    expect(second).toContain('0 migration(s) applied now');
    expect(second).toContain('memos logged as events: duplicate');
    expect(second).toContain('verify: ok');

    // The read models hold every transfer exactly once, and agree with the log.
    const db = await Athanor.open(dir);
    try {
      const logged = [...db.events.read({ type: 'transfer' })].length;
      expect(db.sql.get<{ n: number }>('SELECT count(*) AS n FROM transfers')!.n).toBe(logged);
      const sums = db.sql.get<{ s: number; r: number }>('SELECT sum(sent) AS s, sum(received) AS r FROM flows')!;
      expect(sums.s).toBe(sums.r);
      expect(db.vectors.open('demo.notes').count()).toBe(3);
      // Each memo event embedded once into its collection, keyed by event id.
      const memos = [...db.events.read({ type: 'memo.added' })];
      expect(memos).toHaveLength(5);
      const col = db.vectors.open('demo.memos');
      expect(col.count()).toBe(5);
      for (const m of memos) expect(col.get(String(m.id))).toBeDefined();
    } finally {
      await db.close();
    }
  });
});
