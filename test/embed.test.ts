/**
 * The Embedder through the public API, on the real all-MiniLM-L6-v2 (int8 ONNX)
 * model from scripts/test-model.mjs, checked against transformers.js running the
 * same ONNX file as the reference implementation.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClosedError, Embedder, InvalidArgumentError, ModelError, ProviderError, RuntimeLoadError } from '../dist/index.js';
import { TEST_MODEL_FILES, ensureTestModel } from '../scripts/test-model.mjs';
import { expectRejects, expectThrows, loopDuring, expectLoopTurned, removeDir, tempDir } from './helpers.js';

let modelDir = '';
let embedder: Embedder;

beforeAll(async () => {
  modelDir = await ensureTestModel();
  embedder = await Embedder.open(modelDir);
});
afterAll(() => embedder?.close());

function cos(a: Float32Array, b: Float32Array | number[]): number {
  let d = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return d / Math.sqrt(na * nb);
}

/** A fixed set: short and long, punctuation, digits, accents, an empty-ish one. */
const SENTENCES = [
  'The cat sits on the mat.',
  'A feline is resting on a rug.',
  'Stock markets fell sharply today after the central bank raised interest rates.',
  'How do I reset my password?',
  'I forgot my login credentials and need to recover my account.',
  'The quick brown fox jumps over the lazy dog.',
  'Transfer 250 EUR from checking to savings on 2026-11-23.',
  'Café au lait, s’il vous plaît!',
  'Photosynthesis converts light energy into chemical energy stored in glucose.',
  'An append-only event log makes every state change auditable and replayable.',
  'hello',
  'Vector search finds the nearest neighbours of an embedding among millions of documents in milliseconds, using a graph index.',
];

/** transformers.js on the same model.onnx: the reference implementation. */
async function reference(texts: string[], pooling: 'mean' | 'cls' = 'mean', normalize = true): Promise<number[][]> {
  const { pipeline, env } = await import('@huggingface/transformers');
  const root = tempDir('athanor-tjs-');
  try {
    const id = path.join(root, 'minilm');
    fs.mkdirSync(path.join(id, 'onnx'), { recursive: true });
    fs.symlinkSync(path.join(modelDir, 'model.onnx'), path.join(id, 'onnx', 'model.onnx'));
    for (const f of ['tokenizer.json', 'config.json', 'tokenizer_config.json', 'special_tokens_map.json']) fs.symlinkSync(path.join(modelDir, f), path.join(id, f));
    env.localModelPath = root + path.sep;
    env.allowRemoteModels = false;
    const extract = await pipeline('feature-extraction', 'minilm', { dtype: 'fp32', device: 'cpu' });
    const out = await extract(texts, { pooling, normalize });
    const rows = out.tolist() as number[][];
    await extract.dispose();
    return rows;
  } finally {
    removeDir(root);
  }
}

describe('Embedder', () => {
  it('reports the model it runs', () => {
    expect(embedder.dimension).toBe(384);
    expect(embedder.provider).toBe('cpu');
    expect(embedder.pooling).toBe('mean');
    expect(embedder.normalize).toBe(true);
    expect(embedder.maxLength).toBe(256);
    expect(embedder.modelId).toBe(`sha256:${TEST_MODEL_FILES['model.onnx']!.sha256}/mean/normalized`);
    expect(fs.existsSync(embedder.runtimePath)).toBe(true);
  });

  it('matches transformers.js on the same ONNX file to cosine >= 0.999', async () => {
    const ours = await embedder.embedMany(SENTENCES);
    const theirs = await reference(SENTENCES);
    expect(ours).toHaveLength(SENTENCES.length);
    for (let i = 0; i < SENTENCES.length; i++) {
      const c = cos(ours[i]!, theirs[i]!);
      expect(c, SENTENCES[i]).toBeGreaterThanOrEqual(0.999);
    }
  });

  it('pools with CLS when asked: the first token\'s hidden state, as transformers.js computes it, not the mean', async () => {
    const cls = await Embedder.open(modelDir, { pooling: 'cls', normalize: false });
    try {
      expect(cls.pooling).toBe('cls');
      const texts = SENTENCES.slice(0, 6);
      const ours = await cls.embedMany(texts);
      const theirs = await reference(texts, 'cls', false);
      const means = await reference(texts, 'mean', false);
      for (let i = 0; i < texts.length; i++) {
        expect(cos(ours[i]!, theirs[i]!), texts[i]).toBeGreaterThanOrEqual(0.999);
        // Unnormalised, so the lengths must agree too.
        const norm = (v: ArrayLike<number>): number => Math.hypot(...Array.from(v));
        expect(norm(ours[i]!) / norm(theirs[i]!)).toBeCloseTo(1, 2);
        // The mean over tokens is a different vector: a CLS option that pooled by mean fails here.
        expect(cos(ours[i]!, means[i]!), texts[i]).toBeLessThan(0.99);
      }
    } finally {
      cls.close();
    }
  });

  it('scores paraphrases above unrelated sentences', async () => {
    const [cat, feline, stocks, reset, forgot, fox] = await embedder.embedMany(SENTENCES.slice(0, 6));
    expect(cos(cat!, feline!)).toBeGreaterThan(cos(cat!, stocks!) + 0.2);
    expect(cos(reset!, forgot!)).toBeGreaterThan(cos(reset!, fox!) + 0.2);
    expect(cos(reset!, forgot!)).toBeGreaterThan(cos(reset!, stocks!));
  });

  it('returns rows in input order, the same as one-by-one, with progress and cancellation', async () => {
    const texts = Array.from({ length: 70 }, (_, i) => `${'word '.repeat(i % 23)}sentence number ${i}`);
    const seen: number[] = [];
    const flat = await embedder.embedFlat(texts, { chunkSize: 25, onProgress: (p) => seen.push(p.done) });
    expect(flat).toHaveLength(70 * 384);
    expect(seen).toEqual([25, 50, 70]);
    for (const i of [0, 13, 69]) {
      const alone = await embedder.embed(texts[i]!);
      expect(cos(alone, flat.subarray(i * 384, (i + 1) * 384))).toBeGreaterThan(0.9999);
    }
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(embedder.embedFlat(texts, { signal: ac.signal })).rejects.toThrow('stop');
    expect(await embedder.embedFlat([])).toHaveLength(0);
  });

  it('runs calls concurrently without mixing their results', async () => {
    const a = SENTENCES.slice(0, 6);
    const b = SENTENCES.slice(6);
    const [ra, rb, ra2] = await Promise.all([embedder.embedMany(a), embedder.embedMany(b), embedder.embedMany(a)]);
    for (let i = 0; i < a.length; i++) expect(cos(ra![i]!, ra2![i]!)).toBeGreaterThan(0.99999);
    expect(rb).toHaveLength(b.length);
  });

  it('embeds on the libuv pool: the event loop keeps turning while a long batch runs', async () => {
    const texts = Array.from({ length: 256 }, (_, i) => `${SENTENCES[i % SENTENCES.length]!} (${i})`);
    const long = await loopDuring(() => embedder.embedMany(texts));
    expect(long.value).toHaveLength(256);
    expectLoopTurned(long);
  });

  it('tokenizes as the model sees it, truncated to maxLength', () => {
    const ids = embedder.tokenize('hello world');
    expect(ids[0]).toBe(101); // [CLS]
    expect(ids.at(-1)).toBe(102); // [SEP]
    expect(embedder.tokenize('word '.repeat(1000))).toHaveLength(256);
  });

  it('rejects bad input with typed errors before running anything', async () => {
    await expectRejects(embedder.embedMany(['ok', 42 as unknown as string]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(embedder.embedMany('text' as unknown as string[]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(embedder.embed(null as unknown as string), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(Embedder.open(path.join(tempDir(), 'nope')), ModelError, 'ERR_MODEL');
    await expectRejects(Embedder.open(modelDir, { batchSize: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(Embedder.open(modelDir, { providers: ['tpu' as 'cpu'] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(Embedder.open(modelDir, { pooling: 'sum' as 'mean' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // Another library than the one loaded cannot replace it in-process.
    await expectRejects(Embedder.open(modelDir, { runtimePath: '/nonexistent/libonnxruntime.so' }), RuntimeLoadError, 'ERR_RUNTIME');
  });

  it('fails or falls back, as asked, when a GPU provider cannot start', async () => {
    const gpu = process.platform === 'darwin' ? 'coreml' : 'cuda';
    let strict: Embedder | undefined;
    try {
      strict = await Embedder.open(modelDir, { providers: [gpu], onProviderUnavailable: 'error' });
    } catch (e) {
      expect(e).toBeInstanceOf(ProviderError);
      expect((e as ProviderError).code).toBe('ERR_PROVIDER');
      expect((e as Error).message).toContain(gpu);
    }
    if (strict !== undefined) {
      // A machine with the provider's libraries and a device: it really runs there.
      expect(strict.provider).toBe(gpu);
      strict.close();
      return;
    }
    const logs: string[] = [];
    const fallback = await Embedder.open(modelDir, { providers: [gpu, 'cpu'], onLog: (m) => logs.push(m) });
    expect(fallback.provider).toBe('cpu');
    expect(fallback.providerAttempts.map((a) => a.provider)).toEqual([gpu, 'cpu']);
    expect(fallback.providerAttempts[0]!.error).toBeTruthy();
    expect(logs.join('\n')).toContain(gpu);
    const v = await fallback.embed('still works');
    expect(v).toHaveLength(384);
    fallback.close();
  });

  it('refuses calls after close', async () => {
    const e = await Embedder.open(modelDir, { normalize: false });
    const v = await e.embed('not normalised');
    expect(Math.abs(Math.hypot(...v) - 1)).toBeGreaterThan(1e-3);
    e.close();
    await expectRejects(e.embed('x'), ClosedError, 'ERR_CLOSED');
    expectThrows(() => e.tokenize('x'), ClosedError, 'ERR_CLOSED');
  });

  it('fromPretrained downloads into the cache from a hub and opens the model', async () => {
    const files = new Map<string, Buffer>();
    for (const rel of Object.keys(TEST_MODEL_FILES)) files.set(rel, fs.readFileSync(path.join(modelDir, rel)));
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      const m = /^\/acme\/mini\/resolve\/main\/(.+)$/.exec(req.url ?? '');
      const data = m ? files.get(decodeURIComponent(m[1]!)) : undefined;
      if (data === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': data.length, etag: `"${createHash('sha256').update(data).digest('hex')}"` }).end(data);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const cacheDir = tempDir();
    try {
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const e = await Embedder.fromPretrained('acme/mini', { cacheDir, endpoint });
      expect(e.modelDir.startsWith(cacheDir)).toBe(true);
      expect(cos(await e.embed(SENTENCES[0]!), await embedder.embed(SENTENCES[0]!))).toBeGreaterThan(0.99999);
      e.close();
      const before = requests;
      const again = await Embedder.fromPretrained('acme/mini', { cacheDir, endpoint, offline: true });
      expect(requests).toBe(before);
      again.close();
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      removeDir(cacheDir);
    }
  });
});
