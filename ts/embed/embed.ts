/**
 * Local text embeddings: a sentence-embedding model (ONNX) run in-process by ONNX
 * Runtime on the libuv thread pool. No Python, no service, no network at run time.
 */
import { describeThrown } from '../internal/thrown.js';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ClosedError, InvalidArgumentError, RuntimeLoadError, fromNative } from '../errors.js';
import { downloadModel, type PretrainedOptions } from './hub.js';
import { native } from '../internal/native.js';
import type { NativeEmbedder } from '../internal/native.js';

/** Where the model runs. `cuda` needs linux-x64 with CUDA provider libraries; `coreml` needs macOS. */
export type ExecutionProvider = 'cpu' | 'cuda' | 'coreml';

/** How token vectors become one text vector. */
export type Pooling = 'mean' | 'cls' | 'max';

/** Options of {@link Embedder.open}. */
export interface EmbedderOptions {
  /**
   * Providers to try, in order (default `['cpu']`). With `onProviderUnavailable:
   * 'fallback'` the CPU provider is tried last even when not listed.
   */
  providers?: readonly ExecutionProvider[];
  /**
   * A listed provider that cannot start (missing libraries, no device): `'fallback'`
   * (default) logs why through `onLog` and tries the next; `'error'` rejects with
   * `ProviderError` (`ERR_PROVIDER`).
   */
  onProviderUnavailable?: 'fallback' | 'error';
  /** Receives fallback notices (default: `process.emitWarning`). */
  onLog?: (message: string) => void;
  /**
   * The ONNX Runtime shared library (1.24 to 1.30). Default: env `ATHANOR_ORT_LIB`,
   * else the library bundled in the optional dependency `onnxruntime-node`.
   */
  runtimePath?: string;
  /** Texts per model run (default 32). */
  batchSize?: number;
  /** Token limit per text; longer texts are truncated (default: the model's, e.g. 256 for all-MiniLM-L6-v2). */
  maxLength?: number;
  /** Pooling (default: the model's `1_Pooling/config.json`, else mean). */
  pooling?: Pooling;
  /** L2-normalise every vector (default true), so dot product equals cosine similarity. */
  normalize?: boolean;
  /**
   * ONNX Runtime threads per session (default: the cores divided between the sessions).
   * At most the number of cores (at least 4); `sessions x threads` at most twice that.
   */
  threads?: number;
  /**
   * Independent sessions, so that concurrent calls run in parallel (default 1; each uses
   * `threads`). At most the number of cores (at least 4, at most 64).
   */
  sessions?: number;
}

/** Progress of a long {@link Embedder.embedMany} call. */
export interface EmbedProgress {
  /** Texts embedded so far. */
  done: number;
  /** Texts in the call. */
  total: number;
}

/** Options of {@link Embedder.embedMany}. */
export interface EmbedManyOptions {
  /** Called after each chunk. */
  onProgress?: (p: EmbedProgress) => void;
  /** Stops between chunks; the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Texts per native call, the granularity of progress and cancellation (default 1024). */
  chunkSize?: number;
}

/** One provider tried at open; `error` says why it could not start (unset for the one that runs). */
export interface ProviderAttempt {
  /** The execution provider tried. */
  provider: ExecutionProvider;
  /** Why it could not start (absent when it did). */
  error?: string;
}

const require = createRequire(import.meta.url);

/** The ONNX Runtime library bundled in onnxruntime-node for this platform, or undefined. @internal */
export function bundledRuntimePath(): string | undefined {
  const file =
    process.platform === 'darwin' ? 'libonnxruntime.1.dylib' : process.platform === 'win32' ? 'onnxruntime.dll' : 'libonnxruntime.so.1';
  let pkg: string;
  try {
    pkg = require.resolve('onnxruntime-node/package.json');
  } catch {
    return undefined;
  }
  const p = path.join(path.dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch, file);
  return fs.existsSync(p) ? p : undefined;
}

function resolveRuntime(given: string | undefined): string {
  const p = given ?? process.env.ATHANOR_ORT_LIB ?? bundledRuntimePath();
  if (p === undefined) {
    throw new RuntimeLoadError(
      `no ONNX Runtime library found for ${process.platform}-${process.arch}: embeddings need it, and athanor does not install it for you. ` +
        'Run `ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node@1.30.0` (the variable skips its optional CUDA download, so it installs from npm alone), ' +
        'or pass runtimePath / set ATHANOR_ORT_LIB to the path of a libonnxruntime 1.24 or newer',
    );
  }
  return path.resolve(p);
}

function positiveInt(v: unknown, name: string, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) throw new InvalidArgumentError(`${name} must be an integer from 1 to ${max}, got ${describeThrown(v)}`);
  return v;
}

function checkTexts(texts: unknown): asserts texts is readonly string[] {
  if (!Array.isArray(texts)) throw new InvalidArgumentError(`texts must be an array of strings, got ${texts === null ? 'null' : typeof texts}`);
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') throw new InvalidArgumentError(`texts[${i}] must be a string, got ${texts[i] === null ? 'null' : typeof texts[i]}`);
  }
}

/**
 * A loaded sentence-embedding model. Calls run on the libuv thread pool and never
 * block the event loop; several calls may be in flight at once.
 *
 * ```ts
 * const embedder = await Embedder.open('./models/all-MiniLM-L6-v2');
 * const v = await embedder.embed('The cat sits on the mat.'); // Float32Array(384), unit length
 * ```
 */
export class Embedder {
  readonly #native: NativeEmbedder;
  #closed = false;
  /** Length of every vector. */
  readonly dimension: number;
  /** The execution provider that runs the model. */
  readonly provider: ExecutionProvider;
  /** Every provider tried at open, in order, with why those before {@link provider} failed. */
  readonly providerAttempts: readonly ProviderAttempt[];
  /** Token limit per text. */
  readonly maxLength: number;
  /** Pooling in use. */
  readonly pooling: Pooling;
  /** Whether vectors are L2-normalised. */
  readonly normalize: boolean;
  /** Texts per model run. */
  readonly batchSize: number;
  /** The model directory. */
  readonly modelDir: string;
  /**
   * Identifies the vector space: SHA-256 of model.onnx plus pooling and normalisation.
   * Collections remember it, so vectors from another model are never mixed in.
   */
  readonly modelId: string;
  /** The ONNX Runtime library in use. */
  readonly runtimePath: string;

  private constructor(n: NativeEmbedder) {
    this.#native = n;
    const info = n.info();
    this.dimension = info.dimension;
    this.provider = info.provider as ExecutionProvider;
    this.providerAttempts = info.attempts.map((a) => (a.error == null ? { provider: a.provider as ExecutionProvider } : { provider: a.provider as ExecutionProvider, error: a.error }));
    this.maxLength = info.maxLength;
    this.pooling = info.pooling as Pooling;
    this.normalize = info.normalize;
    this.batchSize = info.batchSize;
    this.modelDir = info.modelDir;
    this.runtimePath = info.runtimePath;
    this.modelId = `sha256:${info.modelSha256}/${this.pooling}${this.normalize ? '/normalized' : ''}`;
  }

  /**
   * Loads a model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`,
   * `config.json`, and when present `sentence_bert_config.json`,
   * `tokenizer_config.json`, `1_Pooling/config.json`. Runs one text through it before
   * resolving, so a model that cannot run fails here (`ModelError`), not later.
   */
  static async open(dir: string, options: EmbedderOptions = {}): Promise<Embedder> {
    if (typeof dir !== 'string' || dir.length === 0) throw new InvalidArgumentError('Embedder.open needs a model directory path');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object');
    const providers = options.providers ?? ['cpu'];
    if (!Array.isArray(providers) || providers.length === 0) throw new InvalidArgumentError("providers must be a non-empty array of 'cpu', 'cuda', 'coreml'");
    for (const p of providers) {
      if (p !== 'cpu' && p !== 'cuda' && p !== 'coreml') throw new InvalidArgumentError(`unknown execution provider ${describeThrown(p)}; use 'cpu', 'cuda' or 'coreml'`);
    }
    const policy = options.onProviderUnavailable ?? 'fallback';
    if (policy !== 'fallback' && policy !== 'error') throw new InvalidArgumentError("onProviderUnavailable must be 'fallback' or 'error'");
    const pooling = options.pooling;
    if (pooling !== undefined && pooling !== 'mean' && pooling !== 'cls' && pooling !== 'max') throw new InvalidArgumentError("pooling must be 'mean', 'cls' or 'max'");
    if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new InvalidArgumentError('normalize must be a boolean');
    const batchSize = positiveInt(options.batchSize, 'batchSize', 4096) ?? 32;
    const maxLength = positiveInt(options.maxLength, 'maxLength', 1 << 16);
    if (maxLength !== undefined && maxLength < 2) throw new InvalidArgumentError('maxLength must be at least 2 tokens');
    // Only the type is checked here; the bounds depend on the machine's cores and are checked natively.
    const threads = positiveInt(options.threads, 'threads', 1 << 16);
    const sessions = positiveInt(options.sessions, 'sessions', 1 << 16) ?? 1;
    const runtimePath = resolveRuntime(options.runtimePath);
    let n: NativeEmbedder;
    try {
      n = await native.embedderOpen({
        dir: path.resolve(dir),
        runtimePath,
        providers: [...providers],
        fallback: policy === 'fallback',
        batchSize,
        maxLength,
        pooling,
        normalize: options.normalize ?? true,
        threads,
        sessions,
      });
    } catch (e) {
      throw fromNative(e);
    }
    const embedder = new Embedder(n);
    const failed = embedder.providerAttempts.filter((a) => a.error !== undefined);
    if (failed.length > 0) {
      const log = options.onLog ?? ((m: string) => process.emitWarning(m));
      for (const a of failed) log(`athanor embedder: execution provider ${a.provider} could not start (${a.error}); using ${embedder.provider}`);
    }
    return embedder;
  }

  /**
   * Downloads a model from a Hugging Face-style hub into a local cache (resumable,
   * integrity-checked; no network once cached) and opens it. See {@link downloadModel}.
   *
   * ```ts
   * const e = await Embedder.fromPretrained('sentence-transformers/all-MiniLM-L6-v2', { cacheDir: './models' });
   * ```
   */
  static async fromPretrained(repoId: string, options: EmbedderOptions & PretrainedOptions = {}): Promise<Embedder> {
    const dir = await downloadModel(repoId, options);
    return Embedder.open(dir, options);
  }

  #live(): NativeEmbedder {
    if (this.#closed) throw new ClosedError('the embedder is closed; open it again with Embedder.open()');
    return this.#native;
  }

  /** Embeds one text. */
  async embed(text: string): Promise<Float32Array> {
    if (typeof text !== 'string') throw new InvalidArgumentError(`text must be a string, got ${text === null ? 'null' : typeof text}`);
    return this.embedFlat([text]);
  }

  /**
   * Embeds many texts; returns `texts.length * dimension` floats, row `i` for
   * `texts[i]` (the layout `VectorCollection.upsertMany` takes). Texts are sorted by
   * length internally so each batch pads little; the result is in input order.
   */
  async embedFlat(texts: readonly string[], options: EmbedManyOptions = {}): Promise<Float32Array> {
    checkTexts(texts);
    const n = this.#live();
    const chunk = positiveInt(options.chunkSize, 'chunkSize', 1 << 20) ?? 1024;
    if (texts.length <= chunk && options.onProgress === undefined && options.signal === undefined) {
      try {
        return await n.embed(texts as string[]);
      } catch (e) {
        throw fromNative(e);
      }
    }
    const out = new Float32Array(texts.length * this.dimension);
    for (let i = 0; i < texts.length; i += chunk) {
      options.signal?.throwIfAborted();
      let part: Float32Array;
      try {
        part = await this.#live().embed(texts.slice(i, i + chunk) as string[]);
      } catch (e) {
        throw fromNative(e);
      }
      out.set(part, i * this.dimension);
      options.onProgress?.({ done: Math.min(texts.length, i + chunk), total: texts.length });
    }
    return out;
  }

  /** Embeds many texts; one `Float32Array` per text (views over one buffer). */
  async embedMany(texts: readonly string[], options: EmbedManyOptions = {}): Promise<Float32Array[]> {
    const flat = await this.embedFlat(texts, options);
    const d = this.dimension;
    const rows: Float32Array[] = new Array(texts.length);
    for (let i = 0; i < texts.length; i++) rows[i] = flat.subarray(i * d, (i + 1) * d);
    return rows;
  }

  /** The token ids the model sees for `text` (special tokens included, truncated to {@link maxLength}). */
  tokenize(text: string): number[] {
    if (typeof text !== 'string') throw new InvalidArgumentError('text must be a string');
    try {
      return this.#live().tokenize(text);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Releases the model once calls in flight finish; later calls throw `ClosedError`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }
}
