//! `hookgate demo` works with nothing else running: it serves the embedded
//! config with its echo upstream and its sample deliveries get the answers the
//! README promises. (Its fixed ports 8080, 9090 and 9000 lie outside the
//! ephemeral range the other tests draw from.)

mod common;

use std::time::Duration;

use common::*;

#[test]
fn demo_shows_forwarded_refused_and_rejected_deliveries() {
    // Guards `demo::samples` and `server::run`'s echo service: a sample signed
    // differently from the route, or no echo upstream, changes the statuses.

    for port in [8080, 9090, 9000] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken; the demo needs 8080, 9090 and 9000"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_binary(&["demo"], &dir);
    let log = || std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    let finished = wait_until(Duration::from_secs(30), || {
        log().contains("Ctrl-C stops the demo")
    });
    let output = log();
    let _ = child.kill();
    let _ = child.wait();
    assert!(finished, "the demo did not finish its samples:\n{output}");
    let statuses: Vec<&str> = output
        .lines()
        .filter_map(|line| line.strip_prefix("<-- the sender got HTTP "))
        .collect();
    assert_eq!(
        statuses,
        ["200:", "401:", "200:", "405:", "404:"],
        "{output}"
    );
    assert!(
        output.contains("\"x-hookgate-route\": \"github\""),
        "the echo shows the forwarded headers:\n{output}"
    );
    assert!(output.contains("\"error\":\"signature_invalid\""));
    assert!(
        !output.contains("demo-secret-not-for-production"),
        "the secret never appears"
    );
}
