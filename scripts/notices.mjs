#!/usr/bin/env node
// Writes THIRD_PARTY_NOTICES.md: the licences of everything compiled into the native addon.
// The Rust dependency tree comes from cargo-about (about.toml, about.hbs). Two C libraries are
// vendored inside crates and carry their own terms, appended from the sources cargo fetched:
// LMDB (OpenLDAP Public License, whose clause 2 requires the notice in binary redistributions,
// through lmdb-master-sys) and SQLite (public domain, through libsqlite3-sys's bundled build).
//   npm run notices            regenerate
//   npm run notices -- --check exit 1 when the committed file is not what would be generated
// Needs cargo-about (`cargo install cargo-about --locked`).
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(root, 'THIRD_PARTY_NOTICES.md')

function cargo(args) {
  const r = spawnSync('cargo', args, { cwd: root, encoding: 'utf8', maxBuffer: 256 * 2 ** 20 })
  if (r.error || r.status !== 0) {
    const why = r.error?.message ?? r.stderr
    if (args[0] === 'about' && /no such (sub)?command/i.test(why)) throw new Error('cargo-about is not installed: cargo install cargo-about --locked')
    throw new Error(`cargo ${args.join(' ')} failed: ${why}`)
  }
  return r.stdout
}

/** The source folder cargo unpacked for a package of the addon's dependency tree. */
function sourceOf(name) {
  const meta = JSON.parse(cargo(['metadata', '--format-version', '1', '--manifest-path', 'native/node/Cargo.toml']))
  const pkg = meta.packages.find((p) => p.name === name)
  if (!pkg) throw new Error(`${name} is not in the dependency tree`)
  return dirname(pkg.manifest_path)
}

function generate() {
  let text = cargo(['about', 'generate', '--fail', '-c', 'about.toml', '-m', 'native/node/Cargo.toml', 'about.hbs'])
  const lmdb = join(sourceOf('lmdb-master-sys'), 'lmdb', 'libraries', 'liblmdb')
  text +=
    '## LMDB (OpenLDAP Public License 2.8)\n\nVendored by lmdb-master-sys and compiled into the addon.\n\n```\n' +
    readFileSync(join(lmdb, 'COPYRIGHT'), 'utf8').trim() +
    '\n\n' +
    readFileSync(join(lmdb, 'LICENSE'), 'utf8').trim() +
    '\n```\n\n'
  const sqliteDir = join(sourceOf('libsqlite3-sys'), 'sqlite3')
  if (!existsSync(join(sqliteDir, 'sqlite3.c'))) throw new Error(`no bundled SQLite in ${sqliteDir}`)
  const version = /#define SQLITE_VERSION\s+"([^"]+)"/.exec(readFileSync(join(sqliteDir, 'sqlite3.h'), 'utf8'))?.[1] ?? 'unknown'
  text +=
    `## SQLite ${version} (public domain)\n\nBundled by libsqlite3-sys and compiled into the addon. From its source:\n\n` +
    '```\nThe author disclaims copyright to this source code. In place of a legal notice, here is a blessing:\n\n' +
    '    May you do good and not evil.\n    May you find forgiveness for yourself and forgive others.\n    May you share freely, never taking more than you give.\n```\n'
  return text.replace(/[ \t]+$/gm, '')
}

try {
  const text = generate()
  if (process.argv.includes('--check')) {
    const current = existsSync(out) ? readFileSync(out, 'utf8') : ''
    if (current !== text) {
      console.error('notices: THIRD_PARTY_NOTICES.md is out of date: run `npm run notices` and commit it')
      process.exit(1)
    }
    console.log('notices: up to date')
  } else {
    writeFileSync(out, text)
    console.log(`notices: wrote ${out} (${text.length} bytes)`)
  }
} catch (e) {
  console.error(`notices: ${e.message}`)
  process.exit(1)
}
