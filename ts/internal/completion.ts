/**
 * The commit completion record the addon hands back for each transaction
 * (native/node/src/lib.rs `pack`): `u8 status` (0 applied, 1 duplicate, 2 failed),
 * `u64 commitSeq, u64 firstEventId, u32 eventCount, u16 codeLen, code, u32 msgLen,
 * message`, little-endian. `commitSync` returns one; a commit group's notice carries
 * `u64 commitSeq, u64 lastEventId, u32 n` and then n times `u64 token` + a record.
 * @internal
 */
import { errorFor } from '../errors.js';

/** What a commit reports (before the callback's value is attached). @internal */
export interface CommitInfo {
  outcome: 'applied' | 'duplicate';
  commitSeq: bigint;
  firstEventId: bigint | null;
  eventCount: number;
}

/** Reads one completion record at `off`; `end` is the offset after it. @internal */
export function readCompletion(buf: Buffer, off: number): { info?: CommitInfo; error?: Error; end: number } {
  const status = buf[off]!;
  const commitSeq = buf.readBigUInt64LE(off + 1);
  const firstEventId = buf.readBigUInt64LE(off + 9);
  const eventCount = buf.readUInt32LE(off + 17);
  const codeLen = buf.readUInt16LE(off + 21);
  const code = buf.toString('utf8', off + 23, off + 23 + codeLen);
  const msgOff = off + 23 + codeLen;
  const msgLen = buf.readUInt32LE(msgOff);
  const end = msgOff + 4 + msgLen;
  if (status === 2) return { error: errorFor(code, buf.toString('utf8', msgOff + 4, end)), end };
  return {
    info: { outcome: status === 0 ? 'applied' : 'duplicate', commitSeq, firstEventId: eventCount > 0 ? firstEventId : null, eventCount },
    end,
  };
}
