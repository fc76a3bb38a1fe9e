// security: the cost of secure mode. Our secure mode is the side, our plain mode the peer,
// in the same run on the same data (see bench/README.md, group `security`).
//
// Counts per round (BENCH_QUICK=1 / full):
//   tx    2,000 / 20,000 durable transactions (a state write and an event each), 64 in flight
//   read  200,000 / 1,000,000 random point reads over 10,000 preloaded keys
//   rounds 5 / 5 (BENCH_ROUNDS overrides); each metric reports the median round per side.
// Secure side: Athanor.open(dir, { secure: true }) (durability 'full', the SHA-256 hash chain
// on), every call through db.as({ id, roles: ['developer'] }): each operation checked, each
// transaction's audit record written in its own commit, reads counted into the audit trail.
// Plain side ("plain"): Athanor.open(dir) (durability 'full', no chain), calls on the db itself.
// Every round of every side opens a fresh directory and closes it before the next side runs.
import { join } from 'node:path';
import { Athanor, i64 } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, prng, removeDir, timed } from './_lib.mjs';

export const description = 'cost of secure mode (caller handle + hash chain + audit trail) vs plain mode: durable tx/s (64 in flight), point reads/s';

const COUNTS = QUICK ? { tx: 2_000, read: 200_000, rounds: 5 } : { tx: 20_000, read: 1_000_000, rounds: 5 };
if (process.env.BENCH_ROUNDS) COUNTS.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);

const WARMUP = 20;
const CONCURRENCY = 64;
const ACCOUNTS = 1000;
const READ_KEYS = 10_000;
const PEER = 'athanor-plain';
const CALLER = { id: 'bench-service', roles: ['developer'] };

const stateKey = (i) => 'acct:' + (i % ACCOUNTS);

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

/** Runs `fn(handle, db)` on a fresh database: secure (through a caller handle) or plain. */
async function withDb(secure, fn) {
  const dir = freshDir(secure ? 'secure' : 'plain');
  const db = await Athanor.open(join(dir, 'db'), secure ? { secure: true } : {});
  try {
    return await fn(secure ? db.as(CALLER) : db, db);
  } finally {
    await db.close();
    removeDir(dir);
  }
}

const tx = (h, i) =>
  h.transaction().execute((t) => {
    t.set(stateKey(i), i64(i));
    t.log('deposit', { i, amount: 5 });
  });

async function windowed(n, start, fn) {
  let next = start;
  const end = start + n;
  const worker = async () => {
    while (next < end) await fn(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

async function txRate(secure) {
  const n = COUNTS.tx;
  return withDb(secure, async (h) => {
    for (let i = 0; i < WARMUP; i++) await tx(h, i);
    const s = await timed(() => windowed(n, WARMUP, (i) => tx(h, i)));
    check(h.events.lastId === BigInt(WARMUP + n), `${secure ? 'secure' : 'plain'} tx event count`);
    if (secure) check(h.events.proof(BigInt(WARMUP + n)).algorithm === 'sha256', 'secure side chains its events');
    return n / s;
  });
}

async function readRate(secure, keys) {
  const n = keys.length;
  return withDb(secure, async (h) => {
    await h.transaction().execute((t) => {
      for (let i = 0; i < READ_KEYS; i++) t.set('acct:' + i, i64(i));
    });
    let bad = 0;
    const s = await timed(() => {
      for (let j = 0; j < n; j++) if (h.get(keys[j]).asI64() < 0n) bad++;
    });
    check(bad === 0 && h.get('acct:77').asI64() === 77n, `${secure ? 'secure' : 'plain'} read values`);
    return n / s;
  });
}

export async function run() {
  log(`security: tx ${fmt(COUNTS.tx)} x${CONCURRENCY} in flight, read ${fmt(COUNTS.read)} point reads, ${COUNTS.rounds} rounds${QUICK ? ' (BENCH_QUICK)' : ''}`);
  const t = await interleave('tx', COUNTS.rounds, { ours: () => txRate(true), [PEER]: () => txRate(false) });
  emit('security.tx', 'ops/s', 'higher', median(t.ours), PEER, median(t[PEER]));
  const rnd = prng(42);
  const keys = Array.from({ length: COUNTS.read }, () => 'acct:' + Math.floor(rnd() * READ_KEYS));
  const r = await interleave('read', COUNTS.rounds, { ours: () => readRate(true, keys), [PEER]: () => readRate(false, keys) });
  emit('security.read', 'ops/s', 'higher', median(r.ours), PEER, median(r[PEER]));
}
