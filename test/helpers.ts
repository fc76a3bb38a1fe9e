/** Shared helpers for the vitest suites: temp dirs and error assertions. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { Athanor, AthanorError, encodeValue } from '../dist/index.js';

/** A fresh, empty directory under the OS temp dir. */
export function tempDir(prefix = 'athanor-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Removes a directory tree (ignores absence). */
export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Tracks temp dirs and open handles for one suite; `cleanup()` closes every
 * handle and removes every dir (call it from afterEach).
 */
export class Sandbox {
  readonly dirs: string[] = [];
  readonly dbs: Athanor[] = [];

  dir(): string {
    const d = tempDir();
    this.dirs.push(d);
    return d;
  }

  async open(dir?: string, options?: Parameters<typeof Athanor.open>[1]): Promise<Athanor> {
    const db = await Athanor.open(dir ?? this.dir(), options);
    this.dbs.push(db);
    return db;
  }

  async cleanup(): Promise<void> {
    for (const db of this.dbs.splice(0)) await db.close();
    for (const d of this.dirs.splice(0)) removeDir(d);
  }
}

type ErrorClass = abstract new (...args: never[]) => AthanorError;

/** Asserts `fn` throws an instance of `cls` with `code`; returns the error. */
export function expectThrows(fn: () => unknown, cls: ErrorClass, code: string): AthanorError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected the call to throw').toBeDefined();
  expect(caught).toBeInstanceOf(cls);
  expect((caught as AthanorError).code).toBe(code);
  expect((caught as AthanorError).message.length).toBeGreaterThan(0);
  return caught as AthanorError;
}

/** Asserts `p` rejects with an instance of `cls` with `code`; returns the error. */
export async function expectRejects(p: Promise<unknown> | (() => Promise<unknown>), cls: ErrorClass, code: string): Promise<AthanorError> {
  let caught: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected the promise to reject').toBeDefined();
  expect(caught).toBeInstanceOf(cls);
  expect((caught as AthanorError).code).toBe(code);
  return caught as AthanorError;
}

/** Everything observable about a database, to compare before/after a failed call. */
export function fingerprint(db: Athanor, keys: string[]): { commitSeq: bigint; lastId: bigint; values: (string | undefined)[]; events: string } {
  return {
    commitSeq: db.commitSeq,
    lastId: db.events.lastId,
    values: keys.map((k) => {
      const v = db.getOpt(k);
      return v === undefined ? undefined : `${v.type}:${encodeValue(v).toString('hex')}`;
    }),
    events: JSON.stringify([...db.events.read()].map((e) => [String(e.id), e.type, e.payload instanceof Uint8Array ? Buffer.from(e.payload).toString('hex') : e.payload])),
  };
}

/** How a child run by {@link killAfterReady} ended. */
export interface KilledChild {
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
  /** Whether the child printed `ready` before it ended. */
  ready: boolean;
}

/**
 * Runs `node <script> ...args` and SIGKILLs it `delayMs` after it prints `ready`
 * (or after `watchdogMs` if it never does), for the kill -9 crash tests.
 */
export function killAfterReady(script: string, args: readonly string[], delayMs: number, watchdogMs = 30_000): Promise<KilledChild> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let ready = false;
    let timer: NodeJS.Timeout | undefined;
    const watchdog = setTimeout(() => child.kill('SIGKILL'), watchdogMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      if (!ready && s.includes('ready')) {
        ready = true;
        timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(watchdog);
      resolve({ signal, code, stderr, ready });
    });
  });
}

/** What {@link loopDuring} saw of the event loop while its work ran. */
export interface LoopTurns<T> {
  value: T;
  /** `setImmediate` callbacks that ran after the work started and before it settled. */
  ticks: number;
  /** The longest stretch (ms) of the work without a tick, counting from its start and to its end. */
  longestGap: number;
  /** How long the work took (ms). */
  duration: number;
}

/**
 * Runs `work` while a `setImmediate` ticker runs on the event loop: work done on
 * the JS thread holds the ticker back for as long as it takes, work done elsewhere
 * lets it turn. Compare the result with the work's own duration, not with a clock.
 */
/**
 * Asserts that the event loop turned while the work ran: work done on the JS thread
 * (a synchronous implementation) lets no tick in, so `ticks` is 0 and one gap spans the
 * whole work. The bounds are loose on purpose: on a loaded machine the scheduler alone can
 * hold a process off the CPU for much of a short operation.
 */
export function expectLoopTurned(turns: LoopTurns<unknown>): void {
  expect(turns.ticks, 'the event loop never turned while the work ran').toBeGreaterThan(0);
  expect(turns.longestGap, 'one stretch without a tick spans nearly the whole work').toBeLessThan(turns.duration * 0.95);
}

export async function loopDuring<T>(work: () => Promise<T>): Promise<LoopTurns<T>> {
  const stamps: number[] = [];
  let running = true;
  const tick = (): void => {
    stamps.push(performance.now());
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  const start = performance.now();
  let value: T;
  try {
    value = await work();
  } finally {
    running = false;
  }
  const end = performance.now();
  const inside = stamps.filter((t) => t > start && t < end);
  const edges = [start, ...inside, end];
  let longestGap = 0;
  for (let i = 1; i < edges.length; i++) longestGap = Math.max(longestGap, edges[i]! - edges[i - 1]!);
  return { value, ticks: inside.length, longestGap, duration: end - start };
}
