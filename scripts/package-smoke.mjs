#!/usr/bin/env node
// The package smoke test: run from a project where the packed `athanor` tarballs were installed
// (no Rust, no repository around it). It exercises what a new user touches first, through both
// module systems, and exits non-zero on any failure:
//   ESM import and CommonJS require, open, a transaction, reading back, an event,
//   a SQL projection, a vector search, the CLI's --help and verify, and text embeddings
//   when ATHANOR_ORT_LIB (an ONNX Runtime library) and ATHANOR_SMOKE_MODEL (a model dir) are set.
// Used by `npm run package-test`, test/package.test.ts and the container jobs of CI.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(join(process.cwd(), 'package.json'))
const step = (what) => console.log(`smoke: ${what}`)
const fail = (what) => {
  console.error(`smoke: FAILED: ${what}`)
  process.exit(1)
}
const check = (ok, what) => {
  if (!ok) fail(what)
}

const esm = await import('athanor')
const cjs = require('athanor')
check(typeof esm.Athanor?.open === 'function', 'ESM import exposes Athanor.open')
check(typeof cjs.Athanor?.open === 'function', 'CommonJS require exposes Athanor.open')
step(`import and require (${Object.keys(cjs).length} exports)`)

const { Athanor, i64 } = esm
const dir = mkdtempSync(join(tmpdir(), 'athanor-smoke-'))
try {
  const db = await Athanor.open(join(dir, 'db'))
  const r = await db.transaction().execute((tx) => {
    tx.set('acct:alice', i64(100n))
    tx.log('opened', { account: 'alice' })
  })
  check(r.outcome === 'applied' && r.eventCount === 1, 'transaction applied with one event')
  check(db.get('acct:alice').asI64() === 100n, 'state reads back')
  check([...db.events.read({ type: 'opened' })].length === 1, 'event reads back')
  step('open, transaction, read back')

  db.migrations.add({ version: 1, name: 'accounts', up: 'CREATE TABLE accounts (name TEXT PRIMARY KEY)', down: 'DROP TABLE accounts' })
  db.migrations.run()
  const insert = db.sql.prepare('INSERT INTO accounts VALUES (?)')
  const p = db.processor('accounts').on('opened', (_sql, e) => void insert.run(e.payload.account)).build()
  await p.catchUp()
  check(db.sql.get('SELECT count(*) AS n FROM accounts').n === 1, 'SQL projection applied the event')
  step('SQL projection')

  const docs = db.vectors.create('docs', { dimension: 4, metric: 'cosine' })
  await docs.upsertMany(['a', 'b'], new Float32Array([1, 0, 0, 0, 0, 1, 0, 0]))
  const hits = docs.search(new Float32Array([0.9, 0.1, 0, 0]), { k: 1 })
  check(hits.length === 1 && hits[0].id === 'a', 'vector search finds the nearest document')
  step('vector search')

  const runtime = process.env.ATHANOR_ORT_LIB
  const model = process.env.ATHANOR_SMOKE_MODEL
  if (runtime && model) {
    const embedder = await esm.Embedder.open(model)
    const v = await embedder.embed('hello world')
    check(v.length === embedder.dimension, 'embedding has the model dimension')
    await embedder.close()
    step(`embeddings (${embedder.dimension} dimensions, runtime from ATHANOR_ORT_LIB)`)
  } else {
    step('embeddings skipped (set ATHANOR_ORT_LIB and ATHANOR_SMOKE_MODEL to run them)')
  }
  await db.close()

  const bin = join(process.cwd(), 'node_modules', '.bin', process.platform === 'win32' ? 'athanor.cmd' : 'athanor')
  const help = spawnSync(bin, ['--help'], { encoding: 'utf8', shell: process.platform === 'win32' })
  check(help.status === 0 && help.stdout.includes('athanor'), `CLI --help (exit ${help.status}: ${help.stderr})`)
  const verify = spawnSync(bin, ['verify', '--dir', join(dir, 'db')], { encoding: 'utf8', shell: process.platform === 'win32' })
  check(verify.status === 0, `CLI verify (exit ${verify.status}: ${verify.stdout}${verify.stderr})`)
  step('CLI --help and verify')
} finally {
  rmSync(dir, { recursive: true, force: true })
}
console.log('smoke: ok')
