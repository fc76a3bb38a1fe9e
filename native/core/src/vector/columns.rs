//! Typed per-field metadata columns, so a filter is checked without walking a
//! document's JSON.
//!
//! Checking a filter against stored metadata chases pointers (the document's
//! JSON, its map, the key, the value) and costs more than a distance; a filter
//! text searched for the first time pays that for every document it checks.
//! A column holds one field's value for every slot as a 16-byte cell (a number,
//! a string interned per column, a boolean, null, missing), built the first
//! time a filter names the field and kept up to date as documents are added,
//! so every later filter on that field, whatever its text, reads one cell per
//! document. Conditions are evaluated by the filter's own code on the cell's
//! value, so a column answers exactly what the metadata would; values a cell
//! cannot hold (arrays, objects) are checked on the metadata itself.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Number, Value as Json};

use super::filter::{conds_hold, lookup, Cond, Filter};

/// Fields a collection keeps columns for; filters on further fields are
/// checked on the metadata.
pub(super) const MAX_COLUMNS: usize = 16;

/// One slot's value of a field.
#[derive(Clone, Copy)]
enum Cell {
    /// The document has no metadata: no filter with a clause matches it.
    NoMetadata,
    /// The metadata has no value at the field's path.
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    /// Index into the column's strings.
    Str(u32),
    /// An array or an object: checked on the metadata.
    Other,
}

/// One field's values, per slot.
#[derive(Clone)]
pub(super) struct Column {
    path: Vec<String>,
    cells: Vec<Cell>,
    /// Distinct strings, each as the JSON value the filter's conditions take.
    strings: Vec<Json>,
    string_ids: HashMap<String, u32>,
}

impl Column {
    fn new(path: &[String]) -> Self {
        Column {
            path: path.to_vec(),
            cells: Vec::new(),
            strings: Vec::new(),
            string_ids: HashMap::new(),
        }
    }

    /// Appends the next slot's value.
    fn push(&mut self, meta: Option<&Json>) {
        let cell = match meta {
            None => Cell::NoMetadata,
            Some(m) => match lookup(m, &self.path) {
                None => Cell::Missing,
                Some(Json::Null) => Cell::Null,
                Some(Json::Bool(b)) => Cell::Bool(*b),
                Some(Json::Number(n)) => n.as_f64().map_or(Cell::Other, Cell::Num),
                Some(Json::String(s)) => Cell::Str(self.intern(s)),
                Some(_) => Cell::Other,
            },
        };
        self.cells.push(cell);
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(Json::String(s.to_owned()));
        self.string_ids.insert(s.to_owned(), i);
        i
    }
}

/// A collection's columns, by field (the dotted path as the filter spells it).
#[derive(Default)]
pub(super) struct Columns {
    by_field: HashMap<String, Arc<Column>>,
}

impl Columns {
    /// Appends a new slot's value to every column (the slot after the last one).
    pub(super) fn push(&mut self, meta: Option<&Json>) {
        for c in self.by_field.values_mut() {
            Arc::make_mut(c).push(meta);
        }
    }

    /// `filter` bound to a column per clause, building the missing ones from
    /// `metas` (every slot's metadata, in slot order); `None` when that would
    /// pass [`MAX_COLUMNS`].
    pub(super) fn compile<'f, 'm, I>(
        &mut self,
        filter: &'f Filter,
        metas: impl Fn() -> I,
    ) -> Option<CompiledFilter<'f>>
    where
        I: Iterator<Item = Option<&'m Json>>,
    {
        let mut clauses = Vec::new();
        for (path, conds) in filter.clauses() {
            let field = path.join(".");
            let column = match self.by_field.get(&field) {
                Some(c) => c.clone(),
                None => {
                    if self.by_field.len() >= MAX_COLUMNS {
                        return None;
                    }
                    let mut c = Column::new(path);
                    for m in metas() {
                        c.push(m);
                    }
                    let c = Arc::new(c);
                    self.by_field.insert(field, c.clone());
                    c
                }
            };
            clauses.push((column, conds));
        }
        Some(CompiledFilter { clauses })
    }
}

/// A filter whose every clause reads a column.
pub(super) struct CompiledFilter<'f> {
    clauses: Vec<(Arc<Column>, &'f [Cond])>,
}

impl CompiledFilter<'_> {
    /// Whether slot `slot` (whose metadata is `meta`) satisfies every clause.
    #[inline]
    pub(super) fn matches(&self, slot: u32, meta: Option<&Json>) -> bool {
        self.clauses
            .iter()
            .all(|(col, conds)| match col.cells.get(slot as usize) {
                Some(Cell::NoMetadata) => false,
                Some(Cell::Missing) => conds_hold(conds, None),
                Some(Cell::Null) => conds_hold(conds, Some(&Json::Null)),
                Some(Cell::Bool(b)) => conds_hold(conds, Some(&Json::Bool(*b))),
                Some(Cell::Num(x)) => {
                    Number::from_f64(*x).is_some_and(|n| conds_hold(conds, Some(&Json::Number(n))))
                }
                Some(Cell::Str(i)) => conds_hold(conds, col.strings.get(*i as usize)),
                Some(Cell::Other) | None => {
                    meta.is_some_and(|m| conds_hold(conds, lookup(m, &col.path)))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every filter answers through its columns exactly what it answers on the
    /// metadata, for values of every kind, missing fields and no metadata.
    #[test]
    fn columns_answer_what_the_metadata_answers() {
        let metas: Vec<Option<Json>> = vec![
            None,
            Some(json!({})),
            Some(json!({ "n": 3, "s": "b", "b": true, "z": null })),
            Some(json!({ "n": 3.0, "s": "a", "b": false, "a": { "x": 2 } })),
            Some(json!({ "n": -1, "s": "ab", "t": ["a", "c"], "a": { "x": "2" } })),
            Some(json!({ "n": 1e300, "s": "", "t": "a", "a": 7 })),
            Some(json!({ "n": 18446744073709551615u64, "s": "b", "z": 0 })),
            Some(json!({ "n": [3], "s": { "k": 1 }, "b": 1 })),
            Some(json!(5)),
        ];
        let filters = [
            r#"{"n":3}"#,
            r#"{"n":{"ne":3}}"#,
            r#"{"n":{"gt":0,"lte":3}}"#,
            r#"{"n":{"lt":"x"}}"#,
            r#"{"n":{"in":[3,-1,"3"]}}"#,
            r#"{"n":{"gte":1.8446744073709552e19}}"#,
            r#"{"s":"b"}"#,
            r#"{"s":{"gte":"a","lt":"b"}}"#,
            r#"{"s":{"in":["a","","zz"]}}"#,
            r#"{"s":{"ne":"b"}}"#,
            r#"{"s":"never"}"#,
            r#"{"b":true}"#,
            r#"{"b":{"ne":false}}"#,
            r#"{"z":null}"#,
            r#"{"z":{"ne":null}}"#,
            r#"{"t":"a"}"#,
            r#"{"a.x":2}"#,
            r#"{"a.x":{"ne":2}}"#,
            r#"{"missing":{"ne":1}}"#,
            r#"{"missing":1}"#,
            r#"{"n":3,"s":"b"}"#,
            r#"{"n":{"gt":0},"s":{"ne":"a"},"b":true}"#,
        ];
        let mut cols = Columns::default();
        // Half the slots are there when the columns are built, half are pushed after.
        let (before, after) = metas.split_at(4);
        for text in filters {
            let f = Filter::parse(text).unwrap();
            let compiled = cols
                .compile(&f, || before.iter().map(|m| m.as_ref()))
                .unwrap();
            for (slot, m) in before.iter().enumerate() {
                assert_eq!(
                    compiled.matches(slot as u32, m.as_ref()),
                    f.matches(m.as_ref()),
                    "{text} on slot {slot}"
                );
            }
        }
        for m in after {
            cols.push(m.as_ref());
        }
        for text in filters {
            let f = Filter::parse(text).unwrap();
            let compiled = cols
                .compile(&f, || metas.iter().map(|m| m.as_ref()))
                .unwrap();
            for (slot, m) in metas.iter().enumerate() {
                assert_eq!(
                    compiled.matches(slot as u32, m.as_ref()),
                    f.matches(m.as_ref()),
                    "{text} on slot {slot}"
                );
            }
        }
    }

    #[test]
    fn columns_stop_at_the_cap() {
        let mut cols = Columns::default();
        for i in 0..MAX_COLUMNS {
            let f = Filter::parse(&format!(r#"{{"f{i}":1}}"#)).unwrap();
            assert!(cols.compile(&f, std::iter::empty).is_some());
        }
        let f = Filter::parse(r#"{"another":1}"#).unwrap();
        assert!(cols.compile(&f, std::iter::empty).is_none());
        let f = Filter::parse(r#"{"f0":2}"#).unwrap();
        assert!(cols.compile(&f, std::iter::empty).is_some());
    }
}
