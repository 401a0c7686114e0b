//! `[cluster] sentinel` (issue 15) end to end: a real master, replica and
//! Sentinel (`common::redis`, on loopback), a real gateway that finds the
//! master through the Sentinel, and a `kill -9` of the master. After the
//! Sentinel promotes the replica, the same gateway (no restart) dedupes,
//! rate-limits and queues through the new master. Also the config errors of
//! `sentinel` and `tls`, with file, line and key, and no password shown.
//!
//! What is guaranteed across a failover: what the replica had. Replication
//! is asynchronous, so each test makes the master wait for the replica
//! (`WAIT 1`) before killing it; without that, the last writes (a dedupe id,
//! a rate-limit step, a queued event) may be lost with the master.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;

const NAME: &str = "mymaster";
const SENTINEL_PASSWORD: &str = "Sentinel-Pw-7d1e";
const SECRET: &str = "sentinel-queue-secret";

fn delivery(to: SocketAddr, path: &str, id: &str, body: &[u8]) -> std::io::Result<Response> {
    try_post(
        to,
        path,
        &[("X-Delivery", id), ("Content-Type", "application/json")],
        body,
    )
}

fn queued(to: SocketAddr, body: &[u8]) -> std::io::Result<Response> {
    let signature = github_signature(SECRET, body);
    try_post(
        to,
        "/queued",
        &[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// The gateway's config: `[cluster] sentinel` on `sentinel`, the Redis store,
/// a deduped route, a rate-limited route (3 per hour) and a queued route.
fn setup(sentinel: &RedisServer, app: &Upstream) -> Setup {
    std::env::set_var("HOOKGATE_TEST_SENTINEL_PASSWORD", SENTINEL_PASSWORD);
    Setup::new()
        .table(&format!(
            "[cluster]\nsentinel = {{ master = \"{NAME}\", nodes = [\"{}\"], password = \"${{HOOKGATE_TEST_SENTINEL_PASSWORD}}\" }}\n\
             key_prefix = \"fo:\"\n\
             [storage]\nbackend = \"redis\"\nlease = \"3s\"\nretention = \"1h\"\n",
            sentinel.addr
        ))
        .upstream(app)
        .route("hooks", "/hooks", &app.name, "dedupe = { key = \"header:X-Delivery\" }")
        .route("limited", "/limited", &app.name, "rate_limit = { rate = \"3/h\" }")
        .route(
            "queued",
            "/queued",
            &app.name,
            &format!(
                "verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n\
                 delivery = \"queued\"\n\
                 retry = {{ attempts = 100, backoff = \"50ms\", max_backoff = \"300ms\", max_age = \"1h\" }}"
            ),
        )
}

/// Bodies the upstream received on `path`.
fn received_on(app: &Upstream, path: &str) -> Vec<Vec<u8>> {
    app.received()
        .into_iter()
        .filter(|r| r.target == path)
        .map(|r| r.body)
        .collect()
}

/// A failover under a running gateway: it finds the new master on its own.
/// Guards `self.link.lookup().await` after a failed ping in
/// `ClusterClient::ping` (`src/cluster/mod.rs`): without it the gateway keeps
/// pinging the dead master, stays down and answers 503 `cluster_unavailable`
/// until the poll below gives up. The queued route's recovery guards the
/// `self.link.suspect()` calls in the store's `Shared::run`
/// (`src/delivery/redis_store.rs`).
#[test]
fn after_a_failover_the_same_gateway_works_through_the_new_master() {
    let mut master = RedisServer::start();
    let replica = RedisServer::replica_of(&master);
    let sentinel = RedisServer::sentinel(&master, NAME, Some(SENTINEL_PASSWORD));
    // The Sentinel learns the replica from the master's INFO.
    let knows_replica = wait_until(Duration::from_secs(15), || {
        sentinel
            .request(&[&format!("SENTINEL REPLICAS {NAME}")])
            .is_some_and(|r| r[0].contains(&replica.addr.port().to_string()))
    });
    assert!(knows_replica, "sentinel log:\n{}", sentinel.log());
    let app = Upstream::start("app");
    let gateway = setup(&sentinel, &app).start();
    gateway.assert_metric("hookgate_cluster_up", &[], 1.0);

    // Before: dedupe, two of three rate-limit steps, one queued event.
    let first = delivery(gateway.proxy, "/hooks", "evt_before", b"{\"n\":1}").unwrap();
    assert_eq!(first.status, 200, "{:?}", first.json());
    let retry = delivery(gateway.proxy, "/hooks", "evt_before", b"{\"n\":1}").unwrap();
    assert_eq!(retry.json()["status"], "duplicate");
    for i in 0..2 {
        let answer = delivery(gateway.proxy, "/limited", &format!("l{i}"), b"{}").unwrap();
        assert_eq!(answer.status, 200);
    }
    let answer = queued(gateway.proxy, b"{\"q\":1}").unwrap();
    assert_eq!(answer.status, 202, "{:?}", answer.json());
    assert!(wait_until(Duration::from_secs(10), || {
        received_on(&app, "/queued").len() == 1
    }));
    let ping_errors = gateway
        .metric("hookgate_cluster_errors_total", &[("operation", "ping")])
        .unwrap_or(0.0);
    master.wait_for_replica();

    master.kill();
    let promoted = wait_until(Duration::from_secs(30), || {
        sentinel.master_port(NAME) == Some(replica.addr.port())
    });
    assert!(promoted, "no failover; sentinel log:\n{}", sentinel.log());

    // The same id, retried until the gateway answers something else than
    // 503 cluster_unavailable: `duplicate`, from the new master's copy.
    let mut saw_down = false;
    let mut last = None;
    let moved = wait_until(Duration::from_secs(30), || {
        saw_down |= gateway.metric("hookgate_cluster_up", &[]) == Some(0.0);
        last = delivery(gateway.proxy, "/hooks", "evt_before", b"{\"n\":1}")
            .ok()
            .map(|r| (r.status, r.json()));
        last.as_ref().is_some_and(|(status, _)| *status != 503)
    });
    assert!(moved, "last answer {last:?}; log:\n{}", gateway.log());
    let (status, json) = last.unwrap();
    assert_eq!(
        (status, &json["status"]),
        (200, &"duplicate".into()),
        "{json}"
    );
    assert_eq!(
        received_on(&app, "/hooks").len(),
        1,
        "forwarded once in all"
    );
    gateway.assert_metric("hookgate_cluster_up", &[], 1.0);
    // The ping failed while the master was gone (hookgate_cluster_up was 0
    // then; a poll may miss that window, the counter cannot).
    assert!(
        gateway
            .metric("hookgate_cluster_errors_total", &[("operation", "ping")])
            .unwrap_or(0.0)
            > ping_errors,
        "saw hookgate_cluster_up 0: {saw_down}"
    );
    assert!(
        gateway.log().contains("the Sentinels name a new master"),
        "{}",
        gateway.log()
    );

    // A new id is deduped through the new master.
    let fresh = delivery(gateway.proxy, "/hooks", "evt_after", b"{\"n\":2}").unwrap();
    assert_eq!(fresh.status, 200);
    let again = delivery(gateway.proxy, "/hooks", "evt_after", b"{\"n\":2}").unwrap();
    assert_eq!(again.json()["status"], "duplicate");
    // The limit continues where the old master left it: one step left of 3.
    let statuses: Vec<u16> = (0..3)
        .map(|i| {
            delivery(gateway.proxy, "/limited", &format!("m{i}"), b"{}")
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 429, 429]);
    // The queue: accepted (once its store found the master) and delivered.
    let mut accepted = None;
    let took = wait_until(Duration::from_secs(20), || {
        accepted = queued(gateway.proxy, b"{\"q\":2}").ok().map(|r| r.status);
        accepted == Some(202)
    });
    assert!(took, "last answer {accepted:?}; log:\n{}", gateway.log());
    let delivered = wait_until(Duration::from_secs(20), || {
        received_on(&app, "/queued").len() >= 2
    });
    assert!(delivered, "log:\n{}", gateway.log());
    assert_eq!(received_on(&app, "/queued")[1], b"{\"q\":2}");
    assert!(
        !gateway.log().contains(SENTINEL_PASSWORD),
        "the Sentinel password is logged"
    );
}

/// A Sentinel that names a replica (ROLE `slave`) as the master: the gateway
/// does not write there; it is not ready and answers 503
/// `cluster_unavailable`. Guards the two ROLE checks together: the lookup's
/// in `Sentinels::master` (`src/cluster/sentinel.rs`) and the ping's in
/// `ClusterClient::ping_once` (`src/cluster/mod.rs`); with both removed the
/// test is red (each alone keeps the replica out).
#[test]
fn a_replica_named_as_master_is_refused() {
    let master = RedisServer::start();
    let replica = RedisServer::replica_of(&master);
    // A Sentinel told that the replica is the master: it corrects itself only
    // after a while; until then, the gateway must not write to the replica.
    let sentinel = RedisServer::sentinel(&replica, NAME, None);
    std::env::set_var("HOOKGATE_TEST_SENTINEL_PASSWORD", SENTINEL_PASSWORD);
    let app = Upstream::start("app");
    let gateway = Gateway::spawn(
        "",
        &Setup::new()
            .table(&format!(
                "[cluster]\nsentinel = {{ master = \"{NAME}\", nodes = [\"{}\"] }}\n",
                sentinel.addr
            ))
            .upstream(&app)
            .route(
                "hooks",
                "/hooks",
                "app",
                "dedupe = { key = \"header:X-Delivery\" }",
            )
            .rest(),
    );
    let said = wait_until(Duration::from_secs(10), || {
        let log = gateway.log();
        log.contains("answers ROLE") && log.contains("slave")
    });
    assert!(said, "log:\n{}", gateway.log());
    let mut answer = None;
    let answered = wait_until(Duration::from_secs(10), || {
        answer = delivery(gateway.proxy, "/hooks", "x", b"{}").ok();
        answer.is_some()
    });
    assert!(answered, "log:\n{}", gateway.log());
    let answer = answer.unwrap();
    assert_eq!(answer.status, 503, "{:?}", answer.json());
    assert_eq!(answer.json()["error"], "cluster_unavailable");
    assert_eq!(app.count(), 0);
    // The admin listener may start after the proxy's: poll until it answers.
    let mut ready = None;
    wait_until(Duration::from_secs(10), || {
        ready = get(gateway.admin, "/readyz").ok().map(|r| r.status);
        ready.is_some()
    });
    assert_eq!(ready, Some(503));
}

fn check(text: &str) -> (i32, String) {
    let (code, stdout, stderr) = check_config(text);
    (code, format!("{stdout}{stderr}"))
}

const REST: &str = "[upstreams.app]\ntargets = [\"127.0.0.1:9000\"]\n\
                    [[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nupstream = \"app\"\n";

/// Each wrong `[cluster]` is refused at load with the file, the line and the
/// key; the Sentinel password shows in none of it. Guards the
/// `(Some(_), Some(_))`, `(None, None)` and empty-`nodes` checks of
/// `ClusterFile::compile` / `compile_sentinel` and the PEM parse of
/// `compile_tls` (`src/config/cluster.rs`).
#[test]
fn sentinel_and_tls_config_errors_name_file_line_and_key() {
    std::env::set_var("HOOKGATE_TEST_SENTINEL_PASSWORD", SENTINEL_PASSWORD);
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "not a certificate\n").unwrap();
    let cases = [
        (
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nsentinel = { master = \"m\", nodes = [\"127.0.0.1:26379\"], password = \"${HOOKGATE_TEST_SENTINEL_PASSWORD}\" }\n",
            "test.toml:3: cluster.sentinel",
            "not both",
        ),
        (
            "[cluster]\nkey_prefix = \"x:\"\n",
            "test.toml:1: cluster.redis",
            "is missing",
        ),
        (
            "[cluster]\nsentinel = { master = \"m\", nodes = [], password = \"${HOOKGATE_TEST_SENTINEL_PASSWORD}\" }\n",
            "test.toml:2: cluster.sentinel.nodes",
            "is empty",
        ),
        (
            &format!(
                "[cluster]\nredis = \"rediss://127.0.0.1:6380\"\n\ntls = {{ ca = \"{}\" }}\n",
                junk.path().display()
            ),
            "test.toml:4: cluster.tls.ca",
            "holds no PEM certificate",
        ),
        (
            "[cluster]\nredis = \"rediss://127.0.0.1:6380\"\ntls = { ca = \"no-such-ca.pem\" }\n",
            "test.toml:3: cluster.tls.ca",
            "no-such-ca.pem",
        ),
    ];
    for (cluster, location, message) in cases {
        let (code, output) = check(&format!("{cluster}{REST}"));
        assert_eq!(code, 78, "{output}");
        let line = output.lines().find(|l| l.contains(location));
        assert!(
            line.is_some_and(|l| l.contains(message)),
            "expected {location:?} with {message:?} in:\n{output}"
        );
        assert!(!output.contains(SENTINEL_PASSWORD), "{output}");
    }
    let (code, output) = check(&format!(
        "[cluster]\nsentinel = {{ master = \"m\", nodes = [\"127.0.0.1:26379\"], password = \"${{HOOKGATE_TEST_SENTINEL_PASSWORD}}\" }}\n{REST}"
    ));
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(
            "sentinel master \"m\" via 127.0.0.1:26379 (db 0, sentinel password [redacted])"
        ),
        "{output}"
    );
    assert!(!output.contains(SENTINEL_PASSWORD), "{output}");
}
