/** Child processes for the event-sourcing suites (test/fixtures/es-child.mjs), killed with SIGKILL on cue. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'es-child.mjs');

/** What a child printed, and how it ended. */
export interface ChildRun {
  lines: string[];
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
}

/**
 * Runs es-child.mjs with `args`; kills it with SIGKILL when `killWhen` first returns
 * true for a line it printed (never, when null). Resolves when it is gone.
 */
export function runEsChild(args: string[], killWhen: ((line: string, lines: string[]) => boolean) | null): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run: ChildRun = { lines: [], signal: null, code: null, stderr: '' };
    let pending = '';
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        run.lines.push(line);
        if (killWhen !== null && killWhen(line, run.lines)) child.kill('SIGKILL');
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => (run.stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      run.code = code;
      run.signal = signal;
      resolve(run);
    });
  });
}
