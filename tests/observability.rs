//! Metrics and the access log after a scripted mix of traffic: every counter
//! moves by exactly the expected amount, and every request leaves one JSON
//! access-log line with the documented fields and no secret.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const SECRET: &str = "observability-secret-xyz";

fn signature(body: &[u8]) -> String {
    github_signature(SECRET, body)
}

/// One scripted request and the status it must get.
struct Step {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
}

fn step(
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: &[u8],
    status: u16,
) -> Step {
    Step {
        method,
        path,
        headers,
        body: body.to_vec(),
        status,
    }
}

#[test]
fn a_scripted_mix_moves_each_counter_exactly_and_logs_one_json_line_each() {
    let ok = Upstream::start("ok");
    let failing = Upstream::with("failing", Behavior::status(503));
    let hangs_up = Upstream::with("hangs-up", Behavior::hang_up());
    let slow = Upstream::with("slow", Behavior::delayed(Duration::from_secs(2)));
    let down_port = DeadPort::new();
    let down = down_port.addr;
    let gateway = Setup::new()
        .server("log_format = \"json\"")
        .upstream(&ok)
        .upstream(&failing)
        .upstream_named("broken", &[hangs_up.addr], "")
        .upstream_named("slow", &[slow.addr], "timeout = \"300ms\"")
        .upstream_named("down", &[down], "")
        .route("open", "/open", "ok", "methods = [\"POST\"]")
        .route("private", "/private", "ok", "allow = [\"10.0.0.0/8\"]")
        .route(
            "limited",
            "/limited",
            "ok",
            "rate_limit = { rate = \"1/h\", burst = 1 }",
        )
        .route("small", "/small", "ok", "max_body = \"16\"")
        .route(
            "signed",
            "/signed",
            "ok",
            &format!("verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}"),
        )
        .route("failing", "/failing", "failing", "")
        .route("broken", "/broken", "broken", "")
        .route("slow", "/slow", "slow", "")
        .route("down", "/down", "down", "")
        .start();

    let body = br#"{"action":"opened"}"#;
    let script: Vec<Step> = vec![
        step("POST", "/open", vec![], body, 200),
        step("POST", "/open", vec![], body, 200),
        step("POST", "/open", vec![], b"", 200),
        step("GET", "/open", vec![], b"", 405),
        step("POST", "/nowhere", vec![], body, 404),
        step("POST", "/private", vec![], body, 403),
        step("POST", "/limited", vec![], body, 200),
        step("POST", "/limited", vec![], body, 429),
        step("POST", "/small", vec![], &[b'x'; 17], 413),
        step(
            "POST",
            "/signed",
            vec![("X-Hub-Signature-256", signature(body))],
            body,
            200,
        ),
        step("POST", "/signed", vec![], body, 401),
        step(
            "POST",
            "/signed",
            vec![("X-Hub-Signature-256", signature(b"other"))],
            body,
            401,
        ),
        step(
            "POST",
            "/signed",
            vec![("X-Hub-Signature-256", "sha256=zz".to_string())],
            body,
            401,
        ),
        step("POST", "/failing", vec![], body, 503),
        step("POST", "/broken", vec![], body, 502),
        step("POST", "/slow", vec![], body, 504),
        step("POST", "/down", vec![], body, 503),
    ];
    for Step {
        method,
        path,
        headers,
        body: sent,
        status: expected,
    } in &script
    {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\nConnection: close\r\n",
            sent.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(sent);
        let response = send_raw(gateway.proxy, &bytes).unwrap();
        assert_eq!(
            response.status,
            *expected,
            "{method} {path}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }

    let outcomes = [
        ("open", "forwarded", 3.0),
        ("open", "method_not_allowed", 1.0),
        ("_unmatched", "no_route", 1.0),
        ("private", "ip_denied", 1.0),
        ("limited", "forwarded", 1.0),
        ("limited", "rate_limited", 1.0),
        ("small", "body_too_large", 1.0),
        ("signed", "forwarded", 1.0),
        ("signed", "signature_invalid", 3.0),
        ("failing", "forwarded", 1.0),
        ("broken", "upstream_error", 1.0),
        ("slow", "upstream_timeout", 1.0),
        ("down", "upstream_unavailable", 1.0),
    ];
    for (route, outcome, count) in outcomes {
        gateway.assert_requests(route, outcome, count);
    }
    let total: f64 = outcomes.iter().map(|(_, _, n)| n).sum();
    gateway.assert_metric("hookgate_requests_total", &[], total);
    gateway.assert_metric("hookgate_request_duration_seconds_count", &[], total);
    for (reason, count) in [("missing", 1.0), ("mismatch", 1.0), ("malformed", 1.0)] {
        gateway.assert_metric(
            "hookgate_signature_failures_total",
            &[
                ("route", "signed"),
                ("scheme", "github"),
                ("reason", reason),
            ],
            count,
        );
    }
    gateway.assert_metric(
        "hookgate_upstream_responses_total",
        &[("route", "open"), ("upstream", "ok"), ("class", "2xx")],
        3.0,
    );
    gateway.assert_metric(
        "hookgate_upstream_responses_total",
        &[
            ("route", "failing"),
            ("upstream", "failing"),
            ("class", "5xx"),
        ],
        1.0,
    );
    gateway.assert_metric(
        "hookgate_upstream_duration_seconds_count",
        &[("route", "open")],
        3.0,
    );
    // Bodies read: open 19+19+0, limited 19, signed 4×19, failing/broken/slow/down 19 each.
    let read = 19.0 * (2.0 + 1.0 + 4.0 + 4.0);
    gateway.assert_metric("hookgate_request_body_bytes_sum", &[], read);
    gateway.assert_metric("hookgate_inflight_requests", &[], 0.0);
    // Exists at 0, not merely absent: red when `HealthChecker::check_due`
    // removes the series of a kept upstream (checked by breaking its `retain`).
    gateway.assert_metric(
        "hookgate_upstream_targets_healthy",
        &[("upstream", "down")],
        0.0,
    );
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "failure")],
        0.0,
    );

    // One JSON access-log line per request, with the documented fields. Each
    // is written just after its request is counted: polled until all are in.
    let access_lines = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "hookgate::access")
            .collect()
    };
    wait_until(Duration::from_secs(5), || {
        access_lines(&gateway.log()).len() >= script.len()
    });
    let log = gateway.log();
    let access = access_lines(&log);
    assert_eq!(
        access.len(),
        script.len(),
        "one access line per request:\n{log}"
    );
    for line in &access {
        for field in [
            "timestamp",
            "request_id",
            "route",
            "client",
            "method",
            "path",
            "status",
            "outcome",
            "upstream",
            "upstream_status",
            "duration_ms",
            "body_bytes",
        ] {
            assert!(
                line.get(field).is_some(),
                "access line without {field}: {line}"
            );
        }
    }
    let by_outcome: BTreeMap<String, usize> =
        access.iter().fold(BTreeMap::new(), |mut counts, line| {
            *counts
                .entry(line["outcome"].as_str().unwrap().to_string())
                .or_default() += 1;
            counts
        });
    assert_eq!(by_outcome["forwarded"], 6);
    assert_eq!(by_outcome["signature_invalid"], 3);
    let forwarded = access
        .iter()
        .find(|l| l["route"] == "signed" && l["outcome"] == "forwarded")
        .unwrap();
    assert_eq!(forwarded["status"], 200);
    assert_eq!(forwarded["upstream"], "ok");
    assert_eq!(forwarded["upstream_status"], 200);
    assert_eq!(forwarded["client"], "127.0.0.1");
    // Refused before any route check (404, 405): the client is known and logged.
    // Breaks when `handle` decides the client address after routing again.
    for outcome in ["no_route", "method_not_allowed"] {
        let line = access.iter().find(|l| l["outcome"] == outcome).unwrap();
        assert_eq!(line["client"], "127.0.0.1", "{outcome}: {line}");
    }
    assert_eq!(forwarded["upstream_target"], ok.addr.to_string());
    assert_eq!(forwarded["body_bytes"], 19);
    assert!(!log.contains(SECRET), "the secret appears in the log");
    assert!(
        !log.contains(&signature(body)),
        "a signature appears in the log"
    );
}
