/**
 * Namespaces: a handle with the database's API whose keys, events, streams,
 * idempotency keys and SQL projections live in the namespace, enforced by the core's
 * key encoding. An adversarial table of crafted keys, ids, stream ids and SQL counts
 * attempts and breaches (0 expected); drop, reopen, verify and the refusals are here too.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, CorruptError, Embedder, InvalidArgumentError, NotFoundError, i64, type DeclarativeSpec, type NamespaceHandle } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

/** Keys a caller might craft to reach another namespace's rows. */
const CRAFTED_KEYS = ['k', '\u0000k', '\u0000\u0000\u0000\u0001k', '\u0001k', 'ns:a/k', '../k', 'k\u0000', 'é', '\uffff', 'a'.repeat(500)];

describe('namespaces', () => {
  it('a namespace reads and writes only its own state, events, streams and idempotency keys', async () => {
    const db = await sb.open();
    const a = db.namespace('tenant-a', { create: true, labels: { plan: 'pro' } });
    const b = db.namespace('tenant-b', { create: true });
    await db.transaction().execute((tx) => {
      tx.set('acct', i64(0n));
      tx.log('opened', { who: 'root' });
    });
    await a.transaction().execute((tx) => {
      tx.set('acct', i64(1n));
      tx.log('opened', { who: 'a' });
    });
    for (let i = 0; i < 3; i++) await b.transaction().execute((tx) => tx.log('deposit', { i }));
    expect(db.get('acct').asI64()).toBe(0n);
    expect(a.get('acct').asI64()).toBe(1n);
    expect(b.getOpt('acct')).toBeUndefined();
    // Ids are each namespace's own, dense from 1.
    expect([...db.events.read({ from: 1n })].map((e) => [e.id, (e.payload as { who: string }).who])).toEqual([[1n, 'root']]);
    expect([...a.events.read({ from: 1n })].map((e) => e.id)).toEqual([1n]);
    expect([...b.events.read({ from: 1n })].map((e) => e.id)).toEqual([1n, 2n, 3n]);
    expect(b.events.get(1n)?.type).toBe('deposit');
    expect(a.events.get(2n)).toBeUndefined();
    expect(a.list().map((e) => e.key)).toEqual(['acct']);
    // Streams and idempotency keys with the same names are separate.
    for (const h of [db, a]) {
      const r = await h.transaction().execute((tx) => tx.append('order-1', { type: 'placed', payload: { h: 1 } }, { expectedVersion: 'none' }), { idempotencyKey: 'once' });
      expect(r.outcome).toBe('applied');
    }
    expect((await a.transaction().execute((tx) => tx.log('x', {}), { idempotencyKey: 'once' })).outcome).toBe('duplicate');
    expect(a.streams.version('order-1')).toBe(1);
    expect(b.streams.version('order-1')).toBe(0);
    // A snapshot of a namespace is of the namespace.
    using snap = b.snapshot();
    expect(snap.lastEventId).toBe(3n);
    expect(snap.getOpt('acct')).toBeUndefined();
    expect(db.namespaces.list().map((n) => [n.name, n.labels])).toEqual([
      ['tenant-a', { plan: 'pro' }],
      ['tenant-b', {}],
    ]);
    const report = db.verify({ report: true });
    expect(report.ok).toBe(true);
    expect(report.namespaces).toEqual([
      { name: 'tenant-a', events: 2 },
      { name: 'tenant-b', events: 3 },
    ]);
  });

  it('crafted keys, ids, stream ids and SQL never reach another namespace (attempts counted, 0 breaches)', async () => {
    const db = await sb.open();
    const a = db.namespace('a', { create: true });
    const b = db.namespace('b', { create: true });
    const secret = `secret-${crypto.randomBytes(4).toString('hex')}`;
    await b.transaction().execute((tx) => {
      for (const k of CRAFTED_KEYS) tx.set(k, i64(7n));
      tx.append('s', { type: 'e', payload: { secret } });
      tx.log('e', { secret });
    });
    b.sql.exec(`CREATE TABLE secrets (v TEXT); INSERT INTO secrets VALUES ('${secret}')`);
    db.sql.exec(`CREATE TABLE root_secrets (v TEXT); INSERT INTO root_secrets VALUES ('${secret}')`);
    let attempts = 0;
    let breaches = 0;
    const probe = (leaked: () => boolean) => {
      attempts++;
      try {
        if (leaked()) breaches++;
      } catch {
        // Refused: isolated.
      }
    };
    for (const h of [a, db]) {
      for (const k of CRAFTED_KEYS) {
        probe(() => h.getOpt(k) !== undefined);
        probe(() => h.exists(k));
        probe(() => h.list({ prefix: k.slice(0, 1) }).length > 0);
      }
      for (const id of [1n, 2n, 3n, 0xffff_ffffn, 1n << 40n]) probe(() => JSON.stringify(h.events.get(id)?.payload ?? null).includes(secret));
      probe(() => [...h.events.read({ from: 1n })].some((e) => JSON.stringify(e.payload).includes(secret)));
      probe(() => [...h.streams.read('s')].length > 0);
      probe(() => h.streams.list().length > 0);
    }
    const projection = (n: NamespaceHandle | Athanor, name: string) => path.join(db.dir, 'namespaces', String(db.namespaces.get(name)!.id), 'projection.db');
    for (const sql of [
      'SELECT v FROM secrets',
      'SELECT v FROM main.secrets',
      'SELECT v FROM root_secrets',
      `ATTACH '${projection(b, 'b')}' AS other`,
      `ATTACH 'file:${projection(b, 'b')}?mode=ro' AS other`,
      `ATTACH '${path.join(db.dir, 'projection.db')}' AS other`,
    ]) {
      probe(() => JSON.stringify(a.sql.all(sql)).includes(secret));
      probe(() => JSON.stringify(a.sql.all('SELECT v FROM other.secrets')).includes(secret));
      attempts++;
      try {
        if (JSON.stringify(await a.query(sql)).includes(secret)) breaches++;
        if (JSON.stringify(await a.query('SELECT v FROM other.secrets')).includes(secret)) breaches++;
      } catch {
        // Refused.
      }
    }
    expect(attempts).toBe(94);
    expect(breaches).toBe(0);
    expectThrows(() => a.sql.exec(`ATTACH '${projection(b, 'b')}' AS other`), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // The namespace still sees all of its own.
    expect(CRAFTED_KEYS.every((k) => b.get(k).asI64() === 7n)).toBe(true);
  });

  it('processors and declarative projections of a namespace read its log into its projection.db', async () => {
    const db = await sb.open();
    const a = db.namespace('a', { create: true });
    await db.transaction().execute((tx) => tx.log('deposit', { amount: 1000 }));
    for (const amount of [1, 2, 3]) await a.transaction().execute((tx) => tx.log('deposit', { amount }));
    a.sql.exec('CREATE TABLE totals (n INTEGER, sum INTEGER)');
    a.sql.exec('INSERT INTO totals VALUES (0, 0)');
    const p = a.processor('totals', {
      handlers: [{ eventType: 'deposit', handle: (sql, e) => void sql.run('UPDATE totals SET n = n + 1, sum = sum + ?', [(e.payload as { amount: number }).amount]) }],
    });
    await p.catchUp();
    expect(a.sql.get('SELECT n, sum FROM totals')).toEqual({ n: 3, sum: 6 });
    a.sql.exec('CREATE TABLE deposits (id INTEGER, amount INTEGER)');
    const d = a.projection({ name: 'deposits', on: { deposit: { sql: 'INSERT INTO deposits VALUES (?, ?)', params: ['@id', '$.amount'] } } });
    await d.catchUp();
    expect(a.sql.all('SELECT id, amount FROM deposits ORDER BY id')).toEqual([
      { id: 1, amount: 1 },
      { id: 2, amount: 2 },
      { id: 3, amount: 3 },
    ]);
    // A commit in the namespace wakes its running processor.
    const run = p.run();
    await a.transaction().execute((tx) => tx.log('deposit', { amount: 4 }));
    await expect.poll(() => a.sql.get('SELECT sum FROM totals')).toEqual({ sum: 10 });
    await p.stop();
    await run;
    await d.close();
    expect(db.sql.all("SELECT name FROM sqlite_master WHERE name IN ('totals', 'deposits')")).toEqual([]);
  });

  it('dropping a namespace removes everything in it; its handle and queued writes fail', async () => {
    const db = await sb.open();
    const a = db.namespace('a', { create: true });
    await a.transaction().execute((tx) => {
      tx.set('k', i64(1n));
      tx.log('e', {});
    });
    a.sql.exec('CREATE TABLE t (x)');
    const id = db.namespaces.get('a')!.id;
    const folder = path.join(db.dir, 'namespaces', String(id));
    expect(fs.existsSync(path.join(folder, 'projection.db'))).toBe(true);
    expect(await db.namespaces.drop('a')).toBe(true);
    expect(await db.namespaces.drop('a')).toBe(false);
    expect(fs.existsSync(folder)).toBe(false);
    expectThrows(() => a.get('k'), Error as never, 'ERR_CLOSED');
    expectThrows(() => db.namespace('a'), NotFoundError, 'ERR_NOT_FOUND');
    // Created again: a new id, empty.
    const again = db.namespace('a', { create: true });
    expect(db.namespaces.get('a')!.id).not.toBe(id);
    expect(again.getOpt('k')).toBeUndefined();
    expect([...again.events.read({ from: 1n })]).toEqual([]);
    expect(db.verify({ report: true }).ok).toBe(true);
  });

  it('namespaces survive reopening; bad names and options are refused before anything is written', async () => {
    const dir = sb.dir();
    const db = await Athanor.open(dir);
    const a = db.namespace('acme', { create: true });
    await a.transaction().execute((tx) => tx.set('k', i64(5n)));
    for (const bad of ['', 'Acme', 'a/b', 'default', '-x', 'x'.repeat(65)]) {
      expectThrows(() => db.namespace(bad, { create: true }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.namespaces.create(bad), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expectThrows(() => db.namespaces.create('acme'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.namespaces.create('x', { labels: { a: 1 as never } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.namespace('x', { bogus: true } as never), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.namespace('missing'), NotFoundError, 'ERR_NOT_FOUND');
    expect(db.namespaces.list().map((n) => n.name)).toEqual(['acme']);
    // What belongs to the database is refused on a namespace's handle.
    expectThrows(() => a.namespace('x'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(a.backup(sb.dir()), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await db.close();
    expect(a.closed).toBe(true);
    const again = await sb.open(dir);
    expect(again.namespace('acme').get('k').asI64()).toBe(5n);
  });

  it('a backup holds the namespaces: restored, each has its data, its digest matches, its projections rebuild from its log', async () => {
    const db = await sb.open();
    const a = db.namespace('a', { create: true, labels: { tier: 'gold' } });
    for (const amount of [5, 7]) {
      await a.transaction().execute((tx) => {
        tx.set(`deposit/${amount}`, i64(BigInt(amount)));
        tx.log('deposit', { amount });
      });
    }
    a.sql.exec('CREATE TABLE IF NOT EXISTS deposits (id INTEGER, amount INTEGER)');
    const spec: DeclarativeSpec = { name: 'deposits', on: { deposit: { sql: 'INSERT INTO deposits VALUES (?, ?)', params: ['@id', '$.amount'] } } };
    await a.projection(spec).catchUp();
    const before = await db.contentDigest();
    const backupDir = path.join(sb.dir(), 'backup');
    const manifest = await db.backup(backupDir);
    expect(manifest.contentDigest.sha256).toBe(before.sha256);
    // A change inside a namespace changes the database's digest.
    await a.transaction().execute((tx) => tx.set('deposit/5', i64(6n)));
    expect((await db.contentDigest()).sha256).not.toBe(before.sha256);

    const target = path.join(sb.dir(), 'restored');
    expect((await Athanor.restore(backupDir, target)).sha256).toBe(before.sha256);
    const restored = await sb.open(target);
    const ra = restored.namespace('a');
    expect(restored.namespaces.get('a')!.labels).toEqual({ tier: 'gold' });
    expect(ra.get('deposit/5').asI64()).toBe(5n);
    expect([...ra.events.read({ from: 1n })].map((e) => e.id)).toEqual([1n, 2n]);
    ra.sql.exec('CREATE TABLE IF NOT EXISTS deposits (id INTEGER, amount INTEGER)');
    await ra.projection(spec).catchUp();
    expect(ra.sql.all('SELECT id, amount FROM deposits ORDER BY id')).toEqual([
      { id: 1, amount: 5 },
      { id: 2, amount: 7 },
    ]);
    expect(restored.verify({ report: true }).ok).toBe(true);
  });

  it('vector collections of a namespace are its own: the same name holds other documents, dumps lie in its folder, a drop takes them', async () => {
    const dir = sb.dir();
    let db = await Athanor.open(dir);
    let a = db.namespace('a', { create: true });
    const unit = (i: number) => Float32Array.from({ length: 8 }, (_, j) => (j === i ? 1 : 0.01));
    for (const h of [db, a]) h.vectors.create('docs', { dimension: 8, metric: 'cosine' });
    await a.transaction().execute((tx) => {
      for (let i = 0; i < 4; i++) tx.vectors('docs').upsert(`a${i}`, unit(i), { owner: 'a' });
    });
    await db.vectors.open('docs').upsert('root', unit(0), { owner: 'root' });
    const inA = a.vectors.open('docs');
    expect(inA.count()).toBe(4);
    expect(db.vectors.open('docs').count()).toBe(1);
    expect(inA.search(unit(0), { k: 10 }).map((h) => h.id)).toEqual(expect.arrayContaining(['a0', 'a1', 'a2', 'a3']));
    expect(inA.search(unit(0), { k: 10 }).some((h) => h.id === 'root')).toBe(false);
    expect(db.vectors.open('docs').search(unit(0), { k: 10 }).map((h) => h.id)).toEqual(['root']);
    expect(a.vectors.list().map((c) => c.name)).toEqual(['docs']);
    expect(db.vectors.list().map((c) => c.name)).toEqual(['docs']);
    // A name that spells another namespace's collection is refused, never resolved.
    const id = db.namespaces.get('a')!.id;
    expectThrows(() => db.vectors.open(`\u0000${id}\u0000docs`), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.verify({ report: true }).vectorCollections.map((c) => [c.name, c.documents])).toEqual([
      ['a/docs', 4],
      ['docs', 1],
    ]);
    await inA.waitIndexed();
    await db.close();
    // Each index was dumped at close, the namespace's in its own folder.
    expect(fs.readdirSync(path.join(dir, 'index'))).toEqual(['docs']);
    expect(fs.existsSync(path.join(dir, 'namespaces', String(id), 'index', 'docs', 'manifest.json'))).toBe(true);
    // Reopened: the namespace's index is loaded from its dump.
    db = await sb.open(dir);
    a = db.namespace('a');
    const reopened = a.vectors.open('docs');
    await reopened.waitIndexed();
    expect(reopened.stats().loadedFromDump).toBe(true);
    expect(reopened.search(unit(2), { k: 1 }).map((h) => h.id)).toEqual(['a2']);
    expect(await db.namespaces.drop('a')).toBe(true);
    expect(db.vectors.open('docs').count()).toBe(1);
    const again = db.namespace('a', { create: true });
    expect(again.vectors.list()).toEqual([]);
    expect(db.verify({ report: true }).ok).toBe(true);
  });

  it("verify checks a namespace's index dumps and names a damaged one", async () => {
    const dir = sb.dir();
    let db = await Athanor.open(dir);
    const a = db.namespace('a', { create: true });
    a.vectors.create('docs', { dimension: 4 });
    await a.vectors.open('docs').upsertMany(['x', 'y'], Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0]));
    await a.vectors.open('docs').waitIndexed();
    await db.close();
    db = await Athanor.open(dir);
    expect(db.verify({ report: true }).indexDumps).toBe(1);
    await db.close();
    const dump = path.join(dir, 'namespaces', String(1), 'index', 'docs');
    const file = fs.readdirSync(dump).find((f) => f !== 'manifest.json')!;
    const bytes = fs.readFileSync(path.join(dump, file));
    bytes[bytes.length >> 1]! ^= 0xff;
    fs.writeFileSync(path.join(dump, file), bytes);
    db = await sb.open(dir);
    const e = expectThrows(() => db.verify(), CorruptError, 'ERR_CORRUPT');
    expect(e.message).toContain(dump);
  });

  it('a vector projection of a namespace embeds its log into its own collection', async () => {
    const db = await sb.open();
    const a = db.namespace('a', { create: true });
    const embedder = await Embedder.open(await ensureTestModel());
    try {
      await db.transaction().execute((tx) => tx.log('Doc', { id: 'root', text: 'a document of the database itself' }));
      await a.transaction().execute((tx) => {
        tx.log('Doc', { id: 'a1', text: 'the namespace keeps its own documents' });
        tx.log('Doc', { id: 'a2', text: 'and embeds them into its own collection' });
      });
      const p = a.vectorProjection({ name: 'vp', collection: 'docs', embedder, on: { Doc: { id: '$.id', text: '$.text' } } });
      await p.catchUp();
      const docs = a.vectors.open('docs');
      expect(docs.count()).toBe(2);
      expect(docs.get('root')).toBeUndefined();
      expect(db.vectors.list()).toEqual([]);
      await p.close();
    } finally {
      embedder.close();
    }
  }, 60_000);

  it('a chained database chains each namespace: a flipped byte in a namespace event is found at that event', async () => {
    const dir = sb.dir();
    const run = crypto.randomBytes(4).toString('hex');
    const db = await Athanor.open(dir, { chain: true });
    const a = db.namespace('a', { create: true });
    for (let i = 1; i <= 4; i++) await a.transaction().execute((tx) => tx.log('note', { tag: `ns-chain-${run}-${i}-payload` }));
    const proof = a.events.proof(3n)!;
    expect(proof.id).toBe(3n);
    expect(db.verify({ report: true }).ok).toBe(true);
    await db.close();
    const file = path.join(dir, 'canonical', 'data.mdb');
    const data = fs.readFileSync(file);
    const needle = Buffer.from(`ns-chain-${run}-3-payload`);
    let flipped = 0;
    for (let at = data.indexOf(needle); at >= 0; at = data.indexOf(needle, at + 1), flipped++) data[at + needle.length - 1] ^= 1;
    fs.writeFileSync(file, data);
    expect(flipped).toBeGreaterThan(0);
    const again = await sb.open(dir, { chain: true });
    expectThrows(() => again.verify(), CorruptError, 'ERR_CORRUPT');
    const chain = again.verify({ report: true }).violations.filter((v) => v.kind === 'event_chain');
    expect(chain.map((v) => v.detail)).toEqual([expect.stringMatching(/^namespace "a": event 3 breaks the hash chain/)]);
  });
});
