//! Routing by event type, fan-out and duplicate suppression end to end, with
//! payloads shaped like the real providers'.

mod common;

use std::time::Duration;

use common::*;

const GITHUB_SECRET: &str = "github-events-secret";

#[test]
fn each_extraction_kind_routes_provider_payloads_byte_identical() {
    let ci = Upstream::start("ci");
    let tracker = Upstream::start("tracker");
    let billing = Upstream::start("billing");
    let crm = Upstream::start("crm");
    let slackapp = Upstream::start("slackapp");
    let users = Upstream::start("users");
    let orders = Upstream::start("orders");
    let gateway = Gateway::start(&format!(
        r#"{}
[[routes]]
name = "github"
path = "/github"
verify = {{ scheme = "github", secrets = ["literal:{GITHUB_SECRET}"] }}
event = {{ header = "X-GitHub-Event" }}
upstream = "ci"
  [[routes.events]]
  match = ["issues", "issue_comment"]
  upstream = "tracker"

[[routes]]
name = "stripe"
path = "/stripe"
event = {{ json = "/type" }}
unmatched = "reject"
upstream = "billing"
  [[routes.events]]
  match = "payment_intent.*"
  upstream = "billing"
  [[routes.events]]
  match = "customer.*"
  upstream = "crm"

[[routes]]
name = "stripe-object"
path = "/stripe-object"
event = {{ json = "/data/object/object" }}
upstream = "billing"
  [[routes.events]]
  match = "customer"
  upstream = "crm"

[[routes]]
name = "slack"
path = "/slack"
event = {{ form = "payload", json = "/type" }}
upstream = "ci"
  [[routes.events]]
  match = "block_actions"
  upstream = "slackapp"

[[routes]]
name = "seed"
path = "/webhook-endpoint"
event = {{ json = "/event_type" }}
unmatched = "reject"
upstream = "users"
  [[routes.events]]
  match = "user_signup"
  upstream = "users"
  [[routes.events]]
  match = "payment_processed"
  upstream = "billing"

[[routes]]
name = "xml"
path = "/xml"
event = {{ xml = "/notification/type" }}
upstream = "ci"
  [[routes.events]]
  match = "order.*"
  upstream = "orders"

[[routes]]
name = "form"
path = "/form"
event = {{ form = "event" }}
upstream = "ci"
  [[routes.events]]
  match = "order.created"
  upstream = "orders"
"#,
        upstream_sections(&[&ci, &tracker, &billing, &crm, &slackapp, &users, &orders])
    ));

    // (path, extra headers, body, upstream that must get it, X-Hookgate-Event)
    type Case<'u> = (
        &'static str,
        Vec<(String, String)>,
        Vec<u8>,
        &'u Upstream,
        &'static str,
    );
    let push = b"{\n  \"ref\": \"refs/heads/main\",\n  \"repository\": {\"full_name\": \"octo/hello\"}\n}\n".to_vec();
    let issue = br#"{"action":"opened","issue":{"number":1}}"#.to_vec();
    let stripe = br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"object":"payment_intent","amount":4200}}}"#.to_vec();
    let customer = br#"{"id":"evt_2","type":"customer.created","data":{"object":{"object":"customer","email":"a@b.c"}}}"#.to_vec();
    let slack =
        b"payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%7D%7D"
            .to_vec();
    let signup = br#"{"event_type":"user_signup","user":{"id":7}}"#.to_vec();
    let payment = br#"{"event_type":"payment_processed","amount":10}"#.to_vec();
    let xml = b"<?xml version=\"1.0\"?><notification><type>order.shipped</type><id>42</id></notification>".to_vec();
    let form = b"event=order.created&id=9".to_vec();
    let cases: Vec<Case> = vec![
        (
            "/github",
            vec![
                ("X-GitHub-Event".into(), "push".into()),
                (
                    "X-Hub-Signature-256".into(),
                    github_signature(GITHUB_SECRET, &push),
                ),
            ],
            push.clone(),
            &ci,
            "push",
        ),
        (
            "/github",
            vec![
                ("X-GitHub-Event".into(), "issues".into()),
                (
                    "X-Hub-Signature-256".into(),
                    github_signature(GITHUB_SECRET, &issue),
                ),
            ],
            issue.clone(),
            &tracker,
            "issues",
        ),
        (
            "/stripe",
            vec![],
            stripe.clone(),
            &billing,
            "payment_intent.succeeded",
        ),
        (
            "/stripe",
            vec![],
            customer.clone(),
            &crm,
            "customer.created",
        ),
        ("/stripe-object", vec![], customer.clone(), &crm, "customer"),
        (
            "/stripe-object",
            vec![],
            stripe.clone(),
            &billing,
            "payment_intent",
        ),
        (
            "/slack",
            vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            slack.clone(),
            &slackapp,
            "block_actions",
        ),
        (
            "/webhook-endpoint",
            vec![],
            signup.clone(),
            &users,
            "user_signup",
        ),
        (
            "/webhook-endpoint",
            vec![],
            payment.clone(),
            &billing,
            "payment_processed",
        ),
        (
            "/xml",
            vec![("Content-Type".into(), "application/xml".into())],
            xml.clone(),
            &orders,
            "order.shipped",
        ),
        (
            "/form",
            vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            form.clone(),
            &orders,
            "order.created",
        ),
    ];
    for (path, headers, body, upstream, event) in &cases {
        let before = upstream.count();
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answered = post(gateway.proxy, path, &borrowed, body);
        assert_eq!(
            answered.status,
            200,
            "{path} {event}: {}",
            String::from_utf8_lossy(&answered.body)
        );
        assert_eq!(
            answered.header("x-upstream"),
            Some(upstream.name.as_str()),
            "{path} {event}"
        );
        assert_eq!(upstream.count(), before + 1);
        let received = upstream.received().pop().unwrap();
        assert!(received.body == *body, "{path}: body not byte-identical");
        assert_eq!(received.header("x-hookgate-event"), Some(*event));
    }

    // Unmatched with reject: 422 and nothing forwarded.
    let refund = br#"{"id":"evt_3","type":"charge.refunded"}"#;
    let total = |list: &[&Upstream]| list.iter().map(|u| u.count()).sum::<usize>();
    let all = [&ci, &tracker, &billing, &crm, &slackapp, &users, &orders];
    let before = total(&all);
    let unmatched = post(gateway.proxy, "/stripe", &[], refund);
    assert_eq!(unmatched.status, 422);
    assert_eq!(unmatched.json()["error"], "event_unmatched");
    // Malformed JSON when an event is needed: 400 with the reason.
    let malformed = post(
        gateway.proxy,
        "/webhook-endpoint",
        &[],
        b"{\"event_type\": ",
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "bad_request");
    assert!(
        malformed.json()["reason"]
            .as_str()
            .unwrap()
            .contains("JSON"),
        "{}",
        malformed.json()
    );
    let bad_xml = post(
        gateway.proxy,
        "/xml",
        &[],
        b"<notification><type>x</notification>",
    );
    assert_eq!(bad_xml.status, 400);
    assert_eq!(total(&all), before, "refused deliveries reach no upstream");

    gateway.assert_metric(
        "hookgate_events_total",
        &[("route", "stripe"), ("event", "payment_intent.*")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_events_total",
        &[("route", "stripe"), ("event", "_other")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_events_total",
        &[("route", "github"), ("event", "issues")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_requests_total",
        &[("route", "stripe"), ("outcome", "event_unmatched")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_requests_total",
        &[("outcome", "bad_request")],
        2.0,
    );
}

#[test]
fn fan_out_copies_reach_every_upstream_and_a_down_secondary_is_retried() {
    let primary = Upstream::start("primary");
    let audit = Upstream::start("audit");
    let late_addr = addr(free_port());
    let gateway = Gateway::start_with_server(
        "fanout = { backoff = \"200ms\", max_backoff = \"500ms\", attempts = 20 }",
        &format!(
            r#"{}
[upstreams.late]
targets = ["{late_addr}"]
health = {{ interval = "250ms" }}

[[routes]]
name = "github"
path = "/github"
upstream = ["primary", "audit", "late"]
"#,
            upstream_sections(&[&primary, &audit])
        ),
    );
    let body = bytes(10_000, 3);
    let answered = post(
        gateway.proxy,
        "/github",
        &[("X-GitHub-Event", "push")],
        &body,
    );
    assert_eq!(answered.status, 200, "the sender gets the primary's answer");
    assert_eq!(answered.header("x-upstream"), Some("primary"));
    assert!(
        wait_until(Duration::from_secs(5), || audit.count() == 1),
        "the copy never reached audit"
    );
    let (first, copy) = (primary.received()[0].clone(), audit.received()[0].clone());
    assert!(first.body == body && copy.body == body, "identical bodies");
    assert_eq!(copy.target, first.target);
    assert_eq!(copy.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(copy.header("x-hookgate-route"), Some("github"));

    // The third upstream was down: its copy is retried and arrives once it is up.
    std::thread::sleep(Duration::from_millis(600));
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[("upstream", "late"), ("result", "delivered")],
        0.0,
    );
    assert!(
        gateway.metric(
            "hookgate_fanout_copies_total",
            &[("upstream", "late"), ("result", "retried")]
        ) >= 1.0
    );
    let late = Upstream::at(late_addr, "late", Behavior::default());
    assert!(
        wait_until(Duration::from_secs(10), || late.count() == 1),
        "the retried copy never arrived"
    );
    assert!(late.received()[0].body == body);
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[("upstream", "late"), ("result", "delivered")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[("upstream", "audit"), ("result", "delivered")],
        1.0,
    );
    assert_eq!(primary.count(), 1, "the primary got exactly one request");
}

#[test]
fn a_full_fan_out_queue_counts_its_drops() {
    let primary = Upstream::start("primary");
    let slow = Upstream::with("slow", Behavior::delayed(Duration::from_millis(1500)));
    let gateway = Gateway::start_with_server(
        "fanout = { queue = 1, concurrency = 1 }",
        &format!(
            "{}\n[[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nupstream = [\"primary\", \"slow\"]\n",
            upstream_sections(&[&primary, &slow])
        ),
    );
    for i in 0..3 {
        assert_eq!(
            post(gateway.proxy, "/hooks", &[], format!("n{i}").as_bytes()).status,
            200
        );
    }
    gateway.assert_metric(
        "hookgate_fanout_dropped_total",
        &[
            ("route", "hooks"),
            ("upstream", "slow"),
            ("reason", "queue_full"),
        ],
        2.0,
    );
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 1));
    assert_eq!(primary.count(), 3, "drops never affect the sender");
    assert!(
        gateway.log().contains("fan-out copy dropped"),
        "drops are logged"
    );
}

#[test]
fn duplicate_deliveries_are_answered_without_forwarding() {
    let app = Upstream::start("app");
    let failing = Upstream::with("failing", Behavior::status(500));
    let gateway = Gateway::start(&format!(
        r#"{}
[[routes]]
name = "github"
path = "/github"
dedupe = {{ key = "header:X-GitHub-Delivery", ttl = "1s", max_entries = 3 }}
upstream = "app"

[[routes]]
name = "flaky"
path = "/flaky"
dedupe = {{ key = "json:/id" }}
upstream = "failing"
"#,
        upstream_sections(&[&app, &failing])
    ));
    let deliver = |id: &str| {
        post(
            gateway.proxy,
            "/github",
            &[("X-GitHub-Delivery", id)],
            b"{\"zen\":1}",
        )
    };
    assert_eq!(deliver("d-1").status, 200);
    let again = deliver("d-1");
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(
        app.count(),
        1,
        "the same id twice reaches the upstream once"
    );

    // After the TTL the id is forwarded again.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(deliver("d-1").status, 200);
    assert_eq!(app.count(), 2);

    // Bounded: with max_entries = 3, the oldest id is evicted by newer ones.
    for id in ["d-2", "d-3", "d-4"] {
        assert_eq!(deliver(id).status, 200);
    }
    assert_eq!(app.count(), 5);
    assert_eq!(
        deliver("d-1").json().get("status"),
        None,
        "evicted: forwarded again"
    );
    assert_eq!(app.count(), 6);
    assert_eq!(deliver("d-4").json()["status"], "duplicate");

    // No id: forwarded without dedupe.
    assert_eq!(post(gateway.proxy, "/github", &[], b"{}").status, 200);
    assert_eq!(app.count(), 7);

    // A failed forward is not remembered: the provider's retry gets through.
    let event = br#"{"id":"evt_retry","type":"invoice.paid"}"#;
    assert_eq!(post(gateway.proxy, "/flaky", &[], event).status, 500);
    assert_eq!(post(gateway.proxy, "/flaky", &[], event).status, 500);
    assert_eq!(failing.count(), 2);
    gateway.assert_metric(
        "hookgate_requests_total",
        &[("route", "github"), ("outcome", "duplicate")],
        2.0,
    );
}
