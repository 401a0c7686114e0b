//! Routing by event type, fan-out and duplicate suppression end to end, with
//! payloads shaped like the real providers'.

mod common;

use std::time::Duration;

use common::*;

const GITHUB_SECRET: &str = "github-events-secret";

/// `[[routes.events]]` tables: (the `match` value as TOML, upstream).
fn events(rules: &[(&str, &str)]) -> String {
    rules
        .iter()
        .map(|(pattern, upstream)| {
            format!("[[routes.events]]\nmatch = {pattern}\nupstream = \"{upstream}\"\n")
        })
        .collect()
}

#[test]
fn each_extraction_kind_routes_provider_payloads_byte_identical() {
    // Guards `events::extract` per kind and the rule match in `routing.rs`:
    // a wrong pointer, form field or XML path sends a case to the default upstream.
    let ci = Upstream::start("ci");
    let tracker = Upstream::start("tracker");
    let billing = Upstream::start("billing");
    let crm = Upstream::start("crm");
    let slackapp = Upstream::start("slackapp");
    let users = Upstream::start("users");
    let orders = Upstream::start("orders");
    let gateway = [&ci, &tracker, &billing, &crm, &slackapp, &users, &orders]
        .into_iter()
        .fold(Setup::new(), Setup::upstream)
        .route(
            "github",
            "/github",
            "ci",
            &format!(
                "verify = {{ scheme = \"github\", secrets = [\"literal:{GITHUB_SECRET}\"] }}\n\
                 event = {{ header = \"X-GitHub-Event\" }}\n{}",
                events(&[("[\"issues\", \"issue_comment\"]", "tracker")])
            ),
        )
        .route(
            "stripe",
            "/stripe",
            "billing",
            &format!(
                "event = {{ json = \"/type\" }}\nunmatched = \"reject\"\n{}",
                events(&[
                    ("\"payment_intent.*\"", "billing"),
                    ("\"customer.*\"", "crm")
                ])
            ),
        )
        .route(
            "stripe-object",
            "/stripe-object",
            "billing",
            &format!(
                "event = {{ json = \"/data/object/object\" }}\n{}",
                events(&[("\"customer\"", "crm")])
            ),
        )
        .route(
            "slack",
            "/slack",
            "ci",
            &format!(
                "event = {{ form = \"payload\", json = \"/type\" }}\n{}",
                events(&[("\"block_actions\"", "slackapp")])
            ),
        )
        .route(
            "seed",
            "/webhook-endpoint",
            "users",
            &format!(
                "event = {{ json = \"/event_type\" }}\nunmatched = \"reject\"\n{}",
                events(&[
                    ("\"user_signup\"", "users"),
                    ("\"payment_processed\"", "billing")
                ])
            ),
        )
        .route(
            "xml",
            "/xml",
            "ci",
            &format!(
                "event = {{ xml = \"/notification/type\" }}\n{}",
                events(&[("\"order.*\"", "orders")])
            ),
        )
        .route(
            "form",
            "/form",
            "ci",
            &format!(
                "event = {{ form = \"event\" }}\n{}",
                events(&[("\"order.created\"", "orders")])
            ),
        )
        .start();

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
    gateway.assert_requests("stripe", "event_unmatched", 1.0);
    gateway.assert_outcome("bad_request", 2.0);
}

#[test]
fn fan_out_copies_reach_every_upstream_and_a_down_secondary_is_retried() {
    // Guards `queue_copies` after a 2xx in `Gateway::handle` and the retry of
    // connect failures in `AttemptOutcome::class` (fanout.rs).
    let primary = Upstream::start("primary");
    let audit = Upstream::start("audit");
    let late_port = DeadPort::new();
    let late_addr = late_port.addr;
    let gateway = Setup::new()
        .server("fanout = { backoff = \"200ms\", max_backoff = \"500ms\", attempts = 20 }")
        .upstream(&primary)
        .upstream(&audit)
        .upstream_named("late", &[late_addr], "health = { interval = \"250ms\" }")
        .fan_out("github", "/github", &["primary", "audit", "late"], "")
        .start();
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
    assert!(
        wait_until(Duration::from_secs(10), || gateway
            .try_metric(
                "hookgate_fanout_copies_total",
                &[("upstream", "late"), ("result", "retried")]
            )
            .is_ok_and(|retries| retries.is_some_and(|retries| retries >= 2.0))),
        "the copy to the down upstream was not retried"
    );
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[("upstream", "late"), ("result", "delivered")],
        0.0,
    );
    let late = late_port.come_up("late", Behavior::default());
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
fn after_a_primary_failure_nothing_is_copied() {
    // Guards `if (200..300).contains(&forwarded.status)` before `queue_copies`
    // in `proxy/mod.rs`: copying whatever the primary answered turns this red
    // (the 503 case); queueing copies in the `Err` arms turns the hang-up red
    // (both checked).
    let failing = Upstream::with("failing", Behavior::status(503));
    let refusing = Upstream::with("refusing", Behavior::status(400));
    let hangs_up = Upstream::with("hangs-up", Behavior::hang_up());
    let ok = Upstream::start("ok");
    let audit = Upstream::start("audit");
    // One copy at a time, so copies leave in the order they were queued: the
    // control delivery's copy arriving means any earlier copy has been sent.
    let gateway = Setup::new()
        .server("fanout = { concurrency = 1, attempts = 1 }")
        .upstream(&failing)
        .upstream(&refusing)
        .upstream(&hangs_up)
        .upstream(&ok)
        .upstream(&audit)
        .fan_out("failed", "/failed", &["failing", "audit"], "")
        .fan_out("refused", "/refused", &["refusing", "audit"], "")
        .fan_out("broken", "/broken", &["hangs-up", "audit"], "")
        .fan_out("control", "/control", &["ok", "audit"], "")
        .start();
    let body = br#"{"action":"opened"}"#;
    for (route, path, status) in [
        ("failed", "/failed", 503),
        ("refused", "/refused", 400),
        ("broken", "/broken", 502),
    ] {
        assert_eq!(
            post(gateway.proxy, path, &[], body).status,
            status,
            "{route}"
        );
        // Counted in the logging phase, after copies would have been queued.
        let outcome = if status == 502 {
            "upstream_error"
        } else {
            "forwarded"
        };
        gateway.assert_requests(route, outcome, 1.0);
    }
    assert_eq!(post(gateway.proxy, "/control", &[], body).status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || audit.count() >= 1),
        "the control copy never reached audit"
    );
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[
            ("route", "control"),
            ("upstream", "audit"),
            ("result", "delivered"),
        ],
        1.0,
    );
    let routes: Vec<Option<String>> = audit
        .received()
        .iter()
        .map(|r| r.header("x-hookgate-route").map(str::to_string))
        .collect();
    assert_eq!(
        routes,
        [Some("control".to_string())],
        "only the control delivery was copied"
    );
    for route in ["failed", "refused", "broken"] {
        for result in ["delivered", "failed"] {
            gateway.assert_metric(
                "hookgate_fanout_copies_total",
                &[("route", route), ("upstream", "audit"), ("result", result)],
                0.0,
            );
        }
    }
    for primary in [&failing, &refusing, &hangs_up] {
        assert!(primary.count() >= 1, "{} was never asked", primary.name);
    }
}

#[test]
fn a_full_fan_out_queue_counts_its_drops() {
    // Guards the `Err(dropped)` arm of `queue_copies` (the counter and the
    // log line): a silent drop turns it red.
    let primary = Upstream::start("primary");
    // The first copy is held until the drops are counted (a 1.5 s delay had
    // to outlast three deliveries on a loaded machine).
    let release = Gate::new();
    let slow = Upstream::with("slow", Behavior::held(&release));
    let gateway = Setup::new()
        .server("fanout = { queue = 1, concurrency = 1 }")
        .upstream(&primary)
        .upstream(&slow)
        .fan_out("hooks", "/hooks", &["primary", "slow"], "")
        .start();
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
    release.open();
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 1));
    assert_eq!(primary.count(), 3, "drops never affect the sender");
    // The line is written just after the drop is counted: polled.
    assert!(
        gateway.wait_log(Duration::from_secs(5), "fan-out copy dropped"),
        "drops are logged"
    );
}

#[test]
fn duplicate_deliveries_are_answered_without_forwarding() {
    // Guards `Dedupe::check` before forwarding and `Claim::forwarded` only
    // on a 2xx (a failed forward is remembered without it).
    let app = Upstream::start("app");
    let failing = Upstream::with("failing", Behavior::status(500));
    let gateway = Setup::new()
        .upstream(&app)
        .upstream(&failing)
        .route(
            "github",
            "/github",
            "app",
            "dedupe = { key = \"header:X-GitHub-Delivery\", ttl = \"1s\", max_entries = 3 }",
        )
        .route(
            "flaky",
            "/flaky",
            "failing",
            "dedupe = { key = \"json:/id\" }",
        )
        .start();
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

    // After the TTL the id is forwarded again: polled, each early try is
    // answered as a duplicate without reaching the upstream.
    // Nothing in the poll panics: an exchange that fails or answers another
    // status ends it, and the assertion after it says which.
    let mut early = 0.0;
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let answer = try_post(
                gateway.proxy,
                "/github",
                &[("X-GitHub-Delivery", "d-1")],
                b"{\"zen\":1}",
            );
            let duplicate = answer.as_ref().is_ok_and(|answer| {
                answer.status == 200
                    && serde_json::from_slice::<serde_json::Value>(&answer.body)
                        .is_ok_and(|body| body.get("status").is_some())
            });
            if duplicate {
                early += 1.0;
                return false;
            }
            last = Some(answer.map(|answer| answer.status));
            true
        }),
        "the id was still a duplicate 5 s after its 1 s TTL"
    );
    assert_eq!(last.unwrap().expect("POST exchange"), 200);
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
    gateway.assert_requests("github", "duplicate", 2.0 + early);
}
