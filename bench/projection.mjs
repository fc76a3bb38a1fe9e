// projection: projecting an event log into SQLite tables, against better-sqlite3 doing the
// same work by hand.
//
// Data (full / BENCH_QUICK=1): 500,000 / 50,000 'deposit' events with JSON payloads
// { i, account: 'acct-' + (i % 1000), amount: i % 100 }, written once (untimed) into
// athanor's log and, for the peer, into an `events` table of its own SQLite file.
// Each round projects the whole log from scratch into a fresh projection table:
//   ts_handler       athanor processor with a TypeScript handler: one prepared INSERT per event
//   declarative      athanor declarative projection: the same INSERT, payload fields by JSON path, in Rust
//   peer             better-sqlite3: SELECT a batch of events after the cursor, JSON.parse each
//                    payload, one prepared INSERT per event, UPDATE the cursor, one transaction per batch
//   catchup_latency  with a processor running (run()), one durable commit of one event at a time:
//                    the time from the commit's promise resolving to its row being visible in
//                    SQLite; median of `commits` samples (no peer)
// Batch size 1,000 events on every side. Rounds: 3 (BENCH_ROUNDS overrides), interleaved; medians.
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { Athanor } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';

export const description = '500k events projected into SQLite: TS handler and declarative (Rust) processors vs better-sqlite3 by hand; catch-up latency';

const SIZES = QUICK ? { events: 50_000, rounds: 3, commits: 100 } : { events: 500_000, rounds: 3, commits: 500 };
if (process.env.BENCH_ROUNDS) SIZES.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
const BATCH = 1000;
const TABLE_SQL = 'CREATE TABLE deposits (event_id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL)';
const INSERT_SQL = 'INSERT INTO deposits (event_id, account, amount) VALUES (?, ?, ?)';

const payloadOf = (i) => ({ i, account: 'acct-' + (i % 1000), amount: i % 100 });

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

// ---------------------------------------------------------------- setup (untimed)

async function writeOurLog(dir, n) {
  const db = await Athanor.open(dir, { durability: 'batched' });
  for (let start = 0; start < n; start += 10_000) {
    const end = Math.min(n, start + 10_000);
    await db.transaction().execute((tx) => {
      for (let i = start; i < end; i++) tx.log('deposit', payloadOf(i));
    });
  }
  await db.flush();
  await db.close();
}

function writePeerLog(file, n) {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL)');
  db.exec('CREATE TABLE cursors (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)');
  const ins = db.prepare('INSERT INTO events (id, type, payload) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) ins.run(i + 1, 'deposit', JSON.stringify(payloadOf(i)));
  })();
  db.close();
}

/** Removes projection.db (and its WAL files) so the next open starts with no projection. */
function resetProjection(dir) {
  for (const f of ['projection.db', 'projection.db-wal', 'projection.db-shm']) rmSync(join(dir, f), { force: true });
}

// ---------------------------------------------------------------- sides

/** better-sqlite3 by hand: what a user writes without athanor. Returns events/s. */
function peerProject(file, n) {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('DROP TABLE IF EXISTS deposits');
  db.exec(TABLE_SQL);
  db.prepare("INSERT OR REPLACE INTO cursors (name, last_id) VALUES ('deposits', 0)").run();
  const readCursor = db.prepare("SELECT last_id FROM cursors WHERE name = 'deposits'").pluck();
  const readBatch = db.prepare('SELECT id, type, payload FROM events WHERE id > ? ORDER BY id LIMIT ?');
  const insert = db.prepare(INSERT_SQL);
  const moveCursor = db.prepare("UPDATE cursors SET last_id = ? WHERE name = 'deposits'");
  const applyBatch = db.transaction(() => {
    const rows = readBatch.all(readCursor.get(), BATCH);
    for (const row of rows) {
      if (row.type !== 'deposit') continue;
      const p = JSON.parse(row.payload);
      insert.run(row.id, p.account, p.amount);
    }
    if (rows.length > 0) moveCursor.run(rows[rows.length - 1].id);
    return rows.length;
  });
  gcNow();
  const t0 = process.hrtime.bigint();
  while (applyBatch() > 0);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  check(db.prepare('SELECT count(*) FROM deposits').pluck().get() === n, 'peer projected every event');
  db.close();
  return n / secs;
}

/** athanor processor with a TS handler: one prepared INSERT per event. Returns events/s. */
async function oursTsHandler(dir, n) {
  resetProjection(dir);
  const db = await Athanor.open(dir);
  try {
    db.sql.exec(TABLE_SQL);
    const insert = db.sql.prepare(INSERT_SQL);
    const processor = db
      .processor('deposits')
      .on('deposit', (_sql, e) => {
        insert.run(e.id, e.payload.account, e.payload.amount);
      })
      .batchSize(BATCH)
      .build();
    const secs = await timed(() => processor.catchUp());
    check(processor.cursor() === BigInt(n), 'processor cursor reached the last event');
    check(db.sql.get('SELECT count(*) AS c FROM deposits').c === n, 'ts handler projected every event');
    await processor.close();
    return n / secs;
  } finally {
    await db.close();
  }
}

/** athanor declarative projection: the same INSERT, executed in Rust. Returns events/s. */
async function oursDeclarative(dir, n) {
  resetProjection(dir);
  const db = await Athanor.open(dir);
  try {
    db.sql.exec(TABLE_SQL);
    const projection = db.projection({
      name: 'deposits',
      on: { deposit: { sql: INSERT_SQL, params: ['@id', '$.account', '$.amount'] } },
      batchSize: BATCH,
    });
    const secs = await timed(() => projection.catchUp());
    check(projection.cursor() === BigInt(n), 'projection cursor reached the last event');
    check(db.sql.get('SELECT count(*) AS c FROM deposits').c === n, 'declarative projected every event');
    await projection.close();
    return n / secs;
  } finally {
    await db.close();
  }
}

/** Commit one event at a time with a processor running; time until its row is visible. */
async function catchupLatency(dir, samples) {
  const db = await Athanor.open(dir);
  try {
    db.sql.exec(TABLE_SQL);
    const insert = db.sql.prepare(INSERT_SQL);
    const exists = db.sql.prepare('SELECT 1 AS x FROM deposits WHERE event_id = ?');
    const processor = db
      .processor('latency')
      .on('deposit', (_sql, e) => {
        insert.run(e.id, e.payload.account, e.payload.amount);
      })
      .build();
    const running = processor.run();
    const lat = []; // commit acknowledged -> row visible
    const total = []; // commit started -> row visible
    for (let i = 0; i < samples + 10; i++) {
      const t0 = process.hrtime.bigint();
      const r = await db.transaction().execute((tx) => {
        tx.log('deposit', payloadOf(i));
      });
      const t1 = process.hrtime.bigint();
      const id = r.firstEventId;
      // Yield to the event loop until the processor has applied the event.
      while (exists.get(id) === undefined) await new Promise((res) => setImmediate(res));
      const t2 = process.hrtime.bigint();
      if (i >= 10) {
        lat.push(Number(t2 - t1) / 1e3);
        total.push(Number(t2 - t0) / 1e3);
      }
    }
    await processor.stop();
    await running;
    const sorted = [...lat].sort((a, b) => a - b);
    return { median: median(lat), p95: sorted[Math.floor(sorted.length * 0.95)], totalMedian: median(total) };
  } finally {
    await db.close();
  }
}

function gcNow() {
  if (typeof globalThis.gc === 'function') globalThis.gc();
}

// ---------------------------------------------------------------- run

export async function run() {
  const { events: n, rounds, commits } = SIZES;
  log(`projection: ${QUICK ? 'QUICK' : 'full'} mode; ${fmt(n)} events, batch ${BATCH}, ${rounds} rounds, ${commits} latency samples`);
  const work = freshDir('projection');
  try {
    const ourDir = join(work, 'ours');
    const peerFile = join(work, 'peer.sqlite');
    let t = await timed(() => writeOurLog(ourDir, n));
    log(`  setup: athanor log written in ${t.toFixed(1)} s`);
    t = await timed(async () => writePeerLog(peerFile, n));
    log(`  setup: peer events table written in ${t.toFixed(1)} s`);

    const ts = await interleave('ts_handler', rounds, {
      ours: () => oursTsHandler(ourDir, n),
      'better-sqlite3': async () => peerProject(peerFile, n),
    });
    emit('projection.ts_handler', 'events/s', median(ts.ours), 'better-sqlite3', median(ts['better-sqlite3']));

    const decl = await interleave('declarative', rounds, {
      ours: () => oursDeclarative(ourDir, n),
      'better-sqlite3': async () => peerProject(peerFile, n),
    });
    emit('projection.declarative', 'events/s', median(decl.ours), 'better-sqlite3', median(decl['better-sqlite3']));

    const lat = await catchupLatency(join(work, 'latency'), commits);
    log(`  catchup_latency: median ${lat.median.toFixed(0)} µs, p95 ${lat.p95.toFixed(0)} µs (from the start of the commit, fsync included: median ${lat.totalMedian.toFixed(0)} µs)`);
    process.stdout.write(JSON.stringify({ bench: 'projection.catchup_latency', unit: 'µs', ours: Math.round(lat.median), peer: null, peerValue: null, ratio: null }) + '\n');
  } finally {
    removeDir(work);
  }
}
