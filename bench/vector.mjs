// vector: HNSW bulk insert, single-thread search QPS at recall@10 >= 0.95, p95 latency and
// resident memory, against usearch and hnswlib-node on the same low-rank dataset.
//
// Data (full / BENCH_QUICK=1): 100,000 / 5,000 vectors x 384 dims, intrinsic dimension 32,
// unit-normalised, cosine (generator: test/fixtures/lowrank.mjs, seed 1); 1,000 / 200 queries.
// Queries: seed 2 with the data's basis (basisSeed 1). Every side builds with M=16,
// efConstruction=200. Ground truth: usearch's exact search.
//   insert            bulk insert, all cores: athanor upsertMany (stored + indexed) vs usearch add;
//                     hnswlib-node too, whose Node binding inserts one point per call on one thread
//   qps_at_recall95   each side at its own smallest ef in EF_LADDER reaching recall@10 >= 0.95,
//                     single queries from JS, one at a time, vs hnswlib-node
//   p95_ms            p95 latency of one query at that ef (lower is better; bar < 2 ms)
//   memory            resident bytes per vector in a fresh process after loading the saved
//                     index (lower is better), vs hnswlib-node
// Rounds: 3 (BENCH_ROUNDS overrides) for insert and QPS, interleaved; medians reported.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import hnswlib from 'hnswlib-node';
import usearch from 'usearch';
import { Athanor } from '../dist/index.js';
import { lowRank } from '../test/fixtures/lowrank.mjs';
import { QUICK, emit, fmt, freshDir, interleave, log, median, removeDir, timed } from './_lib.mjs';

export const description = '100k x 384 low-rank cosine: bulk insert, QPS at recall@10 >= 0.95, p95 latency, memory; vs usearch and hnswlib-node';

const SIZES = QUICK ? { n: 5_000, queries: 200, rounds: 3 } : { n: 100_000, queries: 1_000, rounds: 3 };
if (process.env.BENCH_ROUNDS) SIZES.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
const DIM = 384;
const INTRINSIC = 32;
const M = 16;
const EF_CONSTRUCTION = 200;
const K = 10;
const TARGET_RECALL = 0.95;
const EF_LADDER = [10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512];
const COLLECTION = 'bench';

const here = fileURLToPath(new URL('.', import.meta.url));

// ---------------------------------------------------------------- sides

/** athanor: a durable collection; timed until stored (fsync) and indexed. */
const ours = {
  async build(dir, ids, data) {
    const db = await Athanor.open(dir);
    const col = db.vectors.create(COLLECTION, { dimension: DIM, metric: 'cosine', m: M, efConstruction: EF_CONSTRUCTION });
    await col.upsertMany(ids, data); // durable: stored in LMDB, fsync done
    await col.waitIndexed(); // and every vector is in the HNSW graph
    return { db, col };
  },
  async close(h) {
    await h.db.close();
  },
  count: (h) => h.col.count(),
  /** Returns row numbers of the top K, best first. */
  search: (h, q, ef) => h.col.search(q, { k: K, efSearch: ef }),
  rows: (res) => res.map((r) => Number(r.id.slice(1))),
};

/** usearch: in-memory index, keys = row numbers. */
const useSide = {
  build(n, data) {
    const index = new usearch.Index({ metric: 'cos', dimensions: DIM, connectivity: M, expansion_add: EF_CONSTRUCTION, expansion_search: 64 });
    const keys = new BigUint64Array(n);
    for (let i = 0; i < n; i++) keys[i] = BigInt(i);
    index.add(keys, data, 0); // 0 = all cores
    return index;
  },
};

/** hnswlib-node: its binding takes number[] per point and inserts on the calling thread. */
const hnsw = {
  build(n, rowsAsArrays) {
    const index = new hnswlib.HierarchicalNSW('cosine', DIM);
    index.initIndex({ maxElements: n, m: M, efConstruction: EF_CONSTRUCTION, randomSeed: 100 });
    for (let i = 0; i < n; i++) index.addPoint(rowsAsArrays[i], i);
    return index;
  },
  search: (index, q, ef) => {
    index.setEf(ef);
    return index.searchKnn(q, K);
  },
  rows: (res) => res.neighbors,
};

// ---------------------------------------------------------------- helpers

function rowsOf(data, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = Array.from(data.subarray(i * DIM, (i + 1) * DIM));
  return out;
}

function recallAt(truth, found) {
  let hit = 0;
  for (let q = 0; q < truth.length; q++) {
    const t = truth[q];
    for (const r of found[q]) if (t.has(r)) hit++;
  }
  return hit / (truth.length * K);
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
    const r = searchOne(queries[i]);
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
  const { n, queries: nq, rounds } = SIZES;
  log(`vector: ${QUICK ? 'QUICK' : 'full'} mode; ${fmt(n)} x ${DIM} (intrinsic ${INTRINSIC}), ${fmt(nq)} queries, M=${M}, efConstruction=${EF_CONSTRUCTION}, ${rounds} rounds`);
  // Queries share the data's basis (same subspace) but not its coefficients.
  const data = lowRank({ n, dim: DIM, intrinsic: INTRINSIC, seed: 1 });
  const qdata = lowRank({ n: nq, dim: DIM, intrinsic: INTRINSIC, seed: 2, basisSeed: 1 });
  const ids = Array.from({ length: n }, (_, i) => 'd' + i);
  const queries = Array.from({ length: nq }, (_, i) => qdata.subarray(i * DIM, (i + 1) * DIM));
  const queryArrays = rowsOf(qdata, nq);

  // Ground truth from usearch's brute-force search (independent of both HNSW graphs).
  const exact = usearch.exactSearch(data, qdata, DIM, K, 'cos', 0);
  const truth = Array.from({ length: nq }, (_, q) => new Set(Array.from(exact.get(q).keys, Number)));

  // ---- insert: interleaved rounds of ours vs usearch, fresh index each round.
  const workDir = freshDir('vector');
  let keep = null; // the last round's athanor database, kept open for search
  let keepUsearch = null;
  try {
    let round = 0;
    const rates = await interleave('insert', rounds, {
      ours: async () => {
        if (keep) {
          await ours.close(keep);
          keep = null;
        }
        const dir = join(workDir, `ours-${round++}`);
        let h;
        const secs = await timed(async () => {
          h = await ours.build(dir, ids, data);
        });
        check(h.col.count() === n, 'athanor count after upsertMany');
        keep = h;
        return n / secs;
      },
      usearch: async () => {
        let index;
        const secs = await timed(async () => {
          index = useSide.build(n, data);
        });
        check(index.size() === n, 'usearch size after add');
        keepUsearch = index;
        return n / secs;
      },
    });
    log('  hnswlib-node: building (one thread)...');
    const rowArrays = rowsOf(data, n);
    let hIndex;
    const hSecs = await timed(async () => {
      hIndex = hnsw.build(n, rowArrays);
    });
    const hRate = n / hSecs;
    log(`  hnswlib-node insert: ${fmt(hRate)} vectors/s`);
    emit('vector.insert', 'vectors/s', median(rates.ours), 'usearch', median(rates.usearch));
    emit('vector.insert', 'vectors/s', median(rates.ours), 'hnswlib-node', hRate);

    // ---- recall sweep: each side's smallest ef reaching the target.
    const oursPick = pickEf('athanor', truth, queries, (q, ef) => ours.rows(ours.search(keep, q, ef)));
    const hPick = pickEf('hnswlib-node', truth, queryArrays, (q, ef) => hnsw.rows(hnsw.search(hIndex, q, ef)));
    log(`  athanor ef=${oursPick.ef} recall@${K}=${oursPick.recall.toFixed(4)}; hnswlib-node ef=${hPick.ef} recall@${K}=${hPick.recall.toFixed(4)}`);

    // ---- QPS and p95 at those ef values, interleaved rounds, single thread.
    const p95 = { ours: [], hnswlib: [] };
    hIndex.setEf(hPick.ef);
    const qps = await interleave('qps', rounds, {
      ours: async () => {
        const r = timeQueries(queries, (q) => keep.col.search(q, { k: K, efSearch: oursPick.ef }));
        p95.ours.push(r.p95Ms);
        return r.qps;
      },
      'hnswlib-node': async () => {
        const r = timeQueries(queryArrays, (q) => hIndex.searchKnn(q, K));
        p95.hnswlib.push(r.p95Ms);
        return r.qps;
      },
    });
    emit('vector.qps_at_recall95', 'queries/s', median(qps.ours), 'hnswlib-node', median(qps['hnswlib-node']));
    log(`  qps_at_recall95: athanor ef=${oursPick.ef} recall=${oursPick.recall.toFixed(4)}, hnswlib-node ef=${hPick.ef} recall=${hPick.recall.toFixed(4)}`);
    emit('vector.p95_ms', 'ms', median(p95.ours), 'hnswlib-node', median(p95.hnswlib));

    // ---- memory: each side's saved index loaded into a fresh process.
    await ours.close(keep);
    keep = null;
    const hPath = join(workDir, 'hnswlib.bin');
    hIndex.writeIndexSync(hPath);
    hIndex = null;
    keepUsearch = null;
    const lastOursDir = join(workDir, `ours-${round - 1}`);
    const memOurs = await measureMemory('athanor', lastOursDir);
    const memH = await measureMemory('hnswlib-node', hPath);
    check(memOurs.count === n && memH.count === n, 'memory probes loaded every vector');
    log(`  memory: athanor ${fmt(memOurs.bytes / n)} B/vector, hnswlib-node ${fmt(memH.bytes / n)} B/vector (raw vector ${DIM * 4} B)`);
    emit('vector.memory', 'bytes/vector', memOurs.bytes / n, 'hnswlib-node', memH.bytes / n);
  } finally {
    if (keep) await ours.close(keep);
    removeDir(workDir);
  }
}
