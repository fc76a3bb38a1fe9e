// Memory probe for bench/vector.mjs, run in a fresh process per side:
//   node bench/_vector_memory.mjs <athanor|usearch|hnswlib-node> <path> <dim>
// Prints {"bytes": resident bytes added by loading the index, "anon"/"file": the anonymous and
// file-backed (mapped files, e.g. LMDB pages) parts of it, "count": vectors loaded}.
// The module is imported before the baseline is taken, so only the loaded index counts.
import { readFileSync } from 'node:fs';

const [side, path, dimArg] = process.argv.slice(2);
const dim = Number(dimArg);

function settle() {
  if (typeof globalThis.gc === 'function') globalThis.gc();
  return new Promise((r) => setTimeout(r, 200));
}

let count;
let load;
if (side === 'athanor') {
  const { Athanor } = await import('../dist/index.js');
  load = async () => {
    const db = await Athanor.open(path);
    const col = db.vectors.open('bench');
    await col.waitIndexed(); // loaded from its dump, or rebuilt from the stored documents
    count = col.count();
    return db;
  };
} else if (side === 'hnswlib-node') {
  const { default: hnswlib } = await import('hnswlib-node');
  load = async () => {
    const index = new hnswlib.HierarchicalNSW('cosine', dim);
    index.readIndexSync(path);
    count = index.getCurrentCount();
    return index;
  };
} else if (side === 'usearch') {
  const { default: usearch } = await import('usearch');
  const { USEARCH } = await import('./_peers.mjs');
  load = async () => {
    const index = new usearch.Index(USEARCH.config(dim, 16, 200, 64)); // the file's own graph parameters win
    index.load(path);
    count = index.size();
    return index;
  };
} else {
  throw new Error(`unknown side ${side}`);
}

/** Resident anonymous and file-backed bytes (Linux; zeros elsewhere): mapped files count in RSS too. */
function rssParts() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { anon: kb('RssAnon'), file: kb('RssFile') };
  } catch {
    return { anon: 0, file: 0 };
  }
}

await settle();
const before = process.memoryUsage().rss;
const partsBefore = rssParts();
const handle = await load();
await settle();
const after = process.memoryUsage().rss;
const partsAfter = rssParts();
process.stdout.write(
  JSON.stringify({ bytes: after - before, anon: partsAfter.anon - partsBefore.anon, file: partsAfter.file - partsBefore.file, count }) + '\n',
);
if (handle && typeof handle.close === 'function') await handle.close();
