#!/usr/bin/env node
// Builds the CommonJS entry (`require('athanor')`) from the ESM build in dist/:
//   dist/index.cjs  one CommonJS bundle of dist/index.js (esbuild), beside the ESM files so its
//                   relative paths (the addon loader, package.json) resolve the same way
//   dist/cjs/       the declaration files again, in a folder marked "type": "commonjs", so
//                   TypeScript types `require('athanor')` as CommonJS
// The addon's loader stays external (it picks the platform's .node file at run time).
// Both builds share the process-wide native engine, so a program that both imports and
// requires athanor still opens each directory once.
import { build } from 'esbuild'
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const dist = join(root, 'dist')

await build({
  entryPoints: [join(dist, 'index.js')],
  outfile: join(dist, 'index.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
  // Dependencies (croner) are required from node_modules; the addon's loader and
  // package.json are resolved at run time relative to dist/, exactly as the ESM build does.
  packages: 'external',
  external: ['../native/node/binding.cjs', '../package.json'],
  // `import.meta.url` has no CommonJS meaning; the bundle's own file URL is what the ESM files use it for.
  define: { 'import.meta.url': '__athanorFileUrl' },
  banner: { js: "const __athanorFileUrl = require('node:url').pathToFileURL(__filename).href;" },
})

const cjsTypes = join(dist, 'cjs')
rmSync(cjsTypes, { recursive: true, force: true })
mkdirSync(cjsTypes, { recursive: true })
writeFileSync(join(cjsTypes, 'package.json'), '{ "type": "commonjs" }\n')
for (const name of readdirSync(dist, { recursive: true })) {
  const from = join(dist, name)
  if (!name.endsWith('.d.ts') || name.startsWith('cjs') || !statSync(from).isFile()) continue
  // One folder deeper: the only path leaving dist/ is the addon's typings (from dist/internal/).
  const text = readFileSync(from, 'utf8').replace(/'((?:\.\.\/)+)native\/node\//g, "'../$1native/node/")
  mkdirSync(dirname(join(cjsTypes, name)), { recursive: true })
  writeFileSync(join(cjsTypes, name), text)
}
console.log(`build-cjs: ${relative(root, join(dist, 'index.cjs'))} and ${relative(root, cjsTypes)}/`)
