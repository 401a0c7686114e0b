//! Tests of `dedupe`.

use super::*;
use crate::config::dedupe::DedupeSpec;
use crate::verify::{Request, Verifier, VerifySpec};
use proptest::prelude::*;
use std::time::SystemTime;

fn config(key: &str, ttl: &str, max_entries: usize) -> DedupeConfig {
    DedupeSpec {
        key: key.into(),
        ttl: Some(ttl.into()),
        max_entries: Some(max_entries),
    }
    .compile("standard-webhooks")
    .unwrap()
}

fn id(text: &str) -> DeliveryId {
    DeliveryId::of(text.as_bytes())
}

fn claim(admission: Admission) -> Claim {
    match admission {
        Admission::Forward(Some(c)) => c,
        other => panic!("expected a claim, got {other:?}"),
    }
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn forwarded_ids_are_duplicates_until_the_ttl() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "1h", 100), t0);
    let c = claim(store.check(id("msg_1"), t0));
    c.forwarded(t0 + SEC);
    assert!(matches!(
        store.check(id("msg_1"), t0 + 2 * SEC),
        Admission::Duplicate
    ));
    // The TTL runs from the forward, not the first sight.
    assert!(matches!(
        store.check(id("msg_1"), t0 + 3600 * SEC),
        Admission::Duplicate
    ));
    let again = store.check(id("msg_1"), t0 + 3601 * SEC);
    assert!(matches!(again, Admission::Forward(Some(_))));
    drop(again);
    assert!(matches!(
        store.check(id("msg_2"), t0),
        Admission::Forward(Some(_))
    ));
    let s = store.stats();
    assert_eq!((s.duplicates, s.in_flight, s.evicted), (2, 0, 0));
}

#[test]
fn failed_forwards_are_not_remembered() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "1h", 100), t0);
    claim(store.check(id("evt_1"), t0)).failed();
    let c = claim(store.check(id("evt_1"), t0 + SEC));
    // Dropping (request cancelled, 422, upstream error) is the same as failed().
    drop(c);
    let c = claim(store.check(id("evt_1"), t0 + 2 * SEC));
    c.forwarded(t0 + 3 * SEC);
    assert!(matches!(
        store.check(id("evt_1"), t0 + 4 * SEC),
        Admission::Duplicate
    ));
    assert_eq!(store.stats().entries, 1);
}

#[test]
fn same_id_in_flight_is_refused_until_the_first_ends() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "1h", 100), t0);
    let first = claim(store.check(id("evt_1"), t0));
    assert!(matches!(
        store.check(id("evt_1"), t0 + SEC),
        Admission::InFlight
    ));
    assert!(matches!(
        store.check(id("evt_1"), t0 + 2 * SEC),
        Admission::InFlight
    ));
    // Another id is unaffected.
    let other = claim(store.check(id("evt_2"), t0 + SEC));
    drop(first); // failed: the retry goes through
    let second = claim(store.check(id("evt_1"), t0 + 3 * SEC));
    second.forwarded(t0 + 4 * SEC);
    assert!(matches!(
        store.check(id("evt_1"), t0 + 5 * SEC),
        Admission::Duplicate
    ));
    other.forwarded(t0 + 5 * SEC);
    assert_eq!(store.stats().in_flight, 2);
    // A claim leaked for longer than the TTL does not block forever.
    let leaked = claim(store.check(id("evt_3"), t0));
    std::mem::forget(leaked);
    assert!(matches!(
        store.check(id("evt_3"), t0 + 1800 * SEC),
        Admission::InFlight
    ));
    assert!(matches!(
        store.check(id("evt_3"), t0 + 3600 * SEC),
        Admission::Forward(Some(_))
    ));
}

#[test]
fn full_table_evicts_the_oldest() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "1h", 3), t0);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        claim(store.check(id(name), t0 + i as u32 * SEC)).forwarded(t0 + i as u32 * SEC);
    }
    claim(store.check(id("d"), t0 + 10 * SEC)).forwarded(t0 + 10 * SEC);
    assert_eq!(store.stats().entries, 3);
    assert_eq!(store.stats().evicted, 1);
    // "a" was the oldest: forgotten; the others are still duplicates.
    assert!(matches!(
        store.check(id("b"), t0 + 11 * SEC),
        Admission::Duplicate
    ));
    assert!(matches!(
        store.check(id("d"), t0 + 11 * SEC),
        Admission::Duplicate
    ));
    let a = store.check(id("a"), t0 + 11 * SEC);
    assert!(matches!(a, Admission::Forward(Some(_))));
    drop(a);
    // An in-flight claim evicted by the cap is remembered when it succeeds.
    let small = DedupeStore::with_origin(config("signed", "1h", 1), t0);
    let x = claim(small.check(id("x"), t0));
    claim(small.check(id("y"), t0 + SEC)).forwarded(t0 + SEC);
    x.forwarded(t0 + 2 * SEC);
    assert!(matches!(
        small.check(id("x"), t0 + 3 * SEC),
        Admission::Duplicate
    ));
    assert_eq!(small.stats().entries, 1);
}

#[test]
fn expiry_frees_memory_without_traffic_for_the_same_id() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "10s", 1000), t0);
    for i in 0..500u32 {
        claim(store.check(id(&i.to_string()), t0)).forwarded(t0);
    }
    assert_eq!(store.stats().entries, 500);
    store.expire(t0 + 9 * SEC);
    assert_eq!(store.stats().entries, 500);
    store.expire(t0 + 10 * SEC);
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.stats().evicted, 0);
}

#[test]
fn failing_floods_keep_the_age_queue_bounded() {
    let t0 = Instant::now();
    let store = DedupeStore::with_origin(config("signed", "1h", 10), t0);
    for i in 0..10_000u32 {
        claim(store.check(id(&i.to_string()), t0)).failed();
        let state = store.shared.lock();
        assert!(state.ages.len() <= 2 * 10 + 17, "{}", state.ages.len());
    }
    assert_eq!(store.stats().entries, 0);
}

fn verified_ok<'a>(
    verifier: &Verifier,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> crate::verify::Verified<'a> {
    let request = Request {
        method: "POST",
        path_and_query: "/hook",
        headers,
        body,
    };
    verifier.verify(&request, SystemTime::now()).unwrap()
}

#[test]
fn ids_from_header_json_and_signature() {
    let t0 = Instant::now();
    let none = Verifier::disabled();
    // GitHub: the delivery header.
    let github = DedupeStore::with_origin(
        DedupeSpec {
            key: "header:X-GitHub-Delivery".into(),
            ttl: None,
            max_entries: None,
        }
        .compile("github")
        .unwrap(),
        t0,
    );
    let mut h = HeaderMap::new();
    h.insert("x-github-event", "push".parse().unwrap());
    h.insert(
        "x-github-delivery",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
    );
    let body = br#"{"ref":"refs/heads/main"}"#;
    let c = claim(github.admit(&verified_ok(&none, &h, body), &h, t0).unwrap());
    c.forwarded(t0);
    assert!(matches!(
        github.admit(&verified_ok(&none, &h, body), &h, t0).unwrap(),
        Admission::Duplicate
    ));
    // Without the header: forwarded without dedupe, counted.
    let empty = HeaderMap::new();
    assert!(matches!(
        github
            .admit(&verified_ok(&none, &empty, body), &empty, t0)
            .unwrap(),
        Admission::Forward(None)
    ));
    assert_eq!(github.stats().no_id, 1);
    // Several lines count together; a huge value costs one digest.
    let mut two = h.clone();
    two.append("x-github-delivery", "other".parse().unwrap());
    assert!(matches!(
        github
            .admit(&verified_ok(&none, &two, body), &two, t0)
            .unwrap(),
        Admission::Forward(Some(_))
    ));
    let mut big = HeaderMap::new();
    big.insert(
        "x-github-delivery",
        http::HeaderValue::from_bytes(&vec![b'x'; 256 * 1024]).unwrap(),
    );
    claim(
        github
            .admit(&verified_ok(&none, &big, body), &big, t0)
            .unwrap(),
    )
    .forwarded(t0);
    assert!(github.approx_bytes() < 64 * 1024);

    // Stripe: the event id in the signed body.
    let stripe = DedupeStore::with_origin(config("json:/id", "24h", 100), t0);
    let event = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"payment_intent.succeeded"}"#;
    claim(
        stripe
            .admit(&verified_ok(&none, &empty, event), &empty, t0)
            .unwrap(),
    )
    .forwarded(t0);
    assert!(matches!(
        stripe
            .admit(&verified_ok(&none, &empty, event), &empty, t0)
            .unwrap(),
        Admission::Duplicate
    ));
    let no_id = br#"{"type":"x","id":null}"#;
    assert!(matches!(
        stripe
            .admit(&verified_ok(&none, &empty, no_id), &empty, t0)
            .unwrap(),
        Admission::Forward(None)
    ));
    let err = stripe
        .admit(&verified_ok(&none, &empty, b"id=1"), &empty, t0)
        .unwrap_err();
    assert_eq!(err.error_code(), "bad_request");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    let numeric = br#"{"id":12345}"#;
    claim(
        stripe
            .admit(&verified_ok(&none, &empty, numeric), &empty, t0)
            .unwrap(),
    )
    .forwarded(t0);
    assert_eq!(
        stripe
            .config()
            .delivery_id(&verified_ok(&none, &empty, numeric), &empty),
        Ok(Some(id("12345")))
    );

    // Standard Webhooks: the signed webhook-id.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let verifier = Verifier::compile(&VerifySpec::new("standard-webhooks", &[secret]), &|s| {
        Ok(crate::secret::Secret::new(s))
    })
    .unwrap();
    let payload = br#"{"type":"user.created","data":{"id":"u_1"}}"#;
    let unsigned = Request {
        method: "POST",
        path_and_query: "/hook",
        headers: &empty,
        body: payload,
    };
    let mut signed = HeaderMap::new();
    for (name, value) in verifier.sign(&unsigned, SystemTime::now()).unwrap() {
        signed.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let webhook_id = signed["webhook-id"].to_str().unwrap().to_string();
    let sw = DedupeStore::with_origin(config("standard-webhooks", "24h", 100), t0);
    let v = verified_ok(&verifier, &signed, payload);
    assert_eq!(v.signed_id(), Some(webhook_id.as_str()));
    let c = claim(sw.admit(&v, &signed, t0).unwrap());
    assert_eq!(c.id(), id(&webhook_id));
    c.forwarded(t0);
    assert!(matches!(
        sw.admit(&v, &signed, t0).unwrap(),
        Admission::Duplicate
    ));
    // A route whose verifier yields no signed id: no dedupe, never an error.
    let unsigned_v = verified_ok(&none, &signed, payload);
    assert!(matches!(
        sw.admit(&unsigned_v, &signed, t0).unwrap(),
        Admission::Forward(None)
    ));
}

#[test]
fn json_ids_have_one_reading_or_are_refused() {
    let none = Verifier::disabled();
    let empty = HeaderMap::new();
    let c = config("json:/id", "24h", 100);
    let id_of = |body: &[u8]| c.delivery_id(&verified_ok(&none, &empty, body), &empty);
    // Integers within 64 bits, in decimal; strings as they are.
    let table: [(&[u8], &str); 5] = [
        (br#"{"id":12345}"#, "12345"),
        (br#"{"id":"12345"}"#, "12345"),
        (br#"{"id":18446744073709551615}"#, "18446744073709551615"),
        (br#"{"id":-42}"#, "-42"),
        (br#" {"x":1.5,"y":{"id":1,"id":2},"id":"evt_1"} "#, "evt_1"),
    ];
    for (body, expected) in table {
        assert_eq!(
            id_of(body),
            Ok(Some(id(expected))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // (body, words the reason must hold)
    let refused: [(&[u8], &str); 11] = [
        (br#"{"id":"evt_1","id":"evt_2"}"#, "duplicate key \"id\""),
        (
            br#"{"id":"evt_1","x":[],"id\u0020":1,"i\u0064":"evt_2"}"#,
            "duplicate key \"id\"",
        ),
        (
            br#"{"id":12345678901234567890123}"#,
            "not an integer within 64 bits",
        ),
        (br#"{"id":1.5}"#, "not an integer within 64 bits"),
        (br#"{"id":1e3}"#, "not an integer within 64 bits"),
        (br#"{"id":-0}"#, "not an integer within 64 bits"),
        (br#"{"id":1e400}"#, "not valid JSON"),
        // The whole body is validated, even where the route verifies it.
        (br#"{"id":"evt_1"} trailing"#, "trailing characters"),
        (br#"{"id":"evt_1"}{"id":"evt_2"}"#, "trailing characters"),
        (
            b"{\"id\":\"evt_1\",\"x\":\"\xff\"}",
            "invalid UTF-8 at byte 19",
        ),
        (br#"{"id":{"nested":1}}"#, "an object"),
    ];
    for (body, words) in refused {
        let shown = String::from_utf8_lossy(body);
        let err = id_of(body).unwrap_err();
        assert_eq!(err.error_code(), "bad_request");
        let reason = err.to_string();
        assert!(reason.starts_with("delivery id: "), "{shown}: {reason}");
        assert!(reason.contains(words), "{shown}: {reason}");
        assert!(!reason.contains("evt_"), "{shown}: {reason}");
    }
}

#[test]
fn digests_separate_parts() {
    let a = DeliveryId::of_parts([b"ab".as_slice(), b"c"].into_iter());
    let b = DeliveryId::of_parts([b"a".as_slice(), b"bc"].into_iter());
    assert_ne!(a, b);
    assert_eq!(id("x"), id("x"));
    assert!(format!("{:?}", id("x")).starts_with("DeliveryId("));
}

#[test]
fn memory_per_entry() {
    let t0 = Instant::now();
    let n = DEFAULT_MAX_ENTRIES;
    let store = DedupeStore::with_origin(config("signed", "24h", n), t0);
    for i in 0..n as u32 {
        claim(store.check(DeliveryId::of(&i.to_le_bytes()), t0)).forwarded(t0);
    }
    let filled = store.approx_bytes();
    // Steady state: the cap reached, the oldest entry evicted for every new one; the
    // hash table's tombstones make it double once, then it rehashes in place.
    for round in 1..=3u32 {
        for i in 0..n as u32 {
            let key = DeliveryId::of(&(i + round * n as u32).to_le_bytes());
            claim(store.check(key, t0 + SEC)).forwarded(t0 + SEC);
        }
    }
    assert_eq!(store.stats().entries, n);
    assert_eq!(store.stats().evicted, 3 * n as u64);
    let steady = store.approx_bytes();
    eprintln!(
        "dedupe memory at {n} entries: {filled} bytes filled ({:.1}/entry), {steady} bytes \
         in steady churn ({:.1}/entry)",
        filled as f64 / n as f64,
        steady as f64 / n as f64
    );
    assert!(filled <= steady);
    assert!(steady <= BYTES_PER_ENTRY_BOUND * n, "{steady}");
}

proptest! {
    #[test]
    fn never_exceeds_max_entries(
        max in 1usize..20,
        ops in prop::collection::vec((0u8..40, 0u8..3, 0u64..5), 1..300),
    ) {
        let t0 = Instant::now();
        let store = DedupeStore::with_origin(config("signed", "30s", max), t0);
        let mut now = t0;
        let mut held = Vec::new();
        for (key, action, step) in ops {
            now += Duration::from_secs(step);
            if let Admission::Forward(Some(c)) = store.check(id(&key.to_string()), now) {
                match action {
                    0 => c.forwarded(now),
                    1 => c.failed(),
                    _ => held.push(c),
                }
            }
            prop_assert!(store.stats().entries <= max);
            let ages = store.shared.lock().ages.len();
            prop_assert!(ages <= 2 * max + 17, "ages {}", ages);
            if held.len() > 3 {
                held.remove(0).forwarded(now);
            }
        }
    }

    #[test]
    fn duplicate_only_after_success_within_ttl(
        events in prop::collection::vec((0u8..5, any::<bool>(), 0u64..20), 1..100),
    ) {
        // Model: id -> time of the last successful forward.
        let t0 = Instant::now();
        let store = DedupeStore::with_origin(config("signed", "30s", 1000), t0);
        let mut model: HashMap<u8, Duration> = HashMap::new();
        let mut now = Duration::ZERO;
        for (key, succeed, step) in events {
            now += Duration::from_secs(step);
            let fresh = model.get(&key).is_none_or(|at| now - *at >= Duration::from_secs(30));
            match store.check(id(&key.to_string()), t0 + now) {
                Admission::Duplicate => prop_assert!(!fresh, "{} at {:?}", key, now),
                Admission::Forward(Some(c)) => {
                    prop_assert!(fresh, "{} at {:?}", key, now);
                    if succeed {
                        c.forwarded(t0 + now);
                        model.insert(key, now);
                    }
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

#[test]
fn claim_tokens_are_the_process_id_and_a_counter_and_never_repeat() {
    let (first, second) = (claim_token(), claim_token());
    assert_ne!(first, second);
    for token in [&first, &second] {
        let (process, counter) = token.split_once(':').expect("process:counter");
        assert_eq!(process.len(), 32, "{token}");
        assert!(process.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert!(counter.parse::<u64>().is_ok(), "{token}");
    }
    assert_eq!(
        first.split_once(':').unwrap().0,
        second.split_once(':').unwrap().0
    );
}
