// Online backup and restore: consistent under concurrent writers, projection cursors never past
// the copied log, deterministic content digests, compression and encryption, refusal of damaged,
// truncated or wrongly keyed backups with nothing written, and kill -9 during a restore.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, type BackupManifest, type BackupOptions, CorruptError, IntegrityError, InvalidArgumentError, i64, str } from '../dist/index.js';
import { Sandbox, expectRejects, killAfterReady } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

/** A database with state, events, a SQL projection and a vector collection. */
async function seeded(n = 200): Promise<Athanor> {
  const db = await sandbox.open();
  db.migrations.add({ version: 1, name: 'totals', up: 'CREATE TABLE totals (k TEXT PRIMARY KEY, n INTEGER NOT NULL)', down: 'DROP TABLE totals' });
  db.migrations.run();
  const docs = db.vectors.create('docs', { dimension: 8, metric: 'l2' });
  for (let i = 0; i < n; i += 50) {
    await db.transaction().execute((tx) => {
      for (let j = i; j < i + 50; j++) {
        tx.update('counter', (v) => i64((v?.asI64() ?? 0n) + 1n));
        tx.set(`item:${j}`, str(`value ${j}`));
        tx.log('added', { j });
      }
    });
  }
  const vectors = new Float32Array(n * 8).map((_, i) => Math.sin(i));
  await docs.upsertMany(Array.from({ length: n }, (_, i) => `d${i}`), vectors);
  return db;
}

function projector(db: Athanor) {
  const upsert = db.sql.prepare('INSERT INTO totals VALUES (?, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1');
  return db.processor('totals').on('added', () => void upsert.run('added')).build();
}

describe('backup and restore', () => {
  it('restores the same content digest, state, events, SQL tables and vector documents', async () => {
    const db = await seeded();
    await projector(db).catchUp();
    const target = path.join(sandbox.dir(), 'backup');
    const manifest = await db.backup(target);
    expect(manifest.files.map((f) => f.restoresTo).sort()).toEqual(['canonical/data.mdb', 'projection.db']);
    const digest = await db.contentDigest();
    expect(manifest.contentDigest.sha256).toBe(digest.sha256);
    expect(digest).toMatchObject({ events: 200, vectorDocuments: 200 });

    const restoredDir = path.join(sandbox.dir(), 'restored');
    const restored = await Athanor.restore(target, restoredDir);
    expect(restored.sha256).toBe(digest.sha256);
    const copy = await sandbox.open(restoredDir);
    expect(copy.verify().events).toBe(200);
    expect((await copy.contentDigest()).sha256).toBe(digest.sha256);
    expect(copy.get('counter').asI64()).toBe(200n);
    expect(copy.sql.get<{ n: number }>('SELECT n FROM totals WHERE k = ?', ['added'])?.n).toBe(200);
    const hits = copy.vectors.open('docs').search(new Float32Array(8).map((_, i) => Math.sin(8 * 7 + i)), { k: 1 });
    expect(hits[0]?.id).toBe('d7');
  });

  it('is consistent under concurrent writers; projection cursors never point past the copied log', async () => {
    const db = await seeded(100);
    const p = projector(db);
    void p.run();
    let stop = false;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      while (!stop) {
        await db.transaction().execute((tx) => {
          tx.update(`writer:${w}`, (v) => i64((v?.asI64() ?? 0n) + 1n));
          tx.log('added', {});
        });
      }
    });
    const target = path.join(sandbox.dir(), 'backup');
    const manifest = await db.backup(target, { compress: true });
    stop = true;
    await Promise.all(writers);
    await p.stop();
    const restoredDir = path.join(sandbox.dir(), 'restored');
    await Athanor.restore(target, restoredDir);
    const copy = await sandbox.open(restoredDir);
    const last = copy.events.lastId;
    expect(last.toString()).toBe(manifest.contentDigest.lastEventId);
    // Every event in the copy is reflected in the counter: the copy is one committed state.
    const written = [0, 1, 2, 3].reduce((sum, w) => sum + (copy.getOpt(`writer:${w}`)?.asI64() ?? 0n), 0n);
    expect(copy.get('counter').asI64() + written).toBe(last);
    const cursor = copy.sql.get<{ c: number }>('SELECT last_event_id AS c FROM _athanor_cursors WHERE name = ?', ['totals'])?.c ?? 0;
    expect(BigInt(cursor)).toBeLessThanOrEqual(last);
    expect(copy.sql.get<{ n: number }>('SELECT n FROM totals')?.n ?? 0).toBe(cursor); // one 'added' event per id here
  });

  it('describes each stored file exactly, plain, compressed or encrypted, while writers commit', async () => {
    const db = await seeded(100);
    await projector(db).catchUp();
    let stop = false;
    const writer = (async () => {
      while (!stop) await db.transaction().execute((tx) => tx.log('added', {}));
    })();
    const key = randomBytes(32);
    const variants: BackupOptions[] = [{}, { compress: true }, { encryptionKey: key }, { compress: 3, encryptionKey: key }];
    const manifests: { target: string; manifest: BackupManifest; options: BackupOptions }[] = [];
    for (const [i, options] of variants.entries()) {
      const target = path.join(sandbox.dir(), `backup-${i}`);
      const manifest = await db.backup(target, options);
      expect(fs.readdirSync(target).sort()).toEqual([...manifest.files.map((f) => f.name), 'manifest.json'].sort());
      for (const f of manifest.files) {
        const bytes = fs.readFileSync(path.join(target, f.name));
        expect({ name: f.name, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }).toEqual({ name: f.name, bytes: f.bytes, sha256: f.sha256 });
      }
      manifests.push({ target, manifest, options });
    }
    stop = true;
    await writer;
    // Restoring recomputes the digest from the restored copy: equal only if the digest was taken of the copied snapshot.
    for (const { target, manifest, options } of manifests) {
      const restored = await Athanor.restore(target, path.join(sandbox.dir(), 'restored'), { encryptionKey: options.encryptionKey });
      expect(restored.sha256).toBe(manifest.contentDigest.sha256);
      expect(restored.lastEventId.toString()).toBe(manifest.contentDigest.lastEventId);
    }
  });

  it('gives the same digest for the same logical state reached by different histories', async () => {
    const a = await sandbox.open();
    const b = await sandbox.open();
    for (const db of [a, b]) db.vectors.create('v', { dimension: 2, metric: 'cosine' });
    await a.transaction().execute((tx) => tx.set('k', i64(1n)));
    await a.transaction().execute((tx) => {
      tx.set('k', i64(2n));
      tx.set('gone', i64(0n));
    });
    await a.transaction().execute((tx) => tx.delete('gone'));
    await a.transaction().execute((tx) => tx.log('e', { n: 1 }));
    await a.transaction().execute((tx) => tx.log('e', { n: 2 }));
    await a.vectors.open('v').upsert('x', new Float32Array([1, 0]));
    await a.vectors.open('v').upsert('x', new Float32Array([0, 1]));

    await b.transaction().execute((tx) => {
      tx.set('k', i64(2n));
      tx.logMany([
        { type: 'e', payload: { n: 1 } },
        { type: 'e', payload: { n: 2 } },
      ]);
      tx.vectors('v').upsert('x', new Float32Array([0, 1]));
    });
    const [da, db2] = [await a.contentDigest(), await b.contentDigest()];
    expect(da.sha256).toBe(db2.sha256);
    expect(da.commitSeq).not.toBe(db2.commitSeq);
    await b.transaction().execute((tx) => tx.set('k', i64(3n)));
    expect((await b.contentDigest()).sha256).not.toBe(da.sha256);
  });

  it('encrypts with AES-256-GCM: the right key restores, a wrong or missing key is refused, nothing written', async () => {
    const db = await seeded(100);
    const key = randomBytes(32);
    const target = path.join(sandbox.dir(), 'backup');
    const manifest = await db.backup(target, { compress: 5, encryptionKey: key });
    expect(manifest.encryption).toBe('aes-256-gcm');
    // The stored bytes do not contain the plaintext.
    for (const f of manifest.files) expect(fs.readFileSync(path.join(target, f.name)).includes(Buffer.from('value 42'))).toBe(false);
    const out = path.join(sandbox.dir(), 'x');
    await expectRejects(Athanor.restore(target, out, { encryptionKey: randomBytes(32) }), IntegrityError, 'ERR_INTEGRITY');
    await expectRejects(Athanor.restore(target, out), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(fs.existsSync(out)).toBe(false);
    const restored = await Athanor.restore(target, out, { encryptionKey: key });
    expect(restored.sha256).toBe(manifest.contentDigest.sha256);
  });

  it('refuses truncated, altered or incomplete backups with ERR_CORRUPT naming the file, writing nothing', async () => {
    const db = await seeded(100);
    const make = async (options = {}) => {
      const t = path.join(sandbox.dir(), 'backup');
      const m = await db.backup(t, options);
      return { t, file: path.join(t, m.files.find((f) => f.restoresTo === 'canonical/data.mdb')!.name) };
    };
    const out = path.join(sandbox.dir(), 'never');
    {
      const { t, file } = await make();
      fs.truncateSync(file, fs.statSync(file).size - 4096);
      const e = await expectRejects(Athanor.restore(t, out), CorruptError, 'ERR_CORRUPT');
      expect(e.message).toContain(file);
    }
    {
      const { t, file } = await make({ compress: true });
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.from([0xff]), 0, 1, 100);
      fs.closeSync(fd);
      const e = await expectRejects(Athanor.restore(t, out), CorruptError, 'ERR_CORRUPT');
      expect(e.message).toContain(file);
    }
    {
      const { t } = await make();
      fs.rmSync(path.join(t, 'manifest.json'));
      await expectRejects(Athanor.restore(t, out), CorruptError, 'ERR_CORRUPT');
    }
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(path.dirname(out)).filter((n) => n.startsWith('never'))).toEqual([]);
  });

  it('refuses a target that holds files unless overwrite, and bad options before writing', async () => {
    const db = await seeded(50);
    const t = path.join(sandbox.dir(), 'backup');
    await db.backup(t);
    await expectRejects(db.backup(t), InvalidArgumentError, 'ERR_INVALID_ARGUMENT'); // not empty
    await expectRejects(db.backup(path.join(sandbox.dir(), 'b'), { encryptionKey: new Uint8Array(16) }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.backup(path.join(sandbox.dir(), 'b'), { compress: 42 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const other = await sandbox.open();
    await other.transaction().execute((tx) => tx.set('other', i64(1n)));
    await other.close();
    await expectRejects(Athanor.restore(t, other.dir), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const kept = await sandbox.open(other.dir);
    expect(kept.get('other').asI64()).toBe(1n);
    await kept.close();
    await Athanor.restore(t, other.dir, { overwrite: true });
    const replaced = await sandbox.open(other.dir);
    expect(replaced.getOpt('other')).toBeUndefined();
    expect(replaced.get('counter').asI64()).toBe(50n);
  });

  it('a restore killed at any moment leaves no half database: the target is absent or complete', async () => {
    const db = await seeded(400);
    const t = path.join(sandbox.dir(), 'backup');
    const m = await db.backup(t, { compress: true });
    const child = path.join(here, 'fixtures', 'restore-child.mjs');
    for (let trial = 0; trial < 4; trial++) {
      const out = path.join(sandbox.dir(), 'restored');
      const r = await killAfterReady(child, [t, out], Math.floor(Math.random() * 40));
      expect(r.ready, r.stderr).toBe(true);
      if (fs.existsSync(out)) {
        const copy = await Athanor.open(out);
        expect((await copy.contentDigest()).sha256).toBe(m.contentDigest.sha256);
        copy.verify();
        await copy.close();
      } else {
        // Only the staging folder can be left; a new restore still succeeds.
        await Athanor.restore(t, out);
      }
    }
  });
});
