/**
 * Entity streams: `tx.append` with an expected version the writer checks at commit,
 * `db.streams.read/version/list`, on real stores; one winner per version under
 * concurrency, in one process and in two.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type Athanor, InvalidArgumentError, WrongExpectedVersionError, i64 } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

const ev = (type: string, payload: unknown = {}) => ({ type, payload });

describe('entity streams', () => {
  it('appends get the next versions and keep their global ids; read forward, reverse, from a version, with a limit', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.log('before', {}));
    const r = await db.transaction().execute((tx) => {
      tx.append('order-1', [ev('placed', { n: 1 }), ev('paid', { n: 2 })], { expectedVersion: 'none' });
      tx.append('order-2', ev('placed', { n: 3 }));
      tx.append('order-1', ev('shipped', { n: 4 }), { expectedVersion: 2 });
    });
    expect(r.eventCount).toBe(4);
    expect(db.streams.version('order-1')).toBe(3);
    expect(db.streams.version('order-2')).toBe(1);
    expect(db.streams.version('nothing-here')).toBe(0);
    const all = [...db.streams.read('order-1')];
    expect(all.map((e) => [e.streamVersion, e.type, e.id])).toEqual([
      [1, 'placed', 2n],
      [2, 'paid', 3n],
      [3, 'shipped', 5n],
    ]);
    expect(all.every((e) => e.streamId === 'order-1')).toBe(true);
    expect(db.events.get(4n)!.type).toBe('placed');
    expect([...db.streams.read('order-1', { reverse: true })].map((e) => e.streamVersion)).toEqual([3, 2, 1]);
    expect([...db.streams.read('order-1', { fromVersion: 2 })].map((e) => e.type)).toEqual(['paid', 'shipped']);
    expect([...db.streams.read('order-1', { fromVersion: 2, reverse: true, limit: 5 })].map((e) => e.type)).toEqual(['paid', 'placed']);
    expect([...db.streams.read('order-1', { limit: 1 })].map((e) => e.type)).toEqual(['placed']);
    expect([...db.streams.read('order-1', { fromVersion: 9 })]).toEqual([]);
    expect([...db.streams.read('nothing-here')]).toEqual([]);
    expect(db.streams.list()).toEqual([
      { streamId: 'order-1', version: 3 },
      { streamId: 'order-2', version: 1 },
    ]);
    expect(db.streams.list({ prefix: 'order-', after: 'order-1' })).toEqual([{ streamId: 'order-2', version: 1 }]);
    expect(db.streams.list({ limit: 1 })).toEqual([{ streamId: 'order-1', version: 3 }]);
  });

  it('reads a stream longer than a page, both ways', async () => {
    const db = await sandbox.open();
    const n = 2500;
    await db.transaction().execute((tx) => tx.append('long', Array.from({ length: n }, (_, i) => ev('e', { i }))));
    const fwd = [...db.streams.read<{ i: number }>('long')];
    expect(fwd.length).toBe(n);
    expect(fwd.every((e, i) => e.streamVersion === i + 1 && e.payload.i === i)).toBe(true);
    const rev = [...db.streams.read('long', { reverse: true })];
    expect(rev.map((e) => e.streamVersion)).toEqual(Array.from({ length: n }, (_, i) => n - i));
  });

  it('a wrong expected version fails the transaction before anything is written, with the versions as data', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.append('s', [ev('a'), ev('b')]));
    const before = db.events.lastId;
    for (const expectedVersion of [1, 'none', 0] as const) {
      const e = (await expectRejects(
        db.transaction().execute((tx) => {
          tx.set('touched', i64(1n));
          tx.log('other', {});
          tx.append('s', ev('c'), { expectedVersion });
        }),
        WrongExpectedVersionError,
        'ERR_WRONG_EXPECTED_VERSION',
      )) as WrongExpectedVersionError;
      expect(e.streamId).toBe('s');
      expect(e.expectedVersion).toBe(expectedVersion);
      expect(e.actualVersion).toBe(2);
    }
    expect(db.events.lastId).toBe(before);
    expect(db.exists('touched')).toBe(false);
    expect(db.streams.version('s')).toBe(2);
    await db.transaction().execute((tx) => tx.append('s', ev('c'), { expectedVersion: 2 }));
    expect(db.streams.version('s')).toBe(3);
  });

  it('a retried append with an idempotency key is a duplicate, not a wrong version', async () => {
    const db = await sandbox.open();
    const append = () => db.transaction().execute((tx) => tx.append('s', ev('a'), { expectedVersion: 0 }), { idempotencyKey: 'once' });
    expect((await append()).outcome).toBe('applied');
    expect((await append()).outcome).toBe('duplicate');
    expect(db.streams.version('s')).toBe(1);
    // Without the key, the same append with the same expectation is refused.
    const e = (await expectRejects(
      db.transaction().execute((tx) => tx.append('s', ev('a'), { expectedVersion: 0 })),
      WrongExpectedVersionError,
      'ERR_WRONG_EXPECTED_VERSION',
    )) as WrongExpectedVersionError;
    expect(e.actualVersion).toBe(1);
  });

  it('refuses bad stream ids and options with ERR_INVALID_ARGUMENT', async () => {
    const db = await sandbox.open();
    for (const id of ['', 'a\0b', 'x'.repeat(257), '\ud800']) {
      await expectRejects(db.transaction().execute((tx) => tx.append(id, ev('a'))), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.streams.version(id), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    for (const expectedVersion of [-1, 1.5, 'latest'] as never[]) {
      await expectRejects(db.transaction().execute((tx) => tx.append('s', ev('a'), { expectedVersion })), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    await expectRejects(db.transaction().execute((tx) => tx.append('s', [])), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.events.lastId).toBe(0n);
    expect(db.streams.list()).toEqual([]);
    expect(() => db.streams.read('s', { fromVersion: -1 })).toThrow(InvalidArgumentError);
  });

  it('a snapshot reads the streams as they were', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.append('s', ev('a')));
    const snap = db.snapshot();
    await db.transaction().execute((tx) => tx.append('s', ev('b')));
    expect(snap.streams.version('s')).toBe(1);
    expect([...snap.streams.read('s')].map((e) => e.type)).toEqual(['a']);
    expect(snap.streams.list()).toEqual([{ streamId: 's', version: 1 }]);
    snap.close();
    expect(db.streams.version('s')).toBe(2);
  });

  it('64 appends in flight, each expecting the version it read: exactly one winner per version', async () => {
    const db = await sandbox.open();
    const callers = 64;
    // Round 1: all read version 0 before any of them commits, and expect it. (Read
    // inside each callback, a callback run after the first commit would see 1 and win too.)
    const seen0 = db.streams.version('hot');
    const first = await Promise.allSettled(
      Array.from({ length: callers }, (_, i) => db.transaction().execute((tx) => tx.append('hot', ev('e', { i }), { expectedVersion: seen0 }))),
    );
    expect(first.filter((r) => r.status === 'fulfilled').length).toBe(1);
    for (const r of first) {
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(WrongExpectedVersionError);
    }
    // Then each loser re-reads and tries again until it wins: every caller lands once.
    const losers = first.flatMap((r, i) => (r.status === 'rejected' ? [i] : []));
    let wrong = 0;
    await Promise.all(
      losers.map(async (i) => {
        for (;;) {
          const seen = db.streams.version('hot');
          try {
            await db.transaction().execute((tx) => tx.append('hot', ev('e', { i, seen }), { expectedVersion: seen }));
            return;
          } catch (e) {
            expect(e).toBeInstanceOf(WrongExpectedVersionError);
            wrong++;
          }
        }
      }),
    );
    const events = [...db.streams.read<{ i: number; seen?: number }>('hot')];
    expect(events.map((e) => e.streamVersion)).toEqual(Array.from({ length: callers }, (_, k) => k + 1));
    expect(new Set(events.map((e) => e.payload.i)).size).toBe(callers);
    expect(db.events.lastId).toBe(BigInt(callers));
    // Every retried append landed right after the version its caller read: no check skipped.
    expect(events.slice(1).filter((e) => e.payload.seen !== e.streamVersion - 1)).toEqual([]);
    // All losers read version 1 before any of them committed, so all but one lost again.
    expect(wrong).toBeGreaterThanOrEqual(losers.length - 1);
  });

  it('two processes appending with expected versions: one winner per version, no event lost or doubled', async () => {
    const dir = sandbox.dir();
    const per = 40;
    const child = spawn(process.execPath, [path.join(FIXTURES, 'stream-append-child.mjs'), dir, String(per), 'child', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}: ${err}`)))));
    const db = await sandbox.open(dir);
    await allReady(db, 2);
    for (let i = 0; i < per; i++) {
      for (;;) {
        const v = db.streams.version('shared');
        try {
          await db.transaction().execute((tx) => tx.append('shared', ev('appended', { by: 'parent', i, seen: v }), { expectedVersion: v }));
          break;
        } catch (e) {
          if (!(e instanceof WrongExpectedVersionError)) throw e;
        }
      }
    }
    await exited;
    const events = [...db.streams.read<{ by: string; i: number; seen: number }>('shared')];
    expect(events.map((e) => e.streamVersion)).toEqual(Array.from({ length: 2 * per }, (_, k) => k + 1));
    // Each append landed right after the version its caller saw: no caller's check was skipped.
    expect(events.filter((e) => e.payload.seen !== e.streamVersion - 1)).toEqual([]);
    const seen = new Set(events.map((e) => `${e.payload.by}:${e.payload.i}`));
    expect(seen.size).toBe(2 * per);
    // Global ids ascend with versions: the index follows commit order.
    expect(events.every((e, k) => k === 0 || e.id > events[k - 1]!.id)).toBe(true);
  });

  it('matches a model of streams and versions under random appends (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            stream: fc.constantFrom('a', 'b', 'c/d', 'é'),
            n: fc.integer({ min: 1, max: 3 }),
            expect: fc.oneof(fc.constant<'any'>('any'), fc.constant<'none'>('none'), fc.constant<'right'>('right'), fc.integer({ min: 0, max: 6 })),
          }),
          { minLength: 1, maxLength: 25 },
        ),
        async (ops) => {
          const db = await sandbox.open();
          const model = new Map<string, string[]>();
          let k = 0;
          for (const op of ops) {
            const current = model.get(op.stream)?.length ?? 0;
            const expectedVersion = op.expect === 'right' ? current : op.expect;
            const ok = expectedVersion === 'any' || (expectedVersion === 'none' ? current === 0 : expectedVersion === current);
            const payloads = Array.from({ length: op.n }, () => `p${k++}`);
            const p = db.transaction().execute((tx) => tx.append(op.stream, payloads.map((x) => ev('t', x)), { expectedVersion }));
            if (ok) {
              await p;
              model.set(op.stream, [...(model.get(op.stream) ?? []), ...payloads]);
            } else {
              const e = (await expectRejects(p, WrongExpectedVersionError, 'ERR_WRONG_EXPECTED_VERSION')) as WrongExpectedVersionError;
              expect(e.actualVersion).toBe(current);
            }
          }
          for (const [s, payloads] of model) {
            expect(db.streams.version(s)).toBe(payloads.length);
            expect([...db.streams.read(s)].map((e) => e.payload)).toEqual(payloads);
          }
          expect(db.streams.list().map((x) => x.streamId)).toEqual([...model.keys()].sort());
          await sandbox.cleanup();
        },
      ),
      { numRuns: 25 },
    );
  });
});

/** Logs `ready` and resolves once `writers` ready events are in the log. */
async function allReady(db: Athanor, writers: number): Promise<void> {
  await db.transaction().execute((tx) => tx.log('ready', { by: 'parent' }));
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
