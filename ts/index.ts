/**
 * athanor: an embedded database for Node.js. Durable typed state and an
 * append-only event log, committed together atomically, in-process.
 * @packageDocumentation
 */
export { Athanor, Snapshot, type OpenOptions, type Durability, type VerifyOptions, type VerifyResult } from './db.js';
export type { VerifyReportOptions, VerifyReport, VerifyViolation, ListOptions, StateEntry } from './db.js';
export { TransactionBuilder, type Tx, type CommitResult, type AppliedResult, type DuplicateResult, type ExecuteOptions, type EventInput } from './state/transaction.js';
export { EventLog, type StoredEvent, type ReadOptions, type CompactOptions, type CompactResult, type CompactArchive, type EventProof } from './state/events.js';
export type { AppendOptions, ExpectedVersion, NumericOptions, LogOptions } from './state/transaction.js';
export type { Upcaster } from './state/upcasters.js';
export { Streams, type StreamEvent, type StreamReadOptions, type StreamListOptions, type StreamInfo } from './state/streams.js';
export type { CommitNotice } from './state/core.js';
export { Idempotency, type IdempotencyRecord } from './state/idempotency.js';
export { VectorStore } from './vectors/store.js';
export { VectorCollection } from './vectors/collection.js';
export type { VectorMetric, VectorQuantization, CollectionInfo, TxVectors } from './state/tx-vectors.js';
export type {
  CollectionOptions,
  SearchOptions,
  VectorHit,
  VectorDocument,
  IndexStats,
  LoadProgress,
  MetadataFilter,
  FilterOps,
  FilterScalar,
  OpenCollectionOptions,
  TextDocument,
  TextUpsertProgress,
  TextUpsertOptions,
  SearchExplain,
} from './vectors/types.js';
export type { VectorProjectionSpec, EmbedRule, DeleteRule, FieldSource, VectorProjection } from './processing/vector-projection.js';
export { Value, i64, u256, f64, bool, str, bytes, json, set, array, encodeValue, decodeValue, type ValueType, type Json } from './state/codec.js';
export {
  AthanorError,
  PreflightError,
  ConflictError,
  NotFoundError,
  ValueTypeError,
  InvalidArgumentError,
  MapFullError,
  CorruptError,
  ClosedError,
  VersionError,
  IoError,
  SqlError,
  SqlConstraintError,
  SqlBusyError,
  SqlSyntaxError,
  HandlerError,
  MigrationDriftError,
  MigrationsPendingError,
  VectorDimensionError,
  ModelError,
  RuntimeLoadError,
  ProviderError,
  DownloadError,
  IntegrityError,
  NativeLoadError,
  ReadOnlyError,
  MissingPackageError,
  WrongExpectedVersionError,
  BoundsError,
  UpcastError,
  ForbiddenError,
  NotReadyError,
  type ErrorCode,
} from './errors.js';
export { downloadModel, type PretrainedOptions, type DownloadProgress } from './embed/hub.js';
export { Sql, Statement, type SqlBindable, type NamedParams, type BindParams, type SqlReadValue, type Row, type RunResult, type TransactionFunction } from './sql/sql.js';
export { Processor } from './processing/processor.js';
export { ProcessorBuilder } from './processing/builder.js';
export { DeadLetters } from './processing/dead-letters.js';
export type {
  EventHandler,
  HandleFn,
  ErrorAction,
  ErrorStrategy,
  RetryPolicy,
  ProcessorOptions,
  BatchResult,
  Progress,
  DeadLetter,
} from './processing/types.js';
export { Migrations, checksumOf, type Migration, type MigrationStep, type AppliedMigration } from './sql/migrations.js';
export type { DeclarativeSpec, SqlAction, ParamSource } from './processing/declarative.js';
export type { QueryOptions } from './processing/projections.js';
export { Embedder, type EmbedderOptions, type ExecutionProvider, type Pooling, type EmbedProgress, type EmbedManyOptions, type ProviderAttempt } from './embed/embed.js';
export {
  Scheduler,
  systemClock,
  type Clock,
  type Schedule,
  type TaskOptions,
  type TaskRetryPolicy,
  type RunInfo,
  type RunRecord,
  type TaskInfo,
  type MissedRunPolicy,
  type SchedulerOptions,
} from './ops/scheduler.js';
export type { BackupOptions, BackupManifest, BackupFile, BackupProgress, RestoreOptions, ContentDigest } from './ops/backup.js';
export type { MetricsSnapshot, MetricsOptions, LatencySummary } from './ops/metrics.js';
export { Accumulators, TxAccumulators, type AccumulatorOptions, type AccumulatorState, type AccumulatorType, type AccumulateOptions, type AccumulateResult, type ExposureInput } from './eventsourcing/accumulators.js';
export { Queue, TxQueue, type QueueOptions, type EnqueueOptions, type LeaseOptions, type Job, type DeadJob, type QueueCounts } from './eventsourcing/queue.js';
export { ConsumerGroup, type ConsumerGroupOptions, type Delivery, type PendingDelivery } from './eventsourcing/consumer-group.js';
export type { TimeSource } from './eventsourcing/records.js';
export { StaleLeaseError, CompactedError } from './errors.js';
export { Replica, NamespaceHandle, type Namespaces } from './db.js';
export type { NamespaceInfo, NamespaceOptions, OpenNamespaceOptions } from './state/namespaces.js';
export { Replication, Publisher, type PublishOptions, type PublisherMetrics } from './replication/publisher.js';
export type { ReplicaOptions, ReplicaLag, ReplicaMetrics } from './replication/follower.js';
export { PgProjection, PgMigrations, type PgProjectionSpec, type PgProjectionMetrics, type PgHandler, type PgPool, type PgClient, type PgResult, type PgMigration, type PgAppliedMigration, type PgAction, type PgRunHandler } from './replication/pg-projection.js';
export { Agents, type Agent, type AgentInput, type AgentListOptions, type AgentPage, type AgentSide, type AgentSnapshot, type ChangeOptions, type Transition, type PurgeScheduler } from './agents/agents.js';
export { Sessions, Tasks, type Session, type SessionEvent, type Task, type TaskChange, type TaskSide } from './agents/sessions.js';
export { Search, FullTextIndex, anyWords, type FullTextSpec, type TextRule, type TextSearchOptions, type TextHit, type HybridSearchOptions, type HybridHit, type HybridWeights, type SourceRank } from './agents/fulltext.js';
export { BUILTIN_ROLES, type Caller, type Permission, type Action, type Resource, type ResourceKind } from './security/permissions.js';
export { Roles, type RoleInfo } from './security/roles.js';
export { AuditTrail, type AuditRecord, type AuditQuery } from './security/audit.js';
export { verifyProof } from './security/proof.js';
