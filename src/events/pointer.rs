//! JSON pointers (RFC 6901) looked up by walking only the pointer's path through the body.
//!
//! Owns: parsing a pointer (`"/data/object/object"`, `~0`/`~1` escapes, array indexes),
//! finding its scalar value in a JSON document, and the rules that make that value the one
//! every JSON reader would find. Does not own: what the value means (event type, delivery
//! id), which [`Scope`] a route needs, or any answer to the sender.
//!
//! # One reading
//! hookgate decides on the value it finds; the upstream parses the same bytes again. Where
//! JSON readers disagree, the lookup refuses instead of picking one reading:
//! - **Duplicate keys on the path.** In every object the pointer walks through, the key it
//!   follows must occur once ([`PointerError::DuplicateKey`]). RFC 8259 §4 says names
//!   "SHOULD be unique" and that readers differ otherwise: Python, JavaScript, Go and
//!   `serde_json::Value` keep the last, a streaming reader keeps the first. Keys compare by
//!   their unescaped text, so `"event\u005ftype"` repeats `"event_type"`. Duplicates off the
//!   path (another key repeated, or the same key in an object the pointer does not enter)
//!   change nothing we read and are left alone.
//! - **Numbers.** An integer that fits `i64` or `u64` is read in its canonical decimal form
//!   (`12345`). Any other number is refused ([`PointerError::InexactNumber`]): a fraction or
//!   exponent (`1.5`, `1e3`, `1500.0` — rendered `1500`, `1500.0` or `1.5e3` depending on the
//!   language), `-0`, or an integer beyond 64 bits (`12345678901234567890123`, which serde_json
//!   without its `arbitrary_precision` feature, like JavaScript, rounds to an `f64`). Numbers
//!   beyond the `f64` range (`1e400`) are a syntax error in serde_json. Nothing is rounded.
//!
//! # How much is read ([`Scope`])
//! - [`Scope::Path`] (routes whose body is verified: only the provider can shape it): the
//!   walk reads every object on the path **to its end**, since a second occurrence of the
//!   key may come after the value, and stops as soon as the outermost object on the path is
//!   closed (for an array on the path, after the element it names). Everything else is
//!   skipped with [`IgnoredAny`], which serde_json scans without building anything or
//!   checking the UTF-8 of skipped strings. Bytes after that object are not read: a body that
//!   is broken after its top-level object (or after the array element the pointer names) is
//!   accepted, and the upstream, which gets the exact bytes, is the one to refuse it.
//!   **Early stop**: when the body's bytes show that no key of the pointer can occur twice
//!   (no `\u` escape anywhere, and each key's quoted text, `"action"`, at most once:
//!   `JsonPointer::keys_written_once`, two SIMD passes), the walk stops at the value
//!   itself, as a first-match reader would, and what follows it is not read. Otherwise the
//!   walk reads on as above. Keys holding `/`, `"`, `\` or controls always read on.
//! - [`Scope::Document`] (routes without `verify`, and every `dedupe` `json:` id): the whole
//!   body must be one JSON text (RFC 8259 §2), valid UTF-8 (§8.1), with nothing but
//!   whitespace after the value. Costs one full scan of the body.
//!
//! In both scopes the lookup stops at once when the answer is a refusal (a duplicate key, an
//! object or array where a scalar was expected, an inexact number). Strings without escapes
//! are returned borrowed from the body.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A parsed JSON pointer. Compare pointers by their text.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone)]
struct Token {
    /// The unescaped reference token, compared with object keys.
    key: Box<str>,
    /// The token as an array index, when it is one (`"0"` or digits without a leading zero).
    index: Option<usize>,
    /// `"key"` with its quotes, as a key without escapes is written in a body; `None` when the
    /// key holds a character JSON may also write with a short escape (`/` as `\/`) or must
    /// escape (`"`, `\`, controls), so that its spellings cannot be counted by bytes.
    quoted: Option<memchr::memmem::Finder<'static>>,
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Token {}

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

/// How much of a document a lookup reads and validates; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every object on the pointer's path, to its end; nothing after the outermost one.
    Path,
    /// The whole body: one JSON text, valid UTF-8, nothing after it but whitespace.
    Document,
}

/// Why a pointer lookup failed. Absence of the value is not an error. Messages name
/// pointers and keys from the configuration, never text from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// The document is not JSON (up to where the scope reads), or not UTF-8.
    #[error("body is not valid JSON ({0})")]
    Syntax(String),
    /// The pointer names an object or an array, which has no text.
    #[error("the value at {pointer} is {kind}, not a string, number or boolean")]
    NotScalar { pointer: String, kind: &'static str },
    /// `key` occurs more than once in the object at `object` (a pointer, `""` for the
    /// top-level object), which the pointer walks through.
    #[error(
        "duplicate key {key:?} in the {} on the path of {pointer}; JSON readers disagree on \
         which one counts (RFC 8259 section 4)",
        object_name(object)
    )]
    DuplicateKey {
        pointer: String,
        object: String,
        key: String,
    },
    /// The value is a number other than an integer within `i64`/`u64`.
    #[error(
        "the value at {pointer} is a number that is not an integer within 64 bits; fractions, \
         exponents, -0 and larger integers are read differently by different JSON readers"
    )]
    InexactNumber { pointer: String },
}

fn object_name(object: &str) -> String {
    if object.is_empty() {
        "top-level object".to_string()
    } else {
        format!("object at {object}")
    }
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
            let quoted = (!key
                .chars()
                .any(|c| matches!(c, '/' | '"' | '\\') || c.is_control()))
            .then(|| memchr::memmem::Finder::new(format!("\"{key}\"").as_bytes()).into_owned());
            tokens.push(Token {
                key: key.into_boxed_str(),
                index,
                quoted,
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

    /// The pointer to the container of the first `depth` tokens, as written (`""` for the
    /// document itself).
    fn prefix(&self, depth: usize) -> String {
        let end = self
            .text
            .match_indices('/')
            .nth(depth)
            .map_or(self.text.len(), |(i, _)| i);
        self.text[..end].to_string()
    }

    /// The text of the scalar at this pointer in `json`: a string as is (borrowed from `json`
    /// when it has no escapes), an integer in decimal, `true`/`false`. `Ok(None)` when the
    /// pointer leads nowhere (a missing key, an index past the end, a step into a scalar) or
    /// to `null`. `scope` says how much of `json` is read and validated (module doc).
    ///
    /// Errors: [`PointerError::Syntax`] (not JSON or not UTF-8 as far as `scope` reads),
    /// [`PointerError::DuplicateKey`], [`PointerError::NotScalar`],
    /// [`PointerError::InexactNumber`].
    pub fn lookup<'de>(
        &self,
        json: &'de [u8],
        scope: Scope,
    ) -> Result<Option<Cow<'de, str>>, PointerError> {
        let mut search = Search {
            pointer: self,
            stop_early: scope == Scope::Path,
            stop_at_value: scope == Scope::Path && self.keys_written_once(json),
            found: None,
            refusal: None,
            stopped: false,
        };
        let result = match scope {
            Scope::Path => {
                let mut deserializer = serde_json::Deserializer::from_slice(json);
                search.walk(0, 0).deserialize(&mut deserializer)
            }
            Scope::Document => {
                let text = std::str::from_utf8(json).map_err(|e| {
                    PointerError::Syntax(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
                })?;
                let mut deserializer = serde_json::Deserializer::from_str(text);
                search
                    .walk(0, 0)
                    .deserialize(&mut deserializer)
                    .and_then(|()| deserializer.end())
            }
        };
        if let Some(refusal) = search.refusal {
            return Err(refusal);
        }
        match result {
            Err(e) if !search.stopped => Err(PointerError::Syntax(e.to_string())),
            _ => Ok(search.found),
        }
    }
}

impl JsonPointer {
    /// Whether `json` can hold each key of the pointer at most once, judged from its bytes
    /// alone: no `\u` escape anywhere, and each key's quoted text (`"type"`) found at most
    /// once. A key that is not written as its plain quoted text must use an escape, and for
    /// the keys counted here (no `/`, `"`, `\` or controls, see [`Token::quoted`]) that
    /// escape is `\uXXXX`. So when this holds, no object on the path can hold a second
    /// occurrence of its key, and [`Scope::Path`] may stop at the value. Two SIMD passes
    /// (`memchr::memmem`) over the body instead of parsing the rest of it.
    fn keys_written_once(&self, json: &[u8]) -> bool {
        static ESCAPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));
        if ESCAPE.find(json).is_some() {
            return false;
        }
        self.tokens.iter().all(|token| {
            token.quoted.as_ref().is_some_and(|quoted| {
                quoted
                    .find(json)
                    .is_some_and(|at| quoted.find(&json[at + 1..]).is_none())
            })
        })
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

/// Message of the error used to abort the parse on a refusal; never shown
/// (`Search::stopped` tells it apart from a syntax error). Empty: serde_json copies
/// and scans the message of every error it makes.
const STOP: &str = "";

/// The state of one lookup, shared by the visitors along the path.
struct Search<'p, 'de> {
    pointer: &'p JsonPointer,
    /// [`Scope::Path`]: abort the parse once the outermost object on the path is closed.
    stop_early: bool,
    /// [`Scope::Path`] on a body where no key of the pointer can repeat
    /// ([`JsonPointer::keys_written_once`]): abort the parse once the value is read.
    stop_at_value: bool,
    /// The value, once the walk reached it (`None`: absent or `null`).
    found: Option<Cow<'de, str>>,
    /// A refusal; the parse is aborted as soon as one is recorded.
    refusal: Option<PointerError>,
    /// The answer is known: every visitor on the path returns at once without
    /// reading on, and whatever serde_json then makes of the unread rest (a
    /// container it finds unclosed) is not a syntax error. Set without an
    /// error of our own when the answer is found, which spares the one
    /// `de::Error::custom` costs (its message scanned, then re-positioned:
    /// three allocations per lookup); with one on a refusal.
    stopped: bool,
}

impl<'p, 'de> Search<'p, 'de> {
    fn walk<'s>(&'s mut self, depth: usize, objects: usize) -> Walk<'s, 'p, 'de> {
        Walk {
            depth,
            objects,
            search: self,
        }
    }

    /// Aborts the parse with an error.
    fn stop<E: de::Error>(&mut self) -> E {
        self.stopped = true;
        E::custom(STOP)
    }

    fn refuse<E: de::Error>(&mut self, refusal: PointerError) -> E {
        self.refusal = Some(refusal);
        self.stop()
    }

    /// A container on the path is complete: with [`Scope::Path`], once no object encloses
    /// it, nothing else can change the answer (the parse stops: [`Search::stopped`]).
    fn closed(&mut self, objects: usize) {
        if self.stop_early && objects == 0 {
            self.stopped = true;
        }
    }
}

/// The value at `depth` tokens into the pointer, inside `objects` objects of the path.
struct Walk<'s, 'p, 'de> {
    depth: usize,
    objects: usize,
    search: &'s mut Search<'p, 'de>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth == self.search.pointer.tokens.len() {
            deserializer.deserialize_any(Leaf(self))
        } else {
            deserializer.deserialize_any(Step(self))
        }
    }
}

/// The value the pointer names: record its text, or refuse it.
struct Leaf<'s, 'p, 'de>(Walk<'s, 'p, 'de>);

impl<'de> Leaf<'_, '_, 'de> {
    fn found<E: de::Error>(self, value: Cow<'de, str>) -> Result<(), E> {
        self.0.search.found = Some(value);
        self.reached()
    }

    /// The value is read: with [`Search::stop_at_value`], nothing after it can change the
    /// answer (the parse stops: [`Search::stopped`]).
    fn reached<E: de::Error>(self) -> Result<(), E> {
        if self.0.search.stop_at_value {
            self.0.search.stopped = true;
        }
        Ok(())
    }

    fn refuse<E: de::Error>(self, refusal: impl FnOnce(String) -> PointerError) -> Result<(), E> {
        let pointer = self.0.search.pointer.text.clone();
        Err(self.0.search.refuse(refusal(pointer)))
    }
}

impl<'de> Visitor<'de> for Leaf<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.found(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.found(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.found(Cow::Owned(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.found(Cow::Borrowed(if v { "true" } else { "false" }))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.found(Cow::Owned(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.found(Cow::Owned(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        // serde_json hands over an f64 for every number with a fraction or an exponent, for
        // -0 and for integers beyond 64 bits (already rounded): none has one reading.
        self.refuse(|pointer| PointerError::InexactNumber { pointer })
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.reached()
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.refuse(|pointer| PointerError::NotScalar {
            pointer,
            kind: "an object",
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        self.refuse(|pointer| PointerError::NotScalar {
            pointer,
            kind: "an array",
        })
    }
}

/// A value on the way: follow the next token in it, skip everything else, and check that
/// an object holds the token's key once.
struct Step<'s, 'p, 'de>(Walk<'s, 'p, 'de>);

impl<'de> Visitor<'de> for Step<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk {
            depth,
            objects,
            search,
        } = self.0;
        let pointer = search.pointer;
        let key = &pointer.tokens[depth].key;
        let mut seen = false;
        while let Some(hit) = map.next_key_seed(KeyIs(key))? {
            if !hit {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen {
                return Err(search.refuse(PointerError::DuplicateKey {
                    pointer: pointer.text.clone(),
                    object: pointer.prefix(depth),
                    key: key.to_string(),
                }));
            }
            seen = true;
            map.next_value_seed(search.walk(depth + 1, objects + 1))?;
            if search.stopped {
                return Ok(());
            }
        }
        search.closed(objects);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk {
            depth,
            objects,
            search,
        } = self.0;
        if let Some(index) = search.pointer.tokens[depth].index {
            let mut reached = true;
            for _ in 0..index {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    reached = false;
                    break;
                }
            }
            if reached {
                seq.next_element_seed(search.walk(depth + 1, objects))?;
            }
        }
        // Arrays have no keys: once the element is read, only an enclosing object can still
        // hold a duplicate.
        search.closed(objects);
        if search.stopped {
            return Ok(());
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    // The pointer steps into a scalar: no value.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Deserializes an object key into "is it this key?", without allocating (escaped keys are
/// compared by their unescaped text).
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
mod tests;
