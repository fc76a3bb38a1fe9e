/**
 * The one decoder of a page of state entries, `db.list()` (spec:
 * native/core/src/wire/state_list.rs): `u32 keyLen, key (UTF-8), u32 valueLen,
 * encoded value`, little-endian, repeated to the end of the buffer.
 * @internal
 */

/**
 * Reads every entry of `buf`, each made by `entry` from its key and where its
 * encoded value lies (the value codec is state/'s business).
 * @internal
 */
export function readStateList<T>(buf: Buffer, entry: (key: string, buf: Buffer, off: number, len: number) => T): T[] {
  const out: T[] = [];
  for (let off = 0; off < buf.length; ) {
    const keyLen = buf.readUInt32LE(off);
    const key = buf.toString('utf8', off + 4, off + 4 + keyLen);
    off += 4 + keyLen;
    const valueLen = buf.readUInt32LE(off);
    out.push(entry(key, buf, off + 4, valueLen));
    off += 4 + valueLen;
  }
  return out;
}
