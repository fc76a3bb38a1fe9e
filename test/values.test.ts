import { createRequire } from 'node:module';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  InvalidArgumentError,
  Value,
  ValueTypeError,
  VersionError,
  array,
  bool,
  bytes,
  decodeValue,
  encodeValue,
  f64,
  i64,
  json,
  set,
  str,
  u256,
  type Athanor,
  type ValueType,
} from '../dist/index.js';
import { Sandbox, expectThrows } from './helpers.js';

const require = createRequire(import.meta.url);
const binding = require('../native/node/binding.cjs') as { codecRoundTrip(bytes: Uint8Array): [string, Buffer] };

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U256_MAX = 2n ** 256n - 1n;

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

/** Float bits as a hex string: compares NaN and -0 exactly. */
function bits(x: number): string {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(x);
  return b.toString('hex');
}

/** Structural equality of two values: same type, same canonical encoding. */
function expectSameValue(actual: Value | undefined, expected: Value): void {
  expect(actual).toBeInstanceOf(Value);
  expect(actual!.type).toBe(expected.type);
  expect(encodeValue(actual!).toString('hex')).toBe(encodeValue(expected).toString('hex'));
  expect(actual!.equals(expected)).toBe(true);
}

/** Writes every value under its own key in one transaction and reads each back three ways. */
async function roundTrip(db: Athanor, values: Value[]): Promise<Value[][]> {
  await db.transaction().execute((tx) => {
    values.forEach((v, i) => tx.set(`v:${i}`, v));
  });
  const direct = values.map((_, i) => db.get(`v:${i}`));
  const inTx = (await db.transaction().execute((tx) => values.map((_, i) => tx.get(`v:${i}`)))).value;
  const snap = db.snapshot();
  try {
    const viaSnapshot = values.map((_, i) => snap.get(`v:${i}`));
    return [direct, inTx, viaSnapshot];
  } finally {
    snap.close();
  }
}

describe('every value type round-trips through the database', () => {
  it('i64 keeps its exact value, including the minimum and maximum', async () => {
    const db = await sandbox.open();
    const xs = [0n, 1n, -1n, 42n, I64_MIN, I64_MAX, I64_MIN + 1n, I64_MAX - 1n, 2n ** 53n + 1n, -(2n ** 53n) - 1n];
    const values = [...xs.map((x) => i64(x)), i64(7), i64(-9007199254740991)];
    for (const reads of await roundTrip(db, values)) {
      reads.forEach((v, i) => {
        expectSameValue(v, values[i]!);
        expect(v.asI64()).toBe(values[i]!.asI64());
        expect(typeof v.asI64()).toBe('bigint');
      });
    }
    expect(db.get('v:4').asI64()).toBe(I64_MIN);
    expect(db.get('v:5').asI64()).toBe(I64_MAX);
  });

  it('u256 keeps its exact value, including 0 and 2^256-1', async () => {
    const db = await sandbox.open();
    const xs = [0n, 1n, 255n, 256n, 2n ** 64n, 2n ** 128n - 1n, 2n ** 255n, U256_MAX - 1n, U256_MAX];
    const values = xs.map((x) => u256(x));
    for (const reads of await roundTrip(db, values)) {
      reads.forEach((v, i) => {
        expectSameValue(v, values[i]!);
        expect(v.asU256()).toBe(xs[i]);
      });
    }
    expect(db.get('v:0').asU256()).toBe(0n);
    expect(db.get(`v:${xs.length - 1}`).asU256()).toBe(U256_MAX);
  });

  it('f64 is bit-exact, including NaN, -0 and the infinities', async () => {
    const db = await sandbox.open();
    const xs = [0, -0, NaN, Infinity, -Infinity, 1.5, -2.25, Number.MIN_VALUE, -Number.MIN_VALUE, Number.MAX_VALUE, Number.EPSILON, Math.PI, 2 ** 53 + 2];
    const values = xs.map((x) => f64(x));
    for (const reads of await roundTrip(db, values)) {
      reads.forEach((v, i) => {
        expect(v.type).toBe('f64');
        expect(bits(v.asF64())).toBe(bits(xs[i]!));
        expect(Object.is(v.asF64(), xs[i])).toBe(true);
      });
    }
    expect(Object.is(db.get('v:1').asF64(), -0)).toBe(true);
    expect(Number.isNaN(db.get('v:2').asF64())).toBe(true);
  });

  it('bool round-trips both values', async () => {
    const db = await sandbox.open();
    const values = [bool(true), bool(false)];
    for (const reads of await roundTrip(db, values)) {
      expect(reads.map((v) => v.asBool())).toEqual([true, false]);
    }
  });

  it('strings keep emoji, CJK, combining marks, NUL and the empty string', async () => {
    const db = await sandbox.open();
    const xs = ['', 'hello', '😀👍🏽🇫🇷', '漢字かなカナ한국어', 'é (e\u0301) ñ', 'a\u0000b', '\uFF5A\u{1F600}\u{10FFFF}', 'x'.repeat(100_000), '🎉'.repeat(20_000)];
    const values = xs.map((s) => str(s));
    for (const reads of await roundTrip(db, values)) {
      expect(reads.map((v) => v.asString())).toEqual(xs);
    }
  });

  it('bytes round-trip as an independent copy', async () => {
    const db = await sandbox.open();
    const src = new Uint8Array([0, 1, 2, 254, 255]);
    const big = new Uint8Array(300_000).map((_, i) => (i * 31) & 0xff);
    const values = [bytes(new Uint8Array(0)), bytes(src), bytes(Buffer.from('buffer input')), bytes(big)];
    src[0] = 99; // the value copied its input
    for (const reads of await roundTrip(db, values)) {
      expect(Buffer.from(reads[0]!.asBytes()).length).toBe(0);
      expect([...reads[1]!.asBytes()]).toEqual([0, 1, 2, 254, 255]);
      expect(Buffer.from(reads[2]!.asBytes()).toString()).toBe('buffer input');
      expect(Buffer.compare(Buffer.from(reads[3]!.asBytes()), Buffer.from(big))).toBe(0);
    }
    const a = db.get('v:1').asBytes();
    a[0] = 7; // mutating what was read changes nothing stored
    expect(db.get('v:1').asBytes()[0]).toBe(0);
  });

  it('json keeps its text and parses to a fresh object each time', async () => {
    const db = await sandbox.open();
    const docs: unknown[] = [null, true, 0, -1.5, 'text', [], {}, { a: [1, { b: 'ü😀' }], n: null, deep: { x: { y: { z: [true, false] } } } }];
    const values = docs.map((d) => json(d));
    for (const reads of await roundTrip(db, values)) {
      reads.forEach((v, i) => {
        expect(v.type).toBe('json');
        expect(v.asJsonText()).toBe(JSON.stringify(docs[i]));
        expect(v.asJson()).toEqual(docs[i]);
      });
    }
    const v = db.get('v:7');
    const first = v.asJson<{ a: unknown[] }>();
    first.a.push('mutated');
    expect(v.asJson()).toEqual(docs[7]);
  });

  it('sets drop duplicates and come back sorted by UTF-8 bytes', async () => {
    const db = await sandbox.open();
    const s = set(['b', 'a', 'b', 'c', 'a', '', 'Z', '\uFF5A', '\u{1F600}', 'é']);
    const empty = set([]);
    const fromIterable = set(new Set(['y', 'x']).values());
    const expectedOrder = ['', 'Z', 'a', 'b', 'c', 'é', '\uFF5A', '\u{1F600}'];
    for (const reads of await roundTrip(db, [s, empty, fromIterable])) {
      expect([...reads[0]!.asSet()]).toEqual(expectedOrder);
      expect(reads[0]!.asSet().size).toBe(8);
      expect(reads[1]!.asSet().size).toBe(0);
      expect([...reads[2]!.asSet()]).toEqual(['x', 'y']);
    }
    // Order does not depend on insertion order.
    expect(set(['c', 'b', 'a']).equals(set(['a', 'c', 'b', 'a']))).toBe(true);
  });

  it('nested arrays keep every element type and the nesting', async () => {
    const db = await sandbox.open();
    const nested = array([
      i64(-5),
      u256(U256_MAX),
      f64(-0),
      bool(true),
      str('漢😀'),
      bytes(new Uint8Array([9, 8])),
      json({ k: [1, 2] }),
      set(['q', 'p', 'q']),
      array([]),
      array([array([i64(1), str('deep')]), f64(NaN)]),
    ]);
    for (const reads of await roundTrip(db, [nested, array([])])) {
      const v = reads[0]!;
      expectSameValue(v, nested);
      const items = v.asArray();
      expect(items.map((x) => x.type)).toEqual(['i64', 'u256', 'f64', 'bool', 'string', 'bytes', 'json', 'set', 'array', 'array']);
      expect(items[0]!.asI64()).toBe(-5n);
      expect(items[1]!.asU256()).toBe(U256_MAX);
      expect(Object.is(items[2]!.asF64(), -0)).toBe(true);
      expect(items[4]!.asString()).toBe('漢😀');
      expect([...items[5]!.asBytes()]).toEqual([9, 8]);
      expect(items[6]!.asJson()).toEqual({ k: [1, 2] });
      expect([...items[7]!.asSet()]).toEqual(['p', 'q']);
      expect(items[8]!.asArray()).toHaveLength(0);
      const inner = items[9]!.asArray();
      expect(inner[0]!.asArray()[1]!.asString()).toBe('deep');
      expect(Number.isNaN(inner[1]!.asF64())).toBe(true);
      expect(reads[1]!.asArray()).toHaveLength(0);
    }
  });

  it('values of every size around the 64 KiB read buffer round-trip, in and out of transactions', async () => {
    const db = await sandbox.open();
    // Encoded size = payload + 2; inside a transaction the engine adds an 8-byte version.
    const sizes = [65_518, 65_525, 65_526, 65_527, 65_528, 65_533, 65_534, 65_535, 65_536, 65_540, 1 << 20];
    const values = sizes.map((n) => bytes(new Uint8Array(n).map((_, i) => (i + n) & 0xff)));
    for (const reads of await roundTrip(db, values)) {
      reads.forEach((v, i) => expectSameValue(v, values[i]!));
    }
    // A small read after a big one still uses (and fills) the scratch correctly.
    await db.transaction().execute((tx) => tx.set('small', str('tiny')));
    expect(db.get('small').asString()).toBe('tiny');
    expect(db.get('v:10').asBytes().length).toBe(1 << 20);
    expect(db.get('small').asString()).toBe('tiny');
  });

  it('a value survives close and reopen', async () => {
    const dir = sandbox.dir();
    const db = await sandbox.open(dir);
    const values = [i64(I64_MIN), u256(U256_MAX), f64(NaN), str('😀'), set(['b', 'a']), array([json([1]), bytes(new Uint8Array([1]))])];
    await db.transaction().execute((tx) => values.forEach((v, i) => tx.set(`p:${i}`, v)));
    await db.close();
    const again = await sandbox.open(dir);
    values.forEach((v, i) => expectSameValue(again.get(`p:${i}`), v));
  });
});

// ---------------------------------------------------------------------------
// Property tests: the TypeScript codec and the Rust codec agree byte for byte.

const stringArb = fc.string({ unit: 'binary', maxLength: 24 });
const leafArb: fc.Arbitrary<Value> = fc.oneof(
  fc.bigInt(I64_MIN, I64_MAX).map((x) => i64(x)),
  fc.bigInt(0n, U256_MAX).map((x) => u256(x)),
  fc.double().map((x) => f64(x)),
  fc.boolean().map((x) => bool(x)),
  stringArb.map((s) => str(s)),
  fc.uint8Array({ maxLength: 48 }).map((b) => bytes(b)),
  fc.jsonValue({ maxDepth: 3 }).map((j) => json(j)),
  fc.array(stringArb, { maxLength: 8 }).map((xs) => set(xs)),
);
const { value: valueArb } = fc.letrec<{ value: Value }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leafArb, fc.array(tie('value'), { maxLength: 5 }).map((xs) => array(xs))),
}));

/** What a value means, independent of its encoding (floats by bits). */
function describeValue(v: Value): unknown {
  switch (v.type) {
    case 'f64':
      return `f64:${bits(v.asF64())}`;
    case 'i64':
      return `i64:${v.asI64()}`;
    case 'u256':
      return `u256:${v.asU256()}`;
    case 'bytes':
      return `bytes:${Buffer.from(v.asBytes()).toString('hex')}`;
    case 'json':
      return `json:${v.asJsonText()}`;
    case 'set':
      return ['set', ...v.asSet()];
    case 'array':
      return ['array', ...v.asArray().map(describeValue)];
    case 'bool':
      return `bool:${v.asBool()}`;
    case 'string':
      return `string:${v.asString()}`;
  }
}

describe('the TypeScript and Rust codecs agree', () => {
  it('any value survives encodeValue/decodeValue unchanged', () => {
    fc.assert(
      fc.property(valueArb, (v) => {
        const enc = encodeValue(v);
        const back = decodeValue(enc, 0, enc.length);
        expect(back.type).toBe(v.type);
        expect(describeValue(back)).toEqual(describeValue(v));
        expect(encodeValue(back).equals(enc)).toBe(true);
        // Decoding from an offset inside a larger buffer works too.
        const padded = Buffer.concat([Buffer.from([0xee, 0xee, 0xee]), enc, Buffer.from([0xdd])]);
        expect(decodeValue(padded, 3, enc.length).equals(v)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('Rust decodes what TypeScript encodes, names the same type, and re-encodes identically', () => {
    fc.assert(
      fc.property(valueArb, (v) => {
        const enc = encodeValue(v);
        const [typeName, canonical] = binding.codecRoundTrip(enc);
        expect(typeName).toBe(v.type satisfies ValueType);
        // TypeScript's encoding is already canonical (sets sorted by UTF-8 bytes).
        expect(Buffer.from(canonical).toString('hex')).toBe(enc.toString('hex'));
        const back = decodeValue(Buffer.from(canonical), 0, canonical.length);
        expect(back.type).toBe(v.type);
        expect(describeValue(back)).toEqual(describeValue(v));
      }),
      { numRuns: 1000 },
    );
  });

  it('arbitrary values round-trip through the database', async () => {
    const db = await sandbox.open(undefined, { durability: 'none' });
    await fc.assert(
      fc.asyncProperty(fc.array(valueArb, { minLength: 1, maxLength: 8 }), async (values) => {
        const [direct, inTx, viaSnapshot] = await roundTrip(db, values);
        for (const reads of [direct!, inTx!, viaSnapshot!]) {
          reads.forEach((v, i) => {
            expect(v.type).toBe(values[i]!.type);
            expect(describeValue(v)).toEqual(describeValue(values[i]!));
          });
        }
      }),
      { numRuns: 60 },
    );
  });

  it('Rust rejects malformed value bytes with ERR_TYPE', () => {
    const bad = [
      Buffer.from([1, 1, 0, 0, 0]), // i64 with 3 bytes
      Buffer.from([1, 4, 2]), // bool byte 2
      Buffer.from([1, 77]), // unknown tag
      Buffer.from([1, 5, 0xff, 0xfe]), // string that is not UTF-8
      Buffer.from([1, 8, 2, 0, 0, 0, 1, 0, 0, 0, 0x61, 1, 0, 0, 0, 0x61]), // set with a duplicate member
    ];
    for (const b of bad) {
      expect(() => binding.codecRoundTrip(b)).toThrow(/ERR_TYPE/);
    }
  });

  it('TypeScript rejects malformed value bytes with ValueTypeError', () => {
    const bad = [
      Buffer.from([1]),
      Buffer.from([1, 1, 0, 0, 0]),
      Buffer.from([1, 4, 2]),
      Buffer.from([1, 77]),
      Buffer.from([1, 9, 1, 0, 0, 0, 9, 0, 0, 0, 1]), // array element runs past the end
      Buffer.from([1, 8, 0, 0, 0, 0, 0]), // set with trailing bytes
    ];
    for (const b of bad) expectThrows(() => decodeValue(b, 0, b.length), ValueTypeError, 'ERR_TYPE');
    // An unknown format byte was written by a newer build, as Rust says too.
    const newer = Buffer.from([2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    expectThrows(() => decodeValue(newer, 0, newer.length), VersionError, 'ERR_VERSION');
  });
});

describe('reading a value as the wrong type', () => {
  const samples: Record<ValueType, Value> = {
    i64: i64(1),
    u256: u256(1),
    f64: f64(1),
    bool: bool(true),
    string: str('1'),
    bytes: bytes(new Uint8Array([1])),
    json: json(1),
    set: set(['1']),
    array: array([i64(1)]),
  };
  const accessors: Record<ValueType, (v: Value) => unknown> = {
    i64: (v) => v.asI64(),
    u256: (v) => v.asU256(),
    f64: (v) => v.asF64(),
    bool: (v) => v.asBool(),
    string: (v) => v.asString(),
    bytes: (v) => v.asBytes(),
    json: (v) => v.asJson(),
    set: (v) => v.asSet(),
    array: (v) => v.asArray(),
  };

  it('throws ValueTypeError (ERR_TYPE) for every mismatched accessor, and the right one works', () => {
    for (const [type, v] of Object.entries(samples) as [ValueType, Value][]) {
      expect(v.type).toBe(type);
      for (const [accType, acc] of Object.entries(accessors) as [ValueType, (v: Value) => unknown][]) {
        if (accType === type) expect(() => acc(v)).not.toThrow();
        else expectThrows(() => acc(v), ValueTypeError, 'ERR_TYPE');
      }
    }
    expectThrows(() => i64(1).asJsonText(), ValueTypeError, 'ERR_TYPE');
  });

  it('throws ERR_TYPE on a value read back from the database', async () => {
    const db = await sandbox.open();
    await db.transaction().execute((tx) => tx.set('n', i64(5)));
    const err = expectThrows(() => db.get('n').asString(), ValueTypeError, 'ERR_TYPE');
    expect(err.message).toMatch(/i64/);
    await expect(db.transaction().execute((tx) => tx.get('n').asU256())).rejects.toMatchObject({ code: 'ERR_TYPE' });
    expect(db.commitSeq).toBe(1n);
  });
});

describe('invalid constructor input', () => {
  it('throws InvalidArgumentError (ERR_INVALID_ARGUMENT) and builds nothing', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const cases: [string, () => unknown][] = [
      ['i64(NaN)', () => i64(NaN)],
      ['i64(1.5)', () => i64(1.5)],
      ['i64(Infinity)', () => i64(Infinity)],
      ['i64(2^53)', () => i64(2 ** 53)],
      ['i64(2n**63n)', () => i64(2n ** 63n)],
      ['i64(-(2n**63n)-1n)', () => i64(-(2n ** 63n) - 1n)],
      ['i64("5")', () => i64('5' as unknown as number)],
      ['u256(-1n)', () => u256(-1n)],
      ['u256(-1)', () => u256(-1)],
      ['u256(2n**256n)', () => u256(2n ** 256n)],
      ['u256(0.5)', () => u256(0.5)],
      ['f64("1")', () => f64('1' as unknown as number)],
      ['f64(1n)', () => f64(1n as unknown as number)],
      ['bool(1)', () => bool(1 as unknown as boolean)],
      ['json({ x: [NaN] })', () => json({ x: [1, NaN] })],
      ['json(Infinity)', () => json(Infinity)],
      ['json(undefined)', () => json(undefined)],
      ['json(() => 1)', () => json(() => 1)],
      ['json(cyclic)', () => json(cyclic)],
      ['str(lone surrogate)', () => str('ok\uD800')],
      ['str(lone low surrogate)', () => str('\uDC00')],
      ['str(42)', () => str(42 as unknown as string)],
      ['bytes([1,2])', () => bytes([1, 2] as unknown as Uint8Array)],
      ['set([1])', () => set([1] as unknown as string[])],
      ['set(lone surrogate)', () => set(['\uD800'])],
      ['array([1])', () => array([1] as unknown as Value[])],
      ['array(Object.create(Value.prototype))', () => array([Object.create(Value.prototype) as Value])],
      ['array(5)', () => array(5 as unknown as Value[])],
      ['new Value()', () => new (Value as unknown as new () => Value)()],
      ["new Value('bogus', 1)", () => new Value('bogus' as ValueType, 1)],
      ["new Value('toString', 1)", () => new Value('toString' as ValueType, 1)],
      ["new Value('i64', 2n ** 70n)", () => new Value('i64', 2n ** 70n)],
      ["new Value('i64', 1.5)", () => new Value('i64', 1.5)],
      ["new Value('string', 5)", () => new Value('string', 5)],
      ["new Value('json', NaN)", () => new Value('json', NaN)],
      ["new Value('array', [new Value('i64', 1n), {}])", () => new Value('array', [new Value('i64', 1n), {}])],
    ];
    for (const [name, fn] of cases) {
      let caught: unknown;
      try {
        fn();
      } catch (e) {
        caught = e;
      }
      expect(caught, name).toBeInstanceOf(InvalidArgumentError);
      expect((caught as InvalidArgumentError).code, name).toBe('ERR_INVALID_ARGUMENT');
    }
  });

  it('new Value(type, v) is the constructor function of that type, with the same checks', () => {
    expect(new Value('i64', 5).equals(i64(5n))).toBe(true);
    expect(new Value('u256', 2n ** 200n).asU256()).toBe(2n ** 200n);
    expect(new Value('string', 'a').asString()).toBe('a');
    expect(new Value('json', { a: [1] }).asJsonText()).toBe('{"a":[1]}');
    expect([...new Value('set', ['b', 'a', 'b']).asSet()]).toEqual(['a', 'b']);
    expect(new Value('array', [i64(1), str('x')]).equals(array([i64(1), str('x')]))).toBe(true);
    expect(Value.isValue(i64(1))).toBe(true);
    expect(Value.isValue(Object.create(Value.prototype))).toBe(false);
    expect(i64(1).equals(Object.create(Value.prototype) as Value)).toBe(false);
  });

  it('json() keeps bigint digits: beyond ±(2^53-1) they read back as bigint, within it as numbers', () => {
    const v = json({ big: 2n ** 64n + 1n, neg: -(2n ** 63n), small: 10n, n: 2 ** 60, f: 0.1, s: '123456789012345678901' });
    expect(v.asJsonText()).toBe('{"big":18446744073709551617,"neg":-9223372036854775808,"small":10,"n":1.152921504606847e+18,"f":0.1,"s":"123456789012345678901"}');
    expect(v.asJson()).toEqual({ big: 2n ** 64n + 1n, neg: -(2n ** 63n), small: 10, n: 2 ** 60, f: 0.1, s: '123456789012345678901' });
    expect(json(10n).asJson()).toBe(10);
  });

  it('accepts the edges of each range and safe-integer numbers', () => {
    expect(i64(Number.MAX_SAFE_INTEGER).asI64()).toBe(BigInt(Number.MAX_SAFE_INTEGER));
    expect(i64(-0).asI64()).toBe(0n);
    expect(u256(0).asU256()).toBe(0n);
    expect(json(null).asJson()).toBeNull();
    expect(json({ a: undefined, b: 1 }).asJsonText()).toBe('{"b":1}');
    expect(str('\uD83D\uDE00').asString()).toBe('😀');
  });
});
