//! End to end through the real gateway binary: body fidelity, routing, round
//! robin, failures and their JSON answers, admin endpoints, signals.

mod common;

use std::time::Duration;

use common::*;

/// Route `hooks` on `/hooks/*` to `upstream` (as upstream `app`).
fn one_route(upstream: &Upstream, extra_route_lines: &str) -> Setup {
    Setup::new()
        .upstream_named("app", &[upstream.addr], "")
        .route("hooks", "/hooks/*", "app", extra_route_lines)
}

#[test]
fn bodies_arrive_byte_identical_with_content_length_and_chunked() {
    // Guards `put_header(..content-length..)` in `headers::upstream_head`:
    // relaying the sender's `Transfer-Encoding` beside the re-set length turns it red.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "")
        .server("max_body = \"6MiB\"")
        .start();
    // 3,700 and 4,096 B straddle `forward::ONE_SEND_MAX` (head and body up to
    // 4 KiB go in one copied `send`, larger ones as a two-slice `writev`).
    let sizes = [0usize, 1024, 3700, 4096, 100 * 1024, 5 * 1024 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let body = bytes(size, i as u64);
        let answered = post(
            gateway.proxy,
            "/hooks/cl",
            &[("Content-Type", "application/octet-stream")],
            &body,
        );
        assert_eq!(answered.status, 200, "{size} B with Content-Length");
        assert_eq!(answered.body, b"{\"ok\":true}");
        assert_eq!(answered.header("x-upstream"), Some("app"));
        let answered = post_chunked(gateway.proxy, "/hooks/chunked", &body, 16 * 1024 + 7);
        assert_eq!(answered.status, 200, "{size} B chunked");
    }
    let received = upstream.received();
    assert_eq!(received.len(), sizes.len() * 2);
    for (i, size) in sizes.into_iter().enumerate() {
        let expected = bytes(size, i as u64);
        for request in &received[i * 2..i * 2 + 2] {
            assert_eq!(request.method, "POST");
            assert_eq!(request.body.len(), size, "{} length", request.target);
            assert!(
                request.body == expected,
                "{} body differs at {size} B",
                request.target
            );
            assert_eq!(
                request.header("content-length"),
                Some(size.to_string().as_str())
            );
            assert_eq!(
                request.header("transfer-encoding"),
                None,
                "framing is re-set from the body"
            );
        }
        assert_eq!(received[i * 2].target, "/hooks/cl");
        assert_eq!(received[i * 2 + 1].target, "/hooks/chunked");
    }
}

#[test]
fn gateway_headers_are_added_and_the_senders_request_id_kept() {
    // Guards `headers::sender_request_id` and the `Connection`-listed removal
    // (`connection_listed`) in `headers::upstream_head`.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "").start();
    let answered = post(
        gateway.proxy,
        "/hooks/a?x=1&y=%20",
        &[
            ("X-Request-Id", "sender-id-42"),
            ("X-Custom", "kept"),
            // A `Connection` that names a header the request carries is refused
            // (tests/agreement.rs); naming an absent one is harmless.
            ("Connection", "close, X-Custom-Hop"),
        ],
        b"{}",
    );
    assert_eq!(answered.status, 200);
    assert_eq!(answered.header("x-request-id"), Some("sender-id-42"));
    let received = &upstream.received()[0];
    assert_eq!(received.target, "/hooks/a?x=1&y=%20");
    assert_eq!(received.header("x-request-id"), Some("sender-id-42"));
    assert_eq!(received.header("x-hookgate-route"), Some("hooks"));
    assert_eq!(received.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(received.header("x-forwarded-proto"), Some("http"));
    assert_eq!(received.header("x-custom"), Some("kept"));
    assert_eq!(received.header("x-custom-hop"), None);
    assert_eq!(received.header("connection"), None);

    let answered = post(
        gateway.proxy,
        "/hooks/b",
        &[("X-Request-Id", "has spaces \" and quotes")],
        b"{}",
    );
    let generated = answered.header("x-request-id").unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID replaces an unusable sender id");
    assert_eq!(
        upstream.received()[1].header("x-request-id"),
        Some(generated.as_str())
    );
}

#[test]
fn a_head_request_is_answered_without_a_body_and_the_route_keeps_working() {
    // Guards `head_request: head.method() == http::Method::HEAD` in `forward.rs`:
    // waiting for the 11 bytes the GET framing announces hangs each exchange
    // until the upstream timeout (10 s), so none is counted within 5 s. The
    // sender alone cannot tell: it has the head before the gateway waits.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "").start();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let answered = head(gateway.proxy, "/hooks/probe").expect("HEAD exchange");
        assert_eq!(answered.status, 200);
        // The framing of the GET answer, relayed; the exchange did not wait for a body.
        assert_eq!(answered.header("content-length"), Some("11"));
        assert_eq!(answered.header("x-upstream"), Some("app"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "HEAD waited for a body"
        );
    }
    gateway.assert_requests("hooks", "forwarded", 3.0);
    let answered = post(gateway.proxy, "/hooks/after", &[], b"{\"n\":1}");
    assert_eq!(answered.status, 200);
    assert_eq!(answered.body, b"{\"ok\":true}");
    let received = upstream.received();
    assert_eq!(received.len(), 4);
    for request in &received[..3] {
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("HEAD", "/hooks/probe")
        );
        assert_eq!(request.header("content-length"), None);
        assert!(request.body.is_empty());
    }
    assert_eq!(received[3].body, b"{\"n\":1}");
}

#[test]
fn upstream_connections_are_kept_alive_and_a_closed_one_is_not_reused() {
    // Guards `UpstreamConnections::put` (kept alive) and `still_open` in
    // `proxy/connections.rs` (a closed one is not reused: 502 without it).
    let kept = Upstream::start("kept");
    // One health check (before ready) while the five requests run, however
    // slowly: at the default 5 s interval a loaded machine saw more.
    let gateway = Setup::new()
        .upstream_named("app", &[kept.addr], "health = { interval = \"1h\" }")
        .route("hooks", "/hooks/*", "app", "")
        .start();
    for i in 0..5 {
        let answered = post(gateway.proxy, "/hooks/seq", &[], format!("{i}").as_bytes());
        assert_eq!(answered.status, 200);
    }
    // The five requests shared one connection (health checks not counted).
    assert_eq!(
        kept.connections_used(),
        1,
        "upstream connections for 5 sequential requests"
    );

    // An upstream that closes each connection right after answering (its idle
    // timeout fired): the next request must not be sent into the dead one.
    let closing = Upstream::with("closing", Behavior::close_after_answer());
    gateway.rewrite(&one_route(&closing, "").rest());
    assert!(wait_until(Duration::from_secs(10), || {
        try_post(gateway.proxy, "/hooks/probe", &[], b"{}")
            .is_ok_and(|answer| answer.header("x-upstream") == Some("closing"))
    }));
    let before = closing.count();
    for i in 0..5 {
        // Polled, not slept: the upstream has closed every connection it
        // accepted, the one the gateway keeps for reuse included.
        assert!(
            wait_until(Duration::from_secs(5), || closing.closed()
                == closing.connections()),
            "the upstream did not close its connections"
        );
        let answered = post(
            gateway.proxy,
            "/hooks/again",
            &[],
            format!("{i}").as_bytes(),
        );
        assert_eq!(
            answered.status, 200,
            "request {i} after a closed connection"
        );
    }
    assert_eq!(
        closing.count(),
        before + 5,
        "each request reached the upstream once"
    );
}

#[test]
fn two_paths_route_to_two_pools() {
    // Guards the path and method match in `routing.rs`: a route table that
    // ignores `methods` or the `/*` prefix rule turns it red.
    let billing = Upstream::start("billing");
    let ci = Upstream::start("ci");
    let gateway = Setup::new()
        .upstream(&billing)
        .upstream(&ci)
        .route(
            "stripe",
            "/webhooks/stripe",
            "billing",
            "methods = [\"POST\"]",
        )
        .route("github", "/webhooks/github/*", "ci", "")
        .start();
    assert_eq!(
        post(gateway.proxy, "/webhooks/stripe", &[], b"s").header("x-upstream"),
        Some("billing")
    );
    assert_eq!(
        post(gateway.proxy, "/webhooks/github", &[], b"g1").header("x-upstream"),
        Some("ci")
    );
    assert_eq!(
        post(gateway.proxy, "/webhooks/github/org/repo", &[], b"g2").header("x-upstream"),
        Some("ci")
    );
    assert_eq!(
        billing
            .received()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>(),
        vec![b"s".to_vec()]
    );
    assert_eq!(
        ci.received()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>(),
        vec![b"g1".to_vec(), b"g2".to_vec()]
    );

    let wrong_method = get(gateway.proxy, "/webhooks/stripe").unwrap();
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");
    assert_eq!(wrong_method.json()["route"], "stripe");

    let unknown = post(gateway.proxy, "/webhooks/unknown", &[], b"x");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("content-type"), Some("application/json"));
    let json = unknown.json();
    assert_eq!(json["error"], "no_route");
    assert_eq!(json["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(
        billing.count() + ci.count(),
        3,
        "rejections forward nothing"
    );
    gateway.assert_requests("_unmatched", "no_route", 1.0);
    gateway.assert_requests("stripe", "method_not_allowed", 1.0);
    gateway.assert_requests("github", "forwarded", 2.0);
}

/// `method path` without a body, on a connection of its own.
fn bodiless(proxy: std::net::SocketAddr, method: &str, path: &str) -> Response {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    send_raw(proxy, request.as_bytes()).expect("exchange")
}

/// README ("The path."): "A 405's `Allow` lists every method the routes with
/// that host and path take (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS in that
/// order, then others in config order)". Guards `allow_values` (routing.rs) and
/// the `Allow` that `refuse` (proxy/mod.rs) writes from it: the old fixed
/// `Allow: POST`, or only the refusing route's methods, turns it red.
#[test]
fn a_405_allows_what_the_routes_of_its_host_and_path_take() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route("post-only", "/post-only", "app", "methods = [\"POST\"]")
        .route(
            "put-post",
            "/put-post",
            "app",
            "methods = [\"PUT\", \"POST\"]",
        )
        .route("zoom-deliveries", "/zoom", "app", "methods = [\"POST\"]")
        .route(
            "zoom-challenge",
            "/zoom",
            "app",
            "methods = [\"OPTIONS\", \"GET\"]",
        )
        .route("any", "/any", "app", "")
        .start();
    let exchange = |method: &str, path: &str| bodiless(gateway.proxy, method, path);
    let cases = [
        ("GET", "/post-only", "post-only", "POST"),
        ("DELETE", "/put-post", "put-post", "POST, PUT"),
        ("PUT", "/zoom", "zoom-deliveries", "GET, POST, OPTIONS"),
        (
            "TRACE",
            "/any",
            "any",
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ),
    ];
    for (method, path, route, allow) in cases {
        let refused = exchange(method, path);
        refused.expect_status(405);
        assert_eq!(refused.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(
            refused
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("allow"))
                .count(),
            1,
            "{method} {path}"
        );
        let json = refused.json();
        assert_eq!(
            json,
            serde_json::json!({
                "error": "method_not_allowed",
                "route": route,
                "request_id": json["request_id"].as_str().expect("a request id"),
            }),
            "{method} {path}"
        );
    }
    assert_eq!(app.count(), 0, "a 405 forwards nothing");
    // Each method the `Allow` of /zoom names is taken.
    for method in ["GET", "OPTIONS"] {
        exchange(method, "/zoom").expect_status(200);
    }
    assert_eq!(app.count(), 2);
    gateway.assert_requests("any", "method_not_allowed", 1.0);
}

/// README (the 405 row of the answers table): a 405 and its `Allow` go only to a
/// client that one route of the target lets in; any other client gets the
/// route's 403, as every request of it would, and learns nothing of its methods.
#[test]
fn a_405_tells_its_methods_only_to_a_client_a_route_of_the_target_lets_in() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "private",
            "/private",
            "app",
            "methods = [\"POST\"]\nallow = [\"10.0.0.0/8\"]",
        )
        .route(
            "shared-deny",
            "/shared",
            "app",
            "methods = [\"POST\"]\nallow = [\"10.0.0.0/8\"]",
        )
        .route(
            "shared-local",
            "/shared",
            "app",
            "methods = [\"PUT\"]\nallow = [\"127.0.0.0/8\"]",
        )
        .start();
    let exchange = |method: &str, path: &str| bodiless(gateway.proxy, method, path);
    let denied = exchange("GET", "/private");
    denied.expect_status(403);
    assert_eq!(denied.header("allow"), None);
    assert_eq!(denied.json()["error"], "ip_not_allowed");
    assert_eq!(denied.json()["route"], "private");
    // One route of /shared lets 127.0.0.1 in: it is told what the target takes.
    let refused = exchange("GET", "/shared");
    refused.expect_status(405);
    assert_eq!(refused.header("allow"), Some("POST, PUT"));
    assert_eq!(app.count(), 0, "nothing is forwarded");
    gateway.assert_requests("private", "ip_denied", 1.0);
}

/// README ("The path."): paths match without regard to ASCII letter case, so two
/// routes whose paths differ only in case are one target. Guards `same_target`
/// (routing.rs): comparing the paths byte for byte there made `/case`'s GET a
/// 405 whose `Allow` said only `POST`.
#[test]
fn routes_whose_paths_differ_in_case_are_one_target() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route("upper", "/Case", "app", "methods = [\"POST\"]")
        .route("lower", "/case", "app", "methods = [\"GET\"]")
        .start();
    get(gateway.proxy, "/case").unwrap().expect_status(200);
    assert_eq!(app.received().last().unwrap().method, "GET");
    post(gateway.proxy, "/case", &[], b"x").expect_status(200);
    let refused = send_raw(
        gateway.proxy,
        b"PUT /CASE HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .expect("exchange");
    refused.expect_status(405);
    assert_eq!(refused.header("allow"), Some("GET, POST"));
    assert_eq!(refused.json()["route"], "upper");
    assert_eq!(app.count(), 2);
}

#[test]
fn round_robin_across_targets_and_a_dead_target_is_skipped() {
    // Guards `tried.push(target)` and the retry loop in `forward::forward`
    // (a refused connect moves on to the next target) and round robin in `UpstreamPool::select`.
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let dead_port = DeadPort::new();
    let dead = dead_port.addr;
    let gateway = Setup::new()
        .upstream_named(
            "app",
            &[a.addr, b.addr, dead],
            "health = { interval = \"1h\" }",
        )
        .route("hooks", "/hooks", "app", "")
        .start();
    for i in 0..10 {
        let answered = post(gateway.proxy, "/hooks", &[], format!("n{i}").as_bytes());
        assert_eq!(
            answered.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&answered.body)
        );
    }
    assert_eq!(a.count(), 5);
    assert_eq!(b.count(), 5);
    gateway.assert_metric(
        "hookgate_upstream_targets_healthy",
        &[("upstream", "app")],
        2.0,
    );
}

#[test]
fn a_target_that_refuses_after_its_health_check_passed_is_retried_on_the_next() {
    // Guards the connect-failure retry in `forward::forward` (`tried.push(target)`
    // then `pool.select(&tried)`): without it every other request is 502.
    let mut a = Upstream::start("a");
    let b = Upstream::start("b");
    let gateway = Setup::new()
        .upstream_named("app", &[a.addr, b.addr], "health = { interval = \"1h\" }")
        .route("hooks", "/hooks", "app", "")
        .start();
    a.stop();
    for i in 0..6 {
        let answered = post(gateway.proxy, "/hooks", &[], format!("n{i}").as_bytes());
        assert_eq!(answered.status, 200, "request {i}");
    }
    assert_eq!(b.count(), 6);
}

#[test]
fn body_over_the_limit_is_refused_declared_or_chunked_and_nothing_is_forwarded() {
    // Guards `declared_length` against `max_body` and the running count in
    // `body::read_bounded`: `>` instead of `>=` lets 1025 bytes through.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "max_body = \"1KiB\"").start();
    // Declared: answered from the head alone, the body is never sent.
    let declared = send_raw(
        gateway.proxy,
        format!(
            "POST /hooks/x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            10 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(declared.status, 413);
    assert_eq!(declared.json()["error"], "body_too_large");
    assert_eq!(declared.json()["route"], "hooks");
    assert_eq!(declared.header("connection"), Some("close"));
    // Chunked: counted while reading.
    let chunked = post_chunked(gateway.proxy, "/hooks/x", &bytes(1025, 1), 512);
    assert_eq!(chunked.status, 413);
    assert_eq!(chunked.json()["error"], "body_too_large");
    // Exactly at the limit passes.
    assert_eq!(
        post(gateway.proxy, "/hooks/x", &[], &bytes(1024, 2)).status,
        200
    );
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.received()[0].body, bytes(1024, 2));
    gateway.assert_requests("hooks", "body_too_large", 2.0);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    // Guards `write_continue_response` in `body::read_bounded` (the sender
    // waits forever without it) and `expect` being dropped in `upstream_head`.
    use std::io::{BufReader, Write};
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "").start();
    let stream = std::net::TcpStream::connect(gateway.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(b"POST /hooks/e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut reader).unwrap();
    assert_eq!(interim.status, 100);
    writer.write_all(b"hello").unwrap();
    let last = read_response(&mut reader).unwrap();
    assert_eq!(last.status, 200);
    let received = &upstream.received()[0];
    assert_eq!(received.body, b"hello");
    assert_eq!(received.header("expect"), None);
}

#[test]
fn upstream_failures_answer_502_503_504_in_json() {
    // Guards `forward::classify` (timeouts -> 504) and the `ForwardError` to
    // `Reply` mapping in `Gateway::handle`.
    let hangs_up = Upstream::with("hangs-up", Behavior::hang_up());
    let slow = Upstream::with("slow", Behavior::delayed(Duration::from_secs(8)));
    let down_port = DeadPort::new();
    let down = down_port.addr;
    let gateway = Setup::new()
        .upstream_named("broken", &[hangs_up.addr], "")
        .upstream_named("slow", &[slow.addr], "timeout = \"500ms\"")
        .upstream_named("down", &[down], "")
        .route("broken", "/broken", "broken", "")
        .route("slow", "/slow", "slow", "")
        .route("down", "/down", "down", "")
        .start();
    let cases = [
        ("/broken", 502, "upstream_error"),
        ("/slow", 504, "upstream_timeout"),
        ("/down", 503, "upstream_unavailable"),
    ];
    for (path, status, error) in cases {
        let started = std::time::Instant::now();
        let answered = post(gateway.proxy, path, &[], b"{}");
        assert_eq!(answered.status, status, "{path}");
        assert_eq!(answered.json()["error"], error, "{path}");
        assert_eq!(answered.json()["route"], &path[1..]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} answered within its timeout (500 ms; the slow upstream takes 8 s)"
        );
    }
    assert_eq!(hangs_up.count(), 1);
    gateway.assert_outcome("upstream_timeout", 1.0);
    gateway.assert_outcome("upstream_unavailable", 1.0);
    gateway.assert_outcome("upstream_error", 1.0);
    gateway.assert_metric(
        "hookgate_upstream_targets_healthy",
        &[("upstream", "down")],
        0.0,
    );
}

#[test]
fn a_request_head_that_cannot_be_parsed_gets_a_json_400_and_is_counted() {
    // Guards `Gateway::refuse_head` (proxy/mod.rs): Pingora's own plain 400
    // has no JSON body and no count.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "").start();
    let heads: [&[u8]; 3] = [
        b"GARBAGE\r\n\r\n",
        b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for head in heads {
        let answered = send_raw(gateway.proxy, head).expect("an answer");
        let shown = String::from_utf8_lossy(head);
        assert_eq!(answered.status, 400, "{shown}");
        assert_eq!(answered.header("content-type"), Some("application/json"));
        assert_eq!(answered.header("connection"), Some("close"));
        let body = answered.json();
        assert_eq!(body["error"], "bad_request", "{shown}");
        assert_eq!(body["reason"], "the request head is not valid HTTP");
        assert_eq!(body["request_id"].as_str().map(str::len), Some(36));
    }
    gateway.assert_requests("_unmatched", "bad_request", 3.0);
    assert_eq!(upstream.count(), 0);
    // The gateway still serves well-formed requests.
    assert_eq!(post(gateway.proxy, "/hooks/ok", &[], b"{}").status, 200);
}

#[test]
fn admin_endpoints_answer() {
    // Guards the path table in `Admin::response` (admin.rs) and the series
    // `RouteHandles::register` creates.
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "").start();
    post(gateway.proxy, "/hooks/m", &[], b"12345");
    // Counted in the logging phase, just after the answer: wait for it before
    // reading the scrape below as one snapshot.
    gateway.assert_requests("hooks", "forwarded", 1.0);
    let health = get(gateway.admin, "/healthz").unwrap();
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = get(gateway.admin, "/readyz").unwrap();
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let metrics = get(gateway.admin, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    assert_eq!(
        metric_value(
            &text,
            "hookgate_requests_total",
            &[("route", "hooks"), ("outcome", "forwarded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "hookgate_request_duration_seconds_count",
            &[("route", "hooks")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "hookgate_request_body_bytes_sum",
            &[("route", "hooks")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "hookgate_upstream_responses_total",
            &[("route", "hooks"), ("upstream", "app"), ("class", "2xx")]
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&text, "hookgate_build_info", &[]), Some(1.0));
    assert_eq!(get(gateway.admin, "/nope").unwrap().status, 404);
}

#[test]
fn a_taken_port_fails_the_start_with_a_clear_message() {
    // Guards `check_ports` in `server.rs`: without it Pingora retries the bind
    // for 30 s, then its service fails while the process keeps running.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taken.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin = \"127.0.0.1:0\"\nallow_no_routes = true\n"),
    )
    .unwrap();
    let mut child = spawn_binary(&["serve", "-c", path.to_str().unwrap()], &dir);
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(exited, "still running 10 s after a taken port:\n{stderr}");
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (proxy listener)"
        )),
        "{stderr}"
    );
    drop(taken);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    // Guards `spawn_drain_watcher` in `server.rs`: exiting at once drops the
    // in-flight request; waiting the full grace misses the 3 s bound.
    let slow = Upstream::with("slow", Behavior::delayed(Duration::from_millis(800)));
    let mut gateway = one_route(&slow, "").start();
    let proxy = gateway.proxy;
    let in_flight = std::thread::spawn(move || post(proxy, "/hooks/slow", &[], b"in flight"));
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 1));
    gateway.signal("TERM");
    let answered = in_flight.join().unwrap();
    assert_eq!(answered.status, 200, "the in-flight request completes");
    let code = gateway.wait_exit(Duration::from_secs(3));
    assert_eq!(
        code,
        Some(0),
        "exits soon after draining, well before the 3 s grace; log:\n{}",
        gateway.log()
    );
}

#[test]
fn sigterm_waits_for_fan_out_copies_within_the_grace_period() {
    let primary = Upstream::start("primary");
    let secondary = Upstream::with("secondary", Behavior::delayed(Duration::from_millis(1500)));
    let mut gateway = Setup::new()
        .upstream(&primary)
        .upstream(&secondary)
        .fan_out("hooks", "/hooks/*", &["primary", "secondary"], "")
        .start();
    assert_eq!(post(gateway.proxy, "/hooks/a", &[], b"copy me").status, 200);
    // The copy is on its way to the slow secondary when the signal arrives.
    // Breaks when the drain watcher stops waiting for `Fanout::held`.
    assert!(wait_until(Duration::from_secs(5), || secondary.count() == 1));
    gateway.signal("TERM");
    let code = gateway.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "log:\n{}", gateway.log());
    // The secondary answers 1.5 s after it got the copy: the process waited.
    // Measured from the copy's arrival, not from the signal: the poll above
    // may see the arrival late on a loaded machine, and the signal with it.
    let waited = secondary.arrivals()[0].elapsed();
    assert!(
        waited > Duration::from_millis(1000),
        "exited {waited:?} after the copy arrived"
    );
    let log = gateway.log();
    assert!(
        log.contains("drained; exiting"),
        "the copy finished first; log:\n{log}"
    );
    assert!(
        !log.contains("fan-out copies"),
        "nothing dropped; log:\n{log}"
    );
}

#[test]
fn a_broken_chunked_body_or_a_stalled_sender_gets_a_json_4xx_and_nothing_is_forwarded() {
    // Guards the body deadline in `body::read_bounded` (`client_timeout`) and
    // `Gateway::refuse_body`'s JSON answers.
    use std::io::Write;
    let upstream = Upstream::start("app");
    let gateway = one_route(&upstream, "")
        .server("client_timeout = \"500ms\"")
        .start();
    let broken = send_raw(
        gateway.proxy,
        b"POST /hooks/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(broken.status, 400);
    assert_eq!(broken.json()["error"], "bad_request");
    assert_eq!(broken.json()["route"], "hooks");

    // Declares 10 bytes, sends 3, then stalls.
    let stream = std::net::TcpStream::connect(gateway.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"POST /hooks/x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let stalled = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!(stalled.status, 408);
    assert_eq!(stalled.json()["error"], "request_timeout");
    assert_eq!(upstream.count(), 0);
    gateway.assert_requests("hooks", "bad_request", 2.0);
}

/// A raw HTTP/1.1 upstream on loopback: keeps the exact bytes of each request
/// (head and `Content-Length` body) and answers 200 on the same connection.
struct WireRecorder {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WireRecorder {
    fn start() -> WireRecorder {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, counted) = (requests.clone(), connections.clone());
        // Ends with the test process; each connection ends on EOF or a 10 s idle read.
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buffer: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 16 * 1024];
                    for _ in 0..10_000 {
                        let complete =
                            buffer
                                .windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .and_then(|end| {
                                    let head =
                                        String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                                    let length = head
                                        .lines()
                                        .find_map(|l| l.strip_prefix("content-length:"))
                                        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
                                    let total = end + 4 + length;
                                    (buffer.len() >= total).then_some(total)
                                });
                        if let Some(total) = complete {
                            let request: Vec<u8> = buffer.drain(..total).collect();
                            kept.lock().unwrap().push(request);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                            continue;
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        WireRecorder {
            addr,
            requests,
            connections,
        }
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

/// The upstream gets byte-identical requests whose head and body total one
/// byte under, at and over `forward::ONE_SEND_MAX` (4,096 B), each once, over
/// a kept-alive connection. The head's size is measured from a first request
/// (with a body of as many length digits), so the totals are exact.
#[test]
fn requests_either_side_of_the_one_send_limit_arrive_whole_and_once() {
    // Guards the `<= ONE_SEND_MAX` branch of `forward::write_request`: copying
    // only the head (or the body twice) into the one-send buffer turns it red.
    let upstream = WireRecorder::start();
    let gateway = Setup::new()
        .upstream_named("app", &[upstream.addr], "")
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let content = [("Content-Type", "application/octet-stream")];
    let probe = bytes(1000, 7);
    post(gateway.proxy, "/hooks/edge", &content, &probe).expect_status(200);
    let head = upstream.requests()[0].len() - probe.len();
    let totals = [4095usize, 4096, 4097, 8192];
    for (i, total) in totals.into_iter().enumerate() {
        let body = bytes(total - head, i as u64);
        let answered = post(gateway.proxy, "/hooks/edge", &content, &body);
        assert_eq!(answered.status, 200, "{total} B");
        assert_eq!(answered.body, b"ok", "{total} B");
    }
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1 + totals.len(), "each request once");
    for (i, total) in totals.into_iter().enumerate() {
        let request = &requests[1 + i];
        let body = bytes(total - head, i as u64);
        assert_eq!(request.len(), total, "request {i}");
        assert!(
            request.ends_with(&body),
            "the body of the {total} B request differs"
        );
        assert!(request.starts_with(b"POST /hooks/edge HTTP/1.1\r\n"));
        assert_eq!(
            request[..head].windows(4).position(|w| w == b"\r\n\r\n"),
            Some(head - 4),
            "the head of the {total} B request"
        );
    }
    let connections = upstream
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(connections <= 2, "{connections} connections for 5 requests");
}

/// Fan-out copies and queued deliveries share `forward::write_request` with
/// the primary request: bodies that put the request either side of
/// `forward::ONE_SEND_MAX` reach the copy upstream and the queued route's
/// upstream whole, each once.
#[test]
fn copies_and_queued_deliveries_either_side_of_the_one_send_limit_arrive_whole_and_once() {
    let (primary, copy, queued) = (
        WireRecorder::start(),
        WireRecorder::start(),
        WireRecorder::start(),
    );
    let gateway = Setup::new()
        .table("[storage]\npath = \"data\"")
        .upstream_named("app", &[primary.addr], "")
        .upstream_named("copy", &[copy.addr], "")
        .upstream_named("later", &[queued.addr], "")
        .fan_out("fan", "/fan", &["app", "copy"], "")
        .route("queued", "/queued", "later", "delivery = \"queued\"")
        .start();
    let content = [("Content-Type", "application/octet-stream")];
    let sizes = [3600usize, 3700, 3800, 3900, 4000, 4100];
    for (i, size) in sizes.into_iter().enumerate() {
        let body = bytes(size, i as u64);
        post(gateway.proxy, "/fan", &content, &body).expect_status(200);
        post(gateway.proxy, "/queued", &content, &body).expect_status(202);
    }
    let arrived = wait_until(Duration::from_secs(10), || {
        copy.requests().len() >= sizes.len() && queued.requests().len() >= sizes.len()
    });
    assert!(
        arrived,
        "copies or queued deliveries missing:\n{}",
        gateway.log()
    );
    for recorder in [&primary, &copy, &queued] {
        let requests = recorder.requests();
        assert_eq!(requests.len(), sizes.len(), "each request once");
        // By body length (the sizes differ): queued deliveries may go in any order.
        let body_len = |request: &Vec<u8>| {
            let head = request.windows(4).position(|w| w == b"\r\n\r\n");
            head.map_or(0, |head| request.len() - head - 4)
        };
        for (i, size) in sizes.into_iter().enumerate() {
            let body = bytes(size, i as u64);
            let request = requests.iter().find(|r| body_len(r) == size);
            assert!(
                request.is_some_and(|r| r.ends_with(&body)),
                "the {size} B body is missing or differs"
            );
        }
    }
}
