/** Migrations of projection.db: code-defined and file-based, history, drift, rollback. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, MigrationDriftError, Migrations, SqlSyntaxError, checksumOf } from '../dist/index.js';
import { Sandbox, expectThrows } from './helpers.js';

const box = new Sandbox();
afterEach(() => box.cleanup());

const M1 = { version: 1, name: 'accounts', up: 'CREATE TABLE accounts(id TEXT PRIMARY KEY)', down: 'DROP TABLE accounts' };
const M2 = {
  version: 2,
  name: 'balance',
  up: 'ALTER TABLE accounts ADD COLUMN balance INTEGER NOT NULL DEFAULT 0',
  down: 'ALTER TABLE accounts DROP COLUMN balance',
  verify: (sql: import('../dist/index.js').Sql) => sql.all('PRAGMA table_info(accounts)').length === 2,
};

function tables(db: Awaited<ReturnType<Sandbox['open']>>): string[] {
  return db.sql.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_athanor\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name").map((r) => r.name);
}

describe('migrations', () => {
  it('runs pending migrations in order, records history, rolls back the last', async () => {
    const db = await box.open();
    const m = db.migrations.add(M2, M1);
    expect(m.schemaVersion()).toBe(0);
    expect(m.pending().map((x) => x.version)).toEqual([1, 2]);
    const applied = m.run();
    expect(applied.map((a) => [a.version, a.name])).toEqual([
      [1, 'accounts'],
      [2, 'balance'],
    ]);
    expect(m.pending()).toEqual([]);
    expect(m.schemaVersion()).toBe(2);
    const h = m.history();
    expect(h[0]!.checksum).toBe(checksumOf(M1));
    expect(h[0]!.appliedAt).toBeGreaterThan(0);
    expect(m.run()).toEqual([]);
    expect(m.rollbackLast()!.version).toBe(2);
    expect(m.schemaVersion()).toBe(1);
    expect(db.sql.all('PRAGMA table_info(accounts)').length).toBe(1);
    m.rollbackLast();
    expect(m.rollbackLast()).toBeUndefined();
    expect(tables(db)).toEqual([]);
  });

  it('rolls back the whole run when one migration fails: the schema is left as it was', async () => {
    const db = await box.open();
    db.migrations.add(M1, { version: 2, name: 'bad', up: 'CREATE TABLE half(a); CREAT TABLE oops(b);' }, { version: 3, name: 'later', up: 'CREATE TABLE later(a)' });
    expectThrows(() => db.migrations.run(), SqlSyntaxError, 'ERR_SQL_SYNTAX');
    expect(db.migrations.schemaVersion()).toBe(0);
    expect(tables(db)).toEqual([]);
    // Without the bad one, the same run applies the rest.
    const ok = await box.open();
    ok.migrations.add(M1, { version: 3, name: 'later', up: 'CREATE TABLE later(a)' });
    expect(ok.migrations.run().map((m) => m.version)).toEqual([1, 3]);
    expect(tables(ok)).toEqual(['accounts', 'later']);
    const failingVerify = { version: 4, name: 'v', up: 'CREATE TABLE v(a)', verify: () => false };
    const db2 = await box.open();
    db2.migrations.add(failingVerify);
    expectThrows(() => db2.migrations.run(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(tables(db2)).toEqual([]);
  });

  it('refuses a changed applied migration (drift)', async () => {
    const dir = box.dir();
    let db = await box.open(dir);
    db.migrations.add(M1).run();
    await db.close();
    db = await box.open(dir);
    db.migrations.add({ ...M1, up: 'CREATE TABLE accounts(id TEXT PRIMARY KEY, extra TEXT)' });
    const e = expectThrows(() => db.migrations.pending(), MigrationDriftError, 'ERR_MIGRATION_DRIFT');
    expect(e.message).toMatch(/migration 1 \(accounts\)/);
    expectThrows(() => db.migrations.run(), MigrationDriftError, 'ERR_MIGRATION_DRIFT');
  });

  it('rejects bad definitions and duplicate versions', async () => {
    const db = await box.open();
    const m = db.migrations;
    expectThrows(() => m.add({ ...M1, version: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => m.add({ ...M1, name: 'bad name' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => m.add({ ...M1, up: 3 as unknown as string }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => m.add(M1, { ...M1, name: 'again' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(m.registered()).toEqual([]);
    m.add({ version: 1, name: 'nodown', up: 'CREATE TABLE x(a)' }).run();
    expectThrows(() => m.rollbackLast(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('generates, loads and runs file-based migrations', async () => {
    const dir = path.join(box.dir(), 'migrations');
    const g1 = Migrations.generate(dir, 'create_items');
    expect(path.basename(g1.up)).toBe('0001_create_items.sql');
    expect(path.basename(g1.down)).toBe('0001_create_items.down.sql');
    fs.writeFileSync(g1.up, 'CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT);');
    fs.writeFileSync(g1.down, 'DROP TABLE items;');
    const g2 = Migrations.generate(dir, 'add_price');
    expect(g2.version).toBe(2);
    fs.writeFileSync(g2.up, 'ALTER TABLE items ADD COLUMN price INTEGER;');
    fs.writeFileSync(g2.down, 'ALTER TABLE items DROP COLUMN price;');
    const db = await box.open();
    db.migrations.loadDir(dir);
    expect(db.migrations.pending().map((m) => m.name)).toEqual(['create_items', 'add_price']);
    db.migrations.run();
    expect(db.sql.all<{ name: string }>('PRAGMA table_info(items)').map((c) => c.name)).toEqual(['id', 'name', 'price']);
    expect(db.migrations.rollbackTo(0).length).toBe(2);
    expect(tables(db)).toEqual([]);
    expectThrows(() => Migrations.generate(dir, 'bad name'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('code-defined steps may be functions', async () => {
    const db = await box.open();
    db.migrations.add({
      version: 1,
      name: 'seed',
      up: (sql) => {
        sql.exec('CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)');
        sql.run('INSERT INTO kv VALUES (?, ?)', ['a', 1]);
      },
      down: (sql) => sql.exec('DROP TABLE kv'),
    });
    db.migrations.run();
    expect(db.sql.get('SELECT v FROM kv')).toEqual({ v: 1 });
  });
});
