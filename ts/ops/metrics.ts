/**
 * Operational metrics of a database handle: what its commits cost and how its
 * processors, scheduler and vector indexes are doing. `db.metrics()` returns a plain
 * object; `db.metrics({ format: 'prometheus' })` the Prometheus text exposition, built
 * with prom-client on a registry of this handle's own (never the global one).
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CommitObserver, CommitOutcome } from '../state/core.js';

/** Percentiles of a latency, from the histogram's buckets (as Prometheus' `histogram_quantile`). */
export interface LatencySummary {
  /** Observations. */
  count: number;
  /** Median, ms. */
  p50: number;
  /** 95th percentile, ms. */
  p95: number;
  /** 99th percentile, ms. */
  p99: number;
}

/** A snapshot of the handle's metrics. */
export interface MetricsSnapshot {
  /** Commits of this handle. */
  commits: {
    /**
     * Transactions handed to the writer through this handle, by outcome (a duplicate found
     * before its callback ran never reaches the writer and is not counted).
     */
    applied: number;
    /** Found already applied by the writer (idempotency key). */
    duplicate: number;
    /** Refused for another reason than a conflict (the error went back to the caller). */
    failed: number;
    /** From hand-over to the writer until the promise settles (durable under the database's durability mode), ms. */
    latencyMs: LatencySummary;
    /** Transactions of this handle per group commit. */
    groupSize: {
      /** Group commits. */
      groups: number;
      /** Mean transactions per group. */
      mean: number;
      /** Most transactions in one group. */
      max: number;
    };
    /** Transactions handed over and not yet settled. */
    queueDepth: number;
    /** Attempts the writer refused because what they read had changed (they are re-run). */
    conflicts: number;
  };
  /** The store. */
  store: {
    /**
     * How long the store's fsyncs took in this process (every handle of the directory):
     * each durable commit (LMDB's commit, which flushes before it returns; none under
     * durability `'none'`) and each explicit flush, ms.
     */
    fsyncMs: LatencySummary & {
      /** Their total duration, ms. */
      totalMs: number;
    };
    /** The LMDB map size, bytes (it grows by itself). */
    mapSizeBytes: number;
    /** Size of `canonical/data.mdb` on disk, bytes. */
    fileBytes: number;
    /** Commit seq of the newest transaction. */
    commitSeq: bigint;
    /** Id of the newest event. */
    lastEventId: bigint;
  };
  /** Processors and projections opened through this handle. */
  processors: {
    /** Its name. */
    name: string;
    /** Its cursor. */
    cursor: bigint;
    /** Events not applied yet. */
    lag: bigint;
    /** Dead letters. */
    deadLetters: number;
  }[];
  /** Runs of the scheduler in this process, by task and outcome. */
  scheduler: {
    /** The task. */
    task: string;
    /** How the runs ended. */
    outcome: string;
    /** Runs. */
    runs: number;
  }[];
  /** Every vector collection's index. */
  vectors: {
    /** The collection. */
    collection: string;
    /** Documents stored. */
    documents: number;
    /** Documents not yet in the graph. */
    pending: number;
    /** Deleted points still in the graph. */
    tombstones: number;
    /** Points in the graph. */
    graphPoints: number;
    /** Index dumps written since open. */
    dumps: number;
  }[];
  /** Replication run through this handle: its publisher, its replica follower, its PostgreSQL projections (absent when none runs). */
  replication?: {
    /** The commit publisher (`db.replication.publish()`). */
    publisher?: {
      /** Newest commit seq the stream acknowledged. */
      publishedSeq: bigint;
      /** Commits logged and not yet acknowledged: the backpressure. */
      pending: number;
      /** Failures so far, each retried with backoff. */
      errors: number;
      /** Connected to NATS now. */
      connected: boolean;
    };
    /** The follower of a replica (`Athanor.openReplica`). */
    replica?: {
      /** Commits delivered and not applied yet. */
      lagCommits: number;
      /** Age of the oldest of them, ms. */
      lagMs: number;
      /** Failures so far, each retried with backoff unless `failed`. */
      errors: number;
      /** Connected to NATS now. */
      connected: boolean;
      /** Stopped on a failure retrying cannot cure. */
      failed: boolean;
    };
    /** PostgreSQL projections (`db.pgProjection()`). */
    pgProjections: {
      /** Its name. */
      name: string;
      /** Newest event id applied. */
      cursor: bigint;
      /** Events not applied yet. */
      lag: number;
      /** Failures so far. */
      errors: number;
      /** Whether this runner holds the projection's lock. */
      holdsLock: boolean;
    }[];
  };
}

/** Options of `db.metrics()`. */
export interface MetricsOptions {
  /** `'object'` (default) or `'prometheus'` (the text exposition format, version 0.0.4). */
  format?: 'object' | 'prometheus';
}

/** The store's sync histogram as the addon reports it: cumulative since open, buckets not cumulative. @internal */
export interface SyncCounts {
  count: number;
  sumSeconds: number;
  bucketBounds: number[];
  bucketCounts: number[];
  bucketSumSeconds: number[];
}

/** What `snapshot` needs from the database. @internal */
export type SnapshotSource = Omit<MetricsSnapshot, 'commits' | 'scheduler' | 'store'> & {
  queueDepth: number;
  store: Omit<MetricsSnapshot['store'], 'fsyncMs'>;
  syncs: SyncCounts;
};

/** Where the scheduler reports runs to. @internal */
export interface RunObserver {
  ran(task: string, outcome: string): void;
}

const LATENCY_BUCKETS_S = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const GROUP_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/** The counters a handle keeps, and their exposition. @internal */
export class Metrics implements CommitObserver, RunObserver {
  readonly registry = new Registry();
  readonly #commits = new Counter({ name: 'athanor_commits_total', help: 'Transactions handed to the writer through this handle, by outcome (conflict: re-run).', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly #latency = new Histogram({
    name: 'athanor_commit_duration_seconds',
    help: 'Time from handing a transaction to the writer until its promise settled (durable under the durability mode).',
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly #group = new Histogram({ name: 'athanor_commit_group_size', help: "This handle's transactions per group commit.", buckets: GROUP_BUCKETS, registers: [this.registry] });
  // The native store times its syncs (off the JS thread); they are replayed into this
  // histogram when read, one observation per sync (see #replaySyncs).
  readonly #fsync = new Histogram({
    name: 'athanor_fsync_seconds',
    help: "Duration of the store's fsyncs in this process: durable commits (LMDB's commit with its flush) and explicit flushes.",
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  #syncsSeen: SyncCounts | undefined;
  readonly #runs = new Counter({ name: 'athanor_scheduler_runs_total', help: 'Scheduler runs in this process, by task and outcome.', labelNames: ['task', 'outcome'] as const, registers: [this.registry] });
  readonly #gauges = {
    queue: new Gauge({ name: 'athanor_commit_queue_depth', help: 'Transactions handed to the writer and not yet settled.', registers: [this.registry] }),
    mapSize: new Gauge({ name: 'athanor_map_size_bytes', help: 'The LMDB map size.', registers: [this.registry] }),
    fileBytes: new Gauge({ name: 'athanor_store_file_bytes', help: 'Size of canonical/data.mdb on disk.', registers: [this.registry] }),
    commitSeq: new Gauge({ name: 'athanor_commit_seq', help: 'Commit seq of the newest commit.', registers: [this.registry] }),
    lastEventId: new Gauge({ name: 'athanor_last_event_id', help: 'Id of the newest event.', registers: [this.registry] }),
    lag: new Gauge({ name: 'athanor_processor_lag_events', help: 'Events in the log past the processor cursor.', labelNames: ['processor'] as const, registers: [this.registry] }),
    deadLetters: new Gauge({ name: 'athanor_processor_dead_letters', help: 'Events in the processor dead-letter queue.', labelNames: ['processor'] as const, registers: [this.registry] }),
    documents: new Gauge({ name: 'athanor_vector_documents', help: 'Live documents of a vector collection.', labelNames: ['collection'] as const, registers: [this.registry] }),
    pending: new Gauge({ name: 'athanor_vector_pending_documents', help: 'Committed documents not yet in the HNSW graph.', labelNames: ['collection'] as const, registers: [this.registry] }),
    tombstones: new Gauge({ name: 'athanor_vector_tombstones', help: 'Deleted or replaced documents still in the graph.', labelNames: ['collection'] as const, registers: [this.registry] }),
    points: new Gauge({ name: 'athanor_vector_graph_points', help: 'Points in the HNSW graph, live or tombstoned.', labelNames: ['collection'] as const, registers: [this.registry] }),
  };
  readonly #byOutcome = { applied: 0, duplicate: 0, conflict: 0, failed: 0 };
  #groups = 0;
  #groupTotal = 0;
  #groupMax = 0;
  readonly #runCounts = new Map<string, { task: string; outcome: string; runs: number }>();

  settled(ms: number, outcome: CommitOutcome): void {
    this.#byOutcome[outcome]++;
    this.#commits.inc({ outcome });
    this.#latency.observe(ms / 1000);
  }

  group(size: number): void {
    this.#groups++;
    this.#groupTotal += size;
    if (size > this.#groupMax) this.#groupMax = size;
    this.#group.observe(size);
  }

  ran(task: string, outcome: string): void {
    const key = `${task}\u0000${outcome}`;
    const c = this.#runCounts.get(key) ?? { task, outcome, runs: 0 };
    c.runs++;
    this.#runCounts.set(key, c);
    this.#runs.inc({ task, outcome });
  }

  /**
   * Adds the syncs counted natively since the last read to the histogram. Per bucket,
   * each new sync is observed at the mean of that bucket's new durations: the mean of
   * values inside a bucket lies inside it, so buckets, count and sum all come out exact
   * (the native buckets are the same as this histogram's).
   */
  #replaySyncs(now: SyncCounts): void {
    const seen = this.#syncsSeen;
    this.#syncsSeen = now;
    const bounds = now.bucketBounds;
    now.bucketCounts.forEach((count, i) => {
      const n = count - (seen?.bucketCounts[i] ?? 0);
      if (n <= 0) return;
      const low = i === 0 ? 0 : bounds[i - 1]!;
      const high = i < bounds.length ? bounds[i]! : Infinity;
      const mean = (now.bucketSumSeconds[i]! - (seen?.bucketSumSeconds[i] ?? 0)) / n;
      // A sync recorded while the counts were read can nudge the mean; keep it in its bucket.
      const v = Math.min(high, Math.max(mean, low + Number.EPSILON * Math.max(1, low)));
      for (let k = 0; k < n; k++) this.#fsync.observe(v);
    });
  }

  /** The snapshot, with the parts only the database can read filled in by `read`. */
  async snapshot(read: () => SnapshotSource): Promise<MetricsSnapshot> {
    const r = read();
    this.#replaySyncs(r.syncs);
    const latency = (await this.#latency.get()).values;
    const fsync = summarize((await this.#fsync.get()).values);
    return {
      commits: {
        applied: this.#byOutcome.applied,
        duplicate: this.#byOutcome.duplicate,
        failed: this.#byOutcome.failed,
        latencyMs: summarize(latency),
        groupSize: { groups: this.#groups, mean: this.#groups === 0 ? 0 : this.#groupTotal / this.#groups, max: this.#groupMax },
        queueDepth: r.queueDepth,
        conflicts: this.#byOutcome.conflict,
      },
      store: { fsyncMs: { ...fsync, totalMs: r.syncs.sumSeconds * 1000 }, ...r.store },
      processors: r.processors,
      scheduler: [...this.#runCounts.values()].map((c) => ({ ...c })),
      vectors: r.vectors,
      ...(r.replication !== undefined ? { replication: r.replication } : {}),
    };
  }

  /** The Prometheus text exposition of a snapshot. */
  async prometheus(s: MetricsSnapshot): Promise<string> {
    const g = this.#gauges;
    g.queue.set(s.commits.queueDepth);
    g.mapSize.set(s.store.mapSizeBytes);
    g.fileBytes.set(s.store.fileBytes);
    g.commitSeq.set(Number(s.store.commitSeq));
    g.lastEventId.set(Number(s.store.lastEventId));
    for (const gauge of [g.lag, g.deadLetters, g.documents, g.pending, g.tombstones, g.points]) gauge.reset();
    for (const p of s.processors) {
      g.lag.set({ processor: p.name }, Number(p.lag));
      g.deadLetters.set({ processor: p.name }, p.deadLetters);
    }
    for (const v of s.vectors) {
      g.documents.set({ collection: v.collection }, v.documents);
      g.pending.set({ collection: v.collection }, v.pending);
      g.tombstones.set({ collection: v.collection }, v.tombstones);
      g.points.set({ collection: v.collection }, v.graphPoints);
    }
    if (s.replication !== undefined) this.#replicationGauges(s.replication);
    return this.registry.metrics();
  }

  #replication: { pending: Gauge; errors: Gauge<'part'>; replicaLag: Gauge; pgLag: Gauge<'projection'> } | undefined;

  /** Registered on first use, so a handle without replication exposes none of them. */
  #replicationGauges(r: NonNullable<MetricsSnapshot['replication']>): void {
    const g = (this.#replication ??= {
      pending: new Gauge({ name: 'athanor_replication_pending_commits', help: 'Commits logged for the publisher and not yet acknowledged by the stream.', registers: [this.registry] }),
      errors: new Gauge({ name: 'athanor_replication_errors', help: 'Replication failures so far (each retried with backoff), by part.', labelNames: ['part'] as const, registers: [this.registry] }),
      replicaLag: new Gauge({ name: 'athanor_replica_lag_commits', help: "Commits delivered to this replica and not applied yet.", registers: [this.registry] }),
      pgLag: new Gauge({ name: 'athanor_pg_projection_lag_events', help: 'Events in the log past a PostgreSQL projection cursor.', labelNames: ['projection'] as const, registers: [this.registry] }),
    });
    g.errors.reset();
    g.pgLag.reset();
    if (r.publisher !== undefined) {
      g.pending.set(r.publisher.pending);
      g.errors.set({ part: 'publisher' }, r.publisher.errors);
    }
    if (r.replica !== undefined) {
      g.replicaLag.set(r.replica.lagCommits);
      g.errors.set({ part: 'replica' }, r.replica.errors);
    }
    for (const p of r.pgProjections) {
      g.pgLag.set({ projection: p.name }, p.lag);
      g.errors.set({ part: `pg:${p.name}` }, p.errors);
    }
  }
}

/** p50/p95/p99 in ms from cumulative histogram buckets (linear inside a bucket). */
function summarize(values: { labels: Partial<Record<string, string | number>>; value: number; metricName?: string }[]): LatencySummary {
  const buckets = values
    .filter((v) => v.metricName?.endsWith('_bucket'))
    .map((v) => ({ le: v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), n: v.value }))
    .sort((a, b) => a.le - b.le);
  const count = buckets.length ? buckets[buckets.length - 1]!.n : 0;
  const q = (p: number): number => {
    if (count === 0) return 0;
    const rank = p * count;
    let lowerLe = 0;
    let lowerN = 0;
    for (const b of buckets) {
      if (b.n >= rank) {
        if (b.le === Infinity) return lowerLe * 1000;
        const within = b.n === lowerN ? 0 : (rank - lowerN) / (b.n - lowerN);
        return (lowerLe + (b.le - lowerLe) * within) * 1000;
      }
      lowerLe = b.le;
      lowerN = b.n;
    }
    return lowerLe * 1000;
  };
  return { count, p50: q(0.5), p95: q(0.95), p99: q(0.99) };
}
