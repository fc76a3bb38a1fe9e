/**
 * Opening a database: `Athanor.open` does its loading (the LMDB checks, every
 * vector collection and index dump) on the libuv pool, so the event loop keeps
 * running while a large database opens. Real files on disk.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, NotFoundError, i64 } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows, loopDuring, expectLoopTurned } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'large-db-child.mjs');
const DIM = 32;
const COLLECTIONS = 4;
const PER_COLLECTION = 5000;

/** A closed database, made by another process, holding {@link COLLECTIONS} indexed collections of {@link PER_COLLECTION} vectors each. */
function largeDatabase(): string {
  const dir = sb.dir();
  const made = spawnSync(process.execPath, [CHILD, dir, String(COLLECTIONS), String(PER_COLLECTION), String(DIM)], { encoding: 'utf8' });
  expect(made.status, made.stderr).toBe(0);
  return dir;
}

describe('Athanor.open', () => {
  it('loads a large database off the event loop: timers keep firing while it opens', async () => {
    const dir = largeDatabase();
    // The open resolves once the definitions are read; the indexes load on a
    // background thread, and ready() resolves once they have: the loop turns throughout.
    const turns = await loopDuring(async () => {
      const db = await sb.open(dir);
      for (let c = 0; c < COLLECTIONS; c++) await db.vectors.open(`c${c}`).ready();
      return db;
    });
    const db = turns.value;
    // The open really loaded everything it was timed on.
    for (let c = 0; c < COLLECTIONS; c++) {
      const stats = db.vectors.open(`c${c}`).stats();
      expect(stats).toMatchObject({ count: PER_COLLECTION, graphPoints: PER_COLLECTION, pending: 0 });
    }
    // Relative to the open's own duration, not to a clock: the loop turned during it
    // (the synchronous open let no tick in).
    expectLoopTurned(turns);
  }, 120_000);

  it('opens the same directory concurrently into one shared engine', async () => {
    const dir = sb.dir();
    const [a, b] = await Promise.all([sb.open(dir), sb.open(dir)]);
    await a!.transaction().execute((tx) => tx.set('k', i64(1)));
    expect(b!.get('k')).toEqual(i64(1));
  });

  it('rejects with the typed error the synchronous open throws', async () => {
    const missing = `${sb.dir()}/absent`;
    await expectRejects(Athanor.open(missing, { create: false }), NotFoundError, 'ERR_NOT_FOUND');
    expectThrows(() => Athanor.openSync(missing, { create: false }), NotFoundError, 'ERR_NOT_FOUND');
  });
});
