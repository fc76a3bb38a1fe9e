/** The SQL connection (db.sql) and the async read pool (db.query). */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, ClosedError, InvalidArgumentError, SqlConstraintError, SqlError, SqlSyntaxError, VersionError } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows, loopDuring, expectLoopTurned } from './helpers.js';

/** better-sqlite3 (a dev dependency without typings here), for writing projection.db from outside athanor. */
const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string) => { prepare(sql: string): { run(): unknown }; close(): void };

const box = new Sandbox();
afterEach(() => box.cleanup());

async function withTable(): Promise<Athanor> {
  const db = await box.open();
  db.sql.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)');
  return db;
}

describe('db.sql', () => {
  it('creates projection.db lazily, in WAL mode', async () => {
    const db = await box.open();
    expect(fs.existsSync(path.join(db.dir, 'projection.db'))).toBe(false);
    expect(db.sql.get<{ journal_mode: string }>('PRAGMA journal_mode')?.journal_mode).toBe('wal');
    expect(fs.existsSync(path.join(db.dir, 'projection.db'))).toBe(true);
  });

  it('runs prepared statements with positional, array and named parameters', async () => {
    const db = await withTable();
    const ins = db.sql.prepare('INSERT INTO t(id, name, score) VALUES (?, ?, ?)');
    expect(ins.run(1, 'ann', 1.5)).toEqual({ changes: 1, lastInsertRowid: 1 });
    expect(ins.run([2, 'bob', null])).toEqual({ changes: 1, lastInsertRowid: 2 });
    for (const prefix of [':', '@', '$']) {
      const id = prefix === ':' ? 3 : prefix === '@' ? 4 : 5;
      db.sql.run(`INSERT INTO t(id, name) VALUES (${prefix}id, ${prefix}name)`, { id, name: `n${id}` });
    }
    expect(db.sql.all<{ id: number; name: string }>('SELECT id, name FROM t ORDER BY id').map((r) => r.name)).toEqual(['ann', 'bob', 'n3', 'n4', 'n5']);
    expect(db.sql.get('SELECT name, score FROM t WHERE id = ?', [1])).toEqual({ name: 'ann', score: 1.5 });
    expect(db.sql.get('SELECT * FROM t WHERE id = ?', [99])).toBeUndefined();
    expect(ins.reader).toBe(false);
    expect(db.sql.prepare('SELECT id, name FROM t').columns).toEqual(['id', 'name']);
  });

  it('keeps integers exact: bigint beyond 2^53, or always with safeIntegers', async () => {
    const db = await withTable();
    const big = 2n ** 62n + 7n;
    const r = db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [big, 'big']);
    expect(r.lastInsertRowid).toBe(big);
    db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [-(2n ** 63n), 'min']);
    const rows = db.sql.all<{ id: number | bigint }>('SELECT id FROM t ORDER BY id');
    expect(rows.map((x) => x.id)).toEqual([-(2n ** 63n), big]);
    db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [12, 'small']);
    expect(db.sql.get('SELECT id FROM t WHERE name = ?', ['small'])).toEqual({ id: 12 });
    const s = db.sql.prepare('SELECT id FROM t WHERE name = ?').safeIntegers();
    expect(s.get('small')).toEqual({ id: 12n });
    expectThrows(() => db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [2n ** 64n, 'x']), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('stores blobs, booleans and reads them back', async () => {
    const db = await withTable();
    db.sql.run('INSERT INTO t(id, name, data, score) VALUES (?, ?, ?, ?)', [1, 'b', new Uint8Array([1, 2, 3]), true]);
    db.sql.run('INSERT INTO t(id, name, data) VALUES (?, ?, ?)', [2, 'e', Buffer.alloc(0)]);
    const rows = db.sql.all<{ data: Buffer; score: number | null }>('SELECT data, score FROM t ORDER BY id');
    expect(Buffer.isBuffer(rows[0]!.data)).toBe(true);
    expect([...rows[0]!.data]).toEqual([1, 2, 3]);
    expect(rows[0]!.score).toBe(1);
    expect(rows[1]!.data.length).toBe(0);
  });

  it('iterates lazily and can break out early', async () => {
    const db = await withTable();
    const ins = db.sql.prepare('INSERT INTO t(id, name) VALUES (?, ?)');
    db.sql.transaction(() => {
      for (let i = 1; i <= 100; i++) ins.run(i, `n${i}`);
    })();
    const q = db.sql.prepare<{ id: number }>('SELECT id FROM t ORDER BY id');
    let n = 0;
    for (const r of q.iterate()) {
      n += r.id;
      if (r.id === 10) break;
    }
    expect(n).toBe(55);
    expect([...q.iterate()].length).toBe(100);
    expect([...db.sql.iterate('SELECT id FROM t WHERE id > ?', [98])]).toEqual([{ id: 99 }, { id: 100 }]);
  });

  it('maps SQLite errors to typed errors with stable codes, leaving the database as it was', async () => {
    const db = await withTable();
    db.sql.run('INSERT INTO t(id, name) VALUES (1, ?)', ['a']);
    const e = expectThrows(() => db.sql.run('INSERT INTO t(id, name) VALUES (1, ?)', ['dup']), SqlConstraintError, 'ERR_SQL_CONSTRAINT');
    expect(e).toBeInstanceOf(SqlError);
    expectThrows(() => db.sql.run('INSERT INTO t(id, name) VALUES (2, NULL)'), SqlConstraintError, 'ERR_SQL_CONSTRAINT');
    expectThrows(() => db.sql.exec('CREAT TABLE x(a)'), SqlSyntaxError, 'ERR_SQL_SYNTAX');
    expectThrows(() => db.sql.prepare('SELECT * FROM missing'), SqlError, 'ERR_SQL');
    expectThrows(() => db.sql.prepare('SELECT 1; SELECT 2'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.sql.run('SELECT ?', [1, 2]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.sql.run('SELECT :a', { b: 1 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.sql.prepare('SELECT ?').run({ a: 1 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.sql.run('SELECT ?', [{} as unknown as string]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.sql.all('SELECT id, name FROM t')).toEqual([{ id: 1, name: 'a' }]);
  });

  it('runs transactions: commit, rollback on throw, savepoints when nested', async () => {
    const db = await withTable();
    const add = db.sql.transaction((id: number, name: string) => {
      db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [id, name]);
      return id;
    });
    expect(add(1, 'a')).toBe(1);
    const failing = db.sql.transaction(() => {
      db.sql.run('INSERT INTO t(id, name) VALUES (2, ?)', ['b']);
      throw new Error('boom');
    });
    expect(() => failing()).toThrow('boom');
    expect(db.sql.inTransaction).toBe(false);
    const outer = db.sql.transaction(() => {
      db.sql.run('INSERT INTO t(id, name) VALUES (3, ?)', ['c']);
      try {
        db.sql.transaction(() => {
          db.sql.run('INSERT INTO t(id, name) VALUES (4, ?)', ['d']);
          throw new Error('inner');
        })();
      } catch {
        /* the inner savepoint is rolled back, the outer transaction goes on */
      }
      db.sql.transaction(() => db.sql.run('INSERT INTO t(id, name) VALUES (5, ?)', ['e'])).immediate();
    });
    outer.immediate();
    expect(db.sql.all<{ id: number }>('SELECT id FROM t ORDER BY id').map((r) => r.id)).toEqual([1, 3, 5]);
    const asyncFn = db.sql.transaction(async () => 1);
    expectThrows(() => asyncFn(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.sql.inTransaction).toBe(false);
  });

  it('has FTS5 compiled in', async () => {
    const db = await box.open();
    db.sql.exec("CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs(body) VALUES ('the quick brown fox'), ('lazy dogs sleep')");
    expect(db.sql.all('SELECT body FROM docs WHERE docs MATCH ?', ['quick'])).toEqual([{ body: 'the quick brown fox' }]);
  });

  it('finalized statements and closed databases throw typed errors', async () => {
    const db = await withTable();
    const s = db.sql.prepare('SELECT 1 AS one');
    expect(s.get()).toEqual({ one: 1 });
    s.finalize();
    expectThrows(() => s.get(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const sql = db.sql;
    const live = sql.prepare('SELECT 2 AS two');
    await db.close();
    expectThrows(() => sql.exec('SELECT 1'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => live.get(), ClosedError, 'ERR_CLOSED');
    expectThrows(() => db.sql, ClosedError, 'ERR_CLOSED');
  });

  it('reopens an existing projection.db and refuses one written by a newer format', async () => {
    const dir = box.dir();
    let db = await box.open(dir);
    db.sql.exec('CREATE TABLE keep(a); INSERT INTO keep VALUES (1)');
    await db.close();
    db = await box.open(dir);
    expect(db.sql.get('SELECT a FROM keep')).toEqual({ a: 1 });
    await db.close();
    // athanor's tables are refused to db.sql: a newer format is written from outside.
    const raw = new Database(path.join(dir, 'projection.db'));
    raw.prepare("UPDATE _athanor_meta SET value = 999 WHERE key = 'format_version'").run();
    raw.close();
    db = await box.open(dir);
    expectThrows(() => db.sql, VersionError, 'ERR_VERSION');
  });
});

describe('db.query (read pool)', () => {
  it('runs read-only queries off the main thread, with parameters', async () => {
    const db = await withTable();
    db.sql.transaction(() => {
      for (let i = 1; i <= 50; i++) db.sql.run('INSERT INTO t(id, name) VALUES (?, ?)', [i, `n${i}`]);
    })();
    const [a, b, c] = await Promise.all([
      db.query<{ n: number }>('SELECT count(*) AS n FROM t'),
      db.query('SELECT name FROM t WHERE id = ?', [7]),
      db.query('SELECT name FROM t WHERE id = :id', { id: 8 }),
    ]);
    expect(a).toEqual([{ n: 50 }]);
    expect(b).toEqual([{ name: 'n7' }]);
    expect(c).toEqual([{ name: 'n8' }]);
    expect(await db.query('SELECT ? AS v', [2n ** 60n])).toEqual([{ v: 2n ** 60n }]);
    expect(await db.query('SELECT 1 AS v', undefined, { safeIntegers: true })).toEqual([{ v: 1n }]);
    // Off the main thread: the event loop keeps turning while a long query runs.
    const long = await loopDuring(() => db.query<{ n: number }>('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) AS n FROM c'));
    expect(long.value).toEqual([{ n: 3_000_000 }]);
    expectLoopTurned(long);
  });

  it('refuses writes and reports SQL errors with codes', async () => {
    const db = await withTable();
    await expectRejects(db.query('DELETE FROM t'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.query('SELEC 1'), SqlSyntaxError, 'ERR_SQL_SYNTAX');
    await expectRejects(db.query('SELECT ?', []), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });
});
