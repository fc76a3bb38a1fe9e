/** Reading documents and search hits back: the packed hits of the addon, and the metadata a projection wrapped. */
import { parseJson } from '../internal/json.js';
import { SOURCE_EVENT_KEY, SOURCE_VALUE_KEY } from '../state/tx-vectors.js';
import type { VectorHit } from './types.js';

/** Splits stored metadata into the user's and the source event id a projection recorded. @internal */
export function unwrapMeta<M>(stored: unknown): { metadata: M | undefined; eventId?: bigint } {
  if (stored === null || typeof stored !== 'object' || !(SOURCE_EVENT_KEY in stored)) return { metadata: stored as M | undefined };
  const { [SOURCE_EVENT_KEY]: source, [SOURCE_VALUE_KEY]: value, ...rest } = stored as Record<string, unknown>;
  const metadata = (SOURCE_VALUE_KEY in stored ? value : Object.keys(rest).length > 0 ? rest : undefined) as M | undefined;
  return { metadata, eventId: BigInt(source as string) };
}

/** Reads packed hits (see native/node/src/vector.rs `pack_hits`) starting at `off`; returns the offset after them. @internal */
export function readHits<M>(buf: Buffer, off: number, out: VectorHit<M>[]): number {
  const n = buf.readUInt32LE(off);
  off += 4;
  for (let i = 0; i < n; i++) {
    const score = buf.readFloatLE(off);
    const idLen = buf.readUInt16LE(off + 4);
    const id = buf.toString('utf8', off + 6, off + 6 + idLen);
    off += 6 + idLen;
    const metaLen = buf.readUInt32LE(off);
    off += 4;
    const hit: VectorHit<M> = metaLen === 0 ? { id, score, metadata: undefined } : { id, score, ...unwrapMeta<M>(parseJson(buf.toString('utf8', off, off + metaLen))) };
    off += metaLen;
    out.push(hit);
  }
  return off;
}
