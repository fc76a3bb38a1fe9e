/**
 * The one decoder of commit completions (spec: native/core/src/wire/completion.rs).
 * A record, `commitSync`'s answer: `u8 status` (0 applied, 1 duplicate, 2 failed),
 * `u64 commitSeq, u64 firstEventId, u32 eventCount, u16 codeLen, code, u32 msgLen,
 * message, i32 sqliteCode (0: none), u16 causeCount`, then causeCount times
 * `u32 len, cause text` (outermost first); a group, what the commit callback receives: `u64 commitSeq,
 * u64 lastEventId, u32 n`, then n times `u64 token` and a record. Little-endian.
 * @internal
 */
import { fromNative } from '../errors.js';

/** What a commit reports (before the callback's value is attached). @internal */
export interface CommitInfo {
  outcome: 'applied' | 'duplicate';
  commitSeq: bigint;
  firstEventId: bigint | null;
  eventCount: number;
}

/** Published after each group of commits. */
export interface CommitNotice {
  /** Commit seq of the newest applied transaction. */
  commitSeq: bigint;
  /** Id of the newest event (0n when the log is empty). */
  lastEventId: bigint;
}

/** Offset of a group's first token, after its header. @internal */
export const GROUP_HEADER = 20;
/** Bytes of a token, in front of its record. @internal */
export const TOKEN_LEN = 8;

/** The notice in a group's header. @internal */
export function readGroupNotice(buf: Buffer): CommitNotice {
  return { commitSeq: buf.readBigUInt64LE(0), lastEventId: buf.readBigUInt64LE(8) };
}

/** How many completions a group holds. @internal */
export function readGroupSize(buf: Buffer): number {
  return buf.readUInt32LE(16);
}

/** The token at `off` (its record follows at `off + TOKEN_LEN`); tokens are below 2^31. @internal */
export function readToken(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 4294967296;
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
  const msgEnd = msgOff + 4 + msgLen;
  const sqliteCode = buf.readInt32LE(msgEnd);
  const causeCount = buf.readUInt16LE(msgEnd + 4);
  let end = msgEnd + 6;
  if (status === 2) {
    const causes: string[] = [];
    for (let i = 0; i < causeCount; i++) {
      const len = buf.readUInt32LE(end);
      causes.push(buf.toString('utf8', end + 4, end + 4 + len));
      end += 4 + len;
    }
    return { error: failedCommit(code, buf.toString('utf8', msgOff + 4, msgEnd), sqliteCode, causes), end };
  }
  return {
    info: { outcome: status === 0 ? 'applied' : 'duplicate', commitSeq, firstEventId: eventCount > 0 ? firstEventId : null, eventCount },
    end,
  };
}

/**
 * The typed error of a failed commit: the same data a thrown engine error carries
 * (`code`, `sqliteCode`, a `cause` chain whose messages are the causes' texts),
 * typed by the one path that types those.
 */
function failedCommit(code: string, message: string, sqliteCode: number, causes: readonly string[]): Error {
  let cause: Error | undefined;
  for (let i = causes.length - 1; i >= 0; i--) cause = new Error(causes[i], cause === undefined ? undefined : { cause });
  const data = new Error(message, cause === undefined ? undefined : { cause }) as Error & { code: string; sqliteCode?: number };
  data.code = code;
  if (sqliteCode !== 0) data.sqliteCode = sqliteCode;
  return fromNative(data);
}
