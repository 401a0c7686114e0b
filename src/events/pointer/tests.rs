//! Tests of `events::pointer`.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn lookup_in(scope: Scope, pointer: &str, json: &str) -> Result<Option<String>, PointerError> {
    JsonPointer::parse(pointer)
        .unwrap()
        .lookup(json.as_bytes(), scope)
        .map(|v| v.map(Cow::into_owned))
}

/// Both scopes, which must agree on every well-formed document.
fn lookup(pointer: &str, json: &str) -> Result<Option<String>, PointerError> {
    let path = lookup_in(Scope::Path, pointer, json);
    let document = lookup_in(Scope::Document, pointer, json);
    assert_eq!(path, document, "scopes disagree on {pointer} in {json}");
    path
}

#[test]
fn parse_table() {
    let table: [(&str, Option<&[&str]>); 10] = [
        ("/type", Some(&["type"])),
        ("/data/object/object", Some(&["data", "object", "object"])),
        ("/a~1b", Some(&["a/b"])),
        ("/m~0n", Some(&["m~n"])),
        ("/~01", Some(&["~1"])),
        ("/", Some(&[""])),
        ("//x", Some(&["", "x"])),
        ("", None),
        ("type", None),
        ("/a~2", None),
    ];
    for (text, expected) in table {
        let got = JsonPointer::parse(text).ok().map(|p| {
            p.tokens
                .iter()
                .map(|t| t.key.to_string())
                .collect::<Vec<_>>()
        });
        let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect());
        assert_eq!(got, expected, "{text:?}");
    }
    assert!(JsonPointer::parse("/a~")
        .unwrap_err()
        .contains("followed by 0"));
    assert!(JsonPointer::parse("type").unwrap_err().contains("'/'"));
    let p = JsonPointer::parse("/a~1b/c/0").unwrap();
    let prefixes: Vec<String> = (0..=3).map(|d| p.prefix(d)).collect();
    assert_eq!(prefixes, ["", "/a~1b", "/a~1b/c", "/a~1b/c/0"]);
}

#[test]
fn array_indexes() {
    let table = [
        ("0", Some(0)),
        ("7", Some(7)),
        ("10", Some(10)),
        ("01", None),
        ("-", None),
        ("-1", None),
        ("1a", None),
        ("", None),
        ("99999999999999999999999", None),
    ];
    for (token, expected) in table {
        assert_eq!(array_index(token), expected, "{token:?}");
    }
}

#[test]
fn lookup_table() {
    // The RFC 6901 example document, plus a few of our own.
    let rfc = r#"{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,"i\\j":5,
                  "k\"l":6," ":7,"m~n":8}"#;
    let table: [(&str, &str, Option<&str>); 26] = [
        ("/foo/0", rfc, Some("bar")),
        ("/foo/1", rfc, Some("baz")),
        ("/foo/2", rfc, None),
        ("/foo/-", rfc, None),
        ("/foo/01", rfc, None),
        ("/", rfc, Some("0")),
        ("/a~1b", rfc, Some("1")),
        ("/c%d", rfc, Some("2")),
        ("/i\\j", rfc, Some("5")),
        ("/k\"l", rfc, Some("6")),
        ("/ ", rfc, Some("7")),
        ("/m~0n", rfc, Some("8")),
        ("/type", r#"{"type":"push"}"#, Some("push")),
        ("/type", r#"{"id":1,"type":"a\u00e9\"b"}"#, Some("aé\"b")),
        ("/type", r#"{"type":null}"#, None),
        ("/type", r#"{"type":true}"#, Some("true")),
        ("/type", r#"{"type":-12}"#, Some("-12")),
        (
            "/type",
            r#"{"type":18446744073709551615}"#,
            Some("18446744073709551615"),
        ),
        (
            "/type",
            r#"{"type":-9223372036854775808}"#,
            Some("-9223372036854775808"),
        ),
        ("/type", r#"{"other":{"type":"x"}}"#, None),
        ("/type/x", r#"{"type":"push"}"#, None),
        ("/0", r#"["first"]"#, Some("first")),
        ("/0", r#"{"0":"key zero"}"#, Some("key zero")),
        ("/a", r#""just a string""#, None),
        // Escaped keys compare by their unescaped text.
        ("/ty\"pe", r#"{"ty\"pe":"q"}"#, Some("q")),
        ("/event_type", r#"{"event\u005ftype":"q"}"#, Some("q")),
    ];
    for (pointer, json, expected) in table {
        assert_eq!(
            lookup(pointer, json).unwrap().as_deref(),
            expected,
            "{pointer} in {json}"
        );
    }
}

#[test]
fn stripe_and_nested_payloads() {
    let stripe = json!({
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "object": "event",
        "api_version": "2022-11-15",
        "data": {"object": {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent",
                            "amount": 2000, "metadata": {"object": "decoy"}}},
        "type": "payment_intent.succeeded"
    })
    .to_string();
    assert_eq!(
        lookup("/type", &stripe).unwrap().as_deref(),
        Some("payment_intent.succeeded")
    );
    assert_eq!(
        lookup("/data/object/object", &stripe).unwrap().as_deref(),
        Some("payment_intent")
    );
    assert_eq!(
        lookup("/data/object/amount", &stripe).unwrap().as_deref(),
        Some("2000")
    );
    let err = lookup("/data/object", &stripe).unwrap_err();
    assert!(
        matches!(
            err,
            PointerError::NotScalar {
                kind: "an object",
                ..
            }
        ),
        "{err}"
    );
    let err = lookup("/x", r#"{"x":[1]}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the value at /x is an array, not a string, number or boolean"
    );
}

#[test]
fn borrowed_when_unescaped() {
    let body = br#"{"event_type":"user_signup","x":"a\nb"}"#;
    for scope in [Scope::Path, Scope::Document] {
        let p = JsonPointer::parse("/event_type").unwrap();
        assert!(matches!(
            p.lookup(body, scope).unwrap(),
            Some(Cow::Borrowed("user_signup"))
        ));
        let p = JsonPointer::parse("/x").unwrap();
        assert!(matches!(
            p.lookup(body, scope).unwrap(),
            Some(Cow::Owned(_))
        ));
    }
}

/// Returns the duplicated key and the object it is in, or panics.
fn duplicate(pointer: &str, json: &str) -> (String, String) {
    match lookup(pointer, json) {
        Err(PointerError::DuplicateKey { key, object, .. }) => (key, object),
        other => panic!("{pointer} in {json}: expected a duplicate key, got {other:?}"),
    }
}

#[test]
fn duplicate_keys_on_the_path_are_refused() {
    // The issue's example: a streaming reader keeps the first, every app the last.
    let issue = r#"{"event_type":"user_signup","n":1,"event_type":"payment_processed"}"#;
    assert_eq!(
        duplicate("/event_type", issue),
        ("event_type".into(), "".into())
    );
    let table: [(&str, &str, &str, &str); 10] = [
        // Adjacent, same value: still two readings of the document's shape.
        ("/type", r#"{"type":"a","type":"a"}"#, "type", ""),
        // The second occurrence at the very end, after a large value.
        (
            "/type",
            r#"{"type":"a","big":[1,2,{"type":"x"}],"type":"b"}"#,
            "type",
            "",
        ),
        // Escaped spelling of the same key.
        (
            "/event_type",
            r#"{"event_type":"a","event\u005ftype":"b"}"#,
            "event_type",
            "",
        ),
        ("/a/b", r#"{"a":{"b":1,"b":2}}"#, "b", "/a"),
        // The outer key repeated: the second "a" could carry another "b".
        ("/a/b", r#"{"a":{"b":1},"a":{"b":2}}"#, "a", ""),
        ("/a/b", r#"{"a":{"c":1},"a":{"b":2}}"#, "a", ""),
        // A first occurrence that is a scalar (the pointer steps into it) still counts.
        ("/a/b", r#"{"a":"s","a":{"b":2}}"#, "a", ""),
        ("/a/b", r#"{"a":null,"a":{"b":2}}"#, "a", ""),
        // Through an array.
        (
            "/items/0/id",
            r#"{"items":[{"id":1,"id":2}]}"#,
            "id",
            "/items/0",
        ),
        ("/a~1b/c", r#"{"a/b":{"c":1,"c":1}}"#, "c", "/a~1b"),
    ];
    for (pointer, json, key, object) in table {
        assert_eq!(
            duplicate(pointer, json),
            (key.to_string(), object.to_string()),
            "{pointer} in {json}"
        );
    }
    let err = lookup("/event_type", issue).unwrap_err().to_string();
    assert_eq!(
        err,
        "duplicate key \"event_type\" in the top-level object on the path of /event_type; \
         JSON readers disagree on which one counts (RFC 8259 section 4)"
    );
    assert!(
        !err.contains("user_signup") && !err.contains("payment"),
        "{err}"
    );
    let err = lookup("/a/b", r#"{"a":{"b":1,"b":2}}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("in the object at /a on the path of /a/b"),
        "{err}"
    );
}

#[test]
fn duplicates_off_the_path_are_fine() {
    let table: [(&str, &str, Option<&str>); 6] = [
        ("/type", r#"{"type":"a","x":1,"x":2}"#, Some("a")),
        (
            "/type",
            r#"{"meta":{"type":1,"type":2},"type":"a"}"#,
            Some("a"),
        ),
        (
            "/a/b",
            r#"{"a":{"b":"v","c":1,"c":2},"c":3,"c":4}"#,
            Some("v"),
        ),
        // Another element of an array on the path.
        (
            "/items/0/id",
            r#"{"items":[{"id":1},{"id":2,"id":3}]}"#,
            Some("1"),
        ),
        // Keys that only look alike.
        ("/type", r#"{"type":"a","Type":"b","type ":"c"}"#, Some("a")),
        ("/type", r#"{"x":{"type":1},"y":[{"type":2}]}"#, None),
    ];
    for (pointer, json, expected) in table {
        assert_eq!(
            lookup(pointer, json).unwrap().as_deref(),
            expected,
            "{pointer} in {json}"
        );
    }
}

#[test]
fn numbers_are_integers_within_64_bits_or_refused() {
    let exact: [(&str, &str); 5] = [
        ("0", "0"),
        ("-1", "-1"),
        ("12345", "12345"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
    ];
    for (text, expected) in exact {
        let json = format!(r#"{{"id":{text}}}"#);
        assert_eq!(lookup("/id", &json).unwrap().as_deref(), Some(expected));
    }
    let inexact = [
        "1.5",
        "1500.0",
        "1e3",
        "1.5e3",
        "-0",
        "0.0",
        "18446744073709551616",
        "-9223372036854775809",
        "12345678901234567890123",
    ];
    for text in inexact {
        let json = format!(r#"{{"id":{text}}}"#);
        assert_eq!(
            lookup("/id", &json),
            Err(PointerError::InexactNumber {
                pointer: "/id".into()
            }),
            "{text}"
        );
    }
    // Beyond the f64 range: serde_json calls it a syntax error; refused either way.
    assert!(matches!(
        lookup("/id", r#"{"id":1e400}"#),
        Err(PointerError::Syntax(_))
    ));
    // Off the path, any number is fine.
    assert_eq!(
        lookup("/id", r#"{"x":1.5e3,"y":12345678901234567890123,"id":7}"#)
            .unwrap()
            .as_deref(),
        Some("7")
    );
}

#[test]
fn syntax_errors_before_the_answer() {
    let table = [
        "",
        "   ",
        "{",
        "{\"type\"",
        "{\"a\":tru, \"type\":\"x\"}",
        "not json",
        "{\"a\":\"\\q\",\"type\":\"x\"}",
        "{\"type\":\"unterminated",
        // When the bytes do not rule out a second key (here a `\u` escape), the object on
        // the path must be complete, even after the value.
        "{\"type\":\"push\", \"x\":\"\\u0041\", oops",
        "{\"type\":\"push\", \"x\":\"\\u0041\",",
        "{\"type\":\"push\", \"x\":\"type\"",
    ];
    for body in table {
        let err = lookup("/type", body).unwrap_err();
        assert!(matches!(err, PointerError::Syntax(_)), "{body:?}: {err:?}");
    }
    // Deep nesting off the path is skipped without recursion (no stack overflow).
    let deep = format!(
        "{{\"a\":{}{},\"type\":\"x\"}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(lookup("/type", &deep).unwrap().as_deref(), Some("x"));
    // On the path, the leaf is an array: answered at once.
    let deep = format!("{{\"type\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        lookup("/type", &deep),
        Err(PointerError::NotScalar { .. })
    ));
}

#[test]
fn scopes_differ_only_after_the_outermost_object_on_the_path() {
    // (pointer, body, Scope::Path, Scope::Document is a syntax error)
    let table: [(&str, &[u8], Option<&str>); 12] = [
        ("/type", br#"{"type":"push"} oops"#, Some("push")),
        // Each key of the pointer written once and no `\u` escape: the walk stops at the
        // value, as a first-match reader does (`keys_written_once`).
        ("/type", br#"{"type":"push", oops"#, Some("push")),
        ("/type", br#"{"type":"push","#, Some("push")),
        ("/type", br#"{"type":"push""#, Some("push")),
        ("/a/type", br#"{"a":{"type":"x", oops"#, Some("x")),
        ("/type", br#"{"type":"push"}{"type":"other"}"#, Some("push")),
        ("/type", br#"{"type":"push"},"#, Some("push")),
        ("/type", b"{\"type\":\"push\"}\x00", Some("push")),
        // Invalid UTF-8 in a skipped string (Document checks the whole body first).
        ("/type", b"{\"x\":\"\xff\",\"type\":\"push\"}", Some("push")),
        ("/type", b"{\"type\":\"push\"}\xc3", Some("push")),
        // An array on the path: after the element, only enclosing objects matter.
        ("/0/type", br#"[{"type":"a"}, broken"#, Some("a")),
        ("/0", br#"["a", broken"#, Some("a")),
    ];
    let look = |scope, pointer: &str, body: &[u8]| {
        JsonPointer::parse(pointer)
            .unwrap()
            .lookup(body, scope)
            .map(|v| v.map(Cow::into_owned))
    };
    for (pointer, body, expected) in table {
        let shown = String::from_utf8_lossy(body);
        assert_eq!(
            look(Scope::Path, pointer, body).unwrap().as_deref(),
            expected,
            "{pointer} in {shown}"
        );
        let err = look(Scope::Document, pointer, body).unwrap_err();
        assert!(matches!(err, PointerError::Syntax(_)), "{shown}: {err:?}");
    }
    let err = look(Scope::Document, "/type", b"{\"x\":\"\xff\"}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "body is not valid JSON (invalid UTF-8 at byte 6)"
    );
    let err = look(Scope::Document, "/type", br#"{"type":"a"} x"#).unwrap_err();
    assert!(err.to_string().contains("trailing characters"), "{err}");
    // Invalid UTF-8 in the value itself is refused in both scopes.
    assert!(matches!(
        look(Scope::Path, "/type", b"{\"type\":\"\xff\"}"),
        Err(PointerError::Syntax(_))
    ));
    // A duplicate is found even when the document is broken after it (Path), and the
    // refusal wins over a later syntax error.
    assert!(matches!(
        look(Scope::Path, "/type", br#"{"type":"a","type":"b", oops"#),
        Err(PointerError::DuplicateKey { .. })
    ));
    // The early stop never hides a second key: spelled with an escape, or as plain text.
    for body in [
        &br#"{"type":"a","t\u0079pe":"b", oops"#[..],
        br#"{"a":{"type":"a","type":"b"}, oops"#,
        br#"{"a":{"type":"a"},"a":{"type":"b"}, oops"#,
    ] {
        let pointer = if body.starts_with(br#"{"a""#) {
            "/a/type"
        } else {
            "/type"
        };
        assert!(
            matches!(
                look(Scope::Path, pointer, body),
                Err(PointerError::DuplicateKey { .. })
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A key with a character JSON may write as `\/` is never counted by its bytes.
    assert!(matches!(
        look(Scope::Path, "/a~1b", br#"{"a/b":"x","a\/b":"y"}"#),
        Err(PointerError::DuplicateKey { .. })
    ));
    // Whitespace around the document is fine in both.
    assert_eq!(
        look(Scope::Document, "/type", b" \n{\"type\":\"a\"}\r\n\t")
            .unwrap()
            .as_deref(),
        Some("a")
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("type".to_string()),
        Just("a/b".to_string()),
        Just("m~n".to_string()),
        Just("0".to_string()),
        Just("".to_string()),
        "[a-c\"\\\\é]{0,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z.\"\\\\\n é]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every pointer into `value` (plus some that lead nowhere).
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{prefix}/{}", escape(k));
                out.push(p.clone());
                pointers(v, &p, out);
            }
            out.push(format!("{prefix}/missing"));
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(v, &p, out);
            }
            out.push(format!("{prefix}/{}", items.len()));
            out.push(format!("{prefix}/-"));
        }
        _ => out.push(format!("{prefix}/x")),
    }
}

/// JSON text for a tree whose objects may repeat keys (which `Value` cannot hold).
#[derive(Debug, Clone)]
enum Tree {
    Leaf(&'static str),
    Array(Vec<Tree>),
    Object(Vec<(&'static str, Tree)>),
}

impl Tree {
    fn text(&self) -> String {
        match self {
            Tree::Leaf(s) => s.to_string(),
            Tree::Array(items) => {
                let items: Vec<String> = items.iter().map(Tree::text).collect();
                format!("[{}]", items.join(","))
            }
            Tree::Object(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.text()))
                    .collect();
                format!("{{{}}}", entries.join(","))
            }
        }
    }
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::Leaf("\"s\"")),
        Just(Tree::Leaf("\"t\"")),
        Just(Tree::Leaf("7")),
        Just(Tree::Leaf("null")),
    ];
    // `"a\u0062"` is `"ab"` spelled differently.
    let key = prop_oneof![
        Just("\"a\""),
        Just("\"b\""),
        Just("\"ab\""),
        Just("\"a\\u0062\""),
        Just("\"0\""),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Array),
            prop::collection::vec((key.clone(), inner), 0..4).prop_map(Tree::Object),
        ]
    })
}

proptest! {
    #[test]
    fn agrees_with_value_pointer(value in arb_json()) {
        let text = serde_json::to_string(&value).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        // Compare with serde_json's own reading of the same text (its default float
        // parsing is not always exact, so the original `value` could differ).
        let value: Value = serde_json::from_str(&text).unwrap();
        for p in all {
            let expected = match value.pointer(&p) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(Value::Number(n)) if n.is_f64() => Err("a number"),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Object(_)) => Err("an object"),
                Some(Value::Array(_)) => Err("an array"),
            };
            for body in [&text, &pretty] {
                let got = lookup(&p, body).map_err(|e| match e {
                    PointerError::NotScalar { kind, .. } => kind,
                    PointerError::InexactNumber { .. } => "a number",
                    other => panic!("{other} in {body}"),
                });
                prop_assert_eq!(&got, &expected, "{} in {}", p, body);
            }
        }
    }

    /// With repeated keys about, a lookup either refuses or finds what
    /// `serde_json::Value` (last key wins, like the apps) finds.
    #[test]
    fn never_disagrees_with_a_last_key_wins_reader(tree in arb_tree()) {
        let text = tree.text();
        let value: Value = serde_json::from_str(&text).unwrap();
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        for p in ["/a", "/ab", "/a/b", "/ab/0", "/0/ab", "/a/ab/a", "/b/0/a"] {
            all.push(p.to_string());
        }
        for p in all {
            let expected = match value.pointer(&p) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            match lookup(&p, &text) {
                Ok(got) => prop_assert_eq!(got, expected, "{} in {}", p, text),
                Err(PointerError::DuplicateKey { .. } | PointerError::NotScalar { .. }) => {}
                Err(other) => prop_assert!(false, "{} in {}: {}", p, text, other),
            }
        }
    }

    #[test]
    fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for scope in [Scope::Path, Scope::Document] {
            let _ = JsonPointer::parse("/a/0").unwrap().lookup(&bytes, scope);
        }
    }
}
