// Shared helpers for bench groups. Files starting with "_" are not groups.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const QUICK = process.env.BENCH_QUICK === '1';

/** Progress and diagnostics: stderr only (stdout carries one JSON line per metric). */
export function log(...args) {
  process.stderr.write(args.join(' ') + '\n');
}

/**
 * Prints one metric line to stdout:
 * `{"bench","unit","better","ours","peer","peerValue","ratio", ...extra}`.
 * `better` says which direction wins (`'higher'` for rates, `'lower'` for latencies
 * and sizes); `ratio` is always `ours / peerValue`, so with `better: 'lower'` a ratio
 * below 1 means athanor wins. A metric without a peer passes `peer = null`.
 */
export function emit(bench, unit, better, ours, peer, peerValue, extra = {}) {
  if (better !== 'higher' && better !== 'lower') throw new Error(`emit(${bench}): better must be 'higher' or 'lower'`);
  const line = {
    bench,
    unit,
    better,
    ours: round(ours),
    peer,
    peerValue: peer === null ? null : round(peerValue),
    ratio: peer === null ? null : Number((ours / peerValue).toFixed(3)),
    ...extra,
  };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function round(x) {
  return x >= 100 ? Math.round(x) : Number(x.toPrecision(4));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A fresh directory under os.tmpdir(). */
export function freshDir(tag) {
  return mkdtempSync(join(tmpdir(), `athanor-bench-${tag}-`));
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

export function gc() {
  if (typeof globalThis.gc === 'function') globalThis.gc();
}

/** Seconds elapsed while awaiting `fn` (after a GC so garbage from the previous side does not bill this one). */
export async function timed(fn) {
  gc();
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Deterministic PRNG (mulberry32), so every side reads the same key sequence. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `rounds` rounds of every side, in an order rotated every other round and
 * reversed on odd rounds, so that no side always runs first (warm caches), last
 * (dirty page writeback) or right after the same other side. Each side's `run()`
 * returns a rate (higher is better). Returns { name: [rates...] }.
 */
export async function interleave(metric, rounds, sides) {
  const names = Object.keys(sides);
  const out = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    // Rotated every other round and reversed on odd rounds (two sides: A B, B A, B A, A B),
    // so no side always runs right after the same other one and pays for what it left behind.
    const base = names.map((_, j) => names[(Math.floor(r / 2) + j) % names.length]);
    const order = r % 2 === 1 ? base.reverse() : base;
    for (const name of order) {
      const rate = await sides[name]();
      out[name].push(rate);
    }
    log(`  ${metric} round ${r + 1}/${rounds}: ` + names.map((n) => `${n}=${fmt(out[n][r])}`).join(' '));
  }
  return out;
}

export function fmt(x) {
  return x >= 1000 || Number.isInteger(x) ? Math.round(x).toLocaleString('en-US') : x.toFixed(1);
}
