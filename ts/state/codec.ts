/**
 * Typed values: what state keys hold. Build them with {@link i64}, {@link u256},
 * {@link f64}, {@link bool}, {@link str}, {@link bytes}, {@link json},
 * {@link set} and {@link array}; read them back with `asI64()`, `asString()`...
 *
 * Encoding (shared with the Rust engine, which validates every write):
 * `[format = 1][tag][payload]`; see native/core/src/codec.rs.
 */
import { isUtf8 } from 'node:buffer';
import { InvalidArgumentError, ValueTypeError, VersionError } from '../errors.js';
import type { ByteWriter } from '../internal/bytes.js';
import { parseJson, stringifyStrict } from '../internal/json.js';

/** The value types athanor stores. */
export type ValueType = 'i64' | 'u256' | 'f64' | 'bool' | 'string' | 'bytes' | 'json' | 'set' | 'array';

/** A JSON-compatible value; a `bigint` is an integer written with all its digits (see {@link json}). */
export type Json = null | boolean | number | bigint | string | Json[] | { [key: string]: Json };

const FORMAT = 1;
const TAG: Record<ValueType, number> = { i64: 1, u256: 2, f64: 3, bool: 4, string: 5, bytes: 6, json: 7, set: 8, array: 9 };
const TYPE_OF_TAG: (ValueType | undefined)[] = [undefined, 'i64', 'u256', 'f64', 'bool', 'string', 'bytes', 'json', 'set', 'array'];

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U256_MAX = 2n ** 256n - 1n;

/** Passed by this module's own constructions, whose payload is already canonical. */
const TRUSTED: unique symbol = Symbol('athanor.value.trusted');

/**
 * Throws a typed error for an object that only looks like a Value (made with
 * `Object.create(Value.prototype)` or taken from another copy of athanor): its methods
 * would otherwise fail with an untyped `TypeError`.
 */
function assertValue(v: unknown): asserts v is Value {
  if (!Value.isValue(v)) {
    throw new InvalidArgumentError('this object is not a Value made by athanor: build values with i64(), str(), json(), ... or new Value(type, v)');
  }
}

/** An immutable typed value. */
export class Value {
  /** @internal */
  readonly #type: ValueType;
  /** @internal */
  readonly #v: unknown;
  /** @internal cached encoding */
  #enc: Buffer | undefined;

  /**
   * Prefer the constructor functions (`i64()`, `str()`, ...): `new Value(type, v)`
   * is the same as calling the function named by `type` with `v`, with the same
   * checks (`ERR_INVALID_ARGUMENT` for an unknown type or a payload it cannot hold).
   */
  constructor(type: ValueType, v: unknown, trusted?: typeof TRUSTED) {
    if (trusted === TRUSTED) {
      this.#type = type;
      this.#v = v;
      return;
    }
    const make = typeof type === 'string' && Object.hasOwn(FACTORIES, type) ? FACTORIES[type] : undefined;
    if (make === undefined) {
      throw new InvalidArgumentError(`unknown value type ${describeType(type)}; use one of ${Object.keys(FACTORIES).join(', ')} (or i64(), str(), ...)`);
    }
    const checked = make(v as never);
    this.#type = checked.#type;
    this.#v = checked.#v;
  }

  /** Whether `x` is a real `Value` (built by athanor), not merely an object with `Value.prototype`. */
  static isValue(x: unknown): x is Value {
    return typeof x === 'object' && x !== null && #type in x;
  }

  /** The stored type. */
  get type(): ValueType {
    assertValue(this);
    return this.#type;
  }

  #expect(t: ValueType): void {
    if (this.#type !== t) {
      throw new ValueTypeError(`expected a ${t} value but this value is ${this.#type}; read it with as${accessor(this.#type)}()`);
    }
  }

  /** The signed 64-bit integer. Throws `ERR_TYPE` for any other type. */
  asI64(): bigint {
    assertValue(this);
    this.#expect('i64');
    return this.#v as bigint;
  }
  /** The unsigned 256-bit integer. Throws `ERR_TYPE` for any other type. */
  asU256(): bigint {
    assertValue(this);
    this.#expect('u256');
    return this.#v as bigint;
  }
  /** The float. Throws `ERR_TYPE` for any other type. */
  asF64(): number {
    assertValue(this);
    this.#expect('f64');
    return this.#v as number;
  }
  /** The boolean. Throws `ERR_TYPE` for any other type. */
  asBool(): boolean {
    assertValue(this);
    this.#expect('bool');
    return this.#v as boolean;
  }
  /** The string. Throws `ERR_TYPE` for any other type. */
  asString(): string {
    assertValue(this);
    this.#expect('string');
    return this.#v as string;
  }
  /** A copy of the bytes. Throws `ERR_TYPE` for any other type. */
  asBytes(): Uint8Array {
    assertValue(this);
    this.#expect('bytes');
    return new Uint8Array(this.#v as Uint8Array);
  }
  /** The parsed JSON (a fresh object each call). Throws `ERR_TYPE` for any other type. */
  asJson<T = Json>(): T {
    assertValue(this);
    this.#expect('json');
    return parseJson(this.#v as string) as T;
  }
  /** The JSON text as stored. Throws `ERR_TYPE` for any other type. */
  asJsonText(): string {
    assertValue(this);
    this.#expect('json');
    return this.#v as string;
  }
  /** The set of strings (sorted). Throws `ERR_TYPE` for any other type. */
  asSet(): ReadonlySet<string> {
    assertValue(this);
    this.#expect('set');
    return new Set(this.#v as string[]);
  }
  /** The array elements. Throws `ERR_TYPE` for any other type. */
  asArray(): readonly Value[] {
    assertValue(this);
    this.#expect('array');
    return this.#v as Value[];
  }

  /** The value as a plain JS value (bigint, number, boolean, string, Uint8Array, JSON, Set, array). */
  toJS(): unknown {
    assertValue(this);
    switch (this.#type) {
      case 'bytes':
        return this.asBytes();
      case 'json':
        return this.asJson();
      case 'set':
        return this.asSet();
      case 'array':
        return (this.#v as Value[]).map((x) => x.toJS());
      default:
        return this.#v;
    }
  }

  /** True when both values have the same type and encoding. */
  equals(other: Value): boolean {
    assertValue(this);
    return Value.isValue(other) && this.#type === other.#type && encodeValue(this).equals(encodeValue(other));
  }

  /** A readable form, e.g. `i64(42)`. */
  toString(): string {
    assertValue(this);
    const v = this.#type === 'bytes' ? `${(this.#v as Uint8Array).length} bytes` : this.#type === 'array' ? (this.#v as Value[]).join(', ') : String(this.#v);
    return `${this.#type}(${v})`;
  }

  /** @internal */
  static encoded(v: Value): Buffer {
    assertValue(v);
    if (v.#enc === undefined) v.#enc = encodeFresh(v.#type, v.#v);
    return v.#enc;
  }

  /** @internal raw payload for encoding nested arrays */
  static raw(v: Value): unknown {
    assertValue(v);
    return v.#v;
  }
}

function accessor(t: ValueType): string {
  return { i64: 'I64', u256: 'U256', f64: 'F64', bool: 'Bool', string: 'String', bytes: 'Bytes', json: 'Json', set: 'Set', array: 'Array' }[t];
}

function toBigInt(n: bigint | number, what: string): bigint {
  if (typeof n === 'bigint') return n;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError(`${what} needs an integer (bigint or safe integer number), got ${typeof n === 'number' ? n : typeof n}`);
  }
  return BigInt(n);
}

/** A signed 64-bit integer value. Accepts a bigint or a safe-integer number; rejects NaN, fractions and out-of-range numbers. */
export function i64(n: bigint | number): Value {
  const b = toBigInt(n, 'i64()');
  if (b < I64_MIN || b > I64_MAX) throw new InvalidArgumentError(`i64() value ${b} is outside the signed 64-bit range; use u256() for larger non-negative integers`);
  return new Value('i64', b, TRUSTED);
}

/** An unsigned 256-bit integer value (0 ..= 2^256-1). */
export function u256(n: bigint | number): Value {
  const b = toBigInt(n, 'u256()');
  if (b < 0n || b > U256_MAX) throw new InvalidArgumentError(`u256() value must be within 0 ..= 2^256-1, got ${b}`);
  return new Value('u256', b, TRUSTED);
}

/** A 64-bit float value (NaN, infinities and -0 are stored exactly). */
export function f64(n: number): Value {
  if (typeof n !== 'number') throw new InvalidArgumentError(`f64() needs a number, got ${typeof n}`);
  return new Value('f64', n, TRUSTED);
}

/** A boolean value. */
export function bool(b: boolean): Value {
  if (typeof b !== 'boolean') throw new InvalidArgumentError(`bool() needs a boolean, got ${typeof b}`);
  return new Value('bool', b, TRUSTED);
}

/** A string value. */
export function str(s: string): Value {
  if (typeof s !== 'string') throw new InvalidArgumentError(`str() needs a string, got ${typeof s}`);
  if (!s.isWellFormed()) throw new InvalidArgumentError('str() got a string with lone surrogates, which UTF-8 cannot store');
  return new Value('string', s, TRUSTED);
}

/** A byte-string value (copied). */
export function bytes(b: Uint8Array): Value {
  if (!(b instanceof Uint8Array)) throw new InvalidArgumentError('bytes() needs a Uint8Array or Buffer');
  return new Value('bytes', new Uint8Array(b), TRUSTED);
}

/**
 * A JSON value, serialised now. Rejects what JSON cannot represent (NaN, Infinity,
 * cycles, functions). A `bigint` is kept with all its digits (the rule of {@link Tx.log} payloads).
 */
export function json(v: unknown): Value {
  return new Value('json', stringifyStrict(v, 'json()'), TRUSTED);
}

/** A set of strings (duplicates removed). */
export function set(items: Iterable<string>): Value {
  if (items === null || typeof (items as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] !== 'function' || typeof items === 'string') {
    throw new InvalidArgumentError('set() needs an iterable of strings (an array or a Set)');
  }
  const unique = new Set<string>();
  for (const s of items) {
    if (typeof s !== 'string') throw new InvalidArgumentError(`set() members must be strings, got ${typeof s}`);
    if (!s.isWellFormed()) throw new InvalidArgumentError('set() member has lone surrogates, which UTF-8 cannot store');
    unique.add(s);
  }
  // Canonical order is by UTF-8 bytes, the same order the engine uses.
  const sorted = [...unique].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return new Value('set', sorted, TRUSTED);
}

/** An array of values. */
export function array(items: Iterable<Value>): Value {
  if (items === null || typeof (items as { [Symbol.iterator]?: unknown } | undefined)?.[Symbol.iterator] !== 'function') {
    throw new InvalidArgumentError('array() needs an iterable of Values (use i64(), str(), ...)');
  }
  const list = [...items];
  for (const x of list) if (!Value.isValue(x)) throw new InvalidArgumentError('array() elements must be Values (use i64(), str(), ...)');
  return new Value('array', list, TRUSTED);
}

/** What `new Value(type, v)` calls for each type. */
const FACTORIES: Record<ValueType, (v: never) => Value> = { i64, u256, f64, bool, string: str, bytes, json, set, array };

function describeType(t: unknown): string {
  return typeof t === 'string' ? JSON.stringify(t) : t === null ? 'null' : typeof t;
}


function encodeFresh(type: ValueType, v: unknown): Buffer {
  const body = encodeBody(type, v);
  const out = Buffer.allocUnsafe(body.length + 1);
  out[0] = FORMAT;
  body.copy(out, 1);
  return out;
}

function encodeBody(type: ValueType, v: unknown): Buffer {
  const tag = TAG[type];
  switch (type) {
    case 'i64': {
      const b = Buffer.allocUnsafe(9);
      b[0] = tag;
      b.writeBigInt64BE(v as bigint, 1);
      return b;
    }
    case 'u256': {
      const b = Buffer.alloc(33);
      b[0] = tag;
      let x = v as bigint;
      for (let i = 32; i >= 1; i--) {
        b[i] = Number(x & 0xffn);
        x >>= 8n;
      }
      return b;
    }
    case 'f64': {
      const b = Buffer.allocUnsafe(9);
      b[0] = tag;
      b.writeDoubleBE(v as number, 1);
      return b;
    }
    case 'bool':
      return Buffer.from([tag, v ? 1 : 0]);
    case 'string':
    case 'json': {
      const s = v as string;
      const b = Buffer.allocUnsafe(1 + Buffer.byteLength(s));
      b[0] = tag;
      b.write(s, 1, 'utf8');
      return b;
    }
    case 'bytes': {
      const src = v as Uint8Array;
      const b = Buffer.allocUnsafe(1 + src.length);
      b[0] = tag;
      b.set(src, 1);
      return b;
    }
    case 'set': {
      const parts = (v as string[]).map((s) => Buffer.from(s, 'utf8'));
      const b = Buffer.allocUnsafe(5 + parts.reduce((n, p) => n + 4 + p.length, 0));
      b[0] = tag;
      b.writeUInt32LE(parts.length, 1);
      let o = 5;
      for (const p of parts) {
        b.writeUInt32LE(p.length, o);
        p.copy(b, o + 4);
        o += 4 + p.length;
      }
      return b;
    }
    case 'array': {
      const parts = (v as Value[]).map((x) => encodeBody(x.type, Value.raw(x)));
      const b = Buffer.allocUnsafe(5 + parts.reduce((n, p) => n + 4 + p.length, 0));
      b[0] = tag;
      b.writeUInt32LE(parts.length, 1);
      let o = 5;
      for (const p of parts) {
        b.writeUInt32LE(p.length, o);
        p.copy(b, o + 4);
        o += 4 + p.length;
      }
      return b;
    }
  }
}

/** Encodes a value (`[format][tag][payload]`). The result is cached on the value: do not mutate it. */
export function encodeValue(v: Value): Buffer {
  return Value.encoded(v);
}

/** Writes `[len u32 LE][encoded value]` into a batch (no intermediate buffer for i64). @internal */
export function writeValue(w: ByteWriter, v: Value): void {
  if (v.type === 'i64') {
    w.u32(10);
    w.u8(FORMAT);
    w.u8(TAG.i64);
    w.i64be(Value.raw(v) as bigint);
    return;
  }
  const enc = Value.encoded(v);
  w.u32(enc.length);
  w.bytes(enc);
}

/** Decodes `len` bytes of `buf` at `off` (format byte included). */
export function decodeValue(buf: Buffer, off: number, len: number): Value {
  const bytes: unknown = buf;
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError('decodeValue() needs a Buffer or Uint8Array');
  if (typeof off !== 'number' || typeof len !== 'number' || !Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > bytes.length) {
    throw new InvalidArgumentError(`decodeValue() needs a byte range inside the buffer (offset and length as integers; the buffer has ${bytes.length} bytes)`);
  }
  if (!Buffer.isBuffer(bytes)) buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Same checks, in the same order, with the same codes as `Value::decode` in native/core/src/codec.rs.
  if (len >= 1 && buf[off] !== FORMAT) throw new VersionError(`value format ${buf[off]} is not supported by this build (expects ${FORMAT}); upgrade athanor`);
  if (len < 2) throw new ValueTypeError('value bytes are too short');
  return decodeBody(buf, off + 1, len - 1, 0);
}

/** Deepest nesting of arrays a value may have (`MAX_VALUE_DEPTH` in codec.rs). */
const MAX_VALUE_DEPTH = 128;

function text(buf: Buffer, start: number, end: number, type: string): string {
  if (!isUtf8(buf.subarray(start, end))) throw new ValueTypeError(`${type} value is not valid UTF-8`);
  return buf.toString('utf8', start, end);
}

function decodeBody(buf: Buffer, off: number, len: number, depth: number): Value {
  const type = TYPE_OF_TAG[buf[off]!];
  const p = off + 1;
  const n = len - 1;
  const need = (k: number): void => {
    if (n !== k) throw new ValueTypeError(`${type} value must carry ${k} bytes, found ${n}`);
  };
  switch (type) {
    case 'i64':
      need(8);
      return new Value('i64', buf.readBigInt64BE(p), TRUSTED);
    case 'u256': {
      need(32);
      let x = 0n;
      for (let i = 0; i < 32; i += 8) x = (x << 64n) | buf.readBigUInt64BE(p + i);
      return new Value('u256', x, TRUSTED);
    }
    case 'f64':
      need(8);
      return new Value('f64', buf.readDoubleBE(p), TRUSTED);
    case 'bool':
      need(1);
      if (buf[p]! > 1) throw new ValueTypeError('bool value byte must be 0 or 1');
      return new Value('bool', buf[p] === 1, TRUSTED);
    case 'string':
      return new Value('string', text(buf, p, p + n, type), TRUSTED);
    case 'json':
      return new Value('json', text(buf, p, p + n, type), TRUSTED);
    case 'bytes':
      return new Value('bytes', new Uint8Array(buf.subarray(p, p + n)), TRUSTED);
    case 'set':
    case 'array': {
      const end = p + n;
      if (type === 'array' && depth >= MAX_VALUE_DEPTH) {
        throw new ValueTypeError(`array values nest at most ${MAX_VALUE_DEPTH} deep; store deeper structures as json or bytes`);
      }
      if (n < 4) throw new ValueTypeError(`${type} value is truncated`);
      const count = buf.readUInt32LE(p);
      let o = p + 4;
      const items: unknown[] = [];
      for (let i = 0; i < count; i++) {
        if (o + 4 > end) throw new ValueTypeError(`${type} value is truncated`);
        const l = buf.readUInt32LE(o);
        if (o + 4 + l > end) throw new ValueTypeError(`${type} value is truncated`);
        items.push(type === 'set' ? text(buf, o + 4, o + 4 + l, type) : decodeBody(buf, o + 4, l, depth + 1));
        o += 4 + l;
      }
      if (o !== end) throw new ValueTypeError(`${type} value has trailing bytes`);
      if (type === 'set' && new Set(items).size !== items.length) throw new ValueTypeError('set value holds duplicate members');
      return new Value(type, items, TRUSTED);
    }
    default:
      throw new ValueTypeError(`unknown value tag ${buf[off]}`);
  }
}
