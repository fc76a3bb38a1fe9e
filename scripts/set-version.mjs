#!/usr/bin/env node
// The one place a release version is set. package.json's `version` is the source; this writes it
// to every platform package (npm/*/package.json), the Cargo workspace and package-lock.json.
//   node scripts/set-version.mjs 1.2.3          set the version everywhere
//   node scripts/set-version.mjs --check [v]    exit 1 unless every file agrees (with v, if given)
//   node scripts/set-version.mjs --repository <url>   set `repository` in every package (release)
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'))
const writeJson = (p, v) => writeFileSync(p, JSON.stringify(v, null, 2) + '\n')

const packages = [join(root, 'package.json'), ...readdirSync(join(root, 'npm')).map((d) => join(root, 'npm', d, 'package.json'))]
const cargoToml = join(root, 'Cargo.toml')
const lock = join(root, 'package-lock.json')
const CARGO_VERSION = /^(\[workspace\.package\][^[]*?\nversion = ")([^"]+)(")/m

/** Every place a version is written, and what it says. */
export function versions() {
  const out = packages.map((p) => [p.slice(root.length + 1), readJson(p).version])
  out.push(['Cargo.toml [workspace.package]', CARGO_VERSION.exec(readFileSync(cargoToml, 'utf8'))?.[2]])
  const l = readJson(lock)
  out.push(['package-lock.json', l.version], ['package-lock.json packages[""]', l.packages?.['']?.version])
  return out
}

function setVersion(v) {
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(v)) throw new Error(`not a semver version: ${v}`)
  for (const p of packages) writeJson(p, { ...readJson(p), version: v })
  writeFileSync(cargoToml, readFileSync(cargoToml, 'utf8').replace(CARGO_VERSION, `$1${v}$3`))
  const l = readJson(lock)
  l.version = v
  if (l.packages?.['']) l.packages[''].version = v
  writeJson(lock, l)
}

const [flag, arg] = process.argv.slice(2)
try {
  if (flag === '--check') {
    const all = versions()
    const want = arg ?? all[0][1]
    const wrong = all.filter(([, v]) => v !== want)
    for (const [where, v] of wrong) console.error(`set-version: ${where} says ${v}, expected ${want}`)
    process.exit(wrong.length ? 1 : 0)
  } else if (flag === '--repository') {
    if (!arg) throw new Error('--repository needs a URL')
    for (const p of packages) writeJson(p, { ...readJson(p), repository: { type: 'git', url: `git+${arg.replace(/\.git$/, '')}.git` } })
  } else if (flag && !flag.startsWith('-')) {
    setVersion(flag)
    console.log(`set-version: ${flag} in ${versions().length} places (Cargo.lock follows at the next cargo build)`)
  } else {
    console.error('usage: set-version.mjs <version> | --check [version] | --repository <url>')
    process.exit(2)
  }
} catch (e) {
  console.error(`set-version: ${e.message}`)
  process.exit(1)
}
