//! IP allowlists, trusted proxies and rate limits end to end, with real source
//! addresses on loopback (127.0.0.2, 127.0.0.3, 127.0.0.4 and ::1).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn allowlists_admit_and_deny_by_source_address_before_reading_the_body() {
    // Guards `if !route.settings.allow.permits(client)` in `Gateway::handle`
    // (proxy/mod.rs): without it .3 is forwarded.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("partners", "/partners", "app", "allow = [\"partners\"]")
        .route("v6", "/v6", "app", "allow = [\"::1/128\"]")
        .table("[ip_sets]\npartners = [\"127.0.0.2/32\", \"2001:db8::/32\"]")
        .start();
    let allowed = post_from(ip("127.0.0.2"), gateway.proxy, "/partners", &[], b"from .2");
    assert_eq!(allowed.status, 200);
    let denied = post_from(ip("127.0.0.3"), gateway.proxy, "/partners", &[], b"from .3");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"], "ip_not_allowed");
    assert_eq!(denied.json()["route"], "partners");
    assert_eq!(
        denied.header("connection"),
        Some("close"),
        "the unread body is not kept"
    );
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = post_from(
        ip("127.0.0.3"),
        gateway.proxy,
        "/partners",
        &[("X-Forwarded-For", "127.0.0.2")],
        b"spoof",
    );
    assert_eq!(spoofed.status, 403);
    assert_eq!(
        upstream
            .received()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>(),
        vec![b"from .2".to_vec()]
    );
    gateway.assert_requests("partners", "ip_denied", 2.0);

    if ipv6_loopback_available() {
        let v6_upstream = Upstream::start("v6");
        let v6_gateway = Setup::new()
            .upstream_named("app", &[v6_upstream.addr], "")
            .route("v6", "/v6", "app", "allow = [\"::1/128\"]")
            .start_with_listeners(&["[::1]:0"]);
        assert_eq!(
            post_from(ip("::1"), v6_gateway.listeners[1], "/v6", &[], b"v6").status,
            200
        );
        assert_eq!(
            post_from(ip("127.0.0.2"), v6_gateway.proxy, "/v6", &[], b"v4").status,
            403
        );
        assert_eq!(v6_upstream.count(), 1);
        assert_eq!(
            v6_upstream.received()[0].header("x-forwarded-for"),
            Some("::1")
        );
    }
}

#[test]
fn forwarded_for_is_believed_only_through_trusted_proxies() {
    // Guards `if !trusted.contains(peer) { return peer; }` and the
    // right-to-left walk in `allowlist::client_addr`: believing the left-most
    // entry lets the spoofed chain through.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .server("trusted_proxies = [\"127.0.0.4/32\", \"10.0.0.0/8\"]")
        .upstream(&upstream)
        .route("hooks", "/hooks", "app", "allow = [\"192.0.2.7/32\"]")
        .start();
    // Through the trusted proxy .4: the client is the XFF entry.
    let through_proxy = post_from(
        ip("127.0.0.4"),
        gateway.proxy,
        "/hooks",
        &[("X-Forwarded-For", "192.0.2.7")],
        b"a",
    );
    assert_eq!(through_proxy.status, 200);
    // A chain through two trusted proxies (10.1.1.1, then .4) picks the right-most untrusted entry.
    let chain = post_from(
        ip("127.0.0.4"),
        gateway.proxy,
        "/hooks",
        &[("X-Forwarded-For", "203.0.113.9, 192.0.2.7, 10.1.1.1")],
        b"b",
    );
    assert_eq!(chain.status, 200);
    // A client spoofing the left-most entry does not get through.
    let spoofed = post_from(
        ip("127.0.0.4"),
        gateway.proxy,
        "/hooks",
        &[("X-Forwarded-For", "192.0.2.7, 203.0.113.9")],
        b"c",
    );
    assert_eq!(spoofed.status, 403);
    // The same header from an untrusted peer is ignored.
    let untrusted = post_from(
        ip("127.0.0.3"),
        gateway.proxy,
        "/hooks",
        &[("X-Forwarded-For", "192.0.2.7")],
        b"d",
    );
    assert_eq!(untrusted.status, 403);
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    // The upstream sees the chain with the TCP peer appended.
    assert_eq!(
        received[0].header("x-forwarded-for"),
        Some("192.0.2.7, 127.0.0.4")
    );
}

#[test]
fn exactly_burst_requests_pass_then_429_with_retry_after() {
    // Guards `limiter.check(client, &head.headers)` in `Gateway::handle` and
    // `RateLimited::retry_after_secs` (ratelimit.rs): a burst off by one, or a
    // Retry-After of 0, turns it red.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route(
            "hooks",
            "/hooks",
            "app",
            "rate_limit = { rate = \"1/min\", burst = 3, per = \"route\" }",
        )
        .start();
    for i in 0..3 {
        assert_eq!(
            post(gateway.proxy, "/hooks", &[], b"x").status,
            200,
            "request {i} within the burst"
        );
    }
    let limited = post(gateway.proxy, "/hooks", &[], b"x");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    // 60 s less the time the four requests took, rounded up: a loaded
    // machine may take a few seconds for them.
    assert!(
        (50..=60).contains(&retry_after),
        "one token a minute: Retry-After {retry_after}"
    );
    assert_eq!(upstream.count(), 3);
    gateway.assert_outcome("rate_limited", 1.0);
}

#[test]
fn per_ip_and_per_header_limits_are_independent_and_recover() {
    // Guards `RouteLimiter::key` (ratelimit.rs): keying every request by route
    // puts .3 and the second shop in the first one's bucket.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route(
            "per-ip",
            "/ip",
            "app",
            // One token per 2 s: the third request is refused only if it comes
            // within 2 s of the first (at 5/s that was 200 ms, which three
            // exchanges on a loaded machine can take).
            "rate_limit = { rate = \"30/min\", burst = 2, per = \"ip\" }",
        )
        .route(
            "per-shop",
            "/shop",
            "app",
            "rate_limit = { rate = \"1/h\", burst = 1, per = \"header:X-Shop-Domain\" }",
        )
        .start();
    let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
    for source in [a, a] {
        assert_eq!(
            post_from(source, gateway.proxy, "/ip", &[], b"x").status,
            200
        );
    }
    assert_eq!(post_from(a, gateway.proxy, "/ip", &[], b"x").status, 429);
    // Another address has its own bucket.
    assert_eq!(post_from(b, gateway.proxy, "/ip", &[], b"x").status, 200);
    // 30/min refills one token every 2 s: the limit recovers.
    let recovered = wait_until(Duration::from_secs(10), || {
        try_post_from(a, gateway.proxy, "/ip", &[], b"x").is_ok_and(|r| r.status == 200)
    });
    assert!(recovered, "the per-IP limit did not recover");

    let shop =
        |domain: &str| post(gateway.proxy, "/shop", &[("X-Shop-Domain", domain)], b"s").status;
    assert_eq!(shop("one.myshopify.com"), 200);
    assert_eq!(shop("one.myshopify.com"), 429);
    assert_eq!(shop("two.myshopify.com"), 200);
    assert_eq!(shop("two.myshopify.com"), 429);
}

#[test]
fn the_inflight_cap_sheds_load_with_503() {
    // Guards `self.inflight_limit.try_acquire()` in `Gateway::handle`; the
    // third request guards the slot's release (`InflightGuard::drop`).
    // Held until the gate opens, not for a fixed delay a loaded machine may
    // outlast before the second request is sent.
    let release = Gate::new();
    let slow = Upstream::with("slow", Behavior::held(&release));
    let gateway = Setup::new()
        .server("max_inflight = 1")
        .upstream(&slow)
        .route("hooks", "/hooks", "slow", "")
        .start();
    let proxy = gateway.proxy;
    let first = std::thread::spawn(move || post(proxy, "/hooks", &[], b"first"));
    // Generous: on a loaded CI machine the first request can take a while to arrive.
    assert!(wait_until(Duration::from_secs(20), || slow.count() == 1));
    let shed = post(gateway.proxy, "/hooks", &[], b"second");
    release.open();
    assert_eq!(shed.status, 503);
    assert_eq!(shed.json()["error"], "overloaded");
    assert_eq!(first.join().unwrap().status, 200);
    // The slot is released when the request's context ends, just after the
    // answer's last byte is written: the client can see that answer first.
    let released = wait_until(Duration::from_secs(5), || {
        try_post(gateway.proxy, "/hooks", &[], b"third").is_ok_and(|r| r.status == 200)
    });
    assert!(released, "the slot is released");
}

#[test]
fn bad_allow_and_rate_limit_settings_are_config_errors() {
    // Guards `Problems` collecting every error (config/mod.rs): stopping at
    // the first one loses the later keys.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[ip_sets]
office = ["10.0.0.1/8"]

[upstreams.app]
targets = ["127.0.0.1:9"]

[[routes]]
name = "a"
path = "/a"
upstream = "app"
allow = ["office", "githubb"]
rate_limit = { rate = "100/fortnight", per = "cookie" }
"#,
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bad.toml:2: ip_sets.office[0]",
        "host bits",
        "routes[0].allow[1]",
        "unknown IP set \"githubb\"",
        "routes[0].rate_limit.rate",
        "routes[0].rate_limit.per",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// README, "Rate limits": at `max_keys`, a new key "shares one overflow bucket
/// with the per-key rate", counted in `hookgate_rate_limit_overflow_total`
/// (exported at 0 from load for a per-key limit, updated every 10 s). Two
/// keys fill the table; the third key gets the overflow bucket's one token
/// (200), the fourth finds it spent (429), and both count. Guards the
/// `publish_overflow` call in `Housekeeping::upkeep` (housekeeping.rs; without
/// it the series stays 0) and `rate_limit_overflow.with_label_values` in
/// `RouteHandles::register` (metrics.rs; without it there is no series at load).
#[test]
fn new_keys_past_max_keys_share_the_overflow_bucket_and_are_counted() {
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route(
            "keyed",
            "/keyed",
            "app",
            "rate_limit = { rate = \"1/h\", burst = 1, per = \"header:X-Key\", max_keys = 2 }",
        )
        .route(
            "whole",
            "/whole",
            "app",
            "rate_limit = { rate = \"1/h\", burst = 1 }",
        )
        .start();
    let overflow =
        |route: &str| gateway.metric("hookgate_rate_limit_overflow_total", &[("route", route)]);
    assert_eq!(
        overflow("keyed"),
        Some(0.0),
        "the series exists at 0 from load"
    );
    // One bucket per route: no table, no overflow, no series.
    gateway.assert_no_series("hookgate_rate_limit_overflow_total", &[("route", "whole")]);

    let send = |key: &str| post(gateway.proxy, "/keyed", &[("X-Key", key)], b"{}");
    for key in ["a", "b"] {
        send(key).expect_status(200);
    }
    // The table holds a and b; c is checked against the fresh overflow bucket.
    send("c").expect_status(200);
    let refused = send("d");
    refused.expect_status(429);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(upstream.count(), 3);
    assert!(
        wait_until(Duration::from_secs(25), || overflow("keyed") == Some(2.0)),
        "hookgate_rate_limit_overflow_total is {:?}, not 2, 25 s after two keys past max_keys",
        overflow("keyed")
    );
}
