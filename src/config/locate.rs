//! Finds the line of a dotted key path (`routes[2].verify.secrets[1]`) in a TOML
//! text, so every configuration problem can name the line at fault, and the
//! other way round: the key path at a byte offset (where a parse error points).

use toml_edit::{ImDocument, Item, Table, Value};

/// The dotted key path (`routes[0].verify.secrets`) of the deepest key or value
/// whose span holds byte `offset`, or `None` when the text does not parse or
/// the offset is in no key or value.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut path = String::new();
    table_at(doc.as_table(), offset, &mut path).then_some(path)
}

fn holds(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|span| span.contains(&offset))
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// Tables are searched whatever their span (a header's span does not cover its body).
fn table_at(table: &Table, offset: usize, path: &mut String) -> bool {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let mark = path.len();
        push_key(path, name);
        let here = holds(key.span(), offset) || holds(item.span(), offset);
        if item_at(item, offset, path) || here {
            return true;
        }
        path.truncate(mark);
    }
    false
}

fn item_at(item: &Item, offset: usize, path: &mut String) -> bool {
    match item {
        Item::Table(table) => table_at(table, offset, path),
        Item::ArrayOfTables(array) => array.iter().enumerate().any(|(i, table)| {
            let mark = path.len();
            path.push_str(&format!("[{i}]"));
            if table_at(table, offset, path) || holds(table.span(), offset) {
                return true;
            }
            path.truncate(mark);
            false
        }),
        Item::Value(value) => value_at(value, offset, path),
        Item::None => false,
    }
}

/// Only the children of `value`: the caller already knows whether `value` holds the offset.
fn value_at(value: &Value, offset: usize, path: &mut String) -> bool {
    match value {
        Value::Array(array) => array.iter().enumerate().any(|(i, element)| {
            let mark = path.len();
            path.push_str(&format!("[{i}]"));
            if value_at(element, offset, path) || holds(element.span(), offset) {
                return true;
            }
            path.truncate(mark);
            false
        }),
        Value::InlineTable(table) => table.iter().any(|(name, _)| {
            let Some((key, element)) = table.get_key_value(name) else {
                return false;
            };
            let mark = path.len();
            push_key(path, name);
            if item_at(element, offset, path)
                || holds(key.span(), offset)
                || holds(element.span(), offset)
            {
                return true;
            }
            path.truncate(mark);
            false
        }),
        _ => false,
    }
}

/// 1-based line of the deepest existing part of `key_path` in `text`, or `None`
/// when the text does not parse or not even the first segment exists.
pub fn line_of(text: &str, key_path: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut current: Option<Node<'_>> = Some(Node::Item(doc.as_item()));
    for segment in segments(key_path) {
        let Some(node) = current.take() else { break };
        let next = match segment {
            Segment::Key(key) => node.child(key),
            Segment::Index(index) => node.element(index),
        };
        let Some((span, child)) = next else { break };
        if span.is_some() {
            best = span;
        }
        current = Some(child);
    }
    best.map(|span| line_at(text, span.start))
}

/// 1-based line number of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            let indexes = rest
                .split('[')
                .filter_map(|index| index.trim_end_matches(']').parse().ok())
                .map(Segment::Index);
            (!key.is_empty())
                .then_some(Segment::Key(key))
                .into_iter()
                .chain(indexes.collect::<Vec<_>>())
        })
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

type Step<'a> = Option<(Option<std::ops::Range<usize>>, Node<'a>)>;

impl<'a> Node<'a> {
    fn child(self, key: &str) -> Step<'a> {
        let table = match self {
            Node::Item(Item::Table(table)) | Node::Table(table) => table,
            Node::Item(Item::Value(value)) | Node::Value(value) => {
                let (k, v) = value.as_inline_table()?.get_key_value(key)?;
                return Some((k.span().or_else(|| v.span()), Node::Item(v)));
            }
            _ => return None,
        };
        let (k, item) = table.get_key_value(key)?;
        Some((k.span().or_else(|| item.span()), Node::Item(item)))
    }

    fn element(self, index: usize) -> Step<'a> {
        match self {
            Node::Item(Item::ArrayOfTables(array)) => {
                let table = array.get(index)?;
                Some((table.span(), Node::Table(table)))
            }
            Node::Item(Item::Value(value)) | Node::Value(value) => {
                let element = value.as_array()?.get(index)?;
                Some((element.span(), Node::Value(element)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[server]
listen = ["0.0.0.0:8080"]

[upstreams.app]
targets = ["127.0.0.1:1", "127.0.0.1:2"]

[[routes]]
name = "a"
path = "/a"
upstream = "app"

[[routes]]
name = "b"
path = "/b"
verify = { scheme = "github", secrets = ["x", "y"] }
upstream = "app"
"#;

    #[test]
    fn finds_lines_of_nested_keys() {
        assert_eq!(line_of(TEXT, "server.listen"), Some(2));
        assert_eq!(line_of(TEXT, "upstreams.app.targets[1]"), Some(5));
        assert_eq!(line_of(TEXT, "routes[0].path"), Some(9));
        assert_eq!(line_of(TEXT, "routes[1].upstream"), Some(16));
        assert_eq!(line_of(TEXT, "routes[1].verify.secrets[1]"), Some(15));
    }

    #[test]
    fn finds_the_key_at_an_offset() {
        let at = |needle: &str| key_at(TEXT, TEXT.find(needle).unwrap());
        assert_eq!(at("[\"0.0.0.0").as_deref(), Some("server.listen"));
        assert_eq!(
            at("\"127.0.0.1:2\"").as_deref(),
            Some("upstreams.app.targets[1]")
        );
        assert_eq!(at("\"/b\"").as_deref(), Some("routes[1].path"));
        assert_eq!(at("\"y\"").as_deref(), Some("routes[1].verify.secrets[1]"));
        assert_eq!(at("\"github\"").as_deref(), Some("routes[1].verify.scheme"));
        assert_eq!(key_at("not = [valid", 3), None);
    }

    #[test]
    fn falls_back_to_the_deepest_existing_parent() {
        assert_eq!(line_of(TEXT, "routes[1].missing"), Some(12));
        assert_eq!(line_of(TEXT, "nowhere.at.all"), None);
        assert_eq!(line_of("not = [valid", "not"), None);
    }
}
