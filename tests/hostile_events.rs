//! Hostile pass on the `/events` admin API of queued delivery, through the real
//! binary: what an operator's query can do by accident and what an answer may
//! show.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const TOKEN: &str = "hostile-shared-token-4f1c9a";

/// A queued route whose `token` scheme reads the secret from a header whose
/// name holds none of the words the events API redacts by (`X-Shared-Pass`).
fn token_gateway(app: SocketAddr) -> Gateway {
    Gateway::start(&format!(
        "[upstreams.app]\ntargets = [\"{app}\"]\ntimeout = \"2s\"\n\
         [storage]\npath = \"data\"\n\
         [[routes]]\nname = \"tok\"\npath = \"/tok\"\nupstream = \"app\"\n\
         verify = {{ scheme = \"token\", header = \"X-Shared-Pass\", secrets = [\"literal:{TOKEN}\"] }}\n\
         delivery = \"queued\"\n\
         retry = {{ attempts = 1, backoff = \"50ms\", max_backoff = \"100ms\", max_age = \"1h\" }}\n"
    ))
}

fn send(gateway: &Gateway, body: &[u8]) -> String {
    let response = post(
        gateway.proxy,
        "/tok",
        &[
            ("X-Shared-Pass", TOKEN),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    response.expect_status(202);
    response.json()["event_id"]
        .as_str()
        .expect("event_id")
        .to_string()
}

fn admin_post(admin: SocketAddr, target: &str) -> Response {
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    send_raw(admin, request.as_bytes()).expect("admin POST")
}

#[test]
fn the_token_of_a_token_route_is_never_shown_whatever_its_header_is_called() {
    let app = Upstream::start("app");
    let gateway = token_gateway(app.addr);
    let id = send(&gateway, b"{\"n\":1}");
    assert!(wait_until(Duration::from_secs(10), || app.count() == 1));
    // The upstream gets the header as sent (the app may check it again).
    assert_eq!(app.received()[0].header("x-shared-pass"), Some(TOKEN));
    let shown = get(gateway.admin, &format!("/events/{id}")).expect("GET /events/ID");
    shown.expect_status(200);
    let text = String::from_utf8_lossy(&shown.body).into_owned();
    // Guards the route's own token header in `events_api::head_json`'s
    // redaction: with only the name heuristic (`is_credential`) the token of
    // `X-Shared-Pass` is printed as is.
    assert!(
        !text.contains(TOKEN),
        "GET /events/ID shows the route's shared token: {text}"
    );
    let headers = shown.json()["headers"].clone();
    let pass = headers
        .as_array()
        .expect("headers")
        .iter()
        .find(|pair| {
            pair[0]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-shared-pass")
        })
        .cloned();
    assert_eq!(
        pass,
        Some(serde_json::json!(["x-shared-pass", "[redacted]"])),
        "{text}"
    );
}

#[test]
fn a_replay_by_filter_refuses_a_limit_instead_of_replaying_every_match() {
    let app = Upstream::start("app");
    let gateway = token_gateway(app.addr);
    for n in 0..3 {
        send(&gateway, format!("{{\"n\":{n}}}").as_bytes());
    }
    assert!(wait_until(Duration::from_secs(10), || app.count() == 3));
    assert!(wait_until(Duration::from_secs(10), || {
        get(gateway.admin, "/events?status=delivered").is_ok_and(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|json| json["events"].as_array().map(Vec::len) == Some(3))
        })
    }));
    // An operator who "replays the newest one" with the list's paging
    // parameter: `limit` means nothing to a replay, which covers every match.
    let answer = admin_post(gateway.admin, "/events/replay?route=tok&limit=1");
    // Guards the refusal of `limit` in `events_api::replay_matching`: without
    // it this answers 200 and replays all three events.
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], "bad_request");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.count(), 3, "nothing was replayed");
    // The same filter without `limit` still replays (the refusal is narrow).
    let answer = admin_post(gateway.admin, "/events/replay?route=tok");
    answer.expect_status(200);
    assert_eq!(answer.json()["events"], 3);
    assert!(wait_until(Duration::from_secs(10), || app.count() == 6));
}

/// RFC 9110 §15.5.6: a 405 under `/events` says what the path takes, also
/// for a GET of `/events/replay` (before: 404 `event_not_found`). Guards
/// `events_api::allowed` and the `Allow` the admin adds to the events API's
/// 405 (admin.rs `response`): without them the 405 has no `Allow`. A path
/// that names no endpoint is 404, not a 405 that allows nothing.
#[test]
fn events_api_405s_allow_what_the_path_takes() {
    let app = Upstream::start("app");
    let gateway = token_gateway(app.addr);
    let exchange = |method: &str, target: &str| {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            gateway.admin
        );
        send_raw(gateway.admin, request.as_bytes()).expect("admin exchange")
    };
    for (method, target, allow) in [
        ("DELETE", "/events", "GET"),
        ("POST", "/events/00ab", "GET"),
        ("GET", "/events/00ab/replay", "POST"),
        ("PUT", "/events/replay", "POST"),
        // Never an event id (ids are 20 hex digits): not "no such event".
        ("GET", "/events/replay", "POST"),
    ] {
        let answer = exchange(method, target);
        answer.expect_status(405);
        assert_eq!(answer.header("allow"), Some(allow), "{method} {target}");
        assert_eq!(answer.json()["error"], "method_not_allowed");
    }
    let unknown = exchange("GET", "/events/00ab/replay/again");
    unknown.expect_status(404);
    assert_eq!(unknown.json()["error"], "not_found");
    assert_eq!(unknown.header("allow"), None);
}
