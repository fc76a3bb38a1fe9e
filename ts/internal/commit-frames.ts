/**
 * The one encoder of the `commitMany` hand-over and the one reader of its answer
 * (spec: native/core/src/wire/commit_many.rs): frames `u32 token, u32 len, batch`,
 * little-endian, one per token in order; the answer is a line
 * `"<token> <ERR_CODE>: <message>"` per token that was not queued.
 * @internal
 */
import type { ByteWriter } from './bytes.js';

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

/** The token of an answer line and its error text (`ERR_CODE: message`). @internal */
export function readFailureLine(line: string): { token: number; error: string } {
  const space = line.indexOf(' ');
  return { token: Number(line.slice(0, space)), error: line.slice(space + 1) };
}
