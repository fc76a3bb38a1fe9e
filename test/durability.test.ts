import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { bytes, i64, str, type Durability } from '../dist/index.js';
import { Sandbox } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

const MiB = 1024 * 1024;

/** Deterministic content for blob `i` of `n` bytes. */
function blob(i: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let k = 0; k < n; k++) b[k] = (k * 7 + i * 13) & 0xff;
  return b;
}

describe('durability modes', () => {
  it("the default is 'full'", async () => {
    const db = await sandbox.open();
    expect(db.durability).toBe('full');
  });

  for (const durability of ['full', 'batched', 'none'] as Durability[]) {
    it(`'${durability}' commits and persists across close and reopen`, async () => {
      const dir = sandbox.dir();
      const db = await sandbox.open(dir, { durability, syncIntervalMs: 20 });
      expect(db.durability).toBe(durability);
      for (let i = 0; i < 20; i++) {
        await db.transaction().execute((tx) => {
          tx.update('n', (v) => i64((v?.asI64() ?? 0n) + 1n));
          tx.log('tick', { i });
        });
      }
      await Promise.all(Array.from({ length: 30 }, (_, i) => db.transaction().execute((tx) => tx.set(`k:${i}`, str(`v${i}`)))));
      db.transaction().executeSync((tx) => tx.set('sync', i64(1)));
      await db.close();

      const again = await sandbox.open(dir, { durability });
      expect(again.get('n').asI64()).toBe(20n);
      expect(again.events.lastId).toBe(20n);
      expect(again.commitSeq).toBe(51n);
      for (let i = 0; i < 30; i++) expect(again.get(`k:${i}`).asString()).toBe(`v${i}`);
      expect(again.get('sync').asI64()).toBe(1n);
      expect(again.verify()).toEqual({ events: 20 });
    });

    it(`db.flush() resolves under '${durability}' and the data is there after reopen`, async () => {
      const dir = sandbox.dir();
      const db = await sandbox.open(dir, { durability, syncIntervalMs: 60_000 });
      await db.transaction().execute((tx) => {
        tx.set('flushed', i64(1));
        tx.log('f', {});
      });
      await expect(db.flush()).resolves.toBeUndefined();
      await db.flush(); // repeated flushes are fine
      await db.close();
      const again = await sandbox.open(dir, { durability: 'full' });
      expect(again.get('flushed').asI64()).toBe(1n);
    });
  }

  it('a directory can be reopened with another durability after it was closed', async () => {
    const dir = sandbox.dir();
    const a = await sandbox.open(dir, { durability: 'none' });
    await a.transaction().execute((tx) => tx.set('x', i64(1)));
    await a.close();
    const b = await sandbox.open(dir, { durability: 'batched' });
    await b.transaction().execute((tx) => tx.update('x', (v) => i64(v!.asI64() + 1n)));
    await b.close();
    const c = await sandbox.open(dir);
    expect(c.get('x').asI64()).toBe(2n);
  });
});

describe('process lifetime', () => {
  it('a script that never awaits its commits nor closes the database exits on its own, with every commit durable', async () => {
    const dir = sandbox.dir();
    const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'exit-child.mjs');
    const r = spawnSync(process.execPath, [child, dir], { encoding: 'utf8', timeout: 60_000 });
    expect(r.error).toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(20);
    const db = await sandbox.open(dir);
    expect(db.get('n').asI64()).toBe(20n);
    expect(db.events.lastId).toBe(20n);
    expect(db.verify()).toEqual({ events: 20 });
  });
});

describe('map growth', () => {
  it('a 1 MiB map grows to hold ~16 MiB of values and events, and everything reads back', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir, { mapSize: MiB });
    const initial = db.stats().mapSize;
    expect(initial).toBeGreaterThanOrEqual(MiB);
    expect(initial).toBeLessThan(2 * MiB);

    const VALUE = 192 * 1024;
    const PAYLOAD = 64 * 1024;
    const N = 64; // 64 × 256 KiB = 16 MiB
    // A snapshot taken before the growth keeps reading its state across remaps.
    await db.transaction().execute((tx) => tx.set('before', str('growth')));
    const snap = db.snapshot();

    // Half sequential, half concurrent (grouped commits that must grow the map mid-group).
    for (let i = 0; i < N / 2; i++) {
      await db.transaction().execute((tx) => {
        tx.set(`blob:${i}`, bytes(blob(i, VALUE)));
        tx.log('blob', blob(i + 1000, PAYLOAD));
      });
    }
    await Promise.all(
      Array.from({ length: N / 2 }, (_, j) => {
        const i = N / 2 + j;
        return db.transaction().execute((tx) => {
          tx.set(`blob:${i}`, bytes(blob(i, VALUE)));
          tx.log('blob', blob(i + 1000, PAYLOAD));
        });
      }),
    );

    const grown = db.stats().mapSize;
    expect(grown).toBeGreaterThan(16 * MiB);
    expect(snap.get('before').asString()).toBe('growth');
    expect(snap.exists('blob:0')).toBe(false);
    expect(snap.lastEventId).toBe(0n);
    snap.close();

    const check = (d: typeof db) => {
      for (let i = 0; i < N; i++) {
        expect(Buffer.compare(Buffer.from(d.get(`blob:${i}`).asBytes()), Buffer.from(blob(i, VALUE))), `blob:${i}`).toBe(0);
      }
      const events = [...d.events.read({ type: 'blob' })];
      expect(events).toHaveLength(N);
      expect(events.map((e) => e.id)).toEqual(Array.from({ length: N }, (_, k) => BigInt(k + 1)));
      // Every payload is exactly one of the logged blobs, each logged once.
      const byFirstByte = new Map(Array.from({ length: N }, (_, i) => [blob(i + 1000, 1)[0]!, i]));
      const seen = new Set<number>();
      for (const e of events) {
        const p = e.payload as Uint8Array;
        const i = byFirstByte.get(p[0]!)!;
        expect(i).toBeDefined();
        expect(Buffer.compare(Buffer.from(p), Buffer.from(blob(i + 1000, PAYLOAD)))).toBe(0);
        seen.add(i);
      }
      expect(seen.size).toBe(N);
      expect(d.verify()).toEqual({ events: N });
    };
    check(db);
    await db.close();

    // Reopen with the same small initial map size: the grown file is adopted.
    const again = await sandbox.open(dir, { mapSize: MiB });
    expect(again.stats().mapSize).toBeGreaterThan(16 * MiB);
    check(again);
    // And it keeps growing when needed.
    for (let i = 0; i < 8; i++) {
      await again.transaction().execute((tx) => tx.set(`more:${i}`, bytes(blob(i, MiB))));
    }
    expect(again.get('more:7').asBytes().length).toBe(MiB);
    expect(again.verify()).toEqual({ events: N });
  });

  it('a single commit larger than the whole initial map succeeds', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir, { mapSize: MiB });
    const big = blob(3, 8 * MiB);
    const r = await db.transaction().execute((tx) => {
      tx.set('huge', bytes(big));
      tx.log('huge', big.subarray(0, 2 * MiB));
    });
    expect(r.outcome).toBe('applied');
    expect(Buffer.compare(Buffer.from(db.get('huge').asBytes()), Buffer.from(big))).toBe(0);
    expect((db.events.get(1n)!.payload as Uint8Array).length).toBe(2 * MiB);
    db.transaction().executeSync((tx) => tx.set('huge2', bytes(big)));
    expect(db.get('huge2').asBytes().length).toBe(8 * MiB);
    expect(db.verify()).toEqual({ events: 1 });
  });
});
