/**
 * The one encoder of the `commitMany` hand-over (spec:
 * native/core/src/wire/commit_many.rs): frames `u32 token, u32 len, batch`,
 * little-endian, one per token in order. Its answer is a completion group of the
 * tokens not queued (internal/completion.ts), read by {@link readFailures}.
 * @internal
 */
import type { ByteWriter } from './bytes.js';
import { GROUP_HEADER, TOKEN_LEN, readCompletion, readGroupSize, readToken } from './completion.js';

/** Bytes in front of a frame's batch. @internal */
export const FRAME_HEADER = 8;

/** Starts a frame for `token` in `w`; returns its offset, for {@link endFrame}. @internal */
export function beginFrame(w: ByteWriter, token: number): number {
  const at = w.pos;
  w.u32(token);
  w.u32(0);
  return at;
}

/** Closes the frame begun at `at`: its length is what was written since. @internal */
export function endFrame(w: ByteWriter, at: number): void {
  w.buf.writeUInt32LE(w.pos - at - FRAME_HEADER, at + 4);
}

/** Calls `failed` with each token of the answer that was not queued and its typed error. @internal */
export function readFailures(answer: Buffer, failed: (token: number, error: Error) => void): void {
  const n = readGroupSize(answer);
  let off = GROUP_HEADER;
  for (let i = 0; i < n; i++) {
    const token = readToken(answer, off);
    const r = readCompletion(answer, off + TOKEN_LEN);
    off = r.end;
    failed(token, r.error ?? new Error(`commitMany answered token ${token} without an error (a bug in athanor: please report it)`));
  }
}
