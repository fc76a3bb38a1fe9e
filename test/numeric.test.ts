/**
 * Conflict-free numeric ops: `tx.add/sub/max/min` applied by the writer at commit,
 * with bounds; a violation fails its transaction alone with `ERR_BOUNDS`.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { BoundsError, InvalidArgumentError, i64, str, u256 } from '../dist/index.js';
import { Sandbox, expectRejects } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

describe('numeric ops', () => {
  it('64 transactions in flight adding to one key commit with no conflict and no retry', async () => {
    const db = await sandbox.open();
    const results = await Promise.all(Array.from({ length: 64 }, () => db.transaction().execute((tx) => tx.add('hits', 1n), { maxAttempts: 1 })));
    expect(results.map((r) => r.attempts)).toEqual(Array(64).fill(1));
    expect(db.get('hits')!.asI64()).toBe(64n);
  });

  it('the same increments as read-modify-write do conflict (the contrast the ops remove)', async () => {
    const db = await sandbox.open();
    const results = await Promise.all(Array.from({ length: 16 }, () => db.transaction().execute((tx) => tx.update('hits', (v) => i64((v?.asI64() ?? 0n) + 1n)))));
    expect(results.reduce((n, r) => n + r.attempts, 0)).toBeGreaterThan(16);
    expect(db.get('hits')!.asI64()).toBe(16n);
  });

  it('a bound violation fails its transaction alone; the others in flight with it commit', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.set('stock', i64(5n)));
    const settled = await Promise.allSettled([
      db.transaction().execute((tx) => tx.sub('stock', 1n, { min: 0n })),
      db.transaction().execute((tx) => {
        tx.set('leak', i64(1n));
        tx.log('leak', {});
        tx.sub('stock', 100n, { min: 0n });
      }),
      db.transaction().execute((tx) => tx.sub('stock', 2n, { min: 0n })),
      db.transaction().execute((tx) => tx.add('other', 7n)),
    ]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const err = (settled[1] as PromiseRejectedResult).reason as BoundsError;
    expect(err).toBeInstanceOf(BoundsError);
    expect(err.code).toBe('ERR_BOUNDS');
    expect(err.message).toMatch(/stock/);
    expect(db.get('stock')!.asI64()).toBe(2n);
    expect(db.get('other')!.asI64()).toBe(7n);
    expect(db.exists('leak')).toBe(false);
    expect(db.events.lastId).toBe(0n);
  });

  it('i64 overflow, u256 underflow, max/min, a type option, a non-numeric key', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.set('big', i64(2n ** 63n - 1n)));
    await expectRejects(db.transaction().execute((tx) => tx.add('big', 1n)), BoundsError, 'ERR_BOUNDS');
    await expectRejects(db.transaction().execute((tx) => tx.sub('wei', 1n, { type: 'u256' })), BoundsError, 'ERR_BOUNDS');
    await db.transaction().execute((tx) => tx.add('wei', 2n ** 200n, { type: 'u256' }));
    await db.transaction().execute((tx) => tx.add('wei', 5n));
    expect(db.get('wei')!.asU256()).toBe(2n ** 200n + 5n);
    await expectRejects(db.transaction().execute((tx) => tx.add('wei', 1n, { type: 'i64' })), BoundsError, 'ERR_BOUNDS');
    await db.transaction().execute((tx) => {
      tx.max('hi', 10);
      tx.max('hi', 3);
      tx.min('lo', -4);
      tx.min('lo', 9);
    });
    expect(db.get('hi')!.asI64()).toBe(10n);
    expect(db.get('lo')!.asI64()).toBe(-4n);
    await db.transaction().execute((tx) => tx.set('name', str('x')));
    await expectRejects(db.transaction().execute((tx) => tx.add('name', 1n)), BoundsError, 'ERR_BOUNDS');
    await expectRejects(db.transaction().execute((tx) => tx.add('hi', 1n, { max: 10n })), BoundsError, 'ERR_BOUNDS');
    expect(db.get('hi')!.asI64()).toBe(10n);
    expect(db.get('wei')!.equals(u256(2n ** 200n + 5n))).toBe(true);
  });

  it('a key with a pending numeric op cannot be read, set or deleted in the same transaction', async () => {
    const db = await sandbox.open();
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.add('n', 1n);
        tx.get('n');
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.add('n', 1n);
        tx.set('n', i64(1n));
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.delete('n');
        tx.add('n', 1n);
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    await expectRejects(db.transaction().execute((tx) => tx.add('n', 1.5)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.transaction().execute((tx) => tx.add('n', 2n ** 256n)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.exists('n')).toBe(false);
  });

  it('matches a model with bounds under random operation sequences (property)', async () => {
    const MIN = -(2n ** 63n);
    const MAX = 2n ** 63n - 1n;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            key: fc.constantFrom('a', 'b'),
            op: fc.constantFrom('add' as const, 'sub' as const, 'max' as const, 'min' as const),
            operand: fc.oneof(fc.bigInt({ min: -20n, max: 20n }), fc.bigInt({ min: MIN, max: MAX })),
            min: fc.option(fc.bigInt({ min: -30n, max: 0n }), { nil: undefined }),
            max: fc.option(fc.bigInt({ min: 0n, max: 30n }), { nil: undefined }),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        async (ops) => {
          const db = await sandbox.open();
          const model = new Map<string, bigint>();
          for (const o of ops) {
            const cur = model.get(o.key) ?? 0n;
            const next = o.op === 'add' ? cur + o.operand : o.op === 'sub' ? cur - o.operand : o.op === 'max' ? (cur > o.operand ? cur : o.operand) : cur < o.operand ? cur : o.operand;
            const ok = next >= MIN && next <= MAX && (o.min === undefined || next >= o.min) && (o.max === undefined || next <= o.max);
            const p = db.transaction().execute((tx) => tx[o.op](o.key, o.operand, { min: o.min, max: o.max }));
            if (ok) {
              await p;
              model.set(o.key, next);
            } else {
              await expectRejects(p, BoundsError, 'ERR_BOUNDS');
            }
          }
          for (const k of ['a', 'b']) expect(db.getOpt(k)?.asI64()).toBe(model.get(k));
          await sandbox.cleanup();
        },
      ),
      { numRuns: 30 },
    );
  });
});
