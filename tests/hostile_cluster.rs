//! Several instances as one (issue 15), attacked: what an operator's bad day
//! does to two real gateways sharing one real `redis-server` on loopback
//! (`common::redis`). Each test names the product line that turns it red.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;

const DEDUPE: &str = "dedupe = { key = \"header:X-Delivery\" }";

fn delivery(gateway: &Gateway, id: &str, body: &[u8]) -> std::io::Result<Response> {
    try_post(
        gateway.proxy,
        "/hooks",
        &[("X-Delivery", id), ("Content-Type", "application/json")],
        body,
    )
}

/// The clients connected to `redis`, other than the one asking.
fn redis_clients(redis: &RedisServer) -> usize {
    redis
        .command("CLIENT LIST")
        .map_or(0, |list| list.matches("id=").count().saturating_sub(1))
}

/// Redis paused (SIGSTOP: a stalled VM, a long fork, a full disk), not
/// killed: the dedupe claim sent just before times out and the sender gets
/// 503 `cluster_unavailable`, but the claim sits in Redis's socket buffer and
/// runs when Redis resumes. Nobody holds it, yet with a 30 s lease it would
/// answer the provider's retry 409 `duplicate_in_flight` on every instance for
/// 30 s. The gateway now sends the claim's release behind it, so the retry
/// right after Redis resumes is forwarded, once. Guards the
/// `cluster.send_behind(...)` release in the `Err(e)` arm of
/// `DedupeStore::admit_clustered` (`src/dedupe.rs`): without it, the retry
/// is 409 until the lease ends and this test sees 409 for its whole 10 s.
#[test]
fn a_claim_that_timed_out_on_a_paused_redis_does_not_block_the_retry() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let cluster = format!(
        "[cluster]\nredis = \"{}\"\nclaim_lease = \"30s\"\n",
        redis.url()
    );
    let setup = Setup::new()
        .table(&cluster)
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE);
    let first = setup.start();
    // Each proxy thread opens its own connection to Redis on its first command,
    // and a connection still being opened sends nothing until Redis answers its
    // handshake: warm up until the ping's and both threads' connections are
    // open, so the claim below is written at once.
    let mut warm_ups = 0;
    let warm = wait_until(Duration::from_secs(10), || {
        warm_ups += 1;
        let _ = delivery(&first, &format!("evt_warm_{warm_ups}"), b"{}");
        redis_clients(&redis) >= 3
    });
    assert!(
        warm,
        "the first gateway has {} connections",
        redis_clients(&redis)
    );
    let second = setup.start();
    app.clear();
    let body = b"{\"id\":\"evt_paused\"}";

    redis.signal("STOP");
    let refused = delivery(&first, "evt_paused", body);
    redis.signal("CONT");
    let refused = refused.expect("an answer while Redis is paused");
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.json()["error"], "cluster_unavailable");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(app.count(), 0, "nothing forwarded while undecided");

    // The provider retries, here on the other instance.
    let mut last = (0, String::new());
    let forwarded = wait_until(Duration::from_secs(10), || {
        last = match delivery(&second, "evt_paused", body) {
            Ok(answer) => (
                answer.status,
                String::from_utf8_lossy(&answer.body).into_owned(),
            ),
            Err(e) => (0, e.to_string()),
        };
        last.0 == 200
    });
    assert!(forwarded, "the retry is still refused: {last:?}");
    assert!(
        wait_until(Duration::from_secs(5), || app.count() == 1),
        "forwarded once"
    );
    assert_eq!(app.received()[0].body, body);
    assert!(
        wait_until(Duration::from_secs(5), || first
            .metric("hookgate_cluster_up", &[])
            == Some(1.0)),
        "the first instance sees Redis again"
    );
    let again = delivery(&first, "evt_paused", body).expect("answer");
    assert_eq!(
        again.json()["status"],
        "duplicate",
        "remembered once forwarded: {again:?}"
    );
    assert_eq!(app.count(), 1);
}
