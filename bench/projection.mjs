// projection: projecting an event log into SQLite tables, and running SQL scripts, against
// better-sqlite3 doing the same work by hand.
//
// Data (full / BENCH_QUICK=1): 500,000 / 50,000 'deposit' events with JSON payloads
// { i, account: 'acct-' + (i % 1000), amount: i % 100 }, written once (untimed) into
// athanor's log and, for the peer, into an `events` table of its own SQLite file. Each
// round of each side copies that log into a fresh directory (untimed) and projects all
// of it into a new table:
//   ts_handler       athanor processor with a TypeScript handler: one prepared INSERT per event;
//                    peer: better-sqlite3 SELECTs a batch after its cursor, JSON.parse()s each
//                    payload in JS, runs one prepared INSERT per event, UPDATEs the cursor
//   declarative      athanor declarative projection: the same INSERT, payload fields by JSON path,
//                    in Rust; peer: better-sqlite3 with one `INSERT ... SELECT json_extract(...)`
//                    per batch (SQLite parses the JSON, no JS per event), then the cursor UPDATE
//   sql_exec_script  one script of N INSERT statements (in BEGIN/COMMIT) run by athanor's
//                    db.sql.exec vs better-sqlite3's db.exec; N = 20,000 and 100,000 / 2,000 and 10,000
//   catchup_latency  with a processor running (run()), one durable commit of one event at a time:
//                    the time from the commit's promise resolving to its row being visible in
//                    SQLite; median of `commits` samples (no peer)
// Batch size 1,000 events on every side, one SQLite transaction per batch, WAL + synchronous =
// NORMAL on both sides (athanor's projection.db settings). Rounds: 3 (BENCH_ROUNDS overrides),
// interleaved; medians. athanor's database is closed before the peer's turn.
import { join } from 'node:path';
import { closeSync, cpSync, existsSync, fsyncSync, openSync, readdirSync, rmSync } from 'node:fs';
import { Athanor } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';
import { SQLITE, openSqlite, peerVersions } from './_peers.mjs';

export const description = '500k events projected into SQLite (TS handler, declarative), a 100k-statement SQL script, catch-up latency; vs better-sqlite3 by hand';

const SIZES = QUICK
  ? { events: 50_000, rounds: 3, commits: 100, scripts: [2_000, 10_000] }
  : { events: 500_000, rounds: 3, commits: 500, scripts: [20_000, 100_000] };
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
  const db = openSqlite(file, SQLITE.projection);
  db.exec('CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL)');
  db.exec('CREATE TABLE cursors (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)');
  const ins = db.prepare('INSERT INTO events (id, type, payload) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) ins.run(i + 1, 'deposit', JSON.stringify(payloadOf(i)));
  })();
  db.close();
}

/**
 * fsyncs every file under `path`, so that writing back a fresh copy's dirty pages is
 * done before the timed region starts instead of landing in the middle of it.
 */
function syncTree(path) {
  for (const e of readdirSync(path, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const fd = openSync(join(e.parentPath ?? e.path, e.name), 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** A fresh copy of athanor's pre-written log (no projection.db), in a new directory. */
function freshOurs(logDir) {
  const dir = freshDir('projection-ours');
  cpSync(logDir, join(dir, 'db'), { recursive: true });
  for (const f of ['projection.db', 'projection.db-wal', 'projection.db-shm']) rmSync(join(dir, 'db', f), { force: true });
  syncTree(dir);
  return { dir, db: join(dir, 'db') };
}

/** A fresh copy of the peer's pre-written SQLite file (closed, so the WAL is checkpointed), in a new directory. */
function freshPeer(logFile) {
  const dir = freshDir('projection-peer');
  const file = join(dir, 'peer.sqlite');
  cpSync(logFile, file);
  check(!existsSync(logFile + '-wal'), 'the peer log was checkpointed into one file');
  syncTree(dir);
  return { dir, file };
}

// ---------------------------------------------------------------- sides

/** Opens the peer's copy with the projection table and a cursor at 0, as a user would set it up. */
function peerOpen(file) {
  const db = openSqlite(file, SQLITE.projection);
  db.exec(TABLE_SQL);
  db.prepare("INSERT INTO cursors (name, last_id) VALUES ('deposits', 0)").run();
  return db;
}

/** Runs `applyBatch` until it reports an empty batch, timed; checks the row count. Returns events/s. */
function peerDrive(db, n, applyBatch, what) {
  gcNow();
  const t0 = process.hrtime.bigint();
  while (applyBatch() > 0);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  check(db.prepare('SELECT count(*) FROM deposits').pluck().get() === n, `${what} projected every event`);
  return n / secs;
}

/** better-sqlite3 by hand, the TS-handler way: JSON.parse and one INSERT per event in JS. Returns events/s. */
function peerProjectJs(logFile, n) {
  const { dir, file } = freshPeer(logFile);
  const db = peerOpen(file);
  try {
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
    return peerDrive(db, n, applyBatch, 'peer (JS)');
  } finally {
    db.close();
    removeDir(dir);
  }
}

/** better-sqlite3 by hand, the declarative way: one INSERT ... SELECT json_extract per batch. Returns events/s. */
function peerProjectSql(logFile, n) {
  const { dir, file } = freshPeer(logFile);
  const db = peerOpen(file);
  try {
    const readCursor = db.prepare("SELECT last_id FROM cursors WHERE name = 'deposits'").pluck();
    // The batch's last id (ids need not be dense), then every deposit up to it in one statement.
    const batchEnd = db.prepare('SELECT max(id) FROM (SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?)').pluck();
    const project = db.prepare(
      "INSERT INTO deposits (event_id, account, amount) SELECT id, json_extract(payload, '$.account'), json_extract(payload, '$.amount') " +
        "FROM events WHERE id > ? AND id <= ? AND type = 'deposit'",
    );
    const moveCursor = db.prepare("UPDATE cursors SET last_id = ? WHERE name = 'deposits'");
    const applyBatch = db.transaction(() => {
      const from = readCursor.get();
      const to = batchEnd.get(from, BATCH);
      if (to === null) return 0;
      project.run(from, to);
      moveCursor.run(to);
      return 1;
    });
    return peerDrive(db, n, applyBatch, 'peer (INSERT ... SELECT)');
  } finally {
    db.close();
    removeDir(dir);
  }
}

/** athanor processor with a TS handler: one prepared INSERT per event. Returns events/s. */
async function oursTsHandler(logDir, n) {
  const fresh = freshOurs(logDir);
  const db = await Athanor.open(fresh.db);
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
    removeDir(fresh.dir);
  }
}

/** athanor declarative projection: the same INSERT, executed in Rust. Returns events/s. */
async function oursDeclarative(logDir, n) {
  const fresh = freshOurs(logDir);
  const db = await Athanor.open(fresh.db);
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
    removeDir(fresh.dir);
  }
}

const ITEMS_SQL = 'CREATE TABLE items (id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL)';

/**
 * A script of `n` INSERT statements applied as one transaction (what a migration or a seed
 * file looks like). athanor's `exec` makes a multi-statement script atomic itself (a
 * savepoint) and refuses transaction control inside it; better-sqlite3's `exec` gets the same
 * statements wrapped in BEGIN/COMMIT, so both sides do the same work in one transaction.
 */
function insertScript(n, { wrapInTransaction }) {
  const lines = wrapInTransaction ? ['BEGIN;'] : [];
  for (let i = 0; i < n; i++) lines.push(`INSERT INTO items (id, account, amount) VALUES (${i + 1}, 'acct-${i % 1000}', ${i % 100});`);
  if (wrapInTransaction) lines.push('COMMIT;');
  return lines.join('\n');
}

/** athanor: db.sql.exec(script) on a fresh database's projection.db. Returns statements/s. */
async function oursExecScript(script, n) {
  const dir = freshDir('exec-ours');
  const db = await Athanor.open(join(dir, 'db'));
  try {
    db.sql.exec(ITEMS_SQL);
    const secs = await timed(async () => db.sql.exec(script));
    check(db.sql.get('SELECT count(*) AS c FROM items').c === n, 'ours ran every statement');
    return n / secs;
  } finally {
    await db.close();
    removeDir(dir);
  }
}

/** better-sqlite3: db.exec(script) on a fresh file with the same pragmas. Returns statements/s. */
async function peerExecScript(script, n) {
  const dir = freshDir('exec-peer');
  const db = openSqlite(join(dir, 'db.sqlite'), SQLITE.projection);
  try {
    db.exec(ITEMS_SQL);
    const secs = await timed(async () => db.exec(script));
    check(db.prepare('SELECT count(*) FROM items').pluck().get() === n, 'peer ran every statement');
    return n / secs;
  } finally {
    db.close();
    removeDir(dir);
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
  const { events: n, rounds, commits, scripts } = SIZES;
  log(`peers: ${peerVersions()}`);
  log(`projection: ${QUICK ? 'QUICK' : 'full'} mode; ${fmt(n)} events, batch ${BATCH}, ${rounds} rounds, ${commits} latency samples, scripts of ${scripts.map(fmt).join(' and ')} statements`);
  const work = freshDir('projection');
  try {
    const ourLog = join(work, 'ours');
    const peerLog = join(work, 'peer.sqlite');
    let t = await timed(() => writeOurLog(ourLog, n));
    log(`  setup: athanor log written in ${t.toFixed(1)} s`);
    t = await timed(async () => writePeerLog(peerLog, n));
    log(`  setup: peer events table written in ${t.toFixed(1)} s`);

    const ts = await interleave('ts_handler', rounds, {
      ours: () => oursTsHandler(ourLog, n),
      [SQLITE.label]: async () => peerProjectJs(peerLog, n),
    });
    emit('projection.ts_handler', 'events/s', 'higher', median(ts.ours), SQLITE.label, median(ts[SQLITE.label]), { peerMethod: 'JSON.parse + INSERT per event in JS' });

    const decl = await interleave('declarative', rounds, {
      ours: () => oursDeclarative(ourLog, n),
      [SQLITE.label]: async () => peerProjectSql(peerLog, n),
    });
    emit('projection.declarative', 'events/s', 'higher', median(decl.ours), SQLITE.label, median(decl[SQLITE.label]), { peerMethod: 'INSERT ... SELECT json_extract per batch' });

    for (const statements of scripts) {
      const ours = insertScript(statements, { wrapInTransaction: false });
      const peer = insertScript(statements, { wrapInTransaction: true });
      const ex = await interleave(`sql_exec_script ${fmt(statements)}`, rounds, {
        ours: () => oursExecScript(ours, statements),
        [SQLITE.label]: () => peerExecScript(peer, statements),
      });
      emit('projection.sql_exec_script', 'statements/s', 'higher', median(ex.ours), SQLITE.label, median(ex[SQLITE.label]), { statements });
    }

    const lat = await catchupLatency(join(work, 'latency'), commits);
    log(`  catchup_latency: median ${lat.median.toFixed(0)} µs, p95 ${lat.p95.toFixed(0)} µs (from the start of the commit, fsync included: median ${lat.totalMedian.toFixed(0)} µs)`);
    emit('projection.catchup_latency', 'µs', 'lower', lat.median, null, null, { p95: Math.round(lat.p95) });
  } finally {
    removeDir(work);
  }
}
