//! The admin listener's guard, against the real binary: `Host` must be an IP
//! address, `localhost` or a listed name (DNS rebinding needs a name); an
//! optional bearer token; `POST /reload` is never a CORS simple request and
//! `GET` changes nothing; the probes stay open.

mod common;

use std::net::SocketAddr;

use common::*;

fn one_route(upstream: &Upstream) -> Setup {
    Setup::new()
        .upstream_named("a", &[upstream.addr], "")
        .route("x", "/x", "a", "")
}

/// One request to the admin listener with exactly these header lines.
fn admin(to: SocketAddr, method: &str, path: &str, headers: &[&str]) -> Response {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    send_raw(to, request.as_bytes()).expect("admin exchange")
}

fn reloads(gateway: &Gateway) -> f64 {
    gateway.metric_required("hookgate_config_reloads_total", &[("result", "success")])
        + gateway.metric_required("hookgate_config_reloads_total", &[("result", "failure")])
}

/// A name that is neither an IP literal, `localhost` nor in `admin_hosts` gets
/// 421 on every endpoint but the probes. Guards the `host_allowed` check in
/// `admin::guard`.
#[test]
fn host_must_be_an_ip_localhost_or_a_listed_name() {
    let upstream = Upstream::start("a");
    let gateway = one_route(&upstream)
        .server("admin_hosts = [\"hookgate\"]")
        .start();
    let port = gateway.admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("hookgate:{port}"),
        "[::1]:1234".to_string(),
    ] {
        let answer = admin(
            gateway.admin,
            "GET",
            "/metrics",
            &[&format!("Host: {host}")],
        );
        assert_eq!(answer.status, 200, "{host}");
    }
    for host in [
        format!("Host: rebind.attacker.example:{port}"),
        format!("Host: 127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/metrics", "/config"] {
            let answer = admin(gateway.admin, "GET", path, &[&host]);
            assert_eq!(answer.status, 421, "{host} {path}");
            assert_eq!(answer.json()["error"], "host_not_allowed");
        }
        let reload = admin(
            gateway.admin,
            "POST",
            "/reload",
            &[&host, "Content-Type: application/json"],
        );
        assert_eq!(reload.status, 421);
        // Probes stay open: load balancers call them by any name.
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(
                admin(gateway.admin, "GET", probe, &[&host]).status,
                200,
                "{probe}"
            );
        }
    }
    let no_host = admin(gateway.admin, "GET", "/config", &[]);
    assert_eq!(no_host.status, 421, "a request without Host is refused");
    // Two Host headers: Pingora closes the connection before the guard runs,
    // or the guard answers 421; never the config.
    let two_hosts = send_raw(
        gateway.admin,
        b"GET /config HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(two_hosts.is_err() || two_hosts.is_ok_and(|r| r.status == 421));
    assert_eq!(
        reloads(&gateway),
        0.0,
        "no refused request reached the reloader"
    );
}

/// RFC 9110 §15.5.6: a 405 says the target exists. A method other than `GET`
/// on a `GET` endpoint is 405 with `Allow: GET`; any method on a path that
/// names no endpoint is 404 with the list of endpoints, as a `GET` there is.
/// Guards the endpoint arm of the method match in `admin.rs` `response`:
/// before it, `POST /nothing` was a 405 claiming the path takes `GET`.
#[test]
fn an_unknown_admin_path_is_404_whatever_the_method() {
    let upstream = Upstream::start("a");
    let gateway = one_route(&upstream).start();
    let host = format!("Host: {}", gateway.admin);
    let json = "Content-Type: application/json";
    for method in ["GET", "POST", "DELETE"] {
        let answer = admin(gateway.admin, method, "/nothing", &[&host, json]);
        assert_eq!(answer.status, 404, "{method} /nothing");
        assert_eq!(answer.json()["error"], "not_found", "{method}");
        assert_eq!(answer.header("allow"), None, "{method}");
    }
    for path in ["/metrics", "/healthz", "/readyz", "/config"] {
        let answer = admin(gateway.admin, "POST", path, &[&host, json]);
        assert_eq!(answer.status, 405, "POST {path}");
        assert_eq!(answer.header("allow"), Some("GET"), "POST {path}");
        assert_eq!(answer.json()["error"], "method_not_allowed");
    }
}

/// What a web page can send without a CORS preflight (a form post, a
/// `text/plain` fetch) cannot reload; `GET /reload` is 405. Guards
/// `reload_marked` in `admin::guard` and the `(_, "/reload")` arm.
#[test]
fn a_cross_site_simple_request_cannot_reload() {
    let upstream = Upstream::start("a");
    let gateway = one_route(&upstream).start();
    let host = format!("Host: {}", gateway.admin);
    for content_type in [
        None,
        Some("Content-Type: application/x-www-form-urlencoded"),
        Some("Content-Type: text/plain"),
        Some("Content-Type: multipart/form-data; boundary=x"),
    ] {
        let mut headers = vec![host.as_str()];
        headers.extend(content_type);
        let answer = admin(gateway.admin, "POST", "/reload", &headers);
        assert_eq!(answer.status, 415, "{content_type:?}");
        assert_eq!(answer.json()["error"], "reload_needs_json_or_header");
    }
    let get = admin(gateway.admin, "GET", "/reload", &[&host]);
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    assert_eq!(reloads(&gateway), 0.0, "nothing was reloaded");

    let marked = admin(
        gateway.admin,
        "POST",
        "/reload",
        &[&host, "X-Hookgate-Reload: 1"],
    );
    marked.expect_status(200);
    let json = admin(
        gateway.admin,
        "POST",
        "/reload",
        &[&host, "Content-Type: application/json; charset=utf-8"],
    );
    assert_eq!(json.status, 200);
    gateway.assert_metric(
        "hookgate_config_reloads_total",
        &[("result", "success")],
        2.0,
    );
}

/// With `admin_token` (here from a file): 401 with `WWW-Authenticate: Bearer`
/// without it or with a wrong one, the probes open, and a rotated token file
/// applies on reload. Guards the token comparison in `admin::guard`.
#[test]
fn a_bearer_token_guards_everything_but_the_probes() {
    let upstream = Upstream::start("a");
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "admin-token-one-5f0c\n").unwrap();
    let gateway = one_route(&upstream)
        .server(&format!("admin_token = \"file:{}\"", token_file.display()))
        .server("watch = false")
        .start();
    let host = format!("Host: {}", gateway.admin);
    let bearer = |token: &str| format!("Authorization: Bearer {token}");

    for credentials in [
        None,
        Some(bearer("admin-token-wrong")),
        Some("Authorization: Basic YTpi".to_string()),
    ] {
        let mut headers = vec![host.clone()];
        headers.extend(credentials.clone());
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        for (method, path) in [("GET", "/metrics"), ("GET", "/config"), ("POST", "/reload")] {
            let mut with_json = headers.clone();
            with_json.push("Content-Type: application/json");
            let answer = admin(gateway.admin, method, path, &with_json);
            assert_eq!(answer.status, 401, "{credentials:?} {method} {path}");
            assert_eq!(answer.json()["error"], "unauthorized");
            assert!(
                answer
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{:?}",
                answer.headers
            );
        }
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(admin(gateway.admin, "GET", probe, &[&host]).status, 200);
    }
    let good = bearer("admin-token-one-5f0c");
    let metrics = admin(gateway.admin, "GET", "/metrics", &[&host, &good]);
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert_eq!(
        metric_value(
            &text,
            "hookgate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(0.0),
        "no refused request reached the reloader"
    );
    let config = admin(gateway.admin, "GET", "/config", &[&host, &good]);
    assert_eq!(config.json()["server"]["admin_token"], true);

    std::fs::write(&token_file, "admin-token-two-9a41\n").unwrap();
    let reloaded = admin(
        gateway.admin,
        "POST",
        "/reload",
        &[&host, &good, "Content-Type: application/json"],
    );
    reloaded.expect_status(200);
    assert_eq!(
        admin(gateway.admin, "GET", "/config", &[&host, &good]).status,
        401
    );
    let rotated = bearer("admin-token-two-9a41");
    assert_eq!(
        admin(gateway.admin, "GET", "/config", &[&host, &rotated]).status,
        200
    );

    let log = gateway.log();
    assert!(
        !log.contains("admin-token-one") && !log.contains("admin-token-two"),
        "{log}"
    );
}
