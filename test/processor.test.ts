/** Processors (TypeScript handlers and declarative projections): batches, cursors, run(), error strategies, dead letters, rebuild. */
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  Athanor,
  HandlerError,
  InvalidArgumentError,
  MigrationsPendingError,
  SqlConstraintError,
  type ErrorStrategy,
  type Processor,
  type Sql,
  type StoredEvent,
} from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const box = new Sandbox();
afterEach(() => box.cleanup());

type Dep = { acct: string; amount: number };

async function seeded(events: Dep[], dir?: string): Promise<Athanor> {
  const db = await box.open(dir, { durability: 'none' });
  db.sql.exec(`
    CREATE TABLE IF NOT EXISTS moves(event_id INTEGER PRIMARY KEY, acct TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0));
    CREATE TABLE IF NOT EXISTS balances(acct TEXT PRIMARY KEY, total INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS calls(n INTEGER);
  `);
  await log(db, events);
  return db;
}

async function log(db: Athanor, events: Dep[]): Promise<void> {
  if (events.length === 0) return;
  await db.transaction().execute((tx) => {
    for (const e of events) tx.log('Dep', e);
    tx.log('Noise', { x: 1 });
  });
}

/** Applies a deposit: balance upsert first, then the move (whose CHECK can fail after the upsert ran). */
function applyDep(sql: Sql, e: StoredEvent<Dep>): void {
  sql.run('INSERT INTO balances(acct, total) VALUES (?, ?) ON CONFLICT(acct) DO UPDATE SET total = total + excluded.total', [e.payload.acct, e.payload.amount]);
  sql.run('INSERT INTO moves(event_id, acct, amount) VALUES (?, ?, ?)', [e.id, e.payload.acct, e.payload.amount]);
}

const DECL_ON = {
  Dep: [
    { sql: 'INSERT INTO balances(acct, total) VALUES (?, ?) ON CONFLICT(acct) DO UPDATE SET total = total + excluded.total', params: ['$.acct', '$.amount'] as const },
    { sql: 'INSERT INTO moves(event_id, acct, amount) VALUES (:id, :acct, :amount)', params: { id: '@id', acct: '$.acct', amount: '$.amount' } as const },
  ],
};

type Kind = 'ts' | 'decl';

function make(db: Athanor, kind: Kind, name: string, extra: { onError?: ErrorStrategy; batchSize?: number; reset?: (sql: Sql) => void } = {}): Processor {
  if (kind === 'ts') return db.processor(name, { handlers: [{ eventType: 'Dep', handle: applyDep }], ...extra });
  return db.projection({ name, on: DECL_ON, ...extra });
}

function state(db: Athanor): { balances: unknown[]; moves: unknown[] } {
  return {
    balances: db.sql.all('SELECT acct, total FROM balances ORDER BY acct'),
    moves: db.sql.all('SELECT event_id, acct, amount FROM moves ORDER BY event_id'),
  };
}

const quiet = { onLog: () => undefined };

/**
 * Runs `work` under fake timers (setTimeout and Date only: the native work and
 * setImmediate stay real), firing each timer as soon as one is pending; returns
 * the delays the timers asked for, in order. No real time passes in the waits.
 */
async function withFakeTimers<T>(work: () => Promise<T>): Promise<{ value: T; delays: number[] }> {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  try {
    let settled = false;
    const running = work().finally(() => (settled = true));
    const delays: number[] = [];
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve));
      if (vi.getTimerCount() > 0) {
        const before = Date.now();
        vi.advanceTimersToNextTimer();
        delays.push(Date.now() - before);
      }
    }
    return { value: await running, delays };
  } finally {
    vi.useRealTimers();
  }
}

describe('processors', () => {
  for (const kind of ['ts', 'decl'] as const) {
    describe(kind === 'ts' ? 'TypeScript handlers' : 'declarative', () => {
      it('applies batches and moves the cursor with them', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'b', amount: 7 },
          { acct: 'a', amount: 1 },
        ]);
        const p = make(db, kind, 'p', { batchSize: 2 });
        expect(p.cursor()).toBe(0n);
        expect(p.lag()).toBe(4n);
        expect(await p.processBatch()).toEqual({ processed: 2, skipped: 0, deadLettered: 0, cursor: 2n });
        expect(p.cursor()).toBe(2n);
        const progress: bigint[] = [];
        expect(await p.catchUp({ onProgress: (x) => progress.push(x.cursor) })).toEqual({ processed: 2, cursor: 4n });
        expect(progress).toEqual([4n]);
        expect(p.lag()).toBe(0n);
        expect(state(db).balances).toEqual([
          { acct: 'a', total: 6 },
          { acct: 'b', total: 7 },
        ]);
        expect(await p.processBatch()).toEqual({ processed: 0, skipped: 0, deadLettered: 0, cursor: 4n });
      });

      it('catchUp({ signal }): an abort ends a retry wait at once, with the failing event not applied', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'a', amount: -1 },
        ]);
        // An hour between attempts: the test only ends if the abort cuts the wait short.
        const p = make(db, kind, 'p', { onError: { retry: { maxAttempts: 1000, initialDelayMs: 3_600_000 } } });
        const ac = new AbortController();
        const done = p.catchUp({ signal: ac.signal });
        await vi.waitFor(() => expect(p.cursor()).toBe(1n));
        ac.abort();
        expect(await done).toEqual({ processed: 1, cursor: 1n });
        expect(state(db).moves).toEqual([{ event_id: 1, acct: 'a', amount: 5 }]);
      });

      it('failFast: commits the events before the failing one and stops just before it', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'a', amount: -1 },
          { acct: 'a', amount: 2 },
        ]);
        const p = make(db, kind, 'p');
        const e = await expectRejects(p.processBatch(), HandlerError, 'ERR_HANDLER');
        expect((e as HandlerError).eventId).toBe(2n);
        const cause = (e as HandlerError).cause as SqlConstraintError;
        expect(cause).toBeInstanceOf(SqlConstraintError);
        // The same detail from both kinds: SQLite's extended code and its own words.
        expect(cause.sqliteCode).toBe(275); // SQLITE_CONSTRAINT_CHECK
        expect((cause.cause as Error).message).toMatch(/CHECK constraint failed/);
        expect(p.cursor()).toBe(1n);
        // The failing event's first statement (the balance upsert) did not stay.
        expect(state(db).balances).toEqual([{ acct: 'a', total: 5 }]);
        await expectRejects(p.catchUp(), HandlerError, 'ERR_HANDLER');
        expect(p.cursor()).toBe(1n);
      });

      it('skip: logs and moves on', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'a', amount: -1 },
          { acct: 'a', amount: 2 },
        ]);
        const logged: bigint[] = [];
        const p =
          kind === 'ts'
            ? db.processor('p', { handlers: [{ eventType: 'Dep', handle: applyDep }], onError: 'skip', onLog: (_m, _e, ev) => logged.push(ev.id) })
            : db.projection({ name: 'p', on: DECL_ON, onError: 'skip', onLog: (_m, _e, ev) => logged.push(ev.id) });
        const r = await p.processBatch();
        expect(r).toEqual({ processed: 1, skipped: 1, deadLettered: 0, cursor: 2n });
        await p.catchUp();
        expect(logged).toEqual([2n]);
        expect(state(db).balances).toEqual([{ acct: 'a', total: 7 }]);
        expect(p.deadLetters.count()).toBe(0);
      });

      it('dead letters: list, inspect, retry through the current handler, remove', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'b', amount: -1 },
          { acct: 'c', amount: -2 },
          { acct: 'a', amount: 2 },
        ]);
        const p = make(db, kind, 'p', { onError: 'deadLetter' });
        await p.catchUp();
        expect(p.cursor()).toBe(5n);
        expect(state(db).balances).toEqual([{ acct: 'a', total: 7 }]);
        expect(p.deadLetters.count()).toBe(2);
        const [d1, d2] = p.deadLetters.list();
        expect(d1!.event.id).toBe(2n);
        expect(d1!.event.payload).toEqual({ acct: 'b', amount: -1 });
        expect(d1!.errorCode).toBe('ERR_SQL_CONSTRAINT');
        expect(d1!.error).toMatch(/CHECK/);
        expect(d1!.attempts).toBe(1);
        expect(d1!.firstFailedAt).toBeGreaterThan(0);
        expect(p.deadLetters.get(d2!.id)!.event.id).toBe(3n);
        // Retrying while the data is still bad fails again and counts the attempt.
        expect(await p.deadLetters.retry(d1!.id)).toBe(false);
        expect(p.deadLetters.get(d1!.id)!.attempts).toBe(2);
        expect(state(db).balances).toEqual([{ acct: 'a', total: 7 }]);
        // Relax the constraint: the retry applies the event and removes the dead letter, atomically.
        db.sql.exec('DROP TABLE moves; CREATE TABLE moves(event_id INTEGER PRIMARY KEY, acct TEXT NOT NULL, amount INTEGER NOT NULL)');
        expect(await p.deadLetters.retry(d1!.id)).toBe(true);
        expect(p.deadLetters.count()).toBe(1);
        expect(state(db).balances).toEqual([
          { acct: 'a', total: 7 },
          { acct: 'b', total: -1 },
        ]);
        expect(p.deadLetters.remove(d2!.id)).toBe(true);
        expect(p.deadLetters.remove(d2!.id)).toBe(false);
        expect(await p.deadLetters.retryAll()).toEqual({ retried: 0, failed: 0 });
        expect(p.cursor()).toBe(5n);
      });

      it('retry: exponential backoff, then dead-letter; earlier events are never applied twice', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'a', amount: 6 },
          { acct: 'b', amount: -1 },
        ]);
        const retries: string[] = [];
        const p =
          kind === 'ts'
            ? db.processor('p', { handlers: [{ eventType: 'Dep', handle: applyDep }], onError: { retry: { maxAttempts: 4, initialDelayMs: 10, maxDelayMs: 25 } }, onLog: (m) => retries.push(m) })
            : db.projection({ name: 'p', on: DECL_ON, onError: { retry: { maxAttempts: 4, initialDelayMs: 10, maxDelayMs: 25 } }, onLog: (m) => retries.push(m) });
        const { value: r, delays } = await withFakeTimers(() => p.processBatch());
        expect(r).toEqual({ processed: 2, skipped: 0, deadLettered: 1, cursor: 3n });
        // Three waits between four attempts, doubling from 10 ms and capped at 25 ms, then the dead letter.
        expect(delays).toEqual([10, 20, 25]);
        expect(retries.length).toBe(3);
        expect(state(db).balances).toEqual([{ acct: 'a', total: 11 }]);
        expect(db.sql.get('SELECT count(*) AS n FROM moves')).toEqual({ n: 2 });
        const [d] = p.deadLetters.list();
        expect(d!.attempts).toBe(4);
      });

      it('retry succeeds when the failure goes away, without re-applying the prefix', async () => {
        const db = await seeded([
          { acct: 'a', amount: 5 },
          { acct: 'b', amount: -1 },
          { acct: 'c', amount: 3 },
        ]);
        let attempts = 0;
        const strategy: ErrorStrategy = (_err, ev, attempt) => {
          attempts = attempt;
          expect(ev.id).toBe(2n);
          if (attempt === 2) db.sql.exec('DROP TABLE moves; CREATE TABLE moves(event_id INTEGER PRIMARY KEY, acct TEXT NOT NULL, amount INTEGER NOT NULL)');
          return 'retry';
        };
        const p = kind === 'ts' ? db.processor('p', { handlers: [{ eventType: 'Dep', handle: applyDep }], onError: strategy, ...quiet }) : db.projection({ name: 'p', on: DECL_ON, onError: strategy, ...quiet });
        // A custom strategy's 'retry' waits with the default backoff: 100 ms, doubling.
        const { delays } = await withFakeTimers(() => p.catchUp());
        expect(delays).toEqual([100, 200]);
        expect(attempts).toBe(2);
        expect(state(db).balances).toEqual([
          { acct: 'a', total: 5 },
          { acct: 'b', total: -1 },
          { acct: 'c', total: 3 },
        ]);
        expect(p.cursor()).toBe(4n);
      });

      it('custom strategy can stop, skip or dead-letter per event', async () => {
        const db = await seeded([
          { acct: 'a', amount: -1 },
          { acct: 'b', amount: -2 },
          { acct: 'c', amount: -3 },
        ]);
        const strategy: ErrorStrategy = (_e, ev) => (ev.id === 1n ? 'skip' : ev.id === 2n ? 'deadLetter' : 'stop');
        const p = kind === 'ts' ? db.processor('p', { handlers: [{ eventType: 'Dep', handle: applyDep }], onError: strategy, ...quiet }) : db.projection({ name: 'p', on: DECL_ON, onError: strategy, ...quiet });
        await expectRejects(p.catchUp(), HandlerError, 'ERR_HANDLER');
        expect(p.cursor()).toBe(2n);
        expect(p.deadLetters.list().map((d) => d.event.id)).toEqual([2n]);
      });

      it('run() wakes on commits, stops on stop() or an abort signal', async () => {
        const db = await seeded([]);
        const p = make(db, kind, 'p');
        const running = p.run();
        expect(p.running).toBe(true);
        await expectRejects(p.run(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
        await log(db, [{ acct: 'a', amount: 1 }]);
        expect(await p.waitFor()).toBe(2n);
        await log(db, [{ acct: 'a', amount: 2 }]);
        expect(await p.waitFor(4n)).toBe(4n);
        expect(state(db).balances).toEqual([{ acct: 'a', total: 3 }]);
        await p.stop();
        await running;
        expect(p.running).toBe(false);
        const ac = new AbortController();
        const again = p.run({ signal: ac.signal });
        await log(db, [{ acct: 'a', amount: 4 }]);
        await p.waitFor(6n);
        ac.abort();
        await again;
        expect(state(db).balances).toEqual([{ acct: 'a', total: 7 }]);
      });

      it('run() rejects when the strategy says stop', async () => {
        const db = await seeded([{ acct: 'a', amount: -1 }]);
        const p = make(db, kind, 'p');
        await expectRejects(p.run(), HandlerError, 'ERR_HANDLER');
        expect(p.running).toBe(false);
      });

      it('rebuild replays the whole log into the same result as the incremental run', async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.array(fc.record({ acct: fc.constantFrom('a', 'b', 'c'), amount: fc.integer({ min: -2, max: 20 }) }), { maxLength: 8 }), { minLength: 1, maxLength: 6 }),
            fc.integer({ min: 1, max: 7 }),
            async (commits, batchSize) => {
              const db = await seeded([]);
              const reset = (sql: Sql) => sql.exec('DELETE FROM moves; DELETE FROM balances;');
              const p = make(db, kind, 'p', { onError: 'deadLetter', batchSize, reset });
              // Incremental: process between commits.
              for (const c of commits) {
                await log(db, c);
                if (c.length % 2 === 0) await p.processBatch();
              }
              await p.catchUp();
              const incremental = state(db);
              const dead = p.deadLetters.list().map((d) => d.event.id);
              const seen: bigint[] = [];
              const r = await p.rebuild({ onProgress: (x) => seen.push(x.cursor) });
              expect(r.cursor).toBe(db.events.lastId);
              if (db.events.lastId > 0n) expect(seen.at(-1)).toBe(db.events.lastId);
              expect(state(db)).toEqual(incremental);
              expect(p.deadLetters.list().map((d) => d.event.id)).toEqual(dead);
              await p.close();
              await db.close();
            },
          ),
          { numRuns: 15 },
        );
      });
    });
  }

  it('runs several named processors on one db, each with its own cursor', async () => {
    const db = await seeded([
      { acct: 'a', amount: 1 },
      { acct: 'b', amount: 2 },
    ]);
    db.sql.exec('CREATE TABLE seen(proc TEXT, id INTEGER)');
    const mk = (name: string) =>
      db
        .processor(name)
        .on('*', (sql, e) => void sql.run('INSERT INTO seen VALUES (?, ?)', [name, e.id]))
        .batchSize(1)
        .build();
    const a = mk('a');
    const b = mk('b');
    await a.catchUp();
    await b.processBatch();
    expect(a.cursor()).toBe(3n);
    expect(b.cursor()).toBe(1n);
    expect(db.sql.all('SELECT proc, count(*) AS n FROM seen GROUP BY proc ORDER BY proc')).toEqual([
      { proc: 'a', n: 3 },
      { proc: 'b', n: 1 },
    ]);
  });

  it('a reopened processor resumes from its stored cursor', async () => {
    const dir = box.dir();
    let db = await seeded([{ acct: 'a', amount: 1 }], dir);
    await make(db, 'ts', 'p').catchUp();
    await db.close();
    db = await seeded([{ acct: 'a', amount: 2 }], dir);
    const p = make(db, 'ts', 'p');
    expect(p.cursor()).toBe(2n);
    await p.catchUp();
    expect(state(db).balances).toEqual([{ acct: 'a', total: 3 }]);
  });

  it('rejects bad registrations with clear errors, before anything is written', async () => {
    const db = await seeded([{ acct: 'a', amount: 1 }]);
    const h = { eventType: 'Dep', handle: applyDep };
    expectThrows(() => db.processor('p', { handlers: [] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [h, { eventType: ['X', 'Dep'], handle: applyDep }] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [{ eventType: 'Dep', handle: 'no' as unknown as typeof applyDep }] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [{ eventType: '', handle: applyDep }] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [{ ...h, extra: 1 } as typeof h] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [h], batchSize: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [h], onError: 'explode' as ErrorStrategy }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('p', { handlers: [h], onError: { retry: { maxAttempts: 0 } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.processor('', { handlers: [h] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection({ name: 'd', on: {} }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection({ name: 'd', on: { Dep: { sql: 'SELECT ?', params: ['amount' as '$'] } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    db.processor('p', { handlers: [h] });
    expectThrows(() => db.processor('p', { handlers: [h] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.projection({ name: 'p', on: DECL_ON }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.sql.get('SELECT count(*) AS n FROM _athanor_cursors')).toEqual({ n: 0 });
  });

  it('refuses async handlers and handlers that end the transaction; nothing is applied', async () => {
    const db = await seeded([{ acct: 'a', amount: 1 }]);
    const p = db.processor('p').on('Dep', (async () => undefined) as unknown as typeof applyDep).build();
    await expectRejects(p.processBatch(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(p.cursor()).toBe(0n);
    const q = db.processor('q').on('Dep', (sql) => sql.exec('COMMIT')).build();
    await expectRejects(q.processBatch(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(q.cursor()).toBe(0n);
    expect(db.sql.inTransaction).toBe(false);
  });

  it('validate() failures go through the error strategy', async () => {
    const db = await seeded([
      { acct: 'a', amount: 1 },
      { acct: '', amount: 2 },
    ]);
    const p = db
      .processor('p')
      .handler<Dep>({ eventType: 'Dep', handle: applyDep, validate: (x) => typeof x === 'object' && x !== null && (x as Dep).acct !== '' })
      .onError('deadLetter')
      .build();
    await p.catchUp();
    const [d] = p.deadLetters.list();
    expect(d!.event.id).toBe(2n);
    expect(d!.errorCode).toBe('ERR_HANDLER');
    expect(state(db).balances).toEqual([{ acct: 'a', total: 1 }]);
  });

  it('refuses to start with pending migrations unless told otherwise', async () => {
    const db = await seeded([{ acct: 'a', amount: 1 }]);
    db.migrations.add({ version: 1, name: 'extra', up: 'CREATE TABLE extra(a)', down: 'DROP TABLE extra' });
    const p = make(db, 'ts', 'p');
    await expectRejects(p.processBatch(), MigrationsPendingError, 'ERR_MIGRATIONS_PENDING');
    await expectRejects(p.run(), MigrationsPendingError, 'ERR_MIGRATIONS_PENDING');
    const q = db.processor('q', { handlers: [{ eventType: '*', handle: () => undefined }], allowPendingMigrations: true });
    await q.catchUp();
    db.migrations.run();
    await p.catchUp();
    expect(p.cursor()).toBe(2n);
  });
});
