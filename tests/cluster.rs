//! Several instances as one (issue 15, part 1), through the real binary: two
//! or three gateways share a real `redis-server` on loopback (started here, on
//! a free port, without persistence) for their rate limits and dedupe. Each
//! test names the product line that turns it red.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------- redis-server

/// A `redis-server` on 127.0.0.1, killed on drop; it can be stopped and
/// started again on the same port (a restart under traffic).
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with_password(None)
    }

    fn start_with_password(password: Option<&str>) -> Redis {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap().port()
        };
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            password: password.map(str::to_string),
            child: None,
        };
        redis.resume();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`, without credentials.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ];
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password]);
        }
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(self.dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("redis-server is installed (scripts/setup installs it)");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(10), || self.ping());
        assert!(up, "redis-server did not answer on port {}", self.port);
    }

    /// Kills the server (SIGKILL: what a crash looks like to the gateways).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many script calls (`EVALSHA`) the server has run, from `INFO
    /// commandstats` (which also counts the commands scripts run, so only
    /// this line measures round trips).
    fn evalsha_calls(&self) -> Option<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"INFO commandstats\r\n").ok()?;
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let length: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut text = vec![0u8; length + 2];
        std::io::Read::read_exact(&mut reader, &mut text).ok()?;
        let text = String::from_utf8(text).ok()?;
        let calls = text
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .map_or(Some(0), |rest| rest.split(',').next()?.parse().ok())?;
        Some(calls)
    }

    fn ping(&self) -> bool {
        let mut command = String::new();
        if let Some(password) = &self.password {
            command.push_str(&format!("AUTH {password}\r\n"));
        }
        command.push_str("PING\r\n");
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(command.as_bytes()).is_err() {
            return false;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            if reader.read_line(&mut line).is_err() {
                return false;
            }
            if line.starts_with("+PONG") {
                return true;
            }
        }
        false
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- helpers

fn cluster_table(redis: &Redis, extra: &str) -> String {
    format!("[cluster]\nredis = \"{}\"\n{extra}", redis.url())
}

fn delivery(to: SocketAddr, path: &str, id: &str, body: &[u8]) -> std::io::Result<Response> {
    try_post(
        to,
        path,
        &[("X-Delivery", id), ("Content-Type", "application/json")],
        body,
    )
}

const DEDUPE: &str = "dedupe = { key = \"header:X-Delivery\" }";

/// A sender on one keep-alive connection, opened again whenever the gateway
/// closes it (after a 429, or on an error): enough requests a second to go
/// past a rate limit of a few hundred a second.
struct KeepAlive {
    to: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    fn new(to: SocketAddr) -> KeepAlive {
        KeepAlive { to, stream: None }
    }

    /// The status of one POST, 0 when the exchange failed.
    fn post(&mut self, path: &str, body: &[u8]) -> u16 {
        let status = self.exchange(path, body).unwrap_or(0);
        if status != 200 {
            self.stream = None;
        }
        status
    }

    fn exchange(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.to)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.to,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut answer = vec![0u8; length];
        std::io::Read::read_exact(reader, &mut answer)?;
        Ok(status)
    }
}

// ---------------------------------------------------------------- rate limits

/// A route `hooks` on `/hooks` to `app` limited to `10/h` (burst 10), shared in `redis`.
fn ten_per_hour(redis: &Redis, app: &Upstream) -> Setup {
    Setup::new()
        .table(&cluster_table(redis, ""))
        .upstream(app)
        .route("hooks", "/hooks", "app", "rate_limit = { rate = \"10/h\" }")
}

/// `hookgate_cluster_commands_total{operation="rate_limit"}` of `gateway`.
fn rate_limit_commands(gateway: &Gateway) -> f64 {
    gateway.metric_required(
        "hookgate_cluster_commands_total",
        &[("operation", "rate_limit")],
    )
}

/// The `Retry-After` seconds of a `rate_limited` refusal.
fn retry_after_of_refusal(answer: &Response) -> u64 {
    assert_eq!(answer.json()["error"], "rate_limited");
    answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

/// Two instances, one limit: of 30 deliveries spread over both, exactly the
/// burst of 10 gets through (the rate refills one per 6 minutes), and every
/// refusal carries `Retry-After`. Guards the `check_shared` call in the
/// proxy's rate-limit step (`src/proxy/mod.rs`): with each instance's own
/// limiter, 20 would get through.
#[test]
fn the_combined_rate_of_two_instances_is_the_configured_limit() {
    let redis = Redis::start();
    let app = Upstream::start("app");
    let setup = ten_per_hour(&redis, &app);
    let gateways = [setup.start(), setup.start()];
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..30 {
        let gateway = &gateways[i % 2];
        let answer = post(
            gateway.proxy,
            "/hooks",
            &[],
            format!("{{\"n\":{i}}}").as_bytes(),
        );
        match answer.status {
            200 => passed += 1,
            429 => {
                limited += 1;
                let retry_after = retry_after_of_refusal(&answer);
                assert!((1..=360).contains(&retry_after), "{retry_after}");
            }
            other => panic!("unexpected status {other}: {:?}", answer.json()),
        }
    }
    assert_eq!((passed, limited), (10, 20));
    assert_eq!(app.count(), 10, "the upstream got exactly the allowed ones");
    for gateway in &gateways {
        gateway.assert_metric("hookgate_cluster_up", &[], 1.0);
        gateway.assert_metric(
            "hookgate_cluster_errors_total",
            &[("operation", "rate_limit")],
            0.0,
        );
    }
}

/// A flood above the limit asks Redis once per refill or second, not once per
/// request: after the burst of 10 (`10/h`: one token per 6 minutes), 50 more
/// deliveries to one instance are all refused with `Retry-After` and cost one
/// script call (and one more per second they took), and a second instance
/// sharing the bucket learns it with one call of its own (`hookgate_cluster_commands_total` counts each). Guards
/// the remembered refusal of `Grants`
/// (`src/ratelimit.rs`): without it each refused delivery is one `EVALSHA`.
#[test]
fn a_flood_above_the_limit_does_not_ask_redis_per_request() {
    let redis = Redis::start();
    let app = Upstream::start("app");
    let setup = ten_per_hour(&redis, &app);
    let first = setup.start();
    let second = setup.start();
    for i in 0..10 {
        let answer = post(
            first.proxy,
            "/hooks",
            &[],
            format!("{{\"n\":{i}}}").as_bytes(),
        );
        assert_eq!(answer.status, 200, "{:?}", answer.json());
    }
    for (gateway, floods) in [(&first, 50), (&second, 20)] {
        let before = redis.evalsha_calls().expect("INFO commandstats");
        let counted_before = rate_limit_commands(gateway);
        let started = Instant::now();
        for i in 0..floods {
            let answer = post(
                gateway.proxy,
                "/hooks",
                &[],
                format!("{{\"f\":{i}}}").as_bytes(),
            );
            assert_eq!(answer.status, 429, "{:?}", answer.json());
            let retry_after = retry_after_of_refusal(&answer);
            assert!((350..=360).contains(&retry_after), "{retry_after}");
        }
        // One call, and one more per second the flood took (a refusal is
        // remembered for a second at most).
        let seconds = started.elapsed().as_secs();
        let calls = redis.evalsha_calls().expect("INFO commandstats") - before;
        assert!(
            (1..=1 + seconds).contains(&calls),
            "{floods} refused deliveries in {seconds} s cost {calls} script calls"
        );
        let counted = rate_limit_commands(gateway);
        assert_eq!(
            counted,
            counted_before + calls as f64,
            "the instance counted its calls"
        );
    }
    assert_eq!(app.count(), 10, "the upstream got exactly the allowed ones");
}

/// At a rate where each instance may hold granted tokens ("500/s", burst 5:
/// up to 5 per grant, spent within 10 ms), two instances under more load
/// than the rate together admit no more than the documented bound of
/// `src/ratelimit.rs` (`Grants`): `burst + (W + 10 ms) × rate` over the
/// run's window `W`, plus one for rounding. Guards the `GET` of the bucket's
/// TAT in the GCRA script (`src/ratelimit.rs`, `local tat = ...`): a script
/// that forgets the bucket between grants lets all 2000 through. (Breaking
/// the local side instead, e.g. not counting a spent token, stays within a
/// few tokens of the bound here; `admissions_stay_within_the_documented_bound`
/// and the expiry unit tests in `src/ratelimit/tests.rs` guard that side.)
#[test]
fn with_local_grants_two_instances_stay_within_the_documented_bound() {
    const RATE: f64 = 500.0;
    const BURST: f64 = 5.0;
    const PER_THREAD: usize = 500;
    let redis = Redis::start();
    let app = Upstream::start("app");
    let setup = Setup::new()
        .table(&cluster_table(&redis, ""))
        .upstream(&app)
        .route(
            "hooks",
            "/hooks",
            "app",
            "rate_limit = { rate = \"500/s\", burst = 5 }",
        );
    let gateways = [setup.start(), setup.start()];
    let started = Instant::now();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let to = gateways[t % 2].proxy;
            std::thread::spawn(move || {
                let mut sender = KeepAlive::new(to);
                (0..PER_THREAD)
                    .map(|i| sender.post("/hooks", format!("{{\"t\":{t},\"n\":{i}}}").as_bytes()))
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = senders
        .into_iter()
        .flat_map(|sender| sender.join().expect("sender thread"))
        .collect();
    let window = started.elapsed().as_secs_f64();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        passed + limited,
        statuses.len(),
        "only 200 and 429: {statuses:?}"
    );
    let bound = BURST + ((window + 0.010) * RATE).ceil() + 1.0;
    eprintln!(
        "{passed} of {} admitted in {window:.3} s (bound {bound}), {limited} limited",
        statuses.len()
    );
    assert!(
        passed as f64 <= bound,
        "{passed} admitted in {window:.3} s, bound {bound}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || app.count() == passed),
        "the upstream got {} of {passed}",
        app.count()
    );
}

// ---------------------------------------------------------------- dedupe

/// A provider's retry that lands on the other instance is answered
/// `duplicate` and not forwarded again; an id whose forward failed is not
/// remembered, so its retry on the other instance is forwarded. Guards the
/// `SET key "f" PX ttl` of `Claim::confirm` (`src/dedupe.rs`): without it the
/// claim is released after the 2xx too, and the retry is forwarded again.
#[test]
fn a_retry_on_the_second_instance_is_a_duplicate() {
    let redis = Redis::start();
    let app = Upstream::start("app");
    let failing = Upstream::with("failing", Behavior::status(500));
    let setup = Setup::new()
        .table(&cluster_table(&redis, ""))
        .upstream(&app)
        .upstream(&failing)
        .route("hooks", "/hooks", "app", DEDUPE)
        .route("flaky", "/flaky", "failing", DEDUPE);
    let (first, second) = (setup.start(), setup.start());
    let body = b"{\"id\":\"evt_1\"}";
    let sent = delivery(first.proxy, "/hooks", "evt_1", body).unwrap();
    assert_eq!(sent.status, 200, "{:?}", sent.json());
    let retry = delivery(second.proxy, "/hooks", "evt_1", body).unwrap();
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["status"], "duplicate");
    assert_eq!(app.count(), 1, "forwarded once");
    assert_eq!(app.received()[0].body, body);
    second.assert_requests("hooks", "duplicate", 1.0);

    for gateway in [&first, &second] {
        let answer = delivery(gateway.proxy, "/flaky", "evt_2", body).unwrap();
        assert_eq!(answer.status, 500, "the upstream's answer is relayed");
    }
    assert_eq!(
        failing.count(),
        2,
        "a failed id is forgotten on every instance"
    );
}

/// The dedupe operations that the requests of one worker issue together go to
/// Redis as one script call, with every rule intact: 30 ids, each sent twice
/// at once, are forwarded once each (the other copy gets 409 in flight or 200
/// `duplicate`), and the 90 operations (60 claims, 30 marks) take fewer than
/// 90 `EVALSHA`s. The upstream holds every forward until all 60 were answered
/// or are held, so the 30 marks are due together. Guards the batching in
/// `dedupe::batch::submit` (one call per operation gives exactly 90) and the
/// per-operation answers of `batch::send` (answers handed to the wrong
/// request forward an id twice or refuse a fresh one).
#[test]
fn concurrent_operations_share_script_calls_and_each_id_is_forwarded_once() {
    let redis = Redis::start();
    let gate = Gate::new();
    let app = Upstream::with("app", Behavior::held(&gate));
    let gateway = Setup::new()
        .table(&cluster_table(&redis, "command_timeout = \"5s\"\n"))
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    let before = redis.evalsha_calls().expect("INFO commandstats");
    let proxy = gateway.proxy;
    let statuses = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..60)
            .map(|i| {
                scope.spawn(move || {
                    let id = format!("evt_{}", i % 30);
                    let body = format!("{{\"id\":\"{id}\"}}");
                    delivery(proxy, "/hooks", &id, body.as_bytes()).map(|r| (id, r.status))
                })
            })
            .collect();
        // Every id is held upstream once its first copy got there; the other
        // copies were answered 409 meanwhile.
        let all_in = wait_until(Duration::from_secs(20), || app.count() >= 30);
        gate.open();
        assert!(all_in, "30 forwards reached the upstream: {}", app.count());
        senders
            .into_iter()
            .map(|sender| sender.join().expect("sender").expect("an answer"))
            .collect::<Vec<_>>()
    });
    let forwarded: Vec<_> = statuses
        .iter()
        .filter(|(_, status)| *status == 200)
        .collect();
    assert_eq!(app.count(), 30, "each id forwarded once");
    let mut ids: Vec<String> = app
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "30 distinct ids upstream");
    assert!(forwarded.len() >= 30, "{statuses:?}");
    for (id, status) in &statuses {
        assert!(
            *status == 200 || *status == 409,
            "{id}: {status} (200 forwarded or duplicate, 409 in flight)"
        );
    }
    // The marks are in Redis before the answers: a retry now is a duplicate.
    let retry = delivery(proxy, "/hooks", "evt_7", b"{\"id\":\"evt_7\"}").unwrap();
    assert_eq!(retry.json()["status"], "duplicate");
    let calls = redis.evalsha_calls().expect("INFO commandstats") - before;
    assert!(
        calls < 91,
        "91 operations (with the retry) in {calls} script calls: not batched"
    );
}

/// An instance killed with `kill -9` while it forwards holds its claim in
/// Redis: the other instance answers 409 `duplicate_in_flight` until the
/// claim's lease (here 2 s) ends, then forwards the retry. Guards the
/// `'PX', ARGV[2 * n + i]` of the batch script (`src/dedupe/batch.rs`): a claim without a
/// lease would block that id for good.
#[test]
fn a_claim_held_by_a_killed_instance_ends_with_its_lease() {
    let redis = Redis::start();
    let slow = Upstream::with("app", Behavior::delayed(Duration::from_secs(20)));
    let fast = Upstream::start("app");
    let cluster = cluster_table(&redis, "claim_lease = \"2s\"");
    // The same route on both instances; the first one's upstream never answers in time.
    // A claim_lease shorter than an upstream's response_timeout plus
    // command_timeout is refused at load.
    let short = "response_timeout = \"1500ms\"";
    let mut first = Setup::new()
        .table(&cluster)
        .upstream_named("app", &[slow.addr], short)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    let second = Setup::new()
        .table(&cluster)
        .upstream_named("app", &[fast.addr], short)
        .route("hooks", "/hooks", "app", DEDUPE)
        .start();
    let body = b"{\"id\":\"evt_kill\"}";
    let to = first.proxy;
    let stuck = std::thread::spawn(move || delivery(to, "/hooks", "evt_kill", body));
    assert!(
        wait_until(Duration::from_secs(10), || slow.count() == 1),
        "the first instance is forwarding"
    );
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());
    let _ = stuck.join();
    let started = Instant::now();
    let blocked = delivery(second.proxy, "/hooks", "evt_kill", body).unwrap();
    assert_eq!(blocked.status, 409, "{:?}", blocked.json());
    assert_eq!(blocked.json()["error"], "duplicate_in_flight");
    let mut last = 409;
    let freed = wait_until(Duration::from_secs(10), || {
        last = delivery(second.proxy, "/hooks", "evt_kill", body).map_or(0, |r| r.status);
        last != 409
    });
    assert!(freed, "still {last} after 10 s");
    assert_eq!(last, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fast.count(), 1, "forwarded once, after the lease");
}

// ---------------------------------------------------------------- Redis down

/// `on_unavailable = "local"`: while Redis is down, deliveries keep flowing on
/// each instance's own limiter and dedupe (counted as fallbacks, `/readyz`
/// stays ready); once Redis is back, the instances share again without a
/// restart. Guards the `OnUnavailable::Local` arm of the rate-limit step
/// (`src/proxy/mod.rs`): without it, the fallback is never counted.
#[test]
fn with_local_a_redis_restart_falls_back_then_recovers() {
    let mut redis = Redis::start();
    let app = Upstream::start("app");
    let setup = Setup::new()
        .table(&cluster_table(&redis, "on_unavailable = \"local\""))
        .upstream(&app)
        .route(
            "hooks",
            "/hooks",
            "app",
            &format!("rate_limit = {{ rate = \"1000/s\" }}\n{DEDUPE}"),
        );
    let (first, second) = (setup.start(), setup.start());
    redis.stop();
    first.assert_metric("hookgate_cluster_up", &[], 0.0);
    for i in 0..5 {
        let answer = delivery(first.proxy, "/hooks", &format!("down-{i}"), b"{}").unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.json());
    }
    assert_eq!(app.count(), 5);
    assert!(
        first.metric_required(
            "hookgate_cluster_fallbacks_total",
            &[("operation", "rate_limit")]
        ) >= 5.0
    );
    assert!(
        first.metric_required(
            "hookgate_cluster_fallbacks_total",
            &[("operation", "dedupe")]
        ) >= 5.0
    );
    assert_eq!(get(first.admin, "/readyz").unwrap().status, 200);

    redis.resume();
    for gateway in [&first, &second] {
        gateway.assert_metric("hookgate_cluster_up", &[], 1.0);
    }
    let fallbacks = first.metric_required("hookgate_cluster_fallbacks_total", &[]);
    let sent = delivery(first.proxy, "/hooks", "after", b"{}").unwrap();
    assert_eq!(sent.status, 200);
    let retry = delivery(second.proxy, "/hooks", "after", b"{}").unwrap();
    assert_eq!(retry.json()["status"], "duplicate", "shared again");
    assert_eq!(
        first.metric_required("hookgate_cluster_fallbacks_total", &[]),
        fallbacks
    );
    assert_eq!(app.count(), 6);
}

/// `on_unavailable = "reject"` (the default): while Redis is down, a
/// rate-limited or deduped route answers 503 `cluster_unavailable` with
/// `Retry-After` and forwards nothing, a route that uses neither still works,
/// and `/readyz` says not ready; once Redis is back, both recover without a
/// restart. Guards the `reject && !cluster.is_up()` check of `/readyz`
/// (`src/admin.rs`).
#[test]
fn with_reject_a_redis_restart_answers_503_then_recovers() {
    let mut redis = Redis::start();
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .table(&cluster_table(&redis, ""))
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE)
        .route("plain", "/plain", "app", "")
        .start();
    redis.stop();
    // Set by the client once it sees the connection drop: a moment later.
    assert!(wait_until(Duration::from_secs(5), || gateway
        .metric("hookgate_cluster_up", &[])
        == Some(0.0)));
    let refused = delivery(gateway.proxy, "/hooks", "evt_down", b"{}").unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "cluster_unavailable");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(app.count(), 0, "nothing forwarded undecided");
    gateway.assert_requests("hooks", "cluster_unavailable", 1.0);
    assert_eq!(post(gateway.proxy, "/plain", &[], b"{}").status, 200);
    let not_ready = get(gateway.admin, "/readyz").unwrap();
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.json()["reason"]
        .as_str()
        .is_some_and(|r| r.contains("cluster")));

    redis.resume();
    let recovered = wait_until(Duration::from_secs(10), || {
        delivery(gateway.proxy, "/hooks", "evt_up", b"{}").is_ok_and(|r| r.status == 200)
    });
    assert!(recovered, "not recovered; log:\n{}", gateway.log());
    assert_eq!(get(gateway.admin, "/readyz").unwrap().status, 200);
}

// ---------------------------------------------------------------- secrets

/// The Redis password shows nowhere: not in `hookgate check`, the log, `/config`
/// or `/metrics`, while the gateway authenticates with it (the cluster is up).
/// Guards `RedisUrl::redacted` (`src/config/cluster.rs`) as the only form
/// printed.
#[test]
fn the_redis_password_never_shows() {
    const PASSWORD: &str = "Redis-Pw-4f9c2e";
    let redis = Redis::start_with_password(Some(PASSWORD));
    let app = Upstream::start("app");
    let table = format!(
        "[cluster]\nredis = \"redis://:{PASSWORD}@127.0.0.1:{}/0\"\n",
        redis.port
    );
    let setup = Setup::new()
        .table(&table)
        .upstream(&app)
        .route("hooks", "/hooks", "app", DEDUPE);
    let gateway = setup.start();
    gateway.assert_metric("hookgate_cluster_up", &[], 1.0);
    assert_eq!(
        delivery(gateway.proxy, "/hooks", "a", b"{}")
            .unwrap()
            .status,
        200
    );

    let check = Command::new(BIN)
        .args(["check", "-c", gateway.config_path.to_str().unwrap()])
        .output()
        .expect("run hookgate check");
    let checked = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{checked}");
    assert!(
        checked.contains("redis://:[redacted]@127.0.0.1"),
        "{checked}"
    );
    let config = get(gateway.admin, "/config").unwrap();
    let metrics = get(gateway.admin, "/metrics").unwrap();
    for (what, text) in [
        ("check", checked),
        ("log", gateway.log()),
        (
            "/config",
            String::from_utf8_lossy(&config.body).into_owned(),
        ),
        (
            "/metrics",
            String::from_utf8_lossy(&metrics.body).into_owned(),
        ),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "{what} shows the password:\n{text}"
        );
    }
}

/// `[cluster]` is read once, at start: a reload that changes it applies the
/// rest and reports the restart it needs. Guards the `cluster` entry of
/// `restart_required` in `src/reload.rs`.
#[test]
fn a_reload_that_changes_the_cluster_says_a_restart_is_required() {
    let redis = Redis::start();
    let app = Upstream::start("app");
    let setup = |prefix: &str| {
        Setup::new()
            .table(&cluster_table(
                &redis,
                &format!("key_prefix = \"{prefix}\"\n"),
            ))
            .upstream(&app)
            .route("hooks", "/hooks", "app", DEDUPE)
    };
    let gateway = setup("one:").start();
    gateway.rewrite(&setup("two:").rest());
    let answer = gateway.post_reload();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let report = answer.json();
    assert!(
        report["report"]["restart_required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s == "cluster")),
        "{report}"
    );
}

/// After a reload that changes `[cluster]` (not applied: Redis is connected
/// at start), `GET /config` shows the `[cluster]` that runs, password
/// redacted, and every later reload, even of the same file or of one that
/// changes only a route, still names `cluster` in `restart_required` until a
/// restart. They showed the new file's table and reported `[]` from the
/// second reload on: both read the last loaded file instead of what runs.
/// Guards `keep_start_only` in `src/reload.rs` (putting the running
/// `[cluster]` back into the swapped-in config).
#[test]
fn config_shows_the_running_cluster_and_reloads_say_restart_until_one() {
    const PASSWORD: &str = "Redis-Pw-9d1e7a";
    const NEW_PASSWORD: &str = "Unused-Pw-31c8b0";
    let redis = Redis::start_with_password(Some(PASSWORD));
    let app = Upstream::start("app");
    let setup = |password: &str, prefix: &str| {
        Setup::new()
            .table(&format!(
                "[cluster]\nredis = \"redis://:{password}@127.0.0.1:{}/0\"\nkey_prefix = \"{prefix}\"\n",
                redis.port
            ))
            .upstream(&app)
            .route("hooks", "/hooks", "app", DEDUPE)
    };
    let gateway = setup(PASSWORD, "one:").start();
    let shown = |gateway: &Gateway| {
        let answer = get(gateway.admin, "/config").unwrap();
        answer.expect_status(200);
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        for password in [PASSWORD, NEW_PASSWORD] {
            assert!(
                !text.contains(password),
                "/config shows a password:\n{text}"
            );
        }
        answer.json()
    };
    let at_start = shown(&gateway)["cluster"].clone();
    assert_eq!(at_start["key_prefix"], "one:", "{at_start}");
    let restart_required = |answer: Response| {
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        assert_eq!(answer.status, 200, "{text}");
        answer.json()["report"]["restart_required"].clone()
    };

    let changed = setup(NEW_PASSWORD, "two:");
    gateway.rewrite(&changed.rest());
    assert_eq!(
        restart_required(gateway.post_reload()),
        serde_json::json!(["cluster"])
    );
    assert_eq!(
        shown(&gateway)["cluster"],
        at_start,
        "the running [cluster]"
    );

    // The same file again: nothing to swap, still a restart to report.
    let again = gateway.post_reload();
    assert_eq!(again.json()["report"]["unchanged"], true);
    assert_eq!(restart_required(again), serde_json::json!(["cluster"]));

    // Another edit (a second route) applies; [cluster] still waits.
    let more = changed.route("more", "/more", "app", "");
    gateway.rewrite(&more.rest());
    assert_eq!(
        restart_required(gateway.post_reload()),
        serde_json::json!(["cluster"])
    );
    let config = shown(&gateway);
    assert_eq!(config["routes"][1]["name"], "more", "{config}");
    assert_eq!(config["cluster"], at_start, "the running [cluster]");
}
