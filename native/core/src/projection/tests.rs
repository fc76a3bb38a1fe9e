use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;

use super::declarative::{DeclConn, Spec};
use super::sql::{ColumnRef, SqlValue};
use super::*;
use crate::{Code, Engine, StoreOptions, TxBuilder};

fn engine(dir: &Path) -> Arc<Engine> {
    Engine::open(
        dir,
        StoreOptions {
            durability: crate::Durability::None,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn log(e: &Engine, events: &[(&str, &str)]) {
    let mut b = TxBuilder::new();
    for (t, p) in events {
        b = b.event_json(t, p);
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
}

fn query_i64(conn: &SqlConn, sql: &str) -> i64 {
    conn.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn open_creates_the_bookkeeping_tables_and_records_the_format() {
    let dir = TempDir::new().unwrap();
    let conn = open_main(dir.path()).unwrap();
    for t in [
        "_athanor_meta",
        "_athanor_cursors",
        "_athanor_dead_letters",
        "_athanor_migrations",
    ] {
        let n = query_i64(
            &conn,
            &format!("SELECT count(*) FROM sqlite_master WHERE name = '{t}'"),
        );
        assert_eq!(n, 1, "{t}");
    }
    assert_eq!(
        query_i64(
            &conn,
            "SELECT value FROM _athanor_meta WHERE key = 'format_version'"
        ),
        PROJECTION_FORMAT
    );
    let mode: String = conn
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    // Reopening is fine; a newer format is refused with ERR_VERSION.
    let conn = open_main(dir.path()).unwrap();
    conn.as_athanor(|c| {
        Ok(c.execute_batch("UPDATE _athanor_meta SET value = 99 WHERE key = 'format_version'")?)
    })
    .unwrap();
    drop(conn);
    let e = open_main(dir.path()).err().unwrap();
    assert_eq!(e.code, Code::Version);
}

#[test]
fn fts5_is_compiled_in() {
    let dir = TempDir::new().unwrap();
    let conn = open_main(dir.path()).unwrap();
    conn.exec("CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs(body) VALUES ('the quick brown fox'), ('lazy dogs');")
        .unwrap();
    assert_eq!(
        query_i64(&conn, "SELECT count(*) FROM docs WHERE docs MATCH 'quick'"),
        1
    );
}

#[test]
fn raw_statements_bind_step_and_classify_errors() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB, score REAL)")
        .unwrap();
    let id = conn
        .prepare("INSERT INTO t(id, name, data, score) VALUES (:id, :name, :data, :score)")
        .unwrap();
    let st = conn.stmt(id).unwrap();
    assert_eq!(st.param_count(), 4);
    assert_eq!(st.param_index("name"), 2);
    assert_eq!(st.param_name(3), Some(":data"));
    st.bind_i64(1, i64::MAX).unwrap();
    st.bind_text(2, b"alice").unwrap();
    st.bind_blob(3, b"").unwrap();
    st.bind_f64(4, 1.5).unwrap();
    assert!(!st.step().unwrap());
    assert_eq!(st.changes(), 1);
    assert_eq!(st.last_insert_rowid(), i64::MAX);
    st.reset();
    // Same id again: a constraint error, and the statement is reusable afterwards.
    let e = st.step().unwrap_err();
    assert_eq!(e.code, Code::SqlConstraint);
    assert_eq!(e.sqlite_code, Some(1555)); // SQLITE_CONSTRAINT_PRIMARYKEY
    assert!(
        e.causes()[0].contains("UNIQUE constraint failed: t.id"),
        "SQLite's own words are kept as the cause: {:?}",
        e.causes()
    );
    st.bind_i64(1, 2).unwrap();
    st.bind_null(2).unwrap();
    assert_eq!(st.step().unwrap_err().code, Code::SqlConstraint);

    let q = conn.prepare("SELECT id, name, data, score FROM t").unwrap();
    let st = conn.stmt(q).unwrap();
    assert!(st.readonly());
    assert!(st.step().unwrap());
    assert_eq!(st.column_name(1), "name");
    assert_eq!(st.column(0), ColumnRef::Int(i64::MAX));
    assert_eq!(st.column(1), ColumnRef::Text(b"alice"));
    assert_eq!(st.column(2), ColumnRef::Blob(b""));
    assert_eq!(st.column(3), ColumnRef::Real(1.5));
    assert!(!st.step().unwrap());

    assert_eq!(conn.prepare("SELEC 1").err().unwrap().code, Code::SqlSyntax);
    assert_eq!(
        conn.prepare("SELECT * FROM missing").err().unwrap().code,
        Code::Sql
    );
    assert_eq!(
        conn.prepare("SELECT 1; SELECT 2").err().unwrap().code,
        Code::InvalidArgument
    );
    conn.finalize(q);
    assert!(conn.stmt(q).is_err());
}

#[test]
fn the_read_pool_runs_read_only_queries() {
    let dir = TempDir::new().unwrap();
    let conn = open_main(dir.path()).unwrap();
    conn.exec("CREATE TABLE t(a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');")
        .unwrap();
    let pool = ReadPool::new(dir.path());
    let rows = pool
        .query(
            "SELECT a, b FROM t WHERE a >= :min ORDER BY a",
            &Params::Named(vec![("min".into(), SqlValue::Int(2))]),
        )
        .unwrap();
    assert_eq!(rows.columns, vec!["a", "b"]);
    assert_eq!(
        rows.rows,
        vec![vec![SqlValue::Int(2), SqlValue::Text("y".into())]]
    );
    let e = pool.query("DELETE FROM t", &Params::None).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM t"), 2);
}

#[test]
fn a_failing_script_changes_nothing_and_a_script_cannot_control_transactions() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec_script("CREATE TABLE t(a INTEGER PRIMARY KEY);")
        .unwrap();
    let e = conn
        .exec_script("INSERT INTO t VALUES (1); CREATE TABLE u(x); INSERT INTO t VALUES (1);")
        .unwrap_err();
    assert_eq!(e.code, Code::SqlConstraint);
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM t"), 0);
    assert_eq!(
        query_i64(&conn, "SELECT count(*) FROM sqlite_master WHERE name = 'u'"),
        0
    );
    assert!(!conn.in_transaction());
    for script in [
        "INSERT INTO t VALUES (1); COMMIT;",
        "BEGIN; INSERT INTO t VALUES (1);",
        "INSERT INTO t VALUES (1); SAVEPOINT s; RELEASE s;",
    ] {
        let e = conn.exec_script(script).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{script}");
        assert_eq!(query_i64(&conn, "SELECT count(*) FROM t"), 0, "{script}");
        assert!(!conn.in_transaction(), "{script}");
    }
    // Lone statements, empty scripts, comments and many statements in a row.
    conn.exec_script("").unwrap();
    conn.exec_script(" ; -- nothing\n /* at all */").unwrap();
    let many: String = (1..=2000)
        .map(|i| format!("INSERT INTO t VALUES ({i});"))
        .collect();
    conn.exec_script(&many).unwrap();
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM t"), 2000);
    conn.exec_script("BEGIN").unwrap();
    assert!(conn.in_transaction());
    conn.exec_script("ROLLBACK").unwrap();
    assert_eq!(
        conn.exec_script("SELECT 1\0").unwrap_err().code,
        Code::InvalidArgument
    );
}

#[test]
fn owned_transactions_refuse_transaction_control_and_nest_as_savepoints() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec("CREATE TABLE t(a INTEGER PRIMARY KEY)").unwrap();
    let commit = conn.prepare("COMMIT").unwrap();
    let ins = conn.prepare("INSERT INTO t VALUES (?)").unwrap();
    conn.begin_owned(true).unwrap();
    assert!(conn.owns_transaction());
    assert_eq!(
        conn.runnable_stmt(commit).err().unwrap().code,
        Code::InvalidArgument
    );
    assert!(conn.take_violation());
    assert!(!conn.take_violation());
    assert_eq!(
        conn.exec_script("COMMIT").unwrap_err().code,
        Code::InvalidArgument
    );
    conn.runnable_stmt(ins)
        .unwrap()
        .execute(&[SqlValue::Int(1)])
        .unwrap();
    // A nested level is a savepoint: rolled back alone.
    conn.begin_owned(false).unwrap();
    conn.runnable_stmt(ins)
        .unwrap()
        .execute(&[SqlValue::Int(2)])
        .unwrap();
    conn.end_owned(false).unwrap();
    conn.end_owned(true).unwrap();
    assert!(!conn.in_transaction());
    assert_eq!(query_i64(&conn, "SELECT sum(a) * 10 + count(*) FROM t"), 11);
    // Outside owned levels, transaction control is the user's.
    let begin = conn.prepare("BEGIN").unwrap();
    conn.runnable_stmt(begin).unwrap().execute(&[]).unwrap();
    conn.runnable_stmt(commit).unwrap().execute(&[]).unwrap();
    assert!(conn.end_owned(true).is_err());
}

#[test]
fn a_statement_that_rolls_back_the_owned_transaction_stops_later_statements() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec("CREATE TABLE t(a INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    let or_rollback = conn
        .prepare("INSERT OR ROLLBACK INTO t VALUES (1)")
        .unwrap();
    let ins = conn.prepare("INSERT INTO t VALUES (?)").unwrap();
    conn.begin_owned(false).unwrap();
    conn.runnable_stmt(ins)
        .unwrap()
        .execute(&[SqlValue::Int(2)])
        .unwrap();
    conn.begin_owned(false).unwrap();
    let e = conn
        .runnable_stmt(or_rollback)
        .unwrap()
        .execute(&[])
        .unwrap_err();
    assert_eq!(e.code, Code::SqlConstraint);
    assert!(!conn.in_transaction());
    assert_eq!(conn.runnable_stmt(ins).err().unwrap().code, Code::Sql);
    assert_eq!(
        conn.exec_script("INSERT INTO t VALUES (3)")
            .unwrap_err()
            .code,
        Code::Sql
    );
    assert_eq!(conn.end_owned(true).unwrap_err().code, Code::Sql);
    conn.end_owned(false).unwrap();
    assert!(!conn.owns_transaction());
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM t"), 1);
}

#[test]
fn the_read_pool_refuses_transaction_control() {
    let dir = TempDir::new().unwrap();
    drop(open_main(dir.path()).unwrap());
    let pool = ReadPool::new(dir.path());
    for sql in ["BEGIN", "COMMIT", "SAVEPOINT x"] {
        assert_eq!(
            pool.query(sql, &Params::None).unwrap_err().code,
            Code::InvalidArgument
        );
    }
}

const LEDGER: &str = r#"{"name":"ledger","on":{
  "Opened":{"sql":"INSERT INTO accounts(id, owner, balance) VALUES (?, ?, 0)","params":["$.id","$.owner"]},
  "Deposited":[
    {"sql":"UPDATE accounts SET balance = balance + :amount WHERE id = :id","params":{"amount":"$.amount","id":"$.id"}},
    {"sql":"INSERT INTO moves(event_id, account, amount, tag) VALUES (?, ?, ?, ?)","params":["@id","$.id","$.amount","$.tags[0]"]}
  ]}}"#;

const TABLES: &str = "CREATE TABLE accounts(id TEXT PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL);
CREATE TABLE moves(event_id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), tag TEXT);";

fn decl(dir: &Path) -> DeclConn {
    let c = open_main(dir).unwrap();
    c.exec(TABLES).unwrap();
    DeclConn::new(c)
}

#[test]
fn declarative_batches_apply_events_and_move_the_cursor_together() {
    let dir = TempDir::new().unwrap();
    let e = engine(dir.path());
    let mut dc = decl(dir.path());
    let spec = Spec::compile(LEDGER).unwrap();
    log(
        &e,
        &[
            ("Opened", r#"{"id":"a","owner":"ann"}"#),
            ("Ignored", r#"{}"#),
            ("Deposited", r#"{"id":"a","amount":5,"tags":["x"]}"#),
            ("Deposited", r#"{"id":"a","amount":7}"#),
        ],
    );
    let o = dc.run_batch(&e, &spec, 3).unwrap();
    assert_eq!((o.consumed, o.cursor), (3, 3));
    assert!(o.failure.is_none());
    let o = dc.run_batch(&e, &spec, 3).unwrap();
    assert_eq!((o.consumed, o.cursor), (1, 4));
    let o = dc.run_batch(&e, &spec, 3).unwrap();
    assert_eq!((o.consumed, o.cursor), (0, 4));
    let main = open_main(dir.path()).unwrap();
    assert_eq!(
        query_i64(&main, "SELECT balance FROM accounts WHERE id = 'a'"),
        12
    );
    assert_eq!(
        query_i64(&main, "SELECT count(*) FROM moves WHERE tag IS NULL"),
        1
    );
    assert_eq!(read_cursor(&main, "ledger").unwrap(), 4);
}

#[test]
fn a_failing_event_commits_the_prefix_and_stops_just_before_it() {
    let dir = TempDir::new().unwrap();
    let e = engine(dir.path());
    let mut dc = decl(dir.path());
    let spec = Spec::compile(LEDGER).unwrap();
    log(
        &e,
        &[
            ("Opened", r#"{"id":"a","owner":"ann"}"#),
            ("Deposited", r#"{"id":"a","amount":5}"#),
            ("Deposited", r#"{"id":"a","amount":-1}"#), // CHECK fails after the UPDATE ran
            ("Deposited", r#"{"id":"a","amount":2}"#),
        ],
    );
    let o = dc.run_batch(&e, &spec, 10).unwrap();
    assert_eq!((o.consumed, o.cursor), (2, 2));
    let f = o.failure.unwrap();
    assert_eq!(f.event_id, 3);
    assert_eq!(f.error.code, Code::SqlConstraint);
    assert_eq!(f.error.sqlite_code, Some(275)); // SQLITE_CONSTRAINT_CHECK
    assert!(
        f.error.causes()[0].contains("CHECK constraint failed"),
        "{:?}",
        f.error.causes()
    );
    let main = open_main(dir.path()).unwrap();
    // The failing event's first statement (the UPDATE) did not stay.
    assert_eq!(
        query_i64(&main, "SELECT balance FROM accounts WHERE id = 'a'"),
        5
    );
    // Dead-letter it (what the TS strategy does), then retry after fixing the data.
    let failed = bookkeeping::Failed {
        code: "ERR_SQL_CONSTRAINT",
        message: "x",
        at_ms: 0,
    };
    bookkeeping::record_dead_letter(&main, "ledger", 3, "Deposited", 1, failed).unwrap();
    write_cursor(&main, "ledger", 3, e.store().now_ms()).unwrap();
    let o = dc.run_batch(&e, &spec, 10).unwrap();
    assert_eq!((o.consumed, o.cursor), (1, 4));
    let again = dc.retry_dead_letter(&e, &spec, 1).unwrap();
    assert_eq!(again.unwrap().code, Code::SqlConstraint);
    assert_eq!(
        query_i64(&main, "SELECT attempts FROM _athanor_dead_letters"),
        2
    );
    assert_eq!(
        query_i64(&main, "SELECT balance FROM accounts WHERE id = 'a'"),
        7
    );
}

#[test]
fn broken_specs_are_refused_at_compile_or_first_use() {
    for bad in [
        r#"{"on":{"A":{"sql":"SELECT 1"}}}"#,
        r#"{"name":"x","on":{}}"#,
        r#"{"name":"x","on":{"A":{"sql":"SELECT ?","params":["nope"]}}}"#,
        r#"{"name":"x","on":{"A":{"sql":"SELECT ?","params":["$.a["]}}}"#,
        r#"{"name":"x","on":{"A":{"sql":"SELECT 1","extra":1}}}"#,
    ] {
        assert_eq!(
            Spec::compile(bad).unwrap_err().code,
            Code::InvalidArgument,
            "{bad}"
        );
    }
    let dir = TempDir::new().unwrap();
    let e = engine(dir.path());
    let mut dc = decl(dir.path());
    log(&e, &[("A", "{}")]);
    // Wrong parameter count is a setup error: the batch throws, nothing moves.
    let spec =
        Spec::compile(r#"{"name":"x","on":{"A":{"sql":"SELECT ?, ?","params":["$.a"]}}}"#).unwrap();
    assert_eq!(
        dc.run_batch(&e, &spec, 10).unwrap_err().code,
        Code::InvalidArgument
    );
    let spec = Spec::compile(r#"{"name":"x","on":{"A":{"sql":"INSERT INTO nowhere VALUES (1)"}}}"#)
        .unwrap();
    assert_eq!(dc.run_batch(&e, &spec, 10).unwrap_err().code, Code::Sql);
    let main = open_main(dir.path()).unwrap();
    assert_eq!(read_cursor(&main, "x").unwrap(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    /// Whatever the batch sizes, the projection ends identical to one applied in a single batch.
    #[test]
    fn batch_boundaries_do_not_change_the_result(
        amounts in proptest::collection::vec(-3i64..20, 1..60),
        sizes in proptest::collection::vec(1usize..9, 1..10),
    ) {
        let dir = TempDir::new().unwrap();
        let e = engine(dir.path());
        let mut dc = decl(dir.path());
        let spec = Spec::compile(LEDGER).unwrap();
        let mut evs = vec![("Opened".to_string(), r#"{"id":"a","owner":"o"}"#.to_string())];
        for a in &amounts {
            evs.push(("Deposited".into(), format!(r#"{{"id":"a","amount":{a}}}"#)));
        }
        let refs: Vec<(&str, &str)> = evs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        log(&e, &refs);
        let main = open_main(dir.path()).unwrap();
        let mut i = 0;
        loop {
            let o = dc.run_batch(&e, &spec, sizes[i % sizes.len()]).unwrap();
            i += 1;
            if let Some(f) = o.failure {
                // skip it, as the 'skip' strategy does
                write_cursor(&main, "ledger", f.event_id, e.store().now_ms()).unwrap();
                continue;
            }
            if o.consumed == 0 { break; }
        }
        let expect: i64 = amounts.iter().filter(|a| **a > 0).sum();
        prop_assert_eq!(query_i64(&main, "SELECT balance FROM accounts"), expect);
        prop_assert_eq!(query_i64(&main, "SELECT count(*) FROM moves") as usize, amounts.iter().filter(|a| **a > 0).count());
        prop_assert_eq!(read_cursor(&main, "ledger").unwrap() as usize, amounts.len() + 1);
    }
}

#[test]
fn user_sql_cannot_change_athanors_tables_but_bookkeeping_can() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec_script("CREATE TABLE seen(x)").unwrap();
    write_cursor(&conn, "p", 3, 1).unwrap();
    for text in [
        "UPDATE _athanor_cursors SET last_event_id = 0",
        "DELETE FROM main._athanor_cursors",
        "INSERT INTO \"_Athanor_Meta\"(key, value) VALUES ('x', 1)",
        "DROP TABLE _athanor_migrations",
        "ALTER TABLE _athanor_meta ADD COLUMN y",
        "CREATE TABLE _athanor_mine(a)",
        "CREATE INDEX i ON _athanor_cursors(updated_at)",
        "CREATE TRIGGER t AFTER UPDATE ON _athanor_cursors BEGIN SELECT 1; END",
        "CREATE VIEW _athanor_v AS SELECT 1",
        "WITH x AS (SELECT 1) DELETE FROM _athanor_cursors",
    ] {
        let e = conn
            .prepare_raw(text)
            .err()
            .unwrap_or_else(|| panic!("{text} was allowed"));
        assert_eq!(e.code, Code::InvalidArgument, "{text}: {}", e.message);
        assert!(e.message.contains("_athanor_"), "{}", e.message);
        let e = conn
            .exec_script(&format!("CREATE TABLE ok1(a); {text}"))
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{text}");
    }
    // A trigger that writes athanor's tables can be created, but whatever fires it is refused.
    conn.exec_script(
        "CREATE TRIGGER sneaky AFTER INSERT ON seen BEGIN DELETE FROM _athanor_cursors; END",
    )
    .unwrap();
    let e = conn.exec_script("INSERT INTO seen VALUES (1)").unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.contains("sneaky"), "{}", e.message);
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM seen"), 0);
    assert_eq!(
        query_i64(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'ok1'"
        ),
        0
    );
    assert_eq!(read_cursor(&conn, "p").unwrap(), 3);
    // Reads stay allowed, and athanor's own writes still go through.
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM _athanor_cursors"), 1);
    bookkeeping::reset_processors(&conn, Some("p")).unwrap();
    assert_eq!(read_cursor(&conn, "p").unwrap(), 0);
}

#[test]
fn dead_letters_are_kept_counted_and_removed_per_processor() {
    let dir = TempDir::new().unwrap();
    let conn = open_main(dir.path()).unwrap();
    let failed = |at_ms| bookkeeping::Failed {
        code: "ERR_HANDLER",
        message: "boom",
        at_ms,
    };
    bookkeeping::record_dead_letter(&conn, "a", 7, "T", 2, failed(10)).unwrap();
    bookkeeping::record_dead_letter(&conn, "a", 5, "T", 1, failed(11)).unwrap();
    bookkeeping::record_dead_letter(&conn, "b", 5, "T", 1, failed(12)).unwrap();
    // The same event again (a crash before the cursor moved) adds attempts, no second row.
    bookkeeping::record_dead_letter(&conn, "a", 7, "T", 3, failed(13)).unwrap();
    let list = bookkeeping::dead_letters(&conn, "a", -1, 0).unwrap();
    assert_eq!(list.iter().map(|d| d.event_id).collect::<Vec<_>>(), [5, 7]);
    assert_eq!(
        (
            list[1].attempts,
            list[1].first_failed_at,
            list[1].last_failed_at
        ),
        (5, 10, 13)
    );
    assert_eq!(bookkeeping::dead_letter_count(&conn, "a").unwrap(), 2);
    assert_eq!(
        bookkeeping::dead_letters(&conn, "a", 1, 1).unwrap()[0].event_id,
        7
    );
    let id = list[0].id;
    assert!(bookkeeping::dead_letter(&conn, "b", id).unwrap().is_none());
    bookkeeping::dead_letter_failed_again(&conn, id, failed(20)).unwrap();
    assert_eq!(
        bookkeeping::dead_letter(&conn, "a", id)
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
    assert_eq!(
        bookkeeping::dead_letter_for_event(&conn, "a", 7)
            .unwrap()
            .unwrap()
            .id,
        list[1].id
    );
    assert!(!bookkeeping::remove_dead_letter(&conn, "b", id).unwrap());
    assert!(bookkeeping::remove_dead_letter(&conn, "a", id).unwrap());
    assert_eq!(bookkeeping::remove_dead_letters(&conn, "a").unwrap(), 1);
    assert_eq!(bookkeeping::dead_letter_count(&conn, "b").unwrap(), 1);
    let m = bookkeeping::AppliedMigration {
        version: 1,
        name: "init".into(),
        checksum: "c".into(),
        applied_at: 5,
    };
    bookkeeping::record_migration(&conn, &m).unwrap();
    assert_eq!(bookkeeping::migrations(&conn).unwrap(), [m]);
    bookkeeping::unrecord_migration(&conn, 1).unwrap();
    assert!(bookkeeping::migrations(&conn).unwrap().is_empty());
}

#[test]
fn the_background_connection_opens_on_first_use_and_refuses_work_once_closed() {
    let dir = TempDir::new().unwrap();
    let e = engine(dir.path());
    drop(decl(dir.path()));
    let bg = background::Background::new(dir.path());
    let spec = Spec::compile(LEDGER).unwrap();
    log(&e, &[("Opened", r#"{"id":"a","owner":"ann"}"#)]);
    let o = bg.run_batch(&e, &spec, 10).unwrap();
    assert_eq!((o.consumed, o.cursor), (1, 1));
    bg.close();
    log(&e, &[("Deposited", r#"{"id":"a","amount":5}"#)]);
    assert_eq!(bg.run_batch(&e, &spec, 10).unwrap_err().code, Code::Closed);
    assert_eq!(
        bg.retry_dead_letter(&e, &spec, 1).unwrap_err().code,
        Code::Closed
    );
    let main = open_main(dir.path()).unwrap();
    assert_eq!(read_cursor(&main, "ledger").unwrap(), 1);
}

#[test]
fn a_file_with_a_hot_journal_is_verified_and_read_not_refused() {
    // What a power loss during projection.db's creation can leave: the rollback journal
    // of the transaction that switched it to WAL, which a read-only connection cannot
    // roll back. Made here by copying the files while a transaction that spilled to the
    // database file is open.
    let live = TempDir::new().unwrap();
    let path = file_path(live.path());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE t(x); INSERT INTO t VALUES (1);
         PRAGMA cache_size = 1; BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t SELECT randomblob(200) FROM n;",
    )
    .unwrap();
    let copy = TempDir::new().unwrap();
    for name in [FILE_NAME, "projection.db-journal"] {
        std::fs::copy(live.path().join(name), copy.path().join(name)).unwrap();
    }
    drop(conn);
    let path = file_path(copy.path());
    verify_file(&path, 0).unwrap();
    let reader = open_for_reading(&path).unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the unfinished transaction is rolled back");
}

#[test]
fn table_access_names_what_a_statement_reads_and_changes_through_views_and_triggers() {
    let dir = TempDir::new().unwrap();
    let mut conn = open_main(dir.path()).unwrap();
    conn.exec_script(
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, total INTEGER);
         CREATE TABLE secrets(k TEXT, v TEXT);
         CREATE TABLE log(msg TEXT);
         CREATE VIEW leaky AS SELECT v FROM secrets;
         CREATE TRIGGER spy AFTER INSERT ON orders BEGIN INSERT INTO log SELECT v FROM secrets; END",
    )
    .unwrap();
    let access = |sql: &str| -> Vec<(String, bool)> {
        conn.table_access(sql)
            .unwrap()
            .into_iter()
            .map(|t| (t.table, t.write))
            .collect()
    };
    let r = |t: &str| (t.to_string(), false);
    let w = |t: &str| (t.to_string(), true);
    assert_eq!(
        access("SELECT total FROM orders WHERE id = 1"),
        [r("orders")]
    );
    assert_eq!(access("SELECT 1"), Vec::<(String, bool)>::new());
    // A view is read through: what it reads is what the statement reads.
    assert!(access("SELECT * FROM leaky").contains(&r("secrets")));
    // A trigger's body is part of the statement that fires it.
    let ins = access("INSERT INTO orders(total) VALUES (5)");
    for t in [w("orders"), w("log"), r("secrets")] {
        assert!(ins.contains(&t), "{t:?} in {ins:?}");
    }
    assert!(access("UPDATE orders SET total = 1").contains(&w("orders")));
    assert!(access("DELETE FROM log").contains(&w("log")));
    assert!(access("CREATE INDEX o_total ON orders(total)").contains(&w("orders")));
    assert_eq!(access("DROP TABLE log"), [w("log")]);
    assert_eq!(
        access("SELECT name FROM sqlite_master"),
        Vec::<(String, bool)>::new()
    );
    assert!(access("ALTER TABLE log ADD COLUMN at INTEGER").contains(&w("log")));
    assert!(access("CREATE TABLE fresh(a)").contains(&w("fresh")));
    assert!(access("PRAGMA user_version = 3").contains(&w("")));
    assert_eq!(access("VACUUM"), [w("")]);
    // Compiling runs nothing.
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM orders"), 0);
    assert!(conn.table_access("SELEC nonsense").is_err());
    // The recording stops with the call: a later prepare records nothing.
    conn.prepare_raw("SELECT * FROM orders").unwrap();
    assert_eq!(access("SELECT k FROM secrets"), [r("secrets")]);
}
