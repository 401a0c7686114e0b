//! Tests of `events`.

use super::*;
use crate::config::events::{compile_router, EventRuleFile, EventSpec, OneOrMany};
use crate::problem::Problem;
use serde::Deserialize;

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
    let verified = crate::verify::testkit::unsigned(headers, body);
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
        let (got_event, got_label, target) = route(&router, &github_headers(event), body).unwrap();
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
    let (event, label, target) = route(&router, &h, br#"{"event_type":"user_signup"}"#).unwrap();
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
    let (_, label, _) = route(&router, &HeaderMap::new(), br#"{"type":"invoice.paid"}"#).unwrap();
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
    let json = compile("name = \"j\"\nupstream = \"ci\"\nevent = { json = \"/type\" }").unwrap();
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
    let p =
        &compile("name = \"r\"\nupstream = \"ci\"\nevent = { json = \"type\" }").unwrap_err()[0];
    assert!(p.message.contains("\"/type\""), "{p}");
    // Unknown keys are a parse error with the key's name.
    let err =
        toml::from_str::<RouteFile>("name = \"r\"\nupstream = \"ci\"\nevent = { jsonn = \"/t\" }")
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
    let p =
        compile("name = \"r\"\nupstream = \"ci\"\n[[events]]\nmatch = \"a\"\nupstream = \"ci\"")
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
