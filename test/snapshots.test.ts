import { afterEach, describe, expect, it } from 'vitest';
import { ClosedError, NotFoundError, bytes, i64, str } from '../dist/index.js';
import { Sandbox, expectThrows } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

describe('snapshots', () => {
  it('a snapshot keeps seeing the old state and old lastEventId after new commits', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => {
      tx.set('a', i64(1));
      tx.set('gone-later', str('here'));
      tx.log('first', { v: 1 });
    });
    const snap = db.snapshot();
    expect(snap.commitSeq).toBe(1n);
    expect(snap.lastEventId).toBe(1n);

    for (let i = 2; i <= 5; i++) {
      await db.transaction().execute((tx) => {
        tx.set('a', i64(i));
        tx.set('b', i64(i));
        tx.delete('gone-later');
        tx.log('next', { v: i });
      });
      // The database sees the commit as soon as the promise resolves...
      expect(db.get('a').asI64()).toBe(BigInt(i));
      expect(db.events.lastId).toBe(BigInt(i));
      // ...and the snapshot does not.
      expect(snap.get('a').asI64()).toBe(1n);
      expect(snap.exists('b')).toBe(false);
      expect(snap.getOpt('b')).toBeUndefined();
      expect(snap.get('gone-later').asString()).toBe('here');
      expect(snap.commitSeq).toBe(1n);
      expect(snap.lastEventId).toBe(1n);
      expect([...snap.events()].map((e) => e.id)).toEqual([1n]);
      expect([...snap.events({ reverse: true })].map((e) => e.id)).toEqual([1n]);
      expect([...snap.events({ type: 'next' })]).toEqual([]);
    }
    expectThrows(() => snap.get('b'), NotFoundError, 'ERR_NOT_FOUND');
    const later = db.snapshot();
    expect(later.commitSeq).toBe(5n);
    expect(later.lastEventId).toBe(5n);
    expect(later.get('a').asI64()).toBe(5n);
    expect([...later.events({ type: 'next' })].map((e) => e.payload)).toEqual([{ v: 2 }, { v: 3 }, { v: 4 }, { v: 5 }]);
    snap.close();
    later.close();
  });

  it('snapshot reads of large values stay consistent', async () => {
    const db = await sandbox.open();
    const old = new Uint8Array(100_000).fill(1);
    await db.transaction().execute((tx) => tx.set('blob', bytes(old)));
    const snap = db.snapshot();
    await db.transaction().execute((tx) => tx.set('blob', bytes(new Uint8Array(120_000).fill(2))));
    expect(snap.get('blob').asBytes()).toEqual(old);
    expect(db.get('blob').asBytes().length).toBe(120_000);
    snap.close();
  });

  it('a snapshot taken on an empty database sees nothing', async () => {
    const db = await sandbox.open();
    const snap = db.snapshot();
    await db.transaction().execute((tx) => {
      tx.set('a', i64(1));
      tx.log('x', {});
    });
    expect(snap.commitSeq).toBe(0n);
    expect(snap.lastEventId).toBe(0n);
    expect(snap.exists('a')).toBe(false);
    expect([...snap.events()]).toEqual([]);
    snap.close();
  });

  it('a closed snapshot throws ClosedError; closing twice is fine', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => {
      tx.set('a', i64(1));
      tx.log('x', {});
    });
    const snap = db.snapshot();
    expect(db.stats().openSnapshots).toBe(1);
    snap.close();
    snap.close();
    expect(db.stats().openSnapshots).toBe(0);
    expectThrows(() => snap.get('a'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => snap.getOpt('a'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => snap.exists('a'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => snap.events(), ClosedError, 'ERR_CLOSED');
    // The database itself is unaffected.
    expect(db.get('a').asI64()).toBe(1n);
  });

  it('an iterator that outlives its snapshot throws ClosedError on the next page', async () => {
    const db = await sandbox.open(undefined, { durability: 'none' });
    await db.transaction().execute((tx) => {
      for (let i = 0; i < 1500; i++) tx.log('x', { i });
    });
    const snap = db.snapshot();
    const it = snap.events();
    for (let i = 0; i < 1024; i++) it.next();
    snap.close();
    expectThrows(() => it.next(), ClosedError, 'ERR_CLOSED');
  });

  it('db.close() closes its snapshots', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    await db.transaction().execute((tx) => tx.set('a', i64(1)));
    const s1 = db.snapshot();
    const s2 = db.snapshot();
    expect(db.stats().openSnapshots).toBe(2);
    await db.close();
    expectThrows(() => s1.get('a'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => s2.events(), ClosedError, 'ERR_CLOSED');
    s1.close(); // still idempotent
    // The directory can be opened again and its data is intact.
    const again = await sandbox.open(dir);
    expect(again.get('a').asI64()).toBe(1n);
  });

  it('many snapshots can be open at once, each on its own state', async () => {
    const db = await sandbox.open();
    const snaps = [];
    for (let i = 1; i <= 20; i++) {
      await db.transaction().execute((tx) => tx.set('n', i64(i)));
      snaps.push(db.snapshot());
    }
    snaps.forEach((s, i) => {
      expect(s.get('n').asI64()).toBe(BigInt(i + 1));
      expect(s.commitSeq).toBe(BigInt(i + 1));
    });
    for (const s of snaps) s.close();
    expect(db.stats().openSnapshots).toBe(0);
  });
});
