#!/usr/bin/env node
// Bench dispatcher: `npm run bench -- <group> [<group>...]` runs bench/<group>.mjs
// (its exported `run()`); with no group, lists the groups. Each metric prints one
// JSON line to stdout; progress goes to stderr. BENCH_QUICK=1 shrinks every group.
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const groups = readdirSync(here)
  .filter((f) => f.endsWith('.mjs') && f !== 'run.mjs' && !f.startsWith('_'))
  .map((f) => f.slice(0, -'.mjs'.length))
  .sort();

const load = (g) => import(pathToFileURL(`${here}/${g}.mjs`).href);

const wanted = process.argv.slice(2);
if (wanted.length === 0) {
  console.log('usage: npm run bench -- <group> [<group>...]   (BENCH_QUICK=1 for a short run)\ngroups:');
  for (const g of groups) console.log(`  ${g.padEnd(12)} ${(await load(g)).description ?? ''}`);
  process.exit(0);
}
const unknown = wanted.filter((g) => !groups.includes(g));
if (unknown.length > 0) {
  console.error(`unknown bench group(s): ${unknown.join(', ')}; available: ${groups.join(', ')}`);
  process.exit(2);
}
if (typeof globalThis.gc !== 'function') console.error('note: run with --expose-gc (npm run bench does) for steadier numbers');

for (const g of wanted) {
  const t0 = performance.now();
  await (await load(g)).run();
  console.error(`${g}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
