//! Editing the config while the real binary runs: changes take effect within
//! 2 s of the file write without dropping a request; broken edits are refused
//! and the old config keeps serving; SIGHUP and `POST /reload` work.

mod common;

use std::time::Duration;

use common::*;

/// How long a poll waits for a reload to show. Every wait on it is for
/// something that must happen (none waits for something not to), so a long
/// bound costs nothing when the gateway is quick and keeps a busy 2-core CI
/// machine (debounce, re-read, swap under traffic) from failing the test.
const WITHIN: Duration = Duration::from_secs(10);

fn routes(a: &Upstream, b: &Upstream, body: &str) -> String {
    format!(
        "[upstreams.a]\ntargets = [\"{}\"]\n[upstreams.b]\ntargets = [\"{}\"]\n{body}",
        a.addr, b.addr
    )
}

fn route(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

/// Rewrites the config with another `[server]` section and `rest`, reloads,
/// and returns the `POST /reload` answer.
fn reload_with_server(gateway: &Gateway, server: &str, rest: &str) -> serde_json::Value {
    gateway.rewrite_whole(&format!("{server}\n{rest}"));
    gateway.post_reload().json()
}

/// The upstream that answered a POST to `path` with 200; `None` for another
/// status or a failed exchange (polled: never panics).
fn answered_by(gateway: &Gateway, path: &str) -> Option<String> {
    let response = try_post(gateway.proxy, path, &[], b"{}").ok()?;
    (response.status == 200).then(|| response.header("x-upstream").unwrap_or("").to_string())
}

/// The status of a POST to `path`; 0 when the exchange failed (polled: never panics).
fn status_of(gateway: &Gateway, path: &str) -> u16 {
    try_post(gateway.proxy, path, &[], b"{}").map_or(0, |response| response.status)
}

#[test]
fn file_edits_take_effect_within_two_seconds() {
    // Guards the file watch in `ReloadTriggers::start` (reload.rs): without
    // the watcher no edit applies and the first poll times out.

    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let base = |x_upstream: &str, secret: &str, rate: &str, extra_route: &str| {
        routes(
            &a,
            &b,
            &format!(
                "{}{}{}{}",
                route("x", x_upstream, ""),
                route(
                    "signed",
                    "a",
                    &format!(
                        "verify = {{ scheme = \"github\", secrets = [\"literal:{secret}\"] }}"
                    )
                ),
                route(
                    "limited",
                    "a",
                    &format!("rate_limit = {{ rate = \"{rate}\", per = \"route\" }}")
                ),
                extra_route
            ),
        )
    };
    let gateway = Gateway::start(&base("a", "secret-one", "1000/s", ""));
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    assert_eq!(post(gateway.proxy, "/added", &[], b"{}").status, 404);

    // Add a route.
    gateway.rewrite(&base("a", "secret-one", "1000/s", &route("added", "b", "")));
    assert!(
        wait_until(WITHIN, || answered_by(&gateway, "/added").as_deref()
            == Some("b")),
        "route not added:\n{}",
        gateway.log()
    );

    // Change a route's upstream.
    gateway.rewrite(&base("b", "secret-one", "1000/s", &route("added", "b", "")));
    assert!(
        wait_until(WITHIN, || answered_by(&gateway, "/x").as_deref()
            == Some("b")),
        "upstream not changed"
    );

    // Change a secret.
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    // Polled: a failed exchange is 0, never a panic.
    let send_signed = |secret: &str| {
        try_post(
            gateway.proxy,
            "/signed",
            &[("X-Hub-Signature-256", &github_signature(secret, body))],
            body,
        )
        .map_or(0, |response| response.status)
    };
    assert_eq!(send_signed("secret-one"), 200);
    gateway.rewrite(&base("b", "secret-two", "1000/s", &route("added", "b", "")));
    assert!(
        wait_until(WITHIN, || send_signed("secret-two") == 200),
        "new secret not accepted"
    );
    assert_eq!(
        send_signed("secret-one"),
        401,
        "the old secret is refused after the change"
    );

    // Tighten a rate limit.
    gateway.rewrite(&base("b", "secret-two", "1/min", &route("added", "b", "")));
    let limited = || {
        (0..3)
            .map(|_| status_of(&gateway, "/limited"))
            .any(|status| status == 429)
    };
    assert!(
        wait_until(WITHIN, limited),
        "the tighter limit did not apply"
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        0.0,
    );
    assert!(
        gateway.metric_required("hookgate_config_reloads_total", &[("result", "success")]) >= 4.0
    );
}

/// README, reload: "while no store runs ... a file that makes a route
/// `delivery = "queued"` is refused (key `routes[N].delivery`) ... the route
/// keeps its running delivery meanwhile".
#[test]
fn a_queued_route_is_refused_while_no_store_runs() {
    // Guards `config::queued_without_running_store` in `Reloader::load_and_swap`:
    // without it the reload is accepted (`restart_required: ["storage"]`) and
    // route x answers 503 "no store is open" until a restart.
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    let storage = format!(
        "[storage]\npath = \"{}\"\n",
        gateway.dir.path().join("data").display()
    );
    let queued = route("x", "a", "delivery = \"queued\"");
    gateway.rewrite(&format!("{storage}{}", routes(&a, &b, &queued)));
    let refused = gateway.post_reload();
    refused.expect_status(422);
    assert_eq!(refused.json()["status"], "refused");
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("hookgate.toml")
            && error.contains("routes[0].delivery")
            && error.contains("restart hookgate"),
        "{error}"
    );
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("a"),
        "route x stays direct"
    );
    assert!(get(gateway.admin, "/config").unwrap().json()["storage"].is_null());
    // The same file is accepted by a process that starts with it.
    let started = Gateway::start(&format!("{storage}{}", routes(&a, &b, &queued)));
    assert_eq!(status_of(&started, "/x"), 202);
}

/// README, reload: "while no store runs ... a file that makes a route
/// `delivery = "queued"` is refused (key `routes[N].delivery`)", and the
/// config section's "report every problem at once": with two queued routes
/// and other edits, both keys are named, nothing of the file applies, the
/// refusal is counted, and a valid file is accepted after it.
#[test]
fn every_queued_route_is_named_and_a_valid_file_applies_after_the_refusal() {
    // Guards the loop over every route in `config::queued_without_running_store`:
    // stopping at the first queued route names only `routes[0].delivery`.
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let direct = format!("{}{}", route("x", "a", ""), route("y", "a", ""));
    let gateway = Gateway::start_with_server("watch = false", &routes(&a, &b, &direct));
    let queued = format!(
        "[storage]\npath = \"data\"\n{}",
        routes(
            &a,
            &b,
            &format!(
                "{}{}{}",
                route("x", "b", "delivery = \"queued\""),
                route("y", "b", "delivery = \"queued\""),
                route("z", "b", ""),
            ),
        )
    );
    gateway.rewrite(&queued);
    let refused = gateway.post_reload();
    refused.expect_status(422);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("routes[0].delivery") && error.contains("routes[1].delivery"),
        "{error}"
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "success")],
        0.0,
    );
    // Nothing of the refused file applies: x and y stay on a, z is unknown.
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    assert_eq!(answered_by(&gateway, "/y").as_deref(), Some("a"));
    assert_eq!(status_of(&gateway, "/z"), 404);
    let config = get(gateway.admin, "/config").unwrap().json();
    assert!(config["storage"].is_null(), "{config}");
    assert_eq!(
        config["routes"].as_array().map(Vec::len),
        Some(2),
        "{config}"
    );
    // The same edits without queued delivery apply; [storage] waits for a restart.
    let direct = queued.replace("delivery = \"queued\"", "");
    gateway.rewrite(&direct);
    let accepted = gateway.post_reload();
    accepted.expect_status(200);
    let report = &accepted.json()["report"];
    assert_eq!(report["restart_required"], serde_json::json!(["storage"]));
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("b"));
    assert_eq!(answered_by(&gateway, "/z").as_deref(), Some("b"));
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "success")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        1.0,
    );
}

/// README, reload: the refusal is only "while no store runs". A process that
/// started with `[storage]` accepts a reload that makes a route queued, also
/// when the same file changes a start-only setting (`restart_required`), or
/// `[storage]` itself (the running store stays).
#[test]
fn a_queued_route_is_accepted_when_the_store_runs() {
    // Guards the `config.storage.is_some()` early return in
    // `config::queued_without_running_store`: without it this reload is refused.
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let storage = "[storage]\npath = \"data\"\n";
    let gateway = Gateway::start_with_server(
        "watch = false",
        &format!("{storage}{}", routes(&a, &b, &route("x", "a", ""))),
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    let queued = routes(&a, &b, &route("x", "a", "delivery = \"queued\""));
    let report = reload_with_server(
        &gateway,
        &gateway
            .server_section()
            .replace("threads = 2", "threads = 1"),
        &format!("{storage}{queued}"),
    );
    assert_eq!(report["status"], "reloaded", "{report}");
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.threads"]),
        "{report}"
    );
    assert!(wait_until(WITHIN, || status_of(&gateway, "/x") == 202));
    assert!(
        wait_until(WITHIN, || a.count() >= 2),
        "the queued delivery did not arrive"
    );
    // Another [storage] path: it waits for a restart, the running store stays
    // and the route stays queued.
    gateway.rewrite(&format!("[storage]\npath = \"elsewhere\"\n{queued}"));
    let accepted = gateway.post_reload();
    accepted.expect_status(200);
    let report = &accepted.json()["report"];
    assert_eq!(report["restart_required"], serde_json::json!(["storage"]));
    assert_eq!(status_of(&gateway, "/x"), 202);
    let storage = &get(gateway.admin, "/config").unwrap().json()["storage"];
    assert!(
        storage["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("data")),
        "{storage}"
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        0.0,
    );
}

/// README, reload: a refused file names every problem at once, "the running
/// `[cluster] claim_lease` stays, a new file whose deduped upstreams'
/// `response_timeout` outgrows it is refused (key `cluster.claim_lease`, for
/// each such route)" and "while no store runs ... a file that makes a route
/// `delivery = "queued"` is refused (key `routes[N].delivery`, for each such
/// route)". Guards `Config::load_for_reload` in `Reloader::load_and_swap`
/// and the per-route loop of `config::check_claim_lease`: a reload that
/// stops at the first kind of problem, or at one route, loses lines here.
#[test]
fn a_refused_reload_names_every_problem_of_both_kinds() {
    let redis = common::redis::RedisServer::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dedupe = "dedupe = { key = \"header:X-Delivery\" }";
    let file = |timeout: &str, storage: &str, x: &str| {
        format!(
            "[cluster]\nredis = \"{}\"\nclaim_lease = \"15s\"\n{storage}\
             [upstreams.a]\ntargets = [\"{}\"]\n\
             [upstreams.slow]\ntargets = [\"{}\"]\nresponse_timeout = \"{timeout}\"\ntimeout = \"{timeout}\"\n{}{}{}",
            redis.url(),
            a.addr,
            b.addr,
            route("x", "a", x),
            route("d1", "slow", dedupe),
            route("d2", "slow", dedupe),
        )
    };
    let gateway = Gateway::start_with_server("watch = false", &file("10s", "", ""));
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    gateway.rewrite(&file(
        "50s",
        "[storage]\npath = \"data\"\n",
        "delivery = \"queued\"",
    ));
    let refused = gateway.post_reload();
    refused.expect_status(422);
    assert_eq!(refused.json()["status"], "refused");
    let error = refused.json()["error"].as_str().unwrap().to_string();
    let lines: Vec<&str> = error.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{error}");
    let config_path = gateway.config_path.display().to_string();
    for line in &lines {
        assert!(line.trim_start().starts_with(&config_path), "{line}");
    }
    assert!(
        lines[0]
            .contains("routes[0].delivery: route \"x\" is queued, but this process runs no store")
            && lines[0].contains("restart hookgate"),
        "{error}"
    );
    for (line, name) in lines[1..].iter().zip(["d1", "d2"]) {
        assert!(
            line.contains("cluster.claim_lease: the running claim_lease 15s is shorter than the response_timeout 50s of upstream \"slow\"")
                && line.contains(&format!("(route \"{name}\" dedupes)"))
                && line.contains("lower that response_timeout to at most 14s 750ms, or restart hookgate with a claim_lease of at least 50s 250ms"),
            "{error}"
        );
    }
    // SIGHUP is refused the same way.
    gateway.signal("HUP");
    gateway.assert_metric_within(
        WITHIN,
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        2.0,
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "success")],
        0.0,
    );
    // The old config serves on: x stays direct.
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    assert!(get(gateway.admin, "/config").unwrap().json()["storage"].is_null());
}

/// README, reload: "while no store runs ... a file that makes a route
/// `delivery = "queued"` is refused ... restart to add it", also when the file
/// has no `[storage]` table: adding one would only be refused again. `check`
/// (and a start) still says to add `[storage]`. Guards the `no_store_runs`
/// branch in `config::compile`: without it the reload says "add [storage]".
#[test]
fn a_queued_route_without_storage_on_a_storeless_process_is_told_to_restart() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    let queued = routes(&a, &b, &route("x", "a", "delivery = \"queued\""));
    gateway.rewrite(&queued);
    let refused = gateway.post_reload();
    refused.expect_status(422);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("routes[0].delivery: route \"x\" is queued, but this process runs no store")
            && error.contains("restart hookgate with a [storage] table"),
        "{error}"
    );
    assert!(!error.contains("add [storage]"), "{error}");
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        1.0,
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    // At start the remedy is to add the table.
    let (code, _, stderr) = check_config(&format!("{}\n{queued}", gateway.server_section()));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("there is no [storage] table; add [storage] path = \"data\""),
        "{stderr}"
    );
}

#[test]
fn an_invalid_edit_is_refused_and_the_old_config_keeps_serving() {
    // Guards `Reloader::load_and_swap` validating before the swap: swapping a
    // config with an unknown upstream loses route x.

    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start(&routes(&a, &b, &route("x", "a", "")));
    gateway.rewrite(&routes(
        &a,
        &b,
        &format!("{}{}", route("x", "a", ""), route("y", "nope", "")),
    ));
    // Counted by the watcher after its debounce: waited for as long as any reload.
    gateway.assert_metric_within(
        WITHIN,
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        1.0,
    );
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("a"),
        "old routes keep working"
    );
    assert_eq!(post(gateway.proxy, "/y", &[], b"{}").status, 404);
    assert_eq!(
        get(gateway.admin, "/readyz").unwrap().status,
        200,
        "still ready"
    );
    // The error line is written just after the failure is counted: polled.
    gateway.wait_log(WITHIN, "routes[1].upstream");
    let log = gateway.log();
    assert!(
        log.contains("configuration reload refused")
            && log.contains("hookgate.toml:")
            && log.contains("routes[1].upstream"),
        "the log names the file, line and key:\n{log}"
    );
    // A syntax error too.
    gateway.rewrite("[[routes]\nname = ");
    gateway.assert_metric_within(
        WITHIN,
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        2.0,
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
}

/// README, "Signals": "SIGHUP | reload the config file", from the moment
/// the gateway says it listens. With `watch = false`, an edit and a SIGHUP
/// sent as soon as the `listening` lines are out (a config-map reloader, an
/// operator's script) must be applied, eight times over. The log is read
/// without pause and the signal comes from a shell already waiting to send it
/// (no fork then), so it goes out within a millisecond or so of the line.
/// Guards keeping the SIGHUP stream `take_over_sighup` makes (server.rs) for
/// `ReloadTriggers`: it was dropped there and a new one made only when the
/// reload service started, after the listeners were logged, and a SIGHUP in
/// between was swallowed by tokio's handler (13 of 15 lost in a hostile pass).
#[test]
fn a_sighup_right_after_the_listening_lines_is_not_lost() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nthreads = 2\nwatch = false\n\n";
    for attempt in 1..=8 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.toml");
        let text =
            |upstream: &str| format!("{server}{}", routes(&a, &b, &route("x", upstream, "")));
        std::fs::write(&path, text("a")).unwrap();
        let log_path = dir.path().join("gateway.log");
        let mut child = spawn_binary(&["serve", "-c", path.to_str().unwrap()], &dir);
        let mut sender = std::process::Command::new("sh")
            .args(["-c", "read _ && kill -HUP \"$0\"", &child.id().to_string()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut admin = None;
        while admin.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {attempt}: no listeners"
            );
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            admin = announced_listeners(&log)
                .into_iter()
                .find(|(role, _)| role == "admin")
                .map(|(_, addr)| addr);
        }
        std::fs::write(dir.path().join("next.toml"), text("b")).unwrap();
        std::fs::rename(dir.path().join("next.toml"), &path).unwrap();
        use std::io::Write as _;
        sender.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(sender.wait().unwrap().success());
        let admin = admin.unwrap();
        let applied = wait_until(WITHIN, || {
            get(admin, "/config").is_ok_and(|answer| {
                answer.status == 200 && answer.json()["routes"][0]["upstream"][0] == "b"
            })
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            applied,
            "attempt {attempt}: a SIGHUP sent once the gateway listened was lost; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}

#[test]
fn sighup_and_post_reload_apply_edits_when_watching_is_off() {
    // Guards `self.watch` in `ReloadTriggers::start` (reload.rs): watching
    // regardless reloads the edit before any trigger (checked), and the SIGHUP
    // and POST /reload arms below.
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    // A watching control gets the same edit just after: once it serves the
    // edit, a watcher would have seen ours too (a poll, not a fixed sleep).
    let control = Gateway::start(&routes(&a, &b, &route("x", "a", "")));
    gateway.rewrite(&routes(&a, &b, &route("x", "b", "")));
    control.rewrite(&routes(&a, &b, &route("x", "b", "")));
    assert!(
        wait_until(WITHIN, || answered_by(&control, "/x").as_deref()
            == Some("b")),
        "the watching control did not reload"
    );
    drop(control);
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("a"),
        "no reload without a trigger when watch = false"
    );

    gateway.signal("HUP");
    assert!(
        wait_until(WITHIN, || answered_by(&gateway, "/x").as_deref()
            == Some("b")),
        "SIGHUP did not reload"
    );

    gateway.rewrite(&routes(&a, &b, &route("x", "a", "")));
    let reloaded = gateway.post_reload();
    reloaded.expect_status(200);
    let report = reloaded.json();
    assert_eq!(report["status"], "reloaded");
    assert_eq!(report["report"]["trigger"], "admin");
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("a"),
        "POST /reload applies before answering"
    );

    gateway.rewrite(&routes(&a, &b, &route("x", "missing", "")));
    let refused = gateway.post_reload();
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json()["status"], "refused");
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("routes[0].upstream") && error.contains("hookgate.toml:"),
        "{error}"
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));

    // Settings that need a restart are reported, and the old value stays.
    let moved = gateway
        .server_section()
        .replace("threads = 2", "threads = 1");
    let report = reload_with_server(&gateway, &moved, &routes(&a, &b, &route("x", "b", "")));
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.threads"])
    );
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("b"),
        "the rest of the edit applies"
    );
    // `/config` shows the value that runs, not the file's.
    assert_eq!(
        get(gateway.admin, "/config").unwrap().json()["server"]["threads"],
        2
    );

    // A new `listen` waits for a restart: the old listener keeps serving, and
    // /readyz says ready because it probes the listeners that serve, not the
    // ones the new config names. Breaks when `Admin::unbound_listener` reads
    // the running config. `threads = 1` is still not applied, so it is still
    // reported (compared with what runs, not with the last file: guards
    // `keep_start_only` in reload.rs).
    // Another address, never bound: a restart would listen there.
    let moved = gateway
        .server_section()
        .replace("threads = 2", "threads = 1")
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.2:0\"]");
    assert_ne!(moved, gateway.server_section());
    let report = reload_with_server(&gateway, &moved, &routes(&a, &b, &route("x", "b", "")));
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.listen", "server.threads"])
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("b"));
    assert_eq!(get(gateway.admin, "/readyz").unwrap().status, 200);
}

#[test]
fn get_config_shows_the_active_config_without_secrets() {
    // Guards `Config::to_redacted_json` (config/present.rs): printing the
    // secret references resolved puts the secret in /config.

    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let secret = "do-not-show-this-secret";
    let gateway = Gateway::start(&routes(
        &a,
        &b,
        &route("x", "a", &format!("verify = {{ scheme = \"github\", secrets = [\"literal:{secret}\"] }}\nallow = [\"127.0.0.0/8\"]")),
    ));
    let config = get(gateway.admin, "/config").unwrap();
    assert_eq!(config.status, 200);
    let text = String::from_utf8_lossy(&config.body).into_owned();
    assert!(!text.contains(secret), "a secret in /config:\n{text}");
    let json = config.json();
    let file = std::fs::read(&gateway.config_path).unwrap();
    assert_eq!(
        json["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file))
    );
    assert_eq!(json["routes"][0]["name"], "x");
    assert_eq!(json["routes"][0]["verify"]["scheme"], "github");
    assert_eq!(json["upstreams"]["a"]["targets"][0], a.addr.to_string());
    assert!(json["loaded_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn limiter_state_of_unchanged_routes_survives_a_reload() {
    // Guards `kept_limiter` in `Snapshot::rebuild` (state.rs): a new limiter
    // per reload hands out a fresh burst.

    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let limited = route("limited", "a", "rate_limit = { rate = \"1/h\", burst = 2 }");
    let gateway = Gateway::start_with_server("watch = false", &routes(&a, &b, &limited));
    for _ in 0..2 {
        assert_eq!(post(gateway.proxy, "/limited", &[], b"{}").status, 200);
    }
    assert_eq!(post(gateway.proxy, "/limited", &[], b"{}").status, 429);
    gateway.rewrite(&routes(
        &a,
        &b,
        &format!("{limited}{}", route("other", "b", "")),
    ));
    assert_eq!(gateway.post_reload().status, 200);
    assert_eq!(answered_by(&gateway, "/other").as_deref(), Some("b"));
    assert_eq!(
        post(gateway.proxy, "/limited", &[], b"{}").status,
        429,
        "the bucket was not reset by the reload"
    );
}

#[test]
fn ten_reloads_under_steady_traffic_lose_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    let proxy = gateway.proxy;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client_stop = stop.clone();
    let client = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let started = std::time::Instant::now();
        // Bounded in count and time.
        while !client_stop.load(std::sync::atomic::Ordering::SeqCst)
            && answers.len() < 20_000
            && started.elapsed() < Duration::from_secs(60)
        {
            let response = post(proxy, "/x", &[], b"{\"n\":1}");
            answers.push((
                response.status,
                response.header("x-upstream").unwrap_or("").to_string(),
            ));
        }
        answers
    });
    for i in 0..10 {
        let upstream = if i % 2 == 0 { "b" } else { "a" };
        gateway.rewrite(&routes(
            &a,
            &b,
            &format!("{}\n# edit {i}\n", route("x", upstream, "")),
        ));
        let reloaded = gateway.post_reload();
        assert_eq!(reloaded.status, 200, "reload {i}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = client.join().unwrap();
    assert!(
        answers.len() >= 20,
        "too little traffic to mean anything: {}",
        answers.len()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(answers
        .iter()
        .all(|(_, upstream)| upstream == "a" || upstream == "b"));
    assert!(a.count() > 0 && b.count() > 0, "both configs answered");
    assert_eq!(a.count() + b.count(), answers.len());
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "success")],
        10.0,
    );
}

/// Secret and IP-list files kept outside the config's directory, as a
/// Kubernetes secret mount lays them out: `github -> ..data/github`, with
/// `..data -> ..v1` swapped atomically on rotation.
struct MountedFiles {
    dir: tempfile::TempDir,
    version: std::cell::Cell<u32>,
}

impl MountedFiles {
    fn new(secret: &str, ip_list: &str) -> MountedFiles {
        let files = MountedFiles {
            dir: tempfile::tempdir().unwrap(),
            version: std::cell::Cell::new(0),
        };
        files.rotate(secret);
        std::os::unix::fs::symlink("..data/github", files.dir.path().join("github")).unwrap();
        files.write_ip_list(ip_list);
        files
    }

    fn secret_reference(&self) -> String {
        format!("file:{}", self.dir.path().join("github").display())
    }

    fn ip_list_path(&self) -> std::path::PathBuf {
        self.dir.path().join("office.txt")
    }

    /// The kubelet's atomic writer: a new versioned directory, then `..data` renamed over.
    fn rotate(&self, secret: &str) {
        let version = self.version.get() + 1;
        self.version.set(version);
        let versioned = self.dir.path().join(format!("..v{version}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("github"), format!("{secret}\n")).unwrap();
        let temp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{version}"), &temp).unwrap();
        std::fs::rename(&temp, self.dir.path().join("..data")).unwrap();
    }

    /// Edited in place, the way `echo ... > file` does it.
    fn write_ip_list(&self, text: &str) {
        std::fs::write(self.ip_list_path(), text).unwrap();
    }

    fn config(&self, upstream: &Upstream) -> String {
        format!(
            "[ip_sets]\noffice = {{ file = \"{}\" }}\n[upstreams.a]\ntargets = [\"{}\"]\n{}{}",
            self.ip_list_path().display(),
            upstream.addr,
            route(
                "signed",
                "a",
                &format!(
                    "verify = {{ scheme = \"github\", secrets = [\"{}\"] }}",
                    self.secret_reference()
                )
            ),
            route("office", "a", "allow = [\"office\"]"),
        )
    }
}

const BODY: &[u8] = br#"{"zen":"Rotate often."}"#;

/// The status of a signed POST to `/signed`; 0 when the exchange failed
/// (polled: never panics).
fn signed_status(gateway: &Gateway, secret: &str) -> u16 {
    try_post(
        gateway.proxy,
        "/signed",
        &[("X-Hub-Signature-256", &github_signature(secret, BODY))],
        BODY,
    )
    .map_or(0, |response| response.status)
}

/// A stream of requests to `/office` on another thread, bounded in count and time.
fn office_traffic(
    gateway: &Gateway,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<u16>>,
) {
    let proxy = gateway.proxy;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client_stop = stop.clone();
    let client = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut statuses = Vec::new();
        while !client_stop.load(std::sync::atomic::Ordering::SeqCst)
            && statuses.len() < 20_000
            && started.elapsed() < Duration::from_secs(60)
        {
            statuses.push(post(proxy, "/office", &[], b"{}").status);
        }
        statuses
    });
    (stop, client)
}

/// With `watch = true`: a `file:` secret rotated the Kubernetes way and an
/// `[ip_sets]` file edited in place both apply within 2 s, under a stream of
/// requests that all get a definite answer. Guards `reload::Interest::matches`
/// (the `..data` swap touches no watched file name) and the fingerprint
/// comparison in `Reloader::load_and_swap` (the config text never changes).
#[test]
fn a_rotated_secret_file_and_an_edited_ip_list_apply_under_traffic() {
    let upstream = Upstream::start("a");
    let files = MountedFiles::new("secret-one", "127.0.0.0/8\n");
    let gateway = Gateway::start(&files.config(&upstream));
    assert_eq!(signed_status(&gateway, "secret-one"), 200);
    assert_eq!(signed_status(&gateway, "secret-two"), 401);
    let (stop, client) = office_traffic(&gateway);

    files.rotate("secret-two");
    assert!(
        wait_until(WITHIN, || signed_status(&gateway, "secret-two") == 200),
        "the rotated secret was not picked up:\n{}",
        gateway.log()
    );
    assert_eq!(
        signed_status(&gateway, "secret-one"),
        401,
        "the old secret is refused"
    );

    files.write_ip_list("# the office moved\n10.0.0.0/8\n");
    assert!(
        wait_until(WITHIN, || status_of(&gateway, "/office") == 403),
        "the edited IP list was not picked up:\n{}",
        gateway.log()
    );
    files.write_ip_list("127.0.0.1/32\n");
    assert!(
        wait_until(WITHIN, || status_of(&gateway, "/office") == 200),
        "the IP list was not picked up again"
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = client.join().unwrap();
    assert!(
        statuses.len() >= 20,
        "too little traffic: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "only allowed or ip_not_allowed: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 403)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(statuses.contains(&403) && statuses.last() == Some(&200));
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        0.0,
    );
    let log = gateway.log();
    assert!(
        !log.contains("secret-one") && !log.contains("secret-two"),
        "{log}"
    );
}

/// With `watch = false`: a rotated secret file changes nothing until SIGHUP or
/// `POST /reload`, which re-read it although the config text is unchanged; a
/// reload with nothing changed says so. Guards `config.fingerprint` (was the
/// text-only hash) in `Reloader::load_and_swap`.
#[test]
fn sighup_and_post_reload_reread_referenced_files() {
    let upstream = Upstream::start("a");
    let files = MountedFiles::new("secret-one", "127.0.0.0/8\n");
    let gateway = Gateway::start_with_server("watch = false", &files.config(&upstream));
    // A watching control on the same files: once it has the rotated secret, a
    // watcher would have re-read it here too (a poll, not a fixed sleep).
    let control = Gateway::start(&files.config(&upstream));
    files.rotate("secret-two");
    assert!(
        wait_until(WITHIN, || signed_status(&control, "secret-two") == 200),
        "the watching control did not re-read the secret file:\n{}",
        control.log()
    );
    drop(control);
    assert_eq!(
        signed_status(&gateway, "secret-one"),
        200,
        "no reload without a trigger"
    );

    gateway.signal("HUP");
    assert!(
        wait_until(WITHIN, || signed_status(&gateway, "secret-two") == 200),
        "SIGHUP did not re-read the secret file:\n{}",
        gateway.log()
    );
    assert_eq!(signed_status(&gateway, "secret-one"), 401);

    files.rotate("secret-three");
    let reloaded = gateway.post_reload();
    reloaded.expect_status(200);
    let report = reloaded.json();
    assert_eq!(report["report"]["unchanged"], false);
    assert!(
        report["report"]["changes"][0]
            .as_str()
            .is_some_and(|c| c.contains("refers to changed")),
        "{report}"
    );
    assert_eq!(signed_status(&gateway, "secret-three"), 200);
    assert_eq!(gateway.post_reload().json()["report"]["unchanged"], true);
    assert!(!String::from_utf8_lossy(&reloaded.body).contains("secret-"));
}

/// A truncated config (an editor writing in place) is refused by the reload:
/// the old routes keep serving and the failure is counted. Guards the empty-file
/// check in `Config::from_toml`.
#[test]
fn a_truncated_config_is_refused_on_reload() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start(&routes(&a, &b, &route("x", "a", "")));
    std::fs::write(&gateway.config_path, "").unwrap();
    // Counted by the watcher after its debounce: waited for as long as any reload.
    gateway.assert_metric_within(
        WITHIN,
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        1.0,
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
    assert_eq!(get(gateway.admin, "/readyz").unwrap().status, 200);
    let refused = gateway.post_reload();
    assert_eq!(refused.status, 422);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("the file is empty"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // No routes on purpose is accepted.
    gateway.rewrite_whole(&format!(
        "{}allow_no_routes = true\n{}",
        gateway.server_section(),
        routes(&a, &b, "")
    ));
    assert!(
        wait_until(WITHIN, || status_of(&gateway, "/x") == 404),
        "allow_no_routes was refused:\n{}",
        gateway.log()
    );
}

/// Whether process `pid` has `path` open (its `/proc/PID/fd` links).
fn has_open(pid: u32, path: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

/// Serves one read of the FIFO at `fifo` by process `pid` with no bytes:
/// waits (up to `WITHIN`) for the gateway to open it, runs `meanwhile` while
/// the reader is attached, closes it (the reader sees an empty file), then
/// waits until the reader has closed its end, so the next read served is the
/// next one the gateway makes (a reader blocked in `open` holds no fd).
fn serve_empty_read(pid: u32, fifo: &std::path::Path, meanwhile: impl FnOnce()) {
    let (opened, attached) = std::sync::mpsc::channel();
    let path = fifo.to_path_buf();
    // Opening a FIFO for writing blocks until a reader opens it: on a thread,
    // so the wait is bounded here (a thread still blocked ends with the test).
    std::thread::spawn(move || {
        let _ = opened.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    let writer = attached
        .recv_timeout(WITHIN)
        .expect("the gateway did not read the file")
        .expect("open the FIFO for writing");
    meanwhile();
    drop(writer);
    assert!(
        wait_until(WITHIN, || !has_open(pid, fifo)),
        "the gateway kept the FIFO open"
    );
}

/// A file caught half-written by a reload (emptied by an in-place write, so
/// refused) and completed right after must still be picked up. The reload
/// used to fingerprint the refused attempt after loading, i.e. the completed
/// file, and the watcher then skipped that good file as already refused.
/// Guards `attempted` being read before `load_and_swap` in `Reloader::reload`.
/// A FIFO stands in for the file so the test decides what each read sees: the
/// watcher's check, the reload's and the load's fingerprint read get an empty
/// file, and the completed list is renamed in while the load compiles the
/// empty one (before the fix: while the refused attempt was fingerprinted).
#[test]
fn a_file_completed_just_after_a_refused_reading_is_picked_up() {
    let upstream = Upstream::start("a");
    let files = MountedFiles::new("secret-one", "127.0.0.0/8\n");
    let gateway = Gateway::start(&files.config(&upstream));
    assert_eq!(status_of(&gateway, "/office"), 200);

    let fifo = files.dir.path().join("office.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let completed = files.dir.path().join("office.completed");
    std::fs::write(&completed, "# the office moved\n10.0.0.0/8\n").unwrap();
    std::fs::rename(&fifo, files.ip_list_path()).unwrap();
    let ip_list = files.ip_list_path();
    for _ in 0..2 {
        serve_empty_read(gateway.pid(), &ip_list, || {});
    }
    serve_empty_read(gateway.pid(), &ip_list, || {
        std::fs::rename(&completed, &ip_list).unwrap();
    });
    assert!(
        wait_until(WITHIN, || status_of(&gateway, "/office") == 403),
        "the completed IP list was never picked up:\n{}",
        gateway.log()
    );
}

/// `ShdPnd` and `SigPnd` of process `pid` both empty: no signal waits to be
/// delivered (`false` once the process is gone).
fn no_signal_pending(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status.contains("State:")
            && !status.contains("State:\tZ")
            && status
                .lines()
                .filter(|line| line.starts_with("ShdPnd:") || line.starts_with("SigPnd:"))
                .all(|line| line.trim_end().ends_with(&"0".repeat(16)))
    })
}

/// A `hookgate serve` held in its config load: the `[ip_sets]` file is a
/// FIFO, so the load waits, holding it open, until `go` is sent; then the
/// FIFO (and the file renamed over it) yields `list`.
struct Loading {
    child: std::process::Child,
    dir: tempfile::TempDir,
    go: std::sync::mpsc::Sender<()>,
}

impl Loading {
    /// Starts the binary and returns once it has opened the FIFO.
    fn start(upstream: &Upstream, list: &'static str) -> Loading {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("office.txt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let config = dir.path().join("hookgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nwatch = false\n\
                 [ip_sets]\noffice = {{ file = \"{}\" }}\n[upstreams.a]\ntargets = [\"{}\"]\n{}",
                fifo.display(),
                upstream.addr,
                route("office", "a", "allow = [\"office\"]"),
            ),
        )
        .unwrap();
        // Serves the first read of the FIFO once the test says so. Before the
        // list is written, a regular file with the same list is renamed over the
        // FIFO: the reader keeps the FIFO it opened, and every later read (the
        // load reads the file more than once, the reload again) gets the file.
        // Opening a FIFO for writing blocks until a reader opens it: on a thread
        // (still blocked at the end, it ends with the test).
        let (attached, reading) = std::sync::mpsc::channel();
        let (go, write_now) = std::sync::mpsc::channel::<()>();
        let regular = dir.path().join("office.regular");
        std::fs::write(&regular, list).unwrap();
        std::thread::spawn(move || {
            let Ok(mut writer) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                return;
            };
            let _ = attached.send(());
            let _ = write_now.recv_timeout(WITHIN);
            let _ = std::fs::rename(&regular, &fifo);
            let _ = std::io::Write::write_all(&mut writer, list.as_bytes());
        });
        let child = spawn_binary(&["serve", "-c", config.to_str().unwrap()], &dir);
        reading
            .recv_timeout(WITHIN)
            .expect("the gateway did not read the IP list");
        Loading { child, dir, go }
    }
}

/// Sends `signal` (`-HUP`, `-TERM`) to `child` with kill(1).
fn send_signal(child: &std::process::Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// How `child` ended, waiting up to `within`; `None` (and killed) when it did not.
fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let ended = wait_until(within, || child.try_wait().is_ok_and(|s| s.is_some()));
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    child.wait().ok()
}

/// README, "Signals": SIGHUPs while an invalid config loads neither end the
/// process nor keep it waiting: it exits with the config error (78), as
/// without them. The list in `[ip_sets]` is not an address.
#[test]
fn sighups_while_an_invalid_config_loads_end_in_the_config_error() {
    let upstream = Upstream::start("a");
    let mut loading = Loading::start(&upstream, "not-an-address\n");
    for _ in 0..20 {
        send_signal(&loading.child, "-HUP");
    }
    let delivered = wait_until(WITHIN, || no_signal_pending(loading.child.id()));
    let _ = loading.go.send(());
    let ended = wait_exit(&mut loading.child, WITHIN);
    let log = std::fs::read_to_string(loading.dir.path().join("gateway.log")).unwrap_or_default();
    assert!(
        delivered,
        "the SIGHUPs were not delivered, or ended the process:\n{log}"
    );
    assert_eq!(ended.and_then(|s| s.code()), Some(78), "{ended:?}\n{log}");
    assert!(log.contains("ip_sets"), "{log}");
}

/// README, "Signals": many SIGHUPs while the config loads leave one process
/// that serves and reloads; SIGTERM meanwhile keeps its inherited effect
/// (the process ends by it: only SIGHUP is taken over before the load).
#[test]
fn many_sighups_while_loading_reload_once_serving_and_sigterm_still_ends_it() {
    let upstream = Upstream::start("a");
    let mut loading = Loading::start(&upstream, "127.0.0.0/8\n");
    for _ in 0..50 {
        send_signal(&loading.child, "-HUP");
    }
    let delivered = wait_until(WITHIN, || no_signal_pending(loading.child.id()));
    let _ = loading.go.send(());
    let log_path = loading.dir.path().join("gateway.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let bound = wait_listening(&mut loading.child, &log_path, 1);
    let reloaded = bound.as_ref().is_ok_and(|bound| {
        wait_until(WITHIN, || {
            get(bound.admin, "/metrics").is_ok_and(|answer| {
                let text = String::from_utf8_lossy(&answer.body).into_owned();
                metric_value(
                    &text,
                    "hookgate_config_reloads_total",
                    &[("result", "success")],
                )
                .is_some_and(|n| n >= 1.0)
            })
        })
    });
    let served = (bound.as_ref().ok()).map(|bound| status_of_at(bound.proxy[0], "/office"));
    let _ = loading.child.kill();
    let _ = loading.child.wait();
    assert!(
        delivered,
        "the SIGHUPs were not delivered, or ended the process"
    );
    if let Err(why) = bound {
        panic!("did not start after the SIGHUPs ({why}):\n{}", log());
    }
    assert_eq!(served, Some(200), "{}", log());
    assert!(
        reloaded,
        "the SIGHUPs did not reload once serving:\n{}",
        log()
    );

    use std::os::unix::process::ExitStatusExt;
    let mut loading = Loading::start(&upstream, "127.0.0.0/8\n");
    send_signal(&loading.child, "-TERM");
    let ended = wait_exit(&mut loading.child, WITHIN);
    let _ = loading.go.send(());
    assert_eq!(ended.and_then(|s| s.signal()), Some(15), "{ended:?}");
}

/// README, "Signals": "`hookgate serve` takes SIGHUP over before it reads
/// the config: one sent while it starts does not end the process, and
/// reloads once the gateway serves". The `[ip_sets]` file is a FIFO, so the
/// load waits, holding it open, until the test has sent the SIGHUP and seen
/// it delivered. Guards `take_over_sighup` before `Config::load` in main.rs:
/// without it the signal's default action ends the process there.
#[test]
fn a_sighup_while_the_config_loads_does_not_end_the_process() {
    let upstream = Upstream::start("a");
    let Loading { mut child, dir, go } = Loading::start(&upstream, "127.0.0.0/8\n");
    send_signal(&child, "-HUP");
    let delivered = wait_until(WITHIN, || no_signal_pending(child.id()));
    let _ = go.send(());
    let log_path = dir.path().join("gateway.log");
    let bound = wait_listening(&mut child, &log_path, 1);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let reloaded = bound.as_ref().is_ok_and(|bound| {
        wait_until(WITHIN, || {
            get(bound.admin, "/metrics").is_ok_and(|answer| {
                let text = String::from_utf8_lossy(&answer.body).into_owned();
                metric_value(
                    &text,
                    "hookgate_config_reloads_total",
                    &[("result", "success")],
                ) == Some(1.0)
            })
        })
    });
    let served = (bound.as_ref().ok()).map(|bound| status_of_at(bound.proxy[0], "/office"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        delivered,
        "the SIGHUP was not delivered, or ended the process"
    );
    if let Err(why) = bound {
        panic!("did not start after the SIGHUP ({why}):\n{}", log());
    }
    assert_eq!(served, Some(200), "{}", log());
    assert!(
        reloaded,
        "the SIGHUP did not reload once serving:\n{}",
        log()
    );
}

/// The status of a POST to `path` at `proxy`; 0 when the exchange failed.
fn status_of_at(proxy: std::net::SocketAddr, path: &str) -> u16 {
    try_post(proxy, path, &[], b"{}").map_or(0, |response| response.status)
}

/// README, reload: a refusal names every problem, each as `file:line: key:
/// message`. A route whose `verify` does not compile is left out of the
/// compiled routes, and the queued check in `config::compile` enumerates the
/// compiled routes: the queued route after it was named `routes[0].delivery`,
/// on the bad route's line, so the refusal pointed at the wrong route.
/// Guards the index the queued check keys its problem with.
#[test]
fn a_queued_problem_names_its_own_route_after_a_route_that_did_not_compile() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    let file = routes(
        &a,
        &b,
        &format!(
            "{}{}",
            route(
                "bad",
                "a",
                "verify = { scheme = \"nosuch\", secrets = [\"literal:s\"] }"
            ),
            route("x", "a", "delivery = \"queued\""),
        ),
    );
    gateway.rewrite(&file);
    let refused = gateway.post_reload();
    refused.expect_status(422);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("routes[0].verify.scheme"), "{error}");
    assert!(
        error.contains("routes[1].delivery: route \"x\" is queued"),
        "{error}"
    );
    assert!(!error.contains("routes[0].delivery"), "{error}");
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
}
