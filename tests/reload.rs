//! Editing the config while the real binary runs: changes take effect within
//! 2 s of the file write without dropping a request; broken edits are refused
//! and the old config keeps serving; SIGHUP and `POST /reload` work.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};

const WITHIN: Duration = Duration::from_secs(2);

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

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn answered_by(gateway: &Gateway, path: &str) -> Option<String> {
    let response = post(gateway.proxy, path, &[], b"{}");
    (response.status == 200).then(|| response.header("x-upstream").unwrap_or("").to_string())
}

#[test]
fn file_edits_take_effect_within_two_seconds() {
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
    let send_signed = |secret: &str| {
        post(
            gateway.proxy,
            "/signed",
            &[("X-Hub-Signature-256", &github_signature(secret, body))],
            body,
        )
        .status
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
            .map(|_| post(gateway.proxy, "/limited", &[], b"{}").status)
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
    assert!(gateway.metric("hookgate_config_reloads_total", &[("result", "success")]) >= 4.0);
}

#[test]
fn an_invalid_edit_is_refused_and_the_old_config_keeps_serving() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start(&routes(&a, &b, &route("x", "a", "")));
    gateway.rewrite(&routes(
        &a,
        &b,
        &format!("{}{}", route("x", "a", ""), route("y", "nope", "")),
    ));
    gateway.assert_metric(
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
    let log = gateway.log();
    assert!(
        log.contains("configuration reload refused")
            && log.contains("hookgate.toml:")
            && log.contains("routes[1].upstream"),
        "the log names the file, line and key:\n{log}"
    );
    // A syntax error too.
    gateway.rewrite("[[routes]\nname = ");
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        2.0,
    );
    assert_eq!(answered_by(&gateway, "/x").as_deref(), Some("a"));
}

#[test]
fn sighup_and_post_reload_apply_edits_when_watching_is_off() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway =
        Gateway::start_with_server("watch = false", &routes(&a, &b, &route("x", "a", "")));
    gateway.rewrite(&routes(&a, &b, &route("x", "b", "")));
    std::thread::sleep(Duration::from_millis(800));
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
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
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
    gateway.rewrite_whole(&format!(
        "{moved}\n{}",
        routes(&a, &b, &route("x", "b", ""))
    ));
    let report = gateway.post_reload().json();
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.threads"])
    );
    assert_eq!(
        answered_by(&gateway, "/x").as_deref(),
        Some("b"),
        "the rest of the edit applies"
    );
}

#[test]
fn get_config_shows_the_active_config_without_secrets() {
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
