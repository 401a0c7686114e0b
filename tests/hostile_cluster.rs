//! Several instances as one (issue 15), attacked: what an operator's bad day
//! does to two real gateways sharing one real `redis-server` on loopback
//! (`common::redis`). Each test names the product line that turns it red.

mod common;

use std::time::{Duration, Instant};

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
            assert!(said.contains("at least 10s 250ms"), "{said}");
        }
    }
}

/// A derived claim lease covers the forwarded mark too: with a
/// `command_timeout` (8 s) longer than the 5 s margin, the lease is the
/// upstream's `response_timeout` (2 s) plus the `command_timeout`, 10 s, not
/// 7 s, so a mark that takes its whole `command_timeout` still lands before
/// the claim ends. Read from the claim's `PTTL` while the app holds the
/// forward. Guards `dedupe::claim_lease_margin` (used by `proxy::claim_lease`):
/// with the fixed 5 s margin the `PTTL` is at most 7,000 ms.
#[test]
fn a_derived_claim_lease_covers_a_long_command_timeout() {
    let redis = RedisServer::start();
    let app = Upstream::with("app", Behavior::delayed(Duration::from_secs(3)));
    let gateway = Setup::new()
        .table(&format!(
            "[cluster]\nredis = \"{}\"\ncommand_timeout = \"8s\"\n",
            redis.url()
        ))
        .upstream_named("app", &[app.addr], "response_timeout = \"2s\"")
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    let to = gateway.proxy;
    let held = std::thread::spawn(move || {
        try_post(
            to,
            "/hooks",
            &[
                ("X-Delivery", "evt_lease"),
                ("Content-Type", "application/json"),
            ],
            b"{}",
        )
    });
    assert!(
        wait_until(Duration::from_secs(5), || app.count() == 1),
        "the forward reached the app"
    );
    let keys = redis.request(&["KEYS hookgate:dd:hooks:*"]).expect("KEYS")[0].clone();
    let key = keys.split_whitespace().next().expect("the claim's key");
    let pttl: i64 = redis.request(&[&format!("PTTL {key}")]).expect("PTTL")[0]
        .trim()
        .parse()
        .expect("a PTTL");
    assert!(
        (8_000..=10_000).contains(&pttl),
        "the claim of {key} has {pttl} ms left, not about 10 s"
    );
    let _ = held.join();
}

/// Script calls Redis has run so far (`INFO commandstats`).
fn evalsha_calls(redis: &RedisServer) -> Option<u64> {
    let info = redis.request(&["INFO commandstats"])?.remove(0);
    let after = info.split("cmdstat_evalsha:calls=").nth(1)?;
    after.split(',').next()?.parse().ok()
}

/// Sends deliveries until Redis has `clients` connections (the gateway's
/// ping plus one per proxy thread that has served one), within 10 s.
fn warm_up(gateway: &Gateway, redis: &RedisServer, clients: usize) {
    let mut warm_ups = 0;
    let warm = wait_until(Duration::from_secs(10), || {
        warm_ups += 1;
        let _ = delivery(gateway, &format!("evt_warm_{warm_ups}"), b"{}");
        redis_clients(redis) >= clients
    });
    assert!(warm, "{} connections to Redis", redis_clients(redis));
}

/// One proxy thread, warmed up until its own Redis connection is open (a
/// connection still being opened sends nothing until Redis answers it).
fn one_thread_gateway(redis: &RedisServer, app: &Upstream, cluster_extra: &str) -> Gateway {
    let cluster = format!("[cluster]\nredis = \"{}\"\n{cluster_extra}", redis.url());
    let gateway = Setup::new()
        .server("threads = 1")
        .table(&cluster)
        .upstream(app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    warm_up(&gateway, redis, 2);
    gateway
}

/// Redis stalls (SIGSTOP) with one dedupe batch on its way; the claims of the
/// 20 deliveries that arrive meanwhile, 20 ms apart, wait for it and go to
/// Redis together as the next batch once Redis runs again: 2 script calls for
/// 21 claims, where a batch per event-loop turn made one per delivery (about
/// 20). Guards the group commit in
/// `dedupe::batch::submit` / `drain` (`src/dedupe/batch.rs`): one batch in
/// flight per thread, the next gathered behind it.
#[test]
fn claims_gathered_while_a_batch_is_on_its_way_go_as_one_batch() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let app = Upstream::with("app", Behavior::held(&gate));
    let gateway = one_thread_gateway(&redis, &app, "command_timeout = \"10s\"\n");
    // The warm-up deliveries went through: hold only what follows.
    app.clear();
    let before = evalsha_calls(&redis).expect("INFO commandstats");
    let gateway = &gateway;
    let statuses = std::thread::scope(|scope| {
        redis.signal("STOP");
        let first = scope.spawn(move || delivery(gateway, "evt_first", b"{}").map(|r| r.status));
        std::thread::sleep(Duration::from_millis(300));
        // 20 ms apart: each in an event-loop turn of its own.
        let rest: Vec<_> = (0..20)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(20));
                scope.spawn(move || delivery(gateway, &format!("evt_{i}"), b"{}").map(|r| r.status))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        redis.signal("CONT");
        let all_in = wait_until(Duration::from_secs(10), || app.count() >= 21);
        let claims = evalsha_calls(&redis).expect("INFO commandstats") - before;
        gate.open();
        assert!(all_in, "21 claims granted, {} forwarded", app.count());
        assert!(
            claims <= 2,
            "21 claims in {claims} script calls: not gathered behind the batch in flight"
        );
        std::iter::once(first)
            .chain(rest)
            .map(|sender| sender.join().expect("sender").expect("an answer"))
            .collect::<Vec<_>>()
    });
    assert_eq!(statuses, vec![200; 21]);
    assert_eq!(app.count(), 21, "each delivery forwarded once");
}

/// Redis stalls (SIGSTOP) past `command_timeout` (1 s) with a dedupe batch on
/// its way, and a delivery arrives 500 ms later: its claim waits behind that
/// batch (one batch in flight per thread), and when the batch times out Redis
/// is marked down, so the claim gathered behind it fails at once: 503
/// `cluster_unavailable` (`on_unavailable = "reject"`) 0.5 s after the request,
/// not after a second full `command_timeout` (1.5 s). Guards the
/// `set_up(false)` on a timeout in `ClusterClient::run` (`src/cluster/mod.rs`)
/// that the group commit of `dedupe::batch` relies on.
#[test]
fn a_delivery_behind_a_timed_out_batch_waits_one_command_timeout_at_most() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = one_thread_gateway(
        &redis,
        &app,
        "command_timeout = \"1s\"\non_unavailable = \"reject\"\n",
    );
    app.clear();
    let gateway = &gateway;
    let (first, second) = std::thread::scope(|scope| {
        redis.signal("STOP");
        let first = scope.spawn(move || delivery(gateway, "evt_first", b"{}"));
        std::thread::sleep(Duration::from_millis(500));
        let sent = Instant::now();
        let second = delivery(gateway, "evt_second", b"{}");
        let waited = sent.elapsed();
        let first = first.join().expect("sender");
        redis.signal("CONT");
        (first, second.map(|answer| (answer, waited)))
    });
    let first = first.expect("an answer to the first delivery");
    assert_eq!(first.status, 503, "{:?}", first.json());
    let (second, waited) = second.expect("an answer to the second delivery");
    assert_eq!(second.status, 503, "{:?}", second.json());
    assert_eq!(second.json()["error"], "cluster_unavailable");
    assert!(
        waited < Duration::from_millis(1200),
        "the second delivery waited {waited:?}: more than the batch it queued behind"
    );
    assert_eq!(app.count(), 0, "nothing forwarded while undecided");
}

/// `on_unavailable = "local"` across an outage, on one instance. Two ways it
/// forwarded an id twice (found by a hostile pass): (1) a delivery forwarded on
/// the instance's own state while Redis was paused, retried once Redis was
/// back, was forwarded again (Redis had never heard of it); (2) a delivery
/// whose claim Redis held, still being forwarded when Redis paused, was
/// forwarded a second time by the fallback (the instance's own state had never
/// heard of it). Now a claim granted by Redis is mirrored in flight in the
/// instance's store, and an id that store knows is answered from it (and
/// Redis learns a forwarded one). Guards the `Ok(0) if local` arm of
/// `DedupeStore::admit_clustered` (`src/dedupe.rs`).
#[test]
fn with_local_what_an_instance_decided_during_an_outage_holds_after_it() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let app = Upstream::with("app", Behavior::held(&gate));
    let cluster = format!(
        "[cluster]\nredis = \"{}\"\non_unavailable = \"local\"\ncommand_timeout = \"250ms\"\n",
        redis.url()
    );
    let setup = Setup::new()
        .table(&cluster)
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE);
    let first = setup.start();
    let second = setup.start();
    let up = |gateway: &Gateway, value: f64| {
        wait_until(Duration::from_secs(10), || {
            gateway.metric("hookgate_cluster_up", &[]) == Some(value)
        })
    };
    assert!(up(&first, 1.0) && up(&second, 1.0), "both see Redis");

    // (2) Claimed in Redis and held upstream; Redis pauses; the same id again.
    let held = std::thread::scope(|scope| {
        let held = scope.spawn(|| delivery(&first, "evt_held", b"{\"n\":1}"));
        assert!(
            wait_until(Duration::from_secs(10), || app.count() == 1),
            "the first copy reached the app"
        );
        redis.signal("STOP");
        assert!(up(&first, 0.0), "the instance sees Redis gone");
        let again = delivery(&first, "evt_held", b"{\"n\":1}").expect("an answer");
        assert_eq!(
            again.status,
            409,
            "in flight on this instance: {:?}",
            again.json()
        );
        gate.open();
        held.join().expect("sender")
    });
    assert_eq!(held.expect("an answer").status, 200);
    assert_eq!(app.count(), 1, "forwarded once");

    // (1) Forwarded on the instance's own state while Redis is paused.
    let during = delivery(&first, "evt_outage", b"{\"n\":2}").expect("an answer");
    assert_eq!(during.status, 200, "{:?}", during.json());
    assert_eq!(app.count(), 2);
    redis.signal("CONT");
    assert!(up(&first, 1.0), "the instance sees Redis back");
    let retry = delivery(&first, "evt_outage", b"{\"n\":2}").expect("an answer");
    assert_eq!(
        retry.json()["status"],
        "duplicate",
        "remembered on this instance: {retry:?}"
    );
    // Redis learnt it from that answer: the other instance knows it too.
    let elsewhere = delivery(&second, "evt_outage", b"{\"n\":2}").expect("an answer");
    assert_eq!(elsewhere.json()["status"], "duplicate", "{elsewhere:?}");
    assert_eq!(app.count(), 2, "each id forwarded once");
}

/// A reload cannot change `[cluster]` (Redis is connected at start), so the
/// running `claim_lease` stays. A new file that raises both the lease (15 s →
/// 60 s) and a deduped upstream's `response_timeout` (10 s → 50 s) was
/// accepted: the new lease was checked, the old one ran under the 50 s
/// forwards, and a retry on another instance 16 s into a slow forward was
/// forwarded again (found by a hostile pass). The reload is now refused,
/// naming the key, and the old config stays, also after a reload that was
/// taken. Guards the `running_claim_lease_problem` check in
/// `Reloader::load_and_swap` (`src/reload.rs`).
#[test]
fn a_reload_that_outgrows_the_running_claim_lease_is_refused() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let setup = |lease: &str, timeout: &str| {
        Setup::new()
            .table(&format!(
                "[cluster]\nredis = \"{}\"\nclaim_lease = \"{lease}\"\n",
                redis.url()
            ))
            .upstream_named(
                "app",
                &[app.addr],
                &format!("response_timeout = \"{timeout}\"\ntimeout = \"{timeout}\""),
            )
            .route("hooks", "/hooks", "app", DEDUPE)
    };
    let gateway = setup("15s", "10s").start();
    gateway.rewrite(&setup("60s", "50s").rest());
    let answer = gateway.post_reload();
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert_ne!(answer.status, 200, "{text}");
    assert!(text.contains("cluster.claim_lease"), "{text}");
    assert!(text.contains("restart"), "{text}");
    // The old config serves on: a delivery still goes through.
    let answer = delivery(&gateway, "evt_after", b"{}").expect("an answer");
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    // A file that keeps within the running lease is taken.
    gateway.rewrite(&setup("60s", "12s").rest());
    let answer = gateway.post_reload();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // The 15 s lease still runs after that reload: the 50 s forwards are
    // still refused (they were taken once the snapshot held the file's
    // 60 s lease; guards `keep_start_only` in `src/reload.rs`).
    gateway.rewrite(&setup("60s", "50s").rest());
    let answer = gateway.post_reload();
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert_ne!(answer.status, 200, "{text}");
    assert!(text.contains("cluster.claim_lease"), "{text}");
}

/// `hookgate_cluster_errors_total{operation="dedupe"}` counts operations, as
/// its HELP says: 12 deliveries sent at once while Redis is paused (`CLIENT
/// PAUSE`) are 12 claims refused 503, so 12 errors, although the claims a
/// proxy thread gathers behind the one in flight go to Redis as one batch
/// (`src/dedupe/batch.rs`) that fails once. Guards the `batch.len()` passed to
/// `ClusterClient::run_for` in `dedupe::batch::send`: counted per batch, the
/// 12 refusals made a handful of errors.
#[test]
fn each_refused_dedupe_claim_counts_one_error_also_in_a_batch() {
    const DELIVERIES: usize = 12;
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .table(&format!("[cluster]\nredis = \"{}\"\n", redis.url()))
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    // Both proxy threads' connections open (see the first test), so the
    // claims below are written at once and wait on the paused Redis.
    warm_up(&gateway, &redis, 3);
    let errors = || {
        gateway
            .metric("hookgate_cluster_errors_total", &[("operation", "dedupe")])
            .unwrap_or(0.0)
    };
    let before = errors();

    // Long enough for every claim to time out (command_timeout 250 ms).
    let forwarded = app.count();
    let paused = redis.command("CLIENT PAUSE 3000 ALL");
    assert!(
        paused.as_deref().is_some_and(|r| r.starts_with("+OK")),
        "{paused:?}"
    );
    let start = std::sync::Arc::new(std::sync::Barrier::new(DELIVERIES));
    let senders: Vec<_> = (0..DELIVERIES)
        .map(|i| {
            let (start, proxy) = (start.clone(), gateway.proxy);
            std::thread::spawn(move || {
                start.wait();
                try_post(
                    proxy,
                    "/hooks",
                    &[("X-Delivery", &format!("evt_{i}"))],
                    b"{}",
                )
                .map(|answer| answer.status)
            })
        })
        .collect();
    let statuses: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let refused = statuses.iter().filter(|s| matches!(s, Ok(503))).count();
    assert_eq!(refused, DELIVERIES, "{statuses:?}");
    assert_eq!(
        errors() - before,
        DELIVERIES as f64,
        "one dedupe error per refused claim"
    );
    assert_eq!(app.count(), forwarded, "nothing forwarded while paused");
}

/// `hookgate_cluster_errors_total{operation="dedupe"}` counts "each claim,
/// mark or release once" (README, metrics): a forwarded mark that Redis
/// refuses (`OOM` under `maxmemory` with `noeviction`: reachable, refusing
/// writes) is one error, however often it is sent again meanwhile, and
/// `hookgate_cluster_marks_lost_total` counts it once its claim's lease ends.
/// Here the lease is 8 s (response_timeout 3 s + 5 s), so the mark is sent
/// again about 15 times. Guards `batch::resend` in `dedupe::retry_mark`:
/// resent with `batch::submit`, each resend counted an error (15 for one
/// mark; 130 with the default 65 s lease), so the count followed the lease.
#[test]
fn a_mark_sent_again_until_its_lease_ends_counts_one_error() {
    let redis = RedisServer::start();
    let app = Upstream::with("app", Behavior::delayed(Duration::from_millis(800)));
    let gateway = Setup::new()
        .table(&format!("[cluster]\nredis = \"{}\"\n", redis.url()))
        .upstream_named("app", &[app.addr], "response_timeout = \"3s\"\n")
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    let errors = || {
        gateway
            .metric("hookgate_cluster_errors_total", &[("operation", "dedupe")])
            .unwrap_or(0.0)
    };
    let lost = || {
        gateway
            .metric("hookgate_cluster_marks_lost_total", &[])
            .unwrap_or(0.0)
    };
    let before = errors();
    let proxy = gateway.proxy;
    let sender = std::thread::spawn(move || {
        try_post(proxy, "/hooks", &[("X-Delivery", "evt_oom")], b"{}").map(|a| a.status)
    });
    // Claimed (the app has it); Redis now refuses every write.
    assert!(wait_until(Duration::from_secs(10), || app.count() == 1));
    for line in [
        "CONFIG SET maxmemory-policy noeviction",
        "CONFIG SET maxmemory 1",
    ] {
        let set = redis.command(line);
        assert!(
            set.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "{set:?}"
        );
    }
    assert_eq!(sender.join().unwrap().ok(), Some(200), "the app's answer");
    assert!(
        wait_until(Duration::from_secs(15), || lost() == 1.0),
        "the mark was not counted lost at the end of its lease: {}",
        lost()
    );
    assert_eq!(errors() - before, 1.0, "one refused mark, one error");
}
