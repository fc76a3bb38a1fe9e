/**
 * The CLI's demo (what `npm start` runs): it must work on a fresh directory and
 * again on the same one, where idempotency keys, migrations, processor cursors and
 * collection definitions carry over instead of repeating work.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { Athanor, i64, str } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { removeDir, tempDir } from './helpers.js';

/** better-sqlite3 (a dev dependency without bundled types), to damage projection.db the way another tool could. */
const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string) => {
  prepare(sql: string): { run(...params: unknown[]): unknown };
  close(): void;
};

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

/** Runs the CLI with --json; returns the parsed output (exit 0 expected). */
function cliJson(args: string[], cwd: string): unknown {
  const r = cli([...args, '--json'], cwd);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout);
}

describe('cli: init, --json, events, query, metrics, migrate, schedule, dlq, backup, restore', () => {
  const work = tempDir('athanor-cli-more-');
  afterAll(() => removeDir(work));

  it('init creates a database only in a new or empty directory; inspecting commands still create nothing', () => {
    for (const args of [['query', 'SELECT 1', 'nope'], ['metrics', 'nope'], ['migrate', 'status', 'nope'], ['schedule', 'list', '--dir', 'nope'], ['events', 'tail', 'nope'], ['events', 'get', '1', 'nope'], ['dlq', 'list', 'p', 'nope'], ['backup', 'bk', 'nope'], ['stats', 'nope', '--json']]) {
      const r = cli(args, work);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^athanor: ERR_NOT_FOUND: [^\n]*nope[^\n]*\n$/);
      expect(fs.readdirSync(work), args.join(' ')).toEqual([]);
    }
    expect(cliJson(['init', 'db'], work)).toEqual({ created: path.join(work, 'db') });
    const again = cli(['init', 'db'], work);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^athanor: .*is not empty[^\n]*\n$/);
    expect(cliJson(['stats', 'db'], work)).toMatchObject({ commitSeq: '0', lastEventId: '0' });
    expect(cliJson(['verify', 'db'], work)).toMatchObject({ ok: true, events: 0 });
    const layout = fs.readdirSync(path.join(work, 'db')).sort();
    expect(cliJson(['migrate', 'status', 'db'], work)).toEqual({ schemaVersion: 0, applied: [] });
    expect(cliJson(['dlq', 'list', 'p', 'db'], work)).toEqual([]);
    expect(cliJson(['schedule', 'list', 'db'], work)).toEqual([]);
    expect(fs.readdirSync(path.join(work, 'db')).sort()).toEqual(layout);
  });

  it('--json on get, events list/get/tail, with bigints as strings', async () => {
    const db = await Athanor.open(path.join(work, 'db'));
    await db.transaction().execute((tx) => {
      tx.set('greeting', str('hello'));
      tx.set('balance', i64(9007199254740993n));
      tx.log('said', { n: 1 });
      tx.log('said', { n: 2 });
      tx.log('other', { n: 3 });
    });
    await db.close();
    expect(cliJson(['get', 'greeting', 'db'], work)).toEqual({ key: 'greeting', found: true, type: 'string', value: 'hello' });
    expect(cliJson(['get', 'balance', 'db'], work)).toEqual({ key: 'balance', found: true, type: 'i64', value: '9007199254740993' });
    const absent = cli(['get', 'nothing', 'db', '--json'], work);
    expect(absent.status).toBe(1);
    expect(JSON.parse(absent.stdout)).toEqual({ key: 'nothing', found: false });

    const lines = (args: string[]): Record<string, unknown>[] => {
      const r = cli([...args, '--json'], work);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    };
    expect(lines(['events', 'db', '--type', 'said']).map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(lines(['events', 'list', 'db', '--reverse', '--limit', '1'])).toMatchObject([{ id: '3', type: 'other', commitSeq: '1' }]);
    expect(lines(['events', 'get', '2', 'db'])).toMatchObject([{ id: '2', type: 'said', payload: { n: 2 } }]);
    expect(lines(['events', 'tail', 'db', '--limit', '2']).map((e) => e.id)).toEqual(['2', '3']);
    expect(cli(['events', 'get', '99', 'db'], work)).toMatchObject({ status: 1, stderr: expect.stringMatching(/^athanor: no event #99[^\n]*\n$/) });
    expect(cli(['events', 'get', 'x', 'db'], work).status).toBe(2);
    expect(cli(['events', 'tail', 'db', '--limit', '0'], work).status).toBe(2);
    // A word that is no subcommand is the directory, as before subcommands existed.
    expect(cli(['events', 'frob', 'db'], work).status).toBe(2);
    expect(cli(['events', 'frob'], work)).toMatchObject({ status: 1, stderr: expect.stringMatching(/^athanor: ERR_NOT_FOUND: .*frob/) });
  });

  it('events tail -f prints commits made by another process until SIGINT', async () => {
    const child = spawn(process.execPath, [CLI, 'events', 'tail', 'db', '-f', '--limit', '1', '--json'], { cwd: work });
    const seen: Record<string, unknown>[] = [];
    let buffered = '';
    let waiter: (() => void) | undefined;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      for (const p of parts) seen.push(JSON.parse(p) as Record<string, unknown>);
      waiter?.();
    });
    const until = (n: number): Promise<void> =>
      new Promise((resolve) => {
        waiter = () => seen.length >= n && resolve();
        waiter();
      });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // A tail that misses commits fails on the timeout; the child must not outlive the test.
    onTestFinished(() => void child.kill('SIGKILL'));
    await until(1);
    expect(seen[0]).toMatchObject({ id: '3' });
    const db = await Athanor.open(path.join(work, 'db'));
    try {
      await db.transaction().execute((tx) => tx.log('followed', { n: 4 }));
      await until(2);
      await db.transaction().execute((tx) => tx.log('followed', { n: 5 }));
      await until(3);
    } finally {
      await db.close();
    }
    expect(seen.slice(1)).toMatchObject([{ id: '4', type: 'followed', payload: { n: 4 } }, { id: '5', payload: { n: 5 } }]);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  }, 30_000);

  it('query is read-only; metrics in text, JSON and Prometheus; migrate status', async () => {
    const db = await Athanor.open(path.join(work, 'db'));
    db.migrations.add({ version: 1, name: 'notes', up: 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)', down: 'DROP TABLE notes' });
    db.migrations.run();
    db.sql.run('INSERT INTO notes (body) VALUES (?), (?)', ['a', 'b']);
    await db.close();
    expect(cliJson(['query', 'SELECT id, body FROM notes ORDER BY id', 'db'], work)).toEqual([{ id: 1, body: 'a' }, { id: 2, body: 'b' }]);
    expect(cli(['query', 'SELECT body FROM notes ORDER BY id', 'db'], work)).toMatchObject({ status: 0, stdout: 'body\na\nb\n' });
    const write = cli(['query', 'DELETE FROM notes', 'db'], work);
    expect(write.status).toBe(1);
    expect(write.stderr).toMatch(/^athanor: ERR_[A-Z_]+: [^\n]*\n$/);
    expect(cliJson(['query', 'SELECT count(*) AS n FROM notes', 'db'], work)).toEqual([{ n: 2 }]);
    expect(cli(['query'], work).status).toBe(2);

    expect(cliJson(['metrics', 'db'], work)).toMatchObject({ store: { lastEventId: '5' } });
    expect(cli(['metrics', 'db'], work).stdout).toContain('store.lastEventId 5\n');
    expect(cli(['metrics', 'db', '--prometheus'], work).stdout).toMatch(/^# HELP athanor_/m);
    expect(cli(['metrics', 'db', '--prometheus', '--json'], work).status).toBe(2);

    expect(cliJson(['migrate', 'status', 'db'], work)).toMatchObject({ schemaVersion: 1, applied: [{ version: 1, name: 'notes' }] });
    expect(cli(['migrate', 'status', 'db'], work).stdout).toMatch(/^schema version 1, 1 migration\(s\) applied\n {2}1 notes /);
    expect(cli(['migrate'], work).status).toBe(2);
    expect(cli(['migrate', 'up', 'db'], work).status).toBe(2);
  });

  it('schedule list, history, pause, resume of tasks stored by an application', async () => {
    const db = await Athanor.open(path.join(work, 'db'));
    await db.scheduler.register('hourly', { every: 3_600_000, run: () => {} });
    await db.close();
    expect(cliJson(['schedule', 'list', 'db'], work)).toMatchObject([{ name: 'hourly', schedule: { every: 3_600_000 }, paused: false }]);
    expect(cliJson(['schedule', 'pause', 'hourly', 'db'], work)).toEqual({ task: 'hourly', paused: true });
    expect(cliJson(['schedule', 'list', 'db'], work)).toMatchObject([{ name: 'hourly', paused: true }]);
    expect(cli(['schedule', 'list', 'db'], work).stdout).toMatch(/^hourly .* paused/);
    expect(cliJson(['schedule', 'resume', 'hourly', 'db'], work)).toEqual({ task: 'hourly', paused: false });
    expect(cliJson(['schedule', 'history', 'hourly', 'db'], work)).toEqual([]);
    const missing = cli(['schedule', 'pause', 'nightly', 'db'], work);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^athanor: ERR_NOT_FOUND: no scheduled task named "nightly"\n$/);
    expect(cli(['schedule', 'history', 'nightly', 'db'], work).status).toBe(1);
    expect(cli(['schedule', 'pause', 'db'], work).status).toBe(1); // "db" is taken as the task, the default dir is absent
    expect(cli(['schedule', 'pause'], work).status).toBe(2);
  });

  it('dlq list reads dead letters without the processor\'s handlers', async () => {
    expect(cliJson(['dlq', 'list', 'mailer', 'db'], work)).toEqual([]);
    const db = await Athanor.open(path.join(work, 'db'));
    const p = db.processor('mailer').on('said', () => {
      throw new Error('smtp down');
    }).onError('deadLetter').build();
    await p.catchUp();
    await p.close();
    await db.close();
    const letters = cliJson(['dlq', 'list', 'mailer', 'db'], work) as { event_id: number; error: string }[];
    expect(letters.map((d) => d.event_id)).toEqual([1, 2]);
    expect(letters[0]!.error).toContain('smtp down');
    expect(cliJson(['dlq', 'list', 'other', 'db'], work)).toEqual([]);
    expect(cli(['dlq', 'list', 'mailer', 'db'], work).stdout).toMatch(/^#1 said .*smtp down/);
  });

  it('backup and restore, compressed and encrypted with a key from a file', () => {
    const keyFile = path.join(work, 'key');
    fs.writeFileSync(keyFile, 'ab'.repeat(32) + '\n');
    const taken = cliJson(['backup', 'bk', 'db', '--compress', '--key-file', keyFile], work) as { manifest: { encryption: string; contentDigest: { events: number } } };
    expect(taken.manifest).toMatchObject({ encryption: 'aes-256-gcm', contentDigest: { events: 5 } });
    const noKey = cli(['restore', 'bk', 'restored'], work);
    expect(noKey.status).toBe(1);
    expect(noKey.stderr).toMatch(/^athanor: ERR_[A-Z_]+: [^\n]*encrypted[^\n]*\n$/);
    expect(fs.existsSync(path.join(work, 'restored'))).toBe(false);
    expect(cliJson(['restore', 'bk', 'restored', '--key-file', keyFile], work)).toMatchObject({ restored: path.join(work, 'restored'), digest: { events: 5 } });
    expect(cliJson(['get', 'greeting', 'restored'], work)).toMatchObject({ value: 'hello' });
    expect(cli(['restore', 'bk', 'restored', '--key-file', keyFile], work).status).toBe(1);
    expect(cli(['restore', 'bk', 'restored', '--key-file', keyFile, '--overwrite'], work).status).toBe(0);
    fs.writeFileSync(keyFile, 'short');
    expect(cli(['backup', 'bk2', 'db', '--key-file', keyFile], work)).toMatchObject({ status: 1, stderr: expect.stringMatching(/^athanor: --key-file .* 32-byte key/) });
    expect(cli(['backup', 'bk2', 'db', '--key', 'secret'], work).status).toBe(2);
    expect(cli(['restore', 'bk'], work).status).toBe(2);
    expect(fs.existsSync(path.join(work, 'bk2'))).toBe(false);
  });
});

describe('cli: verify report, state list, migrate up/down, dlq retry/remove', () => {
  const work = tempDir('athanor-cli-ops-');
  afterAll(() => removeDir(work));

  /** A database in work/<name> with 3 'said' events, two of them dead-lettered by processor 'mailer'. */
  async function withDeadLetters(name: string): Promise<string> {
    const dir = path.join(work, name);
    const db = await Athanor.open(dir);
    await db.transaction().execute((tx) => {
      for (const n of [1, 2, 3]) tx.log('said', { n });
      tx.set('user:b', str('bea'));
      tx.set('user:a', str('al'));
      tx.set('order:1', i64(5));
    });
    db.migrations.add({ version: 1, name: 'mails', up: 'CREATE TABLE mails (n INTEGER PRIMARY KEY)', down: 'DROP TABLE mails' });
    db.migrations.run();
    const p = db
      .processor('mailer')
      .on<{ n: number }>('said', (sql, e) => {
        if (e.payload.n !== 2) throw new Error('smtp down');
        sql.run('INSERT INTO mails VALUES (?)', [e.payload.n]);
      })
      .onError('deadLetter')
      .build();
    await p.catchUp();
    await p.close();
    await db.close();
    return dir;
  }

  it('verify prints the report and exits 1 with each violation when projection.db points past the log', async () => {
    const dir = await withDeadLetters('v');
    const good = cliJson(['verify', dir], work) as { ok: boolean; events: number; processors: unknown; deadLetters: number; violations: unknown[] };
    expect(good).toMatchObject({ ok: true, events: 3, processors: [{ name: 'mailer', cursor: 3 }], deadLetters: 2, violations: [] });
    expect(cli(['verify', dir], work).stdout).toMatch(/^ok: .*3 events.*2 dead letter/);
    const sql = new Database(path.join(dir, 'projection.db'));
    sql.prepare('UPDATE _athanor_dead_letters SET event_id = 99 WHERE event_id = 3').run();
    sql.prepare("UPDATE _athanor_cursors SET last_event_id = 12 WHERE name = 'mailer'").run();
    sql.close();
    const bad = cli(['verify', dir, '--json'], work);
    expect(bad.status).toBe(1);
    const report = JSON.parse(bad.stdout) as { ok: boolean; violations: { kind: string; detail: string }[] };
    expect(report.ok).toBe(false);
    expect(report.violations.map((v) => v.kind)).toEqual(['cursor_past_log', 'dead_letter_missing_event']);
    const text = cli(['verify', dir], work);
    expect(text.status).toBe(1);
    expect(text.stdout).toMatch(/NOT OK: .*2 violation/);
    expect(text.stdout).toMatch(/dead_letter_missing_event: .*event 99/);
    expect(cli(['verify', dir, '--deep'], work).status).toBe(1);
  });

  it('namespaces lists them; --namespace reads one (get, state, events, query); a missing one is one line, exit 1', async () => {
    const nsDir = path.join(work, 'ns-db');
    const db = await Athanor.open(nsDir);
    const acme = db.namespace('acme', { create: true, labels: { plan: 'pro' } });
    await acme.transaction().execute((tx) => {
      tx.set('k', str('acme value'));
      tx.log('opened', { who: 'acme' });
    });
    acme.sql.exec('CREATE TABLE t (v TEXT); INSERT INTO t VALUES (\'only in acme\')');
    await db.transaction().execute((tx) => tx.set('k', str('root value')));
    await db.close();
    expect(cliJson(['namespaces', nsDir], work)).toMatchObject({ name: 'acme', id: 1, labels: { plan: 'pro' } });
    expect(cliJson(['get', 'k', nsDir, '--namespace', 'acme'], work)).toMatchObject({ value: 'acme value' });
    expect(cliJson(['get', 'k', nsDir], work)).toMatchObject({ value: 'root value' });
    expect(cliJson(['state', 'list', nsDir, '--namespace', 'acme'], work)).toMatchObject({ key: 'k', value: 'acme value' });
    expect(cliJson(['events', 'list', nsDir, '--namespace', 'acme'], work)).toMatchObject({ id: '1', type: 'opened', payload: { who: 'acme' } });
    expect(cli(['events', 'list', nsDir, '--json'], work).stdout).toBe('');
    expect(cliJson(['query', 'SELECT v FROM t', nsDir, '--namespace', 'acme'], work)).toEqual([{ v: 'only in acme' }]);
    expect(cli(['query', 'SELECT v FROM t', nsDir], work).status).toBe(1);
    expect(cli(['get', 'k', nsDir, '--namespace', 'nobody'], work)).toMatchObject({ status: 1, stderr: expect.stringMatching(/^athanor: ERR_NOT_FOUND: namespace "nobody" does not exist[^\n]*\n$/) });
    expect(cli(['get', 'k', nsDir, '--namespace', 'Bad/Name'], work).status).toBe(2);
  });

  it('state list by prefix, in key order, with --after, --limit and --json; state get', async () => {
    const dir = await withDeadLetters('s');
    const lines = cli(['state', 'list', dir, '--prefix', 'user:', '--json'], work);
    expect(lines.status).toBe(0);
    expect(lines.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { key: 'user:a', type: 'string', value: 'al' },
      { key: 'user:b', type: 'string', value: 'bea' },
    ]);
    expect(cli(['state', 'list', dir, '--prefix', 'user:', '--after', 'user:a'], work).stdout).toBe('user:b string "bea"\n');
    expect(cli(['state', 'list', dir, '--prefix', 'user:', '--limit', '1'], work).stdout).toBe('user:a string "al"\n');
    expect(cli(['state', 'list', dir, '--prefix', 'zzz'], work)).toMatchObject({ status: 0, stdout: '' });
    expect(cliJson(['state', 'get', 'order:1', dir], work)).toMatchObject({ found: true, value: '5' });
    expect(cli(['state', 'get', 'nope', dir], work).status).toBe(1);
    expect(cli(['state', 'list', dir, '--limit', '0'], work).status).toBe(2);
    expect(cli(['state', 'list', dir, '--limit', '100001'], work).status).toBe(2);
    expect(cli(['state', 'list', '--help'], work)).toMatchObject({ status: 0, stdout: expect.stringMatching(/^athanor state list/) });
    expect(cli(['state', 'frob', dir], work).status).toBe(2);
  });

  it('migrate up and down with a folder of .sql files; status lists the pending ones', async () => {
    const dir = await withDeadLetters('m');
    const folder = path.join(work, 'migrations');
    fs.mkdirSync(folder);
    fs.writeFileSync(path.join(folder, '0001_mails.sql'), 'CREATE TABLE mails (n INTEGER PRIMARY KEY)');
    fs.writeFileSync(path.join(folder, '0001_mails.down.sql'), 'DROP TABLE mails');
    fs.writeFileSync(path.join(folder, '0002_tags.sql'), 'CREATE TABLE tags (t TEXT)');
    fs.writeFileSync(path.join(folder, '0002_tags.down.sql'), 'DROP TABLE tags');
    fs.writeFileSync(path.join(folder, '0003_notes.sql'), 'CREATE TABLE notes (t TEXT)');
    fs.writeFileSync(path.join(folder, '0003_notes.down.sql'), 'DROP TABLE notes');
    expect(cliJson(['migrate', 'status', dir, '--migrations', folder], work)).toMatchObject({ schemaVersion: 1, pending: [{ version: 2 }, { version: 3 }] });
    expect(cliJson(['migrate', 'up', dir, '--migrations', folder], work)).toMatchObject({ schemaVersion: 3, applied: [{ version: 2, name: 'tags' }, { version: 3, name: 'notes' }] });
    expect(cliJson(['query', "SELECT count(*) AS n FROM sqlite_master WHERE name IN ('tags', 'notes')", dir], work)).toEqual([{ n: 2 }]);
    expect(cliJson(['migrate', 'down', dir, '--migrations', folder], work)).toMatchObject({ schemaVersion: 2, reverted: [{ version: 3 }] });
    expect(cliJson(['migrate', 'down', dir, '--migrations', folder, '--to', '0'], work)).toMatchObject({ schemaVersion: 0, reverted: [{ version: 2 }, { version: 1 }] });
    expect(cliJson(['query', "SELECT count(*) AS n FROM sqlite_master WHERE name IN ('mails', 'tags', 'notes')", dir], work)).toEqual([{ n: 0 }]);
    // A migration without a down step cannot be rolled back: exit 1, nothing changed.
    expect(cliJson(['migrate', 'up', dir, '--migrations', folder], work)).toMatchObject({ schemaVersion: 3 });
    fs.rmSync(path.join(folder, '0003_notes.down.sql'));
    const refused = cli(['migrate', 'down', dir, '--migrations', folder], work);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^athanor: ERR_INVALID_ARGUMENT: .*no down step[^\n]*\n$/);
    expect(cliJson(['migrate', 'status', dir], work)).toMatchObject({ schemaVersion: 3 });
    expect(cli(['migrate', 'up', dir], work).status).toBe(2);
    expect(cli(['migrate', 'down', dir, '--migrations', folder, '--to', 'x'], work).status).toBe(2);
    expect(cli(['migrate', 'down', '--help'], work)).toMatchObject({ status: 0, stdout: expect.stringMatching(/^athanor migrate down/) });
  });

  it('dlq retry runs dead letters through the handlers of a module; dlq remove deletes them', async () => {
    const dir = await withDeadLetters('d');
    const handlers = path.join(work, 'handlers.mjs');
    // The fixed handler accepts event 1 but still refuses event 3.
    fs.writeFileSync(
      handlers,
      `export default (db) => db.processor('mailer').on('said', (sql, e) => { if (e.payload.n === 3) throw new Error('still down'); sql.run('INSERT INTO mails VALUES (?)', [e.payload.n]); }).onError('deadLetter').build();\n`,
    );
    expect(cli(['dlq', 'retry', 'mailer', dir, '--all'], work).status).toBe(2); // no --handlers
    expect(cli(['dlq', 'retry', 'mailer', dir, '--handlers', handlers], work).status).toBe(2); // neither --event nor --all
    expect(cli(['dlq', 'remove', 'mailer', dir, '--all', '--event', '1'], work).status).toBe(2);
    const one = cliJson(['dlq', 'retry', 'mailer', dir, '--handlers', handlers, '--event', '1'], work);
    expect(one).toEqual({ processor: 'mailer', retried: 1, failed: 0, results: [{ event: 1, retried: true }] });
    expect(cliJson(['query', 'SELECT n FROM mails ORDER BY n', dir], work)).toEqual([{ n: 1 }, { n: 2 }]);
    const again = cli(['dlq', 'retry', 'mailer', dir, '--handlers', handlers, '--all', '--json'], work);
    expect(again.status).toBe(1);
    expect(JSON.parse(again.stdout)).toMatchObject({ retried: 0, failed: 1 });
    expect((cliJson(['dlq', 'list', 'mailer', dir], work) as { event_id: number; attempts: number }[]).map((d) => [d.event_id, d.attempts])).toEqual([[3, 2]]);
    expect(cli(['dlq', 'retry', 'mailer', dir, '--handlers', handlers, '--event', '2'], work)).toMatchObject({ status: 1, stderr: expect.stringMatching(/no dead letter for event #2/) });
    const wrong = cli(['dlq', 'retry', 'other', dir, '--handlers', handlers, '--all'], work);
    expect(wrong.status).toBe(0); // no dead letters: nothing to retry, the module is not needed
    expect(cliJson(['dlq', 'remove', 'mailer', dir, '--event', '3'], work)).toEqual({ processor: 'mailer', removed: 1 });
    expect(cliJson(['dlq', 'list', 'mailer', dir], work)).toEqual([]);
    expect(cli(['dlq', 'remove', 'mailer', dir, '--event', '3'], work).status).toBe(1);
    expect(cliJson(['dlq', 'remove', 'mailer', dir, '--all'], work)).toEqual({ processor: 'mailer', removed: 0 });
    expect(cli(['dlq', 'remove', '--help'], work)).toMatchObject({ status: 0, stdout: expect.stringMatching(/^athanor dlq remove/) });
  });
});
