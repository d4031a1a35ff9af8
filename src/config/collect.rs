//! Every deserialization error of a document, not just the first.
//!
//! serde stops at the first error of a `deserialize` call. So when the whole
//! document fails, each key is tried alone, as a one-entry document wrapped in
//! its enclosing tables (`{cpu: {cores: 4}}`, `{hostdev: [{romfile: ..}]}`).
//! This works for any wire type whose fields are all optional: a subset of a
//! valid document is valid. A key that fails alone is descended into when it
//! holds a table or an array of tables, otherwise its error is recorded. The
//! keys that pass make up a pruned document that deserializes, so semantic
//! validation can still run on the rest of the file.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an index into an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `hostdev[1].romfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub(crate) fn key(mut self, k: &str) -> Self {
        self.0.push(Seg::Key(k.to_string()));
        self
    }

    pub(crate) fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A deserialization error at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError {
    pub path: KeyPath,
    pub message: String,
    pub span: Range<usize>,
}

/// Deserializes `doc` into `T`, collecting every error. Returns `T` built from
/// the keys that had no error (`None` only if even that fails), and the errors.
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    doc: Spanned<DeTable<'_>>,
) -> (Option<T>, Vec<WireError>) {
    let span = doc.span();
    let table = doc.into_inner();
    if let Ok(t) = try_de::<T>(table.clone(), span.clone()) {
        return (Some(t), Vec::new());
    }
    let mut errors = Vec::new();
    let good = probe::<T>(&[], &table, &span, &KeyPath::default(), &mut errors);
    match try_de::<T>(good, span.clone()) {
        Ok(t) => (Some(t), errors),
        Err(e) => {
            // Not expected (every kept key passed alone); reported rather than
            // dropped so it cannot go unnoticed.
            errors.push(WireError {
                path: KeyPath::default(),
                message: e.message().to_string(),
                span: e.span().unwrap_or(span),
            });
            (None, errors)
        }
    }
}

/// Every string value under `table`, with its key path and span. The strings of an array share its path
/// (`cpu.features`); the tables of an array are indexed (`hostdev[1].romfile`).
pub(crate) fn strings<'a>(
    table: &'a DeTable<'_>,
    path: &KeyPath,
    out: &mut Vec<(KeyPath, Range<usize>, &'a str)>,
) {
    for (key, value) in table.iter() {
        string_values(value, &path.clone().key(key.get_ref()), out);
    }
}

fn string_values<'a>(
    value: &'a Spanned<DeValue<'_>>,
    path: &KeyPath,
    out: &mut Vec<(KeyPath, Range<usize>, &'a str)>,
) {
    match value.get_ref() {
        DeValue::String(s) => out.push((path.clone(), value.span(), s.as_ref())),
        DeValue::Table(t) => strings(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item.get_ref() {
                    DeValue::Table(t) => strings(t, &path.clone().index(i), out),
                    _ => string_values(item, path, out),
                }
            }
        }
        _ => {}
    }
}

fn try_de<T: DeserializeOwned>(
    table: DeTable<'_>,
    span: Range<usize>,
) -> Result<T, toml::de::Error> {
    T::deserialize(toml::de::Deserializer::from(Spanned::new(span, table)))
}

/// How a probed table sits in the document, outermost first.
#[derive(Clone)]
enum Step<'i> {
    /// Under this key of a table spanning `Range`.
    Key(Spanned<DeString<'i>>, Range<usize>),
    /// The only element of an array spanning `Range`.
    Elem(Range<usize>),
}

/// Rebuilds a whole document around `leaf` (a table at `ctx`).
fn wrap<'i>(
    ctx: &[Step<'i>],
    leaf: DeTable<'i>,
    leaf_span: Range<usize>,
) -> (DeTable<'i>, Range<usize>) {
    let mut cur = DeValue::Table(leaf);
    let mut span = leaf_span;
    for step in ctx.iter().rev() {
        match step {
            Step::Elem(array_span) => {
                let mut array = DeArray::new();
                array.push(Spanned::new(span, cur));
                cur = DeValue::Array(array);
                span = array_span.clone();
            }
            Step::Key(key, parent_span) => {
                let mut table = DeTable::new();
                table.insert(key.clone(), Spanned::new(span, cur));
                cur = DeValue::Table(table);
                span = parent_span.clone();
            }
        }
    }
    match cur {
        DeValue::Table(t) => (t, span),
        // `ctx` always starts with a key, so the outermost value is a table.
        other => {
            let mut t = DeTable::new();
            t.insert(
                Spanned::new(0..0, DeString::Borrowed("")),
                Spanned::new(span.clone(), other),
            );
            (t, span)
        }
    }
}

/// Tries each key of `table` alone; returns the keys that passed.
fn probe<'i, T: DeserializeOwned>(
    ctx: &[Step<'i>],
    table: &DeTable<'i>,
    table_span: &Range<usize>,
    path: &KeyPath,
    errors: &mut Vec<WireError>,
) -> DeTable<'i> {
    let mut good = DeTable::new();
    for (key, value) in table.iter() {
        let mut one = DeTable::new();
        one.insert(key.clone(), value.clone());
        let (doc, doc_span) = wrap(ctx, one, table_span.clone());
        let Err(err) = try_de::<T>(doc, doc_span) else {
            good.insert(key.clone(), value.clone());
            continue;
        };
        let key_path = path.clone().key(key.get_ref());
        let before = errors.len();
        let mut inner_ctx = ctx.to_vec();
        inner_ctx.push(Step::Key(key.clone(), table_span.clone()));
        // Descend only if the key itself is accepted with a value of this
        // shape; otherwise the key (an unknown section, say) is the error.
        let shape_ok = |shell: DeValue<'i>| {
            let mut one = DeTable::new();
            one.insert(key.clone(), Spanned::new(value.span(), shell));
            let (doc, doc_span) = wrap(ctx, one, table_span.clone());
            try_de::<T>(doc, doc_span).is_ok()
        };
        match value.get_ref() {
            DeValue::Table(sub) if !sub.is_empty() && shape_ok(DeValue::Table(DeTable::new())) => {
                let kept = probe::<T>(&inner_ctx, sub, &value.span(), &key_path, errors);
                if errors.len() > before {
                    good.insert(
                        key.clone(),
                        Spanned::new(value.span(), DeValue::Table(kept)),
                    );
                }
            }
            DeValue::Array(items) if is_tables(items) && shape_ok(empty_table_array()) => {
                inner_ctx.push(Step::Elem(value.span()));
                let mut kept = DeArray::new();
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(sub) = item.get_ref() {
                        let item_path = key_path.clone().index(i);
                        let t = probe::<T>(&inner_ctx, sub, &item.span(), &item_path, errors);
                        kept.push(Spanned::new(item.span(), DeValue::Table(t)));
                    }
                }
                if errors.len() > before {
                    good.insert(
                        key.clone(),
                        Spanned::new(value.span(), DeValue::Array(kept)),
                    );
                }
            }
            _ => {}
        }
        if errors.len() == before {
            // A leaf, or a table whose keys pass alone but not together.
            errors.push(WireError {
                path: key_path,
                message: err.message().to_string(),
                span: err.span().unwrap_or_else(|| value.span()),
            });
        }
    }
    good
}

fn empty_table_array<'i>() -> DeValue<'i> {
    let mut array = DeArray::new();
    array.push(Spanned::new(0..0, DeValue::Table(DeTable::new())));
    DeValue::Array(array)
}

fn is_tables(items: &DeArray<'_>) -> bool {
    !items.is_empty() && items.iter().all(|v| v.get_ref().is_table())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    // Fields are read only through `Debug`; their types are what is tested.
    #[allow(dead_code)]
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        a: Option<u32>,
        b: Option<String>,
        sub: Option<Sub>,
        item: Option<Vec<Sub>>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sub {
        x: Option<u32>,
        y: Option<bool>,
    }

    fn run(text: &str) -> (Option<Doc>, Vec<WireError>) {
        let (doc, syntax) = DeTable::parse_recoverable(text);
        assert!(syntax.is_empty(), "{syntax:?}");
        deserialize_all::<Doc>(doc)
    }

    fn at<'a>(text: &'a str, e: &WireError) -> &'a str {
        &text[e.span.clone()]
    }

    #[test]
    fn valid_document_has_no_errors() {
        let (doc, errors) = run("a = 1\n[sub]\nx = 2\n");
        assert!(errors.is_empty());
        assert_eq!(doc.and_then(|d| d.sub).and_then(|s| s.x), Some(2));
    }

    #[test]
    fn every_error_is_reported_with_its_key_and_span() {
        let text = "a = \"no\"\nb = 3\n[sub]\nx = 1\nz = 1\n[[item]]\ny = 1\n[[item]]\nx = 2\n";
        let (doc, errors) = run(text);
        let found: Vec<(String, &str)> = errors
            .iter()
            .map(|e| (e.path.to_string(), at(text, e)))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_string(), "\"no\""),
                ("b".to_string(), "3"),
                ("item[0].y".to_string(), "1"),
                ("sub.z".to_string(), "z"),
            ]
        );
        let doc = doc.unwrap_or_default();
        assert_eq!(doc.sub.and_then(|s| s.x), Some(1));
        assert_eq!(doc.item.map(|i| i.len()), Some(2));
    }

    #[test]
    fn wrong_type_for_a_table_is_a_leaf_error() {
        let text = "sub = 5\n";
        let (_, errors) = run(text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path.to_string(), "sub");
        assert_eq!(at(text, &errors[0]), "5");
    }

    #[test]
    fn unknown_table_is_one_error_at_its_name() {
        let text = "a = 1\n[nope]\nx = 1\ny = 2\n";
        let (doc, errors) = run(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path.to_string(), "nope");
        assert_eq!(at(text, &errors[0]), "nope");
        assert!(doc.is_some());
    }

    #[test]
    fn every_string_is_found_with_its_path() {
        let text = "b = \"top\"\n[sub]\nl = [\"x\", [\"y\"]]\n[[item]]\ns = \"z\"\n";
        let (doc, syntax) = DeTable::parse_recoverable(text);
        assert!(syntax.is_empty(), "{syntax:?}");
        let mut found = Vec::new();
        strings(doc.get_ref(), &KeyPath::default(), &mut found);
        let found: Vec<(String, &str, &str)> = found
            .iter()
            .map(|(p, span, s)| (p.to_string(), &text[span.clone()], *s))
            .collect();
        assert_eq!(
            found,
            [
                ("b".into(), "\"top\"", "top"),
                ("item[0].s".into(), "\"z\"", "z"),
                ("sub.l".into(), "\"x\"", "x"),
                ("sub.l".into(), "\"y\"", "y"),
            ]
        );
    }

    #[test]
    fn key_path_display() {
        let p = KeyPath::default().key("hostdev").index(1).key("romfile");
        assert_eq!(p.to_string(), "hostdev[1].romfile");
    }
}
