// core: durable transactions, bulk append and point reads, against lmdb-js and better-sqlite3.
//
// Counts per round (BENCH_QUICK=1 / full):
//   tx_seq         300 / 2,000   transactions awaited one by one
//   tx_concurrent  2,000 / 20,000 transactions, 64 in flight
//   append_batch   20,000 / 100,000 events in one transaction
//   read           200,000 / 1,000,000 random point reads over 10,000 preloaded keys
//   rounds         5 / 5 (BENCH_ROUNDS overrides); each metric reports the median round per side.
// Every round of every side opens a fresh directory under os.tmpdir() and removes it afterwards;
// athanor's database is closed before the next side runs, so nothing of ours runs meanwhile.
// Peers (configured in _peers.mjs): lmdb-js in its default overlappingSync mode, each write
// awaited until `flushed` (durable, like athanor's default); lmdb-js with overlappingSync: false
// (a labelled variant); better-sqlite3 with WAL + synchronous = FULL (tx_seq only: it is synchronous).
import { join } from 'node:path';
import { Athanor, i64 } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, prng, removeDir, timed } from './_lib.mjs';
import { LMDB, LMDB_SYNC, SQLITE, openLmdb, openSqlite, peerVersions } from './_peers.mjs';

export const description = 'durable state+event transactions (sequential, 64 concurrent), 100k-event append, typed point reads; vs lmdb-js and better-sqlite3';

const COUNTS = QUICK
  ? { txSeq: 300, txConcurrent: 2_000, appendBatch: 20_000, read: 200_000, rounds: 5 }
  : { txSeq: 2_000, txConcurrent: 20_000, appendBatch: 100_000, read: 1_000_000, rounds: 5 };
if (process.env.BENCH_ROUNDS) COUNTS.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);

const WARMUP = 20; // untimed transactions per side per round (JIT, first page allocations)
const CONCURRENCY = 64;
const ACCOUNTS = 1000;
const READ_KEYS = 10_000;

const stateKey = (i) => 'acct:' + (i % ACCOUNTS);

// ---------------------------------------------------------------- openers

async function withOurs(fn) {
  const dir = freshDir('ours');
  const db = await Athanor.open(join(dir, 'db')); // durability 'full' (default): resolves after fsync
  try {
    return await fn(db);
  } finally {
    await db.close();
    removeDir(dir);
  }
}

/** A fresh lmdb-js database configured as `variant` (see _peers.mjs). */
async function withLmdb(variant, fn) {
  const dir = freshDir('lmdb');
  const l = openLmdb(variant, join(dir, 'db'));
  try {
    return await fn({ ...l, variant });
  } finally {
    await l.root.close();
    removeDir(dir);
  }
}

async function withSqlite(fn) {
  const dir = freshDir('sqlite');
  const db = openSqlite(join(dir, 'db.sqlite'), SQLITE.durable);
  db.exec('CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID');
  db.exec('CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL)');
  try {
    return await fn(db);
  } finally {
    db.close();
    removeDir(dir);
  }
}

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

// ---------------------------------------------------------------- tx (shared by tx_seq / tx_concurrent)

const oursTx = (db, i) =>
  db.transaction().execute((tx) => {
    tx.set(stateKey(i), i64(i));
    tx.log('deposit', { i, amount: 5 });
  });

/** One lmdb-js transaction, resolved once durable (see LMDB.durable). */
const lmdbTx = ({ root, state, events, variant }, i) =>
  variant.durable(
    root,
    root.transaction(() => {
      state.put(stateKey(i), i);
      events.put(i + 1, { type: 'deposit', payload: { i, amount: 5 } });
    }),
  );

async function windowed(n, start, fn) {
  let next = start;
  const end = start + n;
  const worker = async () => {
    while (next < end) await fn(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/** The two lmdb-js variants as interleave() sides, each running `body` on a fresh database. */
function lmdbSides(body) {
  return {
    [LMDB.label]: () => withLmdb(LMDB, body),
    [LMDB_SYNC.label]: () => withLmdb(LMDB_SYNC, body),
  };
}

function emitLmdb(metric, unit, ours, rates) {
  for (const v of [LMDB, LMDB_SYNC]) emit(metric, unit, 'higher', ours, v.label, median(rates[v.label]));
}

async function txSeq() {
  const n = COUNTS.txSeq;
  const rates = await interleave('tx_seq', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        for (let i = 0; i < WARMUP; i++) await oursTx(db, i);
        const s = await timed(async () => {
          for (let i = WARMUP; i < WARMUP + n; i++) await oursTx(db, i);
        });
        check(db.events.lastId === BigInt(WARMUP + n), 'ours tx_seq event count');
        return n / s;
      }),
    ...lmdbSides(async (l) => {
      for (let i = 0; i < WARMUP; i++) await lmdbTx(l, i);
      const s = await timed(async () => {
        for (let i = WARMUP; i < WARMUP + n; i++) await lmdbTx(l, i);
      });
      check(l.events.getCount() === WARMUP + n, 'lmdb tx_seq event count');
      return n / s;
    }),
    [SQLITE.label]: () =>
      withSqlite(async (db) => {
        const up = db.prepare('INSERT INTO state (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v');
        const ins = db.prepare('INSERT INTO events (type, payload) VALUES (?, ?)');
        const tx = db.transaction((i) => {
          up.run(stateKey(i), i);
          ins.run('deposit', JSON.stringify({ i, amount: 5 }));
        });
        for (let i = 0; i < WARMUP; i++) tx(i);
        const s = await timed(async () => {
          for (let i = WARMUP; i < WARMUP + n; i++) tx(i);
        });
        check(db.prepare('SELECT count(*) AS c FROM events').get().c === WARMUP + n, 'sqlite tx_seq event count');
        return n / s;
      }),
  });
  const ours = median(rates.ours);
  emitLmdb('core.tx_seq', 'ops/s', ours, rates);
  emit('core.tx_seq', 'ops/s', 'higher', ours, SQLITE.label, median(rates[SQLITE.label]));
}

async function txConcurrent() {
  const n = COUNTS.txConcurrent;
  const rates = await interleave('tx_concurrent', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        for (let i = 0; i < WARMUP; i++) await oursTx(db, i);
        const s = await timed(() => windowed(n, WARMUP, (i) => oursTx(db, i)));
        check(db.events.lastId === BigInt(WARMUP + n), 'ours tx_concurrent event count');
        return n / s;
      }),
    ...lmdbSides(async (l) => {
      for (let i = 0; i < WARMUP; i++) await lmdbTx(l, i);
      const s = await timed(() => windowed(n, WARMUP, (i) => lmdbTx(l, i)));
      check(l.events.getCount() === WARMUP + n, 'lmdb tx_concurrent event count');
      return n / s;
    }),
  });
  emitLmdb('core.tx_concurrent', 'ops/s', median(rates.ours), rates);
}

// ---------------------------------------------------------------- append_batch

async function appendBatch() {
  const n = COUNTS.appendBatch;
  // Same payload objects for both sides; each side serialises them inside the timed region.
  const payloads = Array.from({ length: n }, (_, i) => ({ i, account: 'acct-' + (i % 1000), amount: i % 100 }));
  const rates = await interleave('append_batch', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        await oursTx(db, 0);
        const s = await timed(() =>
          db.transaction().execute((tx) => {
            for (let i = 0; i < n; i++) tx.log('deposit', payloads[i]);
          }),
        );
        check(db.events.lastId === BigInt(n + 1), 'ours append_batch event count');
        return n / s;
      }),
    ...lmdbSides(async (l) => {
      await lmdbTx(l, -1);
      const { root, events, variant } = l;
      const s = await timed(() =>
        variant.durable(
          root,
          root.transaction(() => {
            for (let i = 0; i < n; i++) events.put(i + 1, { type: 'deposit', payload: payloads[i] });
          }),
        ),
      );
      check(events.getCount() === n + 1, 'lmdb append_batch event count');
      return n / s;
    }),
  });
  emitLmdb('core.append_batch', 'events/s', median(rates.ours), rates);
}

// ---------------------------------------------------------------- read

async function read() {
  const n = COUNTS.read;
  const rnd = prng(42);
  const keys = Array.from({ length: n }, () => 'acct:' + Math.floor(rnd() * READ_KEYS));
  const rates = await interleave('read', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        await db.transaction().execute((tx) => {
          for (let i = 0; i < READ_KEYS; i++) tx.set('acct:' + i, i64(i));
        });
        let bad = 0;
        const s = await timed(() => {
          for (let j = 0; j < n; j++) if (db.get(keys[j]).asI64() < 0n) bad++;
        });
        check(bad === 0 && db.get('acct:77').asI64() === 77n, 'ours read values');
        return n / s;
      }),
    [LMDB.label]: () =>
      withLmdb(LMDB, async ({ root, state }) => {
        await root.transaction(() => {
          for (let i = 0; i < READ_KEYS; i++) state.put('acct:' + i, i);
        });
        let bad = 0;
        const s = await timed(() => {
          for (let j = 0; j < n; j++) if (!(state.get(keys[j]) >= 0)) bad++;
        });
        check(bad === 0 && state.get('acct:77') === 77, 'lmdb read values');
        return n / s;
      }),
  });
  emit('core.read', 'reads/s', 'higher', median(rates.ours), LMDB.label, median(rates[LMDB.label]));
}

// ---------------------------------------------------------------- entry

export async function run() {
  log(`peers: ${peerVersions()}`);
  log(
    `core: ${QUICK ? 'QUICK' : 'full'} mode, ${COUNTS.rounds} rounds; tx_seq ${fmt(COUNTS.txSeq)} ops, ` +
      `tx_concurrent ${fmt(COUNTS.txConcurrent)} ops x${CONCURRENCY} in flight, append_batch ${fmt(COUNTS.appendBatch)} events, ` +
      `read ${fmt(COUNTS.read)} reads over ${fmt(READ_KEYS)} keys (per round, per side)`,
  );
  await txSeq();
  await txConcurrent();
  await appendBatch();
  await read();
}
