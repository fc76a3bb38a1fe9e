/**
 * athanor: an embedded database for Node.js. Durable typed state and an
 * append-only event log, committed together atomically, in-process.
 * @packageDocumentation
 */
export { Athanor, Snapshot, type OpenOptions, type Durability, type VerifyOptions, type VerifyResult } from './db.js';
export type { VerifyReportOptions, VerifyReport, VerifyViolation, ListOptions, StateEntry } from './db.js';
export { TransactionBuilder, type Tx, type CommitResult, type AppliedResult, type DuplicateResult, type ExecuteOptions, type EventInput } from './transaction.js';
export { EventLog, type StoredEvent, type ReadOptions } from './events.js';
export type { CommitNotice } from './core.js';
export { Idempotency, type IdempotencyRecord } from './idempotency.js';
export {
  VectorStore,
  VectorCollection,
  type VectorMetric,
  type CollectionOptions,
  type CollectionInfo,
  type SearchOptions,
  type VectorHit,
  type VectorDocument,
  type IndexStats,
  type MetadataFilter,
  type FilterOps,
  type FilterScalar,
  type TxVectors,
  type OpenCollectionOptions,
  type TextDocument,
  type TextUpsertProgress,
  type TextUpsertOptions,
  type SearchExplain,
} from './vector.js';
export type { VectorProjectionSpec, EmbedRule, DeleteRule, FieldSource, VectorProjection } from './vector-projection.js';
export { Value, i64, u256, f64, bool, str, bytes, json, set, array, encodeValue, decodeValue, type ValueType, type Json } from './codec.js';
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
  type ErrorCode,
} from './errors.js';
export { downloadModel, type PretrainedOptions, type DownloadProgress } from './hub.js';
export { Sql, Statement, type SqlBindable, type NamedParams, type BindParams, type SqlReadValue, type Row, type RunResult, type TransactionFunction } from './sql.js';
export {
  Processor,
  ProcessorBuilder,
  DeadLetters,
  type EventHandler,
  type HandleFn,
  type ErrorAction,
  type ErrorStrategy,
  type RetryPolicy,
  type ProcessorOptions,
  type BatchResult,
  type Progress,
  type DeadLetter,
} from './processor.js';
export { Migrations, checksumOf, type Migration, type MigrationStep, type AppliedMigration } from './migrations.js';
export type { DeclarativeSpec, SqlAction, ParamSource, QueryOptions } from './projection.js';
export { Embedder, type EmbedderOptions, type ExecutionProvider, type Pooling, type EmbedProgress, type EmbedManyOptions, type ProviderAttempt } from './embed.js';
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
} from './scheduler.js';
export type { BackupOptions, BackupManifest, BackupFile, BackupProgress, RestoreOptions, ContentDigest } from './backup.js';
export type { MetricsSnapshot, MetricsOptions, LatencySummary } from './metrics.js';
