/**
 * athanor: an embedded database for Node.js. Durable typed state and an
 * append-only event log, committed together atomically, in-process.
 * @packageDocumentation
 */
export { Athanor, Snapshot, type OpenOptions, type Durability, type VerifyOptions, type VerifyResult } from './db.js';
export type { VerifyReportOptions, VerifyReport, VerifyViolation, ListOptions, StateEntry } from './db.js';
export { TransactionBuilder, type Tx, type CommitResult, type AppliedResult, type DuplicateResult, type ExecuteOptions, type EventInput } from './state/transaction.js';
export { EventLog, type StoredEvent, type ReadOptions } from './state/events.js';
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
