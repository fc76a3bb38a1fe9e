// agents: agent memory's durable saves with history, and full-text search over events,
// against better-sqlite3 implementing the same with the reference schema.
//
// Counts per round (BENCH_QUICK=1 / full):
//   agent_save        2,000 / 20,000 saves over 1,000 agents; ours with 64 in flight
//   fulltext_search   log of 50,000 / 1,000,000 events (12-word texts), 400 / 2,000 queries
//   rounds            5 / 5 for agent_save, 3 / 3 for fulltext_search (BENCH_ROUNDS overrides)
// agent_save: ours is `db.agents.save()` (state record + `athanor.agent.saved` event in one
// durable commit, durability 'full'); the peer is better-sqlite3 (WAL, synchronous = FULL) with
// the reference schema: per save, one transaction that reads the agent row, upserts it with
// version + 1 and inserts a transition row (from/to status, reason, actor, time). better-sqlite3 is
// synchronous, so its saves run one after another; ours run 64 in flight (group commit).
// fulltext_search: the same texts in athanor's log (indexed by db.search.fullText, untimed) and in
// a better-sqlite3 FTS5 table (same tokenizer), queried with the same queries (single words, two
// words, 3-character prefixes, phrases), top 10 by BM25 with a snippet; one query at a time,
// awaited. Both FTS5 tables have the same configuration (unicode61, prefix indexes of 2 and 3
// characters: athanor's). The index is built once per side, untimed; each round runs every
// query once. p95 in ms in the line.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Athanor } from '../dist/index.js';
import { QUICK, emit, fmt, freshDir, interleave, log, median, prng, removeDir, timed } from './_lib.mjs';
import { SQLITE, openSqlite, peerVersions } from './_peers.mjs';

export const description = 'agent saves with history (64 in flight) vs better-sqlite3 reference schema; FTS5 search on a 1M-event log vs better-sqlite3 FTS5';

const SIZES = QUICK
  ? { saves: 2_000, saveRounds: 5, events: 50_000, queries: 400, searchRounds: 3 }
  : { saves: 20_000, saveRounds: 5, events: 1_000_000, queries: 2_000, searchRounds: 3 };
if (process.env.BENCH_ROUNDS) SIZES.saveRounds = SIZES.searchRounds = Math.max(1, Number(process.env.BENCH_ROUNDS) | 0);
// BENCH_AGENTS=fulltext_search runs only the metrics named (comma-separated), e.g. the 1M-event search alone.
const ONLY = process.env.BENCH_AGENTS ? new Set(process.env.BENCH_AGENTS.split(',').map((m) => m.trim())) : undefined;
const CONCURRENCY = 64;
const AGENTS = 1000;
const WARMUP = 20;

function check(cond, what) {
  if (!cond) throw new Error(`bench sanity check failed: ${what}`);
}

const agentOf = (i) => ({ id: 'agent-' + (i % AGENTS), status: ['idle', 'running', 'waiting'][i % 3], metadata: { team: 'team-' + (i % 7) }, data: { step: i, note: 'working on item ' + i } });

// ---------------------------------------------------------------- agent_save

async function oursSaves() {
  const dir = freshDir('agents-ours');
  const db = await Athanor.open(join(dir, 'db'));
  try {
    for (let i = 0; i < WARMUP; i++) await db.agents.save(agentOf(i), { reason: 'tick', actor: 'bench' });
    let next = WARMUP;
    const end = WARMUP + SIZES.saves;
    const worker = async () => {
      while (next < end) await db.agents.save(agentOf(next++), { reason: 'tick', actor: 'bench' });
    };
    const s = await timed(() => Promise.all(Array.from({ length: CONCURRENCY }, worker)));
    check(db.events.lastId === BigInt(end), 'ours: one event per save');
    return SIZES.saves / s;
  } finally {
    await db.close();
    removeDir(dir);
  }
}

const REFERENCE_SCHEMA = `
CREATE TABLE agent_states (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT NOT NULL,
  state_data TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE state_transitions (id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL,
  reason TEXT, actor TEXT, version INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE INDEX state_transitions_agent ON state_transitions (agent_id, at);
`;

async function peerSaves() {
  const dir = freshDir('agents-sqlite');
  const db = openSqlite(join(dir, 'db.sqlite'), SQLITE.durable);
  try {
    db.exec(REFERENCE_SCHEMA);
    const read = db.prepare('SELECT status, version FROM agent_states WHERE id = ?');
    const upsert = db.prepare(
      'INSERT INTO agent_states (id, name, status, metadata, state_data, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?) ' +
        'ON CONFLICT(id) DO UPDATE SET status = excluded.status, metadata = excluded.metadata, state_data = excluded.state_data, version = version + 1, updated_at = excluded.updated_at',
    );
    const transition = db.prepare('INSERT INTO state_transitions (agent_id, from_status, to_status, reason, actor, version, at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const save = db.transaction((a) => {
      const cur = read.get(a.id);
      const now = Date.now();
      upsert.run(a.id, a.id, a.status, JSON.stringify(a.metadata), JSON.stringify(a.data), now, now);
      transition.run(a.id, cur?.status ?? null, a.status, 'tick', 'bench', (cur?.version ?? 0) + 1, now);
    });
    for (let i = 0; i < WARMUP; i++) save(agentOf(i));
    const s = await timed(async () => {
      for (let i = WARMUP; i < WARMUP + SIZES.saves; i++) save(agentOf(i));
    });
    check(db.prepare('SELECT count(*) AS n FROM state_transitions').get().n === WARMUP + SIZES.saves, 'peer: one transition per save');
    return SIZES.saves / s;
  } finally {
    db.close();
    removeDir(dir);
  }
}

async function agentSave() {
  const rates = await interleave('agent_save', SIZES.saveRounds, { ours: oursSaves, [SQLITE.label]: peerSaves });
  emit('agents.agent_save', 'saves/s', 'higher', median(rates.ours), SQLITE.label, median(rates[SQLITE.label]), { inFlight: CONCURRENCY, peerInFlight: 1 });
}

// ---------------------------------------------------------------- fulltext_search

/** A fixed vocabulary with Zipf-like frequencies, and texts of 12 words drawn from it. */
function corpus(n) {
  const rnd = prng(7);
  const syll = ['ka', 'lo', 'mi', 'ta', 're', 'su', 'no', 'vi', 'de', 'pa', 'go', 'ri', 'xe', 'bu', 'fa', 'zo'];
  const vocab = [];
  for (let i = 0; i < 5000; i++) {
    let w = '';
    let x = i + 17;
    for (let k = 0; k < 3; k++) {
      w += syll[x % syll.length];
      x = Math.floor(x / syll.length) + 3 * k + 1;
    }
    vocab.push(w + (i % 10));
  }
  const word = () => vocab[Math.min(vocab.length - 1, Math.floor(Math.pow(rnd(), 2.2) * vocab.length))];
  const texts = new Array(n);
  for (let i = 0; i < n; i++) {
    const ws = [];
    for (let k = 0; k < 12; k++) ws.push(word());
    texts[i] = ws.join(' ');
  }
  const qr = prng(11);
  const queries = [];
  for (let i = 0; i < SIZES.queries; i++) {
    const t = texts[Math.floor(qr() * n)].split(' ');
    const a = t[Math.floor(qr() * 6)];
    const b = t[6 + Math.floor(qr() * 5)];
    const kind = i % 4;
    queries.push(kind === 0 ? a : kind === 1 ? `${a} ${b}` : kind === 2 ? `${a.slice(0, 3)}*` : `"${t[3]} ${t[4]}"`);
  }
  return { texts, queries };
}

/** The sizes of the files under `dir` whose names match `re` (MiB), for the log. */
function sizes(dir, re) {
  const files = readdirSync(dir, { recursive: true }).map(String).filter((f) => re.test(f));
  return files.map((f) => `${f} ${(statSync(join(dir, f)).size / 2 ** 20).toFixed(1)} MiB`).join(', ');
}

function p95(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))];
}

async function fulltextSearch() {
  const { texts, queries } = corpus(SIZES.events);
  // ours: the log written in batches, the index built by its projection (untimed).
  const oursDir = freshDir('agents-fts-ours');
  const db = await Athanor.open(join(oursDir, 'db'), { durability: 'batched' });
  const peerDir = freshDir('agents-fts-sqlite');
  const peer = openSqlite(join(peerDir, 'db.sqlite'), SQLITE.projection);
  try {
    let t0 = performance.now();
    for (let start = 0; start < texts.length; start += 10_000) {
      await db.transaction().execute((tx) => {
        for (let i = start; i < Math.min(texts.length, start + 10_000); i++) tx.log('note', { text: texts[i] });
      });
    }
    await db.flush();
    const written = performance.now();
    const fts = db.search.fullText({ on: { note: { fields: '$.text' } } });
    await fts.catchUp();
    log(`  fulltext: ours wrote ${fmt(texts.length)} events in ${((written - t0) / 1000).toFixed(1)} s and indexed them in ${((performance.now() - written) / 1000).toFixed(1)} s; ${sizes(join(oursDir, 'db'), /projection\.db/)}`);
    t0 = performance.now();
    peer.exec("CREATE VIRTUAL TABLE notes USING fts5(body, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')");
    const ins = peer.prepare('INSERT INTO notes (rowid, body) VALUES (?, ?)');
    for (let start = 0; start < texts.length; start += 5_000) {
      peer.transaction(() => {
        for (let i = start; i < Math.min(texts.length, start + 5_000); i++) ins.run(i + 1, texts[i]);
      })();
    }
    log(`  fulltext: better-sqlite3 indexed ${fmt(texts.length)} texts in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${sizes(peerDir, /db\.sqlite/)}`);
    const search = peer.prepare("SELECT rowid, -bm25(notes) AS score, snippet(notes, 0, '<b>', '</b>', '…', 12) AS snippet FROM notes WHERE notes MATCH ? ORDER BY rank LIMIT 10");
    // Both sides must find the same events.
    for (const q of queries.slice(0, 50)) {
      const a = (await fts.search(q, { limit: 10 })).map((h) => Number(h.eventId)).sort();
      const b = search.all(q).map((r) => r.rowid).sort();
      check(JSON.stringify(a) === JSON.stringify(b), `same hits for ${q}`);
    }
    // One untimed pass of every query per side: each side's page cache and JIT warm (the
    // peer's connection wrote its table and holds its pages; ours was written by the
    // projection's connection, so db.sql reads its pages for the first time here).
    for (const q of queries) {
      await fts.search(q, { limit: 10 });
      search.all(q);
    }
    const lat = { ours: [], [SQLITE.label]: [] };
    const rates = await interleave('fulltext_search', SIZES.searchRounds, {
      ours: async () => {
        let hits = 0;
        const s = await timed(async () => {
          for (const q of queries) {
            const t = performance.now();
            hits += (await fts.search(q, { limit: 10 })).length;
            lat.ours.push(performance.now() - t);
          }
        });
        check(hits > 0, 'ours found something');
        return queries.length / s;
      },
      [SQLITE.label]: async () => {
        let hits = 0;
        const s = await timed(async () => {
          for (const q of queries) {
            const t = performance.now();
            hits += search.all(q).length;
            lat[SQLITE.label].push(performance.now() - t);
          }
        });
        check(hits > 0, 'peer found something');
        return queries.length / s;
      },
    });
    const extra = { events: texts.length, queries: queries.length };
    emit('agents.fulltext_search', 'queries/s', 'higher', median(rates.ours), SQLITE.label, median(rates[SQLITE.label]), { ...extra, p95Ms: Number(p95(lat.ours).toFixed(3)), peerP95Ms: Number(p95(lat[SQLITE.label]).toFixed(3)) });
    emit('agents.fulltext_search_p95', 'ms', 'lower', p95(lat.ours), SQLITE.label, p95(lat[SQLITE.label]), extra);
  } finally {
    await db.close();
    peer.close();
    removeDir(oursDir);
    removeDir(peerDir);
  }
}

export async function run() {
  log(`peers: ${peerVersions()}`);
  log(`agents: ${QUICK ? 'QUICK' : 'full'} mode; agent_save ${fmt(SIZES.saves)} saves x${SIZES.saveRounds} rounds; fulltext_search ${fmt(SIZES.events)} events, ${fmt(SIZES.queries)} queries x${SIZES.searchRounds} rounds`);
  if (ONLY === undefined || ONLY.has('agent_save')) await agentSave();
  if (ONLY === undefined || ONLY.has('fulltext_search')) await fulltextSearch();
}
