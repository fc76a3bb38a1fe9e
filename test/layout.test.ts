// The rules of ts/'s layout (docs/architecture.md): modules import only from their own
// folder or from a folder below it, type imports included, so there is no import cycle;
// only internal/native.ts names the addon.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const TS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'ts');
/** Each top-level folder or file of ts/ and its floor: a module may import from its own folder or a lower floor. */
const FLOOR: Record<string, number> = {
  'errors.ts': 0,
  internal: 0,
  state: 1,
  sql: 2,
  embed: 2,
  vectors: 3,
  processing: 4,
  ops: 5,
  eventsourcing: 5,
  replication: 5,
  agents: 5,
  security: 5.5,
  'db.ts': 6,
  'index.ts': 7,
  'cli.ts': 8,
};

function modules(dir = TS): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? modules(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Every relative import of a module (values and types), resolved to a path. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts')));
}

const top = (file: string) => path.relative(TS, file).split(path.sep)[0]!;

describe('ts/ layout', () => {
  const files = modules();
  const graph = new Map(files.map((f) => [f, importsOf(f)]));

  it('knows every folder of ts/', () => {
    expect(files.map(top).filter((t) => FLOOR[t] === undefined)).toEqual([]);
  });

  it('imports point down: each module imports from its own folder or a lower one', () => {
    const upward: string[] = [];
    for (const [file, deps] of graph) {
      for (const dep of deps) {
        if (!dep.startsWith(TS + path.sep)) continue;
        const [from, to] = [top(file), top(dep)];
        if (from !== to && FLOOR[to]! >= FLOOR[from]! && !(FLOOR[to] === 0 && FLOOR[from] === 0)) {
          upward.push(`${path.relative(TS, file)} -> ${path.relative(TS, dep)}`);
        }
      }
    }
    expect(upward).toEqual([]);
  });

  it('has no import cycle, type imports included', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].map((x) => path.relative(TS, x)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const d of graph.get(f) ?? []) if (graph.has(d)) visit(d, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });

  it('lets only internal/native.ts name the addon', () => {
    const naming = files.filter((f) => fs.readFileSync(f, 'utf8').includes('native/node/binding')).map((f) => path.relative(TS, f));
    expect(naming).toEqual([path.join('internal', 'native.ts')]);
  });
});
