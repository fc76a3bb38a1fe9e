#!/usr/bin/env node
// Builds the release addon for one target the way the published packages are built, and puts
// it at native/node/athanor.<platform>.node (where the loader and `napi artifacts` look):
//   linux gnu   cargo zigbuild against glibc 2.28, so the addon loads on RHEL/Alma 8, Debian 11,
//               Ubuntu 20.04 and Amazon Linux 2023 as well as on new systems
//   linux musl  cargo zigbuild with a dynamically linked C runtime (a Node addon must share Node's)
//   others      cargo build --target (darwin and windows are built on their own runners)
// Usage: node scripts/build-addon.mjs <rust target triple>   (default: this host's)
// zig and cargo-zigbuild come from PyPI (`python3 -m pip install ziglang cargo-zigbuild`):
// the pinned versions are installed when missing. Release builds are stripped (Cargo.toml).
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** Rust target triple -> napi-rs platform name (the suffix of the .node file and of npm/<name>). */
export const TARGETS = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
  'aarch64-apple-darwin': 'darwin-arm64',
  'x86_64-pc-windows-msvc': 'win32-x64-msvc',
}
/** The oldest glibc the linux gnu addons must load on. */
export const GLIBC_FLOOR = '2.28'
/** Pinned PyPI wheels of the zig toolchain and its cargo wrapper. */
export const ZIG_TOOLS = ['ziglang==0.17.0', 'cargo-zigbuild==0.24.0']

function run(cmd, args, env = process.env) {
  console.log(`build-addon: ${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env, shell: process.platform === 'win32' })
  if (r.error) throw new Error(`could not run ${cmd}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} exited with ${r.status ?? r.signal}`)
}

function ensureZig() {
  const have = spawnSync('cargo-zigbuild', ['--version'], { stdio: 'ignore' }).status === 0 && spawnSync('python3', ['-m', 'ziglang', 'version'], { stdio: 'ignore' }).status === 0
  if (!have) run('python3', ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...ZIG_TOOLS])
}

function hostTriple() {
  const out = spawnSync('rustc', ['-vV'], { encoding: 'utf8' }).stdout ?? ''
  return /host: (\S+)/.exec(out)?.[1]
}

/** Builds `triple` and returns the path of the copied `.node`. */
export function buildAddon(triple = hostTriple(), { targetDir = join(root, 'target', 'portable') } = {}) {
  const platform = TARGETS[triple]
  if (!platform) throw new Error(`unknown target ${triple}; known: ${Object.keys(TARGETS).join(', ')}`)
  const env = { ...process.env, CARGO_TARGET_DIR: targetDir }
  if (triple.endsWith('-linux-gnu')) {
    ensureZig()
    run('cargo', ['zigbuild', '--release', '-p', 'athanor-node', '--target', `${triple}.${GLIBC_FLOOR}`], env)
  } else if (triple.endsWith('-linux-musl')) {
    ensureZig()
    env.RUSTFLAGS = `${env.RUSTFLAGS ?? ''} -C target-feature=-crt-static`.trim()
    run('cargo', ['zigbuild', '--release', '-p', 'athanor-node', '--target', triple], env)
  } else {
    run('cargo', ['build', '--release', '-p', 'athanor-node', '--target', triple], env)
  }
  const lib = triple.includes('windows') ? 'athanor_node.dll' : triple.includes('apple') ? 'libathanor_node.dylib' : 'libathanor_node.so'
  const built = join(targetDir, triple, 'release', lib)
  if (!existsSync(built)) throw new Error(`cargo finished but ${built} is missing`)
  const out = join(root, 'native', 'node', `athanor.${platform}.node`)
  copyFileSync(built, out)
  console.log(`build-addon: ${out}`)
  return out
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    buildAddon(process.argv[2])
  } catch (e) {
    console.error(`build-addon: ${e.message}`)
    process.exit(1)
  }
}
