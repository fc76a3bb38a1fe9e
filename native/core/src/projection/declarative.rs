//! Declarative projections: event types mapped to SQL statements whose
//! parameters are taken from the event (JSON paths into the payload, or event
//! metadata). Compiled once, executed here with cached prepared statements and
//! no JavaScript call per event; a whole batch is one native call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value as Json;

use super::bookkeeping::{self, read_cursor, write_cursor};
use super::sql::{RawStmt, SqlConn, SqlValue};
use super::{read_events_after, LogEvent};
use crate::codec::PayloadKind;
use crate::engine::Engine;
use crate::error::{Code, Error, Result};

static NEXT_SPEC: AtomicU64 = AtomicU64::new(1);

/// Where one statement parameter comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The whole payload: JSON text, or a blob for bytes payloads (`$`).
    Payload,
    /// A path into a JSON payload (`$.a.b[0]`); missing → NULL.
    Path(Vec<Seg>),
    /// Event metadata: `@id`, `@type`, `@at`, `@commitSeq`.
    Id,
    Type,
    At,
    CommitSeq,
    /// A constant (`{ "value": ... }`).
    Const(SqlValue),
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
enum Binding {
    Positional(Vec<Source>),
    Named(Vec<(String, Source)>),
}

#[derive(Debug)]
struct Action {
    sql: String,
    binding: Binding,
}

/// What to do for one event type: its actions (the wildcard's included) and the
/// top-level payload keys they read, so a payload is parsed only as far as needed.
#[derive(Debug, Default)]
struct Plan {
    actions: Vec<usize>,
    keys: Vec<String>,
    /// Some path starts with an index (`$[0]`): parse the whole payload.
    full: bool,
}

impl Plan {
    fn new(actions: Vec<usize>, all: &[Action]) -> Plan {
        let mut plan = Plan {
            actions,
            ..Plan::default()
        };
        for &ai in &plan.actions {
            let srcs: Vec<&Source> = match &all[ai].binding {
                Binding::Positional(s) => s.iter().collect(),
                Binding::Named(p) => p.iter().map(|(_, s)| s).collect(),
            };
            for s in srcs {
                if let Source::Path(segs) = s {
                    match segs.first() {
                        Some(Seg::Key(k)) if !plan.keys.contains(k) => plan.keys.push(k.clone()),
                        Some(Seg::Key(_)) => {}
                        Some(Seg::Index(_)) => plan.full = true,
                        None => {}
                    }
                }
            }
        }
        plan
    }
}

/// A compiled declarative projection.
#[derive(Debug)]
pub struct Spec {
    uid: u64,
    /// The projection's name: also its cursor's and dead letters' name.
    pub name: String,
    by_type: HashMap<String, Plan>,
    wildcard: Plan,
    actions: Vec<Action>,
    /// The namespace whose log it reads (0: the default namespace); set by the handle
    /// that runs it, never by the spec's JSON.
    pub namespace: u32,
}

impl Spec {
    /// Compiles a spec given as JSON:
    /// `{"name": "...", "on": {"<type>|*": [{"sql": "...", "params": [<src>...] | {"name": <src>}}]}}`
    /// where `<src>` is `"$"`, `"$.path[0].x"`, `"@id"`, `"@type"`, `"@at"`, `"@commitSeq"`
    /// or `{"value": <constant>}`.
    pub fn compile(json: &str) -> Result<Spec> {
        let v: Json = serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("projection spec is not valid JSON: {e}")))?;
        let name = v
            .get("name")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid("projection spec needs a non-empty string `name`"))?
            .to_string();
        let on = v.get("on").and_then(Json::as_object).ok_or_else(|| {
            Error::invalid(
                "projection spec needs `on`: an object mapping event types to SQL actions",
            )
        })?;
        if on.is_empty() {
            return Err(Error::invalid(
                "projection spec `on` maps no event type; add at least one",
            ));
        }
        let mut actions_all = Vec::new();
        let mut typed: Vec<(String, Vec<usize>)> = Vec::new();
        let mut wildcard = Vec::new();
        for (event_type, actions) in on {
            let list = match actions {
                Json::Array(a) => a.clone(),
                Json::Object(_) => vec![actions.clone()],
                _ => {
                    return Err(Error::invalid(format!(
                        "on[{event_type:?}] must be an action {{sql, params}} or a list of them"
                    )))
                }
            };
            let mut idx = Vec::new();
            for a in &list {
                idx.push(actions_all.len());
                actions_all.push(compile_action(event_type, a)?);
            }
            if event_type == "*" {
                wildcard = idx;
            } else {
                typed.push((event_type.clone(), idx));
            }
        }
        let by_type = typed
            .into_iter()
            .map(|(t, mut idx)| {
                idx.extend_from_slice(&wildcard);
                (t, Plan::new(idx, &actions_all))
            })
            .collect();
        Ok(Spec {
            uid: NEXT_SPEC.fetch_add(1, Ordering::Relaxed),
            name,
            by_type,
            wildcard: Plan::new(wildcard, &actions_all),
            actions: actions_all,
            namespace: 0,
        })
    }

    fn plan_for(&self, event_type: &str) -> &Plan {
        self.by_type.get(event_type).unwrap_or(&self.wildcard)
    }
}

/// A payload parsed as far as the event's plan needs.
enum Parsed {
    NotYet,
    /// Values of the plan's top-level keys (None = absent).
    Picked(Vec<Option<Json>>),
    Full(Json),
}

/// A map key, borrowed from the payload when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Walks a JSON payload once, keeping only the values of `keys` (others are skipped
/// without being built).
struct Pick<'k>(&'k [String]);

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Vec<Option<Json>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON payload")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.len()];
        while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
            match self.0.iter().position(|x| *x == k) {
                Some(i) => out[i] = Some(m.next_value::<Json>()?),
                None => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
    // Not an object: every path is absent.
    fn visit_seq<A: de::SeqAccess<'de>>(
        self,
        mut s: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(vec![None; self.0.len()])
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
}

fn pick(payload: &[u8], keys: &[String]) -> serde_json::Result<Vec<Option<Json>>> {
    let mut d = serde_json::Deserializer::from_slice(payload);
    let v = d.deserialize_any(Pick(keys))?;
    d.end()?;
    Ok(v)
}

fn compile_action(event_type: &str, a: &Json) -> Result<Action> {
    let where_ = format!("on[{event_type:?}]");
    let sql = a
        .get("sql")
        .and_then(Json::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Error::invalid(format!("{where_} needs a non-empty string `sql`")))?
        .to_string();
    let binding = match a.get("params") {
        None | Some(Json::Null) => Binding::Positional(Vec::new()),
        Some(Json::Array(list)) => Binding::Positional(
            list.iter()
                .map(|p| compile_source(&where_, p))
                .collect::<Result<_>>()?,
        ),
        Some(Json::Object(map)) => Binding::Named(
            map.iter()
                .map(|(k, p)| {
                    let bare = k.trim_start_matches([':', '@', '$']).to_string();
                    Ok((bare, compile_source(&where_, p)?))
                })
                .collect::<Result<_>>()?,
        ),
        Some(_) => {
            return Err(Error::invalid(format!(
                "{where_}.params must be a list (positional) or an object (named)"
            )))
        }
    };
    for key in a.as_object().into_iter().flat_map(|o| o.keys()) {
        if key != "sql" && key != "params" {
            return Err(Error::invalid(format!(
                "{where_} has unknown key {key:?}; an action has only `sql` and `params`"
            )));
        }
    }
    Ok(Action { sql, binding })
}

fn compile_source(where_: &str, p: &Json) -> Result<Source> {
    match p {
        Json::String(s) => match s.as_str() {
            "$" => Ok(Source::Payload),
            "@id" => Ok(Source::Id),
            "@type" => Ok(Source::Type),
            "@at" => Ok(Source::At),
            "@commitSeq" => Ok(Source::CommitSeq),
            s if s.starts_with('$') => parse_path(s).map(Source::Path).map_err(|m| {
                Error::invalid(format!("{where_}: bad JSON path {s:?}: {m}"))
            }),
            other => Err(Error::invalid(format!(
                "{where_}: parameter {other:?} is neither a JSON path ($, $.a.b, $.list[0]) nor @id/@type/@at/@commitSeq; wrap constants as {{\"value\": ...}}"
            ))),
        },
        Json::Object(o) if o.len() == 1 && o.contains_key("value") => {
            Ok(Source::Const(json_to_sql(&o["value"])))
        }
        _ => Err(Error::invalid(format!(
            "{where_}: a parameter must be a path string or {{\"value\": constant}}"
        ))),
    }
}

fn parse_path(s: &str) -> std::result::Result<Vec<Seg>, String> {
    let b = s.as_bytes();
    let mut i = 1; // past '$'
    let mut segs = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                if j == start {
                    return Err("empty key after '.'".into());
                }
                segs.push(Seg::Key(s[start..j].to_string()));
                i = j;
            }
            b'[' => {
                let end = s[i..].find(']').ok_or("unclosed '['")? + i;
                let inner = &s[i + 1..end];
                if let Some(q) = inner
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                {
                    segs.push(Seg::Key(q.to_string()));
                } else {
                    let n: usize = inner
                        .parse()
                        .map_err(|_| format!("index {inner:?} is not a non-negative integer"))?;
                    segs.push(Seg::Index(n));
                }
                i = end + 1;
            }
            _ => return Err(format!("unexpected character at {i}")),
        }
    }
    Ok(segs)
}

fn json_to_sql(v: &Json) -> SqlValue {
    match v {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Int(*b as i64),
        Json::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Int(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

/// Binds one JSON value without cloning strings.
fn bind_json(stmt: &RawStmt, i: usize, v: &Json) -> Result<()> {
    match v {
        Json::Null => stmt.bind_null(i),
        Json::Bool(b) => stmt.bind_i64(i, *b as i64),
        Json::Number(n) => match n.as_i64() {
            Some(x) => stmt.bind_i64(i, x),
            None => stmt.bind_f64(i, n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => stmt.bind_text(i, s.as_bytes()),
        other => stmt.bind_text(i, other.to_string().as_bytes()),
    }
}

/// The connection declarative batches run on, with its statement cache.
pub struct DeclConn {
    // Declared before `conn`: statements are finalized first.
    /// Per spec uid, per action index.
    stmts: HashMap<u64, Vec<Option<Prepared>>>,
    conn: SqlConn,
}

struct Prepared {
    stmt: RawStmt,
    /// Statement parameter index → source index in the action's binding.
    plan: Vec<(usize, usize)>,
}

/// Why applying one event failed.
enum ApplyError {
    /// The event (its payload or the SQL it produced) was refused: error strategies apply.
    Event(Error),
    /// The projection itself is broken (SQL does not prepare, parameters do not match) or
    /// the database is unavailable: the batch stops, whatever the strategy.
    Setup(Error),
}

/// An event a batch could not apply.
#[derive(Debug)]
pub struct Failure {
    /// The id of the event that failed.
    pub event_id: u64,
    /// Why it failed (the error strategies decide what happens next).
    pub error: Error,
}

/// What one batch did.
#[derive(Debug)]
pub struct BatchOutcome {
    /// Events the cursor moved over (applied or without a matching action).
    pub consumed: u32,
    /// The cursor after the batch.
    pub cursor: u64,
    /// The first event that failed; the cursor stops just before it.
    pub failure: Option<Failure>,
}

impl DeclConn {
    /// Wraps a read-write connection.
    pub fn new(conn: SqlConn) -> DeclConn {
        DeclConn {
            stmts: HashMap::new(),
            conn,
        }
    }

    fn prepared(&mut self, spec: &Spec, ai: usize) -> Result<&mut Prepared> {
        let slots = self.stmts.entry(spec.uid).or_default();
        if slots.len() < spec.actions.len() {
            slots.resize_with(spec.actions.len(), || None);
        }
        if slots[ai].is_none() {
            let a = &spec.actions[ai];
            let stmt = self.conn.prepare_raw(&a.sql).map_err(|e| {
                Error::new(
                    e.code,
                    format!(
                        "projection {:?}: cannot prepare {:?}: {}",
                        spec.name, a.sql, e.message
                    ),
                )
            })?;
            if stmt.txn_control() {
                return Err(Error::invalid(format!(
                    "projection {:?}: {:?} controls transactions; each batch is one transaction athanor commits with the cursor, so actions cannot hold BEGIN, COMMIT, ROLLBACK, SAVEPOINT or RELEASE",
                    spec.name, a.sql
                )));
            }
            let n = stmt.param_count();
            let plan = match &a.binding {
                Binding::Positional(srcs) => {
                    if srcs.len() != n {
                        return Err(Error::invalid(format!(
                            "projection {:?}: {:?} has {n} parameter(s) but {} param source(s) are given",
                            spec.name, a.sql, srcs.len()
                        )));
                    }
                    (0..n).map(|i| (i + 1, i)).collect()
                }
                Binding::Named(pairs) => {
                    let mut plan = Vec::new();
                    for i in 1..=n {
                        let name = stmt.param_name(i).ok_or_else(|| {
                            Error::invalid(format!(
                                "projection {:?}: {:?} uses positional parameters; give params as a list",
                                spec.name, a.sql
                            ))
                        })?;
                        let si =
                            pairs
                                .iter()
                                .position(|(k, _)| k == &name[1..])
                                .ok_or_else(|| {
                                    Error::invalid(format!(
                                        "projection {:?}: no param source for {name} in {:?}",
                                        spec.name, a.sql
                                    ))
                                })?;
                        plan.push((i, si));
                    }
                    plan
                }
            };
            self.stmts.get_mut(&spec.uid).unwrap()[ai] = Some(Prepared { stmt, plan });
        }
        Ok(self.stmts.get_mut(&spec.uid).unwrap()[ai].as_mut().unwrap())
    }

    fn apply(&mut self, spec: &Spec, ev: &LogEvent) -> std::result::Result<(), ApplyError> {
        let plan = spec.plan_for(&ev.event_type);
        let mut parsed = Parsed::NotYet;
        for &ai in &plan.actions {
            let p = self.prepared(spec, ai).map_err(ApplyError::Setup)?;
            let binding = &spec.actions[ai].binding;
            for &(pi, si) in &p.plan {
                let src = match binding {
                    Binding::Positional(s) => &s[si],
                    Binding::Named(pairs) => &pairs[si].1,
                };
                bind_source(&p.stmt, pi, src, ev, plan, &mut parsed).map_err(ApplyError::Event)?;
            }
            let r = (|| {
                while p.stmt.step()? {}
                Ok(())
            })();
            p.stmt.reset();
            if let Err(e) = r {
                let e: Error = e;
                return Err(match e.code {
                    // The database, not this event, is at fault: no dead letter.
                    Code::SqlBusy | Code::Io | Code::Corrupt => ApplyError::Setup(e),
                    _ => ApplyError::Event(Error {
                        message: format!(
                            "projection {:?}, event {} ({}): {}",
                            spec.name, ev.id, ev.event_type, e.message
                        ),
                        ..e
                    }),
                });
            }
        }
        Ok(())
    }

    /// Applies the next batch (at most `limit` events after the cursor) in one SQLite
    /// transaction that also moves the cursor. When an event fails, everything is rolled
    /// back, the events before it are applied again and committed with the cursor just
    /// before the failing one, which is reported: effects of earlier events are never
    /// applied twice, and the failing event's partial effects never stay.
    pub fn run_batch(
        &mut self,
        engine: &Engine,
        spec: &Spec,
        limit: usize,
    ) -> Result<BatchOutcome> {
        self.conn.exec("BEGIN IMMEDIATE")?;
        let r = self.batch_in_txn(engine, spec, limit, None);
        match r {
            Ok((outcome, start, commit)) => {
                if commit {
                    if let Err(e) = self.conn.exec("COMMIT") {
                        let _ = self.conn.exec("ROLLBACK");
                        return Err(e);
                    }
                } else {
                    self.conn.exec("ROLLBACK")?;
                }
                match outcome.failure {
                    Some(f) if outcome.consumed > 0 => {
                        // Commit the prefix that did apply, then report the failure.
                        let prefix = outcome.consumed as usize;
                        let before = start;
                        self.conn.exec("BEGIN IMMEDIATE")?;
                        match self.batch_in_txn(engine, spec, prefix, Some(before)) {
                            Ok((o, _, true)) if o.failure.is_none() => {
                                self.conn.exec("COMMIT")?;
                                Ok(BatchOutcome {
                                    consumed: o.consumed,
                                    cursor: o.cursor,
                                    failure: Some(f),
                                })
                            }
                            Ok(_) => {
                                // Someone else moved the cursor meanwhile, or the prefix now
                                // fails too: commit nothing; the next batch sorts it out.
                                self.conn.exec("ROLLBACK")?;
                                Ok(BatchOutcome {
                                    consumed: 0,
                                    cursor: before,
                                    failure: None,
                                })
                            }
                            Err(e) => {
                                let _ = self.conn.exec("ROLLBACK");
                                Err(e)
                            }
                        }
                    }
                    failure => Ok(BatchOutcome {
                        consumed: outcome.consumed,
                        cursor: outcome.cursor,
                        failure,
                    }),
                }
            }
            Err(e) => {
                let _ = self.conn.exec("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs inside an open transaction. Returns the outcome, the cursor it started
    /// from and whether to commit. With `expect_cursor`, does nothing unless the
    /// cursor is still there.
    fn batch_in_txn(
        &mut self,
        engine: &Engine,
        spec: &Spec,
        limit: usize,
        expect_cursor: Option<u64>,
    ) -> Result<(BatchOutcome, u64, bool)> {
        let cursor = read_cursor(&self.conn, &spec.name)?;
        if expect_cursor.is_some_and(|c| c != cursor) {
            return Ok((
                BatchOutcome {
                    consumed: 0,
                    cursor,
                    failure: None,
                },
                cursor,
                false,
            ));
        }
        let events = read_events_after(engine, spec.namespace, cursor, limit)?;
        let mut last = cursor;
        for (i, ev) in events.iter().enumerate() {
            match self.apply(spec, ev) {
                Ok(()) => last = ev.id,
                Err(ApplyError::Setup(e)) => return Err(e),
                Err(ApplyError::Event(e)) => {
                    return Ok((
                        BatchOutcome {
                            consumed: i as u32,
                            cursor: last,
                            failure: Some(Failure {
                                event_id: ev.id,
                                error: e,
                            }),
                        },
                        cursor,
                        false,
                    ))
                }
            }
        }
        if last != cursor {
            write_cursor(&self.conn, &spec.name, last, engine.store().now_ms())?;
        }
        Ok((
            BatchOutcome {
                consumed: events.len() as u32,
                cursor: last,
                failure: None,
            },
            cursor,
            last != cursor,
        ))
    }

    /// Re-applies the event of dead letter `dlq_id` (which must belong to this
    /// projection) and deletes the dead letter, in one transaction. When the event fails
    /// again, the dead letter's attempts, error and time are updated instead and the
    /// error is returned as `Ok(Some(..))`.
    pub fn retry_dead_letter(
        &mut self,
        engine: &Engine,
        spec: &Spec,
        dlq_id: i64,
    ) -> Result<Option<Error>> {
        self.conn.exec("BEGIN IMMEDIATE")?;
        let r = (|| -> Result<std::result::Result<(), ApplyError>> {
            let event_id = bookkeeping::dead_letter(&self.conn, &spec.name, dlq_id)?
                .ok_or_else(|| {
                    Error::new(
                        Code::NotFound,
                        format!("projection {:?} has no dead letter {dlq_id}", spec.name),
                    )
                })?
                .event_id as i64;
            let ev = read_events_after(engine, spec.namespace, event_id as u64 - 1, 1)?
                .into_iter()
                .next()
                .filter(|e| e.id == event_id as u64)
                .ok_or_else(|| {
                    Error::corrupt(format!("event {event_id} is missing from the log"))
                })?;
            let applied = self.apply(spec, &ev);
            if applied.is_ok() {
                bookkeeping::remove_dead_letter(&self.conn, &spec.name, dlq_id)?;
            }
            Ok(applied)
        })();
        match r {
            Ok(Ok(())) => {
                self.conn.exec("COMMIT")?;
                Ok(None)
            }
            Ok(Err(ApplyError::Setup(e))) | Err(e) => {
                let _ = self.conn.exec("ROLLBACK");
                Err(e)
            }
            Ok(Err(ApplyError::Event(e))) => {
                self.conn.exec("ROLLBACK")?;
                bookkeeping::dead_letter_failed_again(
                    &self.conn,
                    dlq_id,
                    bookkeeping::Failed {
                        code: e.code.as_str(),
                        message: &e.message,
                        at_ms: engine.store().now_ms(),
                    },
                )?;
                Ok(Some(e))
            }
        }
    }
}

fn bind_source(
    stmt: &RawStmt,
    i: usize,
    src: &Source,
    ev: &LogEvent,
    plan: &Plan,
    parsed: &mut Parsed,
) -> Result<()> {
    match src {
        Source::Id => stmt.bind_i64(i, ev.id as i64),
        Source::Type => stmt.bind_text(i, ev.event_type.as_bytes()),
        Source::At => stmt.bind_i64(i, ev.at_ms as i64),
        Source::CommitSeq => stmt.bind_i64(i, ev.commit_seq as i64),
        Source::Const(v) => stmt.bind_value(i, v),
        Source::Payload => match ev.kind {
            // Events reach here with their schema version split off (`projection::read_events_after`).
            PayloadKind::Json | PayloadKind::VersionedJson => stmt.bind_text(i, &ev.payload),
            PayloadKind::Bytes | PayloadKind::VersionedBytes => stmt.bind_blob(i, &ev.payload),
        },
        Source::Path(segs) => {
            if ev.kind != PayloadKind::Json {
                return Err(Error::new(
                    Code::Handler,
                    format!(
                        "event {} ({}) has a bytes payload; JSON paths need a JSON payload",
                        ev.id, ev.event_type
                    ),
                ));
            }
            if let Parsed::NotYet = parsed {
                let bad = |e: serde_json::Error| {
                    Error::new(
                        Code::Handler,
                        format!("event {} payload is not valid JSON: {e}", ev.id),
                    )
                };
                *parsed = if plan.full {
                    Parsed::Full(serde_json::from_slice(&ev.payload).map_err(bad)?)
                } else {
                    Parsed::Picked(pick(&ev.payload, &plan.keys).map_err(bad)?)
                };
            }
            let (mut v, rest) = match parsed {
                Parsed::Full(v) => (&*v, &segs[..]),
                Parsed::Picked(vals) => {
                    let Some(Seg::Key(k)) = segs.first() else {
                        return stmt.bind_null(i);
                    };
                    let slot = plan.keys.iter().position(|x| x == k);
                    match slot.and_then(|i| vals[i].as_ref()) {
                        Some(v) => (v, &segs[1..]),
                        None => return stmt.bind_null(i),
                    }
                }
                Parsed::NotYet => unreachable!(),
            };
            for s in rest {
                let next = match s {
                    Seg::Key(k) => v.get(k.as_str()),
                    Seg::Index(n) => v.get(*n),
                };
                match next {
                    Some(n) => v = n,
                    None => return stmt.bind_null(i),
                }
            }
            bind_json(stmt, i, v)
        }
    }
}
