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
    // Keys in the table keep their own buckets.
    clock.advance(Duration::from_secs(1));
    assert!(l.check(ip("192.0.2.1"), &h).is_ok());
    assert!(l.check(ip("192.0.2.1"), &h).is_err());
    // Later, the stale keys are pruned on demand and a new key gets its own bucket.
    clock.advance(Duration::from_secs(5));
    assert!(l.check(ip("198.51.100.4"), &h).is_ok());
    assert!(l.check(ip("198.51.100.4"), &h).is_err());
    assert_eq!(l.keys(), 1);
    assert_eq!(l.overflow_hits(), 3);
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
