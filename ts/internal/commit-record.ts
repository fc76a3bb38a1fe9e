/**
 * The one TypeScript reader of a commit record's head (spec:
 * native/core/src/wire/commit_record.rs): `u8 format = 1, u8 idLen, database id
 * (UTF-8), u64 commitSeq, u64 atMs, u64 firstEventId, u16 nCollections,
 * { u16 nameLen, name, u32 defLen, def }`, little-endian, then the transaction batch;
 * the addon reads the collections and the batch.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';

/** The format byte this build reads. @internal */
export const COMMIT_RECORD_FORMAT = 1;

/** What a commit record says about itself. @internal */
export interface CommitRecordHead {
  /** The id of the database that applied it. */
  databaseId: string;
  /** Its commit seq there. */
  commitSeq: bigint;
  /** When it was applied, ms since the epoch (the primary's clock). */
  atMs: number;
  /** The id of its first event; 0n when it logged none. */
  firstEventId: bigint;
  /** The names of the vector collections it writes to (their definitions follow each name). */
  collections: string[];
  /** Where the transaction batch starts. */
  batchOffset: number;
}

/** Reads a record's head; a buffer that is not one is an `InvalidArgumentError`. @internal */
export function readCommitRecordHead(buf: Uint8Array): CommitRecordHead {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 2 || b[0] !== COMMIT_RECORD_FORMAT) {
    throw new InvalidArgumentError(`not an athanor commit record (format ${b[0] ?? 'missing'}); is the replica reading the right stream?`);
  }
  const idLen = b[1]!;
  const nums = 2 + idLen;
  const truncated = () => new InvalidArgumentError('a truncated athanor commit record; is the replica reading the right stream?');
  if (b.length < nums + 26) throw truncated();
  let at = nums + 24;
  const n = b.readUInt16LE(at);
  at += 2;
  const collections: string[] = [];
  for (let i = 0; i < n; i++) {
    if (b.length < at + 2) throw truncated();
    const nameLen = b.readUInt16LE(at);
    if (b.length < at + 2 + nameLen + 4) throw truncated();
    collections.push(b.toString('utf8', at + 2, at + 2 + nameLen));
    at += 2 + nameLen;
    at += 4 + b.readUInt32LE(at);
  }
  if (b.length < at) throw truncated();
  return {
    databaseId: b.toString('utf8', 2, nums),
    commitSeq: b.readBigUInt64LE(nums),
    atMs: Number(b.readBigUInt64LE(nums + 8)),
    firstEventId: b.readBigUInt64LE(nums + 16),
    collections,
    batchOffset: at,
  };
}
