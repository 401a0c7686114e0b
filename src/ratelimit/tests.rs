//! Tests of `ratelimit`.

use super::*;
use crate::config::ratelimit::RateLimitSpec;
use governor::clock::FakeRelativeClock;
use http::HeaderValue;

fn spec(rate: &str, burst: Option<u32>, per: Option<&str>) -> RateLimitSpec {
    RateLimitSpec {
        rate: rate.to_string(),
        burst,
        per: per.map(str::to_string),
        max_keys: None,
    }
}

fn limiter(s: &RateLimitSpec) -> (RouteLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let config = s.compile().unwrap();
    (RouteLimiter::with_clock(&config, clock.clone()), clock)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn header(name: &'static str, value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.append(name, HeaderValue::from_static(value));
    h
}

#[test]
fn exactly_burst_then_limited_with_retry_after() {
    let table: [(&str, Option<u32>, u32, Duration, u64); 5] = [
        // rate, burst, expected burst, wait after the burst, Retry-After
        ("10/s", Some(3), 3, Duration::from_millis(100), 1),
        ("100/s", None, 100, Duration::from_millis(10), 1),
        ("6/min", None, 6, Duration::from_secs(10), 10),
        ("10/h", Some(2), 2, Duration::from_secs(360), 360),
        ("2/3s", None, 2, Duration::from_millis(1500), 2),
    ];
    for (rate, burst, allowed, wait, retry_after) in table {
        let (l, clock) = limiter(&spec(rate, burst, None));
        for i in 0..allowed {
            assert!(
                l.check(ip("192.0.2.1"), &no_headers()).is_ok(),
                "{rate} #{i}"
            );
        }
        let refused = l.check(ip("192.0.2.1"), &no_headers()).unwrap_err();
        assert_eq!(refused.wait, wait, "{rate}");
        assert_eq!(refused.retry_after_secs(), retry_after, "{rate}");
        // Partway through the wait: still refused, with less to wait.
        clock.advance(wait / 2);
        let again = l.check(ip("192.0.2.1"), &no_headers()).unwrap_err();
        assert_eq!(again.wait, wait - wait / 2, "{rate}");
        // After the wait: exactly one more.
        clock.advance(wait - wait / 2);
        assert!(l.check(ip("192.0.2.1"), &no_headers()).is_ok(), "{rate}");
        assert!(l.check(ip("192.0.2.1"), &no_headers()).is_err(), "{rate}");
        // After a full refill: the whole burst again.
        clock.advance(wait * allowed);
        for _ in 0..allowed {
            assert!(l.check(ip("192.0.2.1"), &no_headers()).is_ok(), "{rate}");
        }
        assert!(l.check(ip("192.0.2.1"), &no_headers()).is_err(), "{rate}");
    }
}

#[test]
fn retry_after_rounds_up_to_at_least_one() {
    let table = [
        (0, 1),
        (1, 1),
        (999_999_999, 1),
        (1_000_000_000, 1),
        (1_000_000_001, 2),
    ];
    for (nanos, secs) in table {
        let r = RateLimited {
            wait: Duration::from_nanos(nanos),
        };
        assert_eq!(r.retry_after_secs(), secs, "{nanos}");
    }
}

#[test]
fn per_route_shares_one_bucket() {
    let (l, _) = limiter(&spec("2/s", None, None));
    assert!(l.check(ip("192.0.2.1"), &no_headers()).is_ok());
    assert!(l.check(ip("192.0.2.2"), &no_headers()).is_ok());
    assert!(l.check(ip("192.0.2.3"), &no_headers()).is_err());
    assert_eq!(l.keys(), 0);
    assert_eq!(l.prune(), 0);
}

#[test]
fn per_ip_buckets_are_independent() {
    let (l, clock) = limiter(&spec("1/s", None, Some("ip")));
    let h = no_headers();
    assert!(l.check(ip("192.0.2.1"), &h).is_ok());
    assert!(l.check(ip("192.0.2.1"), &h).is_err());
    assert!(l.check(ip("192.0.2.2"), &h).is_ok());
    // IPv4-mapped IPv6 is the same client as IPv4.
    assert!(l.check(ip("::ffff:192.0.2.2"), &h).is_err());
    // IPv6 clients share their /64.
    assert!(l.check(ip("2001:db8:0:1::1"), &h).is_ok());
    assert!(l.check(ip("2001:db8:0:1:ffff::2"), &h).is_err());
    assert!(l.check(ip("2001:db8:0:2::1"), &h).is_ok());
    assert_eq!(l.keys(), 4);
    // Recovery after the interval.
    clock.advance(Duration::from_secs(1));
    assert!(l.check(ip("192.0.2.1"), &h).is_ok());
    // Pruning drops buckets whose burst has refilled.
    clock.advance(Duration::from_secs(10));
    assert_eq!(l.prune(), 0);
    assert_eq!(l.keys(), 0);
}

#[test]
fn per_header_buckets_and_missing_bucket() {
    let (l, _) = limiter(&spec("1/min", None, Some("header:X-Shop-Domain")));
    let client = ip("192.0.2.1");
    let a = header("x-shop-domain", "a.example");
    let b = header("x-shop-domain", "b.example");
    assert!(l.check(client, &a).is_ok());
    assert!(
        l.check(ip("192.0.2.99"), &a).is_err(),
        "same value, other IP"
    );
    assert!(l.check(client, &b).is_ok());
    // Requests without the header share one bucket.
    assert!(l.check(client, &no_headers()).is_ok());
    assert!(l.check(ip("192.0.2.7"), &no_headers()).is_err());
    // Several header lines count together, in order.
    let mut both = header("x-shop-domain", "a.example");
    both.append("x-shop-domain", HeaderValue::from_static("b.example"));
    assert!(l.check(client, &both).is_ok());
    assert_ne!(l.key(client, &both), l.key(client, &a));
    assert_eq!(l.key(client, &a), l.key(ip("10.0.0.1"), &a));
    // A huge header value costs one 16-byte key.
    let big = HeaderValue::from_bytes(&vec![b'x'; 64 * 1024]).unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-shop-domain", big);
    assert!(l.check(client, &h).is_ok());
    assert_eq!(l.keys(), 4);
}

#[test]
fn key_cap_uses_overflow_bucket_then_prunes() {
    let s = RateLimitSpec {
        max_keys: Some(3),
        ..spec("1/s", None, Some("ip"))
    };
    let (l, clock) = limiter(&s);
    let h = no_headers();
    for i in 1..=3 {
        assert!(l.check(ip(&format!("192.0.2.{i}")), &h).is_ok());
    }
    assert_eq!(l.keys(), 3);
    // New keys at the cap share the overflow bucket (rate of one key).
    assert!(l.check(ip("198.51.100.1"), &h).is_ok());
    assert!(l.check(ip("198.51.100.2"), &h).is_err());
    assert!(l.check(ip("198.51.100.3"), &h).is_err());
    assert_eq!(l.keys(), 3);
    assert_eq!(l.overflow_hits(), 3);
    // Counted per request checked against it (README), not per key.
    assert!(l.check(ip("198.51.100.3"), &h).is_err());
    assert_eq!(l.overflow_hits(), 4);
    // Keys in the table keep their own buckets.
    clock.advance(Duration::from_secs(1));
    assert!(l.check(ip("192.0.2.1"), &h).is_ok());
    assert!(l.check(ip("192.0.2.1"), &h).is_err());
    // Later, the stale keys are pruned on demand and a new key gets its own bucket.
    clock.advance(Duration::from_secs(5));
    assert!(l.check(ip("198.51.100.4"), &h).is_ok());
    assert!(l.check(ip("198.51.100.4"), &h).is_err());
    assert_eq!(l.keys(), 1);
    assert_eq!(l.overflow_hits(), 4);
}

#[test]
fn full_table_prune_is_throttled() {
    let s = RateLimitSpec {
        max_keys: Some(2),
        ..spec("1/h", None, Some("ip"))
    };
    let (l, clock) = limiter(&s);
    let h = no_headers();
    assert!(l.check(ip("192.0.2.1"), &h).is_ok());
    assert!(l.check(ip("192.0.2.2"), &h).is_ok());
    // Full of active keys: the prune finds nothing; overflow bucket used.
    assert!(l.check(ip("192.0.2.3"), &h).is_ok());
    assert!(l.check(ip("192.0.2.4"), &h).is_err());
    assert_eq!(l.keys(), 2);
    clock.advance(Duration::from_secs(3 * 3600));
    // Time passed: the next new key triggers a prune and gets a bucket.
    assert!(l.check(ip("192.0.2.5"), &h).is_ok());
    assert_eq!(l.keys(), 1);
}

#[test]
fn cap_holds_under_concurrency() {
    let s = RateLimitSpec {
        max_keys: Some(1000),
        ..spec("1/s", None, Some("ip"))
    };
    let (l, _) = limiter(&s);
    let l = Arc::new(l);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let l = Arc::clone(&l);
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let addr = IpAddr::from(std::net::Ipv4Addr::from((t << 24) | i));
                    let _ = l.check(addr, &HeaderMap::new());
                    assert!(l.keys() <= 1000);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(l.keys(), 1000);
    assert_eq!(l.overflow_hits(), 8000 - 1000);
}

// ---------------------------------------------------------------------------------------------
// Grants of shared buckets (`[cluster]`)

fn limit(rate: &str, burst: Option<u32>, per: Option<&str>) -> RateLimit {
    spec(rate, burst, per).compile().unwrap()
}

fn asked(take: Take<'_>) -> Asking<'_> {
    match take {
        Take::Ask(asking) => asking,
        Take::Spent => panic!("expected a request to Redis, a token was spent"),
        Take::Wait(..) => panic!("expected a request to Redis, got a wait"),
        Take::Refused(wait) => panic!("expected a request to Redis, refused for {wait:?}"),
    }
}

fn refused(take: Take<'_>) -> Duration {
    match take {
        Take::Refused(wait) => wait,
        Take::Spent => panic!("expected a refusal, a token was spent"),
        Take::Ask(_) => panic!("expected a refusal, got a request to Redis"),
        Take::Wait(..) => panic!("expected a refusal, got a wait"),
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn max_grant_is_what_the_rate_refills_in_the_grant_lifetime() {
    // rate, burst, max_grant
    let table: [(&str, Option<u32>, u32); 8] = [
        ("10/h", None, 1),
        ("100/s", None, 1),
        ("199/s", None, 1),
        ("200/s", None, 2),
        ("1000/s", None, 10),
        ("1000/s", Some(4), 4),
        ("1000/s", Some(1), 1),
        ("1000000000/s", None, MAX_GRANT),
    ];
    for (rate, burst, expected) in table {
        assert_eq!(
            limit(rate, burst, None).max_grant(),
            expected,
            "{rate} {burst:?}"
        );
    }
}

#[test]
fn grants_grow_while_spent_in_time_and_are_spent_locally() {
    let grants = Grants::new(&limit("1000/s", None, None)); // max_grant 10
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    let first = asked(grants.take(key, t0, false));
    assert_eq!(
        first.tokens(),
        1,
        "the first request asks for its own token"
    );
    first.granted(1);
    // Spent within its lifetime: the next request asks for twice as many, and
    // a request meanwhile asks for its own token only.
    let second = asked(grants.take(key, t0 + MS, false));
    assert_eq!(second.tokens(), 2);
    let meanwhile = asked(grants.take(key, t0 + MS, false));
    assert_eq!(meanwhile.tokens(), 1);
    meanwhile.granted(1);
    second.granted(2);
    assert_eq!(grants.held(key, t0 + 2 * MS), 1);
    assert!(matches!(grants.take(key, t0 + 2 * MS, false), Take::Spent));
    let mut want = 2;
    for step in 3..6u32 {
        want = (want * 2).min(10);
        let next = asked(grants.take(key, t0 + step * MS, false));
        assert_eq!(next.tokens(), want);
        next.granted(want);
        for _ in 1..want {
            assert!(matches!(
                grants.take(key, t0 + step * MS, false),
                Take::Spent
            ));
        }
    }
    assert_eq!(want, 10, "capped at max_grant");
}

#[test]
fn granted_tokens_expire_with_their_lifetime_and_the_want_shrinks() {
    let grants = Grants::new(&limit("1000/s", None, None));
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    asked(grants.take(key, t0, false)).granted(1);
    let asking = asked(grants.take(key, t0 + MS, false)); // asked at t0 + 1 ms
    assert_eq!(asking.tokens(), 2);
    asking.granted(2);
    // Valid until the moment of asking plus the lifetime, not after.
    let last = t0 + MS + GRANT_LIFETIME;
    assert_eq!(grants.held(key, last - Duration::from_nanos(1)), 1);
    assert_eq!(grants.held(key, last), 0);
    let again = asked(grants.take(key, last, false));
    assert_eq!(again.tokens(), 1, "a token left over: ask for half");
    again.granted(1);
    // Pruning drops the entry once nothing valid is held.
    grants.prune(last + GRANT_LIFETIME);
    assert_eq!(grants.lock().len(), 0);
}

#[test]
fn a_short_grant_or_a_refusal_goes_back_to_one_token_per_request() {
    let grants = Grants::new(&limit("1000/s", None, None));
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    asked(grants.take(key, t0, false)).granted(1);
    let asking = asked(grants.take(key, t0 + MS, false));
    assert_eq!(asking.tokens(), 2);
    asking.granted(1); // the bucket held one
    assert_eq!(grants.held(key, t0 + MS), 0);
    let next = asked(grants.take(key, t0 + 2 * MS, false));
    assert_eq!(next.tokens(), 1);
    next.granted(0); // refused
    assert_eq!(asked(grants.take(key, t0 + 3 * MS, false)).tokens(), 1);
    // A request for several tokens that gets no answer keeps nothing and lets
    // the next one ask again.
    let grants = Grants::new(&limit("1000/s", None, None));
    asked(grants.take(key, t0, false)).granted(1);
    let unanswered = asked(grants.take(key, t0 + MS, false));
    assert_eq!(unanswered.tokens(), 2);
    assert_eq!(
        asked(grants.take(key, t0 + MS, false)).tokens(),
        1,
        "meanwhile"
    );
    drop(unanswered);
    assert_eq!(grants.held(key, t0 + MS), 0);
    let next = asked(grants.take(key, t0 + 2 * MS, false));
    assert!(next.lead && next.tokens() == 1, "the next request leads");
}

#[test]
fn exact_limits_and_full_tables_hold_nothing() {
    let t0 = std::time::Instant::now();
    let exact = Grants::new(&limit("100/s", None, None));
    for i in 0..5u32 {
        let asking = asked(exact.take(LimitKey(KeyKind::Route), t0 + i * MS, false));
        assert_eq!(asking.tokens(), 1);
        asking.granted(1);
    }
    assert_eq!(exact.lock().len(), 0);
    let capped = Grants::new(&RateLimit {
        max_keys: 2,
        ..limit("1000/s", None, Some("ip"))
    });
    let keys: Vec<LimitKey> = (1..=3u8)
        .map(|i| LimitKey(KeyKind::Bucket([i; 16])))
        .collect();
    for key in &keys {
        asked(capped.take(*key, t0, false)).granted(1);
    }
    assert_eq!(capped.lock().len(), 2);
    for _ in 0..3 {
        let asking = asked(capped.take(keys[2], t0 + MS, false));
        assert_eq!(asking.tokens(), 1, "no entry: one token per request");
        asking.granted(1);
    }
}

/// The documented bound, on a simulated timeline: several instances with
/// random arrivals and random Redis round trips share one GCRA (the script's
/// arithmetic); in every window of length W, the admitted requests number at
/// most `burst + ⌊(W + GRANT_LIFETIME) / T⌋ + 1`. Every refusal made without
/// asking Redis (a remembered one) is one the script would make at that
/// moment too.
#[test]
fn admissions_stay_within_the_documented_bound() {
    let mut all_remembered = 0;
    for (rate, burst, instances, seed) in [
        ("1000/s", Some(10), 2, 1u64),
        ("1000/s", Some(10), 4, 2),
        ("5000/s", Some(50), 3, 3),
        ("100000/s", None, 4, 4),
    ] {
        let limit = limit(rate, burst, None);
        let interval = shared_interval_micros(&limit) as f64;
        let tau = interval * f64::from(limit.burst.get() - 1);
        let mut tat = 0.0f64; // the shared bucket, microseconds
                              // How many tokens are there at `now`, and the wait for one if none.
        let there = |tat: f64, now: f64| -> (f64, f64) {
            let t = tat.max(now);
            (((tau - (t - now)) / interval).floor() + 1.0, t - tau - now)
        };
        let mut rng = seed;
        let mut random = move |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let origin = std::time::Instant::now();
        let grants: Vec<Grants> = (0..instances).map(|_| Grants::new(&limit)).collect();
        let key = LimitKey(KeyKind::Route);
        let mut admitted: Vec<f64> = Vec::new();
        // Arrivals at random instances in rounds of 100 ms: 40 ms at about
        // half the rate (grants grow and tokens are held), 20 ms without
        // traffic (the bucket refills; held tokens go stale), 40 ms at about
        // twice the rate. Redis runs each request 0..2 ms after it was sent
        // and its answer arrives at once.
        let mut pending: Vec<(u64, Asking<'_>)> = Vec::new();
        let mut spent = 0;
        let (mut refusals, mut remembered) = (0, 0);
        let mut now_us = 0u64;
        while now_us < 500_000 {
            let gap = (interval as u64).max(1);
            now_us += match now_us % 100_000 {
                0..40_000 => 1 + random(4 * gap),
                40_000..60_000 => 20_000,
                _ => 1 + random(gap),
            };
            pending.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
            while pending.last().is_some_and(|(at, _)| *at <= now_us) {
                let (at, asking) = pending.pop().unwrap();
                let answered = origin + Duration::from_micros(at);
                let (there, wait) = there(tat, at as f64);
                if there < 1.0 {
                    asking.refused_at(Duration::from_micros(wait.max(1.0) as u64), answered);
                    refusals += 1;
                    continue;
                }
                let granted = f64::from(asking.tokens()).min(there);
                tat = tat.max(at as f64) + granted * interval;
                asking.granted_at(granted as u32, answered);
                admitted.push(at as f64);
            }
            let instance = random(instances) as usize;
            let now = origin + Duration::from_micros(now_us);
            match grants[instance].take(key, now, false) {
                Take::Spent => {
                    spent += 1;
                    admitted.push(now_us as f64);
                }
                Take::Ask(asking) => pending.push((now_us + random(2000), asking)),
                Take::Wait(..) => panic!("a take that may not wait waited"),
                Take::Refused(_) => {
                    remembered += 1;
                    assert!(
                        there(tat, now_us as f64).0 < 1.0,
                        "{rate}: refused at {now_us} µs what the script would grant"
                    );
                }
            }
        }
        admitted.sort_by(f64::total_cmp);
        let lifetime = GRANT_LIFETIME.as_micros() as f64;
        for window in [1_000.0, 10_000.0, 50_000.0] {
            let bound =
                f64::from(limit.burst.get()) + ((window + lifetime) / interval).floor() + 1.0;
            let mut start = 0;
            for end in 0..admitted.len() {
                while admitted[end] - admitted[start] > window {
                    start += 1;
                }
                let count = (end - start + 1) as f64;
                assert!(
                    count <= bound,
                    "{rate}: {count} admitted within {window} µs, bound {bound}"
                );
            }
        }
        assert!(admitted.len() > 100, "{rate}: {}", admitted.len());
        eprintln!("{rate}: {refusals} refusals by the script, {remembered} remembered");
        all_remembered += remembered;
        assert!(
            spent > admitted.len() / 10,
            "{rate}: {spent} of {} spent locally",
            admitted.len()
        );
    }
    assert!(all_remembered > 0, "no refusal was remembered");
}

#[test]
fn a_request_meanwhile_waits_for_the_leads_grant_when_it_may() {
    // Guards `Take::Wait` in `Grants::take` and the `notify_waiters` in
    // `Grants::granted`: without them each request that arrives during the
    // lead's round trip asks Redis for its own token.
    let grants = Grants::new(&limit("1000/s", None, None)); // max_grant 10
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    asked(grants.take(key, t0, false)).granted(1);
    let lead = asked(grants.take(key, t0 + MS, false));
    assert_eq!(lead.tokens(), 2);
    let Take::Wait(answered, ticket) = grants.take(key, t0 + MS, true) else {
        panic!("a request meanwhile that may wait waits");
    };
    // Not yet answered: the wait is pending.
    let mut answered = Box::pin(answered);
    assert!(futures_poll_once(answered.as_mut()).is_none());
    lead.granted_at(2, t0 + 2 * MS);
    // The answer wakes it, and the lead's second token is its.
    assert!(futures_poll_once(answered.as_mut()).is_some());
    assert!(matches!(
        grants.take_after_wait(key, t0 + 2 * MS, true, Some(ticket)),
        Take::Spent
    ));
    // A lead that gets no answer wakes the waiters too.
    let lead = asked(grants.take(key, t0 + 3 * MS, false));
    let Take::Wait(answered, _) = grants.take(key, t0 + 3 * MS, true) else {
        panic!("waits");
    };
    let mut answered = Box::pin(answered);
    drop(lead);
    assert!(futures_poll_once(answered.as_mut()).is_some());
}

/// A lead's spare tokens go to the requests that waited for it, in order, at
/// the answer: a waiter that runs only after the grant's lifetime (behind a
/// long run queue) is still admitted, and one past the spare tokens is not
/// (it asks again). Before, such waiters found the tokens expired, and after
/// three waits each asked Redis for its own token: at 500 connections one
/// round trip per request. Guards `handed` in `Grants::granted` and the
/// ticket check in `Grants::take_after_wait`.
#[test]
fn a_leads_spare_tokens_are_handed_to_its_waiters_in_order() {
    let grants = Grants::new(&limit("1000/s", None, None)); // max_grant 10
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    let mut lead = asked(grants.take(key, t0, false));
    let tickets: Vec<Ticket> = (0..4)
        .map(|_| match grants.take(key, t0, true) {
            Take::Wait(_, ticket) => ticket,
            _ => panic!("waits for the lead"),
        })
        .collect();
    lead.count_waiting();
    assert_eq!(lead.tokens(), 5, "its own and one per waiter");
    lead.granted_at(3, t0 + MS); // the bucket held three: two spare
    let late = t0 + GRANT_LIFETIME + MS;
    for ticket in &tickets[..2] {
        assert!(matches!(
            grants.take_after_wait(key, late, true, Some(*ticket)),
            Take::Spent
        ));
    }
    assert!(
        matches!(
            grants.take_after_wait(key, late, true, Some(tickets[2])),
            Take::Ask(_)
        ),
        "past the spare tokens: asks again"
    );
    assert_eq!(
        grants.held(key, t0),
        0,
        "nothing left besides the handed ones"
    );

    // An answer that comes after the grant's lifetime hands nothing: a token
    // is spent only while valid.
    let grants = Grants::new(&limit("1000/s", None, None));
    let mut lead = asked(grants.take(key, t0, false));
    let Take::Wait(_, ticket) = grants.take(key, t0, true) else {
        panic!("waits for the lead");
    };
    lead.count_waiting();
    let late = lead.at + GRANT_LIFETIME;
    lead.granted_at(2, late);
    assert!(matches!(
        grants.take_after_wait(key, late, true, Some(ticket)),
        Take::Ask(_)
    ));
}

/// One `Notify` wakes the waiters of every key. A waiter woken by another
/// key's answer keeps its place in its own key's round (the same ticket, not
/// counted again in the lead's ask). A hostile pass saw each such wake-up
/// inflate the lead's count, and use up one of the waiter's three waits.
/// Guards the same-round check in `Grants::take_after_wait`.
#[test]
fn a_waiter_woken_by_another_keys_answer_keeps_its_place() {
    let grants = Grants::new(&limit("1000/s", None, Some("ip")));
    let (a, b) = (
        LimitKey(KeyKind::Bucket([1; 16])),
        LimitKey(KeyKind::Bucket([2; 16])),
    );
    let t0 = std::time::Instant::now();
    let mut lead_a = asked(grants.take(a, t0, false));
    let Take::Wait(_, ticket) = grants.take(a, t0, true) else {
        panic!("waits for a's lead");
    };
    let lead_b = asked(grants.take(b, t0, false));
    lead_b.granted_at(1, t0 + MS); // wakes a's waiter too
    let Take::Wait(_, again) = grants.take_after_wait(a, t0 + MS, true, Some(ticket)) else {
        panic!("a's lead is still on its way");
    };
    assert_eq!(again, ticket, "the same place");
    lead_a.count_waiting();
    assert_eq!(lead_a.tokens(), 2, "its own and one waiter, not two");
}

/// A lead whose answer came after its grant's lifetime (the event loop lags)
/// hands nothing, and the next lead asks for its `want` only: tokens asked for
/// its waiters would again be dropped unspent, and taken from the shared
/// bucket for nothing (a hostile pass saw 31% of the granted tokens wasted).
/// Guards `late` in `Grants::granted` and `Grants::with_waiting`.
#[test]
fn after_a_late_answer_a_lead_does_not_ask_for_its_waiters() {
    let grants = Grants::new(&limit("1000/s", None, None));
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    let mut lead = asked(grants.take(key, t0, false));
    let Take::Wait(..) = grants.take(key, t0, true) else {
        panic!("waits");
    };
    lead.count_waiting();
    let at = lead.at;
    assert_eq!(lead.tokens(), 2);
    lead.granted_at(2, at + GRANT_LIFETIME); // late
    let late = at + GRANT_LIFETIME;
    let mut next = asked(grants.take(key, late, false));
    for _ in 0..3 {
        let Take::Wait(..) = grants.take(key, late, true) else {
            panic!("waits");
        };
    }
    next.count_waiting();
    assert_eq!(next.tokens(), 1, "its want only");
    let at = next.at;
    next.granted_at(1, at + MS); // in time again
    let mut third = asked(grants.take(key, late + MS, false));
    let Take::Wait(..) = grants.take(key, late + MS, true) else {
        panic!("waits");
    };
    third.count_waiting();
    assert_eq!(third.tokens(), 2, "one per waiter again once in time");
}

/// Rounds are unique over the whole table: a ticket of an entry that was
/// pruned and made again never matches the new entry's round (it would spend
/// a token handed to another waiter). Guards `Grants::rounds`.
#[test]
fn a_ticket_of_a_pruned_entry_matches_no_later_round() {
    let grants = Grants::new(&limit("1000/s", None, None));
    let key = LimitKey(KeyKind::Route);
    let t0 = std::time::Instant::now();
    let lead = asked(grants.take(key, t0, false));
    let Take::Wait(_, stale) = grants.take(key, t0, true) else {
        panic!("waits");
    };
    lead.granted_at(1, t0 + MS);
    grants.prune(t0 + 2 * GRANT_LIFETIME);
    assert_eq!(grants.lock().len(), 0, "pruned");
    let mut lead = asked(grants.take(key, t0 + 2 * GRANT_LIFETIME, false));
    let Take::Wait(..) = grants.take(key, t0 + 2 * GRANT_LIFETIME, true) else {
        panic!("waits");
    };
    lead.count_waiting();
    let at = lead.at;
    lead.granted_at(2, at + MS); // hands one token to the new round's waiter
    assert!(
        matches!(
            grants.take_after_wait(key, at + MS, true, Some(stale)),
            Take::Ask(_)
        ),
        "the stale ticket is not the new waiter's"
    );
}

/// The shared bucket's interval is rounded up to whole microseconds, so it
/// refills no faster than the rate: 7000/s is 142.857 µs, sent as 143 (142
/// refilled at 7042/s, found by a hostile pass).
#[test]
fn the_shared_interval_rounds_up() {
    assert_eq!(shared_interval_micros(&limit("7000/s", None, None)), 143);
    assert_eq!(shared_interval_micros(&limit("1000/s", None, None)), 1000);
    assert_eq!(
        shared_interval_micros(&limit("1000000000/s", None, None)),
        1
    );
}

/// Polls `future` once with a no-op waker: `Some` when it is ready.
fn futures_poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut context) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

/// A refusal is remembered until the next token: the lead's waiters and every
/// later request of the key are refused here, with the rest of the wait, and
/// the first request after it asks Redis again. Before, each waiter of a
/// refused lead, and each request of a flood above the limit, asked Redis
/// for its own token. Guards `refused_until` in `Grants::granted` and the
/// refusal check in `Grants::take_after_wait`.
#[test]
fn a_refusal_is_remembered_until_the_next_token() {
    let grants = Grants::new(&limit("1000/s", None, Some("ip"))); // max_grant 10
    let key = LimitKey(KeyKind::Bucket([0; 16]));
    let t0 = std::time::Instant::now();
    let lead = asked(grants.take(key, t0, false));
    let Take::Wait(_, ticket) = grants.take(key, t0, true) else {
        panic!("a request meanwhile waits");
    };
    lead.refused_at(5 * MS, t0 + MS);
    assert_eq!(
        refused(grants.take_after_wait(key, t0 + MS, true, Some(ticket))),
        4 * MS,
        "the waiter is refused with the rest of the wait"
    );
    assert_eq!(refused(grants.take(key, t0 + 2 * MS, true)), 3 * MS);
    assert_eq!(refused(grants.take(key, t0 + 2 * MS, false)), 3 * MS);
    // Another key is not refused.
    let other = LimitKey(KeyKind::Bucket([1; 16]));
    assert!(asked(grants.take(other, t0 + 2 * MS, false)).is_lead());
    // Once the token is there, Redis is asked again.
    let next = asked(grants.take(key, t0 + 5 * MS, true));
    assert!(next.is_lead());
    // Each refusal counts from its own request.
    next.refused_at(MS, t0 + 6 * MS);
    assert_eq!(refused(grants.take(key, t0 + 5 * MS, true)), MS);
    assert!(asked(grants.take(key, t0 + 6 * MS, true)).is_lead());
}

/// With `max_grant` 1 (a rate under 200/s) nothing is held, but a refusal is
/// remembered all the same, for at most `REFUSAL_MEMORY` (a bucket Redis lost
/// is asked again within it), with the whole wait as `Retry-After`: a flood
/// against `10/h` asks Redis once a second, not once per request.
#[test]
fn a_refusal_is_remembered_when_nothing_is_held() {
    let grants = Grants::new(&limit("10/h", None, Some("ip")));
    assert_eq!(grants.max_grant, 1);
    let key = LimitKey(KeyKind::Bucket([7; 16]));
    let t0 = std::time::Instant::now();
    asked(grants.take(key, t0, true)).granted(1);
    assert!(
        asked(grants.take(key, t0, true)).tokens() == 1,
        "granted: nothing kept"
    );
    let six_minutes = Duration::from_secs(360);
    asked(grants.take(key, t0, true)).refused_at(six_minutes, t0 + MS);
    let half = Duration::from_millis(500);
    assert_eq!(
        refused(grants.take(key, t0 + half, true)),
        six_minutes - half
    );
    grants.prune(t0 + half);
    assert_eq!(
        refused(grants.take(key, t0 + half, true)),
        six_minutes - half,
        "kept by prune"
    );
    // Remembered for a second at most, then Redis is asked again.
    assert_eq!(
        asked(grants.take(key, t0 + REFUSAL_MEMORY, true)).tokens(),
        1
    );
    grants.prune(t0 + REFUSAL_MEMORY);
    assert_eq!(grants.lock().len(), 0, "pruned once the refusal ended");
}

/// The refusals remembered are bounded by `max_keys` like the grants: a key
/// refused while the table is full is not remembered (it asks Redis again).
/// The route's overflow bucket always has room: a flood of distinct keys is
/// what fills the table and sends them there (helper-43's finding: its
/// refusals were not remembered then, one round trip per request).
#[test]
fn remembered_refusals_are_bounded_by_max_keys() {
    let mut spec = spec("10/h", None, Some("ip"));
    spec.max_keys = Some(2);
    let grants = Grants::new(&spec.compile().unwrap());
    let t0 = std::time::Instant::now();
    let wait = Duration::from_secs(360);
    for n in 0..3u8 {
        let key = LimitKey(KeyKind::Bucket([n; 16]));
        asked(grants.take(key, t0, true)).refused_at(wait, t0);
    }
    assert_eq!(grants.lock().len(), 2);
    refused(grants.take(LimitKey(KeyKind::Bucket([1; 16])), t0 + MS, true));
    asked(grants.take(LimitKey(KeyKind::Bucket([2; 16])), t0 + MS, true));
    asked(grants.take(OVERFLOW_KEY, t0, true)).refused_at(wait, t0);
    assert_eq!(grants.lock().len(), 3, "max_keys + the overflow bucket");
    assert_eq!(refused(grants.take(OVERFLOW_KEY, t0 + MS, true)), wait - MS);
}
