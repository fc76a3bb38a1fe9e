/**
 * Several processes on one directory: LMDB serialises their writers, and the
 * optimistic validation (versions stored with each value) works across
 * processes, so concurrent read-modify-write transactions lose no update.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Athanor } from '../dist/index.js';
import { Sandbox } from './helpers.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const CHILD = path.join(FIXTURES, 'increment-child.mjs');
const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

function run(dir: string, count: number, name: string, script = CHILD, writers?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const args = [script, dir, String(count), name, ...(writers === undefined ? [] : [String(writers)])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${name} exited ${code}: ${err}`))));
  });
}

/** Logs `ready` for `by` and resolves once `writers` ready events are in the log (as increment-child.mjs does). */
async function allReady(db: Athanor, by: string, writers: number): Promise<void> {
  await db.transaction().execute((tx) => tx.log('ready', { by }));
  const ready = (): boolean => [...db.events.read({ type: 'ready' })].length >= writers;
  await new Promise<void>((resolve) => {
    const off = db.events.subscribe(() => {
      if (ready()) {
        off();
        resolve();
      }
    });
    if (ready()) {
      off();
      resolve();
    }
  });
}

describe('several processes writing one database', () => {
  it('concurrent increments from three processes all land exactly once', async () => {
    const dir = sandbox.dir();
    const per = 150;
    // This process writes too, while the children run.
    const db = await sandbox.open(dir);
    const { i64 } = await import('../dist/index.js');
    const mine = (async () => {
      await allReady(db, 'parent', 3);
      for (let i = 0; i < per; i++) {
        await db.transaction().execute(
          (tx) => {
            tx.update('counter', (v) => i64((v?.asI64() ?? 0n) + 1n));
            tx.log('incremented', { by: 'parent', i });
          },
          { maxAttempts: 1000 },
        );
      }
    })();
    await Promise.all([run(dir, per, 'a', CHILD, 3), run(dir, per, 'b', CHILD, 3), mine]);

    // Reads on this handle see the other processes' commits.
    expect(db.get('counter').asI64()).toBe(BigInt(3 * per));
    const total = 3 * per + 3; // and the three ready events
    expect(db.events.lastId).toBe(BigInt(total));
    const ids = new Map<string, bigint[]>();
    for (const e of db.events.read<{ by: string }>({ type: 'incremented' })) ids.set(e.payload.by, [...(ids.get(e.payload.by) ?? []), e.id]);
    expect(Object.fromEntries([...ids].map(([by, list]) => [by, list.length]))).toEqual({ a: per, b: per, parent: per });
    // The writers really ran at the same time: each committed between another's first and last commit.
    for (const [by, mineIds] of ids) {
      for (const [other, theirs] of ids) {
        if (other === by) continue;
        const [first, last] = [theirs[0]!, theirs.at(-1)!];
        expect(
          mineIds.some((id) => id > first && id < last),
          `${by} committed nothing between ${other}'s first and last commit`,
        ).toBe(true);
      }
    }
    expect(db.commitSeq).toBe(BigInt(total));
    expect(db.verify().events).toBe(total);
  });

  it('processes creating one new directory at once end with one store they all write to', async () => {
    const dir = path.join(sandbox.dir(), 'new');
    await Promise.all(['a', 'b', 'c', 'd'].map((name) => run(dir, 5, name)));
    const db = await sandbox.open(dir);
    expect(db.get('counter').asI64()).toBe(20n);
    expect([...db.events.read({ type: 'incremented' })].length).toBe(20);
    // The creators that lost left no temporary folder behind.
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('canonical.tmp-'))).toEqual([]);
  });

  it('a process keeps reading and writing after another process grew the map', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir, { mapSize: 1024 * 1024 });
    const { i64 } = await import('../dist/index.js');
    await db.transaction().execute((tx) => tx.set('before', i64(1)));
    const mapBefore = db.stats().mapSize;
    await run(dir, 40, 'grow', path.join(FIXTURES, 'grow-child.mjs')); // ~10 MiB of values
    // This process's mapping is now smaller than the data: reads and writes remap.
    expect(db.get('blob:39').asBytes()[0]).toBe(39);
    expect(db.events.lastId).toBe(40n);
    const r = await db.transaction().execute((tx) => {
      tx.set('after', i64(tx.get('before').asI64() + 1n));
      tx.log('after', {});
    });
    expect(r.firstEventId).toBe(41n);
    expect(db.stats().mapSize).toBeGreaterThan(mapBefore);
    expect(db.verify().events).toBe(41);
  });

  it('subscribers and processors see other processes\' commits without polling', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    db.migrations.add({ version: 1, name: 'seen', up: 'CREATE TABLE seen (n INTEGER NOT NULL)', down: 'DROP TABLE seen' });
    db.migrations.run();
    const insert = db.sql.prepare('INSERT INTO seen VALUES (1)');
    // No poll: only the cross-process commit notifications can wake these.
    const p = db.processor('seen', { pollIntervalMs: 0, handlers: [{ eventType: 'incremented', handle: () => void insert.run() }] });
    const notices: bigint[] = [];
    const all = new Promise<void>((resolve) => {
      const off = db.events.subscribe((n) => {
        notices.push(n.lastEventId);
        if (n.lastEventId >= 20n) {
          off();
          resolve();
        }
      });
    });
    void p.run();
    await run(dir, 20, 'other');
    await all; // without the notify file this never resolves: nothing in this process commits
    await p.waitFor(20n);
    await p.stop();
    expect(notices.length).toBeGreaterThan(0);
    expect(db.sql.get<{ n: number }>('SELECT count(*) AS n FROM seen')?.n).toBe(20);
  });
});
