/**
 * Online backups and restores. A backup is a directory: the compacted LMDB copy, a
 * consistent copy of projection.db, and `manifest.json` (written last, so a backup
 * without it is incomplete) with each file's SHA-256 and the store's content digest.
 * Files are optionally zstd-compressed and encrypted with AES-256-GCM under a key the
 * caller holds (never stored). Vector indexes are not copied: they are rebuilt from
 * the restored documents at open.
 */
import { describeThrown } from '../internal/thrown.js';
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { AthanorError, CorruptError, IntegrityError, InvalidArgumentError, IoError, VersionError, fromNative } from '../errors.js';
import { native } from '../internal/native.js';

/** The logical contents of a store, summarised: equal digests mean equal state, events and vector documents. */
export interface ContentDigest {
  /** SHA-256 (hex) over state, events (ids, types, payloads) and vector documents, independent of page layout and commit history. */
  sha256: string;
  /** State keys covered. */
  stateKeys: number;
  /** Events covered. */
  events: number;
  /** Vector documents covered. */
  vectorDocuments: number;
  /** Newest event id. */
  lastEventId: bigint;
  /** Commit seq of the newest commit. */
  commitSeq: bigint;
}

/** Progress of a backup or restore. */
export interface BackupProgress {
  /** What is being done now (`'digest'` is no longer reported: the digest is computed during `'canonical'`). */
  phase: 'projection' | 'canonical' | 'digest' | 'compress' | 'encrypt' | 'verify' | 'decrypt' | 'decompress' | 'install';
  /** Files finished so far, of `totalFiles`. */
  filesDone: number;
  /** Files in the backup. */
  totalFiles: number;
}

/** Options of `db.backup()`. */
export interface BackupOptions {
  /** Called as the backup moves through its phases. */
  onProgress?: (p: BackupProgress) => void;
  /** Cancels the backup between phases; the partial directory is removed and the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** zstd-compress the files (`true` = level 3, or a level 1..19). Default: no compression. */
  compress?: boolean | number;
  /** A 32-byte key: encrypt every file with AES-256-GCM and authenticate the manifest. Never stored; keep it safe. */
  encryptionKey?: Uint8Array;
}

/** Options of `Athanor.restore()`. */
export interface RestoreOptions {
  /** The key the backup was encrypted with. */
  encryptionKey?: Uint8Array;
  /** Replace a database already in the target directory (default false: refuse). */
  overwrite?: boolean;
  /** Called as the restore moves through its phases. */
  onProgress?: (p: BackupProgress) => void;
}

/** One file of a backup, as the manifest describes it. */
export interface BackupFile {
  /** Name inside the backup directory. */
  name: string;
  /** Where it goes in a database directory. */
  restoresTo: 'canonical/data.mdb' | 'projection.db';
  /** Size of the stored file. */
  bytes: number;
  /** SHA-256 (hex) of the stored file. */
  sha256: string;
  /** Stored compressed with zstd. */
  compressed: boolean;
  /** For encrypted backups: the AES-256-GCM nonce and tag (base64). */
  iv?: string;
  /** The GCM authentication tag. */
  tag?: string;
}

/** `manifest.json` of a backup. */
export interface BackupManifest {
  /** What the file is. */
  format: 'athanor-backup';
  /** The manifest format version. */
  version: 1;
  /** When the backup finished (ISO time). */
  createdAt: string;
  /** The content digest of the copied store (numbers as strings in JSON). */
  contentDigest: {
    /** SHA-256 (hex) over the state, the log and the vector documents. */
    sha256: string;
    /** State keys. */
    stateKeys: number;
    /** Events in the log. */
    events: number;
    /** Vector documents. */
    vectorDocuments: number;
    /** Id of the newest event. */
    lastEventId: string;
    /** Commit seq of the copy. */
    commitSeq: string;
  };
  /** `aes-256-gcm` when encrypted. */
  encryption: 'aes-256-gcm' | null;
  /** The files of the backup. */
  files: BackupFile[];
  /** For encrypted backups: HMAC-SHA256 (hex) of the manifest without this field, under a key derived from the encryption key. */
  mac?: string;
}

const MANIFEST = 'manifest.json';
const FORMAT_VERSION = 1;

/** A file a backup step wrote: its size and SHA-256, computed as it was written. @internal */
export interface WrittenFile {
  bytes: number;
  sha256: string;
}

/** What backup needs of an open database. @internal */
export interface BackupSource {
  dir: string;
  /** The compacted store copy written to `dst` (zstd at `zstdLevel`), hashed as written, with the digest of the copied snapshot. */
  backupCanonical(dst: string, zstdLevel: number | null): Promise<{ file: WrittenFile; digest: ContentDigest }>;
}

function checkKey(key: unknown, what: string): Buffer | undefined {
  if (key === undefined) return undefined;
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new InvalidArgumentError(`${what} must be 32 bytes (a Uint8Array), e.g. crypto.randomBytes(32); keep it: the backup cannot be read without it`);
  return Buffer.from(key);
}

function checkLevel(c: unknown): number | undefined {
  if (c === undefined || c === false) return undefined;
  if (c === true) return 3;
  if (typeof c !== 'number' || !Number.isInteger(c) || c < 1 || c > 19) throw new InvalidArgumentError('compress must be true, false or a zstd level from 1 to 19');
  return c;
}

function macKey(key: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'athanor backup manifest', 32));
}

function manifestMac(m: BackupManifest, key: Buffer): string {
  const { mac: _mac, ...rest } = m;
  return createHmac('sha256', macKey(key)).update(JSON.stringify(rest)).digest('hex');
}

async function sha256File(file: string): Promise<string> {
  return (await native.hashFile(file)).sha256;
}

/** Encrypts `src` into the new file `dst` with AES-256-GCM, hashing the ciphertext as it is written. */
async function encryptFile(src: string, dst: string, key: Buffer): Promise<{ written: WrittenFile; iv: string; tag: string }> {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const h = createHash('sha256');
  let bytes = 0;
  await pipeline(
    createReadStream(src),
    cipher,
    async function* (chunks: AsyncIterable<Buffer>) {
      for await (const chunk of chunks) {
        h.update(chunk);
        bytes += chunk.length;
        yield chunk;
      }
    },
    createWriteStream(dst, { flags: 'wx' }),
  );
  await syncPath(dst);
  return { written: { bytes, sha256: h.digest('hex') }, iv: nonce.toString('base64'), tag: cipher.getAuthTag().toString('base64') };
}

/**
 * Makes a file's contents, or a folder's entries, durable (fsync). A file written or
 * renamed into a folder survives power loss only once that folder is synced too: a
 * backup or restore that resolved must not vanish, or lose a file, with the power.
 */
async function syncPath(p: string): Promise<void> {
  if (process.platform === 'win32') return; // folders cannot be opened for fsync there
  const h = await fs.open(p, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Copies `src` to the new file `dst` through ordinary writes, then syncs it. Not
 * `fs.copyFile`: a kernel-side copy is invisible to the power-loss test's recorder, so
 * the restore's durability could not be checked.
 */
async function copySynced(src: string, dst: string): Promise<void> {
  await pipeline(createReadStream(src), createWriteStream(dst, { flags: 'wx' }));
  await syncPath(dst);
}

/** The typed error for what a backup or restore step threw. */
function typed(e: unknown): Error {
  if (e instanceof AthanorError) return e;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return new IoError(`${(e as Error).message}`);
  return fromNative(e);
}

/** Takes a backup of an open database into `target` (which must not exist, or be empty). @internal */
export async function takeBackup(db: BackupSource, target: string, options: BackupOptions = {}): Promise<BackupManifest> {
  if (typeof target !== 'string' || target.length === 0) throw new InvalidArgumentError('the backup target must be a directory path');
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object');
  const key = checkKey(options.encryptionKey, 'encryptionKey');
  const level = checkLevel(options.compress);
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new InvalidArgumentError('onProgress must be a function');
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal');
  const dest = path.resolve(target);
  if (existsSync(dest) && (await fs.readdir(dest)).length > 0) throw new InvalidArgumentError(`${dest} is not empty: back up into a new or empty directory`);
  const signal = options.signal;
  signal?.throwIfAborted();
  const projection = path.join(db.dir, 'projection.db');
  const hasProjection = existsSync(projection);
  const totalFiles = hasProjection ? 2 : 1;
  let filesDone = 0;
  const progress = (phase: BackupProgress['phase']): void => {
    signal?.throwIfAborted();
    options.onProgress?.({ phase, filesDone, totalFiles });
  };
  const work = `${dest}.partial-${randomBytes(4).toString('hex')}`;
  await fs.mkdir(work, { recursive: true });
  try {
    // Files needing a further step (encryption) are written here first.
    const raw = path.join(work, 'raw');
    await fs.mkdir(raw);
    const files: BackupFile[] = [];
    const zst = level !== undefined ? '.zst' : '';
    /** Encrypts the file when asked, and describes what ends up stored. */
    const stored = async (name: string, restoresTo: BackupFile['restoresTo'], at: string, written: WrittenFile): Promise<void> => {
      let extra = {};
      if (key) {
        progress('encrypt');
        const enc = await encryptFile(at, path.join(work, `${name}.enc`), key);
        await fs.rm(at, { force: true });
        name = `${name}.enc`;
        written = enc.written;
        extra = { iv: enc.iv, tag: enc.tag };
      }
      files.push({ name, restoresTo, bytes: written.bytes, sha256: written.sha256, compressed: level !== undefined, ...extra });
      filesDone++;
    };
    // Straight into the backup unless encryption follows.
    const firstHome = key ? raw : work;
    // projection.db first: its cursors then never point past the log copied after it.
    if (hasProjection) {
      progress('projection');
      let at = path.join(level !== undefined || key ? raw : work, 'projection.db');
      let written = await native.sqliteSnapshot(projection, at);
      if (level !== undefined) {
        progress('compress');
        const out = path.join(firstHome, `projection.db${zst}`);
        written = await native.compressFile(at, out, level);
        await fs.rm(at, { force: true });
        at = out;
      }
      await stored(`projection.db${zst}`, 'projection.db', at, written);
    }
    // The copy, its hash and the content digest of the copied snapshot, in one pass.
    progress('canonical');
    const canonicalAt = path.join(firstHome, `data.mdb${zst}`);
    const { file: canonical, digest } = await db.backupCanonical(canonicalAt, level ?? null);
    await stored(`data.mdb${zst}`, 'canonical/data.mdb', canonicalAt, canonical);
    // The manifest lists the store first, as before.
    files.reverse();
    await fs.rm(raw, { recursive: true, force: true });
    const manifest: BackupManifest = {
      format: 'athanor-backup',
      version: FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      contentDigest: { ...digest, lastEventId: digest.lastEventId.toString(), commitSeq: digest.commitSeq.toString() },
      encryption: key ? 'aes-256-gcm' : null,
      files,
    };
    if (key) manifest.mac = manifestMac(manifest, key);
    const handle = await fs.open(path.join(work, MANIFEST), 'wx');
    await handle.writeFile(JSON.stringify(manifest, null, 2) + '\n');
    await handle.sync();
    await handle.close();
    // The backup appears whole under its name, or not at all; once this resolves, it stays.
    await syncPath(work);
    if (existsSync(dest)) await fs.rmdir(dest);
    await fs.rename(work, dest);
    await syncPath(path.dirname(dest));
    return manifest;
  } catch (e) {
    await fs.rm(work, { recursive: true, force: true });
    if (signal?.aborted && e === signal.reason) throw e;
    throw typed(e);
  } finally {
    key?.fill(0);
  }
}

/** Reads and checks a backup's manifest (and its MAC when encrypted). */
async function readManifest(backupDir: string, key: Buffer | undefined): Promise<BackupManifest> {
  const file = path.join(backupDir, MANIFEST);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CorruptError(`${file} is missing: ${backupDir} is not a complete athanor backup (an interrupted backup has no manifest)`);
    }
    throw new IoError(`cannot read ${file}: ${(e as Error).message}`);
  }
  let m: BackupManifest;
  try {
    m = JSON.parse(text) as BackupManifest;
  } catch (e) {
    void e;
    throw new CorruptError(`${file} is not valid JSON: the backup is damaged`);
  }
  if (m?.format !== 'athanor-backup' || !Array.isArray(m.files) || typeof m.contentDigest?.sha256 !== 'string') {
    throw new CorruptError(`${file} is not an athanor backup manifest`);
  }
  if (typeof m.version !== 'number' || m.version > FORMAT_VERSION) throw new VersionError(`${file} is backup format ${describeThrown(m.version)}; this athanor reads ${FORMAT_VERSION}: upgrade athanor`);
  if (m.encryption !== null) {
    if (m.encryption !== 'aes-256-gcm') throw new CorruptError(`${file} names an unknown encryption ${JSON.stringify(m.encryption)}`);
    if (!key) throw new InvalidArgumentError('this backup is encrypted: pass the encryptionKey it was taken with');
    const want = Buffer.from(manifestMac(m, key), 'hex');
    const got = Buffer.from(typeof m.mac === 'string' ? m.mac : '', 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      throw new IntegrityError(`${file} does not authenticate with this key: the key is wrong, or the manifest was altered`);
    }
  }
  for (const f of m.files) {
    if (typeof f?.name !== 'string' || f.name.includes('/') || f.name.includes('\\') || f.name.startsWith('.') || (f.restoresTo !== 'canonical/data.mdb' && f.restoresTo !== 'projection.db')) {
      throw new CorruptError(`${file} lists a file it cannot hold: ${JSON.stringify(f?.name)}`);
    }
  }
  if (!m.files.some((f) => f.restoresTo === 'canonical/data.mdb')) throw new CorruptError(`${file} lists no canonical store`);
  return m;
}

/** Restores the backup in `backupDir` into `target`, verifying everything before the target changes. @internal */
export async function restoreBackup(backupDir: string, target: string, options: RestoreOptions = {}): Promise<ContentDigest> {
  if (typeof backupDir !== 'string' || backupDir.length === 0) throw new InvalidArgumentError('backupDir must be a directory path');
  if (typeof target !== 'string' || target.length === 0) throw new InvalidArgumentError('target must be a directory path');
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object');
  const key = checkKey(options.encryptionKey, 'encryptionKey');
  const src = path.resolve(backupDir);
  const dest = path.resolve(target);
  try {
    const m = await readManifest(src, key);
    if (!key && m.encryption === null && options.encryptionKey !== undefined) throw new InvalidArgumentError('this backup is not encrypted: drop encryptionKey');
    const totalFiles = m.files.length;
    let filesDone = 0;
    const progress = (phase: BackupProgress['phase']): void => options.onProgress?.({ phase, filesDone, totalFiles });
    // Every stored file must be exactly what the manifest says before anything is written.
    progress('verify');
    for (const f of m.files) {
      const p = path.join(src, f.name);
      const st = await fs.stat(p).catch(() => undefined);
      if (!st) throw new CorruptError(`${p} is missing from the backup`);
      if (st.size !== f.bytes) throw new CorruptError(`${p} is ${st.size} bytes; the manifest says ${f.bytes}: the backup is truncated or altered`);
      if ((await sha256File(p)) !== f.sha256) throw new CorruptError(`${p} does not match its SHA-256 in the manifest: the backup is altered or damaged`);
    }
    if (existsSync(dest) && (await fs.readdir(dest)).length > 0 && options.overwrite !== true) {
      throw new InvalidArgumentError(`${dest} is not empty: restore into a new directory, or pass overwrite: true to replace what is there`);
    }
    // Built beside the target and renamed into place: an interrupted restore leaves only the staging folder.
    const staging = `${dest}.restore-${randomBytes(4).toString('hex')}`;
    await fs.mkdir(path.join(staging, 'canonical'), { recursive: true });
    try {
      for (const f of m.files) {
        let current = path.join(src, f.name);
        const tmp: string[] = [];
        if (m.encryption !== null) {
          progress('decrypt');
          const out = path.join(staging, `${f.name}.dec`);
          const decipher = createDecipheriv('aes-256-gcm', key!, Buffer.from(f.iv ?? '', 'base64'));
          decipher.setAuthTag(Buffer.from(f.tag ?? '', 'base64'));
          try {
            await pipeline(createReadStream(current), decipher, createWriteStream(out, { flags: 'wx' }));
          } catch (e) {
            throw new IntegrityError(`${current} failed authentication (AES-256-GCM): wrong key or altered file`, { cause: e });
          }
          await syncPath(out); // before the rename into place: synced where it was written
          current = out;
          tmp.push(out);
        }
        const final = path.join(staging, f.restoresTo);
        if (f.compressed) {
          progress('decompress');
          await native.decompressFile(current, final);
        } else if (tmp.includes(current)) {
          await fs.rename(current, final);
        } else {
          await copySynced(current, final);
        }
        for (const t of tmp) await fs.rm(t, { force: true });
        filesDone++;
      }
      await syncPath(path.join(staging, 'canonical'));
      await syncPath(staging);
      progress('verify');
      const digest = (await native.digestDir(path.join(staging, 'canonical'))) as unknown as ContentDigest;
      if (digest.sha256 !== m.contentDigest.sha256) {
        throw new CorruptError(`the restored store's content digest ${digest.sha256} differs from the backup's ${m.contentDigest.sha256}`);
      }
      progress('install');
      if (existsSync(dest)) {
        const old = `${dest}.replaced-${randomBytes(4).toString('hex')}`;
        await fs.rename(dest, old);
        await fs.rename(staging, dest);
        await syncPath(path.dirname(dest));
        await fs.rm(old, { recursive: true, force: true });
      } else {
        await fs.rename(staging, dest);
        await syncPath(path.dirname(dest));
      }
      return digest;
    } catch (e) {
      await fs.rm(staging, { recursive: true, force: true });
      throw e;
    }
  } catch (e) {
    throw typed(e);
  } finally {
    key?.fill(0);
  }
}
