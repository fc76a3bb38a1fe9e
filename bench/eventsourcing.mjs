// eventsourcing: conflict-free counters and stream appends with expected versions, against
// lmdb-js doing the same by hand inside its transactions.
//
// Counts per round (BENCH_QUICK=1 / full):
//   hot_counter    2,000 / 20,000 transactions, 64 in flight, all incrementing one key
//   stream_append  2,000 / 20,000 appends, 64 in flight, over 1,000 streams, each with the
//                  expected version its caller read just before (a mismatch re-reads and retries)
//   rounds         5 / 5 (BENCH_ROUNDS overrides); each metric reports the median round per side.
// Every round of every side opens a fresh directory under os.tmpdir() and removes it afterwards;
// athanor's database is closed before the next side runs. Peer (configured in _peers.mjs):
// lmdb-js in its default overlappingSync mode, each transaction awaited until `flushed`
// (durable, like athanor's default 'full').
import { join } from 'node:path';
import { Athanor, WrongExpectedVersionError } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';
import { LMDB, openLmdbEventSourcing, peerVersions } from './_peers.mjs';
import { runQueue } from './_es_queue.mjs';

export const description = 'event sourcing: 64 in-flight increments of one hot key (tx.add), stream appends with expected versions over 1,000 streams; vs lmdb-js by hand';

const COUNTS = QUICK ? { hot: 2_000, appends: 2_000, rounds: 5 } : { hot: 20_000, appends: 20_000, rounds: 5 };
if (process.env.BENCH_ROUNDS) COUNTS.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);

const WARMUP = 20;
const CONCURRENCY = 64;
const STREAMS = 1000;

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

async function withOurs(fn) {
  const dir = freshDir('ours');
  const db = await Athanor.open(join(dir, 'db'));
  try {
    return await fn(db);
  } finally {
    await db.close();
    removeDir(dir);
  }
}

async function withLmdb(fn) {
  const dir = freshDir('lmdb');
  const l = openLmdbEventSourcing(join(dir, 'db'));
  try {
    return await fn(l);
  } finally {
    await l.root.close();
    removeDir(dir);
  }
}

async function windowed(n, start, fn) {
  let next = start;
  const end = start + n;
  const worker = async () => {
    while (next < end) await fn(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

// ---------------------------------------------------------------- hot_counter

async function hotCounter() {
  const n = COUNTS.hot;
  let conflicts = 0;
  const rates = await interleave('hot_counter', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        const inc = async () => {
          const r = await db.transaction().execute((tx) => tx.add('hits', 1n));
          conflicts += r.attempts - 1;
        };
        for (let i = 0; i < WARMUP; i++) await inc();
        const s = await timed(() => windowed(n, 0, inc));
        check(db.get('hits').asI64() === BigInt(WARMUP + n), 'ours hot_counter value');
        return n / s;
      }),
    [LMDB.label]: () =>
      withLmdb(async (l) => {
        const inc = () => LMDB.durable(l.root, l.root.transaction(() => l.state.put('hits', (l.state.get('hits') ?? 0) + 1)));
        for (let i = 0; i < WARMUP; i++) await inc();
        const s = await timed(() => windowed(n, 0, inc));
        check(l.state.get('hits') === WARMUP + n, 'lmdb hot_counter value');
        return n / s;
      }),
  });
  check(conflicts === 0, `tx.add conflicted ${conflicts} times`);
  emit('eventsourcing.hot_counter', 'ops/s', 'higher', median(rates.ours), LMDB.label, median(rates[LMDB.label]), { inFlight: CONCURRENCY });
}

// ---------------------------------------------------------------- stream_append

const streamOf = (i) => 'order-' + (i % STREAMS);

async function streamAppend() {
  const n = COUNTS.appends;
  const retries = { ours: 0, lmdb: 0 };
  const rates = await interleave('stream_append', COUNTS.rounds, {
    ours: () =>
      withOurs(async (db) => {
        const append = async (i) => {
          const s = streamOf(i);
          for (;;) {
            const expectedVersion = db.streams.version(s);
            try {
              await db.transaction().execute((tx) => tx.append(s, { type: 'placed', payload: { i, amount: 5 } }, { expectedVersion }));
              return;
            } catch (e) {
              if (!(e instanceof WrongExpectedVersionError)) throw e;
              retries.ours++;
            }
          }
        };
        for (let i = 0; i < WARMUP; i++) await append(i);
        const s = await timed(() => windowed(n, WARMUP, append));
        check(db.events.lastId === BigInt(WARMUP + n), 'ours stream_append event count');
        check(db.streams.version(streamOf(0)) === Math.ceil((WARMUP + n) / STREAMS), 'ours stream_append stream version');
        return n / s;
      }),
    [LMDB.label]: () =>
      withLmdb(async (l) => {
        let lastId = 0;
        const append = async (i) => {
          const s = streamOf(i);
          for (;;) {
            const expected = l.streamHeads.get(s) ?? 0;
            // lmdb-js resolves the transaction with what its callback returned.
            const committed = l.root.transaction(() => {
              const current = l.streamHeads.get(s) ?? 0;
              if (current !== expected) return false;
              const id = ++lastId;
              l.events.put(id, { type: 'placed', payload: { i, amount: 5 } });
              l.streamEvents.put([s, current + 1], id);
              l.streamHeads.put(s, current + 1);
              return true;
            });
            let applied = false;
            await LMDB.durable(l.root, committed.then((ok) => (applied = ok)));
            if (applied) return;
            retries.lmdb++;
          }
        };
        for (let i = 0; i < WARMUP; i++) await append(i);
        const s = await timed(() => windowed(n, WARMUP, append));
        check(l.events.getCount() === WARMUP + n, 'lmdb stream_append event count');
        return n / s;
      }),
  });
  log(`  stream_append retries after a wrong expected version: ours ${retries.ours}, lmdb-js ${retries.lmdb}`);
  emit('eventsourcing.stream_append', 'ops/s', 'higher', median(rates.ours), LMDB.label, median(rates[LMDB.label]), { streams: STREAMS, inFlight: CONCURRENCY });
}

// ---------------------------------------------------------------- entry

export async function run() {
  log(`peers: ${peerVersions()}`);
  log(`eventsourcing: ${QUICK ? 'QUICK' : 'full'} mode, ${COUNTS.rounds} rounds; hot_counter ${fmt(COUNTS.hot)} ops, stream_append ${fmt(COUNTS.appends)} appends, x${CONCURRENCY} in flight`);
  await hotCounter();
  await streamAppend();
  // The queue metric lives in its own module (it spawns worker processes); it emits
  // `eventsourcing.queue` itself.
  await runQueue(QUICK);
}
