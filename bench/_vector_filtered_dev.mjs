// Development harness for `vector.filtered_qps` at full size (not a group: `_` files are
// skipped by run.mjs). The same data, filters, sides and oracle as bench/vector.mjs's
// filtered group, but the two indexes are built once and kept under bench/.data/ so the
// timed part can be repeated after each engine change without a rebuild:
//   node --expose-gc bench/_vector_filtered_dev.mjs            (ROUNDS=5, SEL=0.9,0.25 to narrow)
// Prints the same JSON lines as the group, plus an unfiltered line (selectivity 1).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Athanor } from '../dist/index.js';
import { lowRank, mulberry32 } from '../test/fixtures/lowrank.mjs';
import { emit, log, median } from './_lib.mjs';
import { HNSWLIB, hnswlibBuild } from './_peers.mjs';

const N = Number(process.env.N ?? 50_000);
const Q = Number(process.env.Q ?? 200);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SELECTIVITIES = (process.env.SEL ?? '0.001,0.01,0.06,0.25,0.9,1').split(',').map(Number);
const DIM = 384;
const INTRINSIC = 32;
const M = 16;
const EF_CONSTRUCTION = 200;
const K = 10;
const FILTER_BUCKETS = 1000;
const FILTER_EF = 64;

const here = fileURLToPath(new URL('.', import.meta.url));
const base = join(here, '.data', `filtered-${N}`);
mkdirSync(base, { recursive: true });

const data = lowRank({ n: N, dim: DIM, intrinsic: INTRINSIC, seed: 3, basisSeed: 1 });
const qdata = lowRank({ n: Q, dim: DIM, intrinsic: INTRINSIC, seed: 4, basisSeed: 1 });
const ids = Array.from({ length: N }, (_, i) => 'd' + i);
const perm = Array.from({ length: N }, (_, i) => i);
const rnd = mulberry32(7);
for (let i = N - 1; i > 0; i--) {
  const j = Math.floor(rnd() * (i + 1));
  [perm[i], perm[j]] = [perm[j], perm[i]];
}
const bucket = Int32Array.from(perm, (p) => p % FILTER_BUCKETS);
const rows = (d, n) => Array.from({ length: n }, (_, i) => Array.from(d.subarray(i * DIM, (i + 1) * DIM)));
const queries = Array.from({ length: Q }, (_, i) => qdata.subarray(i * DIM, (i + 1) * DIM));
const queryArrays = rows(qdata, Q);

// The oracle (plain JS, independent of every index): each query's top K among the
// matching rows, per selectivity, cached beside the indexes.
const truthPath = join(base, `truth-${Q}.json`);
const truthBySel = existsSync(truthPath) ? JSON.parse(readFileSync(truthPath, 'utf8')) : {};
let scores;
function truthFor(sel, allowed) {
  if (!truthBySel[sel]) {
    scores ??= queries.map((qv) => {
      const sc = new Float64Array(N);
      for (let i = 0; i < N; i++) {
        let dot = 0;
        const off = i * DIM;
        for (let d = 0; d < DIM; d++) dot += qv[d] * data[off + d];
        sc[i] = dot;
      }
      return sc;
    });
    truthBySel[sel] = scores.map((sc) => {
      const idx = [];
      for (let i = 0; i < N; i++) if (allowed[i]) idx.push(i);
      idx.sort((a, b) => sc[b] - sc[a]);
      return idx.slice(0, K);
    });
    writeFileSync(truthPath, JSON.stringify(truthBySel));
  }
  return truthBySel[sel].map((t) => new Set(t));
}

const dbDir = join(base, 'athanor');
if (!existsSync(dbDir)) {
  log('building athanor collection');
  const db = await Athanor.open(dbDir);
  const col = db.vectors.create('bench', { dimension: DIM, metric: 'cosine', m: M, efConstruction: EF_CONSTRUCTION });
  await col.upsertMany(ids, data, Array.from(bucket, (r) => ({ r })));
  await col.waitIndexed();
  await db.close();
}
const db = await Athanor.open(dbDir);
const col = db.vectors.open('bench');
await col.waitIndexed();
const hPath = join(base, 'hnswlib.bin');
let hIndex;
if (existsSync(hPath)) {
  const hnswlib = (await import('hnswlib-node')).default;
  hIndex = new hnswlib.HierarchicalNSW('cosine', DIM);
  hIndex.readIndexSync(hPath);
} else {
  log('building hnswlib-node index');
  hIndex = hnswlibBuild(DIM, M, EF_CONSTRUCTION, rows(data, N));
  hIndex.writeIndexSync(hPath);
}
hIndex.setEf(FILTER_EF);

// Queries per CPU-second of this process, per side (the searches are single-threaded):
// on a loaded shared machine it moves less than wall-clock rates; printed to stderr only.
const cpuRates = {};
// _lib's interleave() rotates the sides, which keeps their cyclic order: with three sides
// `ours` ran right after hnswlib-node in nearly every round, and paid for what that side
// left behind (its garbage, caches full of its data). Here odd rounds run the sides in
// the reverse order, so each side follows each other side equally often, and every side
// runs a few queries untimed first.
async function interleave(metric, rounds, sides) {
  const names = Object.keys(sides);
  const out = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    const order = names.map((_, j) => names[(Math.floor(r / 2) + j) % names.length]);
    if (r % 2 === 1) order.reverse();
    for (const name of order) out[name].push(await sides[name]());
    log(`  ${metric} round ${r + 1}/${rounds}: ` + order.map((n) => `${n}=${Math.round(out[n][out[n].length - 1])}`).join(' '));
  }
  return out;
}
const WARMUP = Number(process.env.WARMUP ?? 5);

function timeQueries(qs, searchOne, name) {
  for (let i = 0; i < Math.min(WARMUP, qs.length); i++) searchOne(qs[i], i);
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < qs.length; i++) searchOne(qs[i], i);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  (cpuRates[name] ??= []).push(qs.length / ((c.user + c.system) / 1e6));
  return qs.length / wall;
}
const recallAt = (truth, found) => {
  let hit = 0;
  let total = 0;
  for (let q = 0; q < truth.length; q++) {
    total += truth[q].size;
    for (const r of found[q]) if (truth[q].has(r)) hit++;
  }
  return Number((hit / total).toFixed(4));
};

for (const sel of SELECTIVITIES) {
  const lt = Math.round(sel * FILTER_BUCKETS);
  const filter = sel >= 1 ? undefined : { r: { lt } };
  const allowed = Uint8Array.from(bucket, (r) => (sel >= 1 || r < lt ? 1 : 0));
  const matching = allowed.reduce((a, x) => a + x, 0);
  const truth = truthFor(sel, allowed);
  const allow = (label) => allowed[label] === 1;
  const found = {};
  const side = (name, qs, one, toRows) => async () => {
    const res = new Array(qs.length);
    globalThis.gc?.();
    const qps = timeQueries(qs, (q, i) => (res[i] = one(q)), name);
    found[name] = res.map(toRows);
    return qps;
  };
  const oursRows = (res) => res.map((r) => Number(r.id.slice(1)));
  const sides = {
    ours: side('ours', queries, (q) => col.search(q, { k: K, efSearch: FILTER_EF, filter }), oursRows),
    exact: side('exact', queries, (q) => col.search(q, { k: K, exact: true, filter }), oursRows),
    [HNSWLIB.label]: side(HNSWLIB.label, queryArrays, (q) => (sel >= 1 ? hIndex.searchKnn(q, K) : hIndex.searchKnn(q, K, allow)), (r) => r.neighbors),
  };
  // NO_PEER=1: athanor's two sides only (a check that ours and exact cost the same when they run the same plan).
  if (process.env.NO_PEER === '1') delete sides[HNSWLIB.label];
  const plan = col.explain({ k: K, efSearch: FILTER_EF, filter });
  log(`selectivity ${sel}: plan ${JSON.stringify(plan)}`);
  const qps = await interleave(`filtered ${sel * 100}%`, ROUNDS, sides);
  const cpu = Object.fromEntries(Object.entries(cpuRates).map(([k, v]) => [k, Math.round(median(v))]));
  for (const k of Object.keys(cpuRates)) delete cpuRates[k];
  log(`  filtered ${sel * 100}% queries per CPU-second (medians): ${JSON.stringify(cpu)}; ours/hnswlib-node ${cpu[HNSWLIB.label] ? (cpu.ours / cpu[HNSWLIB.label]).toFixed(3) : '-'}, ours/exact ${(cpu.ours / cpu.exact).toFixed(3)}`);
  const recall = Object.fromEntries(Object.entries(found).map(([k, f]) => [k, recallAt(truth, f)]));
  const common = { selectivity: sel, matching, recall: recall.ours };
  emit('vector.filtered_qps', 'queries/s', 'higher', median(qps.ours), 'athanor exact', median(qps.exact), { ...common, peerRecall: recall.exact });
  if (qps[HNSWLIB.label]) emit('vector.filtered_qps', 'queries/s', 'higher', median(qps.ours), HNSWLIB.label, median(qps[HNSWLIB.label]), { ...common, peerRecall: recall[HNSWLIB.label], peerEf: FILTER_EF });
}
await db.close();
