// replication: the cost of publishing commits to NATS JetStream, how fast a read replica
// applies them and how far behind it trails, and PostgreSQL projections against a
// hand-written `pg` consumer.
//
// Servers: nats-server -js and PostgreSQL 15, started on loopback by the group itself
// (test/fixtures/servers.mjs, the ones the tests use); the group is skipped with a note
// when they are not installed.
// Sizes (BENCH_QUICK=1 / full), each metric its median round (3 rounds, BENCH_ROUNDS overrides):
//   commit_throughput  1,000 / 10,000 commits (8 in flight, durability 'full': every commit
//                      resolves after fsync), publishing on vs the same workload with
//                      publishing off (the peer)
//   replica_apply      1,000 / 10,000 published commits applied by a fresh replica
//   lag_p99_ms         200 / 1,000 sequential commits, each from its resolution on the
//                      primary to visible on a following replica (waitFor)
//   pg_projection      5,000 / 50,000 events, batches of 500, ours in the form the README
//                      recommends for throughput: the declarative action (one INSERT per
//                      event, merged into one multi-row INSERT per batch); the peer
//                      (configured in _peers.mjs) reads the same log in the same batches and
//                      runs one INSERT per event and a cursor UPDATE in one transaction per
//                      batch; each round runs every side twice, A B C C B A (the first side
//                      rotating between rounds), each run in a fresh database
//   pg_projection_handlers  the same, ours as a handler running the peer's very INSERT
// BENCH_REPLICATION=pg_projection runs only the metrics named (comma-separated:
// commit_throughput, replica, pg_projection).
import pg from 'pg';
import { Athanor, i64 } from '../dist/index.js';
import { NatsServer, PgServer, serversMissing } from '../test/fixtures/servers.mjs';
import { QUICK, emit, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';
import { PG, versionOf } from './_peers.mjs';

export const description = 'commits/s with NATS publishing on vs off; replica apply rate and p99 lag; PostgreSQL projection events/s vs a hand-written pg consumer';

const COUNTS = QUICK ? { commits: 1_000, lag: 200, events: 5_000, rounds: 3 } : { commits: 10_000, lag: 1_000, events: 50_000, rounds: 3 };
if (process.env.BENCH_ROUNDS) COUNTS.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
const BATCH = 500;
const ONLY = process.env.BENCH_REPLICATION ? new Set(process.env.BENCH_REPLICATION.split(',').map((m) => m.trim())) : undefined;
const wanted = (metric) => ONLY === undefined || ONLY.has(metric);

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

function tick(n) {
  return (tx) => {
    tx.set(`acct:${n % 100}`, i64(n));
    tx.log('Deposited', { n, account: `acct:${n % 100}`, amount: n });
  };
}

async function work(db, from, count) {
  let next = from;
  let last = 0n;
  const end = from + count;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < end) {
        const r = await db.transaction().execute(tick(next++));
        if (r.commitSeq > last) last = r.commitSeq;
      }
    }),
  );
  return last;
}

let streams = 0;

export async function run() {
  const missing = serversMissing();
  if (missing !== undefined) {
    log(`replication: skipped, ${missing}`);
    return;
  }
  log(`replication: nats-server, PostgreSQL 15, @nats-io/jetstream ${versionOf('@nats-io/jetstream')}, pg ${versionOf('pg')}; ${JSON.stringify(COUNTS)}`);
  const nats = new NatsServer();
  const server = new PgServer();
  await nats.start();
  await server.start();
  try {
    if (wanted('commit_throughput')) await commitThroughput(nats);
    if (wanted('replica')) await replicaApplyAndLag(nats);
    if (wanted('pg_projection')) await pgProjection(server);
  } finally {
    await nats.dispose();
    await server.dispose();
  }
}

async function commitThroughput(nats) {
  const side = (publish) => async () => {
    const dir = freshDir('repl');
    const db = await Athanor.open(dir);
    let publisher;
    try {
      if (publish) {
        const n = ++streams;
        publisher = await db.replication.publish({ servers: nats.url, stream: `B${n}`, subject: `bench.b${n}` });
      }
      await work(db, 1, 20); // warm-up
      const s = await timed(() => work(db, 21, COUNTS.commits));
      check(db.commitSeq === BigInt(COUNTS.commits + 20), 'every commit applied');
      if (publisher) await publisher.waitPublished(db.commitSeq);
      return COUNTS.commits / s;
    } finally {
      await db.close();
      removeDir(dir);
    }
  };
  const r = await interleave('commit_throughput', COUNTS.rounds, { ours: side(true), peer: side(false) });
  emit('replication.commit_throughput', 'commits/s', 'higher', median(r.ours), 'athanor (publishing off)', median(r.peer));
}

async function replicaApplyAndLag(nats) {
  const applyRates = [];
  const lags = [];
  for (let round = 0; round < COUNTS.rounds; round++) {
    const pDir = freshDir('repl-p');
    const rDir = freshDir('repl-r');
    const n = ++streams;
    const primary = await Athanor.open(pDir);
    let replica;
    try {
      const publisher = await primary.replication.publish({ servers: nats.url, stream: `R${n}`, subject: `bench.r${n}` });
      const last = await work(primary, 1, COUNTS.commits);
      await publisher.waitPublished(last);
      let s = 0;
      s = await timed(async () => {
        replica = await Athanor.openReplica(rDir, { servers: nats.url, stream: `R${n}`, durableName: 'bench' });
        await replica.waitFor(last);
      });
      check(replica.commitSeq === last, 'the replica applied every commit');
      applyRates.push(COUNTS.commits / s);
      const ms = [];
      for (let i = 0; i < COUNTS.lag; i++) {
        const c = await primary.transaction().execute(tick(COUNTS.commits + 1 + i));
        const t0 = performance.now();
        await replica.waitFor(c.commitSeq);
        ms.push(performance.now() - t0);
      }
      ms.sort((a, b) => a - b);
      lags.push(ms[Math.min(ms.length - 1, Math.ceil(ms.length * 0.99) - 1)]);
      log(`  replica round ${round + 1}/${COUNTS.rounds}: apply=${Math.round(applyRates.at(-1))} commits/s lag_p99=${lags.at(-1).toFixed(2)} ms`);
    } finally {
      await replica?.close();
      await primary.close();
      removeDir(pDir);
      removeDir(rDir);
    }
  }
  emit('replication.replica_apply', 'commits/s', 'higher', median(applyRates), null, null);
  emit('replication.lag_p99_ms', 'ms', 'lower', median(lags), null, null);
}

async function pgProjection(server) {
  // The log, written once (untimed); each side of each round reads it into a fresh PostgreSQL database.
  const dir = freshDir('repl-log');
  const db = await Athanor.open(dir);
  let databases = 0;
  const admin = new pg.Pool({ connectionString: server.connectionString, max: 1 });
  const freshPool = async () => {
    const name = `bench${++databases}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const pool = new pg.Pool({ connectionString: server.connectionString.replace(/\/postgres$/, `/${name}`), ...PG.poolOptions });
    await pool.query('CREATE TABLE moves (event_id bigint PRIMARY KEY, account text NOT NULL, amount bigint NOT NULL)');
    return pool;
  };
  const insert = (c, e) => c.query('INSERT INTO moves (event_id, account, amount) VALUES ($1, $2, $3)', [e.id.toString(), e.payload.account, e.payload.amount]);
  const count = async (pool) => Number((await pool.query('SELECT count(*) AS n FROM moves')).rows[0].n);
  try {
    for (let from = 1; from <= COUNTS.events; from += 5_000) {
      await db.transaction().execute((tx) => {
        for (let n = from; n < from + 5_000 && n <= COUNTS.events; n++) tx.log('Deposited', { n, account: `acct:${n % 100}`, amount: n });
      });
    }
    // Ours in its two forms: the declarative action (the form the README recommends for
    // throughput: a batch's INSERTs merged into one statement), and a handler running the
    // peer's very INSERT (one statement per event, as the peer).
    const projection = (on) => async () => {
      const pool = await freshPool();
      try {
        let p;
        const s = await timed(async () => {
          p = db.pgProjection({ name: 'moves', pool, batchSize: BATCH, on });
          await p.catchUp();
        });
        await p.stop();
        check((await count(pool)) === COUNTS.events, 'every event projected');
        return COUNTS.events / s;
      } finally {
        await pool.end();
      }
    };
    const ours = projection({ Deposited: { sql: 'INSERT INTO moves (event_id, account, amount) VALUES ($1, $2, $3)', params: ['@id', '$.account', '$.amount'] } });
    const handlers = projection({ Deposited: (e, c) => insert(c, e) });
    const peer = async () => {
      const pool = await freshPool();
      try {
        const s = await timed(async () => {
          const c = await pool.connect();
          try {
            // Its startup, timed as ours is: the cursor table and row, made when missing.
            await c.query('CREATE TABLE IF NOT EXISTS cursors (name text PRIMARY KEY, cursor bigint NOT NULL)');
            await c.query("INSERT INTO cursors VALUES ('moves', 0) ON CONFLICT (name) DO NOTHING");
            for (;;) {
              await c.query('BEGIN');
              const cursor = BigInt((await c.query("SELECT cursor FROM cursors WHERE name = 'moves' FOR UPDATE")).rows[0].cursor);
              const events = [...db.events.read({ from: cursor + 1n, limit: BATCH })];
              if (events.length === 0) {
                await c.query('COMMIT');
                break;
              }
              for (const e of events) await insert(c, e);
              await c.query("UPDATE cursors SET cursor = $1 WHERE name = 'moves'", [events.at(-1).id.toString()]);
              await c.query('COMMIT');
            }
          } finally {
            c.release();
          }
        });
        check((await count(pool)) === COUNTS.events, 'every event projected (peer)');
        return COUNTS.events / s;
      } finally {
        await pool.end();
      }
    };
    // One untimed run of each side first: PostgreSQL's caches warm up over the first
    // databases created, which would otherwise bill whichever side runs first.
    const sides = { ours, handlers, peer };
    for (const side of Object.values(sides)) await side();
    // Run order moved the result (the side that ran second won every round of an
    // earlier version): each round runs the sides in an order and then in its reverse
    // (A B C C B A), the first side rotating between rounds; a side's rate in a round
    // is over its two runs.
    const names = Object.keys(sides);
    const r = Object.fromEntries(names.map((n) => [n, []]));
    for (let round = 0; round < COUNTS.rounds; round++) {
      const order = names.map((_, k) => names[(round + k) % names.length]);
      const runs = Object.fromEntries(names.map((n) => [n, []]));
      for (const side of [...order, ...[...order].reverse()]) runs[side].push(await sides[side]());
      for (const side of names) r[side].push(2 / (1 / runs[side][0] + 1 / runs[side][1]));
      log(`  pg_projection round ${round + 1}/${COUNTS.rounds} (${order.join(' ')} and back): ` + names.map((n) => `${n}=${runs[n].map(Math.round).join(',')}`).join(' ') + ' events/s');
    }
    const against = (side) => ({ order: 'A B C C B A per round, first side rotating', roundRatios: r[side].map((o, i) => Number((o / r.peer[i]).toFixed(3))) });
    emit('replication.pg_projection', 'events/s', 'higher', median(r.ours), PG.label, median(r.peer), against('ours'));
    emit('replication.pg_projection_handlers', 'events/s', 'higher', median(r.handlers), PG.label, median(r.peer), against('handlers'));
  } finally {
    await db.close();
    await admin.end();
    removeDir(dir);
  }
}
