//! The dashboard and the alert rules against a real Prometheus: Debian's
//! `prometheus` server (installed by `scripts/setup`, which `.ci/run` runs)
//! scrapes the real gateway's admin listener every second while a scripted
//! traffic mix ends in every outcome; then every `expr` of
//! `dashboards/hookgate.json` and of `dashboards/alerts.yml` must return at
//! least one series.
//!
//! Alert expressions are conditions, normally false: an alert is queried as
//! each vector operand of its top-level comparisons (`A > 0.2 * B > 0` is
//! queried as `A` and as `0.2 * B`; number literals are skipped). Every one must
//! return a series: a comparison only filters its operands, so an operand with
//! no series is a condition that can never become true. Prometheus also loads
//! `alerts.yml` itself and must evaluate every rule without error.
//!
//! Grafana variables get concrete values: `$route` and `$upstream` match all,
//! `$__rate_interval` and `$__range` are 1m (the whole test), `$__interval` 1s.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const SECRET: &str = "prometheus-e2e-secret";

/// Grafana's variables and the values they take here.
const VARIABLES: [(&str, &str); 7] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "1s"),
    ("$__range", "1m"),
    ("${route}", ".*"),
    ("$route", ".*"),
    ("${upstream}", ".*"),
    ("$upstream", ".*"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `prometheus` server: on `PATH`, else Debian's `/usr/bin/prometheus`.
/// Missing is a failure, not a skip: `.ci/run` installs it.
fn prometheus_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    let found = on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/prometheus");
        debian.is_file().then_some(debian)
    });
    found.unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is not installed (not on PATH, not /usr/bin/prometheus). \
             .ci/run installs it through scripts/setup (Debian package `prometheus`): \
             run ./scripts/setup, or apt-get install prometheus"
        )
    })
}

/// A Prometheus server on a loopback port with its own config and storage in
/// a temp dir, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

/// Prometheus cannot be handed a bound socket nor report a port it chose, so
/// its port is picked (bound on :0, released) and the start retried with a
/// fresh one when the process exits before it is ready (the port was taken).
const PROMETHEUS_STARTS: usize = 5;

impl Prometheus {
    /// Starts Prometheus scraping `target` (job `hookgate`) every second,
    /// with the alert rules loaded, and waits until it is ready.
    fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let mut logs = Vec::new();
        for _ in 0..PROMETHEUS_STARTS {
            match Prometheus::try_start(binary, target) {
                Ok(prometheus) => return prometheus,
                Err(log) => logs.push(log),
            }
        }
        panic!(
            "Prometheus not ready after {PROMETHEUS_STARTS} starts; logs:\n{}",
            logs.join("\n---\n")
        );
    }

    /// One start on a freshly picked port; the log when it did not become ready.
    fn try_start(binary: &Path, target: SocketAddr) -> Result<Prometheus, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = repo().join("dashboards/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: hookgate\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [\"{target}\"]\n",
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the Prometheus config");
        let addr = std::net::TcpListener::bind(addr(0))
            .and_then(|picked| picked.local_addr())
            .expect("pick a port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap();
        let mut prometheus = Prometheus {
            child,
            addr,
            dir,
            http,
        };
        // Ready means this process answers: whoever else holds a taken port
        // is not serving our storage directory (another test's Prometheus
        // that took the port first is), and our process has exited.
        let storage = prometheus.dir.path().join("data").display().to_string();
        let answers = |path: &str, check: &dyn Fn(&str) -> bool| {
            prometheus
                .http
                .get(format!("http://{addr}{path}"))
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
                .is_ok_and(|text| check(&text))
        };
        let ready = wait_until(Duration::from_secs(20), || {
            let answered = answers("/-/ready", &|text| text.contains("Prometheus"))
                && answers("/api/v1/status/flags", &|text| {
                    serde_json::from_str::<serde_json::Value>(text)
                        .is_ok_and(|flags| flags["data"]["storage.tsdb.path"] == storage.as_str())
                });
            answered || !matches!(prometheus.child.try_wait(), Ok(None))
        });
        if ready && matches!(prometheus.child.try_wait(), Ok(None)) {
            Ok(prometheus)
        } else {
            Err(prometheus.log())
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `params`; the `data` of a `success` answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let body = self
            .http
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(params)
            .send()
            .and_then(|r| r.bytes())
            .unwrap_or_else(|e| panic!("Prometheus /api/v1/{path} {params:?}: {e}"));
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "/api/v1/{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(
            answer["status"], "success",
            "/api/v1/{path} {params:?}: {answer}"
        );
        answer["data"].clone()
    }

    /// The result of an instant query: one entry per series (or one scalar).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api("query", &[("query", expr)]);
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().unwrap().clone(),
            Some("scalar" | "string") => vec![data["result"].clone()],
            other => panic!("{expr}: result type {other:?}"),
        }
    }

    /// The value of a query that returns one series.
    fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr);
        assert_eq!(result.len(), 1, "{expr}: {result:?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }

    /// Unix time of the newest scrape of the gateway, if any.
    fn last_scrape(&self) -> Option<f64> {
        // A plain selector: `timestamp()` of a comparison's result is the
        // evaluation time (now), not the scrape's, and the wait for scrapes
        // after the traffic would return at once.
        let result = self.query(r#"timestamp(up{job="hookgate"}) and up{job="hookgate"} == 1"#);
        result
            .first()
            .map(|series| series["value"][1].as_str().unwrap().parse().unwrap())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A signed GitHub delivery of `event` with delivery id `id`.
fn github(to: SocketAddr, event: &str, id: &str) -> Response {
    let body = format!("{{\"action\":\"opened\",\"delivery\":\"{id}\"}}");
    let signature = github_signature(SECRET, body.as_bytes());
    post(
        to,
        "/github",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", id),
            ("X-Hub-Signature-256", &signature),
        ],
        body.as_bytes(),
    )
}

/// Every `expr` of the dashboard's panels (rows included), variables replaced.
fn dashboard_exprs() -> Vec<(String, String)> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let expr = VARIABLES
                        .iter()
                        .fold(expr.to_string(), |e, (var, value)| e.replace(var, value));
                    assert!(
                        !expr.contains('$'),
                        "panel {title:?}: unreplaced variable in {expr}"
                    );
                    out.push((title.clone(), expr));
                }
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let text = std::fs::read_to_string(repo().join("dashboards/hookgate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    walk(dashboard["panels"].as_array().unwrap(), &mut exprs);
    assert!(exprs.len() >= 20, "found only {} expressions", exprs.len());
    exprs
}

/// Every alert of `alerts.yml`: its name and expression.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut alerts = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            if let (Some(name), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) {
                alerts.push((name.to_string(), expr.trim().to_string()));
            }
        }
    }
    assert!(alerts.len() >= 7, "found only {} alerts", alerts.len());
    alerts
}

/// The operands of the top-level comparisons of a PromQL expression (outside
/// parentheses, brackets, braces and strings); the whole expression when it
/// compares nothing. `A > 0.2 * B > 0` gives `A`, `0.2 * B` and `0`.
fn comparison_operands(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let (mut depth, mut quote, mut start, mut i) = (0i32, None::<u8>, 0, 0);
    let mut operands = Vec::new();
    while i < bytes.len() {
        let byte = bytes[i];
        if let Some(q) = quote {
            if byte == b'\\' {
                i += 1;
            } else if byte == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let width = match (byte, next) {
            (b'"' | b'\'' | b'`', _) => {
                quote = Some(byte);
                0
            }
            (b'(' | b'[' | b'{', _) => {
                depth += 1;
                0
            }
            (b')' | b']' | b'}', _) => {
                depth -= 1;
                0
            }
            _ if depth > 0 => 0,
            (b'=' | b'!' | b'>' | b'<', Some(b'=')) => 2,
            (b'>' | b'<', _) => 1,
            _ => 0,
        };
        if width > 0 {
            operands.push(expr[start..i].trim().to_string());
            i += width;
            // `> bool` keeps the comparison a vector; the modifier is not an operand.
            let rest = expr[i..].trim_start();
            if let Some(after) = rest.strip_prefix("bool") {
                i = expr.len() - after.len();
            }
            start = i;
        } else {
            i += 1;
        }
    }
    operands.push(expr[start..].trim().to_string());
    operands
}

#[test]
fn operands_are_split_at_top_level_comparisons_only() {
    assert_eq!(
        comparison_operands("sum(rate(a{x=~\"a|b\",y!=\"c>d\"}[5m])) > 0.2 * sum(b) > 0"),
        [
            "sum(rate(a{x=~\"a|b\",y!=\"c>d\"}[5m]))",
            "0.2 * sum(b)",
            "0"
        ]
    );
    assert_eq!(
        comparison_operands("up{job=\"h\"} == 0"),
        ["up{job=\"h\"}", "0"]
    );
    assert_eq!(
        comparison_operands("increase(x[10m]) >= bool 1"),
        ["increase(x[10m])", "1"]
    );
    assert_eq!(comparison_operands("max(x)"), ["max(x)"]);
}

/// Sends one request per outcome (and the fan-out, dedupe and signature cases
/// the panels show), asserting each answer; returns when the gateway has
/// counted all of them. `audit` and `slow` hold their answers until
/// `release_audit` and `release_slow` open, which this does once the case
/// that needs them held is counted.
fn drive_traffic(gateway: &Gateway, slow: &Upstream, release_audit: &Gate, release_slow: &Gate) {
    let proxy = gateway.proxy;
    // forwarded: events by rule and the route's own upstream; 2xx and 5xx classes.
    assert_eq!(github(proxy, "push", "d-push").status, 200);
    assert_eq!(github(proxy, "issues", "d-issues").status, 500);
    // Fan-out: the first copy to the held "audit" holds the one-copy queue, so
    // the second is dropped (queue_full).
    assert_eq!(github(proxy, "pull_request", "d-pr-1").status, 200);
    assert_eq!(github(proxy, "pull_request_review", "d-pr-2").status, 200);
    // Copies are queued just after the answer: the drop is polled for, then
    // the held copy may go (a 2 s delay had to outlast both deliveries).
    gateway.assert_metric(
        "hookgate_fanout_dropped_total",
        &[
            ("route", "github"),
            ("upstream", "audit"),
            ("reason", "queue_full"),
        ],
        1.0,
    );
    release_audit.open();
    // duplicate
    assert_eq!(
        github(proxy, "push", "d-push").json()["status"],
        "duplicate"
    );
    // signature_invalid: mismatch and missing
    let zeros = format!("sha256={}", "0".repeat(64));
    let wrong = post(
        proxy,
        "/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &zeros)],
        b"{}",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(post(proxy, "/github", &[], b"{}").status, 401);
    // method_not_allowed
    assert_eq!(get(proxy, "/github").unwrap().status, 405);
    // no_route
    assert_eq!(post(proxy, "/nowhere", &[], b"{}").status, 404);
    // bad_request, before a route (a head that does not parse) and on one (bad chunk)
    let garbage = send_raw(proxy, b"GARBAGE\r\n\r\n").unwrap();
    assert_eq!(garbage.status, 400);
    let bad_chunk = send_raw(
        proxy,
        b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n",
    )
    .unwrap();
    assert_eq!(bad_chunk.status, 400);
    // event_unmatched, body_too_large, forwarded by a JSON event
    let order = br#"{"type":"order.paid"}"#;
    assert_eq!(post(proxy, "/orders", &[], order).status, 200);
    let unknown = br#"{"type":"refund"}"#;
    assert_eq!(post(proxy, "/orders", &[], unknown).status, 422);
    assert_eq!(post(proxy, "/orders", &[], &[b'x'; 200]).status, 413);
    // ip_denied
    assert_eq!(post(proxy, "/denied", &[], b"{}").status, 403);
    // rate_limited: a burst of one per route
    assert_eq!(post(proxy, "/limited", &[], b"{}").status, 200);
    assert_eq!(post(proxy, "/limited", &[], b"{}").status, 429);
    // upstream_error (hangs up), upstream_timeout, upstream_unavailable (no healthy target)
    assert_eq!(post(proxy, "/broken", &[], b"{}").status, 502);
    assert_eq!(post(proxy, "/lagging", &[], b"{}").status, 504);
    assert_eq!(post(proxy, "/down", &[], b"{}").status, 503);
    // duplicate_in_flight and overloaded (max_inflight = 2): one delivery held by
    // the slow upstream, the same id again, then a second held one and a third request.
    let held = |id: &'static str| {
        std::thread::spawn(move || post(proxy, "/slow", &[("X-Delivery", id)], b"{}").status)
    };
    // A request's in-flight slot is released just after its answer is sent:
    // wait for the gauge so a finished request is never counted as held.
    let only_held = |count: f64| gateway.assert_metric("hookgate_inflight_requests", &[], count);
    only_held(0.0);
    let first = held("s-1");
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 1));
    only_held(1.0);
    assert_eq!(
        post(proxy, "/slow", &[("X-Delivery", "s-1")], b"{}").status,
        409
    );
    only_held(1.0);
    let second = held("s-2");
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 2));
    let overloaded = post(proxy, "/orders", &[], order).status;
    release_slow.open();
    assert_eq!(overloaded, 503);
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);

    // queued: stored, answered 202, delivered in the background.
    assert_eq!(post(proxy, "/queued", &[], b"{}").status, 202);
    gateway.assert_metric(
        "hookgate_requests_total",
        &[("route", "queued"), ("outcome", "queued")],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_queue_attempts_total",
        &[("route", "queued"), ("result", "delivered")],
        1.0,
    );

    // Counted in the logging phase just after each answer; the copy to "audit"
    // is delivered in the background.
    gateway.assert_outcome("forwarded", 8.0);
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[("upstream", "audit"), ("result", "delivered")],
        1.0,
    );
}

/// One listed upstream per `(name, address, extra settings)`.
fn upstream_section(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[upstreams.{name}]\ntargets = [\"{addr}\"]\nhealth = {{ interval = \"1s\" }}\n{extra}\n"
    )
}

#[test]
fn every_dashboard_and_alert_expression_returns_series_from_a_real_prometheus() {
    let started = Instant::now();
    let binary = prometheus_binary();
    let app = Upstream::start("app");
    let release_audit = Gate::new();
    let audit = Upstream::with("audit", Behavior::held(&release_audit));
    let failing = Upstream::with("failing", Behavior::status(500));
    // Holds two requests while a third is refused, until the test opens the
    // gate (a 3 s delay had to outlast six exchanges on a loaded machine).
    let release_slow = Gate::new();
    let slow = Upstream::with("slow", Behavior::held(&release_slow));
    let broken = Upstream::with("broken", Behavior::hang_up());
    let lagging = Upstream::with("lagging", Behavior::delayed(Duration::from_secs(3)));
    let down_port = DeadPort::new(); // nothing listens: no healthy target
    let down = down_port.addr;
    let upstreams = [
        upstream_section("app", app.addr, ""),
        upstream_section("audit", audit.addr, ""),
        upstream_section("failing", failing.addr, ""),
        upstream_section("slow", slow.addr, ""),
        upstream_section("broken", broken.addr, ""),
        upstream_section("lagging", lagging.addr, "timeout = \"300ms\""),
        upstream_section("down", down, ""),
    ]
    .concat();
    // [cluster] on a real Redis, so the cluster panels and alert have series;
    // "local" keeps every outcome below the same if Redis misbehaves. A 5 s
    // command timeout: at the default 250 ms a loaded machine had Redis
    // answer late, the duplicate was decided locally (no record there) and
    // forwarded again.
    let redis = common::redis::RedisServer::start();
    let cluster = format!(
        "[cluster]\nredis = \"{}\"\non_unavailable = \"local\"\ncommand_timeout = \"5s\"\n",
        redis.url()
    );
    let gateway = Gateway::start_with_server(
        "max_inflight = 2\nfanout = { queue = 1, concurrency = 1, attempts = 1, stored = false }",
        &format!(
            r#"{upstreams}
{cluster}
[[routes]]
name = "github"
path = "/github"
methods = ["POST"]
allow = ["127.0.0.1/32"]
rate_limit = {{ rate = "1000/s", burst = 1000, per = "ip" }}
verify = {{ scheme = "github", secrets = ["literal:{SECRET}"] }}
dedupe = {{ key = "header:X-GitHub-Delivery" }}
event = {{ header = "X-GitHub-Event" }}
upstream = "app"
  [[routes.events]]
  match = "pull_request*"
  upstream = ["app", "audit"]
  [[routes.events]]
  match = "issues"
  upstream = "failing"

[[routes]]
name = "orders"
path = "/orders"
max_body = "64B"
event = {{ json = "/type" }}
unmatched = "reject"
upstream = "app"
  [[routes.events]]
  match = "order.*"
  upstream = "app"

[[routes]]
name = "denied"
path = "/denied"
allow = ["10.0.0.0/8"]
upstream = "app"

[[routes]]
name = "limited"
path = "/limited"
rate_limit = {{ rate = "1/h", burst = 1, per = "route" }}
upstream = "app"

[[routes]]
name = "slow"
path = "/slow"
dedupe = {{ key = "header:X-Delivery" }}
upstream = "slow"

[[routes]]
name = "broken"
path = "/broken"
upstream = "broken"

[[routes]]
name = "lagging"
path = "/lagging"
upstream = "lagging"

[[routes]]
name = "down"
path = "/down"
upstream = "down"

[[routes]]
name = "queued"
path = "/queued"
upstream = "app"
delivery = "queued"

[storage]
path = "data"
"#
        ),
    );
    let prometheus = Prometheus::start(&binary, gateway.admin);

    // Prometheus has scraped the gateway before any traffic: every series it
    // will count in already exists at 0 in that scrape.
    assert!(
        wait_until(Duration::from_secs(10), || prometheus
            .last_scrape()
            .is_some()),
        "Prometheus never scraped the gateway at {}; log:\n{}",
        gateway.admin,
        prometheus.log()
    );
    drive_traffic(&gateway, &slow, &release_audit, &release_slow);

    // Two scrapes that both started after the traffic was counted.
    let counted = unix_now();
    let mut after = Vec::new();
    let scraped_twice = wait_until(Duration::from_secs(10), || {
        if let Some(at) = prometheus.last_scrape().filter(|at| *at > counted) {
            if !after.contains(&at.to_bits()) {
                after.push(at.to_bits());
            }
        }
        after.len() >= 2
    });
    assert!(
        scraped_twice,
        "no two scrapes after the traffic; log:\n{}",
        prometheus.log()
    );

    let mut empty = Vec::new();
    for (title, expr) in dashboard_exprs() {
        if prometheus.query(&expr).is_empty() {
            empty.push(format!("panel {title:?}: {expr}"));
        }
    }
    for (name, expr) in alert_exprs() {
        let operands = comparison_operands(&expr);
        for operand in operands.iter().filter(|o| o.parse::<f64>().is_err()) {
            if prometheus.query(operand).is_empty() {
                empty.push(format!("alert {name}: {operand}"));
            }
        }
    }
    // Guards the series created at load in `RouteHandles::register`
    // (src/metrics.rs): without `dedupe_entries.with_label_values(&[route])`
    // the "Per-key state" panel has no series until housekeeping's first round
    // (10 s after start), and this fails.
    assert!(
        empty.is_empty(),
        "expressions without a series:\n{}",
        empty.join("\n")
    );

    // The traffic arrived as counted: every outcome of the mix, in Prometheus.
    for outcome in [
        "forwarded",
        "no_route",
        "method_not_allowed",
        "ip_denied",
        "rate_limited",
        "overloaded",
        "body_too_large",
        "signature_invalid",
        "duplicate",
        "duplicate_in_flight",
        "event_unmatched",
        "bad_request",
        "upstream_error",
        "upstream_timeout",
        "upstream_unavailable",
        "queued",
    ] {
        let seen = prometheus.value(&format!(
            r#"sum(hookgate_requests_total{{outcome="{outcome}"}})"#
        ));
        assert!(
            seen >= 1.0,
            "{outcome}: {seen}; the gateway counted {:?}",
            gateway.metric("hookgate_requests_total", &[("outcome", outcome)]),
        );
    }
    // The first fan-out drop is seen by increase(), as HookgateFanoutDrops needs:
    // the series was scraped at 0 before it. Guards the fan-out initialization in
    // `RouteHandles::register` (src/metrics.rs): without it the series first
    // appears at 1 and increase() over the window is 0.
    let first_drop = prometheus.value(
        r#"sum(increase(hookgate_fanout_dropped_total{route="github",upstream="audit",reason="queue_full"}[1m]))"#,
    );
    assert!(first_drop > 0.0, "increase of the first drop: {first_drop}");
    // Likewise the signature failure series created per reason for a verified route.
    let first_mismatch = prometheus.value(
        r#"sum(increase(hookgate_signature_failures_total{route="github",reason="mismatch"}[1m]))"#,
    );
    assert!(
        first_mismatch > 0.0,
        "increase of the first mismatch: {first_mismatch}"
    );

    // Prometheus loaded alerts.yml and evaluates every rule without error.
    let rules_ok = wait_until(Duration::from_secs(5), || {
        let data = prometheus.api("rules", &[]);
        let rules: Vec<&serde_json::Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        rules.len() >= 7 && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(rules_ok, "rules: {}", prometheus.api("rules", &[]));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
