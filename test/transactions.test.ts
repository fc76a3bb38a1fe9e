import { afterEach, describe, expect, it } from 'vitest';
import {
  AthanorError,
  ConflictError,
  InvalidArgumentError,
  Value,
  NotFoundError,
  PreflightError,
  bool,
  i64,
  json,
  str,
  u256,
  array,
  type Athanor,
  type CommitResult,
  type Tx,
} from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows, fingerprint } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

function increment(key: string) {
  return (tx: Tx): void => tx.update(key, (v) => i64((v?.asI64() ?? 0n) + 1n));
}

async function seeded(): Promise<Athanor> {
  const db = await sandbox.open();
  await db.transaction().execute((tx) => {
    tx.set('balance', i64(100));
    tx.set('big', u256(2n ** 200n));
    tx.set('name', str('alice'));
    tx.set('flag', bool(true));
    tx.log('seeded', { by: 'test' });
  });
  return db;
}
const SEEDED_KEYS = ['balance', 'big', 'name', 'flag', 'missing', 'k'];

describe('commits', () => {
  it('commits state and events together and reports what it did', async () => {
    const db = await sandbox.open();
    expect(db.commitSeq).toBe(0n);
    expect(db.events.lastId).toBe(0n);
    const r = await db.transaction().execute((tx) => {
      tx.set('acct:alice', i64(100));
      tx.set('acct:bob', i64(5));
      tx.log('opened', { account: 'alice' });
      tx.logMany([
        { type: 'opened', payload: { account: 'bob' } },
        { type: 'raw', payload: new Uint8Array([1, 2, 3]) },
      ]);
      return 'done';
    });
    expect(r).toEqual({ outcome: 'applied', commitSeq: 1n, firstEventId: 1n, eventCount: 3, value: 'done', attempts: 1 } satisfies CommitResult<string>);
    expect(db.get('acct:alice').asI64()).toBe(100n);
    expect(db.get('acct:bob').asI64()).toBe(5n);
    const events = [...db.events.read()];
    expect(events.map((e) => [e.id, e.type, e.commitSeq])).toEqual([
      [1n, 'opened', 1n],
      [2n, 'opened', 1n],
      [3n, 'raw', 1n],
    ]);
    expect(events[2]!.payload).toEqual(new Uint8Array([1, 2, 3]));
    expect(db.commitSeq).toBe(1n);
  });

  it('reads its own writes inside the callback', async () => {
    const db = await seeded();
    await db.transaction().execute((tx) => {
      expect(tx.get('balance').asI64()).toBe(100n);
      tx.set('balance', i64(150));
      expect(tx.get('balance').asI64()).toBe(150n);
      tx.update('balance', (v) => i64(v!.asI64() * 2n));
      expect(tx.get('balance').asI64()).toBe(300n);
      expect(tx.exists('fresh')).toBe(false);
      tx.set('fresh', str('new'));
      expect(tx.exists('fresh')).toBe(true);
      expect(tx.getOpt('fresh')!.asString()).toBe('new');
      tx.delete('name');
      expect(tx.getOpt('name')).toBeUndefined();
      expect(tx.exists('name')).toBe(false);
      expectThrows(() => tx.get('name'), NotFoundError, 'ERR_NOT_FOUND');
      tx.set('name', str('again'));
      expect(tx.get('name').asString()).toBe('again');
      // The committed state is untouched until the commit.
      expect(db.get('balance').asI64()).toBe(100n);
    });
    expect(db.get('balance').asI64()).toBe(300n);
    expect(db.get('fresh').asString()).toBe('new');
    expect(db.get('name').asString()).toBe('again');
  });

  it('update writes what the function returns and deletes on undefined; delete of a missing key is fine', async () => {
    const db = await seeded();
    let seen: unknown = 'not called';
    await db.transaction().execute((tx) => {
      tx.update('balance', (v) => i64(v!.asI64() - 30n));
      tx.update('counter', (v) => {
        seen = v;
        return i64(1);
      });
      tx.update('flag', () => undefined);
      tx.delete('never-existed');
    });
    expect(seen).toBeUndefined();
    expect(db.get('balance').asI64()).toBe(70n);
    expect(db.get('counter').asI64()).toBe(1n);
    expect(db.exists('flag')).toBe(false);
    expect(db.getOpt('flag')).toBeUndefined();
    expectThrows(() => db.get('flag'), NotFoundError, 'ERR_NOT_FOUND');
    expect(db.exists('never-existed')).toBe(false);
  });

  it('a read-only transaction commits nothing and reports the current commit seq', async () => {
    const db = await seeded();
    const before = fingerprint(db, SEEDED_KEYS);
    const r = await db.transaction().execute((tx) => tx.get('balance').asI64());
    expect(r).toEqual({ outcome: 'applied', commitSeq: 1n, firstEventId: null, eventCount: 0, value: 100n, attempts: 1 });
    expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);
  });

  it('a transaction with writes but no events reports firstEventId null', async () => {
    const db = await seeded();
    const r = await db.transaction().execute((tx) => tx.set('k', i64(1)));
    expect(r.firstEventId).toBeNull();
    expect(r.eventCount).toBe(0);
    expect(r.commitSeq).toBe(2n);
    expect(db.events.lastId).toBe(1n);
  });

  it('commit results have dense, increasing commit seqs and event ids', async () => {
    const db = await sandbox.open();
    const counts = [1, 3, 0, 2, 5, 0, 1, 10, 1];
    let expectedSeq = 1n;
    let expectedFirst = 1n;
    for (const n of counts) {
      const r = await db.transaction().execute((tx) => {
        tx.set('last', i64(n));
        for (let i = 0; i < n; i++) tx.log('e', { n, i });
      });
      expect(r.commitSeq).toBe(expectedSeq);
      expect(r.eventCount).toBe(n);
      expect(r.firstEventId).toBe(n > 0 ? expectedFirst : null);
      expectedSeq++;
      expectedFirst += BigInt(n);
    }
    // Concurrent commits (one group) too.
    const rs = await Promise.all(counts.map((n, j) => db.transaction().execute((tx) => {
      tx.set(`c:${j}`, i64(n));
      for (let i = 0; i < n; i++) tx.log('c', { j, i });
    })));
    const sorted = [...rs].sort((a, b) => Number(a.commitSeq - b.commitSeq));
    sorted.forEach((r, i) => expect(r.commitSeq).toBe(expectedSeq + BigInt(i)));
    let next = expectedFirst;
    for (const r of sorted) {
      if (r.eventCount > 0) {
        expect(r.firstEventId).toBe(next);
        next += BigInt(r.eventCount);
      }
    }
    expect(db.events.lastId).toBe(next - 1n);
    // Every event reports the commit seq of its transaction.
    for (const r of sorted) {
      if (r.firstEventId === null) continue;
      for (let id = r.firstEventId; id < r.firstEventId + BigInt(r.eventCount); id++) {
        expect(db.events.get(id)!.commitSeq).toBe(r.commitSeq);
      }
    }
  });

  it('the tx object cannot be used after its callback returned', async () => {
    const db = await sandbox.open();
    let kept: Tx | undefined;
    await db.transaction().execute((tx) => {
      kept = tx;
      tx.set('a', i64(1));
    });
    expectThrows(() => kept!.set('b', i64(2)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => kept!.log('x', {}), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => kept!.get('a'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.exists('b')).toBe(false);
    expect(db.commitSeq).toBe(1n);
  });

  it('the value returned by execute is visible to db.get as soon as the promise resolves', async () => {
    const db = await sandbox.open();
    for (let i = 1; i <= 50; i++) {
      await db.transaction().execute((tx) => tx.set('n', i64(i)));
      expect(db.get('n').asI64()).toBe(BigInt(i));
      expect(db.commitSeq).toBe(BigInt(i));
    }
  });
});

describe('preflight checks', () => {
  const failing: [string, (b: ReturnType<Athanor['transaction']>) => unknown, string][] = [
    ['require', (b) => b.require('balance', (v) => v!.asI64() > 1000n), 'balance'],
    ['require with a message', (b) => b.require('name', (v) => v?.asString() === 'bob', 'name must be bob'), 'name'],
    ['requireExists', (b) => b.requireExists('missing'), 'missing'],
    ['requireMissing', (b) => b.requireMissing('balance'), 'balance'],
    ['requireMin', (b) => b.requireMin('balance', 101), 'balance'],
    ['requireMin on a u256', (b) => b.requireMin('big', 2n ** 201n), 'big'],
    ['requireMin on a missing key', (b) => b.requireMin('missing', 0), 'missing'],
    ['requireMin on a non-integer', (b) => b.requireMin('name', 0), 'name'],
    ['requireMax', (b) => b.requireMax('balance', 99n), 'balance'],
    ['requireEquals (different value)', (b) => b.requireEquals('balance', i64(99)), 'balance'],
    ['requireEquals (different type)', (b) => b.requireEquals('balance', u256(100)), 'balance'],
    ['requireEquals (missing)', (b) => b.requireEquals('missing', i64(0)), 'missing'],
    ['a passing check followed by a failing one', (b) => b.requireExists('balance').requireMin('balance', 100).requireMax('balance', 10), 'balance'],
  ];

  for (const [name, configure, key] of failing) {
    it(`a failed ${name} throws PreflightError and leaves the database unchanged`, async () => {
      const db = await seeded();
      const before = fingerprint(db, SEEDED_KEYS);
      let ran = false;
      const builder = db.transaction();
      configure(builder);
      const err = await expectRejects(
        builder.execute((tx) => {
          ran = true;
          tx.set('k', i64(1));
          tx.log('should-not-exist', {});
        }),
        PreflightError,
        'ERR_PREFLIGHT',
      );
      expect((err as PreflightError).key).toBe(key);
      expect(ran).toBe(false);
      expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);

      // The same failure from executeSync.
      const again = db.transaction();
      configure(again);
      expectThrows(() => again.executeSync((tx) => tx.set('k', i64(1))), PreflightError, 'ERR_PREFLIGHT');
      expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);
    });
  }

  it('a custom message reaches the error', async () => {
    const db = await seeded();
    const err = await expectRejects(db.transaction().require('name', () => false, 'name must be bob').execute(() => {}), PreflightError, 'ERR_PREFLIGHT');
    expect(err.message).toBe('name must be bob');
  });

  it('passing checks let the callback run and commit', async () => {
    const db = await seeded();
    const r = await db
      .transaction()
      .require('balance', (v) => v!.asI64() === 100n)
      .requireExists('name')
      .requireMissing('missing')
      .requireMin('balance', 100)
      .requireMax('balance', 100n)
      .requireMin('big', 2n ** 200n)
      .requireEquals('name', str('alice'))
      .execute((tx) => {
        tx.set('balance', i64(0));
        tx.log('drained', {});
      });
    expect(r.outcome).toBe('applied');
    expect(db.get('balance').asI64()).toBe(0n);
  });

  it('checks see the state at the start of each attempt', async () => {
    const db = await seeded();
    // Two withdrawals that each require enough balance: the second must see the first.
    const withdraw = () =>
      db
        .transaction()
        .requireMin('balance', 60)
        .execute((tx) => tx.update('balance', (v) => i64(v!.asI64() - 60n)));
    const results = await Promise.allSettled([withdraw(), withdraw()]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toBeInstanceOf(PreflightError);
    expect(db.get('balance').asI64()).toBe(40n);
  });

  it('bad preflight arguments throw ERR_INVALID_ARGUMENT when the check is added', async () => {
    const db = await seeded();
    expectThrows(() => db.transaction().requireMin('balance', 1.5), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireMax('balance', NaN), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireExists(''), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireMissing('x'.repeat(512)), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireMin('balance', 'x' as unknown as number), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireMax('balance', '5' as unknown as number), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.transaction().requireMax('balance', null as unknown as number), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });
});

describe('failing callbacks', () => {
  it('a callback that throws propagates the error and writes nothing', async () => {
    const db = await seeded();
    const before = fingerprint(db, SEEDED_KEYS);
    const boom = new Error('boom');
    await expect(
      db.transaction().execute((tx) => {
        tx.set('balance', i64(0));
        tx.log('half-done', {});
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(() =>
      db.transaction().executeSync((tx) => {
        tx.set('balance', i64(0));
        throw boom;
      }),
    ).toThrow(boom);
    expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);
    // The handle still works afterwards.
    await db.transaction().execute(increment('k'));
    expect(db.get('k').asI64()).toBe(1n);
  });

  it('an async callback is rejected with ERR_INVALID_ARGUMENT and writes nothing', async () => {
    const db = await seeded();
    const before = fingerprint(db, SEEDED_KEYS);
    await expectRejects(
      db.transaction().execute(async (tx) => {
        tx.set('balance', i64(0));
        tx.log('async', {});
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    expectThrows(
      () => db.transaction().executeSync(async (tx) => tx.set('balance', i64(0))),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    // A thenable counts as a promise too.
    await expectRejects(db.transaction().execute(() => ({ then() {} })), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);
  });

  it('a refused async callback that later touches tx does not crash the process', async () => {
    const db = await seeded();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const body = async (tx: Tx) => {
        tx.getOpt('balance');
        await null;
        tx.set('balance', i64(0)); // throws: the transaction is over
      };
      await expectRejects(db.transaction().execute(body), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.transaction().executeSync(body), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(db.get('balance').asI64()).toBe(100n);
  });

  it('a nested transaction is rejected with ERR_INVALID_ARGUMENT', async () => {
    const db = await seeded();
    const before = fingerprint(db, SEEDED_KEYS);
    // Nested executeSync throws inside the outer callback, which then fails as a whole.
    await expectRejects(
      db.transaction().execute((tx) => {
        tx.set('balance', i64(1));
        db.transaction().executeSync((inner) => inner.set('k', i64(1)));
      }),
      InvalidArgumentError,
      'ERR_INVALID_ARGUMENT',
    );
    expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);

    // Nested execute returns a rejected promise; the outer transaction can still commit.
    let nested: Promise<unknown> | undefined;
    await db.transaction().execute((tx) => {
      nested = db.transaction().execute((inner) => inner.set('k', i64(1)));
      nested.catch(() => {}); // checked below
      tx.set('outer', bool(true));
    });
    await expectRejects(nested!, InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.get('outer').asBool()).toBe(true);
    expect(db.exists('k')).toBe(false);

    // Nothing is left stuck: later transactions run normally.
    await db.transaction().execute(increment('k'));
    db.transaction().executeSync(increment('k'));
    expect(db.get('k').asI64()).toBe(2n);
  });

  it('bad execute options throw ERR_INVALID_ARGUMENT and write nothing', async () => {
    const db = await seeded();
    const before = fingerprint(db, SEEDED_KEYS);
    const bad: (object | null)[] = [
      { maxAttempts: 0 },
      { maxAttempts: 1.5 },
      { idempotencyKey: '' },
      { idempotencyKey: 'x'.repeat(257) },
      { idempotencyKey: '😀'.repeat(64) + 'x' }, // 257 UTF-8 bytes
      { idempotencyKey: 5 },
      { idempotencyKey: 'order-\uD800' }, // lone surrogate: would collide with other such keys
      null,
    ];
    for (const o of bad) {
      await expectRejects(db.transaction().execute(increment('k'), o as object), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.transaction().executeSync(increment('k'), o as object), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
    expect(fingerprint(db, SEEDED_KEYS)).toEqual(before);
  });
});

describe('concurrency', () => {
  it('100 concurrent increments of one hot key all land exactly once', async () => {
    const db = await sandbox.open();
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        db.transaction().execute((tx) => {
          tx.update('counter', (v) => i64((v?.asI64() ?? 0n) + 1n));
          tx.log('incremented', { i });
        }),
      ),
    );
    expect(db.get('counter').asI64()).toBe(100n);
    expect(db.events.lastId).toBe(100n);
    expect(db.commitSeq).toBe(100n);
    expect(results.every((r) => r.outcome === 'applied' && r.eventCount === 1)).toBe(true);
    expect(new Set(results.map((r) => r.commitSeq)).size).toBe(100);
    expect(results.some((r) => r.attempts > 1)).toBe(true);
    const is = [...db.events.read()].map((e) => (e.payload as { i: number }).i).sort((a, b) => a - b);
    expect(is).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(db.verify()).toEqual({ events: 100 });
  });

  it('concurrent transfers between accounts conserve the total', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => {
      for (let a = 0; a < 5; a++) tx.set(`acct:${a}`, i64(1000));
    });
    const transfers = Array.from({ length: 200 }, (_, i) => {
      const from = i % 5;
      const to = (i * 3 + 1) % 5;
      return db.transaction().execute((tx) => {
        tx.update(`acct:${from}`, (v) => i64(v!.asI64() - 7n));
        tx.update(`acct:${to}`, (v) => i64(v!.asI64() + 7n));
      });
    });
    await Promise.all(transfers);
    let total = 0n;
    for (let a = 0; a < 5; a++) total += db.get(`acct:${a}`).asI64();
    expect(total).toBe(5000n);
    expect(db.commitSeq).toBe(201n);
  });

  it('a conflict with maxAttempts: 1 throws ConflictError and writes nothing for that transaction', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir); // a second handle: a concurrent writer
    await db.transaction().execute((tx) => tx.set('k', i64(1)));
    const err = await expectRejects(
      db.transaction().execute(
        (tx) => {
          const v = tx.get('k').asI64();
          // Another writer commits to the key after this transaction read it.
          other.transaction().executeSync((t2) => t2.set('k', i64(50)));
          tx.set('k', i64(v + 1n));
          tx.set('side', str('effect'));
          tx.log('lost', {});
        },
        { maxAttempts: 1 },
      ),
      ConflictError,
      'ERR_CONFLICT',
    );
    expect(err.message).toMatch(/k/);
    expect(db.get('k').asI64()).toBe(50n);
    expect(db.exists('side')).toBe(false);
    expect(db.events.lastId).toBe(0n);
    expect(db.commitSeq).toBe(2n);
  });

  it('executeSync also gives up with ConflictError after maxAttempts', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    let calls = 0;
    expectThrows(
      () =>
        db.transaction().executeSync(
          (tx) => {
            calls++;
            const v = tx.getOpt('k')?.asI64() ?? 0n;
            other.transaction().executeSync((t2) => t2.update('k', (x) => i64((x?.asI64() ?? 0n) + 100n)));
            tx.set('k', i64(v + 1n));
          },
          { maxAttempts: 3 },
        ),
      ConflictError,
      'ERR_CONFLICT',
    );
    expect(calls).toBe(3);
    expect(db.get('k').asI64()).toBe(300n);
  });

  it('a conflicting transaction is retried and then applies once', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    await db.transaction().execute((tx) => tx.set('k', i64(1)));
    let calls = 0;
    const r = await db.transaction().execute((tx) => {
      calls++;
      const v = tx.get('k').asI64();
      if (calls === 1) other.transaction().executeSync((t2) => t2.set('k', i64(10)));
      tx.set('k', i64(v + 1n));
      tx.log('bumped', { from: String(v) });
    });
    expect(calls).toBe(2);
    expect(r.attempts).toBe(2);
    expect(db.get('k').asI64()).toBe(11n);
    expect(db.events.tail(5).map((e) => e.payload)).toEqual([{ from: '10' }]);
  });

  it('a read of a missing key conflicts with a concurrent insert of it', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    await expectRejects(
      db.transaction().execute(
        (tx) => {
          if (!tx.exists('unique:name')) {
            other.transaction().executeSync((t2) => t2.set('unique:name', str('other')));
            tx.set('unique:name', str('mine'));
          }
        },
        { maxAttempts: 1 },
      ),
      ConflictError,
      'ERR_CONFLICT',
    );
    expect(db.get('unique:name').asString()).toBe('other');
  });

  it('blind writes do not conflict', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    const r = await db.transaction().execute(
      (tx) => {
        other.transaction().executeSync((t2) => t2.set('k', i64(1)));
        tx.set('k', i64(2));
      },
      { maxAttempts: 1 },
    );
    expect(r.outcome).toBe('applied');
    expect(db.get('k').asI64()).toBe(2n);
  });
});

describe('ordering', () => {
  it('transactions issued without awaiting commit in the order they were issued', async () => {
    const db = await sandbox.open();
    const issued: number[] = [];
    const all: Promise<unknown>[] = [];
    let next = 0;
    const issue = (count: number) => {
      const batch = [];
      for (let i = 0; i < count; i++) {
        const n = next++;
        issued.push(n);
        batch.push(db.transaction().execute((tx) => tx.log('seq', { n })));
      }
      all.push(...batch);
      return Promise.all(batch);
    };
    // Bursts issued from the continuation of a reported group, and lone ones.
    await issue(1);
    for (let round = 0; round < 10; round++) {
      await issue(1 + round * 7);
      await issue(1);
    }
    await Promise.all(all);
    const logged = [...db.events.read()].map((e) => (e.payload as { n: number }).n);
    expect(logged).toEqual(issued);
  });
});

describe('executeSync', () => {
  it('commits and returns the same shape as execute', async () => {
    const db = await sandbox.open();
    const r = db.transaction().executeSync((tx) => {
      tx.set('a', json({ x: 1 }));
      tx.log('sync', { ok: true });
      return 42;
    });
    expect(r).toEqual({ outcome: 'applied', commitSeq: 1n, firstEventId: 1n, eventCount: 1, value: 42, attempts: 1 });
    expect(db.get('a').asJson()).toEqual({ x: 1 });
    const r2 = await db.transaction().execute((tx) => {
      tx.set('a', json({ x: 2 }));
      tx.log('async', {});
      return 43;
    });
    expect(Object.keys(r2).sort()).toEqual(Object.keys(r).sort());
    expect(r2).toEqual({ outcome: 'applied', commitSeq: 2n, firstEventId: 2n, eventCount: 1, value: 43, attempts: 1 });
    const ro = db.transaction().executeSync((tx) => tx.get('a').asJson());
    expect(ro).toEqual({ outcome: 'applied', commitSeq: 2n, firstEventId: null, eventCount: 0, value: { x: 2 }, attempts: 1 });
  });

  it('interleaves with queued async commits', async () => {
    const db = await sandbox.open();
    const pending = Array.from({ length: 20 }, () => db.transaction().execute(increment('n')));
    db.transaction().executeSync(increment('n'));
    await Promise.all(pending);
    db.transaction().executeSync(increment('n'));
    expect(db.get('n').asI64()).toBe(22n);
  });
});

describe('idempotency keys', () => {
  it('the same key twice applies once; the second reports the original commit', async () => {
    const db = await sandbox.open();
    const pay = (tx: Tx) => {
      tx.update('paid', (v) => i64((v?.asI64() ?? 0n) + 10n));
      tx.log('payment', { amount: 10 });
      tx.log('receipt', { amount: 10 });
    };
    const first = await db.transaction().execute(pay, { idempotencyKey: 'order-1' });
    await db.transaction().execute((tx) => tx.log('unrelated', {}));
    const before = fingerprint(db, ['paid']);
    let ran = false;
    const second = await db.transaction().execute((tx) => {
      ran = true;
      pay(tx);
      return 'second run';
    }, { idempotencyKey: 'order-1' });
    // Found up front: neither the callback nor its preflight runs.
    expect(ran).toBe(false);
    expect(first).toMatchObject({ outcome: 'applied', commitSeq: 1n, firstEventId: 1n, eventCount: 2 });
    expect(second).toMatchObject({ outcome: 'duplicate', commitSeq: 1n, firstEventId: 1n, eventCount: 2, value: undefined, attempts: 0 });
    expect(fingerprint(db, ['paid'])).toEqual(before);
    expect(db.get('paid').asI64()).toBe(10n);

    const third = db.transaction().executeSync(pay, { idempotencyKey: 'order-1' });
    expect(third).toMatchObject({ outcome: 'duplicate', commitSeq: 1n, firstEventId: 1n });
    expect(fingerprint(db, ['paid'])).toEqual(before);

    // A different key applies.
    const other = await db.transaction().execute(pay, { idempotencyKey: 'order-2' });
    expect(other.outcome).toBe('applied');
    expect(db.get('paid').asI64()).toBe(20n);
  });

  it('a duplicate is recognised after close and reopen', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const first = await db.transaction().execute((tx) => {
      tx.set('x', i64(1));
      tx.log('once', {});
    }, { idempotencyKey: 'k-😀' });
    await db.close();
    const again = await sandbox.open(dir);
    const before = fingerprint(again, ['x']);
    const dup = await again.transaction().execute((tx) => {
      tx.set('x', i64(2));
      tx.log('once', {});
    }, { idempotencyKey: 'k-😀' });
    expect(dup).toMatchObject({ outcome: 'duplicate', commitSeq: first.commitSeq, firstEventId: first.firstEventId, eventCount: 1 });
    expect(fingerprint(again, ['x'])).toEqual(before);
    expect(again.get('x').asI64()).toBe(1n);
  });

  it('concurrent submissions with one key apply exactly once', async () => {
    const db = await sandbox.open();
    const rs = await Promise.all(
      Array.from({ length: 10 }, () => db.transaction().execute((tx) => tx.log('charge', {}), { idempotencyKey: 'same' })),
    );
    expect(rs.filter((r) => r.outcome === 'applied')).toHaveLength(1);
    expect(rs.filter((r) => r.outcome === 'duplicate')).toHaveLength(9);
    expect(new Set(rs.map((r) => r.commitSeq)).size).toBe(1);
    expect(db.events.lastId).toBe(1n);
  });

  // The key is looked up before preflight: retrying an applied payment whose check
  // no longer holds must still report the original commit, not ERR_PREFLIGHT.
  it('a retried idempotent transaction reports duplicate even when its preflight would now fail', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.set('acct:alice', i64(15)));
    const pay = () =>
      db
        .transaction()
        .requireMin('acct:alice', 10)
        .execute((tx) => tx.update('acct:alice', (v) => i64(v!.asI64() - 10n)), { idempotencyKey: 'payment-1' });
    const first = await pay();
    expect(first.outcome).toBe('applied');
    const retry = await pay();
    expect(retry).toMatchObject({ outcome: 'duplicate', commitSeq: first.commitSeq });
    expect(db.get('acct:alice').asI64()).toBe(5n);
  });

  it('distinct idempotency keys never collide, including non-ASCII ones', async () => {
    const db = await sandbox.open();
    const keys = ['order-1', 'order-1 ', 'Order-1', 'ordér-1', 'order-\u{1F600}', 'order-\u{1F601}', '😀'.repeat(64)];
    for (const [i, key] of keys.entries()) {
      const r = await db.transaction().execute((tx) => tx.set(`k${i}`, i64(i)), { idempotencyKey: key });
      expect(r.outcome, key).toBe('applied');
    }
    for (const key of keys) {
      expect((await db.transaction().execute(() => {}, { idempotencyKey: key })).outcome, key).toBe('duplicate');
    }
    // Keys UTF-8 cannot represent are refused rather than silently merged.
    await expectRejects(db.transaction().execute((tx) => tx.set('a', i64(1)), { idempotencyKey: 'x\uD800' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.transaction().execute((tx) => tx.set('b', i64(1)), { idempotencyKey: 'x\uDBFF' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.exists('a') || db.exists('b')).toBe(false);
  });

  it('an idempotent transaction with no writes still records its key', async () => {
    const db = await sandbox.open();
    const a = await db.transaction().execute(() => 1, { idempotencyKey: 'noop' });
    const b = await db.transaction().execute(() => 2, { idempotencyKey: 'noop' });
    expect(a.outcome).toBe('applied');
    expect(b.outcome).toBe('duplicate');
    expect(b.commitSeq).toBe(a.commitSeq);
    expect(b.firstEventId).toBeNull();
  });
});

describe('bad input fails its own transaction alone', () => {
  const bad: [string, (tx: Tx) => void][] = [
    ['a key over 511 bytes', (tx) => tx.set('k'.repeat(512), i64(1))],
    ['new Value()', (tx) => tx.set('bx', new (Value as unknown as new () => Value)())],
    ['Object.create(Value.prototype)', (tx) => tx.set('bx', Object.create(Value.prototype) as Value)],
    ['an array holding a fake Value', (tx) => tx.set('bx', array([Object.create(Value.prototype) as Value]))],
    ['a NaN payload', (tx) => tx.log('t', { n: NaN })],
  ];

  // After a group of several commits, the commits of the same turn share one
  // hand-over to the writer: a bad one there must not take the others down.
  it.each(bad)('%s, in the same turn as valid transactions: only it fails, every promise settles, close returns', async (_name, badWrite) => {
    const db = await sandbox.open();
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => db.transaction().execute((tx) => tx.set(`k${i}`, i64(i)))));
      const before = db.commitSeq;
      const settled = await Promise.allSettled([
        db.transaction().execute((tx) => tx.set('ok1', i64(round))),
        db.transaction().execute((tx) => {
          tx.set('bad', i64(1));
          badWrite(tx);
        }),
        db.transaction().execute((tx) => {
          throw 'a string, not an Error';
        }),
        db.transaction().execute((tx) => tx.set('ok2', i64(round))),
      ]);
      expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
      const err = (settled[1] as PromiseRejectedResult).reason as AthanorError;
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.code).toBe('ERR_INVALID_ARGUMENT');
      expect((settled[2] as PromiseRejectedResult).reason).toBe('a string, not an Error');
      expect(db.get('ok1').asI64()).toBe(BigInt(round));
      expect(db.get('ok2').asI64()).toBe(BigInt(round));
      expect(db.exists('bad')).toBe(false);
      expect(db.commitSeq).toBe(before + 2n);
    }
    await db.close();
  });
});

describe('retrying under conflicts', () => {
  // Each attempt conflicts because another handle commits to the key after the
  // attempt read it: the database advances every time, so the transaction keeps
  // its place in the retry turn instead of giving up after maxAttempts.
  it('attempts made while holding the retry turn do not count against maxAttempts', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    await db.transaction().execute((tx) => tx.set('hot', i64(0)));
    let calls = 0;
    const r = await db.transaction().execute(
      (tx) => {
        calls++;
        const v = tx.get('hot').asI64();
        if (calls <= 6) other.transaction().executeSync((t2) => t2.update('hot', (x) => i64(x!.asI64() + 100n)));
        tx.set('hot', i64(v + 1n));
      },
      { maxAttempts: 3 },
    );
    expect(calls).toBe(7);
    expect(r).toMatchObject({ outcome: 'applied', attempts: 7 });
    expect(db.get('hot').asI64()).toBe(601n);
  });
});

describe('idempotency keys racing their original', () => {
  // Three transactions on one snapshot: two submissions of one transfer (a client
  // retrying while the first is in flight) and another change to the account.
  // Both twins conflict; the first re-runs and applies; the second must then find
  // the key on its re-run's snapshot, before its preflight and callback.
  it('a twin re-run after a conflict answers duplicate with the original result', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    await db.transaction().execute((tx) => {
      tx.set('acct:a', i64(100));
      tx.set('acct:b', i64(0));
    });
    const runs = { first: 0, second: 0 };
    const transfer = (name: 'first' | 'second') =>
      db
        .transaction()
        .requireMin('acct:a', 60)
        .execute(
          (tx) => {
            const n = ++runs[name];
            const a = tx.get('acct:a').asI64();
            if (a < 60n) throw new Error('insufficient funds');
            // On its first attempt, another transaction takes 10 from the account after this one read it.
            if (n === 1) other.transaction().executeSync((t) => t.update('acct:a', (v) => i64(v!.asI64() - 10n)));
            tx.set('acct:a', i64(a - 60n));
            tx.update('acct:b', (v) => i64(v!.asI64() + 60n));
            tx.log('transferred', { amount: 60 });
            return name;
          },
          { idempotencyKey: 'transfer-1' },
        );
    const [first, second] = await Promise.all([transfer('first'), transfer('second')]);
    expect(first).toMatchObject({ outcome: 'applied', value: 'first', attempts: 2, eventCount: 1 });
    expect(second).toEqual({ outcome: 'duplicate', value: undefined, commitSeq: first.commitSeq, firstEventId: first.firstEventId, eventCount: 1, attempts: 1 });
    expect(runs).toEqual({ first: 2, second: 1 });
    expect(db.get('acct:a').asI64()).toBe(20n);
    expect(db.get('acct:b').asI64()).toBe(60n);
    expect(db.events.tail(10, { type: 'transferred' })).toHaveLength(1);
  });

  it('a twin whose original commits after its snapshot is answered duplicate by the writer, not a conflict', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    await db.transaction().execute((tx) => tx.set('acct:a', i64(100)));
    const pay = (tx: Tx) => {
      tx.set('acct:a', i64(tx.get('acct:a').asI64() - 60n));
      tx.log('paid', {});
    };
    let calls = 0;
    let original: CommitResult | undefined;
    const twin = await db.transaction().execute(
      (tx) => {
        calls++;
        pay(tx);
        // The original lands between this attempt's read and its commit.
        original = other.transaction().executeSync(pay, { idempotencyKey: 'pay-1' });
      },
      { idempotencyKey: 'pay-1' },
    );
    expect(calls).toBe(1);
    expect(original).toMatchObject({ outcome: 'applied' });
    expect(twin).toEqual({ outcome: 'duplicate', value: undefined, commitSeq: original!.commitSeq, firstEventId: original!.firstEventId, eventCount: 1, attempts: 1 });
    expect(db.get('acct:a').asI64()).toBe(40n);
  });
});

describe('db.idempotency.get', () => {
  it('returns the original outcome of a key, and undefined for an unknown key', async () => {
    const db = await sandbox.open();
    expect(db.idempotency.get('order-1')).toBeUndefined();
    const before = Date.now();
    const r = await db.transaction().execute((tx) => {
      tx.set('x', i64(1));
      tx.log('a', {});
      tx.log('b', {});
    }, { idempotencyKey: 'order-1' });
    const after = Date.now();
    const rec = db.idempotency.get('order-1')!;
    expect(rec).toEqual({ commitSeq: r.commitSeq, firstEventId: r.firstEventId, eventCount: 2, committedAt: rec.committedAt });
    expect(rec.committedAt).toBeGreaterThanOrEqual(before);
    expect(rec.committedAt).toBeLessThanOrEqual(after);
    expect(db.events.get(r.firstEventId!)!.at).toBe(rec.committedAt);
    const quiet = await db.transaction().execute(() => undefined, { idempotencyKey: 'no-events' });
    expect(db.idempotency.get('no-events')).toMatchObject({ commitSeq: quiet.commitSeq, firstEventId: null, eventCount: 0 });
    expect(db.idempotency.get('order-2')).toBeUndefined();
  });

  it('refuses keys execute() would refuse, with ERR_INVALID_ARGUMENT', async () => {
    const db = await sandbox.open();
    for (const key of ['', 'x'.repeat(257), 'lone \uD800', 5, null, undefined]) {
      expectThrows(() => db.idempotency.get(key as string), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    }
  });

  it('forgets a key once it is older than the window, and the key then applies as new', async () => {
    const db = await sandbox.open(undefined, { idempotencyWindowMs: 1 });
    const first = await db.transaction().execute((tx) => tx.log('a', {}), { idempotencyKey: 'k' });
    const committedAt = db.events.get(first.firstEventId!)!.at;
    while (Date.now() <= committedAt + 2) {
      // The clock must pass the window; nothing else is awaited here.
    }
    expect(db.idempotency.get('k')).toBeUndefined();
    const again = await db.transaction().execute((tx) => tx.log('a', {}), { idempotencyKey: 'k' });
    expect(again.outcome).toBe('applied');
    expect(again.commitSeq).toBeGreaterThan(first.commitSeq);
  });
});
