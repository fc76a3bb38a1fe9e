/**
 * The CLI's demo (what `npm start` runs): it must work on a fresh directory and
 * again on the same one, where idempotency keys, migrations, processor cursors and
 * collection definitions carry over instead of repeating work.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
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

/** Runs the CLI in `cwd`; returns its exit status and output. */
function cli(args: string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli commands that inspect a database', () => {
  const work = tempDir('athanor-cli-inspect-');
  afterAll(() => removeDir(work));

  it('fail on a missing directory, positional or --dir, and create nothing', () => {
    for (const args of [['verify', 'nope'], ['verify', '--dir', 'typo'], ['stats', 'nope'], ['events', '--dir', 'nope'], ['get', 'k', 'nope'], ['verify'], ['stats']]) {
      const r = cli(args, work);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stdout).not.toContain('ok');
      // One line that names the problem, no stack trace.
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^athanor: ERR_NOT_FOUND: .*(nope|typo|\.athanor-data)/);
      expect(fs.readdirSync(work), args.join(' ')).toEqual([]);
    }
  });

  it('fail on a directory that holds no database, creating nothing in it', () => {
    const empty = path.join(work, 'empty');
    fs.mkdirSync(empty);
    const r = cli(['verify', empty], work);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^athanor: ERR_NOT_FOUND: .*holds no athanor database/);
    expect(fs.readdirSync(empty)).toEqual([]);
    fs.rmdirSync(empty);
  });

  it('verify an existing database given by position or --dir; exit 2 on a wrong command line; --help per command', async () => {
    const db = await Athanor.open(path.join(work, 'db'));
    await db.transaction().execute((tx) => tx.log('x', {}));
    await db.close();
    expect(cli(['verify', 'db'], work)).toMatchObject({ status: 0, stdout: expect.stringContaining('1 events') });
    expect(cli(['verify', '--dir', 'db'], work)).toMatchObject({ status: 0 });
    expect(cli(['verify', 'db', '--deep'], work)).toMatchObject({ status: 0, stdout: expect.stringContaining('1 events') });
    expect(cli(['verify', 'db', '--dir', 'other'], work).status).toBe(2);
    expect(cli(['verify', '--bogus'], work).status).toBe(2);
    expect(cli(['frobnicate'], work).status).toBe(2);
    expect(cli([], work).status).toBe(2);
    expect(cli(['get'], work).status).toBe(2);
    expect(cli(['events', 'db', '--limit', 'lots'], work).status).toBe(2);
    const help = cli(['verify', '--help'], work);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^athanor verify \[dir\]/);
    expect(cli(['get', 'missing-key', 'db'], work).status).toBe(1);
    expect(fs.readdirSync(work)).toEqual(['db']);
  });
});
