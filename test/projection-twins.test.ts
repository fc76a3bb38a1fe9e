/**
 * The same projection run by two processes on one directory at once (README: "the same
 * projection in two processes"): each batch reads and moves the cursor inside its own
 * SQLite write transaction, so every event is applied exactly once between them and
 * each failing event leaves one dead letter.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Sandbox } from './helpers.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'twin-projection-child.mjs');
const EVENTS = 1500;
/** Events whose amount is negative: they fail and are dead-lettered. */
const failing = (i: number): boolean => i % 97 === 0;
const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

interface Child {
  proc: ChildProcessWithoutNullStreams;
  pid: number;
  ready: Promise<void>;
  exited: Promise<void>;
}

function start(dir: string, mode: 'ts' | 'decl'): Child {
  const proc = spawn(process.execPath, [CHILD, dir, mode, '3'], { stdio: 'pipe' });
  let out = '';
  let err = '';
  const ready = new Promise<void>((resolve) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
  });
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve, reject) =>
    proc.on('exit', (code) => (code === 0 && out.includes('done') ? resolve() : reject(new Error(`child ${mode} exited ${code}: ${err}`)))),
  );
  // A child that dies before `ready` must fail the test, not hang it.
  return { proc, pid: proc.pid!, ready: Promise.race([ready, exited]), exited };
}

describe('one projection in two processes', () => {
  for (const mode of ['ts', 'decl'] as const) {
    it(`applies every event exactly once and dead-letters each failure once (${mode === 'ts' ? 'TypeScript handlers' : 'declarative'})`, async () => {
      const dir = sandbox.dir();
      const db = await sandbox.open(dir);
      await db.transaction().execute((tx) => {
        for (let i = 1; i <= EVENTS; i++) tx.log('Dep', { amount: failing(i) ? -1 : i });
      });
      const last = db.events.lastId;
      await db.close();

      const children = [start(dir, mode), start(dir, mode)];
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.proc.stdin.end('go\n');
      await Promise.all(children.map((c) => c.exited));

      const check = await sandbox.open(dir);
      const table = `applied_${mode}`;
      const name = `twin_${mode}`;
      const expected = Array.from({ length: EVENTS }, (_, k) => k + 1).filter((i) => !failing(i));
      // No key on the table: an event applied twice would be two rows.
      expect(check.sql.get(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM ${table}`)).toEqual({ n: expected.length, d: expected.length });
      expect(check.sql.all<{ event_id: number }>(`SELECT event_id FROM ${table} ORDER BY event_id`).map((r) => r.event_id)).toEqual(expected);
      expect(check.sql.get('SELECT last_event_id AS id FROM _athanor_cursors WHERE name = ?', [name])).toEqual({ id: Number(last) });
      const dead = check.sql.all<{ event_id: number; attempts: number }>('SELECT event_id, attempts FROM _athanor_dead_letters WHERE processor = ? ORDER BY event_id', [name]);
      expect(dead).toEqual(Array.from({ length: EVENTS }, (_, k) => k + 1).filter(failing).map((i) => ({ event_id: i, attempts: 1 })));
      // Both processes did part of the work: they really ran at the same time.
      const by = check.sql.all<{ pid: number }>(`SELECT DISTINCT pid FROM ${table}`).map((r) => r.pid).sort();
      expect(by).toEqual(children.map((c) => c.pid).sort());
    }, 60_000);
  }
});
