//! Hot-path costs of the allowlist and the rate limiter: set membership, the client-address
//! walk, and one limiter check per route / per IP (existing key and new key at the cap).
//! `cargo bench --bench ratelimit`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use hookgate::allowlist::{client_addr, parse_entry, IpSet};
use hookgate::config::ratelimit::RateLimitSpec;
use hookgate::ratelimit::RouteLimiter;
use http::HeaderMap;

fn spec(rate: &str, per: &str, max_keys: Option<usize>) -> RateLimitSpec {
    RateLimitSpec {
        rate: rate.into(),
        burst: None,
        per: Some(per.into()),
        max_keys,
    }
}

fn allowlist(c: &mut Criterion) {
    let small = IpSet::new(
        [
            "192.30.252.0/22",
            "185.199.108.0/22",
            "140.82.112.0/20",
            "143.55.64.0/20",
        ]
        .iter()
        .map(|e| parse_entry(e).unwrap()),
    );
    // 4096 disjoint /24s, the size of a large cloud provider list.
    let large = IpSet::new(
        (0..4096u32)
            .map(|i| parse_entry(&format!("{}.{}.{}.0/24", 20 + i / 256, i % 256, 7)).unwrap()),
    );
    let probe = IpAddr::V4(Ipv4Addr::new(140, 82, 115, 9));
    c.bench_function("ipset_contains_4", |b| {
        b.iter(|| small.contains(black_box(probe)))
    });
    c.bench_function("ipset_contains_4096", |b| {
        b.iter(|| large.contains(black_box(probe)))
    });

    let trusted = IpSet::new([parse_entry("10.0.0.0/8").unwrap()]);
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let xff: &[u8] = b"6.6.6.6, 203.0.113.9, 10.0.0.1";
    c.bench_function("client_addr_two_proxies", |b| {
        b.iter(|| client_addr(black_box(peer), [black_box(xff)], &trusted))
    });
}

fn limiter(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

    let per_route = RouteLimiter::new(&spec("1000000000/s", "route", None).compile().unwrap());
    c.bench_function("limiter_per_route", |b| {
        b.iter(|| per_route.check(black_box(client), &headers))
    });

    let per_ip = RouteLimiter::new(&spec("1000000000/s", "ip", None).compile().unwrap());
    c.bench_function("limiter_per_ip_existing_key", |b| {
        b.iter(|| per_ip.check(black_box(client), &headers))
    });

    let full = RouteLimiter::new(&spec("1/h", "ip", Some(10_000)).compile().unwrap());
    for i in 0..10_000u32 {
        let _ = full.check(IpAddr::V4(Ipv4Addr::from(i)), &headers);
    }
    let mut next = 1_000_000u32;
    c.bench_function("limiter_per_ip_new_key_at_cap", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            full.check(IpAddr::V4(Ipv4Addr::from(next)), &headers)
        })
    });
}

criterion_group!(benches, allowlist, limiter);
criterion_main!(benches);
