/**
 * projection.db's `_athanor_*` tables (format version, processor cursors, dead letters,
 * applied migrations) are athanor's: user SQL may read them but not change them. The
 * connection's authorizer (native/core/src/projection/sql.rs) enforces that on every
 * statement as SQLite prepares it, triggers included. This check of the text only
 * answers early where nothing is prepared yet: a declarative projection's actions are
 * refused when it is defined, not at its first batch.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';

/** An identifier starting with `_athanor_`, bare, quoted ("", ``, []) or schema-qualified. */
const RESERVED_TABLE = /(?:^|[^A-Za-z0-9_$\u0080-\uffff])["`[]?_athanor_/i;
/** String literals and comments, whose text names nothing. */
const LITERALS_AND_COMMENTS = /'(?:[^']|'')*'?|--[^\n]*|\/\*[\s\S]*?(?:\*\/|$)/g;
/** Statements that change the schema or rows: with a reserved name in them, they are refused. */
const WRITES = /^(?:INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b/i;
/** A statement under a `WITH` clause that writes. */
const WRITES_UNDER_WITH = /\b(?:INSERT|UPDATE|DELETE)\b|\bREPLACE\s+INTO\b/i;

/**
 * Throws `ERR_INVALID_ARGUMENT` when user SQL would change one of athanor's tables:
 * a statement that writes (INSERT, UPDATE, DELETE, REPLACE, CREATE, DROP, ALTER, or
 * one of those under WITH) and names an `_athanor_*` object anywhere in its text.
 * Reads (SELECT) of those tables stay allowed. Cheap for the common case: text that
 * never mentions `_athanor_` is not scanned further.
 * @internal
 */
export function checkUserSql(sql: string): void {
  if (!/_athanor_/i.test(sql)) return;
  const text = sql.replace(LITERALS_AND_COMMENTS, ' ');
  for (const statement of text.split(';')) {
    if (!RESERVED_TABLE.test(statement)) continue;
    const s = statement.replace(/^[\s(]+/, '');
    if (WRITES.test(s) || (/^WITH\b/i.test(s) && WRITES_UNDER_WITH.test(s))) {
      throw new InvalidArgumentError(
        "SQL that changes athanor's own tables (_athanor_*: cursors, dead letters, migrations, format version) is refused; " +
          'read them with SELECT, and change them through the API (processor.deadLetters, processor.rebuild(), db.migrations). ' +
          `Refused statement: ${JSON.stringify(statement.trim().slice(0, 200))}`,
      );
    }
  }
}
