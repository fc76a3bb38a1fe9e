/**
 * The JSON text athanor stores (event payloads, JSON values, vector metadata): JSON
 * whose integers keep every digit, written by {@link stringifyStrict} and read by
 * {@link parseJson}.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';

/**
 * JSON.stringify that refuses silent loss: cycles and a top-level
 * undefined/function throw `ERR_INVALID_ARGUMENT`, and so do NaN/Infinity (which
 * JSON.stringify would quietly turn into null).
 *
 * Integers keep every digit (the rule {@link parseJson} reverses): a `bigint` is
 * written as a JSON integer literal with all its digits; a `number` that is an
 * integer outside the safe range (beyond ±(2^53-1), already rounded) is written in
 * exponent form (`1.152921504606847e+18`), so that it reads back as the same number
 * rather than as a bigint.
 */
export function stringifyStrict(v: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(v);
  } catch (e) {
    // Most likely a bigint (JSON.stringify refuses them): the careful pass handles them.
    if (e instanceof TypeError) return stringifyCarefully(v, what);
    throw new InvalidArgumentError(`${what} is not JSON-serialisable: ${messageOf(e)}`, { cause: e });
  }
  if (text === undefined) throw new InvalidArgumentError(`${what} is not JSON-serialisable (got ${typeof v})`);
  // `null` may come from NaN/Infinity, and a long digit run from an unsafe integer
  // number: only then pay for the careful pass.
  if (text.includes('null') || LONG_DIGITS.test(text)) return stringifyCarefully(v, what);
  return text;
}

/** 2^53-1 has 16 digits: an integer literal with fewer is always a safe integer. */
const LONG_DIGITS = /\d{16}/;

/** The slow path of {@link stringifyStrict}: bigints and unsafe integers via markers. */
function stringifyCarefully(v: unknown, what: string): string {
  for (;;) {
    const marker = `@athanor-int-${Math.random().toString(36).slice(2)}:`;
    let replaced = 0;
    let text: string | undefined;
    try {
      text = JSON.stringify(v, (_k, x: unknown) => {
        if (typeof x === 'bigint') {
          replaced++;
          return marker + x.toString();
        }
        if (typeof x === 'number') {
          if (!Number.isFinite(x)) throw new InvalidArgumentError(`${what} contains ${x}, which JSON cannot represent; store it as a string or use f64()`);
          if (Number.isInteger(x) && !Number.isSafeInteger(x)) {
            replaced++;
            return marker + x.toExponential();
          }
        }
        return x;
      });
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw e;
      throw new InvalidArgumentError(`${what} is not JSON-serialisable: ${messageOf(e)}`, { cause: e });
    }
    if (text === undefined) throw new InvalidArgumentError(`${what} is not JSON-serialisable (got ${typeof v})`);
    if (replaced === 0) return text;
    let seen = 0;
    const out = text.replace(new RegExp(`"${marker}([-+.e0-9]+)"`, 'g'), (_m, digits: string) => {
      seen++;
      return digits;
    });
    // Each marker we wrote appears once; more means the data itself contains the
    // marker text (astronomically unlikely): pick another marker.
    if (seen === replaced) return out;
  }
}

/**
 * JSON.parse for what {@link stringifyStrict} writes: an integer literal that is not
 * a safe integer (beyond ±(2^53-1)) becomes a `bigint` with every digit; every other
 * number (safe integers, fractions, exponent forms) becomes a `number`.
 */
export function parseJson(text: string): unknown {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text);
  let marker = '@athanor-int:';
  while (text.includes(marker)) marker = `@athanor-int-${Math.random().toString(36).slice(2)}:`;
  let wrapped = 0;
  const quoted = text.replace(JSON_TOKEN, (tok: string) => {
    if (tok.charCodeAt(0) === 0x22 || !INTEGER_LITERAL.test(tok) || Number.isSafeInteger(Number(tok))) return tok;
    wrapped++;
    return `"${marker}${tok}"`;
  });
  if (wrapped === 0) return JSON.parse(text);
  return JSON.parse(quoted, (_k, x: unknown) => (typeof x === 'string' && x.startsWith(marker) ? BigInt(x.slice(marker.length)) : x));
}

/** A JSON string or number token (strings are matched whole, so digits inside them are skipped). */
const JSON_TOKEN = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const INTEGER_LITERAL = /^-?(?:0|[1-9]\d*)$/;

function messageOf(e: unknown): string {
  try {
    return e instanceof Error ? e.message : String(e);
  } catch {
    return 'an unprintable error';
  }
}
