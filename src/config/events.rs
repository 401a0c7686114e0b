//! A route's `event = { ... }`, `[[routes.events]]` and `unmatched` keys: their file layer
//! ([`EventSpec`], [`EventRuleFile`], [`OneOrMany`]) and their validation into an
//! [`EventRouter`] (`crate::events`, which owns extraction, matching and the meaning of
//! every key). Every problem is reported at once, keyed relative to the route.

use http::HeaderName;
use serde::Deserialize;

use super::Problem;
use crate::events::{EventRouter, Extractor, JsonPointer, Pattern, XmlPath};

/// A route's `event = { ... }` table, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// `"X-GitHub-Event"`.
    pub header: Option<String>,
    /// A JSON pointer into the body, or into the `form` field when both are given.
    pub json: Option<String>,
    /// A urlencoded form field.
    pub form: Option<String>,
    /// An XML path such as `"/event/type"`.
    pub xml: Option<String>,
}

/// One `[[routes.events]]` rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRuleFile {
    /// `"push"`, `["issues", "issue_comment"]`, `"payment_intent.*"`.
    #[serde(rename = "match")]
    pub patterns: OneOrMany,
    /// `"tracker"` or `["ci", "audit"]` (fan-out: the first answers the sender).
    pub upstream: OneOrMany,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The entries, each with its key suffix relative to the field: `""` for a single
    /// string, `"[i]"` for list entries.
    fn entries(&self) -> Vec<(String, &str)> {
        match self {
            OneOrMany::One(s) => vec![(String::new(), s.as_str())],
            OneOrMany::Many(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("[{i}]"), s.as_str()))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, OneOrMany::Many(list) if list.is_empty())
    }
}

impl EventSpec {
    /// Validates the table into an `Extractor`. Problem keys: `"event"` (the combination),
    /// `"event.header"`, `"event.json"`, `"event.form"`, `"event.xml"`.
    pub fn compile(&self) -> Result<Extractor, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem::new(format!("event.{key}"), message));
        };
        let header = self.header.as_deref().and_then(|name| {
            HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| {
                    problem(
                        "header",
                        format!("invalid header name {name:?}; write e.g. \"X-GitHub-Event\""),
                    )
                })
                .ok()
        });
        let json = self.json.as_deref().and_then(|text| {
            JsonPointer::parse(text)
                .map_err(|m| problem("json", m))
                .ok()
        });
        let form = self.form.as_deref().and_then(|field| {
            if field.is_empty() {
                problem(
                    "form",
                    "empty form field name; write e.g. \"payload\"".into(),
                );
                None
            } else {
                Some(field.to_string())
            }
        });
        let xml = self
            .xml
            .as_deref()
            .and_then(|text| XmlPath::parse(text).map_err(|m| problem("xml", m)).ok());
        let given = [
            self.header.is_some(),
            self.json.is_some(),
            self.form.is_some(),
            self.xml.is_some(),
        ];
        let usage = "use one of { header = \"X-GitHub-Event\" }, { json = \"/type\" }, \
                     { form = \"event\" }, { form = \"payload\", json = \"/type\" }, \
                     { xml = \"/event/type\" }";
        let combination_ok = matches!(
            given,
            [true, false, false, false]
                | [false, true, false, false]
                | [false, false, true, false]
                | [false, true, true, false]
                | [false, false, false, true]
        );
        if !combination_ok {
            let message = if given.iter().all(|g| !g) {
                format!("event says nowhere to find the event type; {usage}")
            } else {
                format!(
                    "event combines sources that cannot go together (only form and json \
                     combine); {usage}"
                )
            };
            problems.push(Problem::new("event", message));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(match (header, json, form, xml) {
            (Some(h), None, None, None) => Extractor::Header(h),
            (None, Some(j), None, None) => Extractor::Json(j),
            (None, None, Some(f), None) => Extractor::Form(f),
            (None, Some(j), Some(f), None) => Extractor::FormJson(f, j),
            (None, None, None, Some(x)) => Extractor::Xml(x),
            _ => return Err(vec![Problem::new("event", usage)]),
        })
    }
}

/// Validates a route's `event`, `[[routes.events]]` and `unmatched`.
///
/// `default` is the route's own (already checked) upstream list; `is_upstream` says
/// whether a name is a configured upstream. The router validates the whole body until
/// told the route verifies it ([`EventRouter::verified_body`]). On failure returns every
/// problem, keyed relative to the route (`"event.json"`, `"events[1].match"`, `"events[1].match[0]"`,
/// `"events[0].upstream"`, `"unmatched"`); the loader prefixes `"routes[N]"`.
pub fn compile_router(
    event: Option<&EventSpec>,
    rules: &[EventRuleFile],
    unmatched: Option<&str>,
    default: &[String],
    is_upstream: &dyn Fn(&str) -> bool,
) -> Result<EventRouter, Vec<Problem>> {
    let mut problems = Vec::new();
    let extractor = event.and_then(|spec| spec.compile().map_err(|p| problems.extend(p)).ok());
    let reject_unmatched = match unmatched.map(str::trim) {
        None | Some("default") => false,
        Some("reject") => true,
        Some(other) => {
            problems.push(Problem::new(
                "unmatched",
                format!(
                    "unknown unmatched = {other:?}; use \"default\" (send to the route's \
                     upstream) or \"reject\" (answer 422 event_unmatched)"
                ),
            ));
            false
        }
    };
    if event.is_none() {
        if !rules.is_empty() {
            problems.push(Problem::new(
                "events",
                "[[routes.events]] rules need an event = { ... } saying where the event \
                 type is, e.g. event = { header = \"X-GitHub-Event\" } or \
                 event = { json = \"/type\" }",
            ));
        }
        if reject_unmatched {
            problems.push(Problem::new(
                "unmatched",
                "unmatched = \"reject\" without an event = { ... } would reject every \
                 request; add event (and rules) or remove unmatched",
            ));
        }
    }
    if default.is_empty() && !reject_unmatched {
        problems.push(Problem::new(
            "unmatched",
            "the route has no upstream for events no rule matches; set upstream or \
             unmatched = \"reject\"",
        ));
    }

    let mut compiled = Vec::with_capacity(rules.len());
    // Every pattern so far, for unreachable-pattern checks: (rule index, pattern).
    let mut earlier: Vec<(usize, Pattern)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut patterns = Vec::new();
        if rule.patterns.is_empty() {
            problems.push(Problem::new(
                format!("events[{i}].match"),
                "empty match list; give at least one event type or glob",
            ));
        }
        for (suffix, text) in rule.patterns.entries() {
            let key = format!("events[{i}].match{suffix}");
            let pattern = match Pattern::parse(text) {
                Ok(p) => p,
                Err(m) => {
                    problems.push(Problem::new(key, m));
                    continue;
                }
            };
            // An exact pattern matched by any earlier pattern, or a glob written
            // before, can never win.
            let shadowed = earlier.iter().find(|(_, p)| {
                if pattern.is_glob() {
                    p.as_str() == text
                } else {
                    p.matches(text)
                }
            });
            if let Some((j, by)) = shadowed {
                let place = if *j == i {
                    "earlier in this rule".to_string()
                } else {
                    format!("by events[{j}]")
                };
                problems.push(Problem::new(
                    key,
                    format!(
                        "{text:?} is already matched by {:?} {place}; the first \
                             matching rule wins, so this never matches (remove it or \
                             move it up)",
                        by.as_str()
                    ),
                ));
                continue;
            }
            earlier.push((i, pattern.clone()));
            patterns.push(pattern);
        }
        let upstreams = check_upstreams(&rule.upstream, i, is_upstream, &mut problems);
        compiled.push((patterns, upstreams));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(EventRouter::new(
        extractor,
        compiled,
        default.to_vec(),
        reject_unmatched,
    ))
}

fn check_upstreams(
    upstream: &OneOrMany,
    rule: usize,
    is_upstream: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if upstream.is_empty() {
        problems.push(Problem::new(
            format!("events[{rule}].upstream"),
            "empty upstream list; name at least one upstream",
        ));
    }
    for (suffix, name) in upstream.entries() {
        let key = format!("events[{rule}].upstream{suffix}");
        if !is_upstream(name) {
            problems.push(Problem::new(
                key,
                format!("unknown upstream {name:?}; define it under [upstreams.{name}]"),
            ));
        } else if names.iter().any(|n| n == name) {
            problems.push(Problem::new(
                key,
                format!("upstream {name:?} is listed twice; it would get the delivery twice"),
            ));
        } else {
            names.push(name.to_string());
        }
    }
    names
}
