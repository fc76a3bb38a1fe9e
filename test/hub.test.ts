/**
 * downloadModel against a hub served on loopback by node:http from the real test
 * model (scripts/test-model.mjs), with real files in a fresh cache dir per test.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DownloadError, IntegrityError, InvalidArgumentError, ModelError, downloadModel, type DownloadProgress } from '../dist/index.js';
import { TEST_MODEL_FILES, ensureTestModel } from '../scripts/test-model.mjs';
import { removeDir, tempDir } from './helpers.js';

const REPO = 'test-owner/mini-lm';
const MODEL_SIZE = 22_928_619;

/** One request the fake hub saw. */
interface Seen {
  path: string;
  headers: http.IncomingHttpHeaders;
}

/** How the fake hub misbehaves for the current test. */
interface Behaviour {
  /** Answer every request with this status and no body. */
  status?: number;
  /** Repo paths answered 404 as if the repo lacked them. */
  hide: Set<string>;
  /** Repo paths served with one byte flipped but the real etag. */
  corrupt: Set<string>;
  /** On the first request for `path`, send `bytes` bytes of the body and then stall until cut() or the client leaves. */
  stallAfter?: { path: string; bytes: number };
}

/**
 * A Hugging Face-like hub on 127.0.0.1: `/<owner>/<name>/resolve/<rev>/<path>`,
 * `etag: "<sha256>"`, Range/If-Range support, and the failure modes in Behaviour.
 * The test model's model.onnx sits at the top level, so `onnx/model.onnx` is a 404.
 */
class FakeHub {
  readonly seen: Seen[] = [];
  behaviour: Behaviour = { hide: new Set(), corrupt: new Set() };
  private readonly files = new Map<string, { data: Buffer; sha256: string }>();
  private readonly stalled: http.ServerResponse[] = [];
  private readonly server = http.createServer((req, res) => this.handle(req, res));
  endpoint = '';

  constructor(modelDir: string) {
    for (const rel of Object.keys(TEST_MODEL_FILES)) {
      const data = fs.readFileSync(path.join(modelDir, rel));
      this.files.set(rel, { data, sha256: createHash('sha256').update(data).digest('hex') });
    }
  }

  async start(): Promise<void> {
    // Loopback only: nothing outside this machine can reach the fake hub.
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Forgets the requests and the misbehaviour of the previous test. */
  reset(): void {
    this.seen.length = 0;
    this.behaviour = { hide: new Set(), corrupt: new Set() };
    this.cut();
  }

  /** Destroys the connections of stalled responses mid-body, as a network failure would. */
  cut(): void {
    for (const res of this.stalled.splice(0)) res.socket?.destroy();
  }

  /** Requests for one repo path, in order. */
  requestsFor(repoPath: string): Seen[] {
    return this.seen.filter((s) => s.path === repoPath);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const parts = new URL(req.url ?? '/', 'http://127.0.0.1').pathname.split('/').map(decodeURIComponent);
    // ['', owner, name, 'resolve', rev, ...path]
    const repoPath = parts.slice(5).join('/');
    this.seen.push({ path: repoPath, headers: req.headers });
    const b = this.behaviour;
    if (b.status !== undefined) return void res.writeHead(b.status).end();
    const file = this.files.get(repoPath);
    if (parts[3] !== 'resolve' || !file || b.hide.has(repoPath)) {
      return void res.writeHead(404, { 'x-error-code': 'EntryNotFound' }).end();
    }
    let data = file.data;
    if (b.corrupt.has(repoPath)) {
      data = Buffer.from(data);
      data[data.length >> 1]! ^= 0xff;
    }
    const etag = `"${file.sha256}"`;
    let start = 0;
    let status = 200;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (range && (ifRange === undefined || ifRange === etag)) {
      start = Number(range[1]);
      if (start >= data.length) {
        return void res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      }
      status = 206;
    }
    const headers: http.OutgoingHttpHeaders = { etag, 'content-length': data.length - start, 'accept-ranges': 'bytes' };
    if (status === 206) headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    res.writeHead(status, headers);
    const stall = b.stallAfter;
    if (stall && stall.path === repoPath) {
      b.stallAfter = undefined; // only the first request stalls
      res.write(data.subarray(start, start + stall.bytes));
      this.stalled.push(res);
      return;
    }
    res.end(data.subarray(start));
  }
}

function sha256Of(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

let hub: FakeHub;
let sourceDir: string;
let cacheDir: string;

beforeAll(async () => {
  sourceDir = await ensureTestModel();
  hub = new FakeHub(sourceDir);
  await hub.start();
});
afterAll(async () => {
  await hub.stop();
});
beforeEach(() => {
  hub.reset();
  cacheDir = tempDir('athanor-hub-');
});
afterEach(() => {
  hub.reset();
  removeDir(cacheDir);
});

/** downloadModel against the fake hub and this test's cache dir. */
function download(options: Parameters<typeof downloadModel>[1] = {}, repoId = REPO): Promise<string> {
  return downloadModel(repoId, { endpoint: hub.endpoint, cacheDir, ...options });
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected the promise to reject');
}

describe('downloadModel', () => {
  it('downloads into the cache: byte-identical files, a manifest, the onnx/ fallback, optional files skipped', async () => {
    hub.behaviour.hide = new Set(['special_tokens_map.json', '1_Pooling/config.json']);
    const progress: DownloadProgress[] = [];
    const dir = await download({ onProgress: (p) => progress.push(p), sha256: { 'onnx/model.onnx': TEST_MODEL_FILES['model.onnx']!.sha256 } });

    expect(dir).toBe(path.join(cacheDir, 'models', 'test-owner--mini-lm', 'main'));
    for (const rel of ['model.onnx', 'tokenizer.json', 'config.json', 'tokenizer_config.json', 'sentence_bert_config.json']) {
      expect(sha256Of(path.join(dir, rel)), rel).toBe(TEST_MODEL_FILES[rel]!.sha256);
    }
    expect(fs.existsSync(path.join(dir, 'special_tokens_map.json'))).toBe(false);
    expect(fs.existsSync(path.join(dir, '1_Pooling'))).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.part') || f.endsWith('.tmp'))).toEqual([]);

    // onnx/model.onnx was tried first, 404'd, then model.onnx was fetched once.
    expect(hub.requestsFor('onnx/model.onnx')).toHaveLength(1);
    expect(hub.requestsFor('model.onnx')).toHaveLength(1);
    expect(hub.seen.findIndex((s) => s.path === 'onnx/model.onnx')).toBeLessThan(hub.seen.findIndex((s) => s.path === 'model.onnx'));

    const manifest = JSON.parse(fs.readFileSync(path.join(dir, '.athanor-model.json'), 'utf8'));
    expect(manifest).toMatchObject({ repoId: REPO, revision: 'main', endpoint: hub.endpoint });
    expect(Object.keys(manifest.files).sort()).toEqual(['config.json', 'model.onnx', 'sentence_bert_config.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(manifest.files['model.onnx']).toMatchObject({ size: MODEL_SIZE, sha256: TEST_MODEL_FILES['model.onnx']!.sha256, source: 'model.onnx' });
    expect(Number.isNaN(Date.parse(manifest.completedAt))).toBe(false);

    const last = progress.filter((p) => p.file === 'model.onnx').at(-1)!;
    expect(last).toMatchObject({ receivedBytes: MODEL_SIZE, totalBytes: MODEL_SIZE, fileCount: 7 });
  });

  it('keeps relative paths of the optional files, and sends the token', async () => {
    const dir = await download({ token: 'hf_secret', revision: 'v1.0' });
    expect(dir).toBe(path.join(cacheDir, 'models', 'test-owner--mini-lm', 'v1.0'));
    expect(sha256Of(path.join(dir, '1_Pooling', 'config.json'))).toBe(TEST_MODEL_FILES['1_Pooling/config.json']!.sha256);
    expect(sha256Of(path.join(dir, 'special_tokens_map.json'))).toBe(TEST_MODEL_FILES['special_tokens_map.json']!.sha256);
    expect(hub.seen.every((s) => s.headers.authorization === 'Bearer hf_secret')).toBe(true);
  });

  it('answers from the cache on a second call, offline too; offline with an empty cache is a ModelError', async () => {
    const dir = await download();
    const before = hub.seen.length;
    expect(await download()).toBe(dir);
    expect(await download({ offline: true })).toBe(dir);
    expect(hub.seen.length).toBe(before);

    const empty = tempDir('athanor-hub-empty-');
    try {
      const e = await rejection(downloadModel(REPO, { endpoint: hub.endpoint, cacheDir: empty, offline: true }));
      expect(e).toBeInstanceOf(ModelError);
      expect((e as ModelError).code).toBe('ERR_MODEL');
      expect((e as Error).message).toMatch(/model\.onnx/);
      expect((e as Error).message).toMatch(/online/);
    } finally {
      removeDir(empty);
    }
    expect(hub.seen.length).toBe(before);
  });

  it('serialises concurrent callers for the same directory', async () => {
    const [a, b] = await Promise.all([download(), download()]);
    expect(a).toBe(b);
    expect(hub.requestsFor('model.onnx')).toHaveLength(1);
    expect(sha256Of(path.join(a, 'model.onnx'))).toBe(TEST_MODEL_FILES['model.onnx']!.sha256);
  });

  it('keeps final files whole when two unsynchronised callers (as two processes would) share the directory', async () => {
    // Through a symlink the in-process per-directory lock sees two different dirs,
    // so only the on-disk protocol (private partial files, rename) keeps them apart.
    const alias = `${cacheDir}-alias`;
    fs.symlinkSync(cacheDir, alias);
    try {
      const [a] = await Promise.all([download(), downloadModel(REPO, { endpoint: hub.endpoint, cacheDir: alias })]);
      for (const rel of Object.keys(TEST_MODEL_FILES)) expect(sha256Of(path.join(a, rel)), rel).toBe(TEST_MODEL_FILES[rel]!.sha256);
      expect(fs.readdirSync(a).filter((f) => f.includes('.part') || f.endsWith('.tmp'))).toEqual([]);
    } finally {
      fs.rmSync(alias, { force: true });
    }
  });

  it('adopts the partial file a killed process left under its own name', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const dir = path.join(cacheDir, 'models', 'test-owner--mini-lm', 'main');
    fs.mkdirSync(dir, { recursive: true });
    const have = 1_234_567;
    const source = fs.readFileSync(path.join(sourceDir, 'model.onnx'));
    fs.writeFileSync(path.join(dir, `model.onnx.part.${dead}.0badc0de`), source.subarray(0, have));
    fs.writeFileSync(path.join(dir, 'model.onnx.part.json'), JSON.stringify({ url: `${hub.endpoint}/${REPO}/resolve/main/model.onnx`, etag: `"${TEST_MODEL_FILES['model.onnx']!.sha256}"` }));
    await download();
    expect(hub.requestsFor('model.onnx')[0]!.headers.range).toBe(`bytes=${have}-`);
    expect(sha256Of(path.join(dir, 'model.onnx'))).toBe(TEST_MODEL_FILES['model.onnx']!.sha256);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.part'))).toEqual([]);
  });

  it('resumes an interrupted download with a Range request from the size of the .part', async () => {
    const cutAt = 5_000_000;
    hub.behaviour.stallAfter = { path: 'model.onnx', bytes: cutAt };
    const onProgress = (p: DownloadProgress): void => {
      // Every byte sent has reached the .part: now break the connection mid-body.
      if (p.file === 'model.onnx' && p.receivedBytes >= cutAt) hub.cut();
    };
    const e = await rejection(download({ onProgress }));
    expect(e).toBeInstanceOf(DownloadError);
    expect((e as Error).message).toMatch(/resume/);

    const dir = path.join(cacheDir, 'models', 'test-owner--mini-lm', 'main');
    const part = path.join(dir, 'model.onnx.part');
    const partSize = fs.statSync(part).size;
    expect(partSize).toBe(cutAt);
    expect(fs.existsSync(path.join(dir, 'model.onnx'))).toBe(false);
    expect(fs.existsSync(path.join(dir, '.athanor-model.json'))).toBe(false);

    hub.seen.length = 0;
    await download();
    const [resumed] = hub.requestsFor('model.onnx');
    expect(resumed!.headers.range).toBe(`bytes=${partSize}-`);
    expect(resumed!.headers['if-range']).toBe(`"${TEST_MODEL_FILES['model.onnx']!.sha256}"`);
    // The small files finished on the first call and were not fetched again.
    expect(hub.requestsFor('tokenizer.json')).toHaveLength(0);
    expect(sha256Of(path.join(dir, 'model.onnx'))).toBe(TEST_MODEL_FILES['model.onnx']!.sha256);
    expect(fs.existsSync(part)).toBe(false);
    expect(fs.existsSync(`${part}.json`)).toBe(false);
  });

  it('refuses a body that does not match the etag, and a wrong pin, keeping neither file nor .part', async () => {
    hub.behaviour.corrupt = new Set(['config.json']);
    const dir = path.join(cacheDir, 'models', 'test-owner--mini-lm', 'main');
    const e = await rejection(download());
    expect(e).toBeInstanceOf(IntegrityError);
    expect((e as IntegrityError).code).toBe('ERR_INTEGRITY');
    expect((e as Error).message).toContain('config.json');
    expect((e as Error).message).toContain(TEST_MODEL_FILES['config.json']!.sha256);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('config.json'))).toEqual([]);

    hub.behaviour.corrupt = new Set();
    const wrong = '0'.repeat(64);
    const e2 = await rejection(download({ sha256: { 'tokenizer.json': wrong } }));
    expect(e2).toBeInstanceOf(IntegrityError);
    expect((e2 as Error).message).toContain('tokenizer.json');
    expect((e2 as Error).message).toContain(wrong);
    expect((e2 as Error).message).toContain(TEST_MODEL_FILES['tokenizer.json']!.sha256);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('tokenizer.json'))).toEqual([]);
  });

  it('with verify: true, re-fetches a cached file whose bytes changed; offline it is an IntegrityError', async () => {
    const dir = await download();
    const config = path.join(dir, 'config.json');
    const bytes = fs.readFileSync(config);
    bytes[0]! ^= 0xff; // same size, different content
    fs.writeFileSync(config, bytes);

    hub.seen.length = 0;
    await download(); // sizes match: trusted without hashing, no request
    expect(hub.seen).toHaveLength(0);
    const e = await rejection(download({ verify: true, offline: true }));
    expect(e).toBeInstanceOf(IntegrityError);
    await download({ verify: true });
    expect(hub.seen.map((s) => s.path)).toEqual(['config.json']);
    expect(sha256Of(config)).toBe(TEST_MODEL_FILES['config.json']!.sha256);
  });

  it('maps 401 to a DownloadError that mentions the token, and a missing tokenizer.json to a ModelError', async () => {
    hub.behaviour.status = 401;
    const e = await rejection(download({ token: undefined }));
    expect(e).toBeInstanceOf(DownloadError);
    expect((e as DownloadError).code).toBe('ERR_DOWNLOAD');
    expect((e as DownloadError).status).toBe(401);
    expect((e as Error).message).toMatch(/token/);

    hub.reset();
    hub.behaviour.hide = new Set(['tokenizer.json']);
    const e2 = await rejection(download());
    expect(e2).toBeInstanceOf(ModelError);
    expect((e2 as Error).message).toContain('tokenizer.json');
    expect(hub.requestsFor('model.onnx')).toHaveLength(0); // failed before the large file
  });

  it('rejects a bad repoId, revision or pin with InvalidArgumentError before any request', async () => {
    const bad: Array<[string, Parameters<typeof downloadModel>[1]]> = [
      ['no-slash', {}],
      ['a/b/c', {}],
      ['../etc', {}],
      ['owner/..', {}],
      ['owner/na me', {}],
      ['owner/a--b', {}],
      ['', {}],
      [REPO, { revision: '../main' }],
      [REPO, { revision: '/main' }],
      [REPO, { revision: '' }],
      [REPO, { sha256: { 'model.onnx': 'xyz' } }],
      [REPO, { sha256: { 'vocab.txt': '0'.repeat(64) } }],
      [REPO, { endpoint: 'ftp://example.invalid' }],
    ];
    for (const [repoId, options] of bad) {
      const e = await rejection(download(options, repoId));
      expect(e, `${repoId} ${JSON.stringify(options)}`).toBeInstanceOf(InvalidArgumentError);
      expect((e as InvalidArgumentError).code).toBe('ERR_INVALID_ARGUMENT');
    }
    expect(hub.seen).toHaveLength(0);
    expect(fs.readdirSync(cacheDir)).toEqual([]);
  });

  it('rejects on abort and keeps the .part, which a later call resumes', async () => {
    const stopAt = 3_000_000;
    hub.behaviour.stallAfter = { path: 'model.onnx', bytes: stopAt };
    const controller = new AbortController();
    const onProgress = (p: DownloadProgress): void => {
      if (p.file === 'model.onnx' && p.receivedBytes >= stopAt) controller.abort();
    };
    const e = await rejection(download({ signal: controller.signal, onProgress }));
    expect((e as Error).name).toBe('AbortError');

    const dir = path.join(cacheDir, 'models', 'test-owner--mini-lm', 'main');
    expect(fs.statSync(path.join(dir, 'model.onnx.part')).size).toBe(stopAt);

    hub.seen.length = 0;
    await download();
    expect(hub.requestsFor('model.onnx')[0]!.headers.range).toBe(`bytes=${stopAt}-`);
    expect(sha256Of(path.join(dir, 'model.onnx'))).toBe(TEST_MODEL_FILES['model.onnx']!.sha256);
  });
});
