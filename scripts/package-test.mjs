#!/usr/bin/env node
// End-to-end package test for linux-x64 (gnu), the way the release builds and users install:
//   1. the addon: built portable (cargo-zigbuild against glibc 2.28, stripped; default), or the
//      one already in native/node (`--local`, what `npm test` uses: no second Rust build)
//   2. the glibc floor: no symbol newer than GLIBC_2.28 (`objdump -T`; enforced for portable builds)
//   3. the size budget of the addon and of both tarballs
//   4. `npm pack` of the root package (dist/ built first) and of npm/linux-x64-gnu with the addon
//   5. both tarballs installed into an empty project, with no Rust on PATH, and
//      scripts/package-smoke.mjs run there (ESM and CommonJS, transaction, SQL projection,
//      vector search, CLI; embeddings with the repository's ONNX Runtime and test model when found)
//   6. the root tarball alone: loading athanor must fail with ERR_NATIVE naming athanor-linux-x64-gnu
// Exits non-zero on any failure. Options: --local, --keep (leave the temp folder), --json.
import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildAddon, GLIBC_FLOOR as FLOOR } from './build-addon.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = new Set(process.argv.slice(2))
const local = args.has('--local')
const PLATFORM = 'linux-x64-gnu'
const TRIPLE = 'x86_64-unknown-linux-gnu'
const GLIBC_FLOOR = FLOOR.split('.').map(Number)
/** Budgets, in bytes: a stripped addon is about 10 MB; tarballs are gzip. */
const BUDGET = { addon: 14 * 2 ** 20, platformTarball: 6 * 2 ** 20, rootTarball: 1 * 2 ** 20 }
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`package-test: builds and installs the ${PLATFORM} package; this is ${process.platform}-${process.arch}`)
  process.exit(2)
}

const say = (s) => console.log(`package-test: ${s}`)
function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', stdio: opts.capture ? 'pipe' : 'inherit', ...opts })
  if (r.error) throw new Error(`could not run ${cmd}: ${r.error.message}`)
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${argv.join(' ')} exited with ${r.status ?? r.signal}${opts.capture ? `\n${r.stdout}${r.stderr}` : ''}`)
  }
  return r
}

/** The newest GLIBC_x.y symbol version the file needs. */
function newestGlibc(file) {
  const out = run('objdump', ['-T', file], { capture: true }).stdout
  let newest = [0, 0]
  for (const m of out.matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)) {
    const v = [Number(m[1]), Number(m[2])]
    if (v[0] > newest[0] || (v[0] === newest[0] && v[1] > newest[1])) newest = v
  }
  return newest
}

function npmPack(dir, dest) {
  const out = run('npm', ['pack', '--json', '--pack-destination', dest, '--ignore-scripts'], { cwd: dir, capture: true }).stdout
  const info = JSON.parse(out.slice(out.indexOf('[')))[0]
  return join(dest, info.filename)
}

/** PATH without any folder that holds cargo or rustc: the installed package must not need Rust. */
function pathWithoutRust() {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((d) => d && !existsSync(join(d, 'cargo')) && !existsSync(join(d, 'rustc')))
    .join(delimiter)
}

const report = {}
const work = mkdtempSync(join(tmpdir(), 'athanor-package-test-'))
try {
  // 1. the addon
  const addon = local ? join(root, 'native', 'node', `athanor.${PLATFORM}.node`) : buildAddon(TRIPLE)
  if (!existsSync(addon)) throw new Error(`no addon at ${addon}: run \`npm run build\` first (or drop --local)`)

  // 2. glibc floor
  const glibc = newestGlibc(addon)
  report.glibc = glibc.join('.')
  const within = glibc[0] < GLIBC_FLOOR[0] || (glibc[0] === GLIBC_FLOOR[0] && glibc[1] <= GLIBC_FLOOR[1])
  if (!within && !local) throw new Error(`the addon needs GLIBC_${report.glibc}, newer than the floor ${GLIBC_FLOOR.join('.')}`)
  say(`glibc: newest symbol version GLIBC_${report.glibc}${within ? ` (within ${GLIBC_FLOOR.join('.')})` : ' (local build: the floor is checked on portable builds)'}`)

  // 3-4. packages
  if (!existsSync(join(root, 'dist', 'index.js')) || !existsSync(join(root, 'dist', 'index.cjs'))) run('npm', ['run', 'build:ts'])
  const platformDir = join(work, 'platform')
  cpSync(join(root, 'npm', PLATFORM), platformDir, { recursive: true })
  copyFileSync(addon, join(platformDir, `athanor.${PLATFORM}.node`))
  for (const f of ['LICENSE', 'THIRD_PARTY_NOTICES.md']) copyFileSync(join(root, f), join(platformDir, f))
  report.addonBytes = statSync(join(platformDir, `athanor.${PLATFORM}.node`)).size
  const tarballs = join(work, 'tarballs')
  mkdirSync(tarballs)
  const rootTgz = npmPack(root, tarballs)
  const platformTgz = npmPack(platformDir, tarballs)
  report.rootTarballBytes = statSync(rootTgz).size
  report.platformTarballBytes = statSync(platformTgz).size
  const over = [
    ['addon', report.addonBytes, BUDGET.addon],
    ['platform tarball', report.platformTarballBytes, BUDGET.platformTarball],
    ['root tarball', report.rootTarballBytes, BUDGET.rootTarball],
  ].filter(([, size, budget]) => size > budget)
  say(`sizes: addon ${(report.addonBytes / 2 ** 20).toFixed(1)} MiB, platform tarball ${(report.platformTarballBytes / 2 ** 20).toFixed(1)} MiB, root tarball ${(report.rootTarballBytes / 2 ** 20).toFixed(2)} MiB`)
  if (over.length && !local) throw new Error(`over the size budget: ${over.map(([n, s, b]) => `${n} ${s} > ${b}`).join(', ')}`)

  // 5. install both into an empty project, no Rust on PATH, and run the smoke script
  const env = { ...process.env, PATH: pathWithoutRust(), npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' }
  delete env.ATHANOR_ORT_LIB
  if (spawnSync('cargo', ['--version'], { env, stdio: 'ignore' }).status === 0) throw new Error('cargo is still on the PATH given to the install')
  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'smoke-app', version: '1.0.0', private: true, type: 'module' }, null, 2))
  run('npm', ['install', '--no-package-lock', rootTgz, platformTgz], { cwd: app, env })
  copyFileSync(join(root, 'scripts', 'package-smoke.mjs'), join(app, 'smoke.mjs'))
  const ort = join(root, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime.so.1')
  const model = process.env.ATHANOR_TEST_MODEL_DIR ?? join(process.env.ATHANOR_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(process.env.HOME ?? tmpdir(), '.cache'), 'athanor'), 'test-models', 'all-MiniLM-L6-v2-int8')
  const smokeEnv = { ...env }
  if (existsSync(ort) && existsSync(join(model, 'model.onnx'))) Object.assign(smokeEnv, { ATHANOR_ORT_LIB: ort, ATHANOR_SMOKE_MODEL: model })
  run('node', ['smoke.mjs'], { cwd: app, env: smokeEnv })

  // 6. without the platform package, the error names it
  const bare = join(work, 'bare')
  mkdirSync(bare)
  writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'bare-app', version: '1.0.0', private: true, type: 'module' }, null, 2))
  run('npm', ['install', '--no-package-lock', rootTgz], { cwd: bare, env })
  const probe = run(
    'node',
    ['--input-type=module', '-e', "try { await import('athanor'); console.log('LOADED') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }"],
    { cwd: bare, env, capture: true },
  ).stdout.trim()
  if (probe === 'LOADED') throw new Error('athanor loaded without its platform package')
  const err = JSON.parse(probe)
  if (err.code !== 'ERR_NATIVE' || !err.message.includes(`athanor-${PLATFORM}`)) throw new Error(`missing platform package gave ${probe}`)
  say(`missing platform package: ${err.code} naming athanor-${PLATFORM}`)

  say('ok')
  if (args.has('--json')) console.log(JSON.stringify(report))
} catch (e) {
  console.error(`package-test: FAILED: ${e.message}`)
  process.exitCode = 1
} finally {
  if (args.has('--keep')) say(`kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}
