//! One reading of the body, end to end (issue 12, part 4): hookgate decides on the event
//! type or delivery id it reads, the app reads the same bytes again, so a body the two could
//! read differently (a duplicate JSON key, a repeated XML element or form field, an inexact
//! number, trailing bytes where the body is not verified) is answered 400 `bad_request`
//! naming the key, and no upstream receives anything. Control requests are forwarded byte
//! for byte.

mod common;

use common::*;

const SECRET: &str = "body-agreement-secret";

fn total(list: &[&Upstream]) -> usize {
    list.iter().map(|u| u.count()).sum()
}

/// Asserts a 400 `bad_request` for `route` whose reason holds every word of `names` and no
/// word of `hidden` (body values never appear in an answer).
fn assert_refused(answer: &Response, route: &str, names: &[&str], hidden: &[&str]) {
    let body = String::from_utf8_lossy(&answer.body).to_string();
    assert_eq!(answer.status, 400, "{body}");
    let json = answer.json();
    assert_eq!(json["error"], "bad_request", "{body}");
    assert_eq!(json["route"], route, "{body}");
    assert!(json["request_id"].is_string(), "{body}");
    let reason = json["reason"].as_str().unwrap_or_default();
    for name in names {
        assert!(reason.contains(name), "reason {reason:?} lacks {name:?}");
    }
    for value in hidden {
        assert!(!reason.contains(value), "reason {reason:?} shows {value:?}");
    }
}

/// Asserts the request was forwarded to `upstream` (and only there) with exactly `body`.
fn assert_forwarded(answer: &Response, upstream: &Upstream, before: usize, body: &[u8]) {
    answer.expect_status(200);
    assert_eq!(upstream.count(), before + 1);
    let received = upstream.received().pop().unwrap();
    assert!(received.body == body, "body not byte-identical");
}

const SHOP: &str = r#"
event = { json = "/event_type" }
unmatched = "reject"
  [[routes.events]]
  match = "user_signup"
  upstream = "users"
  [[routes.events]]
  match = "payment_processed"
  upstream = "billing"
"#;

/// The shop routes, unverified (`/shop`) and verified (`/shop-signed`).
fn shop(users: &Upstream, billing: &Upstream) -> Gateway {
    Setup::new()
        .upstream(users)
        .upstream(billing)
        .route("shop", "/shop", "users", SHOP)
        .route(
            "shop-signed",
            "/shop-signed",
            "users",
            &format!(
                "verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n{SHOP}"
            ),
        )
        .start()
}

/// A route whose event `kind` (`xml = "..."`, `form = "..."`) must match `pattern`.
fn event_route(kind: &str, pattern: &str, matched: &str) -> String {
    format!(
        "event = {{ {kind} }}\nunmatched = \"reject\"\n[[routes.events]]\nmatch = \"{pattern}\"\nupstream = \"{matched}\"\n"
    )
}

#[test]
fn duplicate_json_event_keys_are_refused_on_every_route() {
    // Guards `if seen { return Err(search.refuse(PointerError::DuplicateKey { .. })) }` in
    // `Step::visit_map` (src/events/pointer.rs): without it hookgate routes the issue's body
    // as user_signup (the first key) and the users app gets it, while the app reads the last
    // key, payment_processed.
    let users = Upstream::start("users");
    let billing = Upstream::start("billing");
    let all = [&users, &billing];
    let gateway = shop(&users, &billing);

    // The issue's example, on a route without verify and on a verified one.
    let issue = br#"{"event_type":"user_signup","n":1,"event_type":"payment_processed"}"#;
    // The second key spelled with an escape, nested after a large value.
    let escaped = format!(
        r#"{{"event_type":"user_signup","pad":[{}],"event\u005ftype":"payment_processed"}}"#,
        "1,".repeat(2000) + "1"
    );
    for body in [&issue[..], escaped.as_bytes()] {
        let answer = post(gateway.proxy, "/shop", &[], body);
        assert_refused(
            &answer,
            "shop",
            &["duplicate key", "\"event_type\""],
            &["user_signup", "payment_processed"],
        );
        let signature = github_signature(SECRET, body);
        let answer = post(
            gateway.proxy,
            "/shop-signed",
            &[("X-Hub-Signature-256", &signature)],
            body,
        );
        assert_refused(
            &answer,
            "shop-signed",
            &["duplicate key", "\"event_type\""],
            &["user_signup", "payment_processed"],
        );
    }
    assert_eq!(total(&all), 0, "refused bodies reach no upstream");

    // Control: one key, a duplicate off the path, forwarded as is to the app it names.
    let control = br#"{"event_type":"payment_processed","meta":{"n":1,"n":2},"amount":10}"#;
    let before = billing.count();
    let answer = post(gateway.proxy, "/shop", &[], control);
    assert_forwarded(&answer, &billing, before, control);
    assert_eq!(users.count(), 0);
    let received = billing.received().pop().unwrap();
    assert_eq!(
        received.header("x-hookgate-event"),
        Some("payment_processed")
    );
}

#[test]
fn routes_without_verify_read_the_whole_body_and_verified_routes_stop_after_the_object() {
    // Guards `.map(|router| router.verified_body(route.verify.is_some()))` in
    // `compile_route` (src/config/mod.rs) with the `Scope::Document` default of
    // `EventRouter::compile` (src/events/mod.rs): with `Scope::Path` on the unverified route,
    // bytes after the object (a second object, invalid UTF-8) are forwarded unread.
    let users = Upstream::start("users");
    let billing = Upstream::start("billing");
    let all = [&users, &billing];
    let gateway = shop(&users, &billing);
    let trailing: [&[u8]; 3] = [
        br#"{"event_type":"user_signup"}{"event_type":"payment_processed"}"#,
        b"{\"event_type\":\"user_signup\"} \xff",
        b"{\"event_type\":\"user_signup\",\"note\":\"\xff\"}",
    ];
    for body in trailing {
        let answer = post(gateway.proxy, "/shop", &[], body);
        assert_refused(&answer, "shop", &["not valid JSON"], &["user_signup"]);
    }
    assert_eq!(total(&all), 0, "refused bodies reach no upstream");

    // On the verified route only the provider shapes the body: the walk stops after the
    // top-level object and the app gets the exact bytes.
    for body in trailing {
        let before = users.count();
        let signature = github_signature(SECRET, body);
        let answer = post(
            gateway.proxy,
            "/shop-signed",
            &[("X-Hub-Signature-256", &signature)],
            body,
        );
        assert_forwarded(&answer, &users, before, body);
    }
    // Control on the unverified route: whitespace after the document is fine.
    let control = b"{\"event_type\":\"user_signup\",\"user\":{\"id\":7}}\r\n";
    let before = users.count();
    let answer = post(gateway.proxy, "/shop", &[], control);
    assert_forwarded(&answer, &users, before, control);
    assert_eq!(billing.count(), 0);
}

#[test]
fn dedupe_json_ids_have_one_reading() {
    // Guards `pointer.lookup(verified.body(), Scope::Document)` in
    // `DedupeConfig::delivery_id` (src/dedupe.rs) and `Leaf::visit_f64` refusing
    // `InexactNumber` (src/events/pointer.rs): with `Scope::Path` the verified route forwards
    // the body with a second object after it, and without the refusal a 23-digit id is
    // rounded to an f64 and forwarded.
    let app = Upstream::start("app");
    let signed_app = Upstream::start("signed_app");
    let all = [&app, &signed_app];
    let gateway = Setup::new()
        .upstream(&app)
        .upstream(&signed_app)
        .route(
            "stripe",
            "/stripe",
            "app",
            "dedupe = { key = \"json:/id\" }",
        )
        .route(
            "stripe-signed",
            "/stripe-signed",
            "signed_app",
            &format!(
                "verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n\
                 dedupe = {{ key = \"json:/id\" }}"
            ),
        )
        .start();
    let refused: [(&[u8], &[&str]); 4] = [
        (
            br#"{"id":"evt_1","type":"a","id":"evt_2"}"#,
            &["delivery id", "duplicate key \"id\""],
        ),
        (
            br#"{"id":12345678901234567890123,"type":"a"}"#,
            &["delivery id", "/id", "not an integer within 64 bits"],
        ),
        (
            br#"{"id":1.5,"type":"a"}"#,
            &["delivery id", "not an integer within 64 bits"],
        ),
        (
            br#"{"id":"evt_1","type":"a"}{"id":"evt_2"}"#,
            &["delivery id", "not valid JSON", "trailing characters"],
        ),
    ];
    for (body, names) in refused {
        let answer = post(gateway.proxy, "/stripe", &[], body);
        assert_refused(&answer, "stripe", names, &["evt_", "12345678"]);
        // Verified or not, the id is read from the whole document.
        let signature = github_signature(SECRET, body);
        let answer = post(
            gateway.proxy,
            "/stripe-signed",
            &[("X-Hub-Signature-256", &signature)],
            body,
        );
        assert_refused(&answer, "stripe-signed", names, &["evt_", "12345678"]);
    }
    assert_eq!(total(&all), 0, "refused bodies reach no upstream");

    // Control: an integer id within 64 bits is forwarded once, then a duplicate.
    let control = br#"{"id":18446744073709551615,"type":"invoice.paid"}"#;
    let answer = post(gateway.proxy, "/stripe", &[], control);
    assert_forwarded(&answer, &app, 0, control);
    let again = post(gateway.proxy, "/stripe", &[], control);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(app.count(), 1);
}

#[test]
fn repeated_xml_elements_and_form_fields_are_refused() {
    // Guards the `seen[open]` check returning `EventError::RepeatedElement` in
    // `XmlPath::lookup` and the `found.is_some()` check returning `EventError::RepeatedField`
    // in `form_field` (src/events/extract.rs): without them hookgate settles on one
    // occurrence itself (the last, answering 422 event_unmatched here), while a first-wins
    // app would act on order.created.
    let ci = Upstream::start("ci");
    let orders = Upstream::start("orders");
    let slackapp = Upstream::start("slackapp");
    let all = [&ci, &orders, &slackapp];
    let gateway = Setup::new()
        .upstream(&ci)
        .upstream(&orders)
        .upstream(&slackapp)
        .route(
            "xml",
            "/xml",
            "ci",
            &event_route("xml = \"/notification/type\"", "order.*", "orders"),
        )
        .route(
            "form",
            "/form",
            "ci",
            &event_route("form = \"event\"", "order.created", "orders"),
        )
        .route(
            "slack",
            "/slack",
            "ci",
            &event_route(
                "form = \"payload\", json = \"/type\"",
                "block_actions",
                "slackapp",
            ),
        )
        .start();
    let xml = b"<?xml version=\"1.0\"?><notification><type>order.created</type><id>1</id><type>account.deleted</type></notification>";
    assert_refused(
        &post(gateway.proxy, "/xml", &[], xml),
        "xml",
        &["element <type>", "<notification>", "more than once"],
        &["order.created", "account.deleted"],
    );
    let form = b"event=order.created&id=9&event=account.deleted";
    assert_refused(
        &post(gateway.proxy, "/form", &[], form),
        "form",
        &["form field \"event\"", "more than once"],
        &["order.created", "account.deleted"],
    );
    let slack =
        b"payload=%7B%22type%22%3A%22block_actions%22%7D&payload=%7B%22type%22%3A%22x%22%7D";
    assert_refused(
        &post(gateway.proxy, "/slack", &[], slack),
        "slack",
        &["form field \"payload\"", "more than once"],
        &["block_actions"],
    );
    // JSON inside the form field follows the JSON rule.
    let slack_dup = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22type%22%3A%22x%22%7D";
    assert_refused(
        &post(gateway.proxy, "/slack", &[], slack_dup),
        "slack",
        &["duplicate key \"type\""],
        &["block_actions"],
    );
    assert_eq!(total(&all), 0, "refused bodies reach no upstream");

    // Controls: repeats off the path are fine, and the bytes arrive untouched.
    let xml = b"<?xml version=\"1.0\"?><notification><type>order.created</type><item><type>a</type></item><item><type>b</type></item></notification>";
    let answer = post(gateway.proxy, "/xml", &[], xml);
    assert_forwarded(&answer, &orders, 0, xml);
    let form = b"tag=a&tag=b&event=order.created";
    let answer = post(gateway.proxy, "/form", &[], form);
    assert_forwarded(&answer, &orders, 1, form);
    assert_eq!(ci.count() + slackapp.count(), 0);
}
