// embed: sentence embedding on CPU with all-MiniLM-L6-v2 (int8 ONNX), against transformers.js
// running the same model file on the same ONNX Runtime version (onnxruntime-node).
//
// Data (full / BENCH_QUICK=1): 2,000 / 400 English sentences from a seeded word-list
// generator (seed 1): 5 to 60 words, most 8 to 25 (a log-normal length spread), well under
// 128 tokens each, so neither side truncates. Same sentences, same order, on both sides.
//   throughput     sentences/s over the whole set: athanor one embedFlat(all) call
//                  (batchSize 32; it tokenises in parallel, sorts by length, batches
//                  internally) vs the transformers.js pipeline on consecutive chunks of 32
//   p95_batch_ms   p95 latency of one call on 32 consecutive sentences (lower is better):
//                  every chunk of the set, every round, both sides; p95 over all of them
// Both sides: mean pooling, L2-normalised, the same intra-op thread count (every core,
// BENCH_THREADS overrides), one inter-op thread. A cosine check between the two sides'
// vectors goes to stderr. Rounds: 3 / 2 (BENCH_ROUNDS overrides), interleaved; medians.
import { mkdirSync, symlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Embedder } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { QUICK, emit, fmt, freshDir, interleave, log, median, prng, removeDir, timed } from './_lib.mjs';
import { TRANSFORMERS, peerVersions } from './_peers.mjs';

export const description = 'all-MiniLM-L6-v2 int8 on CPU, 2,000 generated sentences: throughput and p95 of a 32-sentence batch; vs transformers.js';

const SIZES = QUICK ? { n: 400, rounds: 2 } : { n: 2_000, rounds: 3 };
if (process.env.BENCH_ROUNDS) SIZES.rounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
const THREADS = process.env.BENCH_THREADS ? Math.max(1, Number(process.env.BENCH_THREADS) | 0) : availableParallelism();
const BATCH = 32;
const DIM = 384;
const PEER_ID = 'minilm';

// ---------------------------------------------------------------- data

const W = {
  det: ['the', 'a', 'this', 'that', 'every', 'one', 'our', 'their', 'some', 'another'],
  adj: [
    'small', 'large', 'old', 'new', 'quiet', 'busy', 'bright', 'dark', 'careful', 'quick', 'slow', 'green',
    'heavy', 'local', 'remote', 'simple', 'complex', 'early', 'late', 'young', 'ancient', 'modern', 'tired',
    'clever', 'friendly', 'strange', 'warm', 'cold', 'empty', 'crowded', 'narrow', 'wide', 'broken', 'famous',
  ],
  noun: [
    'teacher', 'river', 'city', 'engineer', 'garden', 'report', 'window', 'market', 'student', 'doctor',
    'village', 'machine', 'forest', 'letter', 'kitchen', 'train', 'museum', 'company', 'painter', 'bridge',
    'farmer', 'library', 'server', 'database', 'customer', 'mountain', 'child', 'pilot', 'island', 'storm',
    'manager', 'recipe', 'bicycle', 'harbour', 'journalist', 'committee', 'neighbour', 'festival', 'orchard',
    'laboratory', 'musician', 'election', 'hospital', 'bakery', 'satellite', 'protest', 'candle', 'contract',
  ],
  verb: [
    'built', 'found', 'opened', 'moved', 'watched', 'described', 'repaired', 'visited', 'painted', 'sold',
    'carried', 'followed', 'measured', 'ignored', 'reported', 'designed', 'cleaned', 'cooked', 'planned',
    'replaced', 'studied', 'noticed', 'delivered', 'protected', 'questioned', 'approved', 'photographed',
  ],
  adv: ['quickly', 'slowly', 'carefully', 'quietly', 'suddenly', 'eventually', 'rarely', 'often', 'finally', 'barely'],
  prep: ['near', 'behind', 'across', 'inside', 'under', 'beside', 'around', 'through', 'after', 'before', 'without'],
  conj: ['and', 'but', 'because', 'while', 'although', 'so', 'until', 'when'],
  time: ['yesterday', 'last week', 'in the morning', 'on Sunday', 'every year', 'after the storm', 'at midnight', 'in March'],
};

const DANGLING = new Set([...W.det, ...W.adj, ...W.adv, ...W.prep, ...W.conj, 'in', 'on', 'at', 'after', 'every', 'last']);

/** `count` sentences with a log-normal word count (median ~15, clamped to 5..60). */
export function sentences(count, seed) {
  const rnd = prng(seed);
  const pick = (list) => list[Math.floor(rnd() * list.length)];
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const phrase = () => {
    const w = [pick(W.det)];
    if (rnd() < 0.6) w.push(pick(W.adj));
    if (rnd() < 0.2) w.push(pick(W.adj));
    w.push(pick(W.noun));
    return w;
  };
  const clause = () => {
    const w = phrase();
    if (rnd() < 0.25) w.push(pick(W.adv));
    w.push(pick(W.verb), ...phrase());
    if (rnd() < 0.5) w.push(pick(W.prep), ...phrase());
    if (rnd() < 0.2) w.push(pick(W.time));
    return w;
  };
  const out = [];
  for (let i = 0; i < count; i++) {
    const target = Math.min(60, Math.max(5, Math.round(Math.exp(Math.log(15) + 0.45 * normal()))));
    let words = clause();
    while (words.length < target) words.push(pick(W.conj), ...clause());
    words = words.join(' ').split(' ').slice(0, target); // multi-word entries count as their words
    while (words.length > 5 && DANGLING.has(words[words.length - 1])) words.pop(); // no "... under the."
    const s = words.join(' ');
    out.push(s[0].toUpperCase() + s.slice(1) + '.');
  }
  return out;
}

// ---------------------------------------------------------------- sides

/** transformers.js wants <localModelPath>/<id>/onnx/model.onnx and the json files at <id>/. */
function peerLayout(modelDir) {
  const root = freshDir('embed-peer');
  const dir = join(root, PEER_ID);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  symlinkSync(join(modelDir, 'model.onnx'), join(dir, 'onnx', 'model.onnx'));
  for (const f of ['tokenizer.json', 'config.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    symlinkSync(join(modelDir, f), join(dir, f));
  }
  return root;
}

async function openPeer(root) {
  const { env, pipeline } = await import('@huggingface/transformers');
  env.localModelPath = root + '/';
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  const p = await pipeline('feature-extraction', PEER_ID, TRANSFORMERS.pipelineOptions(THREADS));
  return p;
}

/** One peer call on `batch`; returns batch x DIM floats. */
async function peerEmbed(p, batch) {
  const out = await p(batch, TRANSFORMERS.callOptions);
  const data = out.data;
  if (typeof out.dispose === 'function') out.dispose();
  return data;
}

function chunks(texts) {
  const out = [];
  for (let i = 0; i < texts.length; i += BATCH) out.push(texts.slice(i, i + BATCH));
  return out;
}

function p95(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))];
}

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

/** Min and mean cosine between row i of `a` and row i of `b`, plus the worst row. */
function cosines(a, b, n) {
  let min = Infinity;
  let worst = -1;
  let sum = 0;
  let maxAbs = 0;
  for (let i = 0; i < n; i++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let k = i * DIM; k < (i + 1) * DIM; k++) {
      dot += a[k] * b[k];
      na += a[k] * a[k];
      nb += b[k] * b[k];
      maxAbs = Math.max(maxAbs, Math.abs(a[k] - b[k]));
    }
    const c = dot / Math.sqrt(na * nb);
    sum += c;
    if (c < min) {
      min = c;
      worst = i;
    }
  }
  return { min, mean: sum / n, worst, maxAbs };
}

// ---------------------------------------------------------------- run

export async function run() {
  const { n, rounds } = SIZES;
  log(`peers: ${peerVersions()}`);
  const modelDir = await ensureTestModel();
  const texts = sentences(n, 1);
  const batches = chunks(texts);
  log(`embed: ${QUICK ? 'QUICK' : 'full'} mode; ${fmt(n)} sentences, ${batches.length} batches of <= ${BATCH}, ${THREADS} intra-op threads, ${rounds} rounds`);

  const ours = await Embedder.open(modelDir, { batchSize: BATCH, threads: THREADS });
  check(ours.dimension === DIM, `athanor dimension ${ours.dimension}`);
  const peerRoot = peerLayout(modelDir);
  try {
    const peer = await openPeer(peerRoot);

    // Inputs: word and token counts; both tokenisers must agree and nothing may be truncated.
    const words = texts.map((s) => s.split(' ').length);
    const toks = texts.map((s) => ours.tokenize(s).length);
    let differ = 0;
    for (let i = 0; i < n; i++) {
      const theirs = peer.tokenizer.encode(texts[i]);
      const mine = ours.tokenize(texts[i]);
      if (theirs.length !== mine.length || theirs.some((t, k) => Number(t) !== mine[k])) differ++;
    }
    const sw = [...words].sort((a, b) => a - b);
    const st = [...toks].sort((a, b) => a - b);
    const q = (s, f) => s[Math.min(s.length - 1, Math.floor(s.length * f))];
    log(`  data: words min/p10/median/p90/max ${sw[0]}/${q(sw, 0.1)}/${q(sw, 0.5)}/${q(sw, 0.9)}/${sw[sw.length - 1]}; ` +
      `tokens (with [CLS]/[SEP]) ${st[0]}/${q(st, 0.1)}/${q(st, 0.5)}/${q(st, 0.9)}/${st[st.length - 1]}; mean ${(toks.reduce((a, b) => a + b, 0) / n).toFixed(1)}`);
    log(`  data: token ids differ between the two tokenisers for ${differ} of ${n} sentences`);
    check(st[st.length - 1] < 128, 'every sentence is under 128 tokens');
    log(`  example: "${texts[0]}"`);

    // Warm-up, untimed: a few batches on each side.
    for (const b of batches.slice(0, 2)) {
      await ours.embedFlat(b);
      await peerEmbed(peer, b);
    }

    // ---- throughput: the whole set, interleaved rounds.
    let oursAll = null;
    let peerAll = null;
    const tp = await interleave('throughput', rounds, {
      ours: async () => {
        let v;
        const secs = await timed(async () => {
          v = await ours.embedFlat(texts);
        });
        check(v.length === n * DIM, 'athanor returned n x dim floats');
        oursAll = v;
        return n / secs;
      },
      'transformers.js': async () => {
        const v = new Float32Array(n * DIM);
        const secs = await timed(async () => {
          for (let i = 0; i < batches.length; i++) v.set(await peerEmbed(peer, batches[i]), i * BATCH * DIM);
        });
        peerAll = v;
        return n / secs;
      },
    });

    const cos = cosines(oursAll, peerAll, n);
    const cosLine = `  sanity: cosine(athanor, transformers.js) per sentence over ${n}: min ${cos.min.toFixed(7)}, mean ${cos.mean.toFixed(7)}, max |difference| of a component ${cos.maxAbs.toExponential(2)}`;
    if (cos.min < 0.999) {
      log('!'.repeat(78));
      log(`${cosLine}  BELOW 0.999 (worst: #${cos.worst} "${texts[cos.worst]}")`);
      log('!'.repeat(78));
    } else {
      log(cosLine);
    }

    emit('embed.throughput', 'sentences/s', 'higher', median(tp.ours), TRANSFORMERS.label, median(tp['transformers.js']));

    // ---- p95 of one 32-sentence call: every batch, every round, both sides.
    const lat = { ours: [], 'transformers.js': [] };
    const timeBatches = async (name, call) => {
      for (const b of batches) {
        const t0 = process.hrtime.bigint();
        const v = await call(b);
        lat[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
        check(v.length === b.length * DIM, `${name} returned batch x dim floats`);
      }
      return p95(lat[name].slice(-batches.length));
    };
    await interleave('p95_batch_ms (this round)', rounds, {
      ours: () => timeBatches('ours', (b) => ours.embedFlat(b)),
      'transformers.js': () => timeBatches('transformers.js', (b) => peerEmbed(peer, b)),
    });
    log(`  p95_batch_ms: median batch ${median(lat.ours).toFixed(1)} ms vs ${median(lat['transformers.js']).toFixed(1)} ms; over ${lat.ours.length} batches per side`);
    emit('embed.p95_batch_ms', 'ms', 'lower', p95(lat.ours), TRANSFORMERS.label, p95(lat['transformers.js']));

    await peer.dispose?.();
  } finally {
    ours.close();
    removeDir(peerRoot);
  }
}
