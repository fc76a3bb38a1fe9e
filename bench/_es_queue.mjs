// eventsourcing.queue: a durable work queue, enqueue + lease + ack, 4 workers, vs
// better-sqlite3 implementing the same queue in one table. Wired into the
// `eventsourcing` group (bench/eventsourcing.mjs) as `runQueue(QUICK)`.
//
// Per round, per side: a fresh store; one producer enqueues N jobs, one durable
// transaction each, while 4 workers (async loops in this process) each lease one job
// at a time (visibility 30 s) and ack it with its fencing token, until all N are acked.
// The rate is N / (time from the first enqueue to the last ack). Every operation is
// acknowledged only once durable:
//   athanor: `q.enqueue(payload)`, `q.lease({ count: 1, visibilityMs: 30_000 })`, `q.ack(job)`
//     (durability 'full': each resolves after the fsync of the group commit it joined).
//   better-sqlite3 (WAL + synchronous = FULL, as in _peers.mjs): one table
//     `jobs (id INTEGER PRIMARY KEY, payload TEXT, priority INTEGER, due INTEGER, state INTEGER,
//     token INTEGER, leased_until INTEGER, attempts INTEGER)` with an index on
//     `(state, priority DESC, due, id)`, and a one-row `meta` table holding the queue's last
//     fencing token. Enqueue: one INSERT. Lease: `BEGIN IMMEDIATE`, take the first ready job
//     by the index (or an expired lease), bump the token, UPDATE the job, COMMIT. Ack:
//     `DELETE ... WHERE id = ? AND token = ?` (0 rows = stale). Each is its own transaction,
//     fsynced at commit; better-sqlite3 is synchronous, so the 4 workers' calls take turns.
// Counts: N = 400 (quick) / 3,000 (full) jobs per round; 3 rounds; the median round per side.
import { join } from 'node:path';
import { Athanor } from '../dist/index.js';
import { emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';
import { SQLITE, openSqlite, versionOf } from './_peers.mjs';

const WORKERS = 4;
const VISIBILITY_MS = 30_000;

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

const yieldTurn = () => new Promise((r) => setImmediate(r));

async function oursRound(n) {
  const dir = freshDir('ours-queue');
  const db = await Athanor.open(join(dir, 'db'));
  try {
    const q = db.queue('jobs');
    let acked = 0;
    const secs = await timed(async () => {
      const producer = (async () => {
        for (let i = 0; i < n; i++) await q.enqueue({ i, to: `user-${i % 100}@example.com` });
      })();
      const worker = async () => {
        while (acked < n) {
          const [job] = await q.lease({ count: 1, visibilityMs: VISIBILITY_MS });
          if (job === undefined) {
            await yieldTurn();
            continue;
          }
          await q.ack(job);
          acked++;
        }
      };
      await Promise.all([producer, ...Array.from({ length: WORKERS }, worker)]);
    });
    const c = q.counts();
    check(acked === n && c.ready + c.delayed + c.leased + c.dead === 0, `athanor queue drained (${acked}/${n}, ${JSON.stringify(c)})`);
    return n / secs;
  } finally {
    await db.close();
    removeDir(dir);
  }
}

function sqliteQueue(db) {
  db.exec(`CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, priority INTEGER NOT NULL, due INTEGER NOT NULL,
             state INTEGER NOT NULL, token INTEGER NOT NULL, leased_until INTEGER NOT NULL, attempts INTEGER NOT NULL)`);
  db.exec('CREATE INDEX jobs_ready ON jobs (state, priority DESC, due, id)');
  db.exec('CREATE TABLE meta (k INTEGER PRIMARY KEY, token INTEGER NOT NULL)');
  db.exec('INSERT INTO meta VALUES (0, 0)');
  const insert = db.prepare('INSERT INTO jobs (payload, priority, due, state, token, leased_until, attempts) VALUES (?, 0, ?, 0, 0, 0, 0)');
  const nextReady = db.prepare('SELECT id FROM jobs WHERE state = 0 AND due <= ? ORDER BY priority DESC, due, id LIMIT 1');
  const nextExpired = db.prepare('SELECT id FROM jobs WHERE state = 1 AND leased_until <= ? LIMIT 1');
  const bump = db.prepare('UPDATE meta SET token = token + 1 WHERE k = 0 RETURNING token');
  const take = db.prepare('UPDATE jobs SET state = 1, token = ?, leased_until = ?, attempts = attempts + 1 WHERE id = ? RETURNING id, payload, token');
  const ack = db.prepare('DELETE FROM jobs WHERE id = ? AND token = ? AND state = 1');
  const lease = db.transaction((now) => {
    const row = nextExpired.get(now) ?? nextReady.get(now);
    if (row === undefined) return undefined;
    const { token } = bump.get();
    const job = take.get(token, now + VISIBILITY_MS, row.id);
    return { id: job.id, payload: JSON.parse(job.payload), token: job.token };
  });
  return {
    enqueue: (payload) => insert.run(JSON.stringify(payload), Date.now()),
    lease: () => lease.immediate(Date.now()),
    ack: (job) => {
      if (ack.run(job.id, job.token).changes !== 1) throw new Error('stale lease');
    },
    count: () => db.prepare('SELECT count(*) AS n FROM jobs').get().n,
  };
}

async function sqliteRound(n) {
  const dir = freshDir('sqlite-queue');
  const db = openSqlite(join(dir, 'queue.sqlite'), SQLITE.durable);
  try {
    const q = sqliteQueue(db);
    let acked = 0;
    const secs = await timed(async () => {
      const producer = (async () => {
        for (let i = 0; i < n; i++) {
          q.enqueue({ i, to: `user-${i % 100}@example.com` });
          await yieldTurn(); // let the workers take turns, as async producers do
        }
      })();
      const worker = async () => {
        while (acked < n) {
          const job = q.lease();
          if (job === undefined) {
            await yieldTurn();
            continue;
          }
          await yieldTurn(); // the job's work would go here
          q.ack(job);
          acked++;
        }
      };
      await Promise.all([producer, ...Array.from({ length: WORKERS }, worker)]);
    });
    check(acked === n && q.count() === 0, `sqlite queue drained (${acked}/${n})`);
    return n / secs;
  } finally {
    db.close();
    removeDir(dir);
  }
}

/** Runs eventsourcing.queue and prints its JSON line (`quick`: the BENCH_QUICK counts). */
export async function runQueue(quick) {
  const n = quick ? 400 : 3_000;
  const rounds = process.env.BENCH_ROUNDS ? Math.max(1, Number(process.env.BENCH_ROUNDS) | 0) : 3;
  log(`eventsourcing.queue: ${n} jobs/round, ${WORKERS} workers, ${rounds} rounds; better-sqlite3 ${versionOf('better-sqlite3')}`);
  const r = await interleave('queue', rounds, { athanor: () => oursRound(n), sqlite: () => sqliteRound(n) });
  log(`  queue medians: athanor ${fmt(median(r.athanor))} jobs/s, better-sqlite3 ${fmt(median(r.sqlite))} jobs/s`);
  emit('eventsourcing.queue', 'jobs/s', 'higher', median(r.athanor), SQLITE.label, median(r.sqlite), { workers: WORKERS, jobs: n });
}
