import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, i64, type Athanor, type CommitNotice, type StoredEvent } from '../dist/index.js';
import { Sandbox } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

/** Logs `n` events of alternating types a/b/c with payload {i}, `perTx` per transaction. */
async function logEvents(db: Athanor, n: number, perTx = 100): Promise<void> {
  const types = ['a', 'b', 'c'];
  for (let start = 0; start < n; start += perTx) {
    await db.transaction().execute((tx) => {
      for (let i = start; i < Math.min(n, start + perTx); i++) tx.log(types[i % 3]!, { i });
    });
  }
}

const ids = (es: Iterable<StoredEvent>): bigint[] => [...es].map((e) => e.id);
const range = (a: number, b: number): bigint[] => Array.from({ length: b - a + 1 }, (_, k) => BigInt(a + k));

describe('event ids', () => {
  it('are dense, start at 1n, and follow commit order', async () => {
    const db = await sandbox.open();
    expect(db.events.lastId).toBe(0n);
    expect([...db.events.read()]).toEqual([]);
    await logEvents(db, 25, 4);
    expect(db.events.lastId).toBe(25n);
    const all = [...db.events.read()];
    expect(ids(all)).toEqual(range(1, 25));
    expect(all.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    // commitSeq never decreases along the log
    for (let k = 1; k < all.length; k++) expect(all[k]!.commitSeq >= all[k - 1]!.commitSeq).toBe(true);
    expect(db.verify()).toEqual({ events: 25 });
  });

  it('are not reused after close and reopen', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    await logEvents(db, 5);
    await db.close();
    const again = await sandbox.open(dir);
    expect(again.events.lastId).toBe(5n);
    const r = await again.transaction().execute((tx) => tx.log('after', {}));
    expect(r.firstEventId).toBe(6n);
    expect(ids(again.events.read())).toEqual(range(1, 6));
  });
});

describe('reading events', () => {
  it('by range: from and to are inclusive', async () => {
    const db = await sandbox.open();
    await logEvents(db, 30);
    expect(ids(db.events.read({ from: 5n, to: 9n }))).toEqual(range(5, 9));
    expect(ids(db.events.read({ from: 5, to: 5 }))).toEqual([5n]);
    expect(ids(db.events.read({ from: 28 }))).toEqual(range(28, 30));
    expect(ids(db.events.read({ to: 3 }))).toEqual(range(1, 3));
    expect(ids(db.events.read({ from: 0 }))).toEqual(range(1, 30));
    expect(ids(db.events.read({ from: 31 }))).toEqual([]);
    expect(ids(db.events.read({ from: 10, to: 9 }))).toEqual([]);
    expect(ids(db.events.read({ from: 25, to: 1000 }))).toEqual(range(25, 30));
  });

  it('by type, optionally within a range', async () => {
    const db = await sandbox.open();
    await logEvents(db, 30);
    const bs = [...db.events.read({ type: 'b' })];
    expect(bs.every((e) => e.type === 'b')).toBe(true);
    expect(ids(bs)).toEqual(range(1, 30).filter((id) => (id - 1n) % 3n === 1n));
    expect(ids(db.events.read({ type: 'a', from: 4, to: 13 }))).toEqual([4n, 7n, 10n, 13n]);
    expect(ids(db.events.read({ type: 'c', reverse: true, limit: 2 }))).toEqual([30n, 27n]);
    expect(ids(db.events.read({ type: 'nope' }))).toEqual([]);
    // A type that is a prefix of another does not match it.
    await db.transaction().execute((tx) => {
      tx.log('ab', {});
      tx.log('a', {});
    });
    expect(ids(db.events.read({ type: 'a', from: 30 }))).toEqual([32n]);
    expect(ids(db.events.read({ type: 'ab' }))).toEqual([31n]);
    // A NUL cannot be part of a type: asking for one never returns another type's events.
    expect(() => [...db.events.read({ type: 'a\0' })]).toThrow(InvalidArgumentError);
    expect(() => db.events.tail(3, { type: 'c\0\0' })).toThrow(InvalidArgumentError);
  });

  it('in reverse, with limits', async () => {
    const db = await sandbox.open();
    await logEvents(db, 20);
    expect(ids(db.events.read({ reverse: true }))).toEqual(range(1, 20).reverse());
    expect(ids(db.events.read({ reverse: true, limit: 3 }))).toEqual([20n, 19n, 18n]);
    expect(ids(db.events.read({ reverse: true, from: 5, to: 8 }))).toEqual([8n, 7n, 6n, 5n]);
    expect(ids(db.events.read({ limit: 4 }))).toEqual(range(1, 4));
    expect(ids(db.events.read({ limit: 0 }))).toEqual([]);
    expect(ids(db.events.read({ from: 18, limit: 10 }))).toEqual([18n, 19n, 20n]);
  });

  it('pages across more than 1024 events in every direction', async () => {
    const db = await sandbox.open(undefined, { durability: 'none' });
    const N = 3300;
    await logEvents(db, N, 500);
    expect(ids(db.events.read())).toEqual(range(1, N));
    expect(ids(db.events.read({ reverse: true }))).toEqual(range(1, N).reverse());
    expect(ids(db.events.read({ from: 1000, to: 2100 }))).toEqual(range(1000, 2100));
    expect(ids(db.events.read({ from: 1000, to: 2100, reverse: true }))).toEqual(range(1000, 2100).reverse());
    expect(ids(db.events.read({ limit: 2049 }))).toEqual(range(1, 2049));
    expect(ids(db.events.read({ limit: 1025, reverse: true }))).toEqual(range(N - 1024, N).reverse());
    const as = ids(db.events.read({ type: 'a' }));
    expect(as).toEqual(range(1, N).filter((id) => (id - 1n) % 3n === 0n));
    expect(ids(db.events.read({ type: 'a', reverse: true }))).toEqual([...as].reverse());
    expect(ids(db.events.read({ type: 'b', limit: 1050 }))).toEqual(range(1, N).filter((id) => (id - 1n) % 3n === 1n).slice(0, 1050));
    // Reads are lazy: taking the first few does not need the rest.
    const it = db.events.read();
    expect(it.next().value?.id).toBe(1n);
    expect(it.next().value?.id).toBe(2n);
  });

  it('tail(n) returns the newest n, newest first', async () => {
    const db = await sandbox.open();
    expect(db.events.tail(5)).toEqual([]);
    await logEvents(db, 10);
    expect(ids(db.events.tail(3))).toEqual([10n, 9n, 8n]);
    expect(ids(db.events.tail(100))).toEqual(range(1, 10).reverse());
    expect(ids(db.events.tail(2, { type: 'a' }))).toEqual([10n, 7n]);
    expect(db.events.tail(0)).toEqual([]);
  });

  it('get(id) returns one event or undefined', async () => {
    const db = await sandbox.open();
    await logEvents(db, 5);
    const e = db.events.get(3n)!;
    expect(e).toMatchObject({ id: 3n, type: 'c', payload: { i: 2 } });
    expect(db.events.get(3)!.id).toBe(3n);
    expect(db.events.get(0)).toBeUndefined();
    expect(db.events.get(6n)).toBeUndefined();
    expect(db.events.get(2n ** 64n - 1n)).toBeUndefined();
  });

  it('JSON payloads come back equal and bytes payloads come back as Uint8Array', async () => {
    const db = await sandbox.open();
    const payloads: unknown[] = [null, 0, 'str', [1, 'two', { three: 3 }], { nested: { deep: ['😀', '漢'] }, n: -1.25, t: true }, {}];
    const raw = new Uint8Array([0, 255, 1, 128]);
    const big = new Uint8Array(200_000).map((_, i) => i & 0xff);
    await db.transaction().execute((tx) => {
      for (const p of payloads) tx.log('json', p);
      tx.log('bytes', raw);
      tx.log('bytes', Buffer.from('a buffer'));
      tx.log('bytes', new Uint8Array(0));
      tx.log('bytes', big);
    });
    raw[0] = 42; // the logged bytes were copied at log() time
    const all = [...db.events.read()];
    expect(all.slice(0, payloads.length).map((e) => e.payload)).toEqual(payloads);
    const bs = all.slice(payloads.length).map((e) => e.payload as Uint8Array);
    for (const b of bs) expect(b).toBeInstanceOf(Uint8Array);
    expect([...bs[0]!]).toEqual([0, 255, 1, 128]);
    expect(Buffer.from(bs[1]!).toString()).toBe('a buffer');
    expect(bs[2]!.length).toBe(0);
    expect(Buffer.compare(Buffer.from(bs[3]!), Buffer.from(big))).toBe(0);
  });

  it('at is the commit time in milliseconds since the epoch', async () => {
    const db = await sandbox.open();
    const before = Date.now();
    await db.transaction().execute((tx) => {
      tx.log('x', {});
      tx.log('y', {});
    });
    const after = Date.now();
    const [x, y] = [...db.events.read()];
    expect(Number.isInteger(x!.at)).toBe(true);
    expect(x!.at).toBeGreaterThanOrEqual(before - 5);
    expect(x!.at).toBeLessThanOrEqual(after + 5);
    expect(y!.at).toBe(x!.at); // one commit, one timestamp
  });
});

describe('subscribing to commits', () => {
  function nextNotice(db: Athanor, pred: (n: CommitNotice) => boolean = () => true): { promise: Promise<CommitNotice>; unsubscribe: () => void } {
    let unsubscribe!: () => void;
    const promise = new Promise<CommitNotice>((resolve) => {
      unsubscribe = db.events.subscribe((n) => {
        if (pred(n)) resolve(n);
      });
    });
    return { promise, unsubscribe };
  }

  it('a listener hears about each commit with its commit seq and last event id', async () => {
    const db = await sandbox.open();
    const notices: CommitNotice[] = [];
    const unsubscribe = db.events.subscribe((n) => notices.push(n));
    const waiting = nextNotice(db, (n) => n.commitSeq === 2n);
    await db.transaction().execute((tx) => tx.log('a', {}));
    await db.transaction().execute((tx) => {
      tx.set('k', i64(1));
      tx.log('b', {});
      tx.log('c', {});
    });
    const n = await waiting.promise;
    expect(n).toEqual({ commitSeq: 2n, lastEventId: 3n });
    expect(notices.at(-1)).toEqual({ commitSeq: 2n, lastEventId: 3n });
    expect(notices[0]).toEqual({ commitSeq: 1n, lastEventId: 1n });
    waiting.unsubscribe();
    unsubscribe();
  });

  it('a listener hears about commits made through another handle', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const other = await sandbox.open(dir);
    const waiting = nextNotice(db);
    await other.transaction().execute((tx) => tx.log('from-other', {}));
    expect(await waiting.promise).toEqual({ commitSeq: 1n, lastEventId: 1n });
    expect(db.events.tail(1)[0]!.type).toBe('from-other');
    waiting.unsubscribe();
  });

  it('unsubscribe stops notices', async () => {
    const db = await sandbox.open();
    let count = 0;
    const unsubscribe = db.events.subscribe(() => count++);
    await db.transaction().execute((tx) => tx.log('a', {}));
    expect(count).toBe(1);
    unsubscribe();
    unsubscribe(); // idempotent
    // A second listener proves the later commits were delivered.
    const probe = nextNotice(db, (n) => n.commitSeq === 3n);
    await db.transaction().execute((tx) => tx.log('b', {}));
    await db.transaction().execute((tx) => tx.log('c', {}));
    await probe.promise;
    expect(count).toBe(1);
    probe.unsubscribe();
  });

  it('a throwing listener does not break commits or other listeners', async () => {
    const db = await sandbox.open();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const unsubscribe = db.events.subscribe(() => {
        throw new Error('listener failure');
      });
      const probe = nextNotice(db, (n) => n.commitSeq === 3n);
      for (let i = 0; i < 3; i++) {
        const r = await db.transaction().execute((tx) => {
          tx.update('n', (v) => i64((v?.asI64() ?? 0n) + 1n));
          tx.log('tick', { i });
        });
        expect(r.outcome).toBe('applied');
      }
      expect(await probe.promise).toEqual({ commitSeq: 3n, lastEventId: 3n });
      expect(db.get('n').asI64()).toBe(3n);
      await new Promise((r) => setImmediate(r));
      expect(warnings.some((m) => m.includes('listener failure'))).toBe(true);
      unsubscribe();
      probe.unsubscribe();
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('whatever a listener throws, the listeners after it still get the notice', async () => {
    const db = await sandbox.open();
    const onWarning = (): void => undefined;
    process.on('warning', onWarning);
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('trap');
        },
        getPrototypeOf() {
          throw new Error('trap');
        },
      },
    );
    const unsubscribers = [Object.create(null), hostile, 'a string', undefined, Symbol('s')].map((thrown) =>
      db.events.subscribe(() => {
        throw thrown;
      }),
    );
    try {
      const heard: bigint[] = [];
      const unsubscribe = db.events.subscribe((n) => heard.push(n.commitSeq));
      for (let i = 0; i < 3; i++) await db.transaction().execute((tx) => tx.log('tick', { i }));
      // Notices are delivered before the commit's promise continues.
      expect(heard).toEqual([1n, 2n, 3n]);
      unsubscribe();
    } finally {
      for (const u of unsubscribers) u();
      process.off('warning', onWarning);
    }
  });
});

describe('bigint in payloads', () => {
  const payload = {
    max: 2n ** 63n - 1n,
    min: -(2n ** 63n),
    huge: 2n ** 100n,
    unsafe: 2n ** 53n + 1n,
    safe: 2n ** 53n - 1n,
    small: 42n,
    float: 2 ** 60,
    frac: 1.25,
    digits: '123456789012345678901234567890',
    list: [1n, 2n ** 64n],
  };
  const decoded = {
    max: 2n ** 63n - 1n,
    min: -(2n ** 63n),
    huge: 2n ** 100n,
    unsafe: 2n ** 53n + 1n,
    safe: 2 ** 53 - 1,
    small: 42,
    float: 2 ** 60,
    frac: 1.25,
    digits: '123456789012345678901234567890',
    list: [1, 2n ** 64n],
  };

  it('round-trip losslessly through read, tail and get: unsafe integers as bigint, the rest as numbers', async () => {
    const db = await sandbox.open();
    const r = await db.transaction().execute((tx) => tx.log('big', payload));
    expect(db.events.get(r.firstEventId!)!.payload).toEqual(decoded);
    expect(db.events.tail(1)[0]!.payload).toEqual(decoded);
    expect([...db.events.read({ type: 'big' })][0]!.payload).toEqual(decoded);
    const snap = db.snapshot();
    expect([...snap.events()][0]!.payload).toEqual(decoded);
    snap.close();
  });

  it('reach TypeScript processors as the same values, and declarative projections as exact SQLite INTEGERs', async () => {
    const db = await sandbox.open();
    db.sql.exec('CREATE TABLE decl(id INTEGER PRIMARY KEY, max INTEGER, min INTEGER, unsafe INTEGER, small INTEGER, kind TEXT, raw TEXT)');
    await db.transaction().execute((tx) => tx.log('big', payload));
    const seen: unknown[] = [];
    const ts = db.processor('ts', { handlers: [{ eventType: 'big', handle: (_sql, e) => void seen.push(e.payload) }] });
    await ts.catchUp();
    expect(seen).toEqual([decoded]);
    const decl = db.projection({
      name: 'decl',
      on: { big: [{ sql: 'INSERT INTO decl VALUES (:id, :max, :min, :unsafe, :small, typeof(:max), :raw)', params: { id: '@id', max: '$.max', min: '$.min', unsafe: '$.unsafe', small: '$.small', raw: '$' } }] },
    });
    await decl.catchUp();
    expect(db.sql.all('SELECT max, min, unsafe, small, kind FROM decl')).toEqual([{ max: 2n ** 63n - 1n, min: -(2n ** 63n), unsafe: 2n ** 53n + 1n, small: 42, kind: 'integer' }]);
    // SQL's own JSON functions read the stored payload's digits exactly.
    expect(db.sql.get("SELECT json_extract(raw, '$.max') AS max, json_extract(raw, '$.unsafe') AS unsafe FROM decl")).toEqual({ max: 2n ** 63n - 1n, unsafe: 2n ** 53n + 1n });
  });

  it('vector metadata keeps them too', async () => {
    const db = await sandbox.open();
    const c = db.vectors.create('docs', { dimension: 2, metric: 'l2' });
    await db.transaction().execute((tx) => tx.vectors('docs').upsert('d1', [1, 0], { amount: 2n ** 63n - 1n, n: 3n }));
    expect(c.get('d1')!.metadata).toEqual({ amount: 2n ** 63n - 1n, n: 3 });
  });
});
