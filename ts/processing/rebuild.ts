/**
 * What `rebuild()` drops before it replays the whole log: the processor's derived data
 * (through its reset hook, or every migration rolled back and re-applied), its cursor and
 * its dead letters, in one SQLite transaction; or, for a vector projection, through its
 * cursor store.
 */
import { InvalidArgumentError } from '../errors.js';
import { thrownError } from '../internal/thrown.js';
import type { Sql } from '../sql/sql.js';
import { INTERNAL } from '../state/reserved.js';
import type { CursorStore, ProcessorHost } from './types.js';

/** What one rebuild drops, and how. @internal */
export interface RebuildPlan {
  /** The processor's name. */
  name: string;
  /** `'reset'`: its reset hook; `'migrations'`: every migration down then up (resets every processor). */
  mode: 'reset' | 'migrations';
  /** The reset hook, when it has one. */
  reset: ((sql: Sql) => void) | undefined;
  /** Where its cursor lives when not in projection.db (a vector projection). */
  store: CursorStore | undefined;
}

/** Throws before anything is dropped when the plan cannot run. @internal */
export function checkRebuild(plan: RebuildPlan, host: ProcessorHost): void {
  void host.sql; // a closed database says so first
  if (plan.store !== undefined) return;
  if (plan.mode === 'reset' && plan.reset === undefined) {
    throw new InvalidArgumentError(`processor ${JSON.stringify(plan.name)} has no reset hook; give one (reset) or rebuild with { schema: 'migrations' }`);
  }
  if (plan.mode === 'migrations') host.migrations.checkRebuild();
}

/** Drops the derived data, the cursor and the dead letters (checked by {@link checkRebuild}). @internal */
export async function dropDerived(plan: RebuildPlan, host: ProcessorHost): Promise<void> {
  if (plan.store !== undefined) return plan.store.reset();
  const sql = host.sql;
  const own = sql[INTERNAL]();
  const { name, reset } = plan;
  if (plan.mode === 'reset') {
    sql
      .transaction(() => {
        try {
          reset!(sql);
        } catch (e) {
          throw thrownError(e, `the reset hook of processor ${JSON.stringify(name)}`);
        }
        own.resetProcessors(name);
      })
      .immediate();
  } else {
    const m = host.migrations;
    sql
      .transaction(() => {
        m.rollbackTo(0);
        m.run();
        own.resetProcessors();
      })
      .immediate();
  }
}
