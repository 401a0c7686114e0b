//! Queued delivery end to end (issue 14), through the real binary: the sender
//! gets 202 only for a stored event, and every stored event reaches its
//! upstream, with the exact bytes, across a down upstream, `kill -9`, a full
//! store, reloads, retries until dead, and replays through the CLI.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

const SECRET: &str = "queued-test-secret";

fn signed_post(to: SocketAddr, path: &str, body: &[u8]) -> Response {
    let signature = github_signature(SECRET, body);
    post(
        to,
        path,
        &[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn body(i: usize) -> Vec<u8> {
    format!("{{\"delivery\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 7)).into_bytes()
}

/// A queued route `name` at `/hooks/NAME` to `upstream`, signed GitHub-style.
fn queued_route(name: &str, upstream: &str, retry: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath = \"/hooks/{name}\"\nupstream = \"{upstream}\"\n\
         verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n\
         delivery = \"queued\"\nretry = {retry}\n"
    )
}

/// An upstream section with a fast health check (a down target comes back quickly).
fn upstream(name: &str, at: SocketAddr) -> String {
    format!("[upstreams.{name}]\ntargets = [\"{at}\"]\ntimeout = \"2s\"\nhealth = {{ interval = \"100ms\" }}\n")
}

const FAST_RETRY: &str =
    "{ attempts = 1000, backoff = \"50ms\", max_backoff = \"300ms\", max_age = \"1h\" }";

fn storage(extra: &str) -> String {
    format!("[storage]\npath = \"data\"\n{extra}\n")
}

/// `(status, event_id)` of a 202 answer.
fn accepted(response: &Response) -> Option<String> {
    (response.status == 202).then(|| {
        let json = response.json();
        assert_eq!(json["status"], "accepted", "{json}");
        assert!(json["request_id"].is_string(), "{json}");
        json["event_id"].as_str().expect("event_id").to_string()
    })
}

fn admin_get(admin: SocketAddr, target: &str) -> serde_json::Value {
    let response = get(admin, target).expect("admin GET");
    assert_eq!(
        response.status,
        200,
        "{target}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// A gateway with one queued route `gh` whose upstream `app` is down: a held,
/// non-listening port that `DeadPort::come_up` turns into the upstream later.
fn gateway_before_its_upstream(storage_extra: &str) -> (DeadPort, Gateway) {
    let down = DeadPort::new();
    let gateway = Gateway::start(&format!(
        "{}{}{}",
        upstream("app", down.addr),
        queued_route("gh", "app", FAST_RETRY),
        storage(storage_extra)
    ));
    (down, gateway)
}

#[test]
fn a_down_upstream_gets_every_acknowledged_delivery_exactly_once_when_it_comes_up() {
    let (down, gateway) = gateway_before_its_upstream("");
    let mut sent: HashMap<Vec<u8>, String> = HashMap::new();
    for i in 0..200 {
        let body = body(i);
        let response = signed_post(gateway.proxy, "/hooks/gh", &body);
        // Guards the `Delivery::Queued` hook in proxy/mod.rs (step 9): without it
        // the route relays directly and answers 503, the upstream being down.
        let id = accepted(&response).unwrap_or_else(|| {
            panic!(
                "delivery {i}: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        });
        sent.insert(body, id);
    }
    let ids: std::collections::HashSet<&String> = sent.values().collect();
    assert_eq!(ids.len(), 200, "event ids are unique");
    let app = down.come_up("app", Behavior::default());
    let arrived = wait_until(Duration::from_secs(30), || app.count() >= 200);
    assert!(
        arrived,
        "{} of 200 arrived; log:\n{}",
        app.count(),
        gateway.log()
    );
    // Delivered ones are recorded before the next poll: nothing more may come.
    gateway.assert_metric(
        "hookgate_queue_backlog",
        &[("route", "gh"), ("upstream", "app")],
        0.0,
    );
    let received = app.received();
    assert_eq!(received.len(), 200, "each exactly once");
    let mut seen = std::collections::HashSet::new();
    for request in &received {
        let id = sent
            .get(&request.body)
            .expect("the exact bytes of a sent body");
        assert!(seen.insert(request.body.clone()), "delivered twice");
        assert_eq!(request.header("x-hookgate-event-id"), Some(id.as_str()));
        assert!(request.header("x-hookgate-attempt").is_some());
        assert_eq!(
            request.header("x-hub-signature-256"),
            Some(github_signature(SECRET, &request.body).as_str()),
            "the sender's signature header is forwarded as in direct mode"
        );
        assert_eq!(request.header("x-hookgate-route"), Some("gh"));
        assert_eq!(request.target, "/hooks/gh");
    }
    gateway.assert_metric(
        "hookgate_requests_total",
        &[("route", "gh"), ("outcome", "queued")],
        200.0,
    );
    gateway.assert_metric(
        "hookgate_queue_attempts_total",
        &[
            ("route", "gh"),
            ("upstream", "app"),
            ("result", "delivered"),
        ],
        200.0,
    );
}

/// The gateway process of the kill -9 test, with a config and store that outlive it.
struct Process {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_process(dir: &tempfile::TempDir, config: &Path) -> Process {
    let mut child = spawn_binary(&["serve", "-c", config.to_str().unwrap()], dir);
    let log = dir.path().join("gateway.log");
    let bound = wait_listening(&mut child, &log, 1)
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    let process = Process {
        child,
        proxy: bound.proxy[0],
        admin: bound.admin,
    };
    let ready = wait_until(Duration::from_secs(20), || {
        get(process.admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert!(
        ready,
        "not ready: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    process
}

/// A config for a gateway process the test starts and stops itself (the store
/// outlives it), on ports the system picks at each start: `(dir, config path)`.
fn own_process(
    app: &Upstream,
    grace: &str,
    concurrency: usize,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nthreads = 2\nshutdown_grace = \"{grace}\"\n\n{}{}{}",
            // A timeout well above the SIGTERM test's 2 s attempt.
            upstream("app", app.addr).replace("timeout = \"2s\"", "timeout = \"10s\""),
            queued_route("gh", "app", FAST_RETRY),
            storage(&format!("concurrency = {concurrency}"))
        ),
    )
    .unwrap();
    (dir, config)
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_event() {
    // A slow upstream with one attempt at a time keeps a backlog in the store.
    let app = Upstream::with("app", Behavior::delayed(Duration::from_millis(20)));
    let (dir, config) = own_process(&app, "1s", 1);
    let mut first = start_process(&dir, &config);
    let proxy = first.proxy;
    let mut acknowledged: HashMap<Vec<u8>, String> = HashMap::new();
    let post_one = |i: usize| {
        let body = body(i);
        let signature = github_signature(SECRET, &body);
        let request = format!(
            "POST /hooks/gh HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: {}\r\nX-Hub-Signature-256: {signature}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&body);
        let id = send_raw(proxy, &bytes).ok().and_then(|r| accepted(&r));
        (body, id)
    };
    for i in 0..150 {
        if let (body, Some(id)) = post_one(i) {
            acknowledged.insert(body, id);
        }
    }
    // Mid-stream, with deliveries still pending: no shutdown, no flush.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(post_one(150).1, None, "nothing is acknowledged while down");
    assert_eq!(acknowledged.len(), 150);
    let pending_at_kill = acknowledged.len().saturating_sub(app.count());
    assert!(
        pending_at_kill > 10,
        "the kill must leave a backlog ({pending_at_kill} pending)"
    );
    // Guards the resume in `Queue::with_store`: pending deliveries found in the
    // store are scheduled at start.
    let _second = start_process(&dir, &config);
    let all = wait_until(Duration::from_secs(30), || {
        let received = app.received();
        acknowledged
            .keys()
            .all(|body| received.iter().any(|r| &r.body == body))
    });
    assert!(
        all,
        "acknowledged events missing after the restart ({} pending at the kill)",
        pending_at_kill
    );
    // Duplicates (a delivery whose record the kill cut off) carry the same id.
    for request in app.received() {
        if let Some(id) = acknowledged.get(&request.body) {
            assert_eq!(request.header("x-hookgate-event-id"), Some(id.as_str()));
        }
    }
}

#[test]
fn an_upstream_answering_500_kills_the_event_and_a_cli_replay_delivers_it() {
    let mut failing = Upstream::with("app", Behavior::status(500));
    let at = failing.addr;
    let retry = "{ attempts = 3, backoff = \"20ms\", max_backoff = \"50ms\", max_age = \"1h\" }";
    let gateway = Gateway::start(&format!(
        "{}{}{}",
        upstream("app", at),
        queued_route("gh", "app", retry),
        storage("")
    ));
    let body = body(1);
    let id = accepted(&signed_post(gateway.proxy, "/hooks/gh", &body)).expect("202");
    gateway.assert_metric(
        "hookgate_queue_dead_total",
        &[
            ("route", "gh"),
            ("upstream", "app"),
            ("reason", "exhausted"),
        ],
        1.0,
    );
    let attempts: Vec<String> = failing
        .received()
        .iter()
        .map(|r| r.header("x-hookgate-attempt").unwrap_or("").to_string())
        .collect();
    // Guards `number >= policy.attempts` in delivery::attempt: three tries, then dead.
    assert_eq!(attempts, ["1", "2", "3"]);
    // `events list` and `events show` on the real data.
    let (code, out) = gateway.events_cli(&["list", "--status", "dead"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id) && out.contains("app:dead(3)"), "{out}");
    let (code, out) = gateway.events_cli(&["show", &id]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["status"], "dead");
    assert_eq!(shown["body"], String::from_utf8(body.clone()).unwrap());
    let tries = shown["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(tries.len(), 3);
    assert!(tries.iter().all(|a| a["status"] == 500), "{shown}");
    assert!(!out.contains(SECRET), "the route's secret is never shown");
    assert!(shown["replayed_at"].is_null(), "{shown}");
    let received_at = shown["received_at"].clone();
    // The app is fixed; a replay through the CLI delivers the event.
    failing.stop();
    drop(failing);
    let fixed = Upstream::at(at, "app", Behavior::default());
    let (code, out) = gateway.events_cli(&["replay", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 delivery replayed"), "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || fixed.count() == 1),
        "{}",
        gateway.log()
    );
    let got = &fixed.received()[0];
    assert_eq!(got.body, body);
    assert_eq!(got.header("x-hookgate-event-id"), Some(id.as_str()));
    // The record of the 2xx is written a moment after the upstream has it.
    // Polled without panicking: a failed or non-JSON answer is "not yet".
    assert!(wait_until(Duration::from_secs(5), || {
        get(gateway.admin, "/events?status=delivered").is_ok_and(|answer| {
            answer.status == 200
                && serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .is_ok_and(|json| json["events"][0]["id"] == id.as_str())
        })
    }));
    // Guards `record.replayed_ms = Some(now)` in the store's replay (it used
    // to overwrite `received_ms`): the receipt time survives the replay.
    let (code, out) = gateway.events_cli(&["show", &id]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["received_at"], received_at, "{shown}");
    assert!(shown["replayed_at"].is_string(), "{shown}");
}

#[test]
fn a_4xx_answer_is_final() {
    let app = Upstream::with("app", Behavior::status(422));
    let gateway = Gateway::start(&format!(
        "{}{}{}",
        upstream("app", app.addr),
        queued_route("gh", "app", FAST_RETRY),
        storage("")
    ));
    let id = accepted(&signed_post(gateway.proxy, "/hooks/gh", &body(2))).expect("202");
    // Guards the `Class::Fail` arm of `delivery::attempt` (a final answer is dead).
    gateway.assert_metric(
        "hookgate_queue_dead_total",
        &[
            ("route", "gh"),
            ("upstream", "app"),
            ("reason", "final_status"),
        ],
        1.0,
    );
    let shown = admin_get(gateway.admin, &format!("/events/{id}"));
    assert_eq!(shown["status"], "dead", "{shown}");
    // Not retried, although the retry policy allows 1000 tries 50 ms apart.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.count(), 1);
    // A replay changes state: the admin guard wants a JSON content type (no
    // CORS "simple request" can replay), as for /reload.
    let replay = |content_type: &str| {
        let request = format!(
            "POST /events/{id}/replay HTTP/1.1\r\nHost: {}\r\n{content_type}Content-Length: 0\r\nConnection: close\r\n\r\n",
            gateway.admin
        );
        send_raw(gateway.admin, request.as_bytes()).expect("replay")
    };
    assert_eq!(replay("").status, 415);
    assert_eq!(replay("Content-Type: text/plain\r\n").status, 415);
    let replayed = replay("Content-Type: application/json\r\n");
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.json()["deliveries"], 1);
    assert!(wait_until(Duration::from_secs(5), || app.count() == 2));
    let bad = get(gateway.admin, "/events?status=lost").unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(get(gateway.admin, "/events/nothex").unwrap().status, 404);
}

#[test]
fn a_full_store_answers_503_and_drops_nothing_it_acknowledged() {
    let (down, gateway) = gateway_before_its_upstream("max_bytes = \"16KiB\"");
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let body = bytes(1024, i as u64);
        let response = signed_post(gateway.proxy, "/hooks/gh", &body);
        match accepted(&response) {
            Some(_) => acknowledged.push(body),
            None => {
                refused = Some(response);
                break;
            }
        }
    }
    let refused = refused.expect("the store filled up");
    // Guards the Full branch of RedbStore::append and its 503 in proxy/queued.rs,
    // with the README's "a queued route's store is full (`Retry-After: 60`)"
    // (`FULL_RETRY_AFTER_SECS`).
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "storage_unavailable");
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert!(acknowledged.len() >= 5, "{}", acknowledged.len());
    gateway.assert_metric("hookgate_store_errors_total", &[("kind", "full")], 1.0);
    let app = down.come_up("app", Behavior::default());
    let all = wait_until(Duration::from_secs(20), || {
        app.count() >= acknowledged.len()
    });
    assert!(all, "{} of {}", app.count(), acknowledged.len());
    let received: Vec<Vec<u8>> = app.received().into_iter().map(|r| r.body).collect();
    for body in &acknowledged {
        assert!(received.contains(body), "an acknowledged event was dropped");
    }
}

#[test]
fn a_reload_keeps_pending_events_and_kills_those_of_a_removed_upstream() {
    let (a_down, b_down) = (DeadPort::new(), DeadPort::new());
    let (a_addr, b_addr) = (a_down.addr, b_down.addr);
    let routes = |first_upstream: &str| {
        format!(
            "{}{}",
            queued_route("one", first_upstream, FAST_RETRY),
            queued_route("two", "b", FAST_RETRY)
        )
    };
    let gateway = Gateway::start(&format!(
        "{}{}{}{}",
        upstream("a", a_addr),
        upstream("b", b_addr),
        routes("a"),
        storage("")
    ));
    let mut to_one = Vec::new();
    let mut to_two = Vec::new();
    for i in 0..3 {
        to_one.push(accepted(&signed_post(gateway.proxy, "/hooks/one", &body(i))).expect("202"));
        to_two.push(body(10 + i));
        accepted(&signed_post(gateway.proxy, "/hooks/two", &body(10 + i))).expect("202");
    }
    // Upstream a is removed; route one now goes to b. Guards the removed-upstream
    // check in `delivery::attempt` (else a's events are retried without end).
    gateway.rewrite(&format!(
        "{}{}{}",
        upstream("b", b_addr),
        routes("b"),
        storage("")
    ));
    let reloaded = gateway.post_reload();
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
    let b = b_down.come_up("b", Behavior::default());
    drop(a_down);
    let arrived = wait_until(Duration::from_secs(20), || b.count() >= 3);
    assert!(arrived, "{}", gateway.log());
    let received: Vec<Vec<u8>> = b.received().into_iter().map(|r| r.body).collect();
    for body in &to_two {
        assert!(
            received.contains(body),
            "a pending event was lost by the reload"
        );
    }
    for id in &to_one {
        let ok = wait_until(Duration::from_secs(10), || {
            admin_get(gateway.admin, &format!("/events/{id}"))["status"] == "dead"
        });
        let shown = admin_get(gateway.admin, &format!("/events/{id}"));
        assert!(ok, "{shown}");
        let reason = shown["deliveries"][0]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("removed by a reload"), "{shown}");
    }
}

#[test]
fn a_queued_route_without_storage_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    let text = format!(
        "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n{}",
        queued_route("gh", "app", FAST_RETRY)
    );
    std::fs::write(&config, &text).unwrap();
    let output = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    // Guards the `[storage]` check in `config::compile`.
    assert_eq!(output.status.code(), Some(78), "{err}");
    let line = text
        .lines()
        .position(|l| l.starts_with("delivery"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(":{line}: routes[0].delivery")),
        "{err}"
    );
    assert!(err.contains("[storage]"), "{err}");
    // With [storage], check passes and shows the queue.
    std::fs::write(&config, format!("{text}{}", storage(""))).unwrap();
    let output = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("queued: 1000 attempts") && out.contains("storage: "),
        "{out}"
    );
}

#[test]
fn sigterm_finishes_the_attempt_in_progress_and_leaves_the_rest_for_the_next_start() {
    // The first attempt lasts 2 s: SIGTERM (a poll, then a `kill` process)
    // must land while it is in progress, and 700 ms left little room for
    // that on a loaded machine; 2 s stays well inside the 5 s grace.
    let app = Upstream::with("app", Behavior::delayed(Duration::from_secs(2)));
    let (dir, config) = own_process(&app, "5s", 1);
    let mut first = start_process(&dir, &config);
    let proxy = first.proxy;
    let bodies: Vec<Vec<u8>> = (0..5).map(body).collect();
    for body in &bodies {
        accepted(&signed_post(proxy, "/hooks/gh", body)).expect("202");
    }
    assert!(wait_until(Duration::from_secs(5), || app.count() == 1));
    let term = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // The grace (5 s) bounds the exit; the wait is longer so a slow exit
    // under load is not read as a grace overrun.
    let exited = wait_until(Duration::from_secs(15), || {
        matches!(first.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "not stopped within shutdown_grace");
    // Guards `queue.stop()` in the drain watcher (src/server.rs): without it the
    // queue goes on starting attempts during the grace period.
    assert_eq!(app.count(), 1, "no new attempt after SIGTERM");
    let _second = start_process(&dir, &config);
    // Four attempts of 2 s, one at a time, after a start.
    assert!(wait_until(Duration::from_secs(40), || app.count() >= 5));
    std::thread::sleep(Duration::from_millis(500));
    let received: Vec<Vec<u8>> = app.received().into_iter().map(|r| r.body).collect();
    // The attempt in progress at SIGTERM finished and was recorded: not sent again.
    assert_eq!(received.len(), 5, "each exactly once");
    for body in &bodies {
        assert!(received.contains(body));
    }
}

#[test]
fn a_direct_routes_fan_out_copy_is_stored_before_the_answer_and_survives_kill_9() {
    // A direct route with a fan-out upstream that is down, and a store.
    let app = Upstream::start("app");
    let copies_port = DeadPort::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nthreads = 2\n\
             fanout = {{ backoff = \"50ms\", max_backoff = \"200ms\", attempts = 100 }}\n\n{}{}\
             [[routes]]\nname = \"gh\"\npath = \"/hooks/gh\"\nupstream = [\"app\", \"copies\"]\n\
             verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n{}",
            upstream("app", app.addr),
            upstream("copies", copies_port.addr),
            storage("")
        ),
    )
    .unwrap();
    let mut first = start_process(&dir, &config);
    // The copy upstream's series exist before the first event (0, not missing).
    let backlog = |admin| {
        metric_value(
            &String::from_utf8_lossy(&get(admin, "/metrics").expect("metrics").body),
            "hookgate_queue_backlog",
            &[("route", "gh"), ("upstream", "copies")],
        )
    };
    assert_eq!(backlog(first.admin), Some(0.0));
    let payload = body(7);
    let answer = signed_post(first.proxy, "/hooks/gh", &payload);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(app.count(), 1);
    // The sender has its 2xx: the copy is on disk. Killed at once, no flush.
    // Breaks when `forward_primary` queues copies in memory although a store
    // is open (`store` in its `remember` step).
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let copies = copies_port.come_up("copies", Behavior::default());
    let second = start_process(&dir, &config);
    assert!(
        wait_until(Duration::from_secs(20), || copies.count() == 1),
        "the stored copy was not delivered after the restart"
    );
    let received = &copies.received()[0];
    assert_eq!(received.body, payload);
    assert_eq!(received.header("x-github-event"), Some("push"));
    assert!(received.header("x-hookgate-event-id").is_some());
    assert_eq!(app.count(), 1, "the primary is not sent again");
    // It is an event like any other: listed as delivered to `copies`.
    let listed = admin_get(second.admin, "/events?route=gh");
    let events = listed["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{listed}");
    assert!(wait_until(Duration::from_secs(5), || {
        admin_get(second.admin, "/events?route=gh&status=delivered")["events"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    }));
}

#[test]
fn a_full_store_sends_a_direct_routes_copies_through_the_memory_queue() {
    let app = Upstream::start("app");
    let copies = Upstream::start("copies");
    let gateway = Setup::new()
        .table(&storage("max_bytes = \"1KiB\""))
        .upstream(&app)
        .upstream(&copies)
        .fan_out("gh", "/hooks/gh", &["app", "copies"], "")
        .start();
    // Larger than the whole store: refused by it, yet the copy is not lost.
    // Breaks when `forward_primary` skips `queue_copies` after a refused store.
    let payload = bytes(4096, 3);
    let answer = post(gateway.proxy, "/hooks/gh", &[], &payload);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(wait_until(Duration::from_secs(10), || copies.count() == 1));
    assert_eq!(copies.received()[0].body, payload);
    assert!(copies.received()[0].header("x-hookgate-event-id").is_none());
    gateway.assert_metric("hookgate_store_errors_total", &[("kind", "full")], 1.0);
    assert_copy_delivered(&gateway);
}

/// Waits until the route `gh`'s copy to `copies` is counted delivered: the
/// gateway counts it once it has read the copy's answer, a moment after the
/// upstream recorded it.
#[track_caller]
fn assert_copy_delivered(gateway: &Gateway) {
    assert!(wait_until(Duration::from_secs(5), || gateway
        .try_metric(
            "hookgate_fanout_copies_total",
            &[
                ("route", "gh"),
                ("upstream", "copies"),
                ("result", "delivered")
            ],
        )
        .is_ok_and(|copies| copies == Some(1.0))));
}

#[test]
fn events_commands_exit_64_when_refused_and_69_when_the_gateway_is_unreachable() {
    let (_down, gateway) = gateway_before_its_upstream("");
    // Guards `ClientError::exit_code`.
    let (code, text) = gateway.events_cli(&["show", "ffffffffffffffffffff"]);
    assert_eq!(code, 64, "{text}");
    let nobody = DeadPort::new();
    let output = Command::new(BIN)
        .args([
            "events",
            "list",
            "-c",
            gateway.config_path.to_str().unwrap(),
        ])
        .args(["--admin", &nobody.addr.to_string()])
        .output()
        .expect("run hookgate events");
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{text}");
    assert!(text.contains("cannot reach the admin listener"), "{text}");
}

#[test]
fn fan_out_stored_false_keeps_copies_in_memory_beside_a_store() {
    let app = Upstream::start("app");
    let copies = Upstream::start("copies");
    let gateway = Setup::new()
        .server("fanout = { stored = false }")
        .table(&storage(""))
        .upstream(&app)
        .upstream(&copies)
        .fan_out("gh", "/hooks/gh", &["app", "copies"], "")
        .start();
    // Breaks when `forward_primary` ignores `FanoutConfig::stored`: the copy
    // then goes through the store and carries an event id.
    let answer = post(gateway.proxy, "/hooks/gh", &[], b"{\"n\":1}");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(wait_until(Duration::from_secs(10), || copies.count() == 1));
    assert!(copies.received()[0].header("x-hookgate-event-id").is_none());
    assert_copy_delivered(&gateway);
    gateway.assert_no_series(
        "hookgate_queue_backlog",
        &[("route", "gh"), ("upstream", "copies")],
    );
}
