//! Queued delivery on Redis (`[storage] backend = "redis"`, issue 15), end to
//! end: two real gateway processes share one real `redis-server`
//! (`common::redis`). Any instance delivers what another accepted, after a
//! `kill -9` too; each event reaches a healthy upstream once; a Redis that is
//! down gets 503 `storage_unavailable` (never a 202) and the gateways recover
//! without a restart; the events API and CLI of one instance see and replay
//! the other's events.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;

const SECRET: &str = "cluster-queue-secret";

/// The lease of these tests: a killed instance's deliveries are taken over
/// about this long after its last renewal.
const LEASE: &str = "3s";

fn signed_post(to: SocketAddr, body: &[u8]) -> std::io::Result<Response> {
    let signature = github_signature(SECRET, body);
    try_post(
        to,
        "/hooks/gh",
        &[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn body(i: usize) -> Vec<u8> {
    format!("{{\"delivery\":{i}}}").into_bytes()
}

/// A gateway config: `[cluster]` on `redis`, the Redis store, one queued route
/// `gh` to upstream `app` at `app`.
fn config(redis: &RedisServer, app: SocketAddr, retry: &str) -> String {
    config_with(redis, app, retry, &format!("lease = \"{LEASE}\""))
}

/// [`config`] with these `[storage]` lines instead of the lease.
fn config_with(redis: &RedisServer, app: SocketAddr, retry: &str, storage: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nkey_prefix = \"cq:\"\n\
         [storage]\nbackend = \"redis\"\nretention = \"1h\"\n{storage}\n\
         [upstreams.app]\ntargets = [\"{app}\"]\ntimeout = \"10s\"\nhealth = {{ interval = \"100ms\" }}\n\
         [[routes]]\nname = \"gh\"\npath = \"/hooks/gh\"\nupstream = \"app\"\n\
         verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n\
         delivery = \"queued\"\nretry = {retry}\n",
        redis.url()
    )
}

const FAST_RETRY: &str =
    "{ attempts = 1000, backoff = \"50ms\", max_backoff = \"300ms\", max_age = \"1h\" }";

/// The event id of a 202 answer, or None.
fn accepted(response: &Response) -> Option<String> {
    (response.status == 202).then(|| {
        let json = response.json();
        assert_eq!(json["status"], "accepted", "{json}");
        json["event_id"].as_str().expect("event_id").to_string()
    })
}

/// Posts `body` to `gateway` and requires a 202; its event id.
#[track_caller]
fn accept(gateway: &Gateway, body: &[u8]) -> String {
    let response = signed_post(gateway.proxy, body).expect("post");
    accepted(&response).unwrap_or_else(|| {
        panic!(
            "expected 202, got {} {}; log:\n{}",
            response.status,
            String::from_utf8_lossy(&response.body),
            gateway.log()
        )
    })
}

/// Event id -> bodies the upstream received with it.
fn received_by_id(app: &Upstream) -> HashMap<String, Vec<Vec<u8>>> {
    let mut by_id: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for request in app.received() {
        let id = request
            .header("X-Hookgate-Event-Id")
            .unwrap_or("")
            .to_string();
        by_id.entry(id).or_default().push(request.body.clone());
    }
    by_id
}

#[test]
fn an_event_accepted_by_a_killed_instance_is_delivered_by_the_other() {
    let redis = RedisServer::start();
    let down = DeadPort::new();
    let rest = config(&redis, down.addr, FAST_RETRY);
    let mut first = Gateway::start(&rest);
    let second = Gateway::start(&rest);
    let sent: HashMap<String, Vec<u8>> = (0..5)
        .map(|i| (accept(&first, &body(i)), body(i)))
        .collect();
    assert_eq!(sent.len(), 5, "event ids are unique");
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());
    let app = down.come_up("app", Behavior::default());
    // Guards `inner.take_over().await` in delivery::housekeep (and the
    // XAUTOCLAIM in RedisStore::claim): without the take-over the killed
    // instance's deliveries stay in its pending list and nothing arrives.
    let all = wait_until(Duration::from_secs(20), || {
        received_by_id(&app).len() >= sent.len()
    });
    assert!(
        all,
        "instance 2 delivered {} of {}; its log:\n{}",
        app.count(),
        sent.len(),
        second.log()
    );
    let by_id = received_by_id(&app);
    for (id, body) in &sent {
        let bodies = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} not delivered"));
        // Instance 1 is dead: nothing else can deliver it, so exactly once.
        assert_eq!(bodies, &vec![body.clone()], "event {id}");
    }
    assert!(
        second.log().contains("took over queued deliveries"),
        "{}",
        second.log()
    );
}

#[test]
fn two_running_instances_deliver_each_event_once() {
    let redis = RedisServer::start();
    // Each answer takes longer than the lease: a delivery in progress must stay
    // with the instance making it.
    let app = Upstream::with("app", Behavior::delayed(Duration::from_millis(3500)));
    let rest = config(&redis, app.addr, FAST_RETRY);
    let gateways = [Gateway::start(&rest), Gateway::start(&rest)];
    let mut sent: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..20 {
        let body = body(i);
        sent.insert(accept(&gateways[i % 2], &body), body);
    }
    assert_eq!(sent.len(), 20, "event ids are unique across instances");
    let all = wait_until(Duration::from_secs(40), || app.count() >= sent.len());
    assert!(all, "delivered {} of {}", app.count(), sent.len());
    // Guards the lease renewal (`inner.renew()` in `renew_leases`): without it
    // the other instance takes over each entry whose attempt outlived the lease
    // and delivers it again. Longer than two leases: a late duplicate would show.
    let duplicate = wait_until(Duration::from_secs(8), || app.count() > sent.len());
    assert!(
        !duplicate,
        "{} deliveries for {} events",
        app.count(),
        sent.len()
    );
    let by_id = received_by_id(&app);
    for (id, body) in &sent {
        assert_eq!(by_id.get(id), Some(&vec![body.clone()]), "event {id}");
    }
}

#[test]
fn a_down_redis_gets_503_never_202_and_everything_acknowledged_arrives_after_it_returns() {
    let mut redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = Gateway::start(&config(&redis, app.addr, FAST_RETRY));
    let mut acknowledged: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..5 {
        accept(&gateway, &body(i));
        acknowledged.insert(body(i));
    }
    redis.kill();
    // While Redis is down: every answer is 503 storage_unavailable with no
    // event stored. Guards the `Err` arm of `Queue::accept` (a store error is
    // never a 202) and the command deadline in `Shared::run` (no hang: each
    // post returns within the kit's read timeout).
    for i in 100..110 {
        let response = signed_post(gateway.proxy, &body(i)).expect("post while Redis is down");
        assert_eq!(
            response.status,
            503,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["error"], "storage_unavailable");
    }
    // README, metrics: each failed store command is counted under
    // operation="store" (at least the ten refused appends; the background
    // reads and lease renewals fail too). Guards `Shared::count_error`.
    let store_errors = gateway.metric("hookgate_cluster_errors_total", &[("operation", "store")]);
    assert!(
        store_errors.is_some_and(|errors| errors >= 10.0),
        "store errors while Redis was down: {store_errors:?}"
    );
    redis.restart();
    // Recovery without a gateway restart: the connection manager reconnects.
    let mut next = 200;
    let recovered = wait_until(Duration::from_secs(20), || {
        next += 1;
        match signed_post(gateway.proxy, &body(next)) {
            Ok(response) if response.status == 202 => {
                acknowledged.insert(body(next));
                true
            }
            _ => false,
        }
    });
    assert!(
        recovered,
        "no 202 after Redis came back; log:\n{}",
        gateway.log()
    );
    for i in 300..305 {
        accept(&gateway, &body(i));
        acknowledged.insert(body(i));
    }
    let all = wait_until(Duration::from_secs(20), || {
        let got: HashSet<Vec<u8>> = app.received().into_iter().map(|r| r.body).collect();
        acknowledged.is_subset(&got)
    });
    let got: HashSet<Vec<u8>> = app.received().into_iter().map(|r| r.body).collect();
    assert!(
        all,
        "acknowledged but not delivered: {:?}",
        acknowledged
            .difference(&got)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
    let refused: HashSet<Vec<u8>> = (100..110).map(body).collect();
    assert!(
        got.is_disjoint(&refused),
        "an event answered 503 was delivered"
    );
}

fn admin_post(admin: SocketAddr, target: &str) -> Response {
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    send_raw(admin, request.as_bytes()).expect("admin POST")
}

#[test]
fn one_instance_lists_shows_and_replays_the_others_event() {
    let redis = RedisServer::start();
    let down = DeadPort::new();
    // One try: the event is dead after the first connect failure.
    let rest = config(
        &redis,
        down.addr,
        "{ attempts = 1, backoff = \"50ms\", max_backoff = \"50ms\", max_age = \"1h\" }",
    );
    let first = Gateway::start(&rest);
    let second = Gateway::start(&rest);
    let id = accept(&first, &body(7));
    let dead = wait_until(Duration::from_secs(10), || {
        get(second.admin, &format!("/events/{id}"))
            .is_ok_and(|r| r.status == 200 && r.json()["status"] == "dead")
    });
    // The second instance never saw the request: it reads it from Redis by
    // the id the first one answered. Guards `tag: tag_of(&options.key_prefix)`
    // in RedisStore::open (one id space for every instance): a tag of its own
    // per instance, as redb has, makes the id unknown here (404).
    assert!(
        dead,
        "instance 2 does not show {id} as dead; log:\n{}",
        first.log()
    );
    let (code, listed) = second.events_cli(&["list", "--status", "dead"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains(&id), "{listed}");
    let app = down.come_up("app", Behavior::default());
    // The replay's one try must not meet a health check that has not seen
    // the upstream come up yet.
    let healthy = wait_until(Duration::from_secs(10), || {
        second.metric("hookgate_upstream_targets_healthy", &[("upstream", "app")]) == Some(1.0)
    });
    assert!(healthy, "{}", second.log());
    let replayed = admin_post(second.admin, &format!("/events/{id}/replay"));
    assert_eq!(
        replayed.status,
        200,
        "{}",
        String::from_utf8_lossy(&replayed.body)
    );
    assert_eq!(replayed.json()["deliveries"], 1);
    let delivered = wait_until(Duration::from_secs(10), || app.count() >= 1);
    assert!(
        delivered,
        "the replay was not delivered; log:\n{}",
        second.log()
    );
    let request = &app.received()[0];
    assert_eq!(request.body, body(7));
    assert_eq!(request.header("X-Hookgate-Event-Id"), Some(id.as_str()));
}

#[test]
fn the_redis_backend_without_a_cluster_table_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[storage]\nbackend = \"redis\"\n\n\
         [upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n\n\
         [[routes]]\nname = \"gh\"\npath = \"/hooks/gh\"\nupstream = \"app\"\ndelivery = \"queued\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    // Guards the `storage.backend` problem in config::compile.
    let line = stderr
        .lines()
        .find(|l| l.contains("test.toml:5: storage.backend"));
    assert!(line.is_some_and(|l| l.contains("[cluster]")), "{stderr}");
}

#[test]
fn a_full_redis_store_answers_503_with_retry_after_and_keeps_what_it_acknowledged() {
    let redis = RedisServer::start();
    let down = DeadPort::new();
    let gateway = Gateway::start(&config_with(
        &redis,
        down.addr,
        FAST_RETRY,
        &format!("lease = \"{LEASE}\"\nmax_bytes = \"4KiB\""),
    ));
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let body = format!("{{\"delivery\":{i},\"pad\":\"{}\"}}", "p".repeat(200)).into_bytes();
        let response = signed_post(gateway.proxy, &body).expect("post");
        if response.status == 202 {
            acknowledged.push(body);
            continue;
        }
        refused = Some(response);
        break;
    }
    // Guards the max_bytes check at the top of the APPEND script: without it
    // all 100 are stored and acknowledged.
    let refused = refused.expect("a 4 KiB store refuses before 100 events of 200+ bytes");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "storage_unavailable");
    assert!(
        refused.header("Retry-After").is_some(),
        "{:?}",
        refused.header("Retry-After")
    );
    assert!(!acknowledged.is_empty());
    let app = down.come_up("app", Behavior::default());
    let all = wait_until(Duration::from_secs(20), || {
        app.count() >= acknowledged.len()
    });
    assert!(all, "delivered {} of {}", app.count(), acknowledged.len());
    let got: HashSet<Vec<u8>> = app.received().into_iter().map(|r| r.body).collect();
    for body in &acknowledged {
        assert!(got.contains(body), "{}", String::from_utf8_lossy(body));
    }
}

/// Redis itself full (`maxmemory` with `noeviction`) below `max_bytes`: 503
/// with `Retry-After` too, counted as a full store, never a 202. Guards the
/// `OOM` arm of `RedisStore::run`.
#[test]
fn a_redis_out_of_memory_answers_503_with_retry_after() {
    let redis = RedisServer::start();
    assert!(redis
        .command("CONFIG SET maxmemory 3mb")
        .is_some_and(|r| r.starts_with("+OK")));
    let down = DeadPort::new();
    let gateway = Gateway::start(&config_with(
        &redis,
        down.addr,
        FAST_RETRY,
        &format!("lease = \"{LEASE}\""),
    ));
    let mut refused = None;
    for i in 0..400 {
        let body = format!("{{\"delivery\":{i},\"pad\":\"{}\"}}", "p".repeat(20_000)).into_bytes();
        let response = signed_post(gateway.proxy, &body).expect("post");
        if response.status != 202 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a 3 MB Redis refuses before 400 events of 20 KB");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "storage_unavailable");
    assert_eq!(refused.header("Retry-After"), Some("60"));
    gateway.assert_metric("hookgate_store_errors_total", &[("kind", "full")], 1.0);
}

#[test]
fn weak_redis_durability_settings_are_warned_about_at_start() {
    let redis = RedisServer::start();
    assert!(redis
        .command("CONFIG SET appendfsync everysec")
        .is_some_and(|r| r.starts_with("+OK")));
    let app = Upstream::start("app");
    let gateway = Gateway::start(&config(&redis, app.addr, FAST_RETRY));
    // Guards `check_settings` in `renew_leases` (RedisStore): the operator
    // learns at start that up to 1 s of acknowledged events is at risk.
    let warned = wait_until(Duration::from_secs(10), || {
        gateway.log().contains("appendfsync is everysec")
    });
    assert!(warned, "{}", gateway.log());
    assert!(
        !gateway.log().contains("maxmemory-policy is"),
        "{}",
        gateway.log()
    );
}

#[test]
fn a_clean_stop_hands_its_pending_deliveries_over_well_before_the_lease() {
    let redis = RedisServer::start();
    let down = DeadPort::new();
    // A lease far longer than the wait below: only a release moves them in time.
    let rest = config_with(&redis, down.addr, FAST_RETRY, "lease = \"60s\"");
    let mut first = Gateway::start(&rest);
    let second = Gateway::start(&rest);
    let sent: HashMap<String, Vec<u8>> = (0..3)
        .map(|i| (accept(&first, &body(i)), body(i)))
        .collect();
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    let app = down.come_up("app", Behavior::default());
    // Guards the XCLAIM … IDLE in RedisStore::sync (called by the clean stop):
    // without it the deliveries wait out the 60 s lease.
    let all = wait_until(Duration::from_secs(20), || {
        received_by_id(&app).len() >= sent.len()
    });
    assert!(
        all,
        "delivered {} of {}; log of the stopped one:\n{}\nlog of the other:\n{}",
        app.count(),
        sent.len(),
        first.log(),
        second.log()
    );
    let by_id = received_by_id(&app);
    for (id, body) in &sent {
        assert_eq!(by_id.get(id), Some(&vec![body.clone()]), "event {id}");
    }
}

/// The clients connected to `redis`, other than the one asking.
fn redis_clients(redis: &RedisServer) -> usize {
    redis
        .command("CLIENT LIST")
        .map_or(0, |list| list.matches("id=").count().saturating_sub(1))
}

/// Redis closing the store's connection (`CLIENT KILL`, the `timeout`
/// setting of a managed Redis, a restart) used to fail the next append with
/// "broken pipe": 503 `storage_unavailable` although Redis was fine. Now the append is
/// sent again on the reconnected connection, and it is idempotent for its
/// token: each delivery right after a kill is 202, reaches the upstream once,
/// byte for byte, and the store holds one event per delivery. Guards the
/// `Err(error) if crate::cluster::is_dropped(&error)` retry in `Shared::run`
/// (src/delivery/redis_store.rs): without it the first delivery gets 503.
#[test]
fn a_killed_store_connection_is_replaced_without_a_503() {
    let mut redis = RedisServer::start();
    let app = Upstream::start("app");
    // A long lease: no renewal, and a take-over check only every 2 s, between
    // a kill and the delivery right after it.
    let rest = config_with(&redis, app.addr, FAST_RETRY, "lease = \"60s\"");
    let gateway = Gateway::start(&rest);
    // The [cluster] ping's connection and the store's (opened at start to
    // read Redis's settings).
    let connected = wait_until(Duration::from_secs(10), || redis_clients(&redis) >= 2);
    assert!(connected, "{} connections to Redis", redis_clients(&redis));

    let mut sent: HashMap<String, Vec<u8>> = HashMap::new();
    // Three kills, then a restart (kill -9; the append-only file keeps every key).
    for i in 0..4 {
        if i < 3 {
            let killed = redis.command("CLIENT KILL TYPE normal").unwrap_or_default();
            assert!(killed.starts_with(':'), "CLIENT KILL answered {killed:?}");
        } else {
            redis.restart();
        }
        let response = signed_post(gateway.proxy, &body(i)).expect("an answer");
        let id = accepted(&response).unwrap_or_else(|| {
            panic!(
                "delivery {i} after CLIENT KILL or restart: {} {}; log:\n{}",
                response.status,
                String::from_utf8_lossy(&response.body),
                gateway.log()
            )
        });
        sent.insert(id, body(i));
        // Delivered (and recorded) before the next kill.
        let delivered = wait_until(Duration::from_secs(10), || app.count() > i);
        assert!(
            delivered,
            "delivery {i} did not arrive; log:\n{}",
            gateway.log()
        );
    }
    let by_id = received_by_id(&app);
    assert_eq!(by_id.len(), sent.len(), "{by_id:?}");
    for (id, body) in &sent {
        assert_eq!(by_id.get(id), Some(&vec![body.clone()]), "event {id}");
    }
    let listed = get(gateway.admin, "/events?limit=100").expect("GET /events");
    assert_eq!(
        listed.status,
        200,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    let mut stored: Vec<String> = listed.json()["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["id"].as_str().unwrap_or_default().to_string())
        .collect();
    stored.sort();
    let mut expected: Vec<String> = sent.keys().cloned().collect();
    expected.sort();
    assert_eq!(stored, expected, "one stored event per delivery");
    gateway.assert_requests("gh", "storage_unavailable", 0.0);
}
