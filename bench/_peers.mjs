// Every peer library of the bench groups, configured in one place: the way its own
// documentation recommends for the workload, with the same durability as athanor's side.
// A group opens a peer only through this table, so a reader can check each setting here.
//
//   peer                              workload                     durability of an acknowledged write
//   lmdb-js                           core tx / append             default overlappingSync: true; a write
//                                                                  counts as done once `root.flushed` resolves
//                                                                  (fsync finished), the same as athanor's 'full'
//   lmdb-js (overlappingSync: false)  core tx / append             LMDB's synchronous commit: the commit
//                                                                  promise resolves after fsync (a variant)
//   lmdb-js (backup)                  ops backup                   data loaded like the core side, awaited
//                                                                  until `flushed`; `backup(path, true)` (compacted),
//                                                                  then fsync of the copy and its folder (ours
//                                                                  is durable when it resolves; backup() does not sync)
//   better-sqlite3                    core tx                      WAL + synchronous = FULL: fsync of the WAL
//                                                                  at every commit
//   better-sqlite3 (projection)       projection, sql exec         WAL + synchronous = NORMAL, exactly what
//                                                                  athanor's projection.db uses
//   usearch                           vector                       in memory (so is athanor's graph; its
//                                                                  documents' fsync is inside its insert time)
//   hnswlib-node                      vector                       in memory
//   transformers.js                   embed                        no writes
//   pg (hand-written consumer)        replication pg_projection    PostgreSQL's default synchronous_commit = on:
//                                                                  COMMIT returns after the WAL fsync, as
//                                                                  athanor's PostgreSQL projection's does
//   lmdb-js (eventsourcing)           hot counter, stream appends  as lmdb-js above: awaited until `flushed`
import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import hnswlib from 'hnswlib-node';
import { open as lmdbOpen } from 'lmdb';
import usearch from 'usearch';

/** The installed version of an npm package (printed with the results). */
export function versionOf(pkg) {
  try {
    return JSON.parse(readFileSync(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------- lmdb-js

/**
 * lmdb-js as its README recommends on Linux: the default `overlappingSync: true`
 * (fsync runs after the commit, overlapping the next transactions), no compression
 * (values here are tiny). A transaction is acknowledged, like athanor's, only once
 * it is durable: the side awaits `root.flushed` after the commit promise.
 * Keys: the default ordered-binary; values: the default msgpack.
 */
export const LMDB = {
  label: 'lmdb-js',
  options: { compression: false },
  /** Awaits a commit, then its fsync. */
  durable: async (root, commitPromise) => {
    await commitPromise;
    await root.flushed;
  },
};

/** The same with `overlappingSync: false`: LMDB's own synchronous commit; the commit promise already means durable. */
export const LMDB_SYNC = {
  label: 'lmdb-js (overlappingSync: false)',
  options: { compression: false, overlappingSync: false },
  durable: async (root, commitPromise) => {
    await commitPromise;
    await root.flushed; // resolves at once in this mode; kept so both variants run the same code
  },
};

/** Opens lmdb-js at `path` with `variant`'s options and the two sub-databases the core group uses. */
export function openLmdb(variant, path) {
  const root = lmdbOpen({ path, ...variant.options });
  return { root, state: root.openDB({ name: 'state' }), events: root.openDB({ name: 'events' }) };
}

/**
 * lmdb-js for the ops group: the default options as above, one named sub-database of raw
 * binary values (`encoding: 'binary'`, what its README recommends for Buffers), and
 * `backup(path, compact)` with `compact: true`, since athanor's backup is a compacted copy too.
 * Opened on a directory path (no file extension), lmdb-js keeps `data.mdb` in it, and
 * `backup(dir)` writes `<dir>/data.mdb` into a directory that must exist.
 */
export const LMDB_BACKUP = {
  label: 'lmdb-js',
  options: { compression: false },
  stateOptions: { name: 'state', encoding: 'binary' },
  compact: true,
};

/** Opens lmdb-js at `path` for the ops group (see LMDB_BACKUP). */
export function openLmdbBackup(path, extra = {}) {
  const root = lmdbOpen({ path, ...LMDB_BACKUP.options, ...extra });
  return { root, state: root.openDB(LMDB_BACKUP.stateOptions) };
}

// ---------------------------------------------------------------- better-sqlite3

/**
 * better-sqlite3 with the pragmas its docs recommend for performance (WAL), and
 * `synchronous` chosen to match athanor's side: FULL for durable transactions
 * (athanor's 'full' fsyncs every commit), NORMAL for projection work (athanor's
 * projection.db runs WAL + NORMAL).
 */
export const SQLITE = {
  label: 'better-sqlite3',
  durable: ['journal_mode = WAL', 'synchronous = FULL'],
  projection: ['journal_mode = WAL', 'synchronous = NORMAL'],
};

/** Opens better-sqlite3 at `file` with one of SQLITE's pragma sets. */
export function openSqlite(file, pragmas) {
  const db = new Database(file);
  for (const p of pragmas) db.pragma(p);
  return db;
}

// ---------------------------------------------------------------- usearch

/**
 * usearch: a dense in-memory index; `connectivity` and `expansion_add` equal to
 * athanor's M and efConstruction. Its JS binding fixes `expansion_search` at
 * construction, so a search at another ef loads the saved index into a new Index
 * with that ef (`usearchAt`). Inserts use every core (threads = 0); searches run one
 * query on one thread, like the other sides.
 */
export const USEARCH = {
  label: 'usearch',
  config: (dim, m, efConstruction, efSearch) => ({
    metric: 'cos',
    dimensions: dim,
    connectivity: m,
    expansion_add: efConstruction,
    expansion_search: efSearch,
  }),
  insertThreads: 0,
  searchThreads: 1,
};

/** A usearch index built from `n` rows of `data`, keys 0..n-1. */
export function usearchBuild(dim, m, efConstruction, n, data) {
  const index = new usearch.Index(USEARCH.config(dim, m, efConstruction, 64));
  const keys = new BigUint64Array(n);
  for (let i = 0; i < n; i++) keys[i] = BigInt(i);
  index.add(keys, data, USEARCH.insertThreads);
  return index;
}

/** The usearch index saved at `file`, loaded with `expansion_search = ef`. */
export function usearchAt(file, dim, m, efConstruction, ef) {
  const index = new usearch.Index(USEARCH.config(dim, m, efConstruction, ef));
  index.load(file);
  return index;
}

// ---------------------------------------------------------------- hnswlib-node

/**
 * hnswlib-node: its binding takes `number[]` per point and inserts one point per
 * call on the calling thread (no batch or threaded insert exists in it).
 * Same M and efConstruction as the other sides; a fixed seed.
 */
export const HNSWLIB = {
  label: 'hnswlib-node',
  init: (n, m, efConstruction) => ({ maxElements: n, m, efConstruction, randomSeed: 100 }),
};

/** An hnswlib-node index built from `rows` (number[] per point), labels 0..n-1. */
export function hnswlibBuild(dim, m, efConstruction, rows) {
  const index = new hnswlib.HierarchicalNSW('cosine', dim);
  index.initIndex(HNSWLIB.init(rows.length, m, efConstruction));
  for (let i = 0; i < rows.length; i++) index.addPoint(rows[i], i);
  return index;
}

// ---------------------------------------------------------------- transformers.js

/**
 * transformers.js's feature-extraction pipeline on the same ONNX file as athanor,
 * on the CPU, with the same intra-op thread count and one inter-op thread.
 * `dtype: 'fp32'` only selects the file name onnx/model.onnx (which holds int8 weights).
 */
export const TRANSFORMERS = {
  label: 'transformers.js',
  pipelineOptions: (threads) => ({
    dtype: 'fp32',
    device: 'cpu',
    session_options: { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' },
  }),
  callOptions: { pooling: 'mean', normalize: true },
};

/** One stderr line naming every peer's installed version. */
export function peerVersions() {
  return ['lmdb', 'better-sqlite3', 'usearch', 'hnswlib-node', '@huggingface/transformers']
    .map((p) => `${p} ${versionOf(p)}`)
    .join(', ');
}

// ---------------------------------------------------------------- pg

/**
 * node-postgres as its README recommends: one `pg.Pool`, a client checked out per
 * batch, parameterised queries; the server's default `synchronous_commit = on`.
 */
export const PG = {
  label: 'pg (one INSERT per event, one transaction per batch)',
  poolOptions: { max: 4 },
};

// ---------------------------------------------------------------- lmdb-js (event sourcing)

/**
 * lmdb-js for the eventsourcing group: the same options and durability as `LMDB` above
 * (default overlappingSync, each transaction awaited until `root.flushed`), with the
 * sub-databases an application would keep by hand: `state` (counters), `events` (the
 * global log), `streamEvents` ([stream, version] -> event id) and `streamHeads`
 * (stream -> version). The read-modify-write and the expected-version check run inside
 * `root.transaction()` callbacks, which lmdb-js runs in its write transaction.
 */
export function openLmdbEventSourcing(path) {
  const root = lmdbOpen({ path, ...LMDB.options });
  return {
    root,
    state: root.openDB({ name: 'state' }),
    events: root.openDB({ name: 'events' }),
    streamEvents: root.openDB({ name: 'streamEvents' }),
    streamHeads: root.openDB({ name: 'streamHeads' }),
  };
}
