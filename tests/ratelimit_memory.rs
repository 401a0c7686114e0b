//! Memory of a per-IP rate limiter under a flood of one million distinct client addresses.
//!
//! A counting global allocator (`stats_alloc`, no `unsafe` here) measures the bytes the limiter
//! holds. The bound asserted: `min(keys, max_keys) * BYTES_PER_KEY_BOUND + 1 MiB`, both for the
//! default cap (100 000 keys) and for a cap raised to one million. Run with `--nocapture` to see
//! the numbers. The two floods run one after the other (the allocator counts the whole process).

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use hookgate::config::ratelimit::RateLimitSpec;
use hookgate::ratelimit::{RouteLimiter, BYTES_PER_KEY_BOUND, DEFAULT_MAX_KEYS};
use http::HeaderMap;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

const FLOOD: u32 = 1_000_000;
const OVERHEAD: usize = 1 << 20;

struct Measured {
    keys: usize,
    /// Bytes allocated and not yet freed since just before the limiter was built.
    live_bytes: usize,
    overflow_hits: u64,
}

fn net_bytes(region: &Region<System>) -> usize {
    let change = region.change();
    let net = change.bytes_allocated as isize - change.bytes_deallocated as isize
        + change.bytes_reallocated;
    net.max(0) as usize
}

/// One million requests from distinct IPv4 addresses, 2 µs apart (a 500k req/s flood lasting
/// two seconds of fake time), against `rate = "10/s", per = "ip"`.
fn flood(max_keys: Option<usize>) -> Measured {
    let spec = RateLimitSpec {
        rate: "10/s".into(),
        burst: None,
        per: Some("ip".into()),
        max_keys,
    };
    let config = spec.compile().unwrap();
    let clock = FakeRelativeClock::default();
    let headers = HeaderMap::new();

    let region = Region::new(GLOBAL);
    let limiter = RouteLimiter::with_clock(&config, clock.clone());
    for i in 0..FLOOD {
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let _ = limiter.check(client, &headers);
        clock.advance(Duration::from_micros(2));
    }
    let measured = Measured {
        keys: limiter.keys(),
        live_bytes: net_bytes(&region),
        overflow_hits: limiter.overflow_hits(),
    };
    drop(limiter);
    measured
}

fn report(name: &str, cap: usize, m: &Measured) {
    eprintln!(
        "{name}: cap {cap}, keys {}, live {} bytes ({:.1} bytes/key), overflow hits {}",
        m.keys,
        m.live_bytes,
        m.live_bytes as f64 / m.keys.max(1) as f64,
        m.overflow_hits
    );
}

#[test]
fn one_million_ips_default_cap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let m = flood(None);
    report("default cap", DEFAULT_MAX_KEYS, &m);
    assert!(m.keys <= DEFAULT_MAX_KEYS, "{} keys", m.keys);
    assert!(m.overflow_hits > 0, "the flood must have hit the cap");
    let bound = DEFAULT_MAX_KEYS * BYTES_PER_KEY_BOUND + OVERHEAD;
    assert!(
        m.live_bytes <= bound,
        "live {} > bound {bound}",
        m.live_bytes
    );
    eprintln!("default cap flood took {:?}", started.elapsed());
}

#[test]
fn one_million_ips_cap_raised_to_one_million() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let cap = FLOOD as usize;
    let m = flood(Some(cap));
    report("raised cap", cap, &m);
    assert_eq!(m.overflow_hits, 0);
    assert!(m.keys <= cap);
    assert!(m.keys > cap / 2, "most keys are still live: {}", m.keys);
    let bound = m.keys * BYTES_PER_KEY_BOUND + OVERHEAD;
    assert!(
        m.live_bytes <= bound,
        "live {} > bound {bound}",
        m.live_bytes
    );
    eprintln!("raised cap flood took {:?}", started.elapsed());
}
