/**
 * `db.search`: full-text search over events with SQLite FTS5 (BM25 ranking, snippets,
 * prefix and phrase queries), kept by a built-in declarative projection exactly once,
 * and hybrid search fusing it with a text collection's vector search by reciprocal
 * rank fusion.
 */
import { AthanorError, InvalidArgumentError, SqlError } from '../errors.js';
import type { Json } from '../state/codec.js';
import type { Processor } from '../processing/processor.js';
import type { Statement } from '../sql/sql.js';
import type { VectorCollection } from '../vectors/collection.js';
import type { MetadataFilter } from '../vectors/types.js';
import { checkFilter, matchesFilter } from './filter.js';
import type { Memory } from './host.js';
import { checkNamespace } from './keys.js';
import { EV, FULLTEXT_DROP_OLD, FULLTEXT_SCHEMA, TAG_MARK, fullTextSpec, isCurrentFullTextTable, type CompiledTextRule } from './schema.js';

/** How the events of one type are indexed. Paths are JSON paths into the payload (`'$.title'`). */
export interface TextRule {
  /** The payload fields whose text is indexed (joined by a newline). */
  fields: string | readonly string[];
  /** Path of the namespace the event belongs to (default: the default namespace). */
  namespace?: string;
  /** Path of the session id, for `search(q, { sessionId })`. */
  sessionId?: string;
  /** Path of a document id: a newer event of the same document replaces its text (hybrid search joins on it). */
  id?: string;
  /** This type deletes the document named by `id` from the index. */
  delete?: boolean;
}

/** The configuration of the full-text index. */
export interface FullTextSpec {
  /** Event type → how to index it. */
  on?: { readonly [eventType: string]: TextRule };
  /** Index session events' `content` (`db.sessions.append`), default true. */
  sessionEvents?: boolean;
}

/** Options of {@link FullTextIndex.search}. */
export interface TextSearchOptions {
  /** Only events of these types. */
  types?: readonly string[];
  /** Only events of this session. */
  sessionId?: string;
  /** At most this many hits (1..10000, default 20). */
  limit?: number;
  /** Marks around matched terms in snippets (default `['<b>', '</b>']`). */
  highlight?: readonly [string, string];
  /** Tokens of context in a snippet (1..64, default 12). */
  snippetTokens?: number;
}

/** One full-text hit. */
export interface TextHit {
  /** The event that holds the text. */
  eventId: bigint;
  /** Its type. */
  type: string;
  /** Its session, when the rule names one. */
  sessionId: string | null;
  /** Its document id, when the rule names one. */
  docId: string | null;
  /** BM25 relevance, higher is better (SQLite's bm25() negated). */
  score: number;
  /** The best-matching passage with matched terms highlighted. */
  snippet: string;
}

/** The weights of hybrid search's two rankings (0 turns one off). */
export interface HybridWeights {
  /** Weight of the BM25 ranking (default 1). */
  text?: number;
  /** Weight of the vector ranking (default 1). */
  vector?: number;
}

/** Where one source of a hybrid search ranked a document. */
export interface SourceRank {
  /** 1-based rank in that source's ranking (after the filter). */
  rank: number;
  /** That source's score: BM25 (higher is better) or the vector similarity. */
  score: number;
}

/** Options of {@link FullTextIndex.searchHybrid}. */
export interface HybridSearchOptions {
  /** The text collection whose documents the index's `id` rule names (the same ids). */
  collection: VectorCollection<unknown>;
  /** Results (1..1000, default 10). */
  k?: number;
  /** Metadata filter, applied to both rankings (on the collection's metadata). */
  filter?: MetadataFilter;
  /** Weights of the two rankings in the fusion (default 1 each). */
  weights?: HybridWeights;
  /** Candidates taken from each ranking before fusing (default max(50, 4k)). */
  candidates?: number;
  /** The full-text query in FTS5 syntax (default: any of the query's words). */
  textQuery?: string;
}

/** One hybrid hit: the fused score and each source's rank and score. */
export interface HybridHit {
  /** Document id. */
  id: string;
  /** Reciprocal rank fusion score: sum of weight / (60 + rank). */
  score: number;
  /** Its full-text rank (1-based) and BM25 score, or null when full-text did not find it. */
  text: SourceRank | null;
  /** Its vector rank (1-based) and similarity, or null when vector search did not find it. */
  vector: SourceRank | null;
  /** The document's metadata in the collection. */
  metadata: Json | undefined;
}

/** Reciprocal rank fusion's constant (Cormack et al.): damps the head of each ranking. */
const RRF_K = 60;

/** How many prepared search statements a handle keeps (filters x limits in use). */
const STATEMENTS_KEPT = 32;

/** How many searches of a namespace skip the top-k statement after it missed once. */
const TOP_K_SKIPS = 64;

/**
 * Log size per requested hit from which single-term searches take the top-k statement
 * (100,000 events for a top 10). Its cost is one BM25 per match plus a MATCH cursor
 * positioned on each hit; FTS5's rank plan computes two BM25 per match but carries the
 * hits' positions in its sorter. So the saving grows with the matches (with the log) and
 * the extra cost with the limit. Measured on the bench's corpus with a limit of 10 (CPU
 * time per query, word / prefix): top-k 17 % slower / 3 % faster at 50,000 events, 6 % /
 * 13 % faster at 200,000.
 */
const TOP_K_EVENTS_PER_HIT = 10_000n;

/**
 * A query of one bare word or prefix (`word`, `wor*`): it matches every row holding the
 * term, often many, where the top-k statement pays off. Phrases and AND, OR, NOT or NEAR
 * queries narrow the matches, and keep FTS5's rank plan.
 */
const SINGLE_TERM = /^\s*[\p{L}\p{N}_]+\*?\s*$/u;

/** The index shared by every namespace view of one handle. @internal */
export class FullTextShared {
  readonly #mem: Memory;
  #rules: Map<string, CompiledTextRule> | undefined;
  #config = '';
  #processor: Processor | undefined;
  #catching: Promise<unknown> = Promise.resolve();
  /** Whether the stored rules were compared with this handle's (once per handle). */
  #checked = false;
  /** The log's head when the last catch-up began: the index holds at least that much. */
  #caughtUpTo = -1n;
  /**
   * Prepared search statements by SQL text, the oldest finalized beyond
   * {@link STATEMENTS_KEPT}: kept here, not in db.sql's shared cache, where one statement
   * per limit a caller uses would push out the application's own.
   */
  readonly #statements = new Map<string, Statement<unknown>>();

  /**
   * Per namespace, how many more searches skip the top-k path after one of its best rows
   * belonged to another namespace (the search then ran twice): where namespaces share
   * the index, most searches go straight to the filtering statement.
   */
  readonly #topKSkips = new Map<string, number>();

  constructor(mem: Memory) {
    this.#mem = mem;
  }

  /** Whether a search of namespace `ns` for `limit` hits should try the top-k statement first. */
  tryTopK(ns: string, limit: number): boolean {
    if (this.#caughtUpTo < BigInt(limit) * TOP_K_EVENTS_PER_HIT) return false;
    const skips = this.#topKSkips.get(ns);
    if (skips === undefined) return true;
    if (skips <= 1) this.#topKSkips.delete(ns);
    else this.#topKSkips.set(ns, skips - 1);
    return false;
  }

  /** Records that the top-k statement of `ns` held other namespaces' rows. */
  topKMissed(ns: string): void {
    if (this.#topKSkips.size >= 1024) this.#topKSkips.clear();
    this.#topKSkips.set(ns, TOP_K_SKIPS);
  }

  /** The prepared statement of `sql` (one of search's). */
  statement<R>(sql: string): Statement<R> {
    let s = this.#statements.get(sql);
    if (s === undefined) {
      s = this.#mem.host.sql.prepare(sql);
      if (this.#statements.size >= STATEMENTS_KEPT) {
        const [oldest, stmt] = this.#statements.entries().next().value!;
        this.#statements.delete(oldest);
        stmt.finalize();
      }
      this.#statements.set(sql, s);
    }
    return s as Statement<R>;
  }

  configure(spec: FullTextSpec | undefined): void {
    const rules = compile(spec);
    const config = JSON.stringify([...rules]);
    if (this.#rules !== undefined) {
      if (spec === undefined || config === this.#config) return;
      throw new InvalidArgumentError('the full-text index of this handle is already configured differently; open the database again to change its rules (the index is then rebuilt from the log)');
    }
    this.#rules = rules;
    this.#config = config;
  }

  get processor(): Processor {
    this.#mem.host.assertOpen();
    if (this.#rules === undefined) this.configure(undefined);
    if (this.#processor === undefined) {
      const sql = this.#mem.host.sql;
      const existing = sql.get<{ sql: string }>("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'athanor_fts'")?.sql;
      // Without its stored rules, ready() rebuilds the new table from the log.
      if (existing !== undefined && !isCurrentFullTextTable(existing)) sql.exec(FULLTEXT_DROP_OLD);
      sql.exec(FULLTEXT_SCHEMA);
      this.#processor = this.#mem.host.projection(fullTextSpec(this.#rules!));
    }
    return this.#processor;
  }

  /**
   * Whether the index already holds every event of the log, so a search need not wait
   * (the common case: no commit since the last search). Cheap: one read of the log's head.
   */
  current(): boolean {
    return this.#checked && this.#processor !== undefined && this.#mem.host.head() <= this.#caughtUpTo;
  }

  /** Catches the index up; a changed configuration rebuilds it from the log first. */
  async ready(): Promise<void> {
    const p = this.processor;
    const run = this.#catching.then(async () => {
      const head = this.#mem.host.head();
      if (!this.#checked) {
        const sql = this.#mem.host.sql;
        const stored = sql.get<{ spec: string }>('SELECT spec FROM athanor_fulltext_spec WHERE id = 1')?.spec;
        if (stored !== this.#config) {
          await p.rebuild();
          sql.run('INSERT OR REPLACE INTO athanor_fulltext_spec (id, spec) VALUES (1, ?)', [this.#config]);
        }
        this.#checked = true;
      }
      await p.catchUp();
      if (head > this.#caughtUpTo) this.#caughtUpTo = head;
    });
    this.#catching = run.catch(() => undefined);
    await run;
  }
}

function compile(spec: FullTextSpec | undefined): Map<string, CompiledTextRule> {
  if (spec !== undefined && (spec === null || typeof spec !== 'object')) throw new InvalidArgumentError('fullText() takes { on: { eventType: { fields, namespace, sessionId, id } }, sessionEvents }');
  for (const k of Object.keys(spec ?? {})) if (k !== 'on' && k !== 'sessionEvents') throw new InvalidArgumentError(`unknown fullText() option ${JSON.stringify(k)}; expected on, sessionEvents`);
  const rules = new Map<string, CompiledTextRule>();
  if (spec?.sessionEvents !== false) rules.set(EV.sessionEvent, { fields: ['$.content'], namespace: '$.ns', sessionId: '$.sessionId' });
  const path = (p: unknown, what: string): string => {
    if (typeof p !== 'string' || !p.startsWith('$')) throw new InvalidArgumentError(`${what} must be a JSON path like '$.title', got ${JSON.stringify(p)}`);
    return p;
  };
  for (const [type, r] of Object.entries(spec?.on ?? {})) {
    if (type.startsWith('athanor.')) throw new InvalidArgumentError(`event type ${JSON.stringify(type)} is athanor's own; index session events with sessionEvents: true`);
    if (r === null || typeof r !== 'object') throw new InvalidArgumentError(`the rule of ${JSON.stringify(type)} must be an object { fields, namespace, sessionId, id, delete }`);
    for (const k of Object.keys(r)) if (!['fields', 'namespace', 'sessionId', 'id', 'delete'].includes(k)) throw new InvalidArgumentError(`unknown key ${JSON.stringify(k)} in the rule of ${JSON.stringify(type)}; expected fields, namespace, sessionId, id, delete`);
    const del = r.delete === true;
    const fields = del ? [] : (typeof r.fields === 'string' ? [r.fields] : [...(r.fields ?? [])]).map((f) => path(f, `a field of ${JSON.stringify(type)}`));
    if (!del && fields.length === 0) throw new InvalidArgumentError(`the rule of ${JSON.stringify(type)} needs fields: the JSON paths of the text to index`);
    if (del && r.id === undefined) throw new InvalidArgumentError(`the delete rule of ${JSON.stringify(type)} needs id: the path of the document to remove`);
    const c: CompiledTextRule = { fields };
    if (r.namespace !== undefined) c.namespace = path(r.namespace, 'namespace');
    if (r.sessionId !== undefined) c.sessionId = path(r.sessionId, 'sessionId');
    if (r.id !== undefined) c.id = path(r.id, 'id');
    if (del) c.delete = true;
    rules.set(type, c);
  }
  return rules;
}

/** Turns free text into an FTS5 query that any of its words satisfies (each word quoted, so no word is read as syntax). */
export function anyWords(text: string): string {
  const words = text.match(/[\p{L}\p{N}_]+/gu) ?? [];
  return [...new Set(words.map((w) => w.toLowerCase()))].map((w) => `"${w}"`).join(' OR ');
}

const UTF8 = new TextEncoder();

/** The hex of a string's UTF-8, as SQLite's `hex()` writes it for a TEXT value (case is folded by the tokenizer). */
function utf8Hex(text: string): string {
  let hex = '';
  for (const b of UTF8.encode(text)) hex += (b < 16 ? '0' : '') + b.toString(16);
  return hex;
}

/**
 * The MATCH text of a search: the user's query as written (a plain FTS5 query over
 * `body`, the one column user words can match), and with a session, its exact tag token
 * in `tags` (see FULLTEXT_SCHEMA), so FTS5 ranks only that session's matches. A query
 * holding the tag mark itself is confined to `body`, so that it cannot match tags.
 */
function matchText(query: string, sessionId: string | undefined): string {
  const text = query.includes(TAG_MARK) ? `body : (${query})` : query;
  if (sessionId === undefined || sessionId.length === 0) return text;
  return `(${text}) AND tags : "${TAG_MARK}${utf8Hex(sessionId)}"`;
}

/** BM25 on `body` alone: a session's tag phrase must not move hits (it matches every candidate, with a length-dependent score). */
const BODY_RANK = "rank MATCH 'bm25(1.0, 0.0)'";

/** The SELECT of search() for each combination of filters and limit, built once. */
const searchSql = new Map<string, string>();

/**
 * The statement of a search. The limit is a literal (a checked integer), not a parameter:
 * SQLite then knows it when planning, and FTS5 ranks with a bounded sort (about 3% faster
 * per query on a 50,000-event index than `LIMIT ?`, with the same hits).
 */
function searchStatement(typeCount: number, bySession: boolean, limit: number): string {
  const key = `${typeCount}/${bySession ? 1 : 0}/${limit}`;
  let sql = searchSql.get(key);
  if (sql === undefined) {
    const where = ['athanor_fts MATCH ?', 'ns = ?'];
    if (typeCount > 0) where.push(`type IN (${new Array<string>(typeCount).fill('?').join(', ')})`);
    if (bySession) where.push('session_id = ?', BODY_RANK);
    sql = `SELECT rowid AS event_id, type, session_id, doc_id, -bm25(athanor_fts, 1.0, 0.0) AS score, snippet(athanor_fts, 0, ?, ?, '…', ?) AS snippet FROM athanor_fts WHERE ${where.join(' AND ')} ORDER BY rank LIMIT ${limit}`;
    if (searchSql.size < 1024) searchSql.set(key, sql);
  }
  return sql;
}

/** The SELECT of search()'s top-k path for each limit, built once. */
const topKSql = new Map<number, string>();

/**
 * The statement of a search that takes the best `limit` hits in one pass and then reads
 * only those. FTS5's own `ORDER BY rank` plan prepares an inner statement per query,
 * computes BM25 twice per match, sorts every match and recomputes BM25 (its corpus
 * statistics included) for the score column; here SQLite keeps a bounded top-k of one
 * BM25 per match, then positions a MATCH cursor on each of the `limit` rows for its
 * snippet and attributes. Ties are broken by event id. Each hit's namespace is returned
 * for the caller to check: a condition on an UNINDEXED column in the inner query would
 * read every match's row.
 */
function topKStatement(limit: number): string {
  let sql = topKSql.get(limit);
  if (sql === undefined) {
    sql =
      'SELECT t.id AS event_id, f.ns AS ns, f.type AS type, f.session_id AS session_id, f.doc_id AS doc_id, -t.s AS score, ' +
      "snippet(f.athanor_fts, 0, ?2, ?3, '…', ?4) AS snippet " +
      `FROM (SELECT rowid AS id, bm25(athanor_fts, 1.0, 0.0) AS s FROM athanor_fts WHERE athanor_fts MATCH ?1 ORDER BY s, rowid LIMIT ${limit}) AS t ` +
      'CROSS JOIN athanor_fts AS f ON f.rowid = t.id WHERE f.athanor_fts MATCH ?1 ORDER BY t.s, t.id';
    if (topKSql.size < 1024) topKSql.set(limit, sql);
  }
  return sql;
}

function fixHint(query: string, e: unknown): InvalidArgumentError {
  const raw = e instanceof Error ? e.message : String(e);
  return new InvalidArgumentError(
    `the full-text query ${JSON.stringify(query)} is not valid FTS5 syntax (${raw.replace(/^SQLite: /, '').replace(/^fts5: /, '').replace(/; fix the SQL text.*$/s, '')}). ` +
      'Quote words that contain punctuation or operators ("e-mail", "c++", "a:b"), close every quote and parenthesis, put AND/OR/NOT between terms, ' +
      'and use word* for a prefix or "two words" for a phrase; or pass plain words through anyWords()',
    { cause: e },
  );
}

interface HitRow {
  event_id: number | bigint;
  ns?: string;
  type: string;
  session_id: string | null;
  doc_id: string | null;
  score: number;
  snippet: string;
}

function toHit(r: HitRow): TextHit {
  return { eventId: BigInt(r.event_id), type: r.type, sessionId: r.session_id, docId: r.doc_id, score: r.score, snippet: r.snippet };
}

/** Full-text search of one namespace. */
export class FullTextIndex {
  readonly #mem: Memory;
  readonly #shared: FullTextShared;
  /** The namespace searched (`''`: the default one). */
  readonly namespaceName: string;

  /** @internal */
  constructor(mem: Memory, shared: FullTextShared, ns: string) {
    this.#mem = mem;
    this.#shared = shared;
    this.namespaceName = ns;
  }

  /** The projection that keeps the index (`catchUp`, `run`, `rebuild`, `lag`, `deadLetters`). */
  get processor(): Processor {
    return this.#shared.processor;
  }

  /** Brings the index up to the newest event (searches do this themselves). */
  async catchUp(): Promise<void> {
    await this.#shared.ready();
  }

  /**
   * Searches the indexed text with an FTS5 query: words (all must match), `OR`, `NOT`,
   * `"a phrase"`, `prefix*`, `NEAR(a b, 5)`. Hits are ranked by BM25, best first, each
   * with a highlighted snippet. A query FTS5 cannot parse is `ERR_INVALID_ARGUMENT`
   * with how to fix it.
   */
  async search(query: string, options: TextSearchOptions = {}): Promise<TextHit[]> {
    if (typeof query !== 'string' || query.trim().length === 0) throw new InvalidArgumentError('the query must be a non-empty string, e.g. "password reset" or "pass*"');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('search() options must be an object');
    for (const k of Object.keys(options)) if (!['types', 'sessionId', 'limit', 'highlight', 'snippetTokens'].includes(k)) throw new InvalidArgumentError(`unknown search() option ${JSON.stringify(k)}; expected types, sessionId, limit, highlight, snippetTokens`);
    const { types, sessionId, limit = 20, highlight = ['<b>', '</b>'], snippetTokens = 12 } = options;
    if (types !== undefined && (!Array.isArray(types) || types.some((t) => typeof t !== 'string'))) throw new InvalidArgumentError('types must be an array of event type names');
    if (sessionId !== undefined && typeof sessionId !== 'string') throw new InvalidArgumentError('sessionId must be a string');
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer from 1 to 10000');
    if (!Array.isArray(highlight) || highlight.length !== 2 || highlight.some((h) => typeof h !== 'string')) throw new InvalidArgumentError("highlight must be two strings, e.g. ['<mark>', '</mark>']");
    if (!Number.isInteger(snippetTokens) || snippetTokens < 1 || snippetTokens > 64) throw new InvalidArgumentError('snippetTokens must be an integer from 1 to 64');
    if (!this.#shared.current()) await this.#shared.ready();
    if (types !== undefined && types.length === 0) return [];
    const match = matchText(query, sessionId);
    if (types === undefined && sessionId === undefined && SINGLE_TERM.test(query) && this.#shared.tryTopK(this.namespaceName, limit)) {
      const rows = this.#run<HitRow>(topKStatement(limit), [match, highlight[0], highlight[1], snippetTokens], query);
      const hits = rows.filter((r) => r.ns === this.namespaceName);
      // Complete when every one of the best rows is this namespace's, or when there were
      // fewer matches than the limit; otherwise other namespaces' rows took places.
      if (hits.length === rows.length || rows.length < limit) return hits.map(toHit);
      this.#shared.topKMissed(this.namespaceName);
    }
    // Every filter is a condition of the statement (the session's also of the MATCH): SQLite
    // takes hits in rank order and stops at the limit.
    const params: Array<string | number> = [highlight[0], highlight[1], snippetTokens, match, this.namespaceName];
    if (types !== undefined) params.push(...types);
    if (sessionId !== undefined) params.push(sessionId);
    return this.#run<HitRow>(searchStatement(types?.length ?? 0, sessionId !== undefined, limit), params, query).map(toHit);
  }

  #run<R>(sql: string, params: Array<string | number>, query: string): R[] {
    try {
      return this.#shared.statement<R>(sql).all(...params);
    } catch (e) {
      // The statement is athanor's own and fixed: an SQL error here comes from the query text.
      if (e instanceof SqlError || (e instanceof AthanorError && e.code === 'ERR_SQL_SYNTAX')) throw fixHint(query, e);
      throw e;
    }
  }

  /**
   * Hybrid search over a text collection whose documents this index also holds (a rule
   * with `id` naming the same document ids): the BM25 ranking and the vector ranking,
   * each filtered by `filter` on the collection's metadata, fused by reciprocal rank
   * fusion. Documents found by only one of them come back too.
   */
  async searchHybrid(query: string, options: HybridSearchOptions): Promise<HybridHit[]> {
    if (typeof query !== 'string' || query.trim().length === 0) throw new InvalidArgumentError('the query must be a non-empty string');
    if (options === null || typeof options !== 'object' || options.collection === undefined) throw new InvalidArgumentError('searchHybrid() needs { collection } : the text collection of the same documents');
    const { collection, k = 10, weights = {}, textQuery } = options;
    if (!Number.isInteger(k) || k < 1 || k > 1000) throw new InvalidArgumentError('k must be an integer from 1 to 1000');
    const candidates = options.candidates ?? Math.max(50, 4 * k);
    if (!Number.isInteger(candidates) || candidates < 1 || candidates > 10_000) throw new InvalidArgumentError('candidates must be an integer from 1 to 10000');
    const filter = options.filter === undefined ? undefined : checkFilter(options.filter);
    const wText = weights.text ?? 1;
    const wVec = weights.vector ?? 1;
    if (!Number.isFinite(wText) || !Number.isFinite(wVec) || wText < 0 || wVec < 0) throw new InvalidArgumentError('weights must be non-negative finite numbers');
    const ftsQuery = textQuery ?? anyWords(query);
    await this.#shared.ready();
    const textRank = new Map<string, SourceRank>();
    if (ftsQuery.length > 0 && wText > 0) {
      const rows = this.#run<{ doc_id: string; score: number }>(
        'SELECT doc_id, -bm25(athanor_fts, 1.0, 0.0) AS score FROM athanor_fts WHERE athanor_fts MATCH ? AND ns = ? AND doc_id IS NOT NULL ORDER BY rank LIMIT ?',
        [matchText(ftsQuery, undefined), this.namespaceName, candidates],
        ftsQuery,
      );
      for (const r of rows) {
        if (textRank.has(r.doc_id)) continue;
        const doc = collection.get(r.doc_id);
        if (doc === undefined) continue;
        if (filter !== undefined && !matchesFilter(doc.metadata, filter)) continue;
        textRank.set(r.doc_id, { rank: textRank.size + 1, score: r.score });
      }
    }
    const vecRank = new Map<string, { rank: number; score: number; metadata: Json | undefined }>();
    if (wVec > 0) {
      const hits = await collection.searchText(query, { k: candidates, ...(filter !== undefined ? { filter } : {}) });
      const inNs = this.namespaceName === '' ? undefined : this.#mem.host.sql.prepare<{ one: number }>('SELECT 1 AS one FROM athanor_fts_docs WHERE ns = ? AND doc_id = ?');
      for (const h of hits) {
        // A namespaced view returns only documents its namespace indexed.
        if (inNs !== undefined && inNs.get(this.namespaceName, h.id) === undefined) continue;
        vecRank.set(h.id, { rank: vecRank.size + 1, score: h.score, metadata: h.metadata as Json | undefined });
      }
    }
    const ids = new Set([...textRank.keys(), ...vecRank.keys()]);
    const out: HybridHit[] = [];
    for (const id of ids) {
      const t = textRank.get(id) ?? null;
      const v = vecRank.get(id);
      const score = (t ? wText / (RRF_K + t.rank) : 0) + (v ? wVec / (RRF_K + v.rank) : 0);
      const metadata = v !== undefined ? v.metadata : (collection.get(id)?.metadata as Json | undefined);
      out.push({ id, score, text: t, vector: v ? { rank: v.rank, score: v.score } : null, metadata });
    }
    out.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out.slice(0, k);
  }
}

/** `db.search`: the full-text index and hybrid search, of one namespace. */
export class Search {
  readonly #mem: Memory;
  readonly #shared: FullTextShared;
  /** The namespace searched (`''`: the default one). */
  readonly namespaceName: string;

  /** @internal */
  constructor(mem: Memory, shared: FullTextShared, ns = '') {
    this.#mem = mem;
    this.#shared = shared;
    this.namespaceName = ns;
  }

  /** A view of another namespace: it finds nothing of this one. */
  namespace(name: string): Search {
    return new Search(this.#mem, this.#shared, checkNamespace(name));
  }

  /**
   * The full-text index: session events' content, plus the event types `spec.on`
   * names. The rules are given in code, like a declarative projection's: the first call
   * of a handle sets them, and when they differ from those the index was built with,
   * the index is rebuilt from the log at its first use.
   */
  fullText(spec?: FullTextSpec): FullTextIndex {
    this.#shared.configure(spec);
    return new FullTextIndex(this.#mem, this.#shared, this.namespaceName);
  }
}
