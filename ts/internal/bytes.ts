/** Node's Buffer has `utf8Write` (without `write`'s argument juggling) on every version we support. */
export type FastBuffer = Buffer & { utf8Write(s: string, offset: number, length: number): number };

/** A growable byte buffer with little-endian writers (transaction wire format). @internal */
export class ByteWriter {
  buf: Buffer;
  pos = 0;
  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  reset(): void {
    this.pos = 0;
  }
  ensure(n: number): void {
    if (this.pos + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }
  u64(v: bigint): void {
    this.ensure(8);
    this.buf.writeBigUInt64LE(v, this.pos);
    this.pos += 8;
  }
  i64be(v: bigint): void {
    this.ensure(8);
    this.buf.writeBigInt64BE(v, this.pos);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** Writes a UTF-8 string behind a u16 length; returns its byte length. */
  str16(s: string): number {
    const max = s.length * 3;
    this.ensure(2 + max);
    const n = (this.buf as FastBuffer).utf8Write(s, this.pos + 2, max);
    this.buf.writeUInt16LE(n, this.pos);
    this.pos += 2 + n;
    return n;
  }
  /** Writes a UTF-8 string behind a u32 length; returns its byte length. */
  str32(s: string): number {
    const max = s.length * 3;
    this.ensure(4 + max);
    const n = (this.buf as FastBuffer).utf8Write(s, this.pos + 4, max);
    this.buf.writeUInt32LE(n, this.pos);
    this.pos += 4 + n;
    return n;
  }
  /**
   * Drops a buffer grown past 16 MiB (e.g. by a bulk vector upsert) so a reused
   * writer does not keep that memory for the life of the process.
   */
  shrink(): void {
    if (this.buf.length > 16 << 20) {
      this.buf = Buffer.allocUnsafe(4096);
      this.pos = 0;
    }
  }
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
