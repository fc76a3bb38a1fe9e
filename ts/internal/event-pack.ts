/**
 * The one decoder of the packed events `Store::read_events` returns (spec:
 * native/core/src/wire/events.rs):
 * `u32 count`, then per event `u64 id, u64 commitSeq, u64 at, u8 kind, u16 typeLen,
 * type, u32 payloadLen, payload` (kind 1: JSON text, else bytes), little-endian.
 * @internal
 */
import { parseJson } from './json.js';

/** A stored event. */
export interface StoredEvent<P = unknown> {
  /** Dense, strictly increasing id assigned at commit (first event is 1n). */
  id: bigint;
  /** The event type. */
  type: string;
  /**
   * The payload: parsed JSON, or a `Uint8Array` for bytes payloads. An integer
   * beyond ±(2^53-1) is a `bigint` with all its digits (see `Tx.log`).
   */
  payload: P;
  /** Commit time, milliseconds since the Unix epoch. */
  at: number;
  /** Commit sequence number of the transaction that logged it. */
  commitSeq: bigint;
  /**
   * The payload's schema version, when it was logged with one (`tx.log(type, payload,
   * { schemaVersion })`); after upcasting, the newest version of its type. Absent: version 1.
   */
  schemaVersion?: number;
}

/** Node's Buffer has had `utf8Slice` (toString without argument juggling) since v0.x, on every version we support. */
type FastBuffer = Buffer & { utf8Slice(start: number, end: number): string };

/**
 * Decodes packed events (`Store::read_events`), tuned for long runs of consecutive
 * events: the type string and the commit seq of the previous event are reused when
 * their bytes repeat, and the commit time is read without a BigInt.
 * @internal
 */
export function decodeEvents(buf: Buffer): StoredEvent[] {
  const b = buf as FastBuffer;
  const count = b.readUInt32LE(0);
  const out: StoredEvent[] = new Array(count);
  let o = 4;
  let prevType = '';
  let prevTypeOff = -1;
  let prevTypeLen = -1;
  let prevSeqLo = -1;
  let prevSeqHi = -1;
  let prevSeq = 0n;
  for (let i = 0; i < count; i++) {
    const id = b.readBigUInt64LE(o);
    const seqLo = b.readUInt32LE(o + 8);
    const seqHi = b.readUInt32LE(o + 12);
    let commitSeq = prevSeq;
    if (seqLo !== prevSeqLo || seqHi !== prevSeqHi) {
      commitSeq = prevSeq = b.readBigUInt64LE(o + 8);
      prevSeqLo = seqLo;
      prevSeqHi = seqHi;
    }
    const at = b.readUInt32LE(o + 16) + b.readUInt32LE(o + 20) * 4294967296;
    const kind = b[o + 24]!;
    const tlen = b.readUInt16LE(o + 25);
    const t0 = o + 27;
    let type = prevType;
    if (tlen !== prevTypeLen || !sameBytes(b, t0, prevTypeOff, tlen)) {
      type = prevType = b.utf8Slice(t0, t0 + tlen);
      prevTypeLen = tlen;
    }
    prevTypeOff = t0;
    o = t0 + tlen;
    const plen = b.readUInt32LE(o);
    o += 4;
    if (kind <= 2) {
      const payload = kind === 1 ? parseJson(b.utf8Slice(o, o + plen)) : new Uint8Array(b.subarray(o, o + plen));
      out[i] = { id, type, payload, at, commitSeq };
    } else {
      // Kinds 3 and 4: JSON and bytes led by their schema version (u32 BE).
      const schemaVersion = b.readUInt32BE(o);
      const payload = kind === 3 ? parseJson(b.utf8Slice(o + 4, o + plen)) : new Uint8Array(b.subarray(o + 4, o + plen));
      out[i] = { id, type, payload, at, commitSeq, schemaVersion };
    }
    o += plen;
  }
  return out;
}

function sameBytes(b: Buffer, x: number, y: number, n: number): boolean {
  if (y < 0) return false;
  for (let i = 0; i < n; i++) if (b[x + i] !== b[y + i]) return false;
  return true;
}
