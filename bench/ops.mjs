// ops: online backup throughput, and a concurrent writer's commit latency during a backup.
//
// Sizes (BENCH_QUICK=1 / full):
//   data    100 MiB / 1 GiB of state: keys 'k:' + 10 digits, 1,000-byte values
//   rounds  3 / 3 (BENCH_ROUNDS overrides); each metric reports the median round per side.
// The same key/value set is written once (untimed) into a fresh athanor directory and a fresh
// lmdb-js directory, each load acknowledged durable. Every backup goes into a new directory,
// removed afterwards; only one side's database is open at a time, so nothing of ours runs
// while the peer is timed. The peer (lmdb-js, configured in _peers.mjs) makes a compacted
// `backup()`, the same kind of copy as ours, then fsyncs it (as ours is, when it resolves);
// athanor's backup also copies projection.db,
// computes the content digest and hashes every file (see bench/README.md).
import { closeSync, fsyncSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Athanor, bytes, i64 } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, prng, removeDir, timed } from './_lib.mjs';
import { LMDB_BACKUP, openLmdbBackup, peerVersions } from './_peers.mjs';

export const description = 'online backup MB/s of a 1 GiB store vs lmdb-js backup(); p99 commit latency of a writer during our backup vs idle';

const MIB = 1024 * 1024;
const COUNTS = QUICK ? { mib: 100, rounds: 3 } : { mib: 1024, rounds: 3 };
if (process.env.BENCH_OPS_MIB) COUNTS.mib = Math.max(1, Number(process.env.BENCH_OPS_MIB) | 0); // a smaller store, for a smoke run
if (process.env.BENCH_ROUNDS) COUNTS.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);

const VALUE_BYTES = 1000;
const ENTRIES = Math.round((COUNTS.mib * MIB) / VALUE_BYTES);
const LOAD_BATCH = 5_000; // entries per load transaction (5 MB)
const WRITER_KEYS = 100;
const IDLE_COMMITS = QUICK ? 300 : 1_000; // the idle writer's commits per round

const keyOf = (i) => 'k:' + String(i).padStart(10, '0');
/** Bytes of keys and values written to each side: the amount both backups copy. */
const DATA_BYTES = ENTRIES * (VALUE_BYTES + keyOf(0).length);

// Values are windows into one seeded random pool (incompressible, identical on both sides).
const POOL = (() => {
  const rnd = prng(7);
  const b = Buffer.alloc(MIB + VALUE_BYTES);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(Math.floor(rnd() * 2 ** 32), i);
  return b;
})();
const valueOf = (i) => {
  const off = (i * 7919) % MIB;
  return POOL.subarray(off, off + VALUE_BYTES);
};

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

function p99(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)];
}

// ---------------------------------------------------------------- loading (untimed)

async function loadOurs(path) {
  const db = await Athanor.open(path); // durability 'full': each load commit resolves after fsync
  try {
    for (let start = 0; start < ENTRIES; start += LOAD_BATCH) {
      const end = Math.min(ENTRIES, start + LOAD_BATCH);
      await db.transaction().execute((tx) => {
        for (let i = start; i < end; i++) tx.set(keyOf(i), bytes(valueOf(i)));
      });
    }
  } finally {
    await db.close();
  }
}

async function loadLmdb(path) {
  const { root, state } = openLmdbBackup(path);
  try {
    for (let start = 0; start < ENTRIES; start += LOAD_BATCH) {
      const end = Math.min(ENTRIES, start + LOAD_BATCH);
      await root.transaction(() => {
        for (let i = start; i < end; i++) state.put(keyOf(i), valueOf(i));
      });
    }
    await root.flushed;
    check(state.getCount() === ENTRIES, 'lmdb load count');
  } finally {
    await root.close();
  }
}

const storeBytes = (file) => statSync(file).size;
/** Sizes of each side's copied LMDB file (bytes), from the first backup of each. */
const copiedBytes = { ours: 0, peer: 0 };

// ---------------------------------------------------------------- one backup per side

/** Our backup of the database at `path` into a fresh directory; returns seconds. */
async function oursBackup(path, sanity) {
  const out = freshDir('ops-ours-backup');
  const db = await Athanor.open(path, { create: false });
  try {
    let manifest;
    const s = await timed(async () => {
      manifest = await db.backup(join(out, 'b'));
    });
    if (sanity) {
      check(manifest.contentDigest.stateKeys === ENTRIES, 'ours backup state keys');
      copiedBytes.ours = manifest.files.find((f) => f.restoresTo === 'canonical/data.mdb').bytes;
    }
    return s;
  } finally {
    await db.close();
    removeDir(out);
  }
}

/** lmdb-js's compacted backup of the database at `path` into a fresh directory; returns seconds. */
async function lmdbBackup(path, sanity) {
  const out = freshDir('ops-lmdb-backup');
  const target = join(out, 'b');
  mkdirSync(target);
  const { root } = openLmdbBackup(path);
  try {
    // Our backup is durable when it resolves (its files and folder fsynced); the peer's copy is
    // made just as durable inside the timed span, since lmdb-js's backup() does not sync.
    const s = await timed(async () => {
      await root.backup(target, LMDB_BACKUP.compact);
      for (const p of [join(target, 'data.mdb'), target]) {
        const fd = openSync(p, 'r');
        try { fsyncSync(fd); } finally { closeSync(fd); }
      }
    });
    if (sanity) {
      const copy = openLmdbBackup(target, { readOnly: true });
      const n = copy.state.getCount();
      await copy.root.close();
      check(n === ENTRIES, 'lmdb backup count');
      copiedBytes.peer = storeBytes(join(target, 'data.mdb'));
    }
    return s;
  } finally {
    await root.close();
    removeDir(out);
  }
}

// ---------------------------------------------------------------- metrics

async function backupRate(ours, lmdb) {
  const turns = { ours: 0, lmdb: 0 };
  const mb = DATA_BYTES / 1e6;
  const rates = await interleave('backup', COUNTS.rounds, {
    ours: async () => mb / (await oursBackup(ours, turns.ours++ === 0)),
    [LMDB_BACKUP.label]: async () => mb / (await lmdbBackup(lmdb, turns.lmdb++ === 0)),
  });
  emit('ops.backup', 'MB/s', 'higher', median(rates.ours), LMDB_BACKUP.label, median(rates[LMDB_BACKUP.label]), {
    dataMB: Number(mb.toFixed(1)),
    compact: true,
    fileMB: Number((copiedBytes.ours / 1e6).toFixed(1)),
    peerFileMB: Number((copiedBytes.peer / 1e6).toFixed(1)),
  });
}

/** Commit latencies (ms) of one writer awaiting small durable transactions until `until()` says stop. */
async function writer(db, next, until) {
  const lat = [];
  while (!until(lat.length)) {
    const i = next.i++;
    const t0 = performance.now();
    await db.transaction().execute((tx) => {
      tx.set('w:' + (i % WRITER_KEYS), i64(i));
      tx.log('tick', { i });
    });
    lat.push(performance.now() - t0);
  }
  return lat;
}

async function writerDuringBackup(ours) {
  const during = [];
  const idle = [];
  const counts = [];
  const db = await Athanor.open(ours, { create: false });
  const next = { i: 0 };
  try {
    await writer(db, next, (n) => n >= 20); // warm-up
    for (let r = 0; r < COUNTS.rounds; r++) {
      const phases = {
        idle: async () => {
          idle.push(p99(await writer(db, next, (n) => n >= IDLE_COMMITS)));
        },
        during: async () => {
          const out = freshDir('ops-writer-backup');
          let done = false;
          const backup = db.backup(join(out, 'b')).finally(() => {
            done = true;
          });
          const lat = await writer(db, next, () => done);
          await backup;
          removeDir(out);
          counts.push(lat.length);
          during.push(p99(lat));
        },
      };
      const order = r % 2 === 0 ? ['idle', 'during'] : ['during', 'idle'];
      for (const phase of order) await phases[phase]();
      log(`  writer_p99 round ${r + 1}/${COUNTS.rounds}: during=${during[r].toFixed(2)} ms (${counts[r]} commits) idle=${idle[r].toFixed(2)} ms (${IDLE_COMMITS} commits)`);
    }
  } finally {
    await db.close();
  }
  check(counts.every((c) => c > 0), 'the writer committed during every backup');
  emit('ops.writer_p99_during_backup', 'ms', 'lower', median(during), 'athanor idle (same writer, no backup)', median(idle), {
    commitsDuring: median(counts),
    commitsIdle: IDLE_COMMITS,
  });
}

// ---------------------------------------------------------------- entry

export async function run() {
  log(`peers: ${peerVersions()}`);
  log(
    `ops: ${QUICK ? 'QUICK' : 'full'} mode, ${COUNTS.rounds} rounds; ${fmt(ENTRIES)} entries of ${VALUE_BYTES} B ` +
      `(${(DATA_BYTES / MIB).toFixed(0)} MiB of keys and values) per side`,
  );
  const dir = freshDir('ops');
  try {
    const ours = join(dir, 'ours');
    const lmdb = join(dir, 'lmdb');
    const tOurs = await timed(() => loadOurs(ours));
    const tLmdb = await timed(() => loadLmdb(lmdb));
    log(
      `  loaded: ours ${(storeBytes(join(ours, 'canonical', 'data.mdb')) / MIB).toFixed(0)} MiB in ${tOurs.toFixed(1)} s, ` +
        `lmdb-js ${(storeBytes(join(lmdb, 'data.mdb')) / MIB).toFixed(0)} MiB in ${tLmdb.toFixed(1)} s (untimed)`,
    );
    await backupRate(ours, lmdb);
    await writerDuringBackup(ours);
  } finally {
    removeDir(dir);
  }
}
