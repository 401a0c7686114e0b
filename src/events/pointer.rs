//! JSON pointers (RFC 6901) looked up by walking only the pointer's path through the body.
//!
//! Owns: parsing a pointer (`"/data/object/object"`, `~0`/`~1` escapes, array indexes) and
//! finding its scalar value in a JSON document. Does not own: what the value means (event
//! type, delivery id), or any answer to the sender.
//!
//! # How the lookup stays cheap
//! The body is read by a [`serde::de::DeserializeSeed`] that follows the pointer: at each
//! level it compares object keys to the next token (without allocating, escaped keys
//! included) and skips every other value with [`serde::de::IgnoredAny`], which serde_json
//! scans without building anything. As soon as the answer is known — found, absent, or not a
//! scalar — the walk aborts the parse, so a key near the start of a 50 KiB body costs a few
//! hundred bytes of scanning. Strings without escapes are returned borrowed from the body.
//!
//! Consequences of stopping early, all deliberate:
//! - The rest of the document is not validated: a body that is broken *after* the value is
//!   accepted (the upstream still gets the exact bytes and is the one that parses them).
//! - With duplicate keys, the **first** occurrence counts (`serde_json::Value` keeps the last).
//!   Providers do not send duplicate keys, and on verified routes only the provider can shape
//!   the body.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A parsed JSON pointer. Compare pointers by their text.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, PartialEq, Eq)]
struct Token {
    /// The unescaped reference token, compared with object keys.
    key: Box<str>,
    /// The token as an array index, when it is one (`"0"` or digits without a leading zero).
    index: Option<usize>,
}

impl fmt::Debug for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPointer({:?})", self.text)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a pointer lookup failed. Absence of the value is not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// The document is not JSON up to the point where the answer would have been known.
    #[error("body is not valid JSON ({0})")]
    Syntax(String),
    /// The pointer names an object or an array, which has no text.
    #[error("the value at {pointer} is {kind}, not a string, number or boolean")]
    NotScalar { pointer: String, kind: &'static str },
}

impl JsonPointer {
    /// Parses a pointer such as `"/type"`, `"/data/object/object"`, `"/items/0/id"` or
    /// `"/a~1b"` (the key `a/b`). The whole-document pointer `""` is refused: an event or
    /// delivery id is never the whole body.
    pub fn parse(text: &str) -> Result<JsonPointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "invalid JSON pointer {text:?}: it must start with '/', e.g. \"/type\" or \
                 \"/data/object/object\""
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    key.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => {
                        return Err(format!(
                            "invalid JSON pointer {text:?}: '~' must be followed by 0 ('~') or \
                             1 ('/')"
                        ))
                    }
                }
            }
            let index = array_index(&key);
            tokens.push(Token {
                key: key.into_boxed_str(),
                index,
            });
        }
        Ok(JsonPointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text of the scalar at this pointer in `json`: a string as is (borrowed from `json`
    /// when it has no escapes), a number in serde_json's rendering, `true`/`false`.
    /// `Ok(None)` when the pointer leads nowhere (a missing key, an index past the end, a step
    /// into a scalar) or to `null`.
    pub fn lookup<'de>(&self, json: &'de [u8]) -> Result<Option<Cow<'de, str>>, PointerError> {
        let mut outcome = None;
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let result = Walk {
            tokens: &self.tokens,
            outcome: &mut outcome,
        }
        .deserialize(&mut deserializer);
        match outcome {
            Some(Outcome::Found(value)) => Ok(Some(value)),
            Some(Outcome::Absent) => Ok(None),
            Some(Outcome::NotScalar(kind)) => Err(PointerError::NotScalar {
                pointer: self.text.clone(),
                kind,
            }),
            None => match result {
                Err(e) => Err(PointerError::Syntax(e.to_string())),
                // Every path through the walk records an outcome; be safe anyway.
                Ok(()) => Ok(None),
            },
        }
    }
}

/// RFC 6901 array index: `0`, or digits not starting with `0`.
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

enum Outcome<'de> {
    Found(Cow<'de, str>),
    Absent,
    NotScalar(&'static str),
}

/// Message of the error used to abort the parse once the outcome is recorded; never shown.
const STOP: &str = "hookgate: pointer lookup done";

fn stop<E: de::Error>() -> E {
    E::custom(STOP)
}

/// Follows `tokens` from the value about to be deserialized.
struct Walk<'p, 'o, 'de> {
    tokens: &'p [Token],
    outcome: &'o mut Option<Outcome<'de>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.tokens.split_first() {
            None => deserializer.deserialize_any(Leaf {
                outcome: self.outcome,
            }),
            Some((token, rest)) => deserializer.deserialize_any(Step {
                token,
                rest,
                outcome: self.outcome,
            }),
        }
    }
}

/// The value the pointer names: record its text, then stop.
struct Leaf<'o, 'de> {
    outcome: &'o mut Option<Outcome<'de>>,
}

impl<'de> Leaf<'_, 'de> {
    fn done<E: de::Error>(self, outcome: Outcome<'de>) -> Result<(), E> {
        *self.outcome = Some(outcome);
        Err(stop())
    }
}

impl<'de> Visitor<'de> for Leaf<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Borrowed(if v {
            "true"
        } else {
            "false"
        })))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.done(Outcome::Found(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.done(Outcome::Found(Cow::Owned(n.to_string()))),
            None => self.done(Outcome::Absent),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.done(Outcome::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.done(Outcome::NotScalar("an object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        self.done(Outcome::NotScalar("an array"))
    }
}

/// A container on the way: find `token` in it and continue with `rest`, skipping the rest.
struct Step<'p, 'o, 'de> {
    token: &'p Token,
    rest: &'p [Token],
    outcome: &'o mut Option<Outcome<'de>>,
}

impl<'de> Step<'_, '_, 'de> {
    /// The pointer steps into a scalar or past the end: no value.
    fn absent<E: de::Error>(self) -> Result<(), E> {
        *self.outcome = Some(Outcome::Absent);
        Err(stop())
    }
}

impl<'de> Visitor<'de> for Step<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(hit) = map.next_key_seed(KeyIs(&self.token.key))? {
            if hit {
                map.next_value_seed(Walk {
                    tokens: self.rest,
                    outcome: &mut *self.outcome,
                })?;
                return Err(stop());
            }
            map.next_value::<IgnoredAny>()?;
        }
        self.absent()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(index) = self.token.index else {
            return self.absent();
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return self.absent();
            }
        }
        let found = seq.next_element_seed(Walk {
            tokens: self.rest,
            outcome: &mut *self.outcome,
        })?;
        if found.is_none() {
            return self.absent();
        }
        Err(stop())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.absent()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.absent()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.absent()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.absent()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.absent()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.absent()
    }
}

/// Deserializes an object key into "is it this key?", without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn lookup(pointer: &str, json: &str) -> Result<Option<String>, PointerError> {
        JsonPointer::parse(pointer)
            .unwrap()
            .lookup(json.as_bytes())
            .map(|v| v.map(Cow::into_owned))
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
        let table: [(&str, &str, Option<&str>); 24] = [
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
            ("/type", r#"{"type":1.5e3}"#, Some("1500.0")),
            ("/type", r#"{"other":{"type":"x"}}"#, None),
            ("/type/x", r#"{"type":"push"}"#, None),
            ("/0", r#"["first"]"#, Some("first")),
            ("/0", r#"{"0":"key zero"}"#, Some("key zero")),
            ("/a", r#""just a string""#, None),
            // Escaped keys compare by their unescaped text.
            ("/ty\"pe", r#"{"ty\"pe":"q"}"#, Some("q")),
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
        let p = JsonPointer::parse("/event_type").unwrap();
        assert!(matches!(
            p.lookup(body).unwrap(),
            Some(Cow::Borrowed("user_signup"))
        ));
        let p = JsonPointer::parse("/x").unwrap();
        assert!(matches!(p.lookup(body).unwrap(), Some(Cow::Owned(_))));
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
    fn stops_at_the_answer() {
        // Broken after the value: not read, so not an error (documented).
        assert_eq!(
            lookup("/type", r#"{"type":"push", oops"#)
                .unwrap()
                .as_deref(),
            Some("push")
        );
        // First duplicate wins (serde_json::Value keeps the last; documented).
        assert_eq!(
            lookup("/type", r#"{"type":"a","type":"b"}"#)
                .unwrap()
                .as_deref(),
            Some("a")
        );
        // Absent inside a nested object: the outer rest is not read either.
        assert_eq!(lookup("/a/b", r#"{"a":{"c":1}, garbage"#).unwrap(), None);
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
                    Some(Value::Number(n)) => Ok(Some(n.to_string())),
                    Some(Value::Object(_)) => Err("an object"),
                    Some(Value::Array(_)) => Err("an array"),
                };
                for body in [&text, &pretty] {
                    let got = lookup(&p, body).map_err(|e| match e {
                        PointerError::NotScalar { kind, .. } => kind,
                        PointerError::Syntax(s) => panic!("{s} in {body}"),
                    });
                    prop_assert_eq!(&got, &expected, "{} in {}", p, body);
                }
            }
        }

        #[test]
        fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = JsonPointer::parse("/a/0").unwrap().lookup(&bytes);
        }
    }
}
