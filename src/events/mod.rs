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
mod tests {
    use super::*;
    use crate::config::events::{compile_router, EventRuleFile, EventSpec, OneOrMany};
    use crate::config::Problem;
    use crate::verify::{Request, Verifier};
    use serde::Deserialize;
    use std::time::SystemTime;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RouteFile {
        #[allow(dead_code)]
        name: String,
        upstream: String,
        event: Option<EventSpec>,
        #[serde(default)]
        events: Vec<EventRuleFile>,
        unmatched: Option<String>,
    }

    const UPSTREAMS: &[&str] = &["ci", "tracker", "audit", "users", "billing", "slack"];

    fn compile(toml_text: &str) -> Result<EventRouter, Vec<Problem>> {
        let route: RouteFile = toml::from_str(toml_text).unwrap();
        compile_router(
            route.event.as_ref(),
            &route.events,
            route.unmatched.as_deref(),
            std::slice::from_ref(&route.upstream),
            &|name| UPSTREAMS.contains(&name),
        )
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    fn route<'r>(
        router: &'r EventRouter,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Option<String>, &'r str, Target<'r>), EventError> {
        let request = Request {
            method: "POST",
            path_and_query: "/hook",
            headers,
            body,
        };
        let verified = Verifier::disabled()
            .verify(&request, SystemTime::now())
            .unwrap();
        router
            .route(&verified, headers)
            .map(|d| (d.event.map(Cow::into_owned), d.label, d.target))
    }

    const GITHUB: &str = r#"
        name = "github"
        upstream = "ci"
        event = { header = "X-GitHub-Event" }
        [[events]]
        match = ["issues", "issue_comment"]
        upstream = "tracker"
        [[events]]
        match = "pull_request*"
        upstream = ["ci", "audit"]
        [[events]]
        match = "*"
        upstream = "audit"
    "#;

    fn github_headers(event: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", event.parse().unwrap());
        h
    }

    #[test]
    fn github_rules_first_match_wins() {
        let router = compile(GITHUB).unwrap();
        let body = br#"{"action":"opened"}"#;
        let table: [(&str, &str, &[&str], Option<usize>); 6] = [
            ("issues", "issues", &["tracker"], Some(0)),
            ("issue_comment", "issue_comment", &["tracker"], Some(0)),
            ("pull_request", "pull_request*", &["ci", "audit"], Some(1)),
            (
                "pull_request_review",
                "pull_request*",
                &["ci", "audit"],
                Some(1),
            ),
            ("push", "*", &["audit"], Some(2)),
            ("issues2", "*", &["audit"], Some(2)),
        ];
        for (event, label, upstreams, rule) in table {
            let (got_event, got_label, target) =
                route(&router, &github_headers(event), body).unwrap();
            assert_eq!(got_event.as_deref(), Some(event));
            assert_eq!(got_label, label, "{event}");
            let Target::Forward {
                upstreams: got,
                rule: got_rule,
            } = target
            else {
                panic!("{event} rejected");
            };
            assert_eq!(got, upstreams, "{event}");
            assert_eq!(got_rule, rule, "{event}");
        }
        let (_, _, t) = route(&router, &github_headers("pull_request"), body).unwrap();
        assert_eq!(t.primary(), Some("ci"));
        assert_eq!(t.copies(), ["audit"]);
        // No header: the route's upstream, label _other.
        let (event, label, target) = route(&router, &HeaderMap::new(), body).unwrap();
        assert_eq!((event, label), (None, OTHER_LABEL));
        assert_eq!(
            target,
            Target::Forward {
                upstreams: &["ci".to_string()],
                rule: None
            }
        );
        assert_eq!(target.copies(), [] as [String; 0]);
        assert_eq!(
            router.labels().collect::<Vec<_>>(),
            ["issues", "issue_comment", "pull_request*", "*", "_other"]
        );
        assert_eq!(
            router.upstreams().collect::<Vec<_>>(),
            ["ci", "tracker", "ci", "audit", "audit"]
        );
    }

    #[test]
    fn unmatched_reject_and_default() {
        let shop = r#"
            name = "shop"
            upstream = "ci"
            event = { json = "/event_type" }
            unmatched = "reject"
            [[events]]
            match = "user_signup"
            upstream = "users"
            [[events]]
            match = "payment_processed"
            upstream = "billing"
        "#;
        let router = compile(shop).unwrap();
        let h = HeaderMap::new();
        let (event, label, target) =
            route(&router, &h, br#"{"event_type":"user_signup"}"#).unwrap();
        assert_eq!(event.as_deref(), Some("user_signup"));
        assert_eq!(label, "user_signup");
        assert_eq!(target.primary(), Some("users"));
        let (_, label, target) = route(&router, &h, br#"{"event_type":"refund"}"#).unwrap();
        assert_eq!((label, target), (OTHER_LABEL, Target::Reject));
        assert_eq!(target.primary(), None);
        // No event at all is unmatched too.
        let (_, _, target) = route(&router, &h, br#"{"other":1}"#).unwrap();
        assert_eq!(target, Target::Reject);
        let (_, _, target) = route(&router, &h, br#"{"event_type":""}"#).unwrap();
        assert_eq!(target, Target::Reject);
        // Unparseable body: an error for a 400, not a rejection.
        let err = route(&router, &h, b"<xml/>").unwrap_err();
        assert_eq!(err.error_code(), "bad_request");
        assert!(err.to_string().contains("not valid JSON"), "{err}");

        let default = shop.replace("unmatched = \"reject\"", "unmatched = \"default\"");
        let router = compile(&default).unwrap();
        let (_, label, target) = route(&router, &h, br#"{"event_type":"refund"}"#).unwrap();
        assert_eq!(label, OTHER_LABEL);
        assert_eq!(target.primary(), Some("ci"));
        let implicit = shop.replace("unmatched = \"reject\"", "");
        assert_eq!(compile(&implicit).unwrap(), router);
    }

    #[test]
    fn the_issue_example_is_refused_and_names_the_key() {
        let shop = r#"
            name = "shop"
            upstream = "ci"
            event = { json = "/event_type" }
            unmatched = "reject"
            [[events]]
            match = "user_signup"
            upstream = "users"
            [[events]]
            match = "payment_processed"
            upstream = "billing"
        "#;
        let unverified = compile(shop).unwrap();
        assert_eq!(unverified.scope(), Scope::Document);
        let verified = unverified.clone().verified_body(true);
        assert_eq!(verified.scope(), Scope::Path);
        assert_eq!(verified.clone().verified_body(false), unverified);
        let h = HeaderMap::new();
        let body = br#"{"event_type":"user_signup","n":1,"event_type":"payment_processed"}"#;
        for router in [&unverified, &verified] {
            let err = route(router, &h, body).unwrap_err();
            assert_eq!(err.error_code(), "bad_request");
            let reason = err.to_string();
            assert!(reason.contains("duplicate key \"event_type\""), "{reason}");
            assert!(!reason.contains("user_signup") && !reason.contains("payment"));
        }
        // Trailing bytes after the object: validated only where the body is not verified.
        let trailing = br#"{"event_type":"user_signup"} {"event_type":"payment_processed"}"#;
        assert!(matches!(
            route(&unverified, &h, trailing),
            Err(EventError::Json(_))
        ));
        let (event, _, target) = route(&verified, &h, trailing).unwrap();
        assert_eq!(event.as_deref(), Some("user_signup"));
        assert_eq!(target.primary(), Some("users"));
        // A float event type has no single text.
        let err = route(&unverified, &h, br#"{"event_type":1.0}"#).unwrap_err();
        assert!(
            err.to_string().contains("not an integer within 64 bits"),
            "{err}"
        );
    }

    #[test]
    fn stripe_globs_and_nested_pointer() {
        let router = compile(
            r#"
            name = "stripe"
            upstream = "billing"
            event = { json = "/type" }
            [[events]]
            match = "payment_intent.*"
            upstream = ["billing", "audit"]
            [[events]]
            match = ["customer.subscription.*", "invoice.paid"]
            upstream = "users"
        "#,
        )
        .unwrap();
        let body = br#"{"id":"evt_1","object":"event","data":{"object":{"object":"payment_intent"}},"type":"payment_intent.succeeded"}"#;
        let (event, label, target) = route(&router, &HeaderMap::new(), body).unwrap();
        assert_eq!(event.as_deref(), Some("payment_intent.succeeded"));
        assert_eq!(label, "payment_intent.*");
        assert_eq!(target.copies(), ["audit"]);
        let (_, label, _) =
            route(&router, &HeaderMap::new(), br#"{"type":"invoice.paid"}"#).unwrap();
        assert_eq!(label, "invoice.paid");
        let (_, label, target) =
            route(&router, &HeaderMap::new(), br#"{"type":"charge.refunded"}"#).unwrap();
        assert_eq!((label, target.primary()), (OTHER_LABEL, Some("billing")));
        let err = route(&router, &HeaderMap::new(), br#"{"type":{"nested":1}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the event at /type is an object, not a string"
        );
    }

    #[test]
    fn slack_form_and_xml_routes() {
        let slack = compile(
            r#"
            name = "slack"
            upstream = "slack"
            event = { form = "payload", json = "/type" }
            [[events]]
            match = "view_submission"
            upstream = "users"
        "#,
        )
        .unwrap();
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "payload",
                r#"{"type":"view_submission","view":{"id":"V1"}}"#,
            )
            .finish();
        let (event, label, _) = route(&slack, &HeaderMap::new(), body.as_bytes()).unwrap();
        assert_eq!(
            (event.as_deref(), label),
            (Some("view_submission"), "view_submission")
        );

        let xml = compile(
            r#"
            name = "xml"
            upstream = "ci"
            event = { xml = "/notification/event/type" }
            [[events]]
            match = "order.*"
            upstream = "billing"
        "#,
        )
        .unwrap();
        let body = br#"<?xml version="1.0"?><notification><event><type>order.created</type></event></notification>"#;
        let (event, label, target) = route(&xml, &HeaderMap::new(), body).unwrap();
        assert_eq!(
            (event.as_deref(), label, target.primary()),
            (Some("order.created"), "order.*", Some("billing"))
        );
    }

    #[test]
    fn event_values_are_bounded_and_printable() {
        let router = compile(GITHUB).unwrap();
        let long = "x".repeat(MAX_EVENT_LEN + 1);
        assert_eq!(
            route(&router, &github_headers(&long), b"").unwrap_err(),
            EventError::TooLong(257)
        );
        let ok = "x".repeat(MAX_EVENT_LEN);
        assert!(route(&router, &github_headers(&ok), b"").is_ok());
        let json =
            compile("name = \"j\"\nupstream = \"ci\"\nevent = { json = \"/type\" }").unwrap();
        let err = route(&json, &HeaderMap::new(), br#"{"type":"a\nb"}"#).unwrap_err();
        assert_eq!(err, EventError::ControlCharacters);
    }

    #[test]
    fn routes_without_event_never_read_the_body() {
        let router = compile("name = \"plain\"\nupstream = \"ci\"").unwrap();
        assert!(!router.has_event());
        let (event, label, target) = route(&router, &HeaderMap::new(), b"\xff not json").unwrap();
        assert_eq!(
            (event, label, target.primary()),
            (None, OTHER_LABEL, Some("ci"))
        );
        assert_eq!(EventRouter::passthrough(vec!["ci".into()]), router);
    }

    #[test]
    fn event_spec_problems() {
        let table: [(&str, &[&str]); 10] = [
            ("event = {}", &["event"]),
            ("event = { header = \"X-A\", json = \"/type\" }", &["event"]),
            ("event = { xml = \"/a\", form = \"f\" }", &["event"]),
            ("event = { header = \"bad header\" }", &["event.header"]),
            ("event = { json = \"type\" }", &["event.json"]),
            ("event = { json = \"/a~2\" }", &["event.json"]),
            ("event = { form = \"\" }", &["event.form"]),
            (
                "event = { form = \"payload\", json = \"nope\" }",
                &["event.json"],
            ),
            ("event = { xml = \"event/type\" }", &["event.xml"]),
            (
                "event = { header = \"bad header\", json = \"x\" }",
                &["event.header", "event.json", "event"],
            ),
        ];
        for (event, expected) in table {
            let text = format!("name = \"r\"\nupstream = \"ci\"\n{event}");
            let problems = compile(&text).unwrap_err();
            assert_eq!(keys(&problems), expected, "{event}: {problems:?}");
        }
        let p = &compile("name = \"r\"\nupstream = \"ci\"\nevent = { json = \"type\" }")
            .unwrap_err()[0];
        assert!(p.message.contains("\"/type\""), "{p}");
        // Unknown keys are a parse error with the key's name.
        let err = toml::from_str::<RouteFile>(
            "name = \"r\"\nupstream = \"ci\"\nevent = { jsonn = \"/t\" }",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("jsonn"), "{err}");
        let err = toml::from_str::<RouteFile>(
            "name = \"r\"\nupstream = \"ci\"\n[[events]]\nmatch = \"a\"\nupstream = \"ci\"\nmatches = \"b\"",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("matches"), "{err}");
    }

    #[test]
    fn rule_problems_all_reported_with_keys() {
        let problems = compile(
            r#"
            name = "r"
            upstream = "ci"
            event = { json = "/type" }
            unmatched = "drop"
            [[events]]
            match = ["issues", ""]
            upstream = "nowhere"
            [[events]]
            match = []
            upstream = []
            [[events]]
            match = "issues"
            upstream = ["ci", "audit", "ci"]
            [[events]]
            match = "pull_request*"
            upstream = "ci"
            [[events]]
            match = ["pull_request_review", "pull_request*", "x", "x"]
            upstream = ["audit", "ghost"]
        "#,
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "unmatched",
                "events[0].match[1]",
                "events[0].upstream",
                "events[1].match",
                "events[1].upstream",
                "events[2].match",
                "events[2].upstream[2]",
                "events[4].match[0]",
                "events[4].match[1]",
                "events[4].match[3]",
                "events[4].upstream[1]",
            ],
            "{problems:#?}"
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(text[2].contains("[upstreams.nowhere]"), "{}", text[2]);
        assert!(text[5].contains("by events[0]"), "{}", text[5]);
        assert!(
            text[7].contains("\"pull_request*\" by events[3]"),
            "{}",
            text[7]
        );
        assert!(text[9].contains("earlier in this rule"), "{}", text[9]);
        // Relative keys compose with the loader's prefix.
        assert_eq!(
            problems[1].clone().within("routes[3]").key,
            "routes[3].events[0].match[1]"
        );
    }

    #[test]
    fn route_level_problems() {
        let p = compile(
            "name = \"r\"\nupstream = \"ci\"\n[[events]]\nmatch = \"a\"\nupstream = \"ci\"",
        )
        .unwrap_err();
        assert_eq!(keys(&p), ["events"]);
        let p = compile("name = \"r\"\nupstream = \"ci\"\nunmatched = \"reject\"").unwrap_err();
        assert_eq!(keys(&p), ["unmatched"]);
        let p = compile_router(None, &[], None, &[], &|_| true).unwrap_err();
        assert_eq!(keys(&p), ["unmatched"]);
        // A route with only rules and reject needs no default upstream.
        let spec = EventSpec {
            header: Some("X-Event".into()),
            ..EventSpec::default()
        };
        let rule = EventRuleFile {
            patterns: OneOrMany::One("a".into()),
            upstream: OneOrMany::One("ci".into()),
        };
        let router = compile_router(Some(&spec), &[rule], Some("reject"), &[], &|_| true).unwrap();
        assert_eq!(router.decide(Some("b")).1, Target::Reject);
        assert_eq!(router.decide(Some("a")).1.primary(), Some("ci"));
    }
}
