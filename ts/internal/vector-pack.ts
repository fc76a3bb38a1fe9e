/**
 * The one decoder of the addon's packed vector answers, little-endian: search hits
 * (spec: native/core/src/wire/hits.rs: `u32 n`, then per hit `f32 score, u16 idLen, id,
 * u32 metaLen, metadata JSON`; a batch: `u32 nq`, then nq such lists) and a stored
 * document (spec: native/core/src/wire/document.rs: `f32 × dimension`, then its metadata
 * JSON, if any).
 * Metadata comes back parsed; what it means (a projection's wrapping) is vectors/'s business.
 * @internal
 */
import { parseJson } from './json.js';

/**
 * Reads packed hits starting at `off` into `out`, each made by `hit` from its id, score and
 * parsed metadata (`undefined` when none was stored); returns the offset after them.
 * @internal
 */
export function readHits<H>(buf: Buffer, off: number, out: H[], hit: (id: string, score: number, metadata: unknown) => H): number {
  const n = buf.readUInt32LE(off);
  off += 4;
  for (let i = 0; i < n; i++) {
    const score = buf.readFloatLE(off);
    const idLen = buf.readUInt16LE(off + 4);
    const id = buf.toString('utf8', off + 6, off + 6 + idLen);
    off += 6 + idLen;
    const metaLen = buf.readUInt32LE(off);
    off += 4;
    out.push(hit(id, score, metaLen === 0 ? undefined : parseJson(buf.toString('utf8', off, off + metaLen))));
    off += metaLen;
  }
  return off;
}

/**
 * Reads a batch of searches' hits (`u32 nq`, then nq hit lists as {@link readHits} reads
 * them), one array per query, in query order.
 * @internal
 */
export function readHitBatch<H>(buf: Buffer, hit: (id: string, score: number, metadata: unknown) => H): H[][] {
  const nq = buf.readUInt32LE(0);
  const all: H[][] = new Array(nq);
  let off = 4;
  for (let i = 0; i < nq; i++) {
    const hits: H[] = [];
    off = readHits(buf, off, hits, hit);
    all[i] = hits;
  }
  return all;
}

/** Reads a stored document: its vector and parsed metadata (`undefined` when none). @internal */
export function readDocument(buf: Buffer, dimension: number): { vector: Float32Array; metadata: unknown } {
  const n = dimension * 4;
  const vector = new Float32Array(dimension);
  new Uint8Array(vector.buffer).set(buf.subarray(0, n));
  return { vector, metadata: buf.length > n ? parseJson(buf.toString('utf8', n)) : undefined };
}
