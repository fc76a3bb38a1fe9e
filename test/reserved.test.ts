// Names that belong to athanor: user code cannot write the reserved state keys (projection
// cursors, model bindings, schedules live there), log reserved event types, create collections
// under reserved names or change the _athanor_* tables, while athanor's own writers can.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, i64 } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

describe('reserved names', () => {
  it('refuses user writes of reserved keys before anything is written; reads are allowed', async () => {
    const db = await sandbox.open();
    await db.scheduler.register('nightly', { cron: '0 2 * * *', run: () => {} }); // athanor writes its own record
    const key = '\0athanor/scheduler/task/nightly';
    const before = db.get(key).asJsonText();
    for (const write of [
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.set(key, i64(1n)),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.delete(key),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.update(key, () => i64(2n)),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.set('\0athanor/vector-projection/p', i64(99n)),
    ]) {
      const seq = db.commitSeq;
      await expectRejects(
        db.transaction().execute((tx) => {
          tx.set('ok', i64(1n));
          write(tx);
        }),
        InvalidArgumentError,
        'ERR_INVALID_ARGUMENT',
      );
      expect(db.commitSeq).toBe(seq);
    }
    expectThrows(() => db.transaction().executeSync((tx) => tx.set(key, i64(1n))), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.get(key).asJsonText()).toBe(before);
    expect(db.getOpt('ok')).toBeUndefined();
    // Keys that only look alike are ordinary keys.
    await db.transaction().execute((tx) => {
      tx.set('athanor/x', i64(1n));
      tx.set('\0athanorx', i64(1n));
    });
    expect(db.get('athanor/x').asI64()).toBe(1n);
  });
});

describe('reserved event types', () => {
  it('refuses event types starting with "athanor." before anything is written', async () => {
    const db = await sandbox.open();
    const seq = db.commitSeq;
    const e = await expectRejects(
      db.transaction().execute((tx) => {
        tx.set('ok', i64(1n));
        tx.log('Deposited', { amount: 1 });
        tx.log('athanor.schedule.ran', {});
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    expect(e.message).toContain('athanor.');
    expect(e.message).toContain('choose another type');
    // Every path that logs: logMany, executeSync, and a type that was just accepted before.
    expectThrows(() => db.transaction().executeSync((tx) => tx.logMany([{ type: 'athanor.x', payload: 1 }])), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().executeSync((tx) => tx.log('athanor.', 1)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.commitSeq).toBe(seq);
    expect(db.getOpt('ok')).toBeUndefined();
    expect([...db.events.read()]).toHaveLength(0);
    // Types that only look alike are ordinary.
    await db.transaction().execute((tx) => {
      tx.log('athanor', 1);
      tx.log('athanorx.y', 1);
      tx.log('my.athanor.z', 1);
    });
    expect([...db.events.read()].map((ev) => ev.type)).toEqual(['athanor', 'athanorx.y', 'my.athanor.z']);
  });
});

describe('reserved vector collection names', () => {
  it('refuses new collections named with a leading "." (the folders of dumps in progress)', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    for (const name of ['.tmp-1-2-3', '.old-docs', '.hidden']) {
      const e = expectThrows(() => db.vectors.create(name, { dimension: 2 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expect(e.message).toContain('choose another name');
      expect(db.vectors.has(name)).toBe(false);
      const embedder = { embedFlat: async () => new Float32Array(2), modelId: 'fake', dimension: 2 };
      expectThrows(
        () => db.vectorProjection({ name: `p${name}`, collection: name, embedder: embedder as never, on: { Doc: { id: '$.id', text: '$.text' } } }),
        InvalidArgumentError,
        'ERR_INVALID_ARGUMENT',
      );
    }
    expect(db.vectors.list()).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'index'))).toBe(false);
    expect(db.vectors.create('a.b', { dimension: 2 }).name).toBe('a.b');
  });
});

describe('reserved SQL tables', () => {
  it("refuses user SQL that changes athanor's _athanor_* tables; reads stay allowed", async () => {
    const db = await sandbox.open();
    const p = db.processor('totals').on('Deposited', (sql) => sql.run('INSERT INTO seen VALUES (1)')).build();
    db.sql.exec('CREATE TABLE seen(x)');
    await db.transaction().execute((tx) => tx.log('Deposited', {}));
    await p.catchUp();
    const cursors = () => db.sql.all('SELECT name, last_event_id FROM _athanor_cursors ORDER BY name');
    const before = cursors();
    expect(before).toEqual([{ name: 'totals', last_event_id: 1 }]);
    for (const text of [
      "UPDATE _athanor_cursors SET last_event_id = 0 WHERE name = 'totals'",
      'DELETE FROM _athanor_cursors',
      "insert into main._athanor_dead_letters(processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at) values ('totals', 1, 'x', 'E', 'e', 1, 0, 0)",
      'DROP TABLE "_athanor_migrations"',
      'ALTER TABLE [_athanor_meta] ADD COLUMN x',
      'CREATE TABLE _athanor_mine(a)',
      'CREATE TRIGGER t AFTER UPDATE ON _athanor_cursors BEGIN SELECT 1; END',
      'CREATE INDEX i ON _athanor_dead_letters(error)',
      'CREATE VIEW _athanor_view AS SELECT 1',
      'WITH x AS (SELECT 1) DELETE FROM _athanor_cursors',
      "REPLACE INTO _Athanor_Cursors(name, last_event_id, updated_at) VALUES ('totals', 0, 0)",
    ]) {
      const e = expectThrows(() => db.sql.run(text), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expect(e.message).toContain('_athanor_');
      expectThrows(() => db.sql.exec(`CREATE TABLE ok1(a); ${text}`), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.sql.prepare(text), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    // The same text athanor itself runs is refused to users too.
    expectThrows(() => db.sql.run('DELETE FROM _athanor_cursors WHERE name = ?', ['totals']), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection({ name: 'bad', on: { Deposited: { sql: 'DELETE FROM _athanor_dead_letters' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.query('DELETE FROM _athanor_cursors'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(cursors()).toEqual(before);
    expect(db.sql.get("SELECT count(*) AS n FROM sqlite_master WHERE name IN ('ok1', '_athanor_mine', 't', 'i', '_athanor_view')")).toEqual({ n: 0 });
    // A trigger that would change them is refused where it fires (SQLite compiles it into
    // the statement that fires it): that statement fails and writes nothing, in a handler too.
    db.sql.exec('CREATE TRIGGER sneaky AFTER INSERT ON seen BEGIN DELETE FROM _athanor_cursors; END');
    const fired = expectThrows(() => db.sql.run('INSERT INTO seen VALUES (2)'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(fired.message).toContain('_athanor_cursors');
    expect(fired.message).toContain('sneaky');
    expect(db.sql.get('SELECT count(*) AS n FROM seen')).toEqual({ n: 1 });
    await db.transaction().execute((tx) => tx.log('Deposited', {}));
    await expect(p.catchUp()).rejects.toThrow(/sneaky/);
    expect(cursors()).toEqual(before);
    db.sql.exec('DROP TRIGGER sneaky');
    // Reads, and names or strings that only mention the prefix, are ordinary.
    expect(db.sql.get('SELECT count(*) AS n FROM _athanor_dead_letters')).toEqual({ n: 0 });
    db.sql.exec("CREATE TABLE my_athanor_notes(a); INSERT INTO my_athanor_notes VALUES ('_athanor_cursors'); -- _athanor_meta");
    expect(db.sql.get('SELECT a FROM my_athanor_notes')).toEqual({ a: '_athanor_cursors' });
    // athanor's own writes still work: the processor moves its cursor.
    await db.transaction().execute((tx) => tx.log('Deposited', {}));
    await p.catchUp();
    expect(cursors()).toEqual([{ name: 'totals', last_event_id: 3 }]);
  });
});
