/**
 * The audit trail's stored format (ts/security/audit-format.ts): format 1 encodes and
 * decodes byte for byte as `test/golden/audit-v1.json` pins it; records written before
 * it (format 0, JSON text) still read; a caller's profile is stored once and records
 * stay small; a record naming a missing profile is reported as damage.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { CorruptError, bytes as distBytes, str as distStr, i64, type Athanor } from '../dist/index.js';
import { AUDIT_PREFIX, PROFILE_PREFIX, decodeProfile, decodeRecord, encodeCounted, encodeRecord, makeProfile, recordKey } from '../ts/security/audit-format.js';
import { bytes } from '../ts/state/codec.js';
import { Sandbox, expectRejects } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

interface Golden {
  format: number;
  profiles: { caller: string; roles: string[]; namespace: string; key: string; hex: string }[];
  records: {
    key: string;
    profile: number;
    record: { at: number; until?: number; count: number; action: string; permission: string; outcome: 'allow' | 'deny'; detail?: string };
    hex: string;
  }[];
}

const golden = JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'golden', 'audit-v1.json'), 'utf8')) as Golden;
/** Expects `fn` to throw athanor's ERR_CORRUPT with a message matching `message`. */
function expectCorrupt(fn: () => unknown, message: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toMatchObject({ code: 'ERR_CORRUPT', message: expect.stringMatching(message) });
}

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// The capability to write reserved keys (internal to athanor, so not in the typings).
const { INTERNAL } = (await import('../dist/state/reserved.js')) as unknown as { INTERNAL: symbol };

/** Writes athanor's own keys the way the audit trail does (the capability tests may hold). */
async function internalSet(db: Athanor, entries: [string, ReturnType<typeof distStr>][]): Promise<void> {
  const builder = (db.transaction() as unknown as Record<symbol, () => ReturnType<Athanor['transaction']>>)[INTERNAL]!();
  await builder.execute((tx) => {
    for (const [k, v] of entries) tx.set(k, v);
  });
}

describe('audit format 1 (golden)', () => {
  it('encodes profiles and records byte for byte as pinned', () => {
    expect(golden.format).toBe(1);
    const profiles = golden.profiles.map((g) => {
      const p = makeProfile(g.caller, g.roles, g.namespace);
      expect(p.key).toBe(g.key);
      expect(hexOf(p.value.asBytes())).toBe(g.hex);
      return p;
    });
    for (const g of golden.records) {
      expect(hexOf(encodeRecord({ ...g.record, profile: profiles[g.profile]! }).asBytes())).toBe(g.hex);
      expect(recordKey(g.record.at, g.key.slice(-16, -8), parseInt(g.key.slice(-8), 16))).toBe(g.key);
    }
  });

  it('a counted body, followed by the count and span the writer appends (LEB128), is the pinned record', () => {
    const leb = (v: number): number[] => {
      const out: number[] = [];
      for (; v >= 0x80; v = Math.floor(v / 0x80)) out.push((v % 0x80) | 0x80);
      return [...out, v];
    };
    const counted = golden.records.filter((g) => g.record.until !== undefined && g.record.detail === undefined);
    expect(counted.length).toBeGreaterThan(0);
    for (const g of counted) {
      const profile = makeProfile(golden.profiles[g.profile]!.caller, golden.profiles[g.profile]!.roles, golden.profiles[g.profile]!.namespace);
      const body = encodeCounted({ ...g.record, profile }).asBytes();
      expect(hexOf(Uint8Array.from([...body, ...leb(g.record.count), ...leb(g.record.until! - g.record.at)]))).toBe(g.hex);
    }
  });

  it('decodes the pinned bytes to the records they stand for', () => {
    const stored = new Map(golden.profiles.map((g) => [g.key, decodeProfile(g.key, bytes(Buffer.from(g.hex, 'hex')))]));
    for (const g of golden.records) {
      const p = golden.profiles[g.profile]!;
      const r = decodeRecord(g.key, bytes(Buffer.from(g.hex, 'hex')), (k) => stored.get(k));
      expect(r).toEqual({ ...g.record, caller: p.caller, roles: p.roles, namespace: p.namespace });
    }
  });

  it('refuses damaged bytes with ERR_CORRUPT', () => {
    const g = golden.records[0]!;
    const p = golden.profiles[g.profile]!;
    const profileOf = () => decodeProfile(p.key, bytes(Buffer.from(p.hex, 'hex')));
    const full = Buffer.from(g.hex, 'hex');
    for (let n = 0; n < full.length; n++) expectCorrupt(() => decodeRecord(g.key, bytes(full.subarray(0, n)), profileOf), /damaged/);
    expectCorrupt(() => decodeRecord(g.key, bytes(Buffer.concat([full, Buffer.from([0])])), profileOf), /damaged/);
    expectCorrupt(() => decodeRecord(g.key, bytes(Buffer.from([2, ...full.subarray(1)])), profileOf), /unknown format/);
    expectCorrupt(() => decodeRecord(g.key, bytes(full), () => undefined), /missing/);
    expectCorrupt(() => decodeProfile(PROFILE_PREFIX + '00'.repeat(16), bytes(Buffer.from(p.hex, 'hex'))), /does not match/);
  });
});

describe('audit trail on disk', () => {
  it('stores a caller once, as a profile, and one record of a few dozen bytes per caller, grant and group commit', async () => {
    const db = await sb.open();
    const h = db.as({ id: 'service-with-a-long-identifier@tenant-0001', roles: ['developer', 'viewer'] });
    // Twenty transactions in flight at once share group commits; ten in a row commit one by one.
    await Promise.all(Array.from({ length: 20 }, (_, i) => h.transaction().execute((tx) => tx.set(`k${i}`, i64(i)))));
    for (let i = 20; i < 30; i++) await h.transaction().execute((tx) => tx.set(`k${i}`, i64(i)));
    expect(db.list({ prefix: PROFILE_PREFIX }).length).toBe(1);
    const recs = db.list({ prefix: AUDIT_PREFIX });
    expect(recs.length).toBeGreaterThanOrEqual(11);
    expect(recs.length).toBeLessThan(30);
    for (const e of recs) expect(e.value.asBytes().length).toBeLessThan(48);
    const q = await db.audit.query({ caller: 'service-with-a-long-identifier@tenant-0001', action: 'tx.execute' });
    expect(q.length).toBe(recs.length);
    // Every transaction is counted once: in flight, several to a record; in a row, one each.
    expect(q.reduce((n, r) => n + r.count, 0)).toBe(30);
    expect(q.slice(-10).map((r) => r.count)).toEqual(Array(10).fill(1));
    expect(Math.max(...q.map((r) => r.count))).toBeGreaterThan(1);
    for (const r of q) {
      expect(r).toEqual(expect.objectContaining({ roles: ['developer', 'viewer'], namespace: 'default', permission: 'write', outcome: 'allow' }));
      expect(r.until).toBeGreaterThanOrEqual(r.at);
    }
  });

  it('still reads records written as JSON text (format 0) beside format 1, with every filter', async () => {
    const dir = sb.dir();
    let db = await sb.open(dir);
    // A minute ago, within the default retention; the format-1 record comes after.
    const base = Date.now() - 60_000;
    const old = { at: base, count: 3, until: base + 500, caller: 'legacy', roles: ['viewer'], namespace: 'default', action: 'db.get', permission: 'read', outcome: 'allow' };
    const denied = { at: base + 1000, count: 1, caller: 'legacy', roles: ['viewer'], namespace: 'default', action: 'tx.set', permission: 'write key:"x"', outcome: 'deny' };
    await internalSet(db, [
      [recordKey(old.at, 'abcdef01', 0), distStr(JSON.stringify(old))],
      [recordKey(denied.at, 'abcdef01', 1), distStr(JSON.stringify(denied))],
    ]);
    await db.as({ id: 'legacy', roles: ['viewer'] }).audit.query().catch(() => undefined); // a viewer is refused: one format-1 denial
    await db.close();
    db = await sb.open(dir);
    expect(await db.audit.query({ caller: 'legacy', to: base + 2000 })).toEqual([old, denied]);
    expect(await db.audit.query({ caller: 'legacy', outcome: 'deny', to: base + 2000 })).toEqual([denied]);
    const now = await db.audit.query({ caller: 'legacy', from: base + 2000 });
    expect(now).toEqual([expect.objectContaining({ action: 'audit.query', outcome: 'deny', roles: ['viewer'] })]);
    expect(await db.audit.query({ caller: 'legacy' })).toHaveLength(3);
  });

  it('reports a record whose profile is missing as damage, not as a record of nobody', async () => {
    const db = await sb.open();
    const p = makeProfile('ghost', [], 'default');
    const at = Date.now() - 1000;
    const rec = encodeRecord({ at, count: 1, profile: p, action: 'db.get', permission: 'read', outcome: 'allow' });
    await internalSet(db, [[recordKey(at, 'abcdef01', 0), distBytes(rec.asBytes())]]);
    await expectRejects(db.audit.query(), CorruptError, 'ERR_CORRUPT');
  });
});
