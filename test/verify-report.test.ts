/**
 * `db.verify({ report: true })`: counts of everything in the directory and every
 * violation found, on real files damaged the way a bad copy or a buggy tool would
 * (projection.db rows written straight through SQLite). And `db.list()`, the state
 * scan in key order that `athanor state list` uses.
 */
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, CorruptError, InvalidArgumentError, i64, str } from '../dist/index.js';
import { Sandbox, expectThrows } from './helpers.js';

/** better-sqlite3 (a dev dependency without bundled types), to damage projection.db the way another tool could. */
const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string) => {
  prepare(sql: string): { run(...params: unknown[]): unknown };
  close(): void;
};

const sb = new Sandbox();
afterEach(() => sb.cleanup());

/** A database with 4 events, a processor that dead-lettered one, a vector collection and an idempotency record. */
async function populated(): Promise<string> {
  const dir = sb.dir();
  const db = await Athanor.open(dir);
  await db.transaction().execute(
    (tx) => {
      tx.set('acct:a', i64(1));
      tx.set('acct:b', i64(2));
      for (const n of [1, 2, 3]) tx.log('seen', { n });
    },
    { idempotencyKey: 'load' },
  );
  await db.transaction().execute((tx) => tx.log('other', {}));
  db.migrations.add({ version: 1, name: 'seen', up: 'CREATE TABLE seen (n INTEGER PRIMARY KEY)', down: 'DROP TABLE seen' });
  db.migrations.run();
  const p = db
    .processor('seen')
    .on<{ n: number }>('seen', (sql, e) => {
      if (e.payload.n === 2) throw new Error('two is refused');
      sql.run('INSERT INTO seen VALUES (?)', [e.payload.n]);
    })
    .onError('deadLetter')
    .build();
  await p.catchUp();
  await p.close();
  const c = db.vectors.create('docs', { dimension: 2 });
  await c.upsertMany(['x', 'y'], new Float32Array([1, 0, 0, 1]));
  await c.waitIndexed();
  await db.close();
  return dir;
}

/** Runs `fn` on projection.db of `dir` through SQLite directly (the database closed meanwhile). */
function damage(dir: string, fn: (sql: InstanceType<typeof Database>) => void): void {
  const sql = new Database(path.join(dir, 'projection.db'));
  try {
    fn(sql);
  } finally {
    sql.close();
  }
}

describe('verify({ report: true })', () => {
  it('counts everything on an intact database and reports ok', async () => {
    const dir = await populated();
    const db = await sb.open(dir);
    const r = db.verify({ report: true });
    expect(r).toMatchObject({
      ok: true,
      events: 4,
      lastEventId: 4,
      stateKeys: expect.any(Number),
      typeIndexEntries: 4,
      idempotencyRecords: 1,
      processors: [{ name: 'seen', cursor: 4 }],
      deadLetters: 1,
      vectorCollections: [{ name: 'docs', documents: 2 }],
      vectorDocuments: 2,
      violations: [],
    });
    expect(r.stateKeys).toBeGreaterThanOrEqual(2);
    // The plain form keeps its shape.
    expect(db.verify()).toEqual({ events: 4 });
  });

  it('lists a cursor past the log and a dead letter naming a missing event; verify() throws ERR_CORRUPT', async () => {
    const dir = await populated();
    damage(dir, (sql) => {
      sql.prepare('UPDATE _athanor_cursors SET last_event_id = 40 WHERE name = ?').run('seen');
      sql
        .prepare('INSERT INTO _athanor_dead_letters (processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run('seen', 77, 'seen', 'ERR_HANDLER', 'made up', 1, 1, 1);
    });
    const db = await sb.open(dir);
    const r = db.verify({ report: true });
    expect(r.ok).toBe(false);
    expect(r.violations.map((v) => v.kind)).toEqual(['cursor_past_log', 'dead_letter_missing_event']);
    expect(r.violations[0]!.detail).toMatch(/"seen".*event 40.*ends at 4/);
    expect(r.violations[1]!.detail).toMatch(/event 77/);
    expect(r.deadLetters).toBe(2);
    expectThrows(() => db.verify(), CorruptError, 'ERR_CORRUPT');
    // The deep form reads the same report from a child process.
    await expect(db.verify({ report: true, deep: true })).resolves.toEqual(r);
  });

  it('refuses options it does not know', async () => {
    const db = await sb.open();
    for (const bad of [{ report: false }, { report: true, deep: 'yes' }, { deep: true, extra: 1 }, {}]) {
      expectThrows(() => db.verify(bad as unknown as { report: true }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
  });
});

describe('list()', () => {
  it('returns state entries by prefix in key order, in pages', async () => {
    const db = await sb.open();
    await db.transaction().execute((tx) => {
      for (const k of ['user:c', 'user:a', 'order:1', 'user:b', 'users', 'user:aa']) tx.set(k, str(k.toUpperCase()));
    });
    const keys = (o: Parameters<Athanor['list']>[0]): string[] => db.list(o).map((e) => e.key);
    expect(keys({ prefix: 'user:' })).toEqual(['user:a', 'user:aa', 'user:b', 'user:c']);
    expect(db.list({ prefix: 'order:' })[0]!.value.asString()).toBe('ORDER:1');
    expect(keys({ prefix: 'user:', limit: 2 })).toEqual(['user:a', 'user:aa']);
    expect(keys({ prefix: 'user:', after: 'user:aa', limit: 2 })).toEqual(['user:b', 'user:c']);
    expect(keys({ prefix: 'user:', after: 'user:c' })).toEqual([]);
    // `after` sorting before the prefix starts at the prefix.
    expect(keys({ prefix: 'user:', after: 'a' })).toHaveLength(4);
    expect(keys({ prefix: 'nothing' })).toEqual([]);
    expect(keys({}).filter((k) => !k.startsWith('\0'))).toEqual(['order:1', 'user:a', 'user:aa', 'user:b', 'user:c', 'users']);
    for (const bad of [{ limit: 0 }, { limit: 100_001 }, { limit: 1.5 }, { prefix: 3 }, { after: null }]) {
      expectThrows(() => db.list(bad as unknown as { limit: number }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
  });
});
