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
/// runs when Redis resumes. Nobody holds it, yet for its whole lease (65 s
/// here) it answered the provider's retry 409 `duplicate_in_flight` on every
/// instance. The gateway now sends the claim's release behind it, so the retry
/// right after Redis resumes is forwarded, once. Guards the
/// `cluster.send_behind(...)` release in the `Err(e)` arm of
/// `DedupeStore::admit_clustered` (`src/dedupe.rs`): without it, the retry
/// is 409 until the lease ends and this test sees 409 for its whole 10 s.
#[test]
fn a_claim_that_timed_out_on_a_paused_redis_does_not_block_the_retry() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    // No claim_lease: derived, the upstream's 60 s response_timeout + 5 s.
    let cluster = format!("[cluster]\nredis = \"{}\"\n", redis.url());
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

/// An operator shortens `[cluster] claim_lease` (to free the ids of a crashed
/// instance sooner) below an upstream's `response_timeout`: a live instance
/// still waiting for a slow app loses its claim, and the provider's retry on
/// the other instance was forwarded a second time (seen against the real
/// binaries: `claim_lease = "3s"`, an app answering in 5 s, two forwards).
/// Such a config is now refused at load, naming the key and the fix. Guards
/// the `check_claim_lease` call in `config::load` (`src/config/mod.rs`):
/// without it the gateway starts and `hookgate check` says OK.
#[test]
fn a_claim_lease_shorter_than_a_forward_is_refused_at_load() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let config = |lease: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
             [cluster]\nredis = \"{}\"\nclaim_lease = \"{lease}\"\n\
             [upstreams.app]\ntargets = [\"{}\"]\nresponse_timeout = \"10s\"\n\
             [[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nupstream = \"app\"\n{DEDUPE}\n",
            redis.url(),
            app.addr
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hookgate.toml");
    for (lease, ok) in [("3s", false), ("15s", true)] {
        std::fs::write(&path, config(lease)).expect("write config");
        let check = std::process::Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run hookgate check");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(check.status.success(), ok, "claim_lease {lease}: {said}");
        if !ok {
            assert!(said.contains("cluster.claim_lease"), "{said}");
            assert!(said.contains("response_timeout 10s"), "{said}");
            assert!(said.contains("at least 15s"), "{said}");
        }
    }
}
