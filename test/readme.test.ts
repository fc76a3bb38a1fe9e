/**
 * README code that runs: every ```ts / ```js / ```sh block of README.md (and of the
 * repository's markdown files README.md links to) is type-checked against the built
 * `dist/` typings and run in a fresh temp directory. A failure names the block's line.
 *
 * Conventions, as an HTML comment on the line right before a block's fence:
 *   <!-- readme-test: continues -->       the block continues the previous program of the same
 *                                         language (its `db` and other names are in scope; its
 *                                         imports are merged with the program's)
 *   <!-- readme-test: skip (reason) -->   the block cannot run here (e.g. `npm install`, or a
 *                                         command that would run this test suite again)
 * Without a comment, a block starts a new program. `import ... from 'athanor'` resolves to
 * this package. Blocks run with the test model linked at `./models/all-MiniLM-L6-v2`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { removeDir, tempDir } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ENTRY_JS = pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href;
const ENTRY_DTS = path.join(ROOT, 'dist', 'index.d.ts');
const RUN_TIMEOUT_MS = 120_000;

type Lang = 'ts' | 'js' | 'sh';

interface Block {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: Lang;
  code: string;
  continues: boolean;
  skip: string | undefined;
}

/** One program: blocks run together, in order. */
interface Program {
  lang: Lang;
  blocks: Block[];
}

const LANGS: Record<string, Lang> = { ts: 'ts', typescript: 'ts', js: 'js', javascript: 'js', mjs: 'js', sh: 'sh', bash: 'sh', shell: 'sh' };

/** The fenced blocks of one markdown file, with their readme-test directives. */
function extractBlocks(file: string): Block[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[2]!;
    let end = i + 1;
    while (end < lines.length && !lines[end]!.trimStart().startsWith(fence)) end++;
    const lang = LANGS[open[3]!.toLowerCase()];
    if (lang !== undefined) {
      let prev = i - 1;
      while (prev >= 0 && lines[prev]!.trim() === '') prev--;
      const directive = prev >= 0 ? /^<!--\s*readme-test:\s*(continues|skip)\s*(?:\((.*)\))?\s*-->$/.exec(lines[prev]!.trim()) : null;
      if (prev >= 0 && /readme-test/.test(lines[prev]!) && directive === null) {
        throw new Error(`${path.relative(ROOT, file)}:${prev + 1}: unreadable readme-test directive ${lines[prev]!.trim()}`);
      }
      if (directive?.[1] === 'skip' && !directive[2]?.trim()) throw new Error(`${path.relative(ROOT, file)}:${prev + 1}: a skip needs a reason: <!-- readme-test: skip (why) -->`);
      blocks.push({
        file,
        line: i + 1,
        lang,
        code: lines.slice(i + 1, end).join('\n'),
        continues: directive?.[1] === 'continues',
        skip: directive?.[1] === 'skip' ? directive[2]!.trim() : undefined,
      });
    }
    i = end;
  }
  return blocks;
}

/** README.md and the markdown files inside the repository that it links to. */
function markdownFiles(): string[] {
  const readme = path.join(ROOT, 'README.md');
  const files = [readme];
  const text = fs.readFileSync(readme, 'utf8');
  for (const m of text.matchAll(/\]\(([^)#\s]+\.md)(?:#[^)]*)?\)/g)) {
    const target = path.resolve(ROOT, m[1]!);
    if (target.startsWith(ROOT + path.sep) && fs.existsSync(target) && !files.includes(target)) files.push(target);
  }
  return files;
}

function programsOf(blocks: Block[]): Program[] {
  const programs: Program[] = [];
  for (const b of blocks) {
    if (b.skip !== undefined) continue;
    const last = [...programs].reverse().find((p) => p.lang === b.lang);
    if (b.continues) {
      if (last === undefined) throw new Error(`${where(b)}: "continues" but no earlier ${b.lang} block to continue`);
      last.blocks.push(b);
    } else {
      programs.push({ lang: b.lang, blocks: [b] });
    }
  }
  return programs;
}

function where(b: Block): string {
  return `${path.relative(ROOT, b.file)}:${b.line}`;
}

/** The program as one module: imports merged and hoisted, each block marked so a failure names it. */
function assemble(p: Program): { source: string; lineOf: (generatedLine: number) => Block | undefined } {
  const named = new Map<string, Set<string>>();
  const other: string[] = [];
  const body: string[] = [];
  const owner: (Block | undefined)[] = [];
  for (const b of p.blocks) {
    body.push(`__readmeBlock(${JSON.stringify(where(b))});`);
    owner.push(b);
    for (const line of b.code.split('\n')) {
      const imp = /^import\s+\{([^}]*)\}\s+from\s+(['"])([^'"]+)\2;?\s*$/.exec(line);
      if (imp) {
        const names = named.get(imp[3]!) ?? new Set<string>();
        for (const n of imp[1]!.split(',').map((s) => s.trim()).filter(Boolean)) names.add(n);
        named.set(imp[3]!, names);
        body.push('');
      } else if (/^import\s/.test(line)) {
        if (!other.includes(line)) other.push(line);
        body.push('');
      } else {
        body.push(line);
      }
      owner.push(b);
    }
  }
  // the same helper in TS and in plain JS: the marker each block starts with, and the catch that reports it
  const typed = p.lang === 'ts';
  const at = typed ? '(globalThis as { __readmeAt?: string })' : 'globalThis';
  const head = [
    ...[...named].map(([from, names]) => `import { ${[...names].join(', ')} } from '${from}';`),
    ...other,
    `const __readmeBlock = (at${typed ? ': string' : ''}) => { ${at}.__readmeAt = at; };`,
    `async function __readmeMain() {`,
  ];
  const tail = [
    '}',
    `await __readmeMain().catch((e${typed ? ': unknown' : ''}) => {`,
    `  process.stderr.write(\`README_BLOCK \${${at}.__readmeAt ?? '?'}\\n\`);`,
    '  process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\\n`);',
    '  process.exit(1);',
    '});',
  ];
  const source = [...head, ...body, ...tail].join('\n');
  return { source, lineOf: (n) => (n > head.length && n <= head.length + body.length ? owner[n - head.length - 1] : undefined) };
}

/** Type-checks the program against dist/ typings; returns one message per diagnostic, with its README line. */
function typeCheck(p: Program, dir: string): string[] {
  const { source, lineOf } = assemble(p);
  const file = path.join(dir, 'readme-program.mts');
  fs.writeFileSync(file, source);
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2024.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    typeRoots: [path.join(ROOT, 'node_modules', '@types')],
    paths: { athanor: [ENTRY_DTS] },
  });
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (d.file === undefined || d.start === undefined) return text;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    const b = d.file.fileName === file ? lineOf(line + 1) : undefined;
    if (b === undefined) return `${path.basename(d.file.fileName)}:${line + 1}:${character + 1}: ${text}`;
    const inBlock = source.split('\n').slice(0, line).filter((_l, i) => lineOf(i + 1) === b).length;
    return `${path.relative(ROOT, b.file)}:${b.line + inBlock} (block at line ${b.line}): ${text}`;
  });
}

function run(p: Program, dir: string): { ok: boolean; message: string } {
  if (p.lang === 'sh') {
    const script = p.blocks.map((b) => b.code).join('\n');
    const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
    return { ok: r.status === 0, message: `${where(p.blocks[0]!)}: exit ${r.status ?? r.signal}: ${r.stderr.trim()}` };
  }
  const { source } = assemble(p);
  const js = p.lang === 'ts' ? ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText : source;
  const file = path.join(dir, 'readme-program.mjs');
  fs.writeFileSync(file, js.replace(/from 'athanor'/g, `from '${ENTRY_JS}'`));
  const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
  const at = /README_BLOCK (\S+)/.exec(r.stderr)?.[1] ?? where(p.blocks[0]!);
  const why = r.error !== undefined ? `did not finish within ${RUN_TIMEOUT_MS / 1000} s (${r.error.message})` : r.signal !== null ? `killed by ${r.signal}` : `exit ${r.status}`;
  return { ok: r.status === 0, message: `block at ${at}: ${why}\n${r.stderr.replace(/README_BLOCK \S+\n/, '').trim()}` };
}

const blocks = markdownFiles().flatMap(extractBlocks);
const programs = programsOf(blocks);
const dirs: string[] = [];
let modelDir: string;

beforeAll(async () => {
  modelDir = await ensureTestModel();
});
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

/** A fresh directory with the test model where the README's examples look for it. */
function sandbox(): string {
  const dir = tempDir('athanor-readme-');
  dirs.push(dir);
  fs.mkdirSync(path.join(dir, 'models'));
  fs.symlinkSync(modelDir, path.join(dir, 'models', 'all-MiniLM-L6-v2'), 'dir');
  return dir;
}

describe('README code blocks', () => {
  it('has code blocks, and every skipped one says why', () => {
    expect(programs.length).toBeGreaterThan(0);
    for (const b of blocks) if (b.skip !== undefined) expect(b.skip.length, where(b)).toBeGreaterThan(3);
  });

  for (const p of programs) {
    const name = `${p.lang} program at ${p.blocks.map(where).join(' + ')}`;
    it(name, () => {
      const dir = sandbox();
      if (p.lang === 'ts') {
        const errors = typeCheck(p, dir);
        expect(errors, `type errors:\n${errors.join('\n')}`).toEqual([]);
      }
      const r = run(p, dir);
      expect(r.ok, r.message).toBe(true);
    }, RUN_TIMEOUT_MS + 30_000);
  }
});
