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

/// A gateway on `redis` with route `hooks` deduped by `X-Delivery` to `app`,
/// every proxy thread already holding its Redis connection.
fn deduped_gateway(redis: &RedisServer, app: &Upstream) -> Gateway {
    let gateway = Setup::new()
        .table(&cluster_table(redis, ""))
        .upstream(app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    warm_up(&gateway, redis);
    gateway
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
    let gateway = deduped_gateway(&redis, &app);
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

// ---------------------------------------------------------------- a store answer lost

/// Which way [`DelayProxy`] holds bytes back.
#[derive(Clone, Copy)]
enum Hold {
    /// Redis's next answer on the connection that sent the marker: Redis has
    /// run the command, the gateway hears of it late.
    Answer,
    /// The bytes that carry the marker: Redis runs the command late.
    Request,
}

/// A TCP proxy on 127.0.0.1 in front of Redis that, the first time a client
/// sends `marker`, holds back one direction of that connection for `delay`.
/// Its threads end with their connections; the accept loop when it is dropped.
struct DelayProxy {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fired: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DelayProxy {
    fn start(
        to: std::net::SocketAddr,
        marker: &'static [u8],
        hold: Hold,
        delay: Duration,
    ) -> DelayProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicUsize::new(0));
        let (stopped, fires) = (stop.clone(), fired.clone());
        std::thread::spawn(move || {
            // Bounded: ends when the proxy is dropped, or after 5 minutes.
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while !stopped.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                // Set by the client side when the marker passed, read by the
                // side that holds back.
                let marked = Arc::new(AtomicBool::new(false));
                let pump = |mut from: std::net::TcpStream,
                            mut into: std::net::TcpStream,
                            upstream: bool,
                            marked: Arc<AtomicBool>,
                            fires: Arc<AtomicUsize>| {
                    move || {
                        let mut buffer = vec![0u8; 65536];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let chunk = &buffer[..n];
                            if upstream
                                && chunk.windows(marker.len()).any(|w| w == marker)
                                && fires
                                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                                    .is_ok()
                            {
                                match hold {
                                    Hold::Request => std::thread::sleep(delay),
                                    Hold::Answer => marked.store(true, Ordering::Release),
                                }
                            }
                            if !upstream && marked.swap(false, Ordering::AcqRel) {
                                std::thread::sleep(delay);
                            }
                            if into.write_all(chunk).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    }
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(pump(client, server, true, marked.clone(), fires.clone()));
                std::thread::spawn(pump(s2, c2, false, marked, fires.clone()));
            }
        });
        DelayProxy { addr, stop, fired }
    }

    fn fired(&self) -> usize {
        self.fired.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A gateway whose `[cluster]` (dedupe claims and the Redis store) reaches
/// `redis` through `proxy`: one queued, deduped route `/q` to `app`.
fn queued_gateway(proxy: &DelayProxy, app: &Upstream) -> Gateway {
    let table = format!(
        "[cluster]\nredis = \"redis://{}/0\"\ncommand_timeout = \"250ms\"\n\
         [storage]\nbackend = \"redis\"\nretention = \"1h\"\nlease = \"2s\"\n",
        proxy.addr
    );
    let gateway = Setup::new()
        .table(&table)
        .upstream(app)
        .route(
            "q",
            "/q",
            "app",
            &format!(
                "delivery = \"queued\"\n{DEDUPE}\nretry = {{ attempts = 5, backoff = \"100ms\" }}"
            ),
        )
        .start();
    // Loads the store's scripts, so the marked append below is one command.
    let warm = try_post(gateway.proxy, "/q", &[("X-Delivery", "warm-up")], b"{}");
    assert_eq!(warm.map(|r| r.status).ok(), Some(202));
    gateway
}

fn queued(gateway: &Gateway, id: &str, body: &[u8]) -> Response {
    try_post(
        gateway.proxy,
        "/q",
        &[("X-Delivery", id), ("Content-Type", "application/json")],
        body,
    )
    .expect("an answer")
}

/// A queued, deduped gateway whose Redis traffic passes a proxy that holds
/// back, by `delay`, the first request carrying `DELAYME` (or its answer),
/// and the first delivery of `id` through it, answered 503
/// `storage_unavailable`.
struct HeldAppend {
    _redis: RedisServer,
    proxy: DelayProxy,
    app: Upstream,
    gateway: Gateway,
    body: Vec<u8>,
}

fn held_append(hold: Hold, delay: Duration, id: &str) -> HeldAppend {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.addr, b"DELAYME", hold, delay);
    let app = Upstream::start("app");
    let gateway = queued_gateway(&proxy, &app);
    let body = format!("{{\"id\":\"{id}\",\"note\":\"DELAYME\"}}").into_bytes();
    let first = queued(&gateway, id, &body);
    assert_eq!(first.status, 503, "{:?}", first.json());
    assert_eq!(first.json()["error"], "storage_unavailable");
    HeldAppend {
        _redis: redis,
        proxy,
        app,
        gateway,
        body,
    }
}

/// How many events the upstream got with `marker` in the body, once the
/// delivery of the first has arrived (polled: an event whose append timed out
/// is not scheduled by this instance; it is taken over once its 2 s lease
/// passed) and a moment later.
fn deliveries_with(app: &Upstream, marker: &[u8]) -> usize {
    let count = || {
        app.received()
            .iter()
            .filter(|r| r.body.windows(marker.len()).any(|w| w == marker))
            .count()
    };
    wait_until(Duration::from_secs(15), || count() >= 1);
    // A second event, if one was stored, is due at once too.
    std::thread::sleep(Duration::from_millis(500));
    count()
}

/// Redis ran the append of a queued, deduped delivery, but its answer came
/// after `command_timeout`: the sender got 503 `storage_unavailable` and
/// retried. The retry used to be stored as a second event (the 503 released
/// the dedupe claim), so the app got the delivery twice. The append script
/// now remembers the id as forwarded in the same step as it stores the
/// event: the retries are 200 `duplicate` and the app gets it once. Guards
/// the `SET KEYS[5]` in the `APPEND` script (`src/delivery/redis_store.rs`):
/// without it, the retry is answered 202 (or 409) and stored again.
#[test]
fn a_retry_after_a_lost_store_answer_is_a_duplicate() {
    let held = held_append(Hold::Answer, Duration::from_millis(600), "evt_lost");
    let HeldAppend {
        proxy,
        app,
        gateway,
        body,
        ..
    } = &held;
    assert_eq!(proxy.fired(), 1, "the append's answer was held back");
    for attempt in 0..3 {
        let retry = queued(gateway, "evt_lost", body);
        assert_eq!(
            (retry.status, retry.json()["status"].clone()),
            (200, serde_json::json!("duplicate")),
            "retry {attempt}: {:?}",
            retry.json()
        );
    }
    let delivered = deliveries_with(app, b"DELAYME");
    assert_eq!(delivered, 1, "delivered once; log:\n{}", gateway.log());
}

/// The append of a queued, deduped delivery reached Redis late (after
/// `command_timeout`, and after the 503 went out): releasing the claim on the
/// 503 let the sender's retry through as a second event before the first one
/// landed. The claim is now kept after an append whose outcome is unknown:
/// the retry gets 409 `duplicate_in_flight` until the late append lands (and
/// makes the id "forwarded"), then 200 `duplicate`; never a second 202.
/// Guards `claim.keep()` in the `Err` arm of `accept_queued`
/// (`src/proxy/queued.rs`): without it, the claim is released on the 503 and
/// the retries are let through to the store (answered 503 behind the late
/// append, or 202: a second event) instead of 409 then `duplicate`.
#[test]
fn a_retry_while_a_late_append_is_on_its_way_is_held_off() {
    let held = held_append(Hold::Request, Duration::from_millis(800), "evt_late");
    let HeldAppend {
        app, gateway, body, ..
    } = &held;
    let retry = queued(gateway, "evt_late", body);
    assert_eq!(retry.status, 409, "{:?}", retry.json());
    assert_eq!(retry.json()["error"], "duplicate_in_flight");
    let mut answers = Vec::new();
    let settled = wait_until(Duration::from_secs(10), || {
        let answer = queued(gateway, "evt_late", body);
        answers.push(answer.status);
        answer.status != 409
    });
    assert!(settled, "still in flight: {answers:?}");
    let last = queued(gateway, "evt_late", body);
    assert_eq!(
        (last.status, last.json()["status"].clone()),
        (200, serde_json::json!("duplicate")),
        "after the late append landed ({answers:?}): {:?}",
        last.json()
    );
    assert!(!answers.contains(&202), "stored twice: {answers:?}");
    let delivered = deliveries_with(app, b"DELAYME");
    assert_eq!(delivered, 1, "delivered once; log:\n{}", gateway.log());
}

// ---------------------------------------------------------------- max_keys

/// The rate-limit keys of route `route` in `redis`, counted with `SCAN`
/// (bounded: at most 100 rounds).
fn rate_limit_keys(redis: &RedisServer, route: &str) -> usize {
    let pattern = format!("hookgate:rl:{route}:*");
    let (mut cursor, mut keys) = ("0".to_string(), 0);
    for _ in 0..100 {
        let reply = redis
            .request(&[&format!("SCAN {cursor} MATCH {pattern} COUNT 1000")])
            .expect("SCAN");
        let mut words = reply[0].split_whitespace();
        cursor = words.next().unwrap_or("0").to_string();
        keys += words.count();
        if cursor == "0" {
            break;
        }
    }
    keys
}

/// `max_keys` bounds the shared buckets of a keyed limit as it bounds the
/// local table: 30 distinct header values against `max_keys = 5` leave at
/// most 6 rate-limit keys in Redis (5 buckets and the overflow bucket), for
/// the hour they would otherwise each live; the sixth new value and later
/// ones share the overflow bucket (one admitted, then 429), while a value
/// that has its own bucket keeps it. Unauthenticated senders used to fill
/// Redis (8,246 keys for an hour from 24,000 requests), and with
/// `maxmemory` + `noeviction` every cluster route then answered 503. Guards
/// the `keyed.shared.admit(bucket, now)` check in `check_shared`
/// (`src/ratelimit.rs`): without it, every new value gets a bucket of its
/// own (30 admitted, 30 keys in Redis).
#[test]
fn max_keys_bounds_the_shared_buckets_in_redis() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .table(&cluster_table(&redis, ""))
        .upstream(&app)
        .route(
            "public",
            "/public",
            "app",
            "rate_limit = { rate = \"1/h\", burst = 1, per = \"header:X-Shop\", max_keys = 5 }",
        )
        .start();
    let shop = |name: &str| {
        try_post(gateway.proxy, "/public", &[("X-Shop", name)], b"{}")
            .expect("an answer")
            .status
    };
    let statuses: Vec<u16> = (0..30).map(|i| shop(&format!("shop-{i}"))).collect();
    assert_eq!(
        &statuses[..6],
        [200; 6],
        "5 own buckets, then the overflow's one token"
    );
    assert!(
        statuses[6..].iter().all(|&s| s == 429),
        "the overflow bucket is spent: {statuses:?}"
    );
    assert_eq!(shop("shop-0"), 429, "shop-0's own bucket is spent");
    let keys = rate_limit_keys(&redis, "public");
    assert!(
        keys <= 6,
        "{keys} rate-limit keys in Redis for max_keys = 5"
    );
    assert_eq!(keys, 6);
    assert_eq!(app.count(), 6);
}

// ---------------------------------------------------------------- credentials

/// A password written without its leading `:` (`redis://PASSWORD@host`) is
/// parsed as a user name, and was printed verbatim by `hookgate check`, the
/// log and `/config`. A user name is now shown as `***`, with a warning that
/// says what was probably meant; and a `${ENV}` reference inside the URL (not
/// expanded: Redis would get the text itself) is refused at load, instead of
/// a warning that a password was written in the file. Guards the
/// `(Some(_), false) => "***@"` arm of `redact` (`src/config/cluster.rs`):
/// with the user name printed, the secret shows in all three.
#[test]
fn a_password_in_the_user_name_position_never_shows() {
    const SECRET: &str = "Hunter2Secret";
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let url = format!("redis://{SECRET}@{}/0", redis.addr);
    let setup = Setup::new()
        .table(&format!("[cluster]\nredis = \"{url}\"\n"))
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE);
    let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{}", setup.rest());
    let (code, stdout, stderr) = check_config(&text);
    let checked = format!("{stdout}{stderr}");
    assert_eq!(code, 0, "{checked}");
    assert!(!checked.contains(SECRET), "check shows it:\n{checked}");
    assert!(
        checked.contains(&format!("redis://***@{}/0", redis.addr)),
        "{checked}"
    );
    assert!(checked.contains("user name and no password"), "{checked}");

    let gateway = setup.start();
    let forwarded = delivery(&gateway, "evt_1").expect("an answer");
    assert_eq!(
        forwarded.status,
        200,
        "Redis in use: {:?}",
        forwarded.json()
    );
    let config = get(gateway.admin, "/config").expect("/config");
    let config = String::from_utf8_lossy(&config.body).into_owned();
    assert!(config.contains("***@"), "{config}");
    for (place, text) in [("/config", config), ("the log", gateway.log())] {
        assert!(!text.contains(SECRET), "{place} shows it:\n{text}");
    }

    // `${…}` inside the URL is not expanded: refused, not "written in the file".
    let inline = text.replace(&url, &format!("redis://:${{REDIS_PW}}@{}/0", redis.addr));
    let (code, stdout, stderr) = check_config(&inline);
    let checked = format!("{stdout}{stderr}");
    assert_ne!(code, 0, "{checked}");
    assert!(checked.contains("cluster.redis"), "{checked}");
    assert!(checked.contains("not expanded"), "{checked}");
    assert!(!checked.contains("written in the config file"), "{checked}");
}

/// A Redis that answers but refuses writes (`maxmemory` reached under
/// `noeviction`) is reachable: `/readyz` stays 200, yet a deduped route
/// cannot claim its id and answers 503 `cluster_unavailable` (fail closed),
/// and recovers as soon as Redis accepts writes again (README, "Running
/// several instances"). Guards `Ok(Err(unavailable)) => return
/// Err(cluster_unavailable(..))` after `admit_clustered` in
/// `Gateway::verify_and_admit` (`src/proxy/mod.rs`): forwarding without a
/// claim would be a 200 here.
#[test]
fn a_redis_that_refuses_writes_is_a_503_while_ready_stays_200() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = deduped_gateway(&redis, &app);
    app.clear();
    redis
        .command("CONFIG SET maxmemory-policy noeviction")
        .expect("CONFIG SET");
    redis.command("CONFIG SET maxmemory 1").expect("CONFIG SET");
    let refused = delivery(&gateway, "evt_oom").expect("an answer");
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.json()["error"], "cluster_unavailable");
    assert_eq!(app.count(), 0, "forwarded without a claim");
    assert_eq!(get(gateway.admin, "/readyz").unwrap().status, 200);
    assert_eq!(
        gateway.metric("hookgate_cluster_up", &[]),
        Some(1.0),
        "Redis answers: it is up"
    );
    redis.command("CONFIG SET maxmemory 0").expect("CONFIG SET");
    let accepted = delivery(&gateway, "evt_oom").expect("an answer");
    assert_eq!(accepted.status, 200, "{:?}", accepted.json());
    assert_eq!(app.count(), 1);
}

/// A gateway on `redis` (claim lease 3 s, `extra` in `[cluster]`) with route
/// `hooks` deduped by `X-Delivery` to `app`, warmed up.
fn short_lease_gateway(redis: &RedisServer, app: &Upstream, extra: &str) -> Gateway {
    let gateway = Setup::new()
        .table(&cluster_table(
            redis,
            &format!("claim_lease = \"3s\"\n{extra}"),
        ))
        .upstream_named("app", &[app.addr], "response_timeout = \"2s\"")
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    warm_up(&gateway, redis);
    gateway
}

/// Forwards `id` through `gateway` to `app` (held by `gate`) while Redis
/// refuses writes: the claim got in, the forwarded mark does not, the sender
/// still gets the upstream's 200. Leaves Redis refusing writes.
#[track_caller]
fn forwarded_while_redis_refuses_writes(
    gateway: &Gateway,
    redis: &RedisServer,
    app: &Upstream,
    gate: &Gate,
    id: &str,
) {
    let before = app.count();
    let answer = std::thread::scope(|scope| {
        let sender = scope.spawn(|| delivery(gateway, id));
        let arrived = wait_until(Duration::from_secs(10), || app.count() > before);
        redis
            .command("CONFIG SET maxmemory-policy noeviction")
            .expect("CONFIG SET");
        redis.command("CONFIG SET maxmemory 1").expect("CONFIG SET");
        gate.open();
        assert!(arrived, "the delivery reached the upstream");
        sender.join().expect("sender")
    });
    let answer = answer.expect("an answer");
    assert_eq!(
        answer.status, 200,
        "the upstream's answer: {:?}",
        answer.body
    );
    assert!(
        gateway.wait_log(
            Duration::from_secs(5),
            "could not remember a forwarded delivery id"
        ),
        "the mark failed; log:\n{}",
        gateway.log()
    );
}

/// The forwarded mark of a delivery the app already answered 2xx failed
/// (Redis refused writes, or was paused and flagged down): the sender had its
/// 200, and the claim's token stayed in Redis, so once the lease ended a retry
/// was forwarded again (found by the session-8 hostile pass). Now the mark is
/// sent again in the background until it lands: once Redis takes writes, a
/// retry on another instance is `duplicate`, also after the lease, and the app
/// got the delivery once. Guards the `retry_mark` call in `Claim::confirm`
/// (`src/dedupe.rs`): without it the last retry is forwarded (app count 2).
#[test]
fn a_forwarded_mark_that_failed_is_sent_again_until_it_lands() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let app = Upstream::with("app", Behavior::held(&gate));
    // Open while warming up: each proxy thread opens its Redis connection.
    gate.open();
    let first = short_lease_gateway(&redis, &app, "");
    let second = short_lease_gateway(&redis, &app, "");
    gate.close();
    app.clear();
    forwarded_while_redis_refuses_writes(&first, &redis, &app, &gate, "evt_mark");
    redis.command("CONFIG SET maxmemory 0").expect("CONFIG SET");
    let landed = wait_until(Duration::from_secs(10), || {
        delivery(&second, "evt_mark").is_ok_and(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|answer| answer["status"] == "duplicate")
        })
    });
    assert!(landed, "the retry never became a duplicate");
    // Past the 3 s lease: still a duplicate, never forwarded again.
    std::thread::sleep(Duration::from_millis(3_500));
    let retry = delivery(&second, "evt_mark").expect("an answer");
    assert_eq!(retry.status, 200, "{:?}", retry.json());
    assert_eq!(retry.json()["status"], "duplicate");
    assert_eq!(app.count(), 1, "the app got the delivery twice");
    assert_eq!(
        first.metric("hookgate_cluster_marks_lost_total", &[]),
        Some(0.0)
    );
}

/// With `on_unavailable = "local"`, this instance's own store decides while
/// Redis does not answer, and it knew nothing of ids claimed in Redis: a retry
/// of an id this instance had just forwarded went to the app again (found by
/// the session-8 hostile pass). Now a forwarded id is remembered locally too.
/// Guards the `remember_forwarded` call in `Claim::confirm` (`src/dedupe.rs`).
#[test]
fn with_local_an_instance_remembers_what_it_forwarded_through_redis() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let app = Upstream::with("app", Behavior::held(&gate));
    gate.open();
    let gateway = short_lease_gateway(&redis, &app, "on_unavailable = \"local\"");
    gate.close();
    app.clear();
    forwarded_while_redis_refuses_writes(&gateway, &redis, &app, &gate, "evt_local");
    // Redis still refuses writes: the retry's claim fails and the local store decides.
    let retry = delivery(&gateway, "evt_local").expect("an answer");
    assert_eq!(retry.status, 200, "{:?}", retry.json());
    assert_eq!(retry.json()["status"], "duplicate");
    assert_eq!(app.count(), 1, "the app got the delivery twice");
    redis.command("CONFIG SET maxmemory 0").expect("CONFIG SET");
}
