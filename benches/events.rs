//! Event extraction cost: JSON pointer lookups on a 50 KiB body (key near the start, key at
//! the end, nested `/data/object/object`) against a full `serde_json::Value` parse of the same
//! body, plus a Slack form (JSON in a urlencoded field), a plain form field and XML paths, all
//! as on a verified route ([`Scope::Path`]). The `scopes` group compares the two scopes of a
//! JSON lookup (verified route: the objects on the path; unverified route or dedupe id: the
//! whole document) on ~1 KiB and ~64 KiB bodies, key first and key last.
//!
//! `cargo bench --bench events` (about 60 s).
//!
//! Measured on the shared 2-core build box (runs vary by up to 20%), before (first key
//! wins, stop at the value) and after (duplicate keys refused, issue 12): a key first in a
//! 1 KiB body 0.12 µs -> 0.8-1.0 µs (Path and Document alike); key last 0.9 µs -> 0.9-1.0
//! µs; in 64 KiB, key first 0.12 µs -> 36-42 µs, key last 41 µs -> 36-43 µs; a full
//! `serde_json::Value` parse costs 5-6 µs and 370-450 µs. Knowing that a key occurs once
//! means reading its object to the end, so for a body whose top level is an object the
//! Path scope reads about as much as the Document scope.

use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hookgate::config::events::EventSpec;
use hookgate::events::{Extractor, JsonPointer, Scope};
use hookgate::verify::{Request, Verifier};
use http::HeaderMap;

const TARGET: usize = 50 * 1024;

/// Filler objects shaped like Stripe's expanded sub-objects, until `target` bytes.
fn filler(target: usize) -> String {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < target {
        let item = format!(
            r#"{{"id":"ch_{i:024}","object":"charge","amount":{},"currency":"usd","captured":true,"description":"Order \"{i}\" \u00e9","metadata":{{"order_id":"{i}","type":"decoy"}},"outcome":{{"network_status":"approved_by_network","risk_score":{},"type":"authorized"}},"refunds":[]}}"#,
            1000 + i,
            i % 100
        );
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!("[{}]", items.join(","))
}

/// A Stripe event: `data.object` first (its `object` near the start of the big part), the
/// bulk inside it, `type` at the very end.
fn stripe_body() -> String {
    format!(
        r#"{{"id":"evt_3MtwBwLkdIwHu7ix0snN0B15","object":"event","api_version":"2022-11-15","created":1680064028,"data":{{"object":{{"id":"pi_3MtwBwLkdIwHu7ix28a3tqPa","object":"payment_intent","amount":2000,"charges":{{"object":"list","data":{}}}}}}},"livemode":false,"pending_webhooks":1,"request":{{"id":"req_1","idempotency_key":"k"}},"type":"payment_intent.succeeded"}}"#,
        filler(TARGET - 500)
    )
}

/// Seed-style: the event type is the first key.
fn seed_body() -> String {
    format!(
        r#"{{"event_type":"user_signup","user":{{"id":42,"history":{}}}}}"#,
        filler(TARGET - 100)
    )
}

fn slack_form() -> String {
    let payload = format!(
        r#"{{"type":"block_actions","user":{{"id":"U1","name":"a"}},"view":{{"blocks":{}}}}}"#,
        filler(TARGET / 2)
    );
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload)
        .finish()
}

fn xml_body(type_first: bool) -> String {
    let mut items = String::new();
    let mut i = 0;
    while items.len() < TARGET - 300 {
        items.push_str(&format!(
            "<item id=\"{i}\"><sku>SKU-{i:08}</sku><name>Widget &amp; co {i}</name><type>decoy</type><qty>{}</qty></item>",
            i % 7
        ));
        i += 1;
    }
    let event = "<type>order.created</type>";
    if type_first {
        format!("<?xml version=\"1.0\"?><event>{event}<items>{items}</items></event>")
    } else {
        format!("<?xml version=\"1.0\"?><event><items>{items}</items>{event}</event>")
    }
}

fn extractor(toml_text: &str) -> Extractor {
    #[derive(serde::Deserialize)]
    struct Route {
        event: EventSpec,
    }
    let route: Route = toml::from_str(toml_text).unwrap();
    route.event.compile().unwrap()
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let verifier = Verifier::disabled();
    let mut group = c.benchmark_group("events");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "json_key_at_start",
            seed_body(),
            "event = { json = \"/event_type\" }",
            "user_signup",
        ),
        (
            "json_nested_data_object_object",
            stripe_body(),
            "event = { json = \"/data/object/object\" }",
            "payment_intent",
        ),
        (
            "json_key_at_end",
            stripe_body(),
            "event = { json = \"/type\" }",
            "payment_intent.succeeded",
        ),
        (
            "slack_form_payload_json",
            slack_form(),
            "event = { form = \"payload\", json = \"/type\" }",
            "block_actions",
        ),
        (
            "form_field",
            format!(
                "token=x&team_id=T1&event=order.created&blob={}",
                "a".repeat(TARGET)
            ),
            "event = { form = \"event\" }",
            "order.created",
        ),
        (
            "xml_type_first",
            xml_body(true),
            "event = { xml = \"/event/type\" }",
            "order.created",
        ),
        (
            "xml_type_last",
            xml_body(false),
            "event = { xml = \"/event/type\" }",
            "order.created",
        ),
    ];
    for (name, body, spec, expected) in &cases {
        let ex = extractor(spec);
        let request = Request {
            method: "POST",
            path_and_query: "/hook",
            headers: &headers,
            body: body.as_bytes(),
        };
        let verified = verifier.verify(&request, SystemTime::now()).unwrap();
        assert_eq!(
            ex.extract(&verified, &headers, Scope::Path)
                .unwrap()
                .as_deref(),
            Some(*expected),
            "{name}"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/{}B", body.len()), |b| {
            b.iter(|| {
                ex.extract(black_box(&verified), &headers, Scope::Path)
                    .unwrap()
            })
        });
    }

    // The baseline: a full parse of the same 50 KiB JSON bodies.
    for (name, body) in [("seed", seed_body()), ("stripe", stripe_body())] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("full_value_parse_{name}/{}B", body.len()), |b| {
            b.iter(|| {
                let value: serde_json::Value =
                    serde_json::from_slice(black_box(body.as_bytes())).unwrap();
                value.pointer("/type").is_some()
            })
        });
    }
    group.finish();
}

/// Seed-style body of about `target` bytes, the event type first.
fn key_first(target: usize) -> String {
    format!(
        r#"{{"event_type":"user_signup","user":{{"id":42,"history":{}}}}}"#,
        filler(target.saturating_sub(100))
    )
}

/// Stripe-style body of about `target` bytes, the event type last.
fn key_last(target: usize) -> String {
    format!(
        r#"{{"id":"evt_1","object":"event","data":{{"object":{{"object":"payment_intent","charges":{}}}}},"type":"payment_intent.succeeded"}}"#,
        filler(target.saturating_sub(150))
    )
}

fn scopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("scopes");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for size in [1024, 64 * 1024] {
        for (name, body, pointer) in [
            ("key_first", key_first(size), "/event_type"),
            ("key_last", key_last(size), "/type"),
        ] {
            let pointer = JsonPointer::parse(pointer).unwrap();
            for scope in [Scope::Path, Scope::Document] {
                assert!(pointer.lookup(body.as_bytes(), scope).unwrap().is_some());
                group.throughput(Throughput::Bytes(body.len() as u64));
                group.bench_function(format!("{name}_{scope:?}/{}B", body.len()), |b| {
                    b.iter(|| pointer.lookup(black_box(body.as_bytes()), scope).unwrap())
                });
            }
            group.bench_function(format!("{name}_value_parse/{}B", body.len()), |b| {
                b.iter(|| {
                    let value: serde_json::Value =
                        serde_json::from_slice(black_box(body.as_bytes())).unwrap();
                    value.pointer("/type").is_some()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, scopes);
criterion_main!(benches);
