/**
 * Hostile input against db.sql, db.query, migrations and processors (issue 17): SQL
 * that tries to end a transaction athanor owns, scripts that fail half-way, callbacks
 * that throw things that are not Errors, bad options, and close() in awkward places.
 * Every failure must be a typed error with a code, and leave the database as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, AthanorError, ClosedError, HandlerError, InvalidArgumentError, Migrations, SqlError, type Processor, type Sql, type StoredEvent } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const box = new Sandbox();
afterEach(() => box.cleanup());

function tableNames(db: Athanor): string[] {
  return db.sql
    .all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_athanor\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
    .map((r) => r.name);
}

async function withT(): Promise<Athanor> {
  const db = await box.open(undefined, { durability: 'none' });
  db.sql.exec('CREATE TABLE t(a INTEGER PRIMARY KEY)');
  return db;
}

function rows(db: Athanor): number[] {
  return db.sql.all<{ a: number }>('SELECT a FROM t ORDER BY a').map((r) => r.a);
}

async function deposits(db: Athanor, n: number): Promise<void> {
  await db.transaction().execute((tx) => {
    for (let i = 1; i <= n; i++) tx.log('Dep', { i });
  });
}

describe('transaction control where athanor owns the transaction', () => {
  it('db.sql.transaction(fn): COMMIT, ROLLBACK, BEGIN and SAVEPOINT inside are refused; the transaction stays whole', async () => {
    const db = await withT();
    const early = db.sql.prepare('COMMIT');
    for (const stmt of ['COMMIT', 'END', 'ROLLBACK', 'BEGIN', 'SAVEPOINT x', 'RELEASE x']) {
      const e = expectThrows(
        () =>
          db.sql.transaction(() => {
            db.sql.run('INSERT INTO t VALUES (1)');
            db.sql.exec(stmt);
          })(),
        InvalidArgumentError,
        'ERR_INVALID_ARGUMENT',
      );
      expect(e.message).toMatch(/transaction/);
      expect(rows(db)).toEqual([]);
      expect(db.sql.inTransaction).toBe(false);
    }
    // A statement prepared outside is checked where it runs; a refusal the function swallows changes nothing.
    db.sql.transaction(() => {
      db.sql.run('INSERT INTO t VALUES (2)');
      expectThrows(() => early.run(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.sql.run('ROLLBACK'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      db.sql.run('INSERT INTO t VALUES (3)');
    })();
    expect(rows(db)).toEqual([2, 3]);
    // Nested transactions still work (savepoints opened by athanor).
    db.sql.transaction(() => {
      db.sql.run('INSERT INTO t VALUES (4)');
      expect(() => db.sql.transaction(() => {
        db.sql.run('INSERT INTO t VALUES (5)');
        throw new Error('inner');
      })()).toThrow('inner');
    })();
    expect(rows(db)).toEqual([2, 3, 4]);
    // Outside any transaction athanor owns, a user may still run transaction control.
    db.sql.run('BEGIN');
    db.sql.run('INSERT INTO t VALUES (6)');
    db.sql.exec('ROLLBACK');
    expect(rows(db)).toEqual([2, 3, 4]);
  });

  it('a statement that rolls the transaction back (OR ROLLBACK) cannot let later statements escape it', async () => {
    const db = await withT();
    db.sql.run('INSERT INTO t VALUES (1)');
    const e = expectThrows(
      () =>
        db.sql.transaction(() => {
          db.sql.run('INSERT INTO t VALUES (2)');
          expect(() => db.sql.run('INSERT OR ROLLBACK INTO t VALUES (1)')).toThrow();
          // Would run in autocommit mode, outside the transaction.
          db.sql.run('INSERT INTO t VALUES (3)');
        })(),
      SqlError,
      'ERR_SQL',
    );
    expect(e.message).toMatch(/rolled back/);
    expect(rows(db)).toEqual([1]);
    expect(db.sql.inTransaction).toBe(false);
  });

  it('a migration whose up holds COMMIT fails whole: no table, no history row', async () => {
    const db = await box.open();
    db.migrations.add({ version: 1, name: 'escape', up: 'CREATE TABLE a(x); COMMIT; CREATE TABLE b(x);' });
    const e = expectThrows(() => db.migrations.run(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(e.message).toMatch(/migration 1 \(escape\) up failed/);
    expect(tableNames(db)).toEqual([]);
    expect(db.migrations.history()).toEqual([]);
    const other = await box.open();
    other.migrations.add({ version: 1, name: 'commit_alone', up: 'COMMIT' });
    expectThrows(() => other.migrations.run(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(other.migrations.history()).toEqual([]);
  });

  it('a handler that runs COMMIT stops the processor, even when it swallows the refusal; nothing escapes', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    db.sql.exec('CREATE TABLE seen(i INTEGER)');
    await deposits(db, 3);
    const p = db
      .processor('p')
      .on('Dep', (sql, e: StoredEvent<{ i: number }>) => {
        sql.run('INSERT INTO seen VALUES (?)', [e.payload.i]);
        try {
          sql.run('COMMIT');
        } catch {
          /* swallowed */
        }
      })
      .onError('skip')
      .onLog(() => undefined)
      .build();
    await expectRejects(p.processBatch(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(p.cursor()).toBe(0n);
    expect(db.sql.all('SELECT * FROM seen')).toEqual([]);
    expect(db.sql.inTransaction).toBe(false);
  });

  it('a handler whose statement rolls the batch back (OR ROLLBACK) fails that event; nothing runs outside the batch', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    db.sql.exec('CREATE TABLE seen(i INTEGER PRIMARY KEY); INSERT INTO seen VALUES (100);');
    await deposits(db, 3);
    const logged: Error[] = [];
    const p = db
      .processor('p')
      .on('Dep', (sql, e: StoredEvent<{ i: number }>) => {
        sql.run('INSERT INTO seen VALUES (?)', [e.payload.i]);
        if (e.payload.i !== 2) return;
        try {
          sql.run('INSERT OR ROLLBACK INTO seen VALUES (100)');
        } catch {
          /* swallowed: the batch's transaction is gone all the same */
        }
        try {
          sql.run('INSERT INTO seen VALUES (?)', [e.payload.i + 1000]);
        } catch {
          /* refused: it would have run outside the batch */
        }
      })
      .onError('skip')
      .onLog((_m, err) => logged.push(err))
      .build();
    await p.catchUp();
    expect(p.cursor()).toBe(3n);
    expect(db.sql.all('SELECT i FROM seen ORDER BY i')).toEqual([{ i: 1 }, { i: 3 }, { i: 100 }]);
    expect(logged.map((e) => (e as SqlError).code)).toEqual(['ERR_SQL']);
  });

  it('a declarative action holding transaction control is refused before anything applies', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    db.sql.exec('CREATE TABLE seen(i INTEGER)');
    await deposits(db, 2);
    const p = db.projection({ name: 'd', on: { Dep: [{ sql: 'INSERT INTO seen VALUES (?)', params: ['$.i'] }, { sql: 'COMMIT' }] } });
    await expectRejects(p.processBatch(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(p.cursor()).toBe(0n);
    expect(db.sql.all('SELECT * FROM seen')).toEqual([]);
  });

  it('db.query() refuses transaction control (it would pin a pooled connection to a stale snapshot)', async () => {
    const db = await withT();
    await expectRejects(db.query('BEGIN'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    db.sql.run('INSERT INTO t VALUES (1)');
    expect(await db.query('SELECT a FROM t')).toEqual([{ a: 1 }]);
  });
});

describe('db.sql.exec scripts', () => {
  it('a failing script changes nothing, at the top level and inside a transaction', async () => {
    const db = await withT();
    expectThrows(() => db.sql.exec('CREATE TABLE y(a); INSERT INTO t VALUES (1); INSERT INTO nope VALUES (1);'), SqlError, 'ERR_SQL');
    expect(tableNames(db)).toEqual(['t']);
    expect(rows(db)).toEqual([]);
    db.sql.transaction(() => {
      db.sql.run('INSERT INTO t VALUES (2)');
      expect(() => db.sql.exec('INSERT INTO t VALUES (3); INSERT INTO t VALUES (2);')).toThrow();
      db.sql.run('INSERT INTO t VALUES (4)');
    })();
    expect(rows(db)).toEqual([2, 4]);
  });

  it('a script may not hold transaction control; a lone statement outside athanor transactions may', async () => {
    const db = await withT();
    expectThrows(() => db.sql.exec('INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2);'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.sql.exec('BEGIN; INSERT INTO t VALUES (1);'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(rows(db)).toEqual([]);
    expect(db.sql.inTransaction).toBe(false);
    db.sql.exec('BEGIN');
    db.sql.exec('INSERT INTO t VALUES (7); INSERT INTO t VALUES (8);');
    db.sql.exec('COMMIT');
    expect(rows(db)).toEqual([7, 8]);
    // Empty scripts and trailing comments are fine; statements of many kinds run in order.
    db.sql.exec('');
    db.sql.exec(' ;; -- nothing\n');
    db.sql.exec('CREATE TABLE u(x); INSERT INTO u VALUES (1); SELECT * FROM u; /* done */');
    expect(db.sql.all('SELECT x FROM u')).toEqual([{ x: 1 }]);
  });
});

describe('what user callbacks throw', () => {
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  const throwingProxy = new Proxy(
    {},
    {
      get() {
        throw new Error('trap');
      },
      getPrototypeOf() {
        throw new Error('trap');
      },
    },
  );
  const values: [string, unknown][] = [
    ['a string', 'boom'],
    ['a number', 42],
    ['null', null],
    ['a Symbol', Symbol('s')],
    ['an object without toString', Object.create(null)],
    ['a throwing proxy', throwingProxy],
    ['a revoked proxy', revoked.proxy],
  ];

  it('a handler throwing anything goes through the error strategy (skip) and the processor moves on', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    db.sql.exec('CREATE TABLE seen(i INTEGER)');
    await deposits(db, values.length + 1);
    const logged: Error[] = [];
    const p = db
      .processor('p')
      .on('Dep', (sql: Sql, e: StoredEvent<{ i: number }>) => {
        sql.run('INSERT INTO seen VALUES (?)', [e.payload.i]);
        if (e.payload.i <= values.length) throw values[e.payload.i - 1]![1];
      })
      .onError('skip')
      .onLog((_m, err) => logged.push(err))
      .build();
    const r = await p.catchUp();
    expect(r.cursor).toBe(BigInt(values.length + 1));
    expect(db.sql.all('SELECT i FROM seen')).toEqual([{ i: values.length + 1 }]);
    expect(logged.length).toBe(values.length);
    for (const [i, err] of logged.entries()) {
      expect(err, values[i]![0]).toBeInstanceOf(HandlerError);
      expect((err as HandlerError).code).toBe('ERR_HANDLER');
      expect((err as HandlerError).cause).toBe(values[i]![1]);
    }
  });

  it('failFast reports ERR_HANDLER carrying the thrown value; dead letters record it', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    await deposits(db, 2);
    const p = db.processor('p').on('Dep', () => {
      throw Object.create(null);
    }).build();
    const e = await expectRejects(p.processBatch(), HandlerError, 'ERR_HANDLER');
    expect((e.cause as HandlerError).code).toBe('ERR_HANDLER');
    expect(p.cursor()).toBe(0n);
    await p.close();
    const q = db.processor('q').on('Dep', () => {
      throw 'nope';
    }).onError('deadLetter').build();
    await q.catchUp();
    expect(q.deadLetters.list().map((d) => [d.errorCode, d.error])).toEqual([
      ['ERR_HANDLER', 'the handler for Dep threw "nope"'],
      ['ERR_HANDLER', 'the handler for Dep threw "nope"'],
    ]);
  });

  it('a migration step throwing anything fails with ERR_HANDLER carrying it, and is rolled back', async () => {
    const db = await box.open();
    let thrown: unknown;
    db.migrations.add({
      version: 1,
      name: 'x',
      up: (sql) => {
        sql.exec('CREATE TABLE x(a)');
        throw thrown;
      },
    });
    for (const [label, v] of [...values, ['an Error of the user', new TypeError('mine')] as [string, unknown]]) {
      thrown = v;
      const e = expectThrows(() => db.migrations.run(), HandlerError, 'ERR_HANDLER');
      expect(e.cause, label).toBe(v);
      expect(e.message).toMatch(/^migration 1 \(x\) up failed: .*; it was rolled back$/);
      expect(tableNames(db)).toEqual([]);
      expect(db.migrations.history()).toEqual([]);
    }
  });

  it('onProgress and onLog that throw: a typed error, or ignored', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    await deposits(db, 2);
    const p = db.processor('p').on('Dep', () => {
      throw new Error('bad');
    }).onError('skip').onLog(() => {
      throw Symbol('log');
    }).batchSize(1).build();
    const e = await expectRejects(p.catchUp({ onProgress: () => { throw 7; } }), HandlerError, 'ERR_HANDLER');
    expect(e.cause).toBe(7);
    expect(p.cursor()).toBe(1n);
  });
});

describe('bad arguments are refused before anything happens', () => {
  it('migrations.rollbackTo needs a non-negative integer, and checks every step first', async () => {
    const db = await box.open();
    const m = db.migrations.add(
      { version: 1, name: 'a', up: 'CREATE TABLE a(x)', down: 'DROP TABLE a' },
      { version: 2, name: 'b', up: 'CREATE TABLE b(x)' },
      { version: 3, name: 'c', up: 'CREATE TABLE c(x)', down: 'DROP TABLE c' },
    );
    m.run();
    for (const v of [1.5, -1, '-1', NaN, Infinity, null, 2n]) {
      expectThrows(() => m.rollbackTo(v as number), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(m.schemaVersion()).toBe(3);
    // Migration 2 has no down: refused before 3 is rolled back.
    expectThrows(() => m.rollbackTo(0), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(m.schemaVersion()).toBe(3);
    expect(tableNames(db)).toEqual(['a', 'b', 'c']);
    expect(m.rollbackTo(2).map((h) => h.version)).toEqual([3]);
    expect(tableNames(db)).toEqual(['a', 'b']);
  });

  it('processor.rebuild refuses an unknown schema mode and bad options, leaving tables and cursor alone', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    db.migrations.add({ version: 1, name: 'seen', up: 'CREATE TABLE seen(i INTEGER)', down: 'DROP TABLE seen' });
    db.migrations.run();
    await deposits(db, 2);
    const p = db.processor('p').on('Dep', (sql, e: StoredEvent<{ i: number }>) => void sql.run('INSERT INTO seen VALUES (?)', [e.payload.i])).build();
    await p.catchUp();
    for (const o of [{ schema: 'bogus' }, { onProgress: 5 }, { what: 1 }, null]) {
      await expectRejects(p.rebuild(o as Parameters<Processor['rebuild']>[0]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(db.sql.all('SELECT i FROM seen ORDER BY i')).toEqual([{ i: 1 }, { i: 2 }]);
    expect(p.cursor()).toBe(2n);
    expect(db.migrations.schemaVersion()).toBe(1);
  });

  it('catchUp, run and waitFor validate their options before moving the cursor', async () => {
    const db = await box.open(undefined, { durability: 'none' });
    await deposits(db, 2);
    const p = db.processor('p').on('Dep', () => undefined).build();
    await expectRejects(p.catchUp({ onProgress: 5 } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(p.catchUp({ signal: 'x' } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(p.catchUp({ onProgres: () => undefined } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(p.run({ signal: {} } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(p.waitFor(1 as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(p.running).toBe(false);
    expect(p.cursor()).toBe(0n);
  });

  it('db.query options and parameters that cannot be read are typed errors', async () => {
    const db = await withT();
    await expectRejects(db.query('SELECT 1', [], { safeIntegers: 'yes' } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.query('SELECT 1', [], null as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const boom = new Error('getter');
    const getter = {
      get a() {
        throw boom;
      },
    };
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    const e1 = await expectRejects(db.query('SELECT :a AS a', getter as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(e1.cause).toBe(boom);
    await expectRejects(db.query('SELECT :a AS a', revoked.proxy as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const e2 = expectThrows(() => db.sql.get('SELECT :a AS a', getter as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(e2.cause).toBe(boom);
    expectThrows(() => db.sql.get('SELECT :a AS a', revoked.proxy as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const list = new Proxy([1], {
      get(target, k) {
        if (k === '0') throw boom;
        return Reflect.get(target, k);
      },
    });
    expectThrows(() => db.sql.run('INSERT INTO t VALUES (?)', list), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(rows(db)).toEqual([]);
    // The connection is fine afterwards.
    expect(db.sql.get('SELECT :a AS a', { a: 1 })).toEqual({ a: 1 });
  });

  it('Migrations.generate and loadDir report file-system problems as typed errors', async () => {
    const dir = box.dir();
    const file = path.join(dir, 'plain-file');
    fs.writeFileSync(file, 'x');
    expectThrows(() => Migrations.generate(file, 'x'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => Migrations.generate(path.join(file, 'sub'), 'x'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => Migrations.generate(path.join(dir, 'm'), 'n'.repeat(300)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => Migrations.generate(path.join(dir, 'x'.repeat(300)), 'ok'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => Migrations.generate(123 as never, 'ok'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const mdir = path.join(dir, 'migrations');
    expect(Migrations.generate(mdir, 'first').version).toBe(1);
    fs.mkdirSync(path.join(mdir, '0002_dir.sql'));
    const db = await box.open();
    const e = expectThrows(() => db.migrations.loadDir(mdir), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('EISDIR');
    expectThrows(() => db.migrations.loadDir(path.join(dir, 'absent')), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.migrations.loadDir(file), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.migrations.registered()).toEqual([]);
  });
});

describe('close in awkward places', () => {
  it('close() while a db.query() is in flight succeeds; the directory reopens with other options', async () => {
    const dir = box.dir();
    const db = await Athanor.open(dir);
    db.sql.exec('CREATE TABLE t(a); INSERT INTO t VALUES (1)');
    const q = db.query('SELECT a FROM t');
    await db.close();
    expect(db.closed).toBe(true);
    expect(await q).toEqual([{ a: 1 }]);
    const again = await box.open(dir, { durability: 'none' });
    expect(again.sql.all('SELECT a FROM t')).toEqual([{ a: 1 }]);
  });

  it('close() inside db.sql.transaction(fn): the call throws ERR_CLOSED, nothing of it is written, the engine is released', async () => {
    const dir = box.dir();
    const db = await Athanor.open(dir);
    db.sql.exec('CREATE TABLE t(a)');
    let closing: Promise<void> | undefined;
    expectThrows(
      () =>
        db.sql.transaction(() => {
          db.sql.run('INSERT INTO t VALUES (1)');
          closing = db.close();
        })(),
      ClosedError,
      'ERR_CLOSED',
    );
    await closing;
    expect(db.closed).toBe(true);
    const again = await box.open(dir, { durability: 'none' });
    expect(again.sql.all('SELECT a FROM t')).toEqual([]);
  });

  it('close() while a processor batch is in flight waits for it; later calls are typed ERR_CLOSED', async () => {
    const db = await Athanor.open(box.dir(), { durability: 'none' });
    await deposits(db, 3);
    const p = db.projection({ name: 'd', on: { Dep: { sql: 'SELECT ?', params: ['$.i'] } } });
    const sql = db.sql;
    const batch = p.processBatch();
    await db.close();
    expectThrows(() => sql.transaction(() => 1)(), ClosedError, 'ERR_CLOSED');
    expect(db.closed).toBe(true);
    await batch.catch(() => undefined);
    for (const call of [() => p.waitFor(), () => p.catchUp(), () => p.processBatch(), () => db.query('SELECT 1')]) {
      const e = await call().then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(AthanorError);
      expect((e as AthanorError).code).toBe('ERR_CLOSED');
    }
  });
});

describe('options objects that fight back', () => {
  it('processor, projection and migration definitions read through getters or proxies are typed errors', async () => {
    const db = await box.open();
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    const boom = {
      get handlers(): never {
        throw new Error('getter');
      },
    };
    expectThrows(() => db.processor('p', boom as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', revoked.proxy as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [{ eventType: revoked.proxy, handle: () => undefined }] } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection(revoked.proxy as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection({ name: 'd', on: revoked.proxy } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.migrations.add(revoked.proxy as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // A getter cannot hand validation one value and registration another.
    let reads = 0;
    const shifty = {
      get version() {
        return ++reads === 1 ? 1 : -5;
      },
      name: 'a',
      up: 'CREATE TABLE a(x)',
    };
    db.migrations.add(shifty as never);
    expect(db.migrations.registered().map((m) => m.version)).toEqual([1]);
  });
});
