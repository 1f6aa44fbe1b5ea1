//! Where things are in a workflow file: the line and column of a byte
//! offset, the field at an offset (to name the field in toml's own errors)
//! and the span of a field (to place errors inside an `input` template).

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::reference::PathSegment;

/// The 1-based line of byte `offset`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The 1-based column, in characters, of byte `offset`.
pub(super) fn column_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    let line_start = text.as_bytes()[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text.get(line_start..offset).map_or(offset - line_start, |s| s.chars().count()) + 1
}

/// A field path as the file would spell it: `steps[2].retry.attempts`,
/// with keys that are not bare TOML keys quoted (`cases."needs review"`).
pub(super) fn field_name(path: &[PathSegment]) -> String {
    let mut name = String::new();
    for segment in path {
        match segment {
            PathSegment::Index(index) => name.push_str(&format!("[{index}]")),
            PathSegment::Key(key) => {
                if !name.is_empty() {
                    name.push('.');
                }
                let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare { name.push_str(key) } else { name.push_str(&format!("{key:?}")) }
            }
        }
    }
    name
}

/// The path of the most specific key or array element whose span holds
/// `offset`, if the file parses.
pub(super) fn field_at(text: &str, offset: usize) -> Option<Vec<PathSegment>> {
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    walk_table(root.get_ref(), &mut Vec::new(), &mut |at, key_span, value_span| {
        let holds = |span: &Range<usize>| span.contains(&offset) || (span.is_empty() && span.start == offset);
        let deeper = best.as_ref().is_none_or(|b: &Vec<PathSegment>| b.len() < at.len());
        if deeper && (key_span.as_ref().is_some_and(holds) || holds(&value_span)) {
            best = Some(at.to_vec());
        }
    });
    best
}

/// The span of the value at `path` (keys and array indexes from the top).
pub(super) fn span_at(text: &str, path: &[PathSegment]) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut found = None;
    walk_table(root.get_ref(), &mut Vec::new(), &mut |at, _, value_span| {
        if at == path {
            found = Some(value_span);
        }
    });
    found
}

/// Called with a field's path, its key's span (none for array elements)
/// and its value's span.
type Visit<'v> = dyn FnMut(&[PathSegment], Option<Range<usize>>, Range<usize>) + 'v;

/// Calls `visit(path, key span, value span)` for every key and array
/// element. Spans of tables and array-of-tables elements cover only their
/// headers, so every entry is visited, not only those inside a span.
fn walk_table(table: &DeTable<'_>, at: &mut Vec<PathSegment>, visit: &mut Visit<'_>) {
    for (key, value) in table.iter() {
        at.push(PathSegment::Key(key.get_ref().to_string()));
        visit(at, Some(key.span()), value.span());
        walk_value(value, at, visit);
        at.pop();
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, at: &mut Vec<PathSegment>, visit: &mut Visit<'_>) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, at, visit),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                at.push(PathSegment::Index(index));
                visit(at, None, item.span());
                walk_value(item, at, visit);
                at.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "a = 1\n[[steps]]\nid = \"x\"\nretry = { attempts = 2 }\n[[steps]]\nid = \"é\"\n[steps.input]\nk = [1, 2]\n";

    #[test]
    fn lines_and_columns_are_one_based() {
        assert_eq!((line_of(TEXT, 0), column_of(TEXT, 0)), (1, 1));
        let offset = TEXT.find("attempts").unwrap();
        assert_eq!((line_of(TEXT, offset), column_of(TEXT, offset)), (4, 11));
        let after_accent = TEXT.find("é").unwrap() + 'é'.len_utf8();
        assert_eq!(column_of(TEXT, after_accent), 8);
    }

    #[test]
    fn finds_the_field_at_an_offset_and_the_span_of_a_field() {
        let name = |offset| field_at(TEXT, offset).map(|path| field_name(&path));
        assert_eq!(name(TEXT.find("attempts").unwrap()).as_deref(), Some("steps[0].retry.attempts"));
        assert_eq!(name(TEXT.find("2]").unwrap()).as_deref(), Some("steps[1].input.k[1]"));
        assert_eq!(name(TEXT.find("[[steps]]").unwrap()).as_deref(), Some("steps[0]"));
        let path = [PathSegment::Key("steps".into()), PathSegment::Index(1), PathSegment::Key("id".into())];
        assert_eq!(span_at(TEXT, &path).map(|span| line_of(TEXT, span.start)), Some(6));
    }

    #[test]
    fn field_names_quote_keys_that_are_not_bare() {
        let path = [PathSegment::Key("cases".into()), PathSegment::Key("needs review".into())];
        assert_eq!(field_name(&path), r#"cases."needs review""#);
    }
}
