/**
 * Event schema versions and upcasters: events logged at an old version read at the
 * newest on every TypeScript read path; the stored bytes stay as written; a missing
 * step is ERR_UPCAST; declarative projections (payloads read in Rust) are refused.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, Embedder, InvalidArgumentError, UpcastError } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectThrows } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

type V3 = { fullName: string; cents: number };

function register(db: Athanor): void {
  // v1 { name, amount } -> v2 { name, cents } -> v3 { fullName, cents }
  db.events.upcaster('paid', 1, (p) => {
    const { name, amount } = p as { name: string; amount: number };
    return { name, cents: amount * 100 };
  });
  db.events.upcaster('paid', 2, (p) => {
    const { name, cents } = p as { name: string; cents: number };
    return { fullName: name, cents };
  });
}

async function seed(db: Athanor): Promise<void> {
  await db.transaction().execute((tx) => {
    tx.log('paid', { name: 'ann', amount: 1 });
    tx.log('paid', { name: 'bob', cents: 250 }, { schemaVersion: 2 });
    tx.log('paid', { fullName: 'cy', cents: 3 }, { schemaVersion: 3 });
    tx.log('other', new Uint8Array([1, 2]), { schemaVersion: 7 });
    tx.append('acct-1', { type: 'paid', payload: { name: 'dee', amount: 4 } });
  });
}

const expected: V3[] = [
  { fullName: 'ann', cents: 100 },
  { fullName: 'bob', cents: 250 },
  { fullName: 'cy', cents: 3 },
];

describe('upcasters', () => {
  it('every TypeScript read path sees the newest version; the stored bytes do not change', async () => {
    const dir = sandbox.dir();
    let db = await sandbox.open(dir);
    await seed(db);
    // Without upcasters, events read as stored, with their schema version.
    const raw = [...db.events.read()];
    expect(raw.map((e) => e.schemaVersion)).toEqual([undefined, 2, 3, 7, undefined]);
    expect(raw[3]!.payload).toEqual(new Uint8Array([1, 2]));
    register(db);
    expect([...db.events.read<V3>({ type: 'paid' })].map((e) => e.payload)).toEqual([...expected, { fullName: 'dee', cents: 400 }]);
    expect(db.events.get<V3>(1n)!.payload).toEqual(expected[0]);
    expect(db.events.get(1n)!.schemaVersion).toBe(3);
    expect(db.events.tail<V3>(1, { type: 'paid' })[0]!.payload).toEqual({ fullName: 'dee', cents: 400 });
    expect([...db.streams.read<V3>('acct-1')].map((e) => e.payload)).toEqual([{ fullName: 'dee', cents: 400 }]);
    const snap = db.snapshot();
    expect([...snap.events<V3>({ to: 1n })][0]!.payload).toEqual(expected[0]);
    snap.close();
    const seen: unknown[] = [];
    const p = db.processor('p', { handlers: [{ eventType: 'paid', handle: (_sql, e) => void seen.push(e.payload) }] });
    await p.catchUp();
    expect(seen).toEqual([...expected, { fullName: 'dee', cents: 400 }]);
    // A handle without the upcasters reads the stored bytes, unchanged.
    await db.close();
    db = await sandbox.open(dir);
    expect([...db.events.read({ type: 'paid' })].map((e) => e.payload)).toEqual([
      { name: 'ann', amount: 1 },
      { name: 'bob', cents: 250 },
      { fullName: 'cy', cents: 3 },
      { name: 'dee', amount: 4 },
    ]);
  });

  it('a version with no upcaster on its way up is ERR_UPCAST naming the type and version', async () => {
    const db = await sandbox.open();
    await seed(db);
    db.events.upcaster('paid', 2, (p) => p);
    const e = expectThrows(() => [...db.events.read({ type: 'paid' })], UpcastError, 'ERR_UPCAST');
    expect(e.message).toMatch(/"paid"/);
    expect(e.message).toMatch(/version 1/);
    // Events at or past the newest version still read.
    expect(db.events.get(3n)!.payload).toEqual({ fullName: 'cy', cents: 3 });
  });

  it('an upcaster that throws is ERR_UPCAST with the cause', async () => {
    const db = await sandbox.open();
    await seed(db);
    db.events.upcaster('paid', 1, () => {
      throw new Error('boom');
    });
    db.events.upcaster('paid', 2, (p) => p);
    const e = expectThrows(() => db.events.get(1n), UpcastError, 'ERR_UPCAST');
    expect(String((e.cause as Error).message)).toMatch(/boom/);
  });

  it('refuses bad registrations, and declarative projections over upcasted types both ways', async () => {
    const db = await sandbox.open();
    register(db);
    expectThrows(() => db.events.upcaster('paid', 1, (p) => p), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.events.upcaster('paid', 0, (p) => p), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.events.upcaster('paid', 5, 'x' as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    db.sql.exec('CREATE TABLE t(x TEXT)');
    const on = { paid: { sql: 'INSERT INTO t VALUES (?)', params: ['$' as const] } };
    expectThrows(() => db.projection({ name: 'd', on }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    db.projection({ name: 'e', on: { shipped: { sql: 'INSERT INTO t VALUES (?)', params: ['$'] } } });
    expectThrows(() => db.events.upcaster('shipped', 1, (p) => p), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expect(db.transaction().execute((tx) => tx.log('x', {}, { schemaVersion: 0 }))).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('declarative projections read versioned payloads as stored', async () => {
    const db = await sandbox.open();
    db.sql.exec('CREATE TABLE t(name TEXT, v TEXT)');
    await db.transaction().execute((tx) => tx.log('named', { name: 'zed' }, { schemaVersion: 4 }));
    const d = db.projection({ name: 'd', on: { named: { sql: 'INSERT INTO t VALUES (?, ?)', params: ['$.name', '$'] } } });
    await d.catchUp();
    expect(db.sql.all('SELECT name, v FROM t')).toEqual([{ name: 'zed', v: '{"name":"zed"}' }]);
  });

  it('vector projections embed and tag the upcasted payloads', async () => {
    const embedder = await Embedder.open(await ensureTestModel());
    try {
      const db = await sandbox.open();
      await db.transaction().execute((tx) => {
        tx.log('note', { id: 'n1', body: 'reset my password' });
        tx.log('note', { id: 'n2', text: 'my parcel is late', lang: 'en' }, { schemaVersion: 2 });
      });
      db.events.upcaster('note', 1, (p) => {
        const { id, body } = p as { id: string; body: string };
        return { id, text: body, lang: 'fr' };
      });
      const vp = db.vectorProjection({ name: 'v', collection: 'notes', embedder, on: { note: { id: '$.id', text: '$.text', metadata: { lang: '$.lang' } } } });
      await vp.catchUp();
      const c = db.vectors.open('notes');
      expect(c.count()).toBe(2);
      expect(c.get('n1')!.metadata).toEqual({ lang: 'fr' });
      expect(c.get('n2')!.metadata).toEqual({ lang: 'en' });
    } finally {
      embedder.close();
    }
  });
});
