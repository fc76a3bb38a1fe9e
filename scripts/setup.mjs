#!/usr/bin/env node
// Makes `npm test`, `npm start` and `npm run bench` work on a fresh clone:
//   (a) npm dependencies   -> `npm ci` when node_modules is missing, `npm install` when stale
//   (b) the native addon   -> `npm run build:native` when the .node is missing or older
//                             than any Rust source, Cargo.toml or Cargo.lock
//   (c) the TypeScript API -> `npm run build:ts` when dist/index.js is missing or older
//                             than anything under ts/ (or the tsconfigs, or the addon's
//                             generated typings)
// Prints one line per step it runs and nothing when everything is up to date.
// ATHANOR_SKIP_SETUP=1 skips all of it (e.g. CI jobs that download a prebuilt addon).
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const rel = (p) => relative(root, p) || '.'

if (process.env.ATHANOR_SKIP_SETUP === '1') process.exit(0)

/** mtime in ms, or -1 when the path does not exist. */
function mtime(path) {
  try {
    return statSync(path).mtimeMs
  } catch {
    return -1
  }
}

/**
 * Newest mtime among files under `dir` accepted by `accept(name)`; directories'
 * own mtimes count too when `withDirs` (so deleted/added files are noticed).
 * Skips build outputs and dependencies.
 */
function newest(dir, accept, withDirs = false) {
  const SKIP = new Set(['node_modules', 'target', 'dist', '.git'])
  let best = -1
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return best
  }
  if (withDirs) best = mtime(dir)
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) {
      if (!SKIP.has(e.name)) best = Math.max(best, newest(p, accept, withDirs))
    } else if (e.isFile() && accept(e.name)) {
      best = Math.max(best, mtime(p))
    }
  }
  return best
}

function run(what, cmd, args) {
  console.log(`setup: ${what} (${[cmd, ...args].join(' ')})`)
  const r = spawnSync(cmd, args, {
    cwd: root,
    stdio: 'inherit',
    // onnxruntime-node (a dev dependency for the embedding tests) would otherwise fetch CUDA
    // files from outside npm with npm versions that run install scripts; athanor needs only
    // the CPU library its npm tarball carries.
    env: { ONNXRUNTIME_NODE_INSTALL: 'skip', ...process.env },
    // npm is npm.cmd on Windows
    shell: process.platform === 'win32',
  })
  if (r.error) {
    console.error(`setup: could not run ${cmd}: ${r.error.message}`)
    process.exit(1)
  }
  if (r.status !== 0) {
    console.error(`setup: ${what} failed (${cmd} exited with ${r.status ?? r.signal})`)
    process.exit(r.status || 1)
  }
}

/** The napi-rs `platformArchABI` of this host, as in `athanor.<it>.node`. */
function platformArchABI() {
  const { platform, arch } = process
  if (platform === 'linux') {
    if (process.report) process.report.excludeNetwork = true
    const report = process.report?.getReport?.()
    const glibc = report?.header?.glibcVersionRuntime
    const libc = glibc ? 'gnu' : 'musl'
    if (arch === 'arm') return `linux-arm-${libc}eabihf`
    return `linux-${arch}-${libc}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'darwin') return `darwin-${arch}`
  return `${platform}-${arch}`
}

// (a) npm dependencies
{
  const stamp = join(root, 'node_modules', '.package-lock.json')
  const built = mtime(stamp)
  const inputs = Math.max(mtime(join(root, 'package.json')), mtime(join(root, 'package-lock.json')))
  if (!existsSync(join(root, 'node_modules')) || built < 0 || inputs > built) {
    // A fresh clone installs exactly the lockfile (and fails if it is out of step with
    // package.json); a changed package.json in a working tree updates it.
    if (existsSync(join(root, 'node_modules'))) run('updating npm dependencies', 'npm', ['install', '--no-audit', '--no-fund'])
    else run('installing npm dependencies', 'npm', ['ci', '--no-audit', '--no-fund'])
    // npm may leave the hidden lockfile untouched when nothing changed; mark it
    // current so the next run does not install again.
    if (existsSync(stamp)) {
      const now = new Date()
      utimesSync(stamp, now, now)
    }
  }
}

// (b) native addon
{
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  const binaryName = pkg.napi?.binaryName ?? 'athanor'
  const addon = join(root, 'native', 'node', `${binaryName}.${platformArchABI()}.node`)
  const built = mtime(addon)
  const inputs = Math.max(
    newest(join(root, 'native'), (n) => n.endsWith('.rs') || n === 'Cargo.toml'),
    // Patched third-party crates the addon links (see vendor/hnsw_rs/PATCHES.md).
    newest(join(root, 'vendor'), (n) => n.endsWith('.rs') || n === 'Cargo.toml'),
    mtime(join(root, 'Cargo.toml')),
    mtime(join(root, 'Cargo.lock')),
  )
  if (built < 0 || inputs > built) {
    run(`building the native addon ${rel(addon)}`, 'npm', ['run', 'build:native'])
    if (!existsSync(addon)) {
      console.error(`setup: build:native finished but ${rel(addon)} is missing`)
      process.exit(1)
    }
  }
}

// (c) TypeScript API
{
  const out = join(root, 'dist', 'index.js')
  const built = mtime(out)
  const inputs = Math.max(
    newest(join(root, 'ts'), () => true, true),
    mtime(join(root, 'tsconfig.json')),
    mtime(join(root, 'tsconfig.build.json')),
    mtime(join(root, 'native', 'node', 'binding.d.cts')),
  )
  if (built < 0 || inputs > built) {
    // Start clean so files deleted from ts/ do not linger in dist/ (and get published).
    rmSync(join(root, 'dist'), { recursive: true, force: true })
    run('compiling ts/ to dist/', 'npm', ['run', 'build:ts'])
    if (!existsSync(out)) {
      console.error(`setup: build:ts finished but ${rel(out)} is missing`)
      process.exit(1)
    }
  }
}
