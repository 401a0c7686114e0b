//! One reading of every request, end to end through the real binary: what the
//! gateway checked is what the app receives. Every case asserts what the sender
//! got and that the recording upstream saw nothing it should not; each HTTP/1
//! attack is followed by a health check on a fresh connection.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

const GITHUB_SECRET: &str = "agreement-github-secret";
const TOKEN: &str = "agreement-shared-token";

/// The shipped demo's layout (a verified GitHub route beside an unverified
/// catch-all), plus a host-bound verified route beside a host-less open one.
fn config(upstream: &Upstream, secrets: &tempfile::TempDir) -> Setup {
    let github = secrets.path().join("github");
    let token = secrets.path().join("token");
    std::fs::write(&github, GITHUB_SECRET).unwrap();
    std::fs::write(&token, TOKEN).unwrap();
    Setup::new()
        .upstream(upstream)
        .route(
            "github",
            "/webhooks/github",
            "app",
            &format!(
                "methods = [\"POST\"]\n\
                 verify = {{ scheme = \"github\", secrets = [\"file:{}\"] }}",
                github.display()
            ),
        )
        .route("catch-all", "/webhooks/*", "app", "")
        .route(
            "secure",
            "/h/*",
            "app",
            &format!(
                "host = \"secure.example\"\n\
                 verify = {{ scheme = \"token\", header = \"X-Token\", secrets = [\"file:{}\"] }}",
                token.display()
            ),
        )
        .route("open", "/h/*", "app", "")
        .route(
            "events",
            "/events",
            "app",
            "event = { json = \"/event_type\" }\nunmatched = \"reject\"\n\
             [[routes.events]]\nmatch = \"user_signup\"\nupstream = \"app\"",
        )
}

fn start() -> (Upstream, Gateway, tempfile::TempDir) {
    let upstream = Upstream::start("app");
    let secrets = tempfile::tempdir().unwrap();
    let gateway = config(&upstream, &secrets).start();
    (upstream, gateway, secrets)
}

/// Writes `request` on a new connection; returns the first answer (waited
/// for up to 30 s: a loaded machine can be slow to answer).
fn exchange(to: SocketAddr, request: &[u8]) -> Option<Response> {
    exchange_closing(to, request, Duration::ZERO).0
}

/// Like [`exchange`], and whether the gateway then closed the connection
/// (EOF or a reset within `close_within`, no second answer). A zero
/// `close_within` does not look.
fn exchange_closing(
    to: SocketAddr,
    request: &[u8],
    close_within: Duration,
) -> (Option<Response>, bool) {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // The gateway may close before reading everything: a failed write is fine.
    let _ = writer.write_all(request);
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader).ok();
    if close_within.is_zero() {
        return (response, false);
    }
    reader
        .get_ref()
        .set_read_timeout(Some(close_within))
        .unwrap();
    let mut rest = [0u8; 1];
    let closed = matches!(reader.read(&mut rest), Ok(0))
        || matches!(reader.read(&mut rest), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    (response, closed)
}

/// How long a connection the gateway must close may stay open (it closes at
/// once; the margin is for a loaded machine).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

fn assert_refused(answer: &Response, status: u16, error: &str, reason_has: &str, case: &str) {
    assert_eq!(answer.status, status, "{case}: {answer:?}");
    let body = answer.json();
    assert_eq!(body["error"], error, "{case}: {body}");
    if !reason_has.is_empty() {
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(reason_has),
            "{case}: reason {reason:?} lacks {reason_has:?}"
        );
    }
}

fn healthy(gateway: &Gateway, upstream: &Upstream, case: &str) {
    let before = upstream.count();
    let answer = post(gateway.proxy, "/webhooks/health", &[], b"ok");
    assert_eq!(answer.status, 200, "health check after {case}");
    assert_eq!(upstream.count(), before + 1, "health check after {case}");
}

#[test]
fn every_spelling_of_a_verified_path_is_held_to_its_checks() {
    let (upstream, gateway, _secrets) = start();
    // Breaks when `target::canonical_path` stops decoding, merging or removing
    // dot segments, or `routing::path_matches` stops ignoring case, the
    // trailing slash or the format suffix: these then reach the catch-all.
    let spellings = [
        "/webhooks/github",
        "/webhooks/%67ithub",
        "/webhooks//github",
        "/webhooks/./github",
        "/webhooks/x/../github",
        "/webhooks/x/%2E%2E/github",
        "/WEBHOOKS/GitHub",
        "/webhooks/github/",
        "/webhooks/github.json",
        "//webhooks///github",
    ];
    for path in spellings {
        let answer = post(gateway.proxy, path, &[], b"{\"unsigned\":true}");
        assert_refused(&answer, 401, "signature_missing", "", path);
        assert_eq!(answer.json()["route"], "github", "{path}");
    }
    // A GET to the POST-only route is 405, not a pass through the catch-all.
    let answer = get(gateway.proxy, "/webhooks/github").unwrap();
    assert_refused(&answer, 405, "method_not_allowed", "", "GET");
    assert_eq!(upstream.count(), 0, "nothing unverified arrived");

    // Signed, an odd spelling is forwarded in its canonical form.
    let body = b"{\"zen\":\"Keep it logically awesome.\"}";
    let signature = github_signature(GITHUB_SECRET, body);
    let answer = post(
        gateway.proxy,
        "/webhooks/%67ithub?x=%41",
        &[("X-Hub-Signature-256", &signature)],
        body,
    );
    assert_eq!(answer.status, 200);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].target, "/webhooks/github?x=%41");
    assert_eq!(received[0].header("x-hookgate-route"), Some("github"));
    assert_eq!(received[0].body, body);

    // The catch-all still serves its own paths, canonicalized.
    let answer = post(gateway.proxy, "/webhooks/other//x/./y", &[], b"a");
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.received()[1].target, "/webhooks/other/x/y");
}

/// A prefix route's own path is held to its checks with a format suffix too,
/// as an exact route's is: `/plain/admin.json` is what Rails' `/plain/admin(.:format)`
/// or Spring's suffix patterns hand to the `/plain/admin` handler, so it must
/// not reach the app through the weaker catch-all `/plain/*`. Guards the
/// format-suffix arm of `routing::path_matches` for `PathPattern::Prefix`
/// (helper-43's finding: these were forwarded through the catch-all).
#[test]
fn a_prefix_routes_own_path_with_a_format_suffix_is_held_to_its_checks() {
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("plain", "/plain/*", "app", "")
        .route(
            "admin",
            "/plain/admin/*",
            "app",
            "allow = [\"10.9.9.9/32\"]",
        )
        .start();
    for path in [
        "/plain/admin",
        "/plain/admin/",
        "/plain/admin/x",
        "/plain/admin.json",
        "/plain/ADMIN.json",
        "/plain/admin.xml",
        "/plain/admin.",
    ] {
        let answer = post(gateway.proxy, path, &[], b"{}");
        assert_refused(&answer, 403, "ip_not_allowed", "", path);
        assert_eq!(answer.json()["route"], "admin", "{path}");
    }
    assert_eq!(upstream.count(), 0, "nothing reached the app");
    // Other paths beside it stay with the catch-all.
    for path in [
        "/plain/administrator",
        "/plain/admins.json",
        "/plain/other.json",
    ] {
        let answer = post(gateway.proxy, path, &[], b"{}");
        assert_eq!(answer.status, 200, "{path}: {:?}", answer.json());
    }
    let received: Vec<String> = upstream.received().into_iter().map(|r| r.target).collect();
    assert_eq!(
        received,
        [
            "/plain/administrator",
            "/plain/admins.json",
            "/plain/other.json"
        ]
    );
    assert!(received
        .iter()
        .all(|target| !target.starts_with("/plain/admin.")));
}

#[test]
fn paths_that_cannot_be_made_unambiguous_are_refused() {
    let (upstream, gateway, _secrets) = start();
    // Breaks when `target::check_byte` lets any of these through.
    let cases = [
        ("/webhooks%2Fgithub", "encoded '/'"),
        ("/webhooks/github%2f", "encoded '/'"),
        ("/webhooks%5Cgithub", "encoded '/'"),
        ("/webhooks\\github", "'\\'"),
        ("/webhooks/github;a=b", "';'"),
        ("/webhooks/github%3Bx", "';'"),
        ("/webhooks/git%zzhub", "percent-escape"),
        ("/webhooks/git%00hub", "control character"),
        ("/webhooks/git%C3%A9", "outside ASCII"),
        ("*", "must be a path"),
    ];
    for (path, reason) in cases {
        let answer = post(gateway.proxy, path, &[], b"x");
        assert_refused(&answer, 400, "bad_request", reason, path);
    }
    assert_eq!(upstream.count(), 0);
    healthy(&gateway, &upstream, "refused paths");
}

#[test]
fn the_authority_is_read_once_and_forwarded_as_read() {
    let (upstream, gateway, _secrets) = start();
    let proxy = gateway.proxy;
    // Absolute form without Host (HTTP/1.0: HTTP/1.1 requires Host): the
    // target's authority picks the verified route (breaks when
    // `target::read_authority` ignores the absolute form).
    let answer = exchange(
        proxy,
        b"POST https://secure.example/h/x HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_refused(
        &answer.unwrap(),
        401,
        "signature_missing",
        "",
        "absolute form",
    );
    // Letter case, a trailing dot and a port do not escape the host either.
    let answer = exchange(
        proxy,
        b"POST /h/x HTTP/1.1\r\nHost: SECURE.Example.:8443\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert_refused(
        &answer.unwrap(),
        401,
        "signature_missing",
        "",
        "host spelling",
    );
    assert_eq!(upstream.count(), 0);

    // Verified, the upstream gets an origin-form target and the Host.
    let request = format!(
        "POST HTTPS://Secure.Example/h//x?q=1 HTTP/1.1\r\nHost: Secure.Example\r\nX-Token: {TOKEN}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    let answer = exchange(proxy, request.as_bytes());
    assert_eq!(answer.unwrap().status, 200);
    let received = upstream.received();
    assert_eq!(received[0].target, "/h/x?q=1");
    assert_eq!(received[0].header("host"), Some("secure.example"));
    assert_eq!(received[0].header("x-hookgate-route"), Some("secure"));

    // Refused: no Host on HTTP/1.1, two Hosts, a Host that differs from the
    // absolute-form authority, CONNECT, a method no route configured.
    let refused: [(&[u8], u16, &str); 5] = [
        (b"POST /h/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, "no Host"),
        (b"POST /h/x HTTP/1.1\r\nHost: a.example\r\nHost: secure.example\r\nContent-Length: 0\r\n\r\n", 400, "two Hosts"),
        (b"POST http://secure.example/h/x HTTP/1.1\r\nHost: other.example\r\nContent-Length: 0\r\n\r\n", 400, "Host differs"),
        (b"CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n\r\n", 400, "CONNECT"),
        (b"TRACE /h/x HTTP/1.1\r\nHost: a.example\r\n\r\n", 405, "TRACE"),
    ];
    for (request, status, case) in refused {
        let answer = exchange(proxy, request);
        let answer = answer.unwrap_or_else(|| panic!("{case}: no answer"));
        assert_eq!(answer.status, status, "{case}");
    }
    assert_eq!(upstream.count(), 1, "nothing else arrived");
    healthy(&gateway, &upstream, "authority cases");
}

/// README ("The host."): refused is "a `Host` that is not byte for byte the
/// target's authority (with the reason `the Host header differs from the
/// request target's authority`, and the connection closed)". Guards
/// `only_host_differs` and `HOST_DIFFERS` (proxy/request.rs) and its reason in
/// `refuse_head` (proxy/mod.rs): without them the reason is "the request head
/// is not valid HTTP".
#[test]
fn a_host_that_differs_from_the_absolute_target_gets_its_own_reason() {
    let (upstream, gateway, _secrets) = start();
    for host in ["b.example", "A.example"] {
        let request = format!(
            "POST http://a.example/webhooks/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (answer, closed) = exchange_closing(gateway.proxy, request.as_bytes(), CLOSE_WITHIN);
        let answer = answer.expect("an answer");
        answer.expect_status(400);
        let body = answer.json();
        assert_eq!(body["error"], "bad_request", "{host}");
        assert_eq!(
            body["reason"], "the Host header differs from the request target's authority",
            "{host}"
        );
        assert_eq!(body.get("route"), None, "{host}");
        assert_eq!(answer.header("connection"), Some("close"), "{host}");
        assert!(closed, "{host}: the connection is closed after the 400");
    }
    assert_eq!(upstream.count(), 0, "the upstream received nothing");
    gateway.assert_requests("_unmatched", "bad_request", 2.0);
    healthy(&gateway, &upstream, "Host differs");
}

/// README ("The host."): refused is "an HTTP/1.1 request without `Host`",
/// whatever the target's form (RFC 9112 §3.2: a server MUST answer 400). An
/// absolute-form target without `Host` was forwarded with the target's
/// authority. Guards the first arm of `target::read_authority`.
#[test]
fn an_http11_absolute_form_request_without_host_is_refused() {
    let (upstream, gateway, _secrets) = start();
    let request = b"POST http://a.example/webhooks/x HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let answer = send_raw(gateway.proxy, request).expect("an answer");
    answer.expect_status(400);
    let body = answer.json();
    assert_eq!(body["error"], "bad_request");
    assert_eq!(body["reason"], "the Host header is missing (RFC 9112 §3.2)");
    assert_eq!(upstream.count(), 0, "the upstream received nothing");
    healthy(&gateway, &upstream, "absolute form without Host");
}

/// `only_host_differs` (proxy/request.rs) is "the one thing wrong with head's
/// authority", and a head with another problem beside a differing `Host` gets
/// the generic refusal (`heads_that_could_be_read_two_ways_are_refused`). But
/// it asks only Pingora's check, so a `Host` hookgate refuses on its own (`a b`,
/// `*`, `b%41`, a port over 65535) or a target that is no http(s) URL
/// (`ftp://`) was told "the Host header differs": fixing the Host then gets
/// another 400. Each is still refused and closed; the reason is what is guarded.
#[test]
fn a_head_with_another_problem_than_a_differing_host_is_not_told_it_differs() {
    let (upstream, gateway, _secrets) = start();
    let cases = [
        ("http://a.example/webhooks/x", "b c"),
        ("http://a.example/webhooks/x", "*"),
        ("http://a.example/webhooks/x", "b%41"),
        ("http://a.example/webhooks/x", "b:99999"),
        ("ftp://a.example/webhooks/x", "b.example"),
    ];
    for (target, host) in cases {
        let request =
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}");
        let (answer, closed) = exchange_closing(gateway.proxy, request.as_bytes(), CLOSE_WITHIN);
        let answer = answer.expect("an answer");
        answer.expect_status(400);
        assert!(closed, "{target} {host}: closed");
        assert_ne!(
            answer.json()["reason"],
            "the Host header differs from the request target's authority",
            "{target} {host}"
        );
    }
    assert_eq!(upstream.count(), 0, "the upstream received nothing");
}

/// The smuggling classics. Each is refused (400, or 413 for the size case),
/// its connection closed, and nothing reaches the upstream: neither the
/// request nor what was smuggled behind it.
#[test]
fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (upstream, gateway, _secrets) = start();
    let smuggled = "GET /webhooks/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let head =
        |extra: &str| format!("POST /webhooks/other HTTP/1.1\r\nHost: a.example\r\n{extra}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        // Breaks when `framing::check` stops reading the raw head for Content-Length.
        ("CL.TE", format!("{}0\r\n\r\n{smuggled}", head("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n")), 400),
        ("TE.CL", format!("{}5\r\nhello\r\n0\r\n\r\n{smuggled}", head("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n")), 400),
        // TE.TE obfuscations: only exactly one `chunked` is accepted.
        ("TE list", format!("{}0\r\n\r\n{smuggled}", head("Transfer-Encoding: identity, chunked\r\n")), 400),
        ("TE twice", format!("{}0\r\n\r\n{smuggled}", head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")), 400),
        ("TE xchunked", format!("{}0\r\n\r\n{smuggled}", head("Transfer-Encoding: xchunked\r\n")), 400),
        ("TE space before colon", format!("{}0\r\n\r\n{smuggled}", head("Transfer-Encoding : chunked\r\n")), 400),
        ("TE on HTTP/1.0", format!("POST /webhooks/other HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("obs-fold", format!("{}x", head("Content-Length: 1\r\nX-A: 1\r\n 2\r\n")), 400),
        ("bare LF", format!("POST /webhooks/other HTTP/1.1\nHost: a.example\nContent-Length: 1\n\nx{smuggled}"), 400),
        ("NUL in value", format!("{}x", head("Content-Length: 1\r\nX-A: a\0b\r\n")), 400),
        ("CR in value", format!("{}x", head("Content-Length: 1\r\nX-A: a\rb\r\n")), 400),
        ("CL list", format!("{}abcd", head("Content-Length: 4, 4\r\n")), 400),
        ("CL sign", format!("{}abcd", head("Content-Length: +4\r\n")), 400),
        ("CL twice", format!("{}abcd", head("Content-Length: 4\r\nContent-Length: 4\r\n")), 400),
        ("CL differs", format!("{}abcd", head("Content-Length: 4\r\nContent-Length: 5\r\n")), 400),
        // Breaks when a body error leaves the connection open (`ctx.close`).
        ("bad chunk size", format!("{}zz\r\nabc\r\n0\r\n\r\n{smuggled}", head("Transfer-Encoding: chunked\r\n")), 400),
        ("oversized chunk size", format!("{}fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n{smuggled}", head("Transfer-Encoding: chunked\r\n")), 400),
        ("chunk without CRLF", format!("{}3\r\nabcX\r\n0\r\n\r\n{smuggled}", head("Transfer-Encoding: chunked\r\n")), 400),
        // A refusal before the body: the pipelined request behind it is not served.
        ("behind a 413", format!("{}{smuggled}", head("Content-Length: 99999999\r\n")), 413),
    ];
    for (case, request, status) in &cases {
        let (answer, closed) = exchange_closing(gateway.proxy, request.as_bytes(), CLOSE_WITHIN);
        let answer = answer.unwrap_or_else(|| panic!("{case}: no answer"));
        assert_eq!(answer.status, *status, "{case}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{case}: JSON answer");
        assert_eq!(answer.header("connection"), Some("close"), "{case}");
        assert!(closed, "{case}: the connection stayed open");
        assert_eq!(
            upstream.count(),
            0,
            "{case}: something reached the upstream"
        );
        healthy(&gateway, &upstream, case);
        upstream.clear();
    }
}

#[test]
fn a_request_pipelined_behind_another_is_never_read_as_its_body() {
    // Guards `read_bounded` stopping at Content-Length (body.rs): reading to
    // the end of the write forwards the second request as the first one's body.

    let (upstream, gateway, _secrets) = start();
    // Two complete requests in one write. The first is answered with exactly
    // its own body forwarded; pipelining is off (Pingora's default), so the
    // connection is then closed and the second is left to the client to retry
    // (RFC 9112 §9.3.2), never forwarded as part of the first.
    let request = "POST /webhooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA\
                   POST /webhooks/b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nB";
    let (answer, closed) = exchange_closing(gateway.proxy, request.as_bytes(), CLOSE_WITHIN);
    assert_eq!(answer.unwrap().status, 200);
    assert!(closed, "the connection stayed open");
    let received = upstream.received();
    let seen: Vec<(&str, &[u8])> = received
        .iter()
        .map(|r| (r.target.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(seen, [("/webhooks/a", &b"A"[..])]);
    healthy(&gateway, &upstream, "pipelining");
}

#[test]
fn forwarded_headers_come_from_trusted_proxies_only() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start_with_server(
        "trusted_proxies = [\"127.0.0.4/32\"]",
        &format!(
            "[upstreams.app]\ntargets = [\"{}\"]\n[[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nallow = [\"192.0.2.0/24\", \"127.0.0.0/8\"]\nupstream = \"app\"\n",
            upstream.addr
        ),
    );
    let spoofed = [
        ("X-Forwarded-For", "192.0.2.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "lb.example"),
        ("X-Forwarded-Port", "443"),
        ("Forwarded", "for=192.0.2.99;proto=https"),
        ("X-Real-IP", "192.0.2.99"),
    ];
    // From an untrusted peer (127.0.0.5): every forwarded header is replaced.
    // Breaks when `Forwarding::keeps` passes them on for untrusted peers.
    let answer = post_from(
        "127.0.0.5".parse().unwrap(),
        gateway.proxy,
        "/hooks",
        &spoofed,
        b"a",
    );
    assert_eq!(answer.status, 200);
    let port = gateway.proxy.port().to_string();
    let host = gateway.proxy.to_string();
    let first = &upstream.received()[0];
    assert_eq!(first.header("x-forwarded-for"), Some("127.0.0.5"));
    assert_eq!(first.header("x-forwarded-proto"), Some("http"));
    assert_eq!(first.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(first.header("x-forwarded-port"), Some(port.as_str()));
    assert_eq!(first.header("x-real-ip"), Some("127.0.0.5"));
    assert_eq!(first.header("forwarded"), None);

    // Through the trusted load balancer (127.0.0.4): its headers are kept, and
    // X-Real-IP carries the client the allowlist judged.
    let answer = post_from(
        "127.0.0.4".parse().unwrap(),
        gateway.proxy,
        "/hooks",
        &spoofed,
        b"a",
    );
    assert_eq!(answer.status, 200);
    let second = &upstream.received()[1];
    assert_eq!(
        second.header("x-forwarded-for"),
        Some("192.0.2.7, 127.0.0.4")
    );
    assert_eq!(second.header("x-forwarded-proto"), Some("https"));
    // Always the host routing decided on: an app trusting X-Forwarded-Host
    // (Django's USE_X_FORWARDED_HOST) sees the host that was checked.
    assert_eq!(second.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(second.header("x-forwarded-port"), Some("443"));
    assert_eq!(second.header("x-real-ip"), Some("192.0.2.7"));
    // A second reading of client and host beside hookgate's: never passed on.
    assert_eq!(second.header("forwarded"), None);
}

#[test]
fn check_warns_about_weaker_routes_beside_stronger_ones() {
    let upstream = Upstream::start("app");
    let secrets = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config(&upstream, &secrets).rest()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stderr);
    // Breaks when `config::neighbours::weaker_neighbours` is not called by `Config::compile`.
    assert!(
        stdout.contains(
            "warning: route \"catch-all\" (/webhooks/*) has no verify unlike route \"github\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: route \"open\" (/h/*) has no verify unlike route \"secure\""),
        "{stdout}"
    );
}

#[test]
fn headers_a_backend_reads_differently_are_refused() {
    let (upstream, gateway, _secrets) = start();
    // Breaks when `agreement::check` is not called, or lets one through.
    // (path, headers, what the reason names)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 14] = [
        ("/webhooks/x", &[("X_Hookgate_Route", "github")], "'_'"),
        ("/webhooks/x", &[("X_Real_IP", "6.6.6.6")], "'_'"),
        ("/webhooks/x", &[("Transfer_Encoding", "chunked")], "'_'"),
        (
            "/webhooks/x",
            &[("X-HTTP-Method-Override", "DELETE")],
            "override",
        ),
        (
            "/webhooks/x",
            &[("X-Original-URL", "/webhooks/github")],
            "override",
        ),
        ("/webhooks/x?_method=DELETE", &[], "_method"),
        ("/webhooks/x?_me%74hod=DELETE", &[], "_method"),
        ("/webhooks/x?+_method=DELETE", &[], "_method"),
        (
            "/webhooks/x",
            &[("X-Original-Method", "DELETE")],
            "override",
        ),
        (
            "/webhooks/x",
            &[("X-Forwarded-Uri", "/webhooks/github")],
            "override",
        ),
        (
            "/webhooks/x",
            &[("X-Forwarded-Prefix", "/admin")],
            "trusted proxies",
        ),
        (
            "/webhooks/x",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "_method",
        ),
        (
            "/webhooks/x",
            &[("Connection", "X-Token"), ("X-Token", "t")],
            "Connection",
        ),
        (
            "/webhooks/x",
            &[("Connection", "Content-Type"), ("Content-Type", "a/b")],
            "Connection",
        ),
    ];
    for (path, headers, reason) in cases {
        let form = headers.iter().any(|(_, v)| v.contains("urlencoded"));
        let body: &[u8] = if form { b"id=1&_method=DELETE" } else { b"{}" };
        let answer = post(gateway.proxy, path, headers, body);
        assert_refused(
            &answer,
            400,
            "bad_request",
            reason,
            &format!("{path} {headers:?}"),
        );
    }
    // A fragment in the request line (Pingora's URI parser would drop it).
    let answer = exchange(
        gateway.proxy,
        b"POST /webhooks/github#x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_refused(&answer.unwrap(), 400, "bad_request", "fragment", "fragment");
    // Numeric host spellings every URL parser reads as 127.0.0.1, and a name
    // with two trailing dots (Breaks without the numeric-host rule in
    // `target::parse_authority`.) And an empty `Host` on HTTP/1.1: an `http`
    // URI with an empty host is invalid (RFC 9110 §4.2.1; breaks without the
    // empty-Host arm of `target::read_authority`).
    for host in [
        "",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.000.000.001",
        "secure.example..",
        "[::ffff:127.0.0.1]",
    ] {
        let request = format!("POST /h/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
        let answer = exchange(gateway.proxy, request.as_bytes());
        assert_refused(&answer.unwrap(), 400, "bad_request", "Host", host);
    }
    assert_eq!(upstream.count(), 0);
    healthy(&gateway, &upstream, "header cases");
    // `Proxy-*` headers are hop-by-hop: `Proxy-Client-IP` (read as the client
    // by Java helpers) never reaches the app.
    let answer = post(
        gateway.proxy,
        "/webhooks/x",
        &[("Proxy-Client-IP", "6.6.6.6")],
        b"{}",
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        upstream
            .received()
            .last()
            .unwrap()
            .header("proxy-client-ip"),
        None
    );
}

#[test]
fn a_json_event_must_be_declared_as_json() {
    let (upstream, gateway, _secrets) = start();
    let body = br#"{"event_type":"user_signup","x":"&event_type=admin&y="}"#;
    // Flask reads this body as a form (event_type=admin) when it is declared
    // as one. Breaks without the `declares` check in `Extractor::extract`.
    let answer = post(
        gateway.proxy,
        "/events",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    );
    assert_refused(
        &answer,
        400,
        "bad_request",
        "Content-Type",
        "form-declared JSON",
    );
    assert_eq!(upstream.count(), 0);
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
    ] {
        let answer = post(
            gateway.proxy,
            "/events",
            &[("Content-Type", content_type)],
            body,
        );
        assert_eq!(answer.status, 200, "{content_type}");
    }
    let received = upstream.received();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].header("x-hookgate-event"), Some("user_signup"));
}
