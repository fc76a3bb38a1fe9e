/**
 * Accumulators: exactly-once deltas under dedupe keys (across restarts and a kill -9),
 * exposures (reservations) bounded by what is available, settle-and-release in one
 * commit, and every operation inside a user's transaction.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, BoundsError, InvalidArgumentError, NotFoundError, str } from '../dist/index.js';
import { runEsChild } from './es-helpers.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

/** A clock the test moves by hand. */
function manualClock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('accumulators', () => {
  it('applies each dedupe key once and defines available as value - exposure - ceil(value * marginBps / 10000)', async () => {
    const db = await sb.open();
    const acc = db.accumulators;
    expect(await acc.create('w', { marginBps: 150 })).toBe(true);
    expect(await acc.create('w', { marginBps: 150 })).toBe(false);
    await expectRejects(acc.create('w', { marginBps: 10 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(await acc.accumulate('w', 1001n, 'dep-1')).toEqual({ applied: true, value: 1001n });
    expect(await acc.accumulate('w', 1001n, 'dep-1')).toEqual({ applied: false, value: 1001n });
    // margin = ceil(1001 * 150 / 10000) = ceil(15.015) = 16
    expect(acc.get('w')).toEqual({ value: 1001n, exposure: 0n, margin: 16n, available: 985n });
    expect(await acc.expose('w', 985n, 'order-1')).toBe(true);
    expect(await acc.expose('w', 985n, 'order-1')).toBe(false); // a retried exposure is no second reservation
    expect(acc.available('w')).toBe(0n);
    const before = db.commitSeq;
    const e = await expectRejects(acc.expose('w', 1n, 'order-2'), BoundsError, 'ERR_BOUNDS');
    expect(e.message).toContain('available');
    expect(db.commitSeq).toBe(before);
    expect(acc.exposures('w')).toEqual(new Map([['order-1', 985n]]));
    // Settle and release in one commit: the fill costs 900, the reservation of 985 is closed.
    expect(await acc.accumulate('w', -900n, 'fill-1', { release: 'order-1' })).toEqual({ applied: true, value: 101n });
    expect(acc.get('w')).toEqual({ value: 101n, exposure: 0n, margin: 2n, available: 99n });
    await expectRejects(acc.accumulate('w', -1n, 'fill-2', { release: 'order-1' }), NotFoundError, 'ERR_NOT_FOUND');
    expect(acc.value('w')).toBe(101n);
    expect(await acc.release('w', 'nothing')).toBe(false);
  });

  it('refuses bad input and values outside the type with typed errors, before writing', async () => {
    const db = await sb.open();
    const acc = db.accumulators;
    await acc.create('i', {});
    await acc.create('u', { type: 'u256' });
    await expectRejects(acc.accumulate('missing', 1n, 'k'), NotFoundError, 'ERR_NOT_FOUND');
    await expectRejects(acc.accumulate('u', -1n, 'k'), BoundsError, 'ERR_BOUNDS');
    await acc.accumulate('i', 2n ** 63n - 1n, 'max');
    await expectRejects(acc.accumulate('i', 1n, 'over'), BoundsError, 'ERR_BOUNDS');
    await acc.accumulate('u', 2n ** 255n, 'big');
    expect(acc.value('u')).toBe(2n ** 255n);
    const seq = db.commitSeq;
    expectThrows(() => acc.in(undefined as never).get('i'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    for (const bad of [() => acc.accumulate('i', 1.5, 'k'), () => acc.accumulate('i', 1n, ''), () => acc.expose('i', 0n, 'x'), () => acc.accumulate('a/b', 1n, 'k'), () => acc.create('x', { marginBps: 10_001 })]) {
      await expectRejects(bad, InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    await expectRejects(acc.expose('i', -5n, 'x'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.commitSeq).toBe(seq);
    // The records are athanor's: a user transaction cannot write them directly.
    await expectRejects(db.transaction().execute((tx) => tx.set('\0athanor/acc/i', str('x'))), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('commits with the user transaction, or not at all', async () => {
    const db = await sb.open();
    await db.accumulators.create('w');
    await db.transaction().execute((tx) => {
      const a = db.accumulators.in(tx);
      expect(a.accumulate('w', 50n, 'd1').applied).toBe(true);
      expect(a.accumulate('w', 50n, 'd1').applied).toBe(false); // the transaction sees its own key
      a.expose('w', 20n, 'x1');
      expect(a.get('w').available).toBe(30n);
      tx.set('note', str('deposited'));
      tx.log('deposit', { amount: 50 });
    });
    expect(db.accumulators.get('w')).toMatchObject({ value: 50n, exposure: 20n });
    expect(db.get('note').asString()).toBe('deposited');
    await expect(
      db.transaction().execute((tx) => {
        db.accumulators.in(tx).accumulate('w', 1000n, 'd2');
        throw new Error('the order was rejected');
      }),
    ).rejects.toThrow('rejected');
    expect(db.accumulators.value('w')).toBe(50n);
    expect((await db.accumulators.accumulate('w', 1000n, 'd2')).applied).toBe(true); // d2 was never recorded
    // A refused operation inside a transaction the user goes on with writes nothing of its own.
    await db.transaction().execute((tx) => {
      expectThrows(() => db.accumulators.in(tx).exposeMany([{ name: 'w', amount: 1n, exposureId: 'ok' }, { name: 'w', amount: 10n ** 9n, exposureId: 'too-big' }]), BoundsError, 'ERR_BOUNDS');
      tx.set('after', str('x'));
    });
    expect(db.accumulators.exposures('w')).toEqual(new Map([['x1', 20n]]));
  });

  it('exposeMany reserves all or none, across accumulators', async () => {
    const db = await sb.open();
    const acc = db.accumulators;
    await acc.create('a');
    await acc.create('b');
    await acc.accumulate('a', 100n, 'fa');
    await acc.accumulate('b', 10n, 'fb');
    await expectRejects(
      acc.exposeMany([
        { name: 'a', amount: 60n, exposureId: 'x' },
        { name: 'b', amount: 11n, exposureId: 'y' },
      ]),
      BoundsError,
      'ERR_BOUNDS',
    );
    expect(acc.exposure('a')).toBe(0n);
    await expectRejects(
      acc.exposeMany([
        { name: 'a', amount: 60n, exposureId: 'x' },
        { name: 'a', amount: 41n, exposureId: 'y' },
      ]),
      BoundsError,
      'ERR_BOUNDS',
    );
    expect(await acc.exposeMany([{ name: 'a', amount: 60n, exposureId: 'x' }, { name: 'a', amount: 40n, exposureId: 'y' }, { name: 'b', amount: 10n, exposureId: 'z' }])).toBe(3);
    expect([acc.available('a'), acc.available('b')]).toEqual([0n, 0n]);
  });

  it('remembers a dedupe key for its window, across reopen, and prunes it after', async () => {
    const dir = sb.dir();
    const clock = manualClock();
    let db = await Athanor.open(dir);
    db.accumulators.configure({ clock });
    await db.accumulators.create('w', { dedupeWindow: 60_000 });
    await db.accumulators.accumulate('w', 5n, 'k');
    await db.close();
    db = await sb.open(dir);
    db.accumulators.configure({ clock });
    clock.t += 59_999;
    expect((await db.accumulators.accumulate('w', 5n, 'k')).applied).toBe(false);
    expect(await db.accumulators.prune('w')).toBe(0);
    clock.t += 1;
    expect(await db.accumulators.prune('w')).toBe(1);
    expect((await db.accumulators.accumulate('w', 5n, 'k')).applied).toBe(true);
    expect(db.accumulators.value('w')).toBe(10n);
  });

  it('concurrent accumulates of one key apply it once', async () => {
    const db = await sb.open();
    await db.accumulators.create('hot');
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => db.accumulators.accumulate('hot', 1n, `k${i % 10}`)));
    expect(results.filter((r) => r.applied)).toHaveLength(10);
    expect(db.accumulators.value('hot')).toBe(10n);
  });

  it('matches an in-memory model under random operations, duplicates included', async () => {
    const keys = ['k0', 'k1', 'k2', 'k3', 'k4'];
    const ids = ['x0', 'x1', 'x2', 'x3'];
    const op = fc.oneof(
      fc.record({ kind: fc.constant('acc' as const), delta: fc.integer({ min: -60, max: 100 }), key: fc.constantFrom(...keys), release: fc.option(fc.constantFrom(...ids), { nil: undefined }) }),
      fc.record({ kind: fc.constant('expose' as const), amount: fc.integer({ min: 1, max: 80 }), id: fc.constantFrom(...ids) }),
      fc.record({ kind: fc.constant('release' as const), id: fc.constantFrom(...ids) }),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 2000 }), fc.array(op, { minLength: 1, maxLength: 25 }), async (marginBps, ops) => {
        const db = await sb.open();
        const name = `m${run++}`;
        await db.accumulators.create(name, { marginBps });
        const model = { value: 0n, exposures: new Map<string, bigint>(), applied: new Set<string>() };
        const available = () => {
          const exposure = [...model.exposures.values()].reduce((s, x) => s + x, 0n);
          const margin = ((model.value > 0n ? model.value : 0n) * BigInt(marginBps) + 9999n) / 10000n;
          return { value: model.value, exposure, margin, available: model.value - exposure - margin };
        };
        for (const o of ops) {
          if (o.kind === 'acc') {
            const dup = model.applied.has(o.key);
            const missing = !dup && o.release !== undefined && !model.exposures.has(o.release);
            const p = db.accumulators.accumulate(name, BigInt(o.delta), o.key, o.release === undefined ? {} : { release: o.release });
            if (missing) {
              await expectRejects(p, NotFoundError, 'ERR_NOT_FOUND');
              continue;
            }
            expect((await p).applied).toBe(!dup);
            if (!dup) {
              model.applied.add(o.key);
              model.value += BigInt(o.delta);
              if (o.release !== undefined) model.exposures.delete(o.release);
            }
          } else if (o.kind === 'expose') {
            const open = model.exposures.get(o.id);
            const p = db.accumulators.expose(name, BigInt(o.amount), o.id);
            if (open !== undefined && open !== BigInt(o.amount)) await expectRejects(p, InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
            else if (open !== undefined) expect(await p).toBe(false);
            else if (available().available < BigInt(o.amount)) await expectRejects(p, BoundsError, 'ERR_BOUNDS');
            else {
              expect(await p).toBe(true);
              model.exposures.set(o.id, BigInt(o.amount));
            }
          } else {
            expect(await db.accumulators.release(name, o.id)).toBe(model.exposures.delete(o.id));
          }
          expect(db.accumulators.get(name)).toEqual(available());
        }
      }),
      { numRuns: 25 },
    );
  }, 120_000);

  it('applies each key once when two processes submit the same keys at the same time', async () => {
    const dir = sb.dir();
    const COUNT = 200;
    {
      const db = await Athanor.open(dir);
      await db.accumulators.create('acc');
      await db.close();
    }
    const runs = await Promise.all([runEsChild([dir, 'accumulate', String(COUNT), '4'], null), runEsChild([dir, 'accumulate', String(COUNT), '4'], null)]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const db = await sb.open(dir);
    expect(db.accumulators.value('acc')).toBe(BigInt((COUNT * (COUNT + 1)) / 2));
  }, 120_000);

  it('applies no dedupe key twice when the writer is killed -9 mid-work and every key is submitted again', async () => {
    const dir = sb.dir();
    const COUNT = 1000;
    {
      const db = await Athanor.open(dir);
      await db.accumulators.create('acc');
      await db.close();
    }
    const killAfter = 50 + Math.floor(Math.random() * 300);
    const child = await runEsChild([dir, 'accumulate', String(COUNT), '8'], (line, lines) => line.startsWith('applied') && lines.length >= killAfter);
    expect(child.signal, child.stderr).toBe('SIGKILL');
    const acked = child.lines.filter((l) => l.startsWith('applied')).map((l) => Number(l.split(' ')[1]));
    expect(acked.length).toBeGreaterThanOrEqual(killAfter);
    const db = await sb.open(dir);
    const valueAfterKill = db.accumulators.value('acc');
    expect(valueAfterKill).toBeGreaterThanOrEqual(acked.reduce((s, n) => s + BigInt(n), 0n));
    const again = await Promise.all(Array.from({ length: COUNT }, (_, i) => db.accumulators.accumulate('acc', BigInt(i + 1), `k${i + 1}`)));
    for (const n of acked) expect(again[n - 1]!.applied, `key k${n} was acknowledged before the kill`).toBe(false);
    const appliedNow = again.reduce((s, r, i) => s + (r.applied ? BigInt(i + 1) : 0n), 0n);
    expect(valueAfterKill + appliedNow).toBe(BigInt((COUNT * (COUNT + 1)) / 2));
    expect(db.accumulators.value('acc')).toBe(BigInt((COUNT * (COUNT + 1)) / 2));
  }, 120_000);
});
