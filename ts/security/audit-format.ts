/**
 * The audit trail's on-disk format: one spec, one encoder, one decoder, pinned by
 * `test/golden/audit-v1.json` (checked by test/audit-format.test.ts).
 *
 * ## Records
 *
 * Key: `\0athanor/audit/<at: ms since the epoch, 12 lower-case hex>/<writer nonce, 8 hex><seq, 8 hex>`.
 * A process's keys only grow (time, then its sequence), so its records append at the
 * end of the trail's key range; the time in the key is the record's `at`.
 *
 * Value, format 1: a `bytes` value:
 *
 * ```text
 * u8        1 (the format)
 * u8        flags: bit 0 outcome deny (else allow), bit 1 `until` present, bit 2 `detail` present
 * 16 bytes  profile id (see below)
 * str       action
 * str       permission
 * varint    count
 * [varint   until - at]          (flag bit 1)
 * [str      detail]              (flag bit 2)
 * ```
 *
 * A transaction's record is written as a *trail count* (native/core/src/txn.rs): its
 * value is the format-1 record cut before `count`, with flag bit 1 set
 * ({@link encodeCounted}); the writer merges the equal ones of a group commit and
 * appends `count` and `until - at` (the first one's key and time, the last one's
 * time). What is stored is a format-1 record like the others: one for each caller,
 * operation and grant per group commit, however many transactions it holds.
 *
 * Format 0 (before format 1; still read, no longer written): a `string` value holding
 * the record as JSON text, `{ at, until?, count, caller, roles, namespace, action,
 * permission, outcome, detail? }`.
 *
 * ## Profiles
 *
 * What is constant for a caller (its id, its roles, the namespace) is stored once, as a
 * profile, and records name it by id. Key: `\0athanor/audit-profile/<id, 32 hex>`;
 * value, format 1, a `bytes` value:
 *
 * ```text
 * u8      1 (the format)
 * str     caller id
 * varint  role count, then str per role
 * str     namespace
 * ```
 *
 * The id is the first 16 bytes of SHA-256 over that value, so every process writes the
 * same profile under the same key. A profile is written in the commit of the first
 * record that names it (and in every commit until one of them is seen committed), and
 * is never pruned: every stored record's profile is in the store.
 *
 * `varint`: unsigned LEB128 (7 bits a byte, low first), at most 2^53 - 1.
 * `str`: a varint byte length, then that many bytes of UTF-8.
 */
import { createHash } from 'node:crypto';
import { CorruptError } from '../errors.js';
import { bytes, type Value } from '../state/codec.js';
import { RESERVED_PREFIX } from '../state/reserved.js';

/** The reserved prefix of the audit trail's record keys. @internal */
export const AUDIT_PREFIX = `${RESERVED_PREFIX}audit/`;
/** The reserved prefix of the audit trail's profiles. @internal */
export const PROFILE_PREFIX = `${RESERVED_PREFIX}audit-profile/`;
/** The record and profile format written now. @internal */
export const AUDIT_FORMAT = 1;

const DENY = 1;
const UNTIL = 2;
const DETAIL = 4;
const ID_BYTES = 16;

/** What the decoders read of a stored value (any `Value`). @internal */
export interface StoredValue {
  readonly type: string;
  asBytes(): Uint8Array;
  asString(): string;
}

/** What is constant for a caller in its records. @internal */
export interface Profile {
  readonly caller: string;
  readonly roles: readonly string[];
  readonly namespace: string;
  /** The 16-byte id records name it by. */
  readonly id: Uint8Array;
  /** Its state key. */
  readonly key: string;
  /** Its stored value. */
  readonly value: Value;
}

/** One record's fields as format 1 stores them (the time comes from the key). @internal */
export interface StoredRecord {
  at: number;
  until?: number;
  count: number;
  profile: Profile;
  action: string;
  permission: string;
  outcome: 'allow' | 'deny';
  detail?: string;
}

class Writer {
  readonly out: number[] = [];
  u8(v: number): void {
    this.out.push(v);
  }
  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`audit varint out of range: ${v}`);
    while (v >= 0x80) {
      this.out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.out.push(v);
  }
  raw(b: Uint8Array): void {
    for (const x of b) this.out.push(x);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.varint(b.length);
    this.raw(b);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

class Reader {
  pos = 0;
  constructor(
    readonly b: Uint8Array,
    readonly what: string,
  ) {}
  #fail(): never {
    throw new CorruptError(`${this.what} is damaged (it ends early or holds an impossible field); restore the database from a backup`);
  }
  u8(): number {
    if (this.pos >= this.b.length) this.#fail();
    return this.b[this.pos++]!;
  }
  varint(): number {
    let v = 0;
    for (let scale = 1; ; scale *= 0x80) {
      const x = this.u8();
      v += (x & 0x7f) * scale;
      if (x < 0x80) break;
      if (scale > 2 ** 46) this.#fail();
    }
    if (!Number.isSafeInteger(v)) this.#fail();
    return v;
  }
  raw(n: number): Uint8Array {
    if (this.pos + n > this.b.length) this.#fail();
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  str(): string {
    const n = this.varint();
    return Buffer.from(this.raw(n)).toString('utf8');
  }
  end(): void {
    if (this.pos !== this.b.length) this.#fail();
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The profile of `caller` with `roles` in `namespace`. @internal */
export function makeProfile(caller: string, roles: readonly string[], namespace: string): Profile {
  const w = new Writer();
  w.u8(AUDIT_FORMAT);
  w.str(caller);
  w.varint(roles.length);
  for (const r of roles) w.str(r);
  w.str(namespace);
  const value = w.bytes();
  const id = new Uint8Array(createHash('sha256').update(value).digest().subarray(0, ID_BYTES));
  return Object.freeze({ caller, roles: Object.freeze([...roles]), namespace, id, key: PROFILE_PREFIX + hex(id), value: bytes(value) });
}

/** Decodes a stored profile (`key` names it in errors). @internal */
export function decodeProfile(key: string, value: StoredValue): Profile {
  const what = `the audit profile ${JSON.stringify(key)}`;
  if (value.type !== 'bytes') throw new CorruptError(`${what} is not a bytes value; restore the database from a backup`);
  const r = new Reader(value.asBytes(), what);
  if (r.u8() !== AUDIT_FORMAT) throw new CorruptError(`${what} has an unknown format; open the database with the athanor version that wrote it`);
  const caller = r.str();
  const roles: string[] = [];
  for (let n = r.varint(); n > 0; n--) roles.push(r.str());
  const namespace = r.str();
  r.end();
  const p = makeProfile(caller, roles, namespace);
  if (p.key !== key) throw new CorruptError(`${what} does not match its id; restore the database from a backup`);
  return p;
}

const HEX12 = /^[0-9a-f]{12}$/;

/** A record key's time (ms since the epoch). @internal */
export function keyTime(key: string): number {
  const t = key.slice(AUDIT_PREFIX.length, AUDIT_PREFIX.length + 12);
  if (!key.startsWith(AUDIT_PREFIX) || !HEX12.test(t)) throw new CorruptError(`the audit record key ${JSON.stringify(key)} is not one athanor writes; restore the database from a backup`);
  return parseInt(t, 16);
}

/** A record key for time `at` (ms), writer `nonce` (8 hex) and its sequence number. @internal */
export function recordKey(at: number, nonce: string, seq: number): string {
  return `${AUDIT_PREFIX}${Math.max(0, Math.floor(at)).toString(16).padStart(12, '0')}/${nonce}${seq.toString(16).padStart(8, '0')}`;
}

/** Encodes a record's value (format 1). @internal */
export function encodeRecord(r: StoredRecord): Value {
  const w = new Writer();
  const until = r.until !== undefined ? Math.max(0, Math.floor(r.until) - Math.floor(r.at)) : undefined;
  w.u8(AUDIT_FORMAT);
  w.u8((r.outcome === 'deny' ? DENY : 0) | (until !== undefined ? UNTIL : 0) | (r.detail !== undefined ? DETAIL : 0));
  w.raw(r.profile.id);
  w.str(r.action);
  w.str(r.permission);
  w.varint(r.count);
  if (until !== undefined) w.varint(until);
  if (r.detail !== undefined) w.str(r.detail);
  return bytes(w.bytes());
}

/**
 * The body of a counted record (a trail count's value): `r` as format 1 up to its
 * `count`, flag bit 1 set; the writer appends `count` and `until - at`. @internal
 */
export function encodeCounted(r: Omit<StoredRecord, 'at' | 'until' | 'count' | 'detail'>): Value {
  const w = new Writer();
  w.u8(AUDIT_FORMAT);
  w.u8((r.outcome === 'deny' ? DENY : 0) | UNTIL);
  w.raw(r.profile.id);
  w.str(r.action);
  w.str(r.permission);
  return bytes(w.bytes());
}

/** One decision (or, for allowed reads, a count of identical ones). */
export interface AuditRecord {
  /** When (ms since the epoch); for counted decisions, the first one. */
  at: number;
  /** For counted decisions (reads, and one caller's transactions in one group commit): the last one. */
  until?: number;
  /** How many identical decisions this record stands for: reads are counted per batch, transactions per group commit. */
  count: number;
  /** The caller's id (`''`: the application itself, e.g. defining a role on a plain handle). */
  caller: string;
  /** The caller's roles at the time. */
  roles: string[];
  /** The namespace the operation addressed. */
  namespace: string;
  /** The operation, e.g. `db.get`, `tx.execute`, `vectors.drop`, `roles.define`. */
  action: string;
  /** For `allow`: the grants used; for `deny`: the permission missing. */
  permission: string;
  /** The decision. */
  outcome: 'allow' | 'deny';
  /** What was changed, for role changes (the role and its new grants). */
  detail?: string;
}

/**
 * Decodes the record stored under `key`, format 1 or 0; `profileOf(key)` reads a
 * stored profile value (`undefined`: missing, which is damage). @internal
 */
export function decodeRecord(key: string, value: StoredValue, profileOf: (profileKey: string) => Profile | undefined): AuditRecord {
  const what = `the audit record ${JSON.stringify(key)}`;
  if (value.type === 'string') {
    // Format 0: JSON text.
    let r: unknown;
    try {
      r = JSON.parse(value.asString());
    } catch {
      throw new CorruptError(`${what} is not JSON; restore the database from a backup`);
    }
    if (r === null || typeof r !== 'object') throw new CorruptError(`${what} is not a record; restore the database from a backup`);
    return r as AuditRecord;
  }
  if (value.type !== 'bytes') throw new CorruptError(`${what} has a value of type ${value.type}; restore the database from a backup`);
  const at = keyTime(key);
  const rd = new Reader(value.asBytes(), what);
  if (rd.u8() !== AUDIT_FORMAT) throw new CorruptError(`${what} has an unknown format; open the database with the athanor version that wrote it`);
  const flags = rd.u8();
  if (flags > (DENY | UNTIL | DETAIL)) throw new CorruptError(`${what} has unknown flags; open the database with the athanor version that wrote it`);
  const profileKey = PROFILE_PREFIX + hex(rd.raw(ID_BYTES));
  const action = rd.str();
  const permission = rd.str();
  const count = rd.varint();
  const until = flags & UNTIL ? at + rd.varint() : undefined;
  const detail = flags & DETAIL ? rd.str() : undefined;
  rd.end();
  const p = profileOf(profileKey);
  if (p === undefined) throw new CorruptError(`${what} names the audit profile ${JSON.stringify(profileKey)}, which is missing; restore the database from a backup`);
  const out: AuditRecord = { at, count, caller: p.caller, roles: [...p.roles], namespace: p.namespace, action, permission, outcome: flags & DENY ? 'deny' : 'allow' };
  if (until !== undefined) out.until = until;
  if (detail !== undefined) out.detail = detail;
  return out;
}
