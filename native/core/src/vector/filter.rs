//! Metadata filters: `{ field: value }` (equality), `{ field: { in: [...] } }`,
//! `{ field: { gt, gte, lt, lte, eq, ne } }`, several fields meaning all must hold.
//! Fields may be dotted paths into nested objects (`"author.name"`).

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One condition on a field's value.
#[derive(Debug, Clone)]
pub(super) enum Cond {
    Eq(Json),
    Ne(Json),
    In(Vec<Json>),
    Gt(Json),
    Gte(Json),
    Lt(Json),
    Lte(Json),
}

/// A compiled filter. Documents without metadata match only an empty filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    clauses: Vec<(Vec<String>, Vec<Cond>)>,
    /// The text it was compiled from: searches with the same text share the
    /// per-document answers the index caches for it.
    key: String,
}

impl Filter {
    /// Compiles a filter from its JSON text.
    pub fn parse(text: &str) -> Result<Filter> {
        let v: Json = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        let Json::Object(map) = v else {
            return Err(Error::invalid(
                "filter must be an object like { field: value } or { field: { in: [...] } }",
            ));
        };
        let mut clauses = Vec::with_capacity(map.len());
        for (field, spec) in map {
            if field.is_empty() {
                return Err(Error::invalid("filter field names must not be empty"));
            }
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            let conds = match spec {
                Json::Object(ops) => {
                    if ops.is_empty() {
                        return Err(Error::invalid(format!(
                            "filter on {field:?} is an empty object; use {{ eq: ... }}, {{ in: [...] }} or a range"
                        )));
                    }
                    let mut conds = Vec::new();
                    for (op, arg) in ops {
                        let range = |c: fn(Json) -> Cond| -> Result<Cond> {
                            if arg.is_number() || arg.is_string() {
                                Ok(c(arg.clone()))
                            } else {
                                Err(Error::invalid(format!(
                                    "filter {field:?}: {op} needs a number or a string"
                                )))
                            }
                        };
                        conds.push(match op.as_str() {
                            "eq" => Cond::Eq(arg.clone()),
                            "ne" => Cond::Ne(arg.clone()),
                            "in" => match &arg {
                                Json::Array(a) => Cond::In(a.clone()),
                                _ => {
                                    return Err(Error::invalid(format!(
                                        "filter {field:?}: in needs an array"
                                    )))
                                }
                            },
                            "gt" => range(Cond::Gt)?,
                            "gte" => range(Cond::Gte)?,
                            "lt" => range(Cond::Lt)?,
                            "lte" => range(Cond::Lte)?,
                            other => {
                                return Err(Error::invalid(format!(
                                    "filter {field:?}: unknown operator {other:?} (use eq, ne, in, gt, gte, lt, lte)"
                                )))
                            }
                        });
                    }
                    conds
                }
                other => vec![Cond::Eq(other)],
            };
            clauses.push((path, conds));
        }
        Ok(Filter {
            clauses,
            key: text.to_owned(),
        })
    }

    /// The text the filter was compiled from.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Number of conditions, over all fields (what checking a document costs).
    pub fn clause_count(&self) -> usize {
        self.clauses.iter().map(|(_, c)| c.len()).sum()
    }

    /// Whether the filter has no clause (matches everything).
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Whether a document's metadata satisfies every clause.
    pub fn matches(&self, meta: Option<&Json>) -> bool {
        if self.clauses.is_empty() {
            return true;
        }
        let Some(meta) = meta else { return false };
        self.clauses
            .iter()
            .all(|(path, conds)| conds_hold(conds, lookup(meta, path)))
    }

    /// Each clause: the field's path and its conditions.
    pub(super) fn clauses(&self) -> impl Iterator<Item = (&[String], &[Cond])> {
        self.clauses
            .iter()
            .map(|(p, c)| (p.as_slice(), c.as_slice()))
    }
}

/// The value at a dotted path inside metadata; `None` when a step is missing.
pub(super) fn lookup<'j>(meta: &'j Json, path: &[String]) -> Option<&'j Json> {
    let mut v = meta;
    for p in path {
        v = v.get(p)?;
    }
    Some(v)
}

/// Whether a field's value (`None`: the field is missing) satisfies every
/// condition: a missing field satisfies only `ne`.
pub(super) fn conds_hold(conds: &[Cond], v: Option<&Json>) -> bool {
    match v {
        Some(v) => conds.iter().all(|c| eval(c, v)),
        None => conds.iter().all(|c| matches!(c, Cond::Ne(_))),
    }
}

fn eq(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn cmp(a: &Json, b: &Json) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn eval(c: &Cond, v: &Json) -> bool {
    use std::cmp::Ordering::*;
    match c {
        Cond::Eq(x) => eq(v, x) || v.as_array().is_some_and(|a| a.iter().any(|e| eq(e, x))),
        Cond::Ne(x) => !eq(v, x),
        Cond::In(xs) => xs.iter().any(|x| eq(v, x)),
        Cond::Gt(x) => cmp(v, x) == Some(Greater),
        Cond::Gte(x) => matches!(cmp(v, x), Some(Greater | Equal)),
        Cond::Lt(x) => cmp(v, x) == Some(Less),
        Cond::Lte(x) => matches!(cmp(v, x), Some(Less | Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_equality_in_and_ranges() {
        let m = json!({ "lang": "en", "year": 2020, "tags": ["a", "b"], "a": { "b": 1 } });
        let t = |f: &str| Filter::parse(f).unwrap().matches(Some(&m));
        assert!(t(r#"{"lang":"en"}"#));
        assert!(!t(r#"{"lang":"fr"}"#));
        assert!(t(r#"{"lang":{"in":["fr","en"]}}"#));
        assert!(t(r#"{"year":{"gte":2020,"lt":2021}}"#));
        assert!(!t(r#"{"year":{"gt":2020}}"#));
        assert!(t(r#"{"tags":"b"}"#));
        assert!(t(r#"{"a.b":1.0}"#));
        assert!(t(r#"{"missing":{"ne":1}}"#));
        assert!(!t(r#"{"missing":1}"#));
        assert!(!Filter::parse(r#"{"x":1}"#).unwrap().matches(None));
        assert!(Filter::parse("[]").is_err());
        assert!(Filter::parse(r#"{"x":{"like":1}}"#).is_err());
        assert!(Filter::parse(r#"{"x":{"gt":[1]}}"#).is_err());
    }
}
