/**
 * The tamper-evident event log: links written with each event, a byte flipped in
 * data.mdb (database closed) found by verify() at that exact event, HMAC chains
 * that fail with the wrong key, proofs an outside party recomputes with node:crypto,
 * and the link input pinned by golden/chain.json.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, CorruptError, InvalidArgumentError, verifyProof, type EventProof } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(HERE, '..', 'dist', 'cli.js');
const sb = new Sandbox();
afterEach(() => sb.cleanup());

const KEY = 'an-hmac-key-of-the-application-32b';

/** Flips one byte of every copy of `needle` in the store file (LMDB copies pages on write, so freed pages may hold old copies too); returns how many. */
function flipInFile(dir: string, needle: string): number {
  const file = path.join(dir, 'canonical', 'data.mdb');
  const data = fs.readFileSync(file);
  const n = Buffer.from(needle);
  let count = 0;
  for (let at = data.indexOf(n); at >= 0; at = data.indexOf(n, at + 1)) {
    data[at + n.length - 1] ^= 0x01; // a letter of the tag: the JSON stays valid
    count++;
  }
  fs.writeFileSync(file, data);
  return count;
}

async function logEvents(db: Athanor, tags: string[]): Promise<void> {
  for (const tag of tags) await db.transaction().execute((tx) => tx.log('note', { tag }));
}

const tags = (run: string) => [1, 2, 3, 4, 5].map((i) => `chain-test-${run}-event-${i}-payload`);

describe('hash chain', () => {
  it('finds a byte flipped in an event record at that exact event', async () => {
    const dir = sb.dir();
    const run = crypto.randomBytes(4).toString('hex');
    const db = await Athanor.open(dir, { chain: true });
    await logEvents(db, tags(run));
    expect(db.verify().events).toBe(5);
    await db.close();

    expect(flipInFile(dir, tags(run)[2]!)).toBeGreaterThan(0);
    const again = await sb.open(dir);
    const err = expectThrows(() => again.verify(), CorruptError, 'ERR_CORRUPT');
    expect(err.message).toContain('event 3 breaks the hash chain');
    const report = again.verify({ report: true });
    expect(report.ok).toBe(false);
    expect(report.violations.filter((v) => v.kind === 'event_chain').map((v) => v.detail)).toEqual([expect.stringContaining('event 3 ')]);

    const cli = spawnSync(process.execPath, [CLI, 'verify', dir], { encoding: 'utf8' });
    expect(cli.status).toBe(1);
    expect(cli.stdout).toContain('event 3 breaks the hash chain');
  });

  it('without a chain the same damage goes unseen (what the chain adds)', async () => {
    const dir = sb.dir();
    const run = crypto.randomBytes(4).toString('hex');
    const db = await Athanor.open(dir);
    await logEvents(db, tags(run));
    await db.close();
    expect(flipInFile(dir, tags(run)[2]!)).toBeGreaterThan(0);
    const again = await sb.open(dir);
    expect(again.verify().events).toBe(5);
  });

  it('an HMAC chain fails verification with the wrong key and needs its key to append', async () => {
    const dir = sb.dir();
    const db = await Athanor.open(dir, { chain: true, hmacKey: KEY });
    await logEvents(db, tags('hmac'));
    const proof = db.events.proof(2n)!;
    expect(proof.algorithm).toBe('hmac-sha256');
    expect(verifyProof(proof, KEY)).toBe(true);
    expect(verifyProof(proof, `${KEY}-wrong`)).toBe(false);
    expect(db.verify().events).toBe(5);
    await db.close();

    const wrong = await Athanor.open(dir, { hmacKey: `${KEY}-wrong` });
    const err = expectThrows(() => wrong.verify(), CorruptError, 'ERR_CORRUPT');
    expect(err.message).toContain('event 1 breaks the hash chain');
    await wrong.close();

    const keyless = await Athanor.open(dir);
    const refused = await expectRejects(keyless.transaction().execute((tx) => tx.log('note', {})), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(refused.message).toContain('hmacKey');
    expect(refused.message).not.toContain(KEY);
    expect(keyless.events.lastId).toBe(5n);
    expectThrows(() => keyless.verify(), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await keyless.close();

    const right = await sb.open(dir, { hmacKey: KEY });
    expect(right.verify().events).toBe(5);
  });

  it('never puts the key in an error message', async () => {
    const dir = sb.dir();
    await (await Athanor.open(dir, { chain: true })).close();
    const err = await expectRejects(Athanor.open(dir, { hmacKey: KEY }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(err.message).not.toContain(KEY);
    const short = await expectRejects(Athanor.open(dir, { hmacKey: 'short-secret' }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(short.message).not.toContain('short-secret');
  });

  it('proofs link each event to the one before and recompute with node:crypto alone', async () => {
    const db = await sb.open(undefined, { chain: true });
    await logEvents(db, tags('proof'));
    let prev = '0'.repeat(64);
    for (let id = 1n; id <= 5n; id++) {
      const p = db.events.proof(id)!;
      expect(p.prevHash).toBe(prev);
      const idBytes = Buffer.alloc(8);
      idBytes.writeBigUInt64BE(id);
      const want = crypto.createHash('sha256').update(Buffer.from(p.prevHash, 'hex')).update(idBytes).update(p.record).digest('hex');
      expect(p.hash).toBe(want);
      expect(verifyProof(p)).toBe(true);
      prev = p.hash;
    }
    expect(db.events.proof(6n)).toBeUndefined();
  });

  it('links every event of transactions committed together, past one that fails alone in their group', async () => {
    const db = await sb.open(undefined, { chain: true });
    await db.transaction().execute((tx) => tx.append('s', { type: 'opened', payload: {} }));
    // Started in one turn, they share group commits; the one with a wrong expected version fails alone.
    const results = await Promise.allSettled(
      Array.from({ length: 48 }, (_, i) =>
        db.transaction().execute((tx) => {
          if (i === 20) tx.append('s', { type: 'late', payload: {} }, { expectedVersion: 7 });
          else tx.logMany([{ type: 'n', payload: { i } }, { type: 'n', payload: { i, second: true } }]);
        }),
      ),
    );
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.objectContaining({ code: 'ERR_WRONG_EXPECTED_VERSION' })]);
    const m = await db.metrics();
    expect(m.commits.groupSize.max).toBeGreaterThan(1);
    expect(db.events.lastId).toBe(1n + 47n * 2n);
    expect(db.verify().events).toBe(95);
    let prev = db.events.proof(1n)!.hash;
    for (let id = 2n; id <= 95n; id++) {
      const p = db.events.proof(id)!;
      expect(p.prevHash).toBe(prev);
      expect(verifyProof(p)).toBe(true);
      prev = p.hash;
    }
  });

  it('a chain turned on later starts at the next event; earlier events have no proof', async () => {
    const dir = sb.dir();
    const db = await Athanor.open(dir);
    await logEvents(db, ['a', 'b']);
    expectThrows(() => db.events.proof(1n), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await db.close();
    const chained = await sb.open(dir, { chain: true });
    await logEvents(chained, ['c']);
    expect(chained.events.proof(3n)!.chainFrom).toBe(3n);
    expectThrows(() => chained.events.proof(2n), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(chained.verify().events).toBe(3);
  });

  it('stays whole when several processes append at once (each opened without the option)', async () => {
    const dir = sb.dir();
    await (await Athanor.open(dir, { chain: true })).close();
    const child = path.join(HERE, 'fixtures', 'increment-child.mjs');
    const run = (name: string) =>
      new Promise<void>((resolve, reject) => {
        const c = spawn(process.execPath, [child, dir, '60', name], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${name} exited ${code}: ${err}`))));
      });
    await Promise.all([run('a'), run('b'), run('c')]);
    const db = await sb.open(dir);
    expect(db.events.lastId).toBe(180n);
    expect(db.verify().events).toBe(180);
    expect(verifyProof(db.events.proof(180n)!)).toBe(true);
  });

  it('matches golden/chain.json (computed with Python hashlib/hmac)', () => {
    const g = JSON.parse(fs.readFileSync(path.join(HERE, '..', 'native', 'core', 'tests', 'golden', 'chain.json'), 'utf8')) as {
      hmac_key: string;
      links: { id: number; record: string; prev: string; sha256: string; hmac_prev: string; hmac_sha256: string }[];
    };
    for (const c of g.links) {
      const base = { id: BigInt(c.id), record: Buffer.from(c.record, 'hex'), chainFrom: 1n };
      const sha: EventProof = { ...base, prevHash: c.prev, hash: c.sha256, algorithm: 'sha256' };
      const mac: EventProof = { ...base, prevHash: c.hmac_prev, hash: c.hmac_sha256, algorithm: 'hmac-sha256' };
      expect(verifyProof(sha)).toBe(true);
      expect(verifyProof(mac, Buffer.from(g.hmac_key, 'hex'))).toBe(true);
    }
  });
});
