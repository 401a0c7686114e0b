//! Finds the line of a dotted key path (`routes[2].verify.secrets[1]`) in a TOML
//! text, so every configuration problem can name the line at fault.

use toml_edit::{ImDocument, Item, Value};

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
    fn falls_back_to_the_deepest_existing_parent() {
        assert_eq!(line_of(TEXT, "routes[1].missing"), Some(12));
        assert_eq!(line_of(TEXT, "nowhere.at.all"), None);
        assert_eq!(line_of("not = [valid", "not"), None);
    }
}
