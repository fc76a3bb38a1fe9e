/**
 * The one decoder of a state entry read inside a transaction, `txGet` (spec:
 * native/core/src/wire/entry.rs): `u64 version` big-endian, then the encoded value.
 * @internal
 */

/** Offset of the encoded value. @internal */
export const ENTRY_VALUE_OFFSET = 8;

/**
 * Reads the entry in the first `len` bytes of `buf` (a scratch buffer may be longer);
 * `value` decodes the value bytes.
 * @internal
 */
export function readEntry<T>(buf: Buffer, len: number, value: (buf: Buffer, off: number, len: number) => T): { version: bigint; value: T } {
  return { version: buf.readBigUInt64BE(0), value: value(buf, ENTRY_VALUE_OFFSET, len - ENTRY_VALUE_OFFSET) };
}
