//! Routing inside a route by the payload's event type: where the event comes from, the
//! `[[routes.events]]` rules, and the decision the proxy acts on.
//!
//! Owns: what a route's `event = { ... }`, `[[routes.events]]` and `unmatched` keys mean
//! (below) and the [`EventRouter`] they compile into; extraction of the event from a
//! [`Verified`] request ([`extract`]); JSON pointers ([`mod@pointer`]); patterns ([`rules`]);
//! the [`Decision`] with its bounded metric label. Does not own: the keys' file layer and
//! their validation (`config::events`, which reports every problem at once, keyed relative
//! to the route), which route a request belongs to (`routing`), answering 400/422,
//! forwarding, fan-out delivery (`fanout`) or metric registration (`metrics`).
//!
//! # Configuration
//! ```toml
//! [[routes]]
//! name = "github"
//! upstream = "ci"                      # events no rule matches (unmatched = "default")
//! event = { header = "X-GitHub-Event" }
//!   [[routes.events]]
//!   match = ["issues", "issue_comment"]
//!   upstream = "tracker"
//!   [[routes.events]]
//!   match = "pull_request*"            # glob: * any run, ? one character
//!   upstream = ["ci", "audit"]         # fan-out: ci answers the sender, audit gets a copy
//! ```
//! `event` is one of `{ header = "X-GitHub-Event" }`, `{ json = "/type" }` (a JSON pointer,
//! RFC 6901: `/data/object/object`, `/items/0/type`, `~1` for `/`, `~0` for `~`),
//! `{ form = "event" }` (a urlencoded field), `{ form = "payload", json = "/type" }` (JSON in a
//! form field, as Slack interactivity posts it) or `{ xml = "/event/type" }` (element names
//! from the root; `/notification/@type` for an attribute). `unmatched = "reject"` answers
//! 422 `event_unmatched`; `"default"` (the default) forwards to the route's `upstream`.
//!
//! # Semantics
//! - Rules are tried in file order; **the first rule with a matching pattern wins**. A pattern
//!   that could never win — an exact name an earlier pattern matches, or a glob written
//!   before — is reported as a problem.
//! - A request without an event (header absent, pointer/path/field not there, JSON `null`,
//!   an empty value) matches no rule: it goes to the route's upstream, or is rejected with
//!   `unmatched = "reject"`.
//! - A body that cannot be parsed far enough to answer, a value that is an object or array,
//!   a repeated event header, an event over [`MAX_EVENT_LEN`] bytes or with control
//!   characters is an [`EventError`]: the proxy answers 400 `bad_request` with its text.
//! - **One reading**: the upstream parses the same bytes again, so a body it could read
//!   differently is an [`EventError`] too, its text naming the key (never a body value): a
//!   duplicate JSON key in any object on the pointer's path (RFC 8259 §4), a JSON number
//!   that is not an integer within 64 bits, a repeated XML element on the path or attribute
//!   at its end, a repeated form field, a `<!DOCTYPE>`. Routes **without `verify`** validate
//!   the whole body ([`Scope::Document`]: UTF-8, syntax, nothing after the document); routes
//!   with `verify` read the objects on the path to their end and nothing after
//!   ([`Scope::Path`], set by [`EventRouter::verified_body`]). Details in [`mod@pointer`]
//!   and [`extract`].
//! - The metric label ([`Decision::label`]) is the text of the pattern that matched, or
//!   [`OTHER_LABEL`]: a bounded set known at load time ([`EventRouter::labels`]). The event
//!   itself ([`Decision::event`]) is for the `X-Hookgate-Event` header and the log only; it
//!   is at most [`MAX_EVENT_LEN`] bytes of visible text, so it is always a valid header value.
//! - Extraction runs after verification, once per request, and never copies the body; routes
//!   without `event` never look at the body.
//!
//! # Trust
//! A JSON, form or XML event is inside the signed body. A **header** event is not covered by
//! most signatures (GitHub signs only the body): whoever can replay a signed body (GitHub
//! deliveries carry no timestamp) can pick the header and so the upstream. Upstreams that act
//! differently per event should read the event from the body they receive.

pub mod extract;
pub mod pointer;
pub mod rules;

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use crate::verify::Verified;

pub use extract::{declares, Extractor, Format, XmlPath};
pub use pointer::{JsonPointer, PointerError, Scope};
pub use rules::Pattern;

/// The metric label of an event no pattern matched (or of a request without an event).
pub const OTHER_LABEL: &str = "_other";

/// Longest event type accepted, in bytes.
pub const MAX_EVENT_LEN: usize = 256;

// ---------------------------------------------------------------------------------------------
// Compiled router

/// A route's compiled event routing. Immutable; share it with the route's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRouter {
    extractor: Option<Extractor>,
    /// How much of the body extraction reads: [`Scope::Path`] when the route verifies it.
    scope: Scope,
    rules: Vec<Rule>,
    default: Vec<String>,
    reject_unmatched: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    patterns: Vec<Pattern>,
    upstreams: Vec<String>,
}

/// What to do with a verified request, from its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'r, 'a> {
    /// The event as extracted (for `X-Hookgate-Event` and the log, never a metric label):
    /// at most [`MAX_EVENT_LEN`] bytes, no control characters. `None` when the route has no
    /// `event` or the request carries none.
    pub event: Option<Cow<'a, str>>,
    /// Bounded metric label: the matching pattern's text, else [`OTHER_LABEL`].
    pub label: &'r str,
    pub target: Target<'r>,
}

/// Where the request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'r> {
    /// Forward to `upstreams[0]` (its answer goes back to the sender) and queue copies for
    /// `upstreams[1..]`. Never empty. `rule` is the index of the matching
    /// `[[routes.events]]` rule, `None` for the route's own upstream.
    Forward {
        upstreams: &'r [String],
        rule: Option<usize>,
    },
    /// `unmatched = "reject"` and no rule matched: answer 422 `event_unmatched`, forward
    /// nothing.
    Reject,
}

impl<'r> Target<'r> {
    /// The upstream whose answer goes back to the sender.
    pub fn primary(&self) -> Option<&'r str> {
        match self {
            Target::Forward { upstreams, .. } => upstreams.first().map(String::as_str),
            Target::Reject => None,
        }
    }

    /// The upstreams that get background copies (fan-out); empty when there are none.
    pub fn copies(&self) -> &'r [String] {
        match self {
            Target::Forward { upstreams, .. } => upstreams.get(1..).unwrap_or_default(),
            Target::Reject => &[],
        }
    }
}

/// Why no decision could be made; the proxy answers 400 `bad_request` with
/// its `Display` text as the reason and forwards nothing. Messages hold positions and
/// header names, and at most a short excerpt of XML markup names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not valid JSON ({0})")]
    Json(String),
    #[error("body is not valid XML ({0})")]
    Xml(String),
    #[error("the event at {pointer} is {kind}, not a string")]
    NotScalar { pointer: String, kind: &'static str },
    /// A JSON value readers could read differently: a duplicate key on the pointer's path or
    /// a number that is not an integer within 64 bits (see [`mod@pointer`]).
    #[error("{0}")]
    AmbiguousJson(PointerError),
    /// `element` occurs more than once in `parent` on the XML `path`.
    #[error(
        "element <{element}> appears more than once in <{parent}> on the path {path}; XML \
         readers disagree on which one counts"
    )]
    RepeatedElement {
        path: String,
        parent: String,
        element: String,
    },
    /// The attribute the XML `path` ends in occurs more than once on its element.
    #[error(
        "attribute {attribute} appears more than once on the element of the path {path}; XML \
         readers disagree on which one counts"
    )]
    RepeatedAttribute { path: String, attribute: String },
    /// The form field holding the event occurs more than once in the body.
    #[error("form field {0:?} appears more than once; form readers disagree on which one counts")]
    RepeatedField(String),
    /// The form field holding the event is not UTF-8 once percent-decoded.
    #[error("form field {0:?} is not valid UTF-8 once percent-decoded")]
    FieldNotUtf8(String),
    /// The declared `Content-Type` is not the format the route reads the body as, so an
    /// app that parses by its `Content-Type` reads other fields (see [`declares`]).
    #[error("the Content-Type is not {0}, the format this route reads the body as")]
    ContentType(&'static str),
    #[error("header {0} appears more than once")]
    RepeatedHeader(HeaderName),
    #[error("header {0} is not visible ASCII text")]
    HeaderNotText(HeaderName),
    #[error("the event type is {0} bytes long; at most 256 are accepted")]
    TooLong(usize),
    #[error("the event type contains control characters")]
    ControlCharacters,
}

impl EventError {
    /// Client-facing error code.
    pub fn error_code(&self) -> &'static str {
        "bad_request"
    }
}

impl EventRouter {
    /// A route without event routing: everything goes to `default`.
    pub fn passthrough(default: Vec<String>) -> Self {
        EventRouter {
            extractor: None,
            scope: Scope::Document,
            rules: Vec::new(),
            default,
            reject_unmatched: false,
        }
    }

    /// A router from validated parts (`config::events` validates them): the extractor,
    /// each rule's patterns and upstreams in file order, the route's own upstreams and
    /// whether unmatched events are refused. It reads the whole body ([`Scope::Document`])
    /// until told the route verifies it ([`EventRouter::verified_body`]).
    pub fn new(
        extractor: Option<Extractor>,
        rules: Vec<(Vec<Pattern>, Vec<String>)>,
        default: Vec<String>,
        reject_unmatched: bool,
    ) -> Self {
        EventRouter {
            extractor,
            scope: Scope::Document,
            rules: rules
                .into_iter()
                .map(|(patterns, upstreams)| Rule {
                    patterns,
                    upstreams,
                })
                .collect(),
            default,
            reject_unmatched,
        }
    }

    /// The router of a route that verifies its body (`verifies`): only the provider can shape
    /// it, so the event is read with [`Scope::Path`] (the objects on the pointer's path, to
    /// their end) instead of validating the whole body ([`Scope::Document`], the default).
    pub fn verified_body(mut self, verifies: bool) -> Self {
        self.scope = if verifies {
            Scope::Path
        } else {
            Scope::Document
        };
        self
    }

    /// How much of the body [`EventRouter::route`] reads.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether the route reads an event at all (if not, [`EventRouter::route`] never
    /// touches the body).
    pub fn has_event(&self) -> bool {
        self.extractor.is_some()
    }

    /// Whether [`EventRouter::route`] reads the body (a JSON, form or XML event; a header
    /// event does not): a body with a `Content-Encoding` is then decoded first.
    pub fn reads_body(&self) -> bool {
        self.extractor
            .as_ref()
            .is_some_and(|extractor| !matches!(extractor, Extractor::Header(_)))
    }

    /// Extracts the event of a verified request and picks its target.
    pub fn route<'r, 'a>(
        &'r self,
        verified: &Verified<'a>,
        headers: &'a HeaderMap,
    ) -> Result<Decision<'r, 'a>, EventError> {
        let event = match &self.extractor {
            None => None,
            Some(extractor) => extractor.extract(verified, headers, self.scope)?,
        };
        let event = match event {
            Some(e) if e.is_empty() => None,
            Some(e) if e.len() > MAX_EVENT_LEN => return Err(EventError::TooLong(e.len())),
            Some(e) if e.chars().any(char::is_control) => {
                return Err(EventError::ControlCharacters)
            }
            other => other,
        };
        let (label, target) = self.decide(event.as_deref());
        Ok(Decision {
            event,
            label,
            target,
        })
    }

    /// The label and target for an already extracted event (first matching rule wins).
    pub fn decide(&self, event: Option<&str>) -> (&str, Target<'_>) {
        if let Some(event) = event {
            for (index, rule) in self.rules.iter().enumerate() {
                if let Some(pattern) = rule.patterns.iter().find(|p| p.matches(event)) {
                    let target = Target::Forward {
                        upstreams: &rule.upstreams,
                        rule: Some(index),
                    };
                    return (pattern.as_str(), target);
                }
            }
        }
        let target = if self.reject_unmatched {
            Target::Reject
        } else {
            Target::Forward {
                upstreams: &self.default,
                rule: None,
            }
        };
        (OTHER_LABEL, target)
    }

    /// Every label [`Decision::label`] can take, for pre-registering metrics: each pattern
    /// in rule order, then [`OTHER_LABEL`].
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.patterns.iter().map(Pattern::as_str))
            .chain(std::iter::once(OTHER_LABEL))
    }

    /// Every upstream list a decision can forward to (the route's own unless
    /// unmatched events are rejected, then each rule's): the first of each
    /// answers the sender, the others get copies. For pre-registering metrics.
    pub fn targets(&self) -> impl Iterator<Item = &[String]> {
        let default = (!self.reject_unmatched).then_some(self.default.as_slice());
        default
            .into_iter()
            .chain(self.rules.iter().map(|r| r.upstreams.as_slice()))
    }

    /// Every upstream a decision can name (default first, then rules), with repeats.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.default
            .iter()
            .chain(self.rules.iter().flat_map(|r| r.upstreams.iter()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
