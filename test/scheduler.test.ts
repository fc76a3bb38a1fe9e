// The durable scheduler: schedules computed by croner, missed-run policies, retries with
// backoff, no overlap, leases with fencing across handles and processes, kill -9 mid-run.
// Timing logic runs on a manual clock (no sleeps); one test uses real time.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, ConflictError, InvalidArgumentError, NotFoundError, i64, type Clock, type RunInfo, type Tx } from '../dist/index.js';
import { Sandbox, expectRejects, killAfterReady } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

/** Time that moves only when told to; timers fire as it passes them. */
class ManualClock implements Clock {
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.#timers.delete(h as number);
  }
  /** Moves time forward, firing the timers it passes in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = end;
  }
}

const T0 = Date.UTC(2026, 0, 5, 12, 0, 0); // a Monday, noon UTC

/** A run that counts in state and logs one event per occurrence. */
function counting(tx: Tx, run: RunInfo): void {
  tx.update(`count:${run.task}`, (v) => i64((v?.asI64() ?? 0n) + 1n));
  tx.log('ran', { task: run.task, at: run.scheduledAt, attempt: run.attempt });
}

function ranEvents(db: Athanor, task: string): { at: number; attempt: number }[] {
  return [...db.events.read<{ task: string; at: number; attempt: number }>({ type: 'ran' })].filter((e) => e.payload.task === task).map((e) => e.payload);
}

/** Resolves after the next commit of the database (the notice arrives once it is durable). */
function nextCommit(db: Athanor): Promise<void> {
  return new Promise((r) => {
    const off = db.events.subscribe(() => {
      off();
      r();
    });
  });
}

async function openWithClock(clock: Clock, dir?: string, owner?: string): Promise<Athanor> {
  const db = await sandbox.open(dir);
  db.scheduler.configure({ clock, ...(owner ? { owner } : {}) });
  return db;
}

describe('scheduler: schedules', () => {
  it('computes cron occurrences in the given time zone (croner) and runs each once', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    const info = await db.scheduler.register('paris-nine', { cron: '0 9 * * *', timezone: 'Europe/Paris', run: counting });
    expect(new Date(info.nextRunAt!).toISOString()).toBe('2026-01-06T08:00:00.000Z'); // 09:00 CET
    expect(await db.scheduler.tick()).toEqual([]);
    clock.t = info.nextRunAt!;
    const [line] = await db.scheduler.tick();
    expect(line).toMatchObject({ outcome: 'ok', scheduledAt: info.nextRunAt, attempt: 1 });
    expect(await db.scheduler.tick()).toEqual([]); // not due again
    expect(db.get('count:paris-nine').asI64()).toBe(1n);
    expect(new Date(db.scheduler.get('paris-nine')!.nextRunAt!).toISOString()).toBe('2026-01-07T08:00:00.000Z');
  });

  it('accepts 6-field cron (seconds first) and refuses other shapes with ERR_INVALID_ARGUMENT', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    const info = await db.scheduler.register('every-10s', { cron: '*/10 * * * * *', run: counting });
    expect(info.nextRunAt).toBe(T0 + 10_000);
    for (const bad of ['* * * *', '0 0 * * * * 2030', 'sixty * * * *']) {
      await expectRejects(db.scheduler.register('bad', { cron: bad, run: counting }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    await expectRejects(db.scheduler.register('bad', { cron: '0 9 * * *', timezone: 'Mars/Olympus', run: counting }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.scheduler.register('bad', { every: 1000, at: T0, run: counting }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.scheduler.register('', { every: 1000, run: counting }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.scheduler.list().map((t) => t.name)).toEqual(['every-10s']); // nothing written by the refusals
  });

  it('runs an interval task on its grid and a one-shot task once', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    await db.scheduler.register('beat', { every: 1000, run: counting });
    await db.scheduler.register('once', { at: T0 + 1500, run: counting });
    clock.t = T0 + 1000;
    expect((await db.scheduler.tick()).map((l) => l.scheduledAt)).toEqual([T0 + 1000]);
    clock.t = T0 + 2100;
    const lines = await db.scheduler.tick();
    expect(lines.map((l) => l.scheduledAt).sort()).toEqual([T0 + 1500, T0 + 2000]);
    clock.t = T0 + 10_000 + 100;
    await db.scheduler.tick();
    expect(db.scheduler.get('once')!.nextRunAt).toBeNull();
    expect(ranEvents(db, 'once')).toHaveLength(1);
  });
});

describe('scheduler: missed runs after downtime', () => {
  async function downtime(missed: 'skip' | 'runOnce' | 'runAll') {
    const clock = new ManualClock(T0);
    const dir = sandbox.dir();
    let db = await openWithClock(clock, dir);
    await db.scheduler.register('job', { every: 1000, missed, maxCatchUp: 4, run: counting });
    await db.close();
    clock.t = T0 + 10_500; // occurrences T0+1000 .. T0+10000 (10 of them) fell due while closed
    db = await openWithClock(clock, dir);
    await db.scheduler.register('job', { every: 1000, missed, maxCatchUp: 4, run: counting });
    const lines = await db.scheduler.runDue();
    return { db, lines };
  }

  it('skip: runs none of them and records how many were skipped', async () => {
    const { db, lines } = await downtime('skip');
    expect(ranEvents(db, 'job')).toEqual([]);
    expect(lines).toMatchObject([{ outcome: 'skipped', count: 10 }]);
    expect(db.scheduler.get('job')!.nextRunAt).toBe(T0 + 11_000);
  });

  it('runOnce: runs the newest missed occurrence once', async () => {
    const { db, lines } = await downtime('runOnce');
    expect(ranEvents(db, 'job').map((e) => e.at)).toEqual([T0 + 10_000]);
    expect(lines.map((l) => l.outcome)).toEqual(['skipped', 'ok']);
    expect(lines[0]!.count).toBe(9);
    expect(db.scheduler.get('job')!.nextRunAt).toBe(T0 + 11_000);
  });

  it('runAll: runs the newest maxCatchUp missed occurrences in order', async () => {
    const { db } = await downtime('runAll');
    expect(ranEvents(db, 'job').map((e) => e.at)).toEqual([T0 + 7000, T0 + 8000, T0 + 9000, T0 + 10_000]);
    expect(db.scheduler.history('job').find((l) => l.outcome === 'skipped')?.count).toBe(6);
    expect(db.scheduler.get('job')!.nextRunAt).toBe(T0 + 11_000);
  });
});

describe('scheduler: failures, retries, overlap', () => {
  it('retries a failing run with doubling delays; nothing of a failed attempt is written', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    let calls = 0;
    await db.scheduler.register('flaky', {
      every: 60_000,
      retry: { maxAttempts: 4, initialDelayMs: 100, maxDelayMs: 150 },
      run: (tx, run) => {
        calls++;
        tx.set('touched', i64(BigInt(calls)));
        if (run.attempt < 3) throw new Error(`boom ${run.attempt}`);
        counting(tx, run);
      },
    });
    clock.t = T0 + 60_000;
    expect((await db.scheduler.tick()).map((l) => l.outcome)).toEqual(['retrying']);
    expect(db.getOpt('touched')).toBeUndefined(); // the failed attempt's write was not committed
    expect(db.scheduler.get('flaky')!.retryAt).toBe(T0 + 60_100);
    clock.t = T0 + 60_099;
    expect(await db.scheduler.tick()).toEqual([]);
    clock.t = T0 + 60_100;
    expect((await db.scheduler.tick()).map((l) => [l.outcome, l.attempt])).toEqual([['retrying', 2]]);
    expect(db.scheduler.get('flaky')!.retryAt).toBe(T0 + 60_100 + 150); // 200 capped at 150
    clock.t = T0 + 60_250;
    expect((await db.scheduler.tick()).map((l) => [l.outcome, l.attempt])).toEqual([['ok', 3]]);
    expect(ranEvents(db, 'flaky')).toEqual([{ task: 'flaky', at: T0 + 60_000, attempt: 3 }]);
    expect(db.scheduler.history('flaky').map((l) => l.error ?? null)).toEqual([null, 'Error: boom 2', 'Error: boom 1']);
  });

  it('gives up after maxAttempts and moves to the next occurrence', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    await db.scheduler.register('broken', {
      every: 60_000,
      retry: { maxAttempts: 2, initialDelayMs: 0 },
      run: () => {
        throw 'a string, not an Error';
      },
    });
    clock.t = T0 + 60_000;
    const lines = await db.scheduler.runDue();
    expect(lines.map((l) => l.outcome)).toEqual(['retrying', 'failed']);
    expect(lines[1]!.error).toBe('a string, not an Error');
    expect(db.scheduler.get('broken')!.nextRunAt).toBe(T0 + 120_000);
  });

  it('never overlaps runs of one task', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    await db.scheduler.register('slow', {
      every: 1000,
      prepare: async () => {
        started++;
        await gate;
      },
      run: counting,
    });
    clock.t = T0 + 1000;
    const first = db.scheduler.tick();
    await new Promise((r) => setImmediate(r));
    clock.t = T0 + 5000;
    // A second tick while the first run is in progress starts nothing (ticks share one pass).
    const second = db.scheduler.tick();
    release();
    await Promise.all([first, second]);
    expect(started).toBe(1);
    expect(ranEvents(db, 'slow')).toHaveLength(1);
  });
});

describe('scheduler: leases and fencing', () => {
  it('two handles racing for one occurrence: exactly one runs it', async () => {
    const clock = new ManualClock(T0);
    const dir = sandbox.dir();
    const a = await openWithClock(clock, dir, 'A');
    const b = await openWithClock(clock, dir, 'B');
    for (const db of [a, b]) await db.scheduler.register('shared', { every: 1000, run: counting });
    for (let i = 1; i <= 20; i++) {
      clock.t = T0 + i * 1000;
      await Promise.all([a.scheduler.tick(), b.scheduler.tick()]);
    }
    const ran = ranEvents(a, 'shared').map((e) => e.at);
    expect(ran).toEqual(Array.from({ length: 20 }, (_, i) => T0 + (i + 1) * 1000));
    const owners = new Set(a.scheduler.history('shared', { limit: 100 }).map((l) => l.owner));
    expect(owners.size).toBeGreaterThanOrEqual(1);
  });

  it('takes over an expired lease; the old runner commits nothing (fencing token)', async () => {
    const clock = new ManualClock(T0);
    const dir = sandbox.dir();
    const a = await openWithClock(clock, dir, 'A');
    const b = await openWithClock(clock, dir, 'B');
    let releaseA!: () => void;
    const gateA = new Promise<void>((r) => (releaseA = r));
    await a.scheduler.register('leased', { every: 60_000, leaseMs: 1000, prepare: () => gateA, run: counting });
    await b.scheduler.register('leased', { every: 60_000, leaseMs: 1000, run: counting });
    clock.t = T0 + 60_000;
    const claimed = nextCommit(a);
    const aRun = a.scheduler.tick(); // A claims and hangs in prepare
    await claimed;
    expect(a.scheduler.get('leased')!.lease).toMatchObject({ owner: 'A', fencingToken: 1 });
    expect(await b.scheduler.tick()).toEqual([]); // the lease holds
    clock.t = T0 + 61_001; // without renewal (the manual clock fired no timer), it expired
    const [bLine] = await b.scheduler.tick();
    expect(bLine).toMatchObject({ outcome: 'ok', owner: 'B', attempt: 2, fencingToken: 2, scheduledAt: T0 + 60_000 });
    releaseA();
    expect(await aRun).toEqual([]); // A's commit was refused by the token check
    expect(ranEvents(a, 'leased')).toEqual([{ task: 'leased', at: T0 + 60_000, attempt: 2 }]);
  });

  it('renews the lease while prepare runs', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let preparing!: () => void;
    const inPrepare = new Promise<void>((r) => (preparing = r));
    await db.scheduler.register('long', {
      every: 60_000,
      leaseMs: 900,
      prepare: () => {
        preparing();
        return gate;
      },
      run: counting,
    });
    clock.t = T0 + 60_000;
    const run = db.scheduler.tick();
    await inPrepare;
    const first = db.scheduler.get('long')!.lease!.expiresAt;
    const renewal = nextCommit(db);
    clock.advance(300); // fires the renewal timer, whose transaction commits
    await renewal;
    const renewed = db.scheduler.get('long')!.lease!.expiresAt;
    expect(renewed).toBeGreaterThan(first);
    release();
    await run;
    expect(ranEvents(db, 'long')).toHaveLength(1);
  });
});

describe('scheduler: management', () => {
  it('pause, resume, remove, list, history', async () => {
    const clock = new ManualClock(T0);
    const db = await openWithClock(clock);
    await db.scheduler.register('a', { every: 1000, run: counting });
    await db.scheduler.register('b', { every: 1000, run: counting });
    await db.scheduler.pause('a');
    clock.t = T0 + 1000;
    await db.scheduler.tick();
    expect(ranEvents(db, 'a')).toEqual([]);
    expect(ranEvents(db, 'b')).toHaveLength(1);
    await db.scheduler.resume('a');
    await db.scheduler.tick();
    expect(ranEvents(db, 'a')).toHaveLength(1);
    expect(db.scheduler.list().map((t) => [t.name, t.paused, t.registered])).toEqual([
      ['a', false, true],
      ['b', false, true],
    ]);
    expect(db.scheduler.history('b', { limit: 1 })).toHaveLength(1);
    await db.scheduler.remove('b');
    expect(db.scheduler.list().map((t) => t.name)).toEqual(['a']);
    await expectRejects(db.scheduler.remove('b'), NotFoundError, 'ERR_NOT_FOUND');
    await expectRejects(db.scheduler.pause('nope'), NotFoundError, 'ERR_NOT_FOUND');
    expect(() => db.scheduler.history('a', { limit: 0 })).toThrow(InvalidArgumentError);
  });

  it('the stored schedule survives a restart; an unchanged registration keeps the next run', async () => {
    const clock = new ManualClock(T0);
    const dir = sandbox.dir();
    let db = await openWithClock(clock, dir);
    await db.scheduler.register('kept', { every: 1000, run: counting });
    await db.close();
    clock.t = T0 + 500;
    db = await openWithClock(clock, dir);
    expect(db.scheduler.list()).toMatchObject([{ name: 'kept', nextRunAt: T0 + 1000, registered: false }]);
    const info = await db.scheduler.register('kept', { every: 1000, run: counting });
    expect(info.nextRunAt).toBe(T0 + 1000);
  });
});

describe('scheduler: real time and crashes', () => {
  it('start() runs tasks as their time comes (real clock)', async () => {
    const db = await sandbox.open();
    let done!: () => void;
    const three = new Promise<void>((r) => (done = r));
    let n = 0;
    await db.scheduler.register('tick', {
      every: 40,
      run: (tx, run) => {
        counting(tx, run);
        if (++n === 3) setImmediate(done);
      },
    });
    db.scheduler.start();
    await three;
    await db.scheduler.stop();
    const ran = ranEvents(db, 'tick').map((e) => e.at);
    expect(ran.length).toBeGreaterThanOrEqual(3);
    expect(new Set(ran).size).toBe(ran.length);
  });

  it('a child killed mid-run: the occurrence runs exactly once in the end', async () => {
    const dir = sandbox.dir();
    const child = path.join(here, 'fixtures', 'scheduler-child.mjs');
    const trials = Number(process.env.ATHANOR_SCHEDULER_CRASH_TRIALS ?? 4);
    for (let trial = 0; trial < trials; trial++) {
      const r = await killAfterReady(child, [dir], Math.floor(Math.random() * 150));
      expect(r.ready, r.stderr).toBe(true);
      expect(r.signal).toBe('SIGKILL');
      // Reopen far enough in the future that any lease of the dead child has expired.
      const clock = new ManualClock(Date.now() + 10_000);
      const db = await Athanor.open(dir);
      db.scheduler.configure({ clock, owner: `checker-${trial}`, historyLimit: 1_000_000 });
      await db.scheduler.register('job', { every: 25, leaseMs: 2000, missed: 'runAll', maxCatchUp: 1_000_000, run: counting });
      // Invariant after the kill: each occurrence's effects at most once, and exactly the ok runs.
      const ran = ranEvents(db, 'job').map((e) => e.at);
      expect(new Set(ran).size).toBe(ran.length);
      const oks = db.scheduler.history('job', { limit: 1_000_000 }).filter((l) => l.outcome === 'ok');
      expect(BigInt(ran.length)).toBe(db.getOpt('count:job')?.asI64() ?? 0n);
      expect(oks.map((l) => l.scheduledAt).sort()).toEqual([...ran].sort()); // a run is recorded exactly when its effects are
      // A clean catch-up runs what the child left (the occurrence it held included), once each.
      await db.scheduler.runDue(10);
      const after = ranEvents(db, 'job').map((e) => e.at);
      expect(new Set(after).size).toBe(after.length);
      expect(after.length).toBeGreaterThan(ran.length);
      await db.close();
    }
  });

});
