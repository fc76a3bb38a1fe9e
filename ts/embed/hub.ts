/**
 * Downloads a text-embedding model (ONNX export + tokenizer + configs) from a
 * Hugging Face-style hub into a local cache, resumably and with integrity checks,
 * so that `Embedder.open(await downloadModel('owner/name'))` works.
 *
 * No third-party HTTP library: Node's built-in `fetch` (undici, Node >= 20)
 * already does HTTPS, redirects (the hub sends LFS files to a CDN), streaming
 * bodies and abort signals; it also drops `Authorization` on cross-origin
 * redirects, so a token is not leaked to the CDN.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { DownloadError, IntegrityError, InvalidArgumentError, ModelError } from '../errors.js';

/** Progress of {@link downloadModel}, reported as bytes of one file arrive. */
export interface DownloadProgress {
  /** The file's path relative to the model directory, e.g. `model.onnx`. */
  file: string;
  /** Bytes of this file on disk so far (a resumed download starts above 0). */
  receivedBytes: number;
  /** The file's full size, when the server said. */
  totalBytes: number | undefined;
  /** 0-based position of this file among the files tried. */
  fileIndex: number;
  /** Number of files tried (optional ones the repo lacks are tried and skipped). */
  fileCount: number;
}

/** Options of {@link downloadModel}. */
export interface PretrainedOptions {
  /**
   * Cache root. Default: env `ATHANOR_CACHE_DIR`, else `$XDG_CACHE_HOME/athanor`,
   * else `~/.cache/athanor`. Models live under
   * `<cacheDir>/models/<owner>--<name>/<revision>/`.
   */
  cacheDir?: string;
  /** Hub base URL. Default: env `ATHANOR_HUB_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** Branch, tag or commit. Default `'main'`. */
  revision?: string;
  /** Access token for gated or private repos, sent as `Authorization: Bearer`. Default: env `HF_TOKEN`. */
  token?: string;
  /**
   * Pins: file path (relative to the model directory, e.g. `model.onnx`,
   * `tokenizer.json`) -> expected SHA-256 hex. A file that does not match is not
   * kept and the call fails with `IntegrityError`.
   */
  sha256?: Record<string, string>;
  /** Use only the cache, never the network; `ModelError` when the cache is incomplete. */
  offline?: boolean;
  /** Re-hash the cached files against the manifest even when their sizes match (slower; catches silent corruption). */
  verify?: boolean;
  /** Called as bytes arrive. */
  onProgress?: (p: DownloadProgress) => void;
  /** Aborts the download; what was fetched so far is kept for a resume. */
  signal?: AbortSignal;
  /** The fetch to use. Default: the global `fetch`. */
  fetch?: typeof globalThis.fetch;
}

/** A file of a model repo: where it is fetched from and where it is stored. */
interface FileSpec {
  /** Path in the local model directory. */
  local: string;
  /** Paths tried in the repo, in order; a 404 moves to the next. */
  remote: string[];
  required: boolean;
}

// Small files first, so a repo lacking tokenizer.json fails before a large model is fetched.
const FILES: readonly FileSpec[] = [
  { local: 'config.json', remote: ['config.json'], required: true },
  { local: 'tokenizer.json', remote: ['tokenizer.json'], required: true },
  { local: 'tokenizer_config.json', remote: ['tokenizer_config.json'], required: false },
  { local: 'special_tokens_map.json', remote: ['special_tokens_map.json'], required: false },
  { local: 'sentence_bert_config.json', remote: ['sentence_bert_config.json'], required: false },
  { local: '1_Pooling/config.json', remote: ['1_Pooling/config.json'], required: false },
  // Sentence-transformers repos keep their ONNX export under onnx/; Xenova-style ones at the top.
  { local: 'model.onnx', remote: ['onnx/model.onnx', 'model.onnx'], required: true },
];

const MANIFEST = '.athanor-model.json';
const MANIFEST_VERSION = 1;
const SHA256_HEX = /^[0-9a-f]{64}$/;
// Hub rules: letters, digits, '-', '_', '.'; '--' and '..' are forbidden there too,
// and we need that: '--' joins owner and name in the cache dir name, '..' would climb out of it.
const REPO_PART = /^[A-Za-z0-9_.-]{1,96}$/;

/** What `.athanor-model.json` holds: written once every file is complete. */
interface Manifest {
  version: number;
  repoId: string;
  revision: string;
  endpoint: string;
  files: Record<string, { size: number; sha256: string; source: string }>;
  completedAt: string;
}

/** What `<file>.part.json` holds next to a partial download. */
interface PartInfo {
  url: string;
  etag: string | undefined;
}

/** A file that is complete on disk. */
interface DoneFile {
  size: number;
  sha256: string;
  source: string;
}

/** Normalised options shared by the steps of one call. */
interface Ctx {
  repoId: string;
  revision: string;
  endpoint: string;
  dir: string;
  token: string | undefined;
  pins: Map<string, string>;
  offline: boolean;
  verify: boolean;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  signal: AbortSignal | undefined;
  fetch: typeof globalThis.fetch;
}

/** The default cache root: ATHANOR_CACHE_DIR, else $XDG_CACHE_HOME/athanor, else ~/.cache/athanor. */
export function defaultCacheDir(): string {
  const env = process.env;
  if (env['ATHANOR_CACHE_DIR']) return env['ATHANOR_CACHE_DIR'];
  if (env['XDG_CACHE_HOME']) return join(env['XDG_CACHE_HOME'], 'athanor');
  return join(homedir(), '.cache', 'athanor');
}

// One in-flight download per model directory in this process: a second caller
// waits for the first and then finds the files complete (or resumes what it left).
const locks = new Map<string, Promise<unknown>>();

/**
 * Downloads `repoId` (`owner/name`) at `options.revision` into the local cache and
 * returns the model directory, which holds `model.onnx`, `tokenizer.json`,
 * `config.json` and whichever optional configs the repo has. A complete cached
 * copy is returned without network access. Interrupted downloads resume on the
 * next call.
 *
 * @throws InvalidArgumentError for a malformed repo id, revision or option (before any I/O).
 * @throws ModelError when the repo lacks a required file, or `offline` and the cache is incomplete.
 * @throws DownloadError on a network failure or an HTTP error status (`status` says which).
 * @throws IntegrityError when a file does not match its hub SHA-256, its pin, or its size.
 */
export async function downloadModel(repoId: string, options: PretrainedOptions = {}): Promise<string> {
  const ctx = normalise(repoId, options);
  const prev = locks.get(ctx.dir) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => download(ctx));
  locks.set(ctx.dir, run);
  try {
    return await run;
  } finally {
    if (locks.get(ctx.dir) === run) locks.delete(ctx.dir);
  }
}

/** Validates the arguments and fills in defaults; throws InvalidArgumentError before any I/O. */
function normalise(repoId: string, options: PretrainedOptions): Ctx {
  if (typeof repoId !== 'string') throw new InvalidArgumentError('repoId must be a string like "owner/name"');
  const parts = repoId.split('/');
  if (parts.length !== 2 || !parts.every((p) => REPO_PART.test(p) && !p.includes('..') && !p.includes('--') && p !== '.')) {
    throw new InvalidArgumentError(
      `invalid repoId ${JSON.stringify(repoId)}: expected "owner/name" using letters, digits, '-', '_' and '.' (no '..' or '--'), e.g. "sentence-transformers/all-MiniLM-L6-v2"`,
    );
  }
  const revision = options.revision ?? 'main';
  if (
    typeof revision !== 'string' ||
    revision.length === 0 ||
    revision.length > 256 ||
    revision.startsWith('/') ||
    revision.includes('..') ||
    /[\u0000-\u001f\u007f\\]/.test(revision)
  ) {
    throw new InvalidArgumentError(
      `invalid revision ${JSON.stringify(revision)}: expected a branch, tag or commit such as "main" (not empty, no '..', no leading '/', no backslash or control characters)`,
    );
  }

  const endpointRaw = options.endpoint ?? (process.env['ATHANOR_HUB_ENDPOINT'] || 'https://huggingface.co');
  let endpointUrl: URL;
  try {
    endpointUrl = new URL(endpointRaw);
  } catch (e) {
    throw new InvalidArgumentError(`invalid endpoint ${JSON.stringify(endpointRaw)}: not a URL`, { cause: e });
  }
  if (endpointUrl.protocol !== 'https:' && endpointUrl.protocol !== 'http:') {
    throw new InvalidArgumentError(`invalid endpoint ${JSON.stringify(endpointRaw)}: must be http:// or https://`);
  }
  const endpoint = endpointRaw.replace(/\/+$/, '');

  const pins = new Map<string, string>();
  for (const [file, hash] of Object.entries(options.sha256 ?? {})) {
    // Accept the repo path of the ONNX model too (onnx/model.onnx), since that is what the hub shows.
    const spec = FILES.find((f) => f.local === file || f.remote.includes(file));
    if (!spec) {
      throw new InvalidArgumentError(
        `sha256 pin for ${JSON.stringify(file)}: not a file downloadModel fetches (${FILES.map((f) => f.local).join(', ')}); a pin that would never be checked is refused`,
      );
    }
    if (typeof hash !== 'string' || !SHA256_HEX.test(hash.toLowerCase())) {
      throw new InvalidArgumentError(`sha256 pin for ${file}: expected 64 hex characters, got ${JSON.stringify(hash)}`);
    }
    pins.set(spec.local, hash.toLowerCase());
  }

  if (options.fetch !== undefined && typeof options.fetch !== 'function') throw new InvalidArgumentError('fetch must be a function');
  const fetchFn = options.fetch ?? globalThis.fetch;
  if (typeof fetchFn !== 'function') throw new InvalidArgumentError('no global fetch in this runtime (Node >= 20 has one); pass options.fetch');
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  if (typeof cacheDir !== 'string' || cacheDir.length === 0) throw new InvalidArgumentError('cacheDir must be a non-empty path');

  const [owner, name] = parts as [string, string];
  return {
    repoId,
    revision,
    endpoint,
    // encodeURIComponent keeps a revision like "refs/pr/1" one directory level; "main" is unchanged.
    dir: join(cacheDir, 'models', `${owner}--${name}`, encodeURIComponent(revision)),
    token: options.token ?? (process.env['HF_TOKEN'] || undefined),
    pins,
    offline: options.offline ?? false,
    verify: options.verify ?? false,
    onProgress: options.onProgress,
    signal: options.signal,
    fetch: fetchFn,
  };
}

/** The whole download under the per-directory lock. */
async function download(ctx: Ctx): Promise<string> {
  ctx.signal?.throwIfAborted();
  const manifest = await readManifest(ctx);
  if (manifest && (await manifestCurrent(ctx, manifest))) return ctx.dir;

  const done = new Map<string, DoneFile>();
  const missing: string[] = [];
  for (const [index, spec] of FILES.entries()) {
    ctx.signal?.throwIfAborted();
    const cached = await cachedFile(ctx, spec, manifest);
    if (cached) {
      done.set(spec.local, cached);
      continue;
    }
    if (ctx.offline) {
      if (spec.required) missing.push(spec.local);
      continue;
    }
    const got = await fetchSpec(ctx, spec, index);
    if (got) done.set(spec.local, got);
  }

  if (ctx.offline) {
    if (missing.length > 0) {
      throw new ModelError(
        `offline: the cache at ${ctx.dir} lacks ${missing.join(', ')} of ${ctx.repoId}@${ctx.revision}; run downloadModel once online (without offline: true) to fetch them`,
      );
    }
    // The required files are all here, but without a network we cannot tell which
    // optional files the repo has, so no manifest is written.
    return ctx.dir;
  }

  await writeManifest(ctx, done);
  return ctx.dir;
}

/** Reads the manifest; undefined when absent, unreadable, or for another repo/revision. */
async function readManifest(ctx: Ctx): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(join(ctx.dir, MANIFEST), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const m = JSON.parse(text) as Manifest;
    if (m.version !== MANIFEST_VERSION || m.repoId !== ctx.repoId || m.revision !== ctx.revision || typeof m.files !== 'object' || m.files === null) return undefined;
    return m;
  } catch {
    // A torn or hand-edited manifest: fall back to checking the files one by one.
    return undefined;
  }
}

/** Whether the manifest's files are all on disk with their recorded sizes (and hashes, with `verify`) and satisfy the pins. */
async function manifestCurrent(ctx: Ctx, m: Manifest): Promise<boolean> {
  for (const spec of FILES.filter((f) => f.required)) if (!m.files[spec.local]) return false;
  for (const [local, rec] of Object.entries(m.files)) {
    const pin = ctx.pins.get(local);
    if (pin !== undefined && pin !== rec.sha256) return false;
    const size = await fileSize(join(ctx.dir, local));
    if (size !== rec.size) return false;
  }
  // A pin for an optional file the repo lacks cannot be satisfied by this cache.
  for (const local of ctx.pins.keys()) if (!m.files[local]) return false;
  if (ctx.verify) {
    for (const [local, rec] of Object.entries(m.files)) {
      if ((await sha256OfFile(join(ctx.dir, local))) !== rec.sha256) return false;
    }
  }
  return true;
}

/**
 * A complete local copy of `spec`, or undefined when it must be fetched. Files in
 * the directory were renamed into place only after their checks passed, so one
 * present is trusted; it is hashed (unless the manifest already knows its hash)
 * to record it and to check pins. A copy that fails its pin or `verify` is
 * deleted so it gets fetched again (or, offline, reported).
 */
async function cachedFile(ctx: Ctx, spec: FileSpec, manifest: Manifest | undefined): Promise<DoneFile | undefined> {
  const path = join(ctx.dir, spec.local);
  const size = await fileSize(path);
  if (size === undefined) return undefined;
  const rec = manifest?.files[spec.local];
  const known = rec && rec.size === size && !ctx.verify ? rec.sha256 : undefined;
  const sha256 = known ?? (await sha256OfFile(path));
  const expected = ctx.pins.get(spec.local) ?? (ctx.verify && rec?.size === size ? rec.sha256 : undefined);
  if (expected !== undefined && sha256 !== expected) {
    if (ctx.offline) {
      throw new IntegrityError(`${spec.local} in ${ctx.dir}: expected sha256 ${expected}, found ${sha256}; run downloadModel online to fetch it again`);
    }
    await fsp.rm(path, { force: true });
    return undefined;
  }
  return { size, sha256, source: rec?.source ?? spec.remote[spec.remote.length - 1]! };
}

/** Fetches a file, trying its remote paths in order; undefined when an optional file is absent (404). */
async function fetchSpec(ctx: Ctx, spec: FileSpec, index: number): Promise<DoneFile | undefined> {
  for (const remote of spec.remote) {
    const got = await fetchFile(ctx, spec.local, remote, index);
    if (got !== 'not-found') return got;
  }
  if (!spec.required) return undefined;
  throw new ModelError(
    `${ctx.repoId}@${ctx.revision} has no ${spec.remote.join(' or ')} on ${ctx.endpoint} (HTTP 404); athanor needs tokenizer.json, config.json and an ONNX export (onnx/model.onnx or model.onnx). ` +
      'Check the repo id and revision, or pick a repo that ships an ONNX export.',
  );
}

/** The file's URL on the hub. */
function urlOf(ctx: Ctx, remote: string): string {
  return `${ctx.endpoint}/${ctx.repoId}/resolve/${encodeURIComponent(ctx.revision)}/${remote}`;
}

/**
 * Downloads one remote path and renames it into place after its checks.
 *
 * Partial bytes live between runs in `<local>.part` (with `<local>.part.json`
 * saying which URL and etag they came from). While a process works on them it
 * first renames them to a name of its own (`<local>.part.<pid>.<random>`): the
 * rename is atomic, so two processes never write the same file, and the file a
 * process finally renames into place holds exactly the bytes it hashed. When the
 * transfer fails, the bytes are parked back as `<local>.part` for the next run;
 * a process killed outright leaves its own name behind, which a later run adopts
 * once that pid is gone (same host). Returns 'not-found' on 404.
 */
async function fetchFile(ctx: Ctx, local: string, remote: string, index: number): Promise<DoneFile | 'not-found'> {
  const url = urlOf(ctx, remote);
  const finalPath = join(ctx.dir, local);
  const partPath = `${finalPath}.part`;
  const infoPath = `${partPath}.json`;
  const ownPath = `${partPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
  const t: Target = { local, remote, url, finalPath, partPath, infoPath, ownPath, resumeFrom: 0, index };

  // Only claim partial bytes of this very URL: a .part of model.onnx fetched from
  // model.onnx must survive the 404 of onnx/model.onnx tried before it.
  const info = await readPartInfo(infoPath);
  if (info?.url === url) t.resumeFrom = await claimPart(partPath, ownPath);

  try {
    // At most one retry: a 416 or a 206 for the wrong range means the partial bytes are unusable.
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {
        // Undici would otherwise ask for gzip/br and decode transparently, which
        // makes Content-Length and byte ranges refer to bytes we never see.
        'accept-encoding': 'identity',
      };
      if (ctx.token) headers['authorization'] = `Bearer ${ctx.token}`;
      if (t.resumeFrom > 0) {
        headers['range'] = `bytes=${t.resumeFrom}-`;
        // If the file changed since, the server sends it whole (200) instead of a wrong tail.
        // Only a strong etag may be an If-Range validator.
        if (info?.etag && !/^W\//i.test(info.etag)) headers['if-range'] = info.etag;
      }

      let res: Response;
      try {
        res = await ctx.fetch(url, { headers, signal: ctx.signal, redirect: 'follow' });
      } catch (e) {
        if (ctx.signal?.aborted) throw ctx.signal.reason;
        throw new DownloadError(`could not reach ${url}: ${messageOf(e)}; check the network and the endpoint (ATHANOR_HUB_ENDPOINT), then re-run`, { cause: e });
      }

      if (res.status === 404) {
        await discardBody(res);
        return 'not-found';
      }
      if (res.status === 401 || res.status === 403) {
        await discardBody(res);
        const hubSays = res.headers.get('x-error-message');
        throw new DownloadError(
          `HTTP ${res.status} for ${url}: ${ctx.repoId} may be gated or private. ` +
            (ctx.token
              ? "The token was refused or lacks access; check it, and accept the model's terms on its hub page if it is gated."
              : "Pass an access token as options.token or set HF_TOKEN (and accept the model's terms on its hub page if it is gated).") +
            (hubSays ? ` The hub says: ${hubSays}` : ''),
          { status: res.status },
        );
      }
      if (res.status === 416 && t.resumeFrom > 0 && attempt === 0) {
        // The partial bytes are at least as long as the file: not a prefix of it. Start over.
        await discardBody(res);
        t.resumeFrom = 0;
        continue;
      }
      if (res.status === 206) {
        if (t.resumeFrom === 0 || contentRangeStart(res.headers.get('content-range')) !== t.resumeFrom) {
          await discardBody(res);
          if (attempt > 0) throw new DownloadError(`HTTP 206 with an unexpected Content-Range from ${url}; re-run to try again`, { status: 206 });
          t.resumeFrom = 0;
          continue;
        }
      } else if (res.status === 200) {
        t.resumeFrom = 0; // The server ignored the range, or If-Range said the file changed: start over.
      } else {
        await discardBody(res);
        throw new DownloadError(`HTTP ${res.status} ${res.statusText} for ${url}; re-run later, or check the endpoint and revision`, { status: res.status });
      }
      return await receive(ctx, res, t);
    }
  } finally {
    // Whatever did not end in the final file or a deliberate delete is parked for a resume.
    await parkPart(t);
  }
}

/** Where {@link receive} writes and what it resumes from. */
interface Target {
  local: string;
  remote: string;
  url: string;
  finalPath: string;
  /** `<local>.part`: partial bytes parked between runs. */
  partPath: string;
  /** `<local>.part.json`: the URL and etag the parked bytes came from. */
  infoPath: string;
  /** This call's private name for the partial bytes while it works on them. */
  ownPath: string;
  resumeFrom: number;
  index: number;
}

/** Streams a 200/206 body into this call's own partial file, hashing as it goes, then verifies it and renames it into place. */
async function receive(ctx: Ctx, res: Response, t: Target): Promise<DoneFile> {
  // The hub puts the LFS file's SHA-256 in X-Linked-Etag (on its own response) or
  // as the ETag (on the CDN's); a git-blob etag (40 hex) or an md5 is not a sha256 and is ignored.
  const etag = res.headers.get('etag') ?? undefined;
  const hubSha = sha256FromEtag(res.headers.get('x-linked-etag') ?? etag);
  const encoded = (res.headers.get('content-encoding') ?? 'identity').toLowerCase() !== 'identity';
  const length = encoded ? undefined : parseLength(res.headers.get('content-length'));
  const totalBytes = length === undefined ? undefined : t.resumeFrom + length;

  const hash = createHash('sha256');
  if (t.resumeFrom > 0) await hashInto(hash, t.ownPath, t.resumeFrom);
  // Created only now, so an optional file the repo lacks leaves no empty directory (e.g. 1_Pooling/).
  await fsp.mkdir(dirname(t.finalPath), { recursive: true });
  // Recorded before the body, so bytes left by a killed process can still be resumed.
  await writeAtomic(t.infoPath, JSON.stringify({ url: t.url, etag } satisfies PartInfo));
  const fh = await fsp.open(t.ownPath, t.resumeFrom > 0 ? 'r+' : 'w');
  let received = t.resumeFrom;
  const report = (): void => ctx.onProgress?.({ file: t.local, receivedBytes: received, totalBytes, fileIndex: t.index, fileCount: FILES.length });
  try {
    if (t.resumeFrom > 0) await fh.truncate(t.resumeFrom);
    report();
    if (res.body) {
      for await (const chunk of res.body) {
        await fh.write(chunk, 0, chunk.byteLength, received);
        hash.update(chunk);
        received += chunk.byteLength;
        report();
      }
    }
    // Durable before the rename, so a power loss cannot leave a renamed but empty file.
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    throw new DownloadError(
      `download of ${t.local} from ${t.url} was interrupted after ${received}${totalBytes === undefined ? '' : ` of ${totalBytes}`} bytes (${messageOf(e)}); ` +
        'the partial file is kept and re-running downloadModel resumes from there',
      { cause: e, status: res.status },
    );
  }
  await fh.close();

  const actual = hash.digest('hex');
  const fail = async (what: string): Promise<never> => {
    await fsp.rm(t.ownPath, { force: true });
    await fsp.rm(t.infoPath, { force: true });
    throw new IntegrityError(`${t.local} from ${t.url}: ${what}; the download was discarded`);
  };
  if (totalBytes !== undefined && received !== totalBytes) await fail(`expected ${totalBytes} bytes, got ${received}`);
  if (hubSha !== undefined && actual !== hubSha) await fail(`expected sha256 ${hubSha} (the hub's etag), got ${actual}; re-run to fetch it again`);
  const pin = ctx.pins.get(t.local);
  if (pin !== undefined && actual !== pin) await fail(`expected sha256 ${pin} (options.sha256 pin), got ${actual}; check the pin, or pin a revision (commit) so the file cannot change`);

  await fsp.rename(t.ownPath, t.finalPath);
  // Partial bytes parked by another run are moot now that the file is whole.
  await fsp.rm(t.partPath, { force: true });
  await fsp.rm(t.infoPath, { force: true });
  return { size: received, sha256: actual, source: t.remote };
}

/**
 * Moves the parked partial bytes (`.part`, else those a dead process left under
 * its own name) to `ownPath`; returns their size, 0 when there were none.
 */
async function claimPart(partPath: string, ownPath: string): Promise<number> {
  const candidates = [partPath];
  const dir = dirname(partPath);
  const prefix = `${partPath.slice(dir.length + 1)}.`;
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const m = name.startsWith(prefix) ? /^(\d+)\.[0-9a-f]+$/.exec(name.slice(prefix.length)) : null;
    if (m && !alive(Number(m[1]))) candidates.push(join(dir, name));
  }
  for (const candidate of candidates) {
    try {
      await fsp.rename(candidate, ownPath); // atomic: at most one process gets these bytes
    } catch {
      continue; // gone: claimed by another process, or never there
    }
    return (await fileSize(ownPath)) ?? 0;
  }
  return 0;
}

/** Parks this call's partial bytes as `.part` for a later resume (no-op when they were renamed or deleted). */
async function parkPart(t: Target): Promise<void> {
  const size = await fileSize(t.ownPath);
  if (size === undefined) return;
  if (size === 0) return void (await fsp.rm(t.ownPath, { force: true }));
  await fsp.rename(t.ownPath, t.partPath).catch(() => fsp.rm(t.ownPath, { force: true }));
}

/** Whether a process with this pid exists on this host. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes the manifest atomically (temp file in the same directory, fsync, rename). */
async function writeManifest(ctx: Ctx, done: Map<string, DoneFile>): Promise<void> {
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    repoId: ctx.repoId,
    revision: ctx.revision,
    endpoint: ctx.endpoint,
    files: Object.fromEntries(done),
    completedAt: new Date().toISOString(),
  };
  await writeAtomic(join(ctx.dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** Writes `text` to `path` via a unique temp file and a rename, so readers never see half of it. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    const fh = await fsp.open(tmp, 'w');
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

async function readPartInfo(path: string): Promise<PartInfo | undefined> {
  try {
    const v = JSON.parse(await fsp.readFile(path, 'utf8')) as Partial<PartInfo>;
    return typeof v.url === 'string' ? { url: v.url, etag: typeof v.etag === 'string' ? v.etag : undefined } : undefined;
  } catch {
    return undefined;
  }
}

/** Size of a regular file, or undefined when there is none. */
async function fileSize(path: string): Promise<number | undefined> {
  try {
    const s = await fsp.stat(path);
    return s.isFile() ? s.size : undefined;
  } catch {
    return undefined;
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  await hashInto(hash, path);
  return hash.digest('hex');
}

/** Feeds the first `length` bytes of a file (all of it when omitted) into `hash`. */
async function hashInto(hash: Hash, path: string, length?: number): Promise<void> {
  if (length === 0) return;
  const stream = createReadStream(path, length === undefined ? {} : { start: 0, end: length - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
}

/** The SHA-256 an etag carries (quotes and `W/` stripped), or undefined when it is not one. */
function sha256FromEtag(etag: string | undefined): string | undefined {
  if (!etag) return undefined;
  const v = etag.trim().replace(/^W\//i, '').replace(/^"|"$/g, '').toLowerCase();
  return SHA256_HEX.test(v) ? v : undefined;
}

/** The first byte position of a `Content-Range: bytes a-b/n` header. */
function contentRangeStart(header: string | null): number | undefined {
  const m = header ? /^bytes\s+(\d+)-\d+\/(?:\d+|\*)$/i.exec(header.trim()) : null;
  return m ? Number(m[1]) : undefined;
}

function parseLength(header: string | null): number | undefined {
  if (header === null || !/^\d+$/.test(header.trim())) return undefined;
  return Number(header.trim());
}

/** Releases a response body we do not read, so its connection is freed. */
async function discardBody(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // Nothing to release.
  }
}

function messageOf(e: unknown): string {
  if (e instanceof Error) {
    // Undici reports "fetch failed" / "terminated" with the useful part in `cause`.
    const cause = e.cause instanceof Error ? `: ${e.cause.message}` : '';
    return `${e.message}${cause}`;
  }
  return String(e);
}
