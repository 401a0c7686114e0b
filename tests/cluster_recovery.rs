//! Several instances as one (issue 15), after a hostile pass (hostile8): what
//! a Redis that restarts, closes connections or answers late does to a real
//! gateway sharing a real `redis-server` on loopback (`common::redis`), and
//! what a reload of a shared rate limit does. Each test names the product line
//! that turns it red.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;

const DEDUPE: &str = "dedupe = { key = \"header:X-Delivery\" }";

fn cluster_table(redis: &RedisServer, extra: &str) -> String {
    format!("[cluster]\nredis = \"{}\"\n{extra}\n", redis.url())
}

fn delivery(gateway: &Gateway, id: &str) -> std::io::Result<Response> {
    try_post(
        gateway.proxy,
        "/hooks",
        &[("X-Delivery", id), ("Content-Type", "application/json")],
        b"{}",
    )
}

/// The clients connected to `redis`, other than the one asking.
fn redis_clients(redis: &RedisServer) -> usize {
    redis
        .command("CLIENT LIST")
        .map_or(0, |list| list.matches("id=").count().saturating_sub(1))
}

/// Sends deliveries with fresh ids until the gateway's ping and both proxy
/// threads hold a connection to `redis` (each thread opens its own on its
/// first command).
#[track_caller]
fn warm_up(gateway: &Gateway, redis: &RedisServer) {
    let mut sent = 0;
    let warm = wait_until(Duration::from_secs(10), || {
        sent += 1;
        let _ = delivery(gateway, &format!("evt_warm_{sent}"));
        redis_clients(redis) >= 3
    });
    assert!(warm, "{} connections to Redis", redis_clients(redis));
}

/// Each proxy thread keeps its own connection to Redis. Redis closing it
/// (`CLIENT KILL`, the `timeout` setting of a managed Redis) or restarting
/// used to fail the thread's next command with "broken pipe", mark the whole
/// instance down and answer 503 (or decide on local state: a retry of an id
/// already forwarded went to the app again) while Redis was fine. Now the
/// command is sent again on a fresh connection: the retries below are 200
/// `duplicate`, never 503, the app gets nothing more, `/readyz` stays 200.
/// Guards the `Err(e) if is_dropped(&e)` retry in `ClusterClient::run`
/// (`src/cluster/mod.rs`): without it, the first delivery after the kill on
/// each thread gets 503 `cluster_unavailable`.
#[test]
fn a_killed_or_restarted_redis_connection_is_replaced_without_a_503() {
    let mut redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .table(&cluster_table(&redis, ""))
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    warm_up(&gateway, &redis);
    let first = delivery(&gateway, "evt_once").expect("an answer");
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert_eq!(first.json()["ok"], true);
    app.clear();

    let killed = redis.command("CLIENT KILL TYPE normal").unwrap_or_default();
    assert!(killed.starts_with(':'), "CLIENT KILL answered {killed:?}");
    for attempt in 0..6 {
        let retry = delivery(&gateway, "evt_once").expect("an answer");
        assert_eq!(
            (retry.status, retry.json()["status"].clone()),
            (200, serde_json::json!("duplicate")),
            "retry {attempt} after CLIENT KILL: {:?}",
            retry.json()
        );
        assert_eq!(get(gateway.admin, "/readyz").unwrap().status, 200);
    }

    // A restart (kill -9; the append-only file keeps every key): once the
    // ping finds Redis back, every thread's next command is answered.
    redis.restart();
    let back = wait_until(Duration::from_secs(10), || {
        gateway
            .try_metric("hookgate_cluster_up", &[])
            .ok()
            .flatten()
            == Some(1.0)
            && get(gateway.admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert!(back, "not up again; log:\n{}", gateway.log());
    for attempt in 0..6 {
        let retry = delivery(&gateway, "evt_once").expect("an answer");
        assert_eq!(
            (retry.status, retry.json()["status"].clone()),
            (200, serde_json::json!("duplicate")),
            "retry {attempt} after the restart: {:?}",
            retry.json()
        );
    }
    let fresh = delivery(&gateway, "evt_after").expect("an answer");
    assert_eq!(fresh.status, 200, "{:?}", fresh.json());
    assert_eq!(fresh.json()["ok"], true);
    let received: Vec<String> = app
        .received()
        .iter()
        .filter_map(|r| r.header("x-delivery").map(str::to_string))
        .collect();
    assert_eq!(received, ["evt_after"], "forwarded once each");
    let unavailable = gateway.metric(
        "hookgate_requests_total",
        &[("route", "hooks"), ("outcome", "cluster_unavailable")],
    );
    assert_eq!(unavailable.unwrap_or(0.0), 0.0, "no 503");
}

/// A reload that raises a shared rate limit (`2/min` burst 2 to `100/s` burst
/// 100) takes effect at once, as on a single instance: the route's first
/// requests after the reload are admitted. The Redis bucket used to keep the
/// old limit's timing, so every request got 429 `Retry-After: 59` (for up to a
/// day with `N/d`). Guards the `<T>-<burst>` part of `shared_key`
/// (`src/ratelimit.rs`): without it, the requests after the reload get 429.
#[test]
fn a_reload_that_raises_a_shared_rate_limit_admits_at_once() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let setup = |limit: &str| {
        Setup::new()
            .table(&cluster_table(&redis, ""))
            .upstream(&app)
            .route("hooks", "/hooks", "app", &format!("rate_limit = {limit}"))
    };
    let gateway = setup("{ rate = \"2/min\", burst = 2 }").start();
    let statuses: Vec<u16> = (0..3)
        .map(|i| {
            delivery(&gateway, &format!("before-{i}"))
                .expect("an answer")
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    gateway.rewrite(&setup("{ rate = \"100/s\", burst = 100 }").rest());
    let reloaded = gateway.post_reload();
    assert_eq!(reloaded.status, 200, "{:?}", reloaded.json());
    for i in 0..5 {
        let answer = delivery(&gateway, &format!("after-{i}")).expect("an answer");
        assert_eq!(
            answer.status,
            200,
            "request {i} after raising the limit: {:?}, Retry-After {:?}",
            answer.json(),
            answer.header("retry-after")
        );
    }
    assert_eq!(app.count(), 7);
}
