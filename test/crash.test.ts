/**
 * Crash safety: a child process commits continuously and is killed with
 * SIGKILL at a random moment; the parent reopens the same directory and checks
 * that every acknowledged commit survived, no commit is partial, and the store
 * verifies. Trials run back to back in the same directory, so recovery after
 * repeated kills is exercised too.
 *
 * ATHANOR_SOAK_TRIALS sets the number of trials (default 6, one per mode; `npm run soak` uses 300).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Athanor, bytes, i64, type StoredEvent } from '../dist/index.js';
import { removeDir, tempDir } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'crash-child.mjs');
const TRIALS = Math.max(1, Number(process.env.ATHANOR_SOAK_TRIALS ?? 6) || 6);
const MODES = ['sequential', 'concurrent', 'sync', 'grow', 'batched', 'nosync'] as const;
type Mode = (typeof MODES)[number] | 'snapshot' | 'open';

interface Ack {
  n: number;
  commitSeq: bigint;
  firstEventId: bigint;
}

interface ChildRun {
  acks: Ack[];
  lines: string[];
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

function randomInt(lo: number, hi: number): number {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/**
 * Spawns the child and kills it with SIGKILL `delayMs` after `trigger` (a line
 * predicate: the first ack by default), or `delayMs` after spawn when trigger is null.
 * Resolves once the child is gone and its output fully read.
 */
function runChild(dir: string, mode: Mode, firstN: number, delayMs: number, trigger: ((line: string) => boolean) | null): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, mode, String(firstN)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run: ChildRun = { acks: [], lines: [], signal: null, code: null, stderr: '' };
    let pending = '';
    let killTimer: NodeJS.Timeout | undefined;
    const scheduleKill = () => {
      if (killTimer === undefined) killTimer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    };
    // Safety net only: a child that never acknowledges anything is killed too.
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 30_000);
    if (trigger === null) scheduleKill();
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        run.lines.push(line);
        const m = /^ack (\d+) (\d+) (\d+)$/.exec(line);
        if (m) run.acks.push({ n: Number(m[1]), commitSeq: BigInt(m[2]!), firstEventId: BigInt(m[3]!) });
        if (trigger !== null && trigger(line)) scheduleKill();
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (run.stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killTimer);
      clearTimeout(watchdog);
      run.code = code;
      run.signal = signal;
      resolve(run);
    });
  });
}

/** What the parent has verified so far about the directory (the log only grows). */
class Ledger {
  /** n of the tick event at each id (index = id). */
  readonly nById: number[] = [0];
  readonly allNs = new Set<number>();
  readonly perAccount = new Array<number>(10).fill(0);
  /** n of the newest commit that wrote pad:<k> (only 'grow' runs write pads). */
  readonly padWriter = new Map<number, number>();
  maxN = 0;

  get lastId(): bigint {
    return BigInt(this.nById.length - 1);
  }

  /**
   * Checks the reopened database against everything acknowledged and against
   * itself, then records the new events.
   */
  check(db: Athanor, run: ChildRun, mode: Mode, firstN: number): void {
    const label = `${mode} trial starting at n=${firstN}`;
    // The store's own invariants (dense ids, type index, decodable values).
    const lastId = db.events.lastId;
    expect(db.verify(), label).toEqual({ events: Number(lastId) });
    expect(lastId >= this.lastId, `${label}: the log never shrinks`).toBe(true);
    // Every commit in these trials is one transaction with exactly one event.
    expect(db.commitSeq, label).toBe(lastId);

    // Events verified in earlier trials are unchanged.
    for (const id of [1n, this.lastId, BigInt(randomInt(1, Math.max(1, Number(this.lastId))))]) {
      if (id < 1n || id > this.lastId) continue;
      expect((db.events.get(id)!.payload as { n: number }).n, `${label}: old event ${id}`).toBe(this.nById[Number(id)]);
    }

    // New events: dense ids continuing the log, all ticks, each n new and from this run.
    const fresh = [...db.events.read({ from: this.lastId + 1n })] as StoredEvent<{ n: number }>[];
    let expectId = this.lastId + 1n;
    const freshNs: number[] = [];
    for (const e of fresh) {
      expect(e.id, `${label}: ids are dense`).toBe(expectId);
      expectId++;
      expect(e.type).toBe('tick');
      const n = e.payload.n;
      expect(Number.isInteger(n) && n >= firstN, `${label}: event ${e.id} has n=${n}`).toBe(true);
      expect(this.allNs.has(n), `${label}: n=${n} committed twice`).toBe(false);
      this.allNs.add(n);
      this.nById.push(n);
      this.perAccount[n % 10]!++;
      if (mode === 'grow') this.padWriter.set(n % 4, n);
      freshNs.push(n);
      this.maxN = Math.max(this.maxN, n);
    }
    expect(expectId - 1n, label).toBe(lastId);

    // Every acknowledged commit is present, exactly as acknowledged.
    for (const a of run.acks) {
      expect(this.allNs.has(a.n), `${label}: acknowledged n=${a.n} is missing`).toBe(true);
      const e = db.events.get(a.firstEventId) as StoredEvent<{ n: number }> | undefined;
      expect(e, `${label}: event ${a.firstEventId} of acknowledged n=${a.n}`).toBeDefined();
      expect(e!.payload).toEqual({ n: a.n });
      expect(e!.commitSeq).toBe(a.commitSeq);
    }

    // No partial commit: state agrees with the events.
    let sum = 0n;
    for (let k = 0; k < 10; k++) {
      const v = db.getOpt(`acct:${k}`);
      const balance = v === undefined ? 0n : v.asI64();
      expect(balance, `${label}: acct:${k} matches its tick events`).toBe(BigInt(this.perAccount[k]!));
      sum += balance;
    }
    expect(sum, `${label}: balances sum to the number of ticks`).toBe(lastId);
    // Pads (written by 'grow' runs) are whole: one length, one fill byte, from a tick's n.
    for (let k = 0; k < 4; k++) {
      const pad = db.getOpt(`pad:${k}`);
      if (pad === undefined) continue;
      const b = pad.asBytes();
      expect(b.length, `${label}: pad:${k} length`).toBe(48 * 1024);
      expect(b.every((x) => x === b[0]), `${label}: pad:${k} is not torn`).toBe(true);
      expect(b[0]! % 4, `${label}: pad:${k} was written by an n with n % 4 = ${k}`).toBe(k % 4);
      expect(b[0], `${label}: pad:${k} comes from the newest tick that wrote it`).toBe(this.padWriter.get(k)! & 0xff);
    }
    expect([0, 1, 2, 3].filter((k) => db.exists(`pad:${k}`))).toEqual([...this.padWriter.keys()].sort());
    if (lastId > 0n) {
      const newest = db.events.tail(1)[0] as StoredEvent<{ n: number }>;
      expect(db.get('last').asI64(), `${label}: last is the n of the newest tick`).toBe(BigInt(newest.payload.n));
    } else {
      expect(db.exists('last')).toBe(false);
    }

    if (run.acks.length > 0) {
      const maxAcked = Math.max(...run.acks.map((a) => a.n));
      if (mode === 'sequential' || mode === 'sync') {
        // One commit at a time: commits land in n order, so `last` covers every ack
        // and this run's commits are exactly firstN..k with k = maxAcked or maxAcked + 1.
        expect(db.get('last').asI64() >= BigInt(maxAcked), `${label}: last >= max acked n`).toBe(true);
        const sorted = [...freshNs].sort((a, b) => a - b);
        expect(sorted, label).toEqual(Array.from({ length: sorted.length }, (_, i) => firstN + i));
        expect(sorted.length === 0 ? -1 : sorted.at(-1)! - maxAcked, label).toBeGreaterThanOrEqual(0);
        expect(sorted.at(-1)! - maxAcked, label).toBeLessThanOrEqual(1);
      } else {
        // Concurrent commits may apply out of n order (retries), so only "no acked
        // commit lost" holds; acks are in commit order within a run.
        for (let i = 1; i < run.acks.length; i++) {
          expect(run.acks[i]!.commitSeq !== run.acks[i - 1]!.commitSeq, label).toBe(true);
        }
      }
    }
  }
}

describe('crash safety under kill -9', () => {
  it(
    `every acknowledged commit survives SIGKILL and no commit is partial (${TRIALS} trials, same directory)`,
    { timeout: Math.max(120_000, TRIALS * 20_000) },
    async () => {
      const dir = tempDir('athanor-crash-');
      dirs.push(dir);
      const ledger = new Ledger();
      let totalAcks = 0;
      for (let trial = 0; trial < TRIALS; trial++) {
        const mode = MODES[trial % MODES.length]!;
        const firstN = ledger.maxN + 1;
        // Mostly kill mid-stream after the first ack; every fifth trial kill early,
        // possibly while the child is still opening (recovering) the store.
        const early = trial % 5 === 4;
        const run = early
          ? await runChild(dir, mode, firstN, randomInt(0, 250), null)
          : await runChild(dir, mode, firstN, randomInt(50, 400), (l) => l.startsWith('ack '));
        expect(run.signal, `child exited on its own (code ${run.code}): ${run.stderr}`).toBe('SIGKILL');
        if (!early) expect(run.acks.length).toBeGreaterThan(0);
        totalAcks += run.acks.length;

        const db = await Athanor.open(dir);
        try {
          ledger.check(db, run, mode, firstN);
        } finally {
          await db.close();
        }
      }
      expect(totalAcks).toBeGreaterThan(0);
      console.log(`crash soak: ${TRIALS} trials, ${totalAcks} acknowledged commits, ${ledger.lastId} events verified`);

      // After all the kills, the directory is fully usable for normal work.
      const db = await Athanor.open(dir);
      try {
        const before = db.events.lastId;
        const r = await db.transaction().execute((tx) => {
          tx.update('acct:0', (v) => i64((v?.asI64() ?? 0n) + 1n));
          tx.set('last', i64(ledger.maxN + 1));
          tx.log('tick', { n: ledger.maxN + 1 });
        });
        expect(r.firstEventId).toBe(before + 1n);
        expect(db.verify()).toEqual({ events: Number(before) + 1 });
      } finally {
        await db.close();
      }
    },
  );

  it('a child killed while holding snapshots and pending commits leaves a store that reopens and accepts commits', { timeout: 120_000 }, async () => {
    const dir = tempDir('athanor-crash-snap-');
    dirs.push(dir);
    // Some history first, so the snapshots pin a non-empty state.
    {
      const db = await Athanor.open(dir);
      await db.transaction().execute((tx) => {
        tx.set('acct:0', i64(0));
        tx.set('pad:0', bytes(new Uint8Array(1000)));
      });
      await db.close();
    }
    const ledger = new Ledger();
    // The setup commit has no event: account for it in commitSeq checks below.
    const run = await runChild(dir, 'snapshot', 1, randomInt(0, 100), (l) => l.startsWith('ready'));
    expect(run.signal, `child exited on its own (code ${run.code}): ${run.stderr}`).toBe('SIGKILL');
    expect(run.lines.some((l) => l.startsWith('ready 3'))).toBe(true);

    const db = await Athanor.open(dir);
    try {
      // Same checks as the soak, except commitSeq counts the setup commit.
      const lastId = db.events.lastId;
      expect(db.commitSeq).toBe(lastId + 1n);
      expect(db.verify()).toEqual({ events: Number(lastId) });
      const fresh = [...db.events.read()] as StoredEvent<{ n: number }>[];
      expect(fresh.map((e) => e.id)).toEqual(Array.from({ length: fresh.length }, (_, i) => BigInt(i + 1)));
      for (const e of fresh) ledger.perAccount[e.payload.n % 10]!++;
      for (let k = 0; k < 10; k++) expect(db.getOpt(`acct:${k}`)?.asI64() ?? 0n).toBe(BigInt(ledger.perAccount[k]!));
      for (const a of run.acks) expect(db.events.get(a.firstEventId)!.payload).toEqual({ n: a.n });

      // New snapshots and commits work; the dead process's snapshots pin nothing we can see.
      const snap = db.snapshot();
      const r = await db.transaction().execute((tx) => {
        tx.update('acct:0', (v) => i64((v?.asI64() ?? 0n) + 1n));
        tx.log('tick', { n: 1_000_000 });
      });
      expect(r.firstEventId).toBe(lastId + 1n);
      expect(snap.lastEventId).toBe(lastId);
      snap.close();
      const burst = await Promise.all(
        Array.from({ length: 50 }, (_, i) => db.transaction().execute((tx) => tx.set(`after:${i}`, i64(i)))),
      );
      expect(burst.every((x) => x.outcome === 'applied')).toBe(true);
      expect(db.verify()).toEqual({ events: Number(lastId) + 1 });
    } finally {
      await db.close();
    }
  });

  it('after a crash with open snapshots, freed pages are reused again (stale reader slots do not pin the file)', { timeout: 120_000 }, async () => {
    const dir = tempDir('athanor-crash-space-');
    dirs.push(dir);
    const run = await runChild(dir, 'snapshot', 1, randomInt(50, 150), (l) => l.startsWith('ready'));
    expect(run.signal, run.stderr).toBe('SIGKILL');
    const dataFile = path.join(dir, 'canonical', 'data.mdb');
    const db = await Athanor.open(dir);
    try {
      const value = bytes(new Uint8Array(64 * 1024).fill(3));
      // Warm up: let the free list settle after the crash.
      for (let i = 0; i < 20; i++) await db.transaction().execute((tx) => tx.set('churn', value));
      const sizeBefore = fs.statSync(dataFile).size;
      // 300 overwrites of a 64 KiB value: ~19 MiB of page writes. If a dead reader
      // pinned old pages, none could be reused and the file would grow by about that much.
      for (let i = 0; i < 300; i++) await db.transaction().execute((tx) => tx.set('churn', value));
      const growth = fs.statSync(dataFile).size - sizeBefore;
      expect(growth).toBeLessThan(4 * 1024 * 1024);
      expect(db.verify().events).toBe(Number(db.events.lastId));
    } finally {
      await db.close();
    }
  });

  it('opening the store clears reader slots left by a killed process, even while another process keeps it open', { timeout: 120_000 }, async () => {
    const dir = tempDir('athanor-crash-readers-');
    dirs.push(dir);
    // This process keeps the store open throughout, so no later open is the "first"
    // one (which would reset the reader table anyway): only clearing stale slots helps.
    const db = await Athanor.open(dir);
    try {
      const run = await runChild(dir, 'snapshot', 1, randomInt(50, 150), (l) => l.startsWith('ready'));
      expect(run.signal, run.stderr).toBe('SIGKILL');
      // Another process opens the store (clearing the dead process's slots) and leaves.
      const opener = await runChild(dir, 'open', 0, 60_000, null);
      expect(opener.code, opener.stderr).toBe(0);
      expect(opener.lines[0]).toBe(`opened ${db.events.lastId}`);

      const dataFile = path.join(dir, 'canonical', 'data.mdb');
      const value = bytes(new Uint8Array(64 * 1024).fill(3));
      for (let i = 0; i < 20; i++) await db.transaction().execute((tx) => tx.set('churn', value));
      const sizeBefore = fs.statSync(dataFile).size;
      for (let i = 0; i < 300; i++) await db.transaction().execute((tx) => tx.set('churn', value));
      expect(fs.statSync(dataFile).size - sizeBefore).toBeLessThan(4 * 1024 * 1024);
      for (const a of run.acks) expect(db.events.get(a.firstEventId)!.payload).toEqual({ n: a.n });
      expect(db.verify().events).toBe(Number(db.events.lastId));
    } finally {
      await db.close();
    }
  });
});
