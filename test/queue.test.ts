/**
 * The durable work queue: lease order (priority, due time, enqueue order), delays,
 * dedupe keys, fencing tokens that refuse a stale worker, retries with backoff, dead
 * letters, workers in several processes, and workers killed -9 mid-work.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, InvalidArgumentError, NotFoundError, StaleLeaseError, i64, str, type Job } from '../dist/index.js';
import { runEsChild } from './es-helpers.js';
import { Sandbox, expectRejects } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

function manualClock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('queue', () => {
  it('leases by priority, then due time, then enqueue order; delayed jobs when due', async () => {
    const db = await sb.open();
    const clock = manualClock();
    const q = db.queue<string>('q', { clock });
    await q.enqueue('a');
    clock.t += 1;
    await q.enqueue('b');
    await q.enqueue('urgent', { priority: 10 });
    await q.enqueue('later', { delayMs: 5000, priority: 100 });
    await q.enqueue('low', { priority: -1 });
    expect(q.counts()).toEqual({ ready: 4, delayed: 1, leased: 0, dead: 0 });
    expect((await q.lease({ count: 10 })).map((j) => j.payload)).toEqual(['urgent', 'a', 'b', 'low']);
    expect(await q.lease()).toEqual([]);
    clock.t += 5000;
    const [later] = await q.lease();
    expect(later!.payload).toBe('later');
  });

  it('gives each lease a larger fencing token and refuses a stale ack, extend or guarded write', async () => {
    const db = await sb.open();
    const clock = manualClock();
    const q = db.queue<{ n: number }>('q', { clock });
    await q.enqueue({ n: 1 });
    const [first] = await q.lease({ visibilityMs: 1000 });
    expect(first!.attempt).toBe(1);
    clock.t += 1000; // the lease expires; another worker takes the job over
    const [second] = await q.lease({ visibilityMs: 1000 });
    expect(second!.id).toBe(first!.id);
    expect(second!.token).toBeGreaterThan(first!.token);
    expect(second!.attempt).toBe(2);
    await expectRejects(q.ack(first!), StaleLeaseError, 'ERR_STALE_LEASE');
    await expectRejects(q.extend(first!, 5000), StaleLeaseError, 'ERR_STALE_LEASE');
    await expectRejects(
      db.transaction().execute((tx) => {
        q.in(tx).requireLease(first!);
        tx.set('result/1', str('from the stale worker'));
      }),
      StaleLeaseError,
      'ERR_STALE_LEASE',
    );
    expect(db.getOpt('result/1')).toBeUndefined();
    const extended = await q.extend(second!, 10_000);
    expect(extended.leasedUntil).toBe(clock.t + 10_000);
    clock.t += 5000;
    expect(await q.lease()).toEqual([]); // extended: not expired
    await db.transaction().execute((tx) => {
      tx.set('result/1', str('done'));
      q.in(tx).ack(second!);
    });
    expect(db.get('result/1').asString()).toBe('done');
    expect(q.counts()).toEqual({ ready: 0, delayed: 0, leased: 0, dead: 0 });
    await expectRejects(q.ack(second!), StaleLeaseError, 'ERR_STALE_LEASE');
  });

  it('an ack racing a takeover: whichever commits second sees the other', async () => {
    const db = await sb.open();
    const clock = manualClock();
    const q = db.queue('q', { clock });
    await q.enqueue(1);
    const [job] = await q.lease({ visibilityMs: 10 });
    clock.t += 10;
    const [ackResult, taken] = await Promise.allSettled([q.ack(job!), db.queue('q', { clock }).lease({ visibilityMs: 10 })]);
    const tookOver = taken.status === 'fulfilled' && taken.value.length === 1;
    expect(ackResult.status === 'fulfilled').toBe(!tookOver);
  });

  it('retries with backoff, then dead-letters; dead letters can be retried or removed', async () => {
    const db = await sb.open();
    const clock = manualClock();
    const q = db.queue<string>('q', { clock, maxAttempts: 3, backoffMs: 100, maxBackoffMs: 150 });
    await q.enqueue('flaky');
    let [job] = await q.lease();
    expect(await q.nack(job!, { error: 'boom 1' })).toBe('retry');
    expect(await q.lease()).toEqual([]);
    clock.t += 99;
    expect(await q.lease()).toEqual([]);
    clock.t += 1; // first backoff: 100 ms
    [job] = await q.lease();
    expect(job!.attempt).toBe(2);
    expect(await q.nack(job!)).toBe('retry');
    clock.t += 149;
    expect(await q.lease()).toEqual([]);
    clock.t += 1; // second backoff: 200 ms, capped at 150
    [job] = await q.lease({ visibilityMs: 50 });
    clock.t += 50; // the third attempt's lease expires: that attempt failed too, and the last one
    expect(await q.lease()).toEqual([]);
    const dead = q.deadLetters();
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ id: job!.id, payload: 'flaky', attempts: 3 });
    expect(dead[0]!.lastError).toContain('expired');
    expect(q.counts()).toEqual({ ready: 0, delayed: 0, leased: 0, dead: 1 });
    await q.retryDead(job!.id);
    [job] = await q.lease();
    expect(job).toMatchObject({ payload: 'flaky', attempt: 1 });
    expect(await q.nack(job!, { delayMs: 0 })).toBe('retry');
    await q.nack((await q.lease())[0]!, { delayMs: 0 });
    expect(await q.nack((await q.lease())[0]!)).toBe('dead');
    await q.removeDead(job!.id);
    expect(q.deadLetters()).toEqual([]);
    await expectRejects(q.removeDead(job!.id), NotFoundError, 'ERR_NOT_FOUND');
  });

  it('dedupes enqueues while the job is pending, and enqueues inside transactions', async () => {
    const db = await sb.open();
    const q = db.queue<string>('q');
    const id = await q.enqueue('x', { dedupeKey: 'order-7' });
    expect(await q.enqueue('x again', { dedupeKey: 'order-7' })).toBe(id);
    await db.transaction().execute((tx) => {
      tx.set('order/8', str('placed'));
      q.in(tx).enqueue('ship 8', { dedupeKey: 'order-8' });
    });
    await expect(
      db.transaction().execute((tx) => {
        q.in(tx).enqueue('never');
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    const jobs = await q.lease({ count: 10 });
    expect(jobs.map((j) => j.payload).sort()).toEqual(['ship 8', 'x']);
    // Integers keep every digit, as in event payloads.
    const big = db.queue<{ amount: bigint }>('big');
    await big.enqueue({ amount: 2n ** 64n + 1n });
    expect((await big.lease())[0]!.payload.amount).toBe(2n ** 64n + 1n);
    for (const j of jobs) await q.ack(j);
    expect(await q.enqueue('x after ack', { dedupeKey: 'order-7' })).not.toBe(id);
  });

  it('refuses bad input with ERR_INVALID_ARGUMENT before writing', async () => {
    const db = await sb.open();
    const q = db.queue('q');
    const seq = db.commitSeq;
    for (const bad of [
      () => q.enqueue(1, { priority: 1.5 }),
      () => q.enqueue(1, { delayMs: -1 }),
      () => q.enqueue(Number.NaN),
      () => q.lease({ count: 0 }),
      () => q.lease({ count: 1001 }),
      () => q.ack({} as Job),
      () => q.nack({ id: 'x' } as Job),
    ]) {
      await expectRejects(bad, InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(() => db.queue('a/b')).toThrow(InvalidArgumentError);
    expect(db.commitSeq).toBe(seq);
  });

  it('keeps ready jobs in one index ordered for a prefix scan', async () => {
    const db = await sb.open();
    const q = db.queue('q');
    await q.enqueueMany([{ payload: 1, priority: 2 }, { payload: 2 }, { payload: 3, priority: -5 }]);
    const ready = db.list({ prefix: '\0athanor/q/q/r/' }).map((e) => e.key.slice('\0athanor/q/q/r/'.length, '\0athanor/q/q/r/'.length + 10));
    expect(ready).toEqual(['0999999998', '1000000000', '1000000005']);
  });

  it('completes every job exactly once with workers in several processes, some killed -9 mid-work', async () => {
    const dir = sb.dir();
    const JOBS = 150;
    {
      const db = await Athanor.open(dir);
      await db.queue('jobs').enqueueMany(Array.from({ length: JOBS }, (_, n) => ({ payload: { n } })));
      await db.close();
    }
    // Two workers race for the jobs and are killed, one right after a lease (holding a
    // job it has not acked), the other after some acks; neither can drain the queue
    // first, so both are killed mid-work. Then two more workers drain it side by side.
    const victims = [5 + Math.floor(Math.random() * 20), 10 + Math.floor(Math.random() * 20)];
    const killed = await Promise.all([
      runEsChild([dir, 'work', '600000'], (line, lines) => line.startsWith('leased') && lines.filter((l) => l.startsWith('leased')).length >= victims[0]!),
      runEsChild([dir, 'work', '600000'], (line, lines) => line.startsWith('acked') && lines.filter((l) => l.startsWith('acked')).length >= victims[1]!),
    ]);
    expect(killed[0]!.signal, killed[0]!.stderr).toBe('SIGKILL');
    expect(killed[1]!.signal, killed[1]!.stderr).toBe('SIGKILL');
    const survivors = await Promise.all([runEsChild([dir, 'work', '600000'], null), runEsChild([dir, 'work', '600000'], null)]);
    for (const r of survivors) expect(r.code, r.stderr).toBe(0);
    const runs = [...killed, ...survivors];
    const db = await sb.open(dir);
    // The killed workers' leases are long: a worker whose clock is past them takes the jobs over.
    const q = db.queue<{ n: number }>('jobs', { clock: { now: () => Date.now() + 3_600_000 } });
    for (;;) {
      const jobs = await q.lease({ count: 10 });
      if (jobs.length === 0) break;
      for (const job of jobs) {
        await db.transaction().execute((tx) => {
          const key = `done/${job.payload.n}`;
          tx.set(key, i64((tx.getOpt(key)?.asI64() ?? 0n) + 1n));
          q.in(tx).ack(job);
        });
      }
    }
    const done = db.list({ prefix: 'done/', limit: 10_000 });
    expect(done).toHaveLength(JOBS);
    for (const e of done) expect(e.value.asI64(), e.key).toBe(1n);
    expect(q.counts()).toEqual({ ready: 0, delayed: 0, leased: 0, dead: 0 });
    const acked = runs.flatMap((r) => r.lines.filter((l) => l.startsWith('acked')));
    expect(new Set(acked).size).toBe(acked.length);
  }, 120_000);
});



