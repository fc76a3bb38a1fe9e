/**
 * Damaged files: each open or verify of a damaged database runs in a child process,
 * so that a crash (SIGBUS, SIGSEGV, abort) fails the test instead of killing the
 * runner. Every case must end in a typed error, with the child alive.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { Athanor, Embedder, InvalidArgumentError, NotFoundError } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectThrows } from './helpers.js';

const INDEX = new URL('../dist/index.js', import.meta.url).href;
const HERE = path.dirname(fileURLToPath(import.meta.url));

const sb = new Sandbox();
afterEach(() => sb.cleanup());

interface Probe {
  /** The child's exit signal, if it was killed. */
  signal: NodeJS.Signals | null;
  /** What the probe returned, or the code and message of what it threw. */
  ok?: unknown;
  code?: string;
  message?: string;
}

/**
 * Runs `body` (an async function body given `Athanor`, `Embedder` and `args`) in a
 * child Node process and reports how it ended.
 */
function probe(body: string, args: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Probe {
  const script = `
const { Athanor, Embedder } = await import(${JSON.stringify(INDEX)});
const args = JSON.parse(process.argv[1]);
let out;
try {
  out = { ok: await (async () => { ${body} })() };
} catch (e) {
  out = { code: e?.code ?? 'none', message: String(e?.message ?? e) };
}
process.stdout.write(JSON.stringify(out) + '\\n');
`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(args)], { encoding: 'utf8', cwd: HERE, env });
  if (r.signal !== null) return { signal: r.signal };
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: Omit<Probe, 'signal'>;
  try {
    parsed = JSON.parse(last) as Omit<Probe, 'signal'>;
  } catch {
    throw new Error(`probe printed no result (status ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
  return { signal: null, ...parsed };
}

const OPEN_VERIFY = `const db = await Athanor.open(args.dir, { create: false }); try { return db.verify(); } finally { await db.close(); }`;

/** A database with `n` events of a few hundred bytes each, closed. */
async function populated(n = 3000): Promise<string> {
  const dir = sb.dir();
  const db = await Athanor.open(dir);
  for (let i = 0; i < n; i += 500) {
    await db.transaction().execute((tx) => {
      for (let j = i; j < Math.min(n, i + 500); j++) tx.log('filled', { i: j, text: 'x'.repeat(200) });
    });
  }
  await db.close();
  return dir;
}

/** onnxruntime-node's bundled library, as athanor finds it by default. */
function bundledRuntime(): string | undefined {
  const file = process.platform === 'darwin' ? 'libonnxruntime.1.dylib' : 'libonnxruntime.so.1';
  try {
    const pkg = createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
    const p = path.join(path.dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch, file);
    return fs.existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

const dataFile = (dir: string): string => path.join(dir, 'canonical', 'data.mdb');

describe('damaged canonical store', () => {
  it('a data.mdb truncated to half is ERR_CORRUPT at open, not SIGBUS', async () => {
    const dir = await populated();
    const size = fs.statSync(dataFile(dir)).size;
    fs.truncateSync(dataFile(dir), Math.floor(size / 2));
    const r = probe(OPEN_VERIFY, { dir });
    expect(r.signal).toBeNull();
    expect(r.code).toBe('ERR_CORRUPT');
    expect(r.message).toMatch(/truncated/);
  });

  it('data pages overwritten with random bytes are ERR_CORRUPT from verify(), in-process and deep', async () => {
    const dir = await populated();
    const fd = fs.openSync(dataFile(dir), 'r+');
    const pages = Math.floor(fs.fstatSync(fd).size / 4096);
    // Eight pages in the middle of the file: events pages, whichever the layout.
    const junk = crypto.randomBytes(8 * 4096);
    fs.writeSync(fd, junk, 0, junk.length, Math.floor(pages / 2) * 4096);
    fs.closeSync(fd);
    const r = probe(OPEN_VERIFY, { dir });
    expect(r.signal).toBeNull();
    expect(r.code).toBe('ERR_CORRUPT');
    const deep = probe(`const db = await Athanor.open(args.dir, { create: false }); try { return await db.verify({ deep: true }); } finally { await db.close(); }`, { dir });
    expect(deep.signal).toBeNull();
    expect(deep.code).toBe('ERR_CORRUPT');
  });

  it('an events page whose records claim sizes past the page is ERR_CORRUPT from verify()', async () => {
    const dir = await populated();
    const b = fs.readFileSync(dataFile(dir));
    let damagedPage = -1;
    // The first leaf page of the event log (8-byte keys, payloads naming the type):
    // every record's size set to 256 MiB, with the page header and offsets intact.
    for (let p = 2; p < b.length / 4096 && damagedPage < 0; p++) {
      const o = p * 4096;
      const keys = (b.readUInt16LE(o + 12) - 16) / 2;
      if (b.readUInt16LE(o + 10) !== 0x02 || keys < 1) continue;
      const first = o + b.readUInt16LE(o + 16);
      if (b.readUInt16LE(first + 6) !== 8 || !b.subarray(first, first + 64).includes('filled')) continue;
      for (let i = 0; i < keys; i++) {
        const node = o + b.readUInt16LE(o + 16 + 2 * i);
        b.writeUInt16LE(0xffff, node);
        b.writeUInt16LE(0x0fff, node + 2);
      }
      damagedPage = p;
    }
    expect(damagedPage).toBeGreaterThan(1);
    fs.writeFileSync(dataFile(dir), b);
    const r = probe(OPEN_VERIFY, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(new RegExp(`page ${damagedPage}\\b`));
  });

  it('a damaged page of vector documents (read at open to build the index) is ERR_CORRUPT at open', async () => {
    const dir = sb.dir();
    const db = await Athanor.open(dir);
    const n = 400;
    db.vectors.create('docs', { dimension: 8 });
    await db.vectors.open('docs').upsertMany(
      Array.from({ length: n }, (_, i) => `doc-${String(i).padStart(4, '0')}`),
      new Float32Array(n * 8).map((_, i) => (i % 7) + 1),
    );
    await db.close();
    const b = fs.readFileSync(dataFile(dir));
    let damagedPage = -1;
    for (let p = 2; p < b.length / 4096 && damagedPage < 0; p++) {
      const o = p * 4096;
      const keys = (b.readUInt16LE(o + 12) - 16) / 2;
      if (b.readUInt16LE(o + 10) !== 0x02 || keys < 1) continue;
      const first = o + b.readUInt16LE(o + 16);
      if (b.readUInt16LE(first + 6) !== 12 || !b.subarray(first + 12, first + 20).includes('doc-')) continue;
      for (let i = 0; i < keys; i++) {
        const node = o + b.readUInt16LE(o + 16 + 2 * i);
        b.writeUInt16LE(0xffff, node);
        b.writeUInt16LE(0x0fff, node + 2);
      }
      damagedPage = p;
    }
    expect(damagedPage).toBeGreaterThan(1);
    fs.writeFileSync(dataFile(dir), b);
    const r = probe(`const db = await Athanor.open(args.dir); await db.close(); return 'opened';`, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/"vectors"/);
  });

  it('an empty data.mdb, a missing one and a dangling link in its place are ERR_CORRUPT, not a new empty database', async () => {
    const dir = await populated(10);
    fs.truncateSync(dataFile(dir), 0);
    const empty = probe(OPEN_VERIFY, { dir });
    expect(empty).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    // Even when opening may create: the directory shows a store existed.
    const creating = probe(`const db = await Athanor.open(args.dir); await db.close(); return 'opened';`, { dir });
    expect(creating).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(fs.statSync(dataFile(dir)).size).toBe(0);

    fs.rmSync(dataFile(dir));
    expect(probe(OPEN_VERIFY, { dir })).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });

    fs.symlinkSync(path.join(dir, 'nowhere', 'data.mdb'), dataFile(dir));
    const dangling = probe(`const db = await Athanor.open(args.dir); await db.close(); return 'opened';`, { dir });
    expect(dangling).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(dangling.message).toMatch(/link/);
  });

  it('an empty data.mdb beside projection.db is ERR_CORRUPT even without the marker (stores made before it)', async () => {
    const dir = await populated(10);
    const db = await Athanor.open(dir);
    db.sql.exec('CREATE TABLE t (x)');
    await db.close();
    fs.rmSync(path.join(dir, 'canonical', 'athanor-store'));
    fs.truncateSync(dataFile(dir), 0);
    const r = probe(OPEN_VERIFY, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/projection\.db/);
  });
});

describe('verify() covers projection.db and the index dumps', () => {
  async function withProjection(): Promise<string> {
    const dir = await populated(50);
    const db = await Athanor.open(dir);
    db.migrations.add({ version: 1, name: 'seen', up: 'CREATE TABLE seen (id INTEGER PRIMARY KEY)', down: 'DROP TABLE seen' });
    db.migrations.run();
    const p = db.processor('seen').on('filled', (sql, e) => void sql.run('INSERT INTO seen VALUES (?)', [Number(e.id)])).build();
    await p.catchUp();
    await p.close();
    expect(db.verify()).toEqual({ events: 50 });
    await db.close();
    return dir;
  }

  it('garbage or a truncated projection.db is ERR_CORRUPT', async () => {
    const dir = await withProjection();
    const file = path.join(dir, 'projection.db');
    const size = fs.statSync(file).size;
    fs.truncateSync(file, Math.floor(size / 2));
    expect(probe(OPEN_VERIFY, { dir })).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    fs.writeFileSync(file, crypto.randomBytes(size));
    const r = probe(OPEN_VERIFY, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/projection\.db/);
  });

  it('a processor cursor past the end of the log is ERR_CORRUPT', async () => {
    const dir = await withProjection();
    // The store replaced by a shorter one (an old copy): the cursor is now ahead of the log.
    const other = await populated(5);
    fs.copyFileSync(dataFile(other), dataFile(dir));
    const r = probe(OPEN_VERIFY, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/"seen".*event 50.*ends at 5/);
  });

  it('a garbage index dump is ERR_CORRUPT from verify()', async () => {
    const dir = sb.dir();
    const db = await Athanor.open(dir);
    const c = db.vectors.create('docs', { dimension: 4 });
    await c.upsertMany(['a', 'b', 'c'], new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]));
    await c.waitIndexed();
    await db.close();
    const graph = path.join(dir, 'index', 'docs', 'graph.bin');
    expect(fs.existsSync(graph)).toBe(true);
    expect(probe(OPEN_VERIFY, { dir })).toMatchObject({ signal: null, ok: { events: 0 } });
    fs.writeFileSync(graph, crypto.randomBytes(fs.statSync(graph).size));
    const r = probe(OPEN_VERIFY, { dir });
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/index dump/);
  });
});

describe('open without creating', () => {
  it('create: false on a missing directory or one without a database is NotFoundError, and creates nothing', async () => {
    const parent = sb.dir();
    const missing = path.join(parent, 'typo');
    await expect(Athanor.open(missing, { create: false })).rejects.toThrow(NotFoundError);
    await expect(Athanor.open(missing, { create: false })).rejects.toThrow(missing);
    expect(fs.existsSync(missing)).toBe(false);
    await expect(Athanor.open(parent, { create: false })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    expect(fs.readdirSync(parent)).toEqual([]);
    expectThrows(() => Athanor.openSync(parent, { create: 'no' as unknown as boolean }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    // An existing database opens as usual.
    const dir = await populated(3);
    const db = await Athanor.open(dir, { create: false });
    expect(db.verify()).toEqual({ events: 3 });
    await db.close();
  });

  it('verify({ deep: true }) reports a check process killed by a signal as ERR_CORRUPT', async () => {
    const dir = await populated(5);
    // A preload that lets the first process (the probe) run and kills the next one
    // (the deep check's child), standing in for LMDB crashing on a damaged page.
    const preload = path.join(sb.dir(), 'die-in-child.cjs');
    fs.writeFileSync(preload, `if (process.env.ATHANOR_TEST_SEEN) process.kill(process.pid, 'SIGSEGV'); else process.env.ATHANOR_TEST_SEEN = '1';`);
    const r = probe(
      `const db = await Athanor.open(args.dir, { create: false }); try { return await db.verify({ deep: true }); } finally { await db.close(); }`,
      { dir },
      { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${preload}` },
    );
    expect(r).toMatchObject({ signal: null, code: 'ERR_CORRUPT' });
    expect(r.message).toMatch(/killed by SIGSEGV/);
  });

  it('verify({ deep: true }) on an intact database resolves with the count', async () => {
    const dir = await populated(20);
    const db = await sb.open(dir);
    await expect(db.verify({ deep: true })).resolves.toEqual({ events: 20 });
    expectThrows(() => db.verify({ deep: false } as unknown as { deep: true }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });
});

describe('embedder: damaged runtime and bounds', () => {
  it('a truncated, foreign or non-ONNX runtime library is ERR_RUNTIME, and a good open afterwards works', async () => {
    const runtime = bundledRuntime();
    if (runtime === undefined) return; // no onnxruntime-node on this platform
    const model = await ensureTestModel();
    const copy = path.join(sb.dir(), path.basename(runtime));
    fs.writeFileSync(copy, fs.readFileSync(runtime).subarray(0, Math.floor(fs.statSync(runtime).size / 2)));
    const foreign = path.join(sb.dir(), 'libnot-onnx.so');
    fs.writeFileSync(foreign, crypto.randomBytes(4096));
    // A real shared library that loads but is not ONNX Runtime: athanor's own addon.
    const addon = fs.readdirSync(path.join(HERE, '..', 'native', 'node')).find((f) => f.endsWith('.node'));
    const notOrt = addon === undefined ? foreign : path.join(HERE, '..', 'native', 'node', addon);
    const r = probe(
      `const codes = [];
       for (const runtimePath of [args.copy, args.foreign, args.notOrt]) {
         try { await Embedder.open(args.model, { runtimePath }); codes.push('opened'); } catch (e) { codes.push(e.code); }
       }
       const e = await Embedder.open(args.model, { runtimePath: args.runtime });
       const v = await e.embed('still alive');
       e.close();
       return { codes, dimension: v.length };`,
      { copy, foreign, notOrt, model, runtime },
    );
    expect(r.signal).toBeNull();
    expect(r).toMatchObject({ ok: { codes: ['ERR_RUNTIME', 'ERR_RUNTIME', 'ERR_RUNTIME'], dimension: 384 } });
  });

  it('sessions and threads past the machine are ERR_INVALID_ARGUMENT naming the limit, before anything starts', async () => {
    const model = await ensureTestModel();
    const cores = os.availableParallelism();
    const perKind = Math.max(cores, 4);
    await expect(Embedder.open(model, { sessions: 64, threads: 1024 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(Embedder.open(model, { threads: perKind + 1 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining(`between 1 and ${perKind}`) });
    await expect(Embedder.open(model, { sessions: Math.min(perKind, 64) + 1 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining('sessions must be between 1 and') });
    await expect(Embedder.open(model, { sessions: 3, threads: perKind })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining(`at most ${2 * perKind}`) });
  });
});
