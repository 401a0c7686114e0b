//! Bounded by default, end to end through the real binary: idle connections,
//! slow heads and bodies, oversized heads, connection and request caps, a slow
//! reader, an upstream that drips its answer, and what counts as delivered.
//! Every limit is set short here so no test waits more than a few seconds.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Route `hooks` on `/hooks/*` to `upstream` (as `app`, response timeout 1 s).
fn app(upstream: &Upstream, route_extra: &str) -> Setup {
    Setup::new()
        .upstream_named("app", &[upstream.addr], "response_timeout = \"1s\"")
        .route("hooks", "/hooks/*", "app", route_extra)
}

fn connect(to: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Waits (bounded by the stream's read timeout) until the gateway closes the
/// connection; returns how long that took and whatever it wrote first.
fn wait_closed(stream: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: each read waits at most the read timeout, and 64 reads at most.
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    (started.elapsed(), seen)
}

fn hits(gateway: &Gateway, limit: &str) -> f64 {
    gateway.metric_required("hookgate_client_limit_hits_total", &[("limit", limit)])
}

#[test]
fn idle_and_silent_connections_are_closed() {
    let upstream = Upstream::start("app");
    // A long head deadline, so only the keep-alive timeout can close it early.
    let gateway = app(&upstream, "")
        .server("keepalive_timeout = \"1s\"\nheader_timeout = \"8s\"")
        .start();
    // After one request on a keep-alive connection (no `Keep-Alive` header,
    // which Pingora alone would keep open for ever). Breaks without the
    // `set_keepalive` in `client::apply`.
    let mut kept = connect(gateway.proxy);
    kept.write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        .unwrap();
    let answer = read_response(&mut BufReader::new(kept.try_clone().unwrap())).unwrap();
    assert_eq!(answer.status, 200);
    let (after, _) = wait_closed(&mut kept);
    assert!(
        after < Duration::from_secs(6),
        "idle connection open for {after:?}"
    );

    // A connection that never sends a byte: closed after header_timeout.
    let gateway = app(&upstream, "").server("header_timeout = \"1s\"").start();
    let mut silent = connect(gateway.proxy);
    let (after, _) = wait_closed(&mut silent);
    assert!(
        after < Duration::from_secs(6),
        "silent connection open for {after:?}"
    );
}

#[test]
fn a_head_trickled_byte_by_byte_is_cut_off_at_the_head_deadline() {
    let upstream = Upstream::start("app");
    let gateway = app(&upstream, "").server("header_timeout = \"1s\"").start();
    let before = hits(&gateway, "header_timeout");
    let mut stream = connect(gateway.proxy);
    let head = b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    // One byte per 100 ms: each read is quick, only the whole head is late.
    // Breaks when `head_deadline` no longer bounds `read_request`.
    trickle(
        &mut stream,
        head,
        Duration::from_millis(100),
        Duration::from_secs(6),
    );
    let (_, answer) = wait_closed(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "still reading the head after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert_eq!(hits(&gateway, "header_timeout"), before + 1.0);
    assert_eq!(upstream.count(), 0);
}

#[test]
fn slow_bodies_do_not_starve_fast_senders() {
    let upstream = Upstream::start("app");
    let gateway = app(&upstream, "")
        .server("max_inflight = 2\nbody_timeout = \"1s\"")
        .start();
    // Two senders trickle their bodies and hold both in-flight slots.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(gateway.proxy);
            stream
                .write_all(b"POST /hooks/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na")
                .unwrap();
            stream
        })
        .collect();
    // Both hold their slot before the fast sender starts.
    assert!(wait_until(Duration::from_secs(5), || gateway
        .try_metric("hookgate_inflight_requests", &[])
        .is_ok_and(|held| held.is_some_and(|held| held >= 2.0))));
    let started = Instant::now();
    // Breaks when `read_bounded` stops applying the body deadline: the slots
    // then stay taken as long as the trickle lasts and every delivery gets 503.
    let mut served = None;
    while started.elapsed() < Duration::from_secs(8) {
        for stream in &mut slow {
            let _ = stream.write_all(b"a");
        }
        let answer = post(gateway.proxy, "/hooks/fast", &[], b"fast");
        if answer.status == 200 {
            served = Some(started.elapsed());
            break;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = served.expect("a fast delivery was served while the trickle went on");
    // The body deadline is 1 s; the trickle would last 100 s.
    assert!(served < Duration::from_secs(6), "served after {served:?}");
    for stream in &mut slow {
        let (_, answer) = wait_closed(stream);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(hits(&gateway, "body_timeout"), 2.0);
    let targets: Vec<String> = upstream.received().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/hooks/fast"]);
}

#[test]
fn oversized_heads_are_refused_and_not_forwarded() {
    let upstream = Upstream::start("app");
    let gateway = app(&upstream, "").start();
    let long_line = format!(
        "POST /hooks/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 1\r\n\r\na",
        "a".repeat(900_000)
    );
    let many = |size: usize| {
        let mut many = String::from("POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n");
        for i in 0..200 {
            many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(size)));
        }
        many.push_str("\r\na");
        many
    };
    // Breaks when `client::check_head` is not called.
    for (case, request, limit) in [
        ("one 900 kB line", long_line, "max_head_size"),
        ("200 headers of 50 B", many(50), "max_header_count"),
        // Over both limits: refused as soon as 32 KiB of it are in, for its size
        // (`request::Http1Session::read_request` reads no more of a head).
        ("200 headers of 4 kB", many(4000), "max_head_size"),
    ] {
        let before = hits(&gateway, limit);
        let mut stream = connect(gateway.proxy);
        let _ = stream.write_all(request.as_bytes());
        let (_, answer) = wait_closed(&mut stream);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{case}: {answer:.200}");
        assert!(answer.contains("\"error\":\"header_too_large\""), "{case}");
        assert_eq!(hits(&gateway, limit), before + 1.0, "{case}");
    }
    assert_eq!(upstream.count(), 0);
    gateway.assert_requests("_unmatched", "header_too_large", 3.0);
}

#[test]
fn connections_and_requests_per_connection_are_capped() {
    let upstream = Upstream::start("app");
    let gateway = app(&upstream, "")
        .server("max_connections = 3\nmax_requests_per_connection = 2")
        .start();
    // Requests per connection: the second answer says close, then it closes.
    let mut stream = connect(gateway.proxy);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for round in 1..=2 {
        stream
            .write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
            .unwrap();
        let answer = read_response(&mut reader).unwrap();
        assert_eq!(answer.status, 200);
        let connection = answer
            .header("connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert_eq!(
            connection == "close",
            round == 2,
            "round {round}: {connection}"
        );
    }
    let (after, _) = wait_closed(&mut stream);
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(hits(&gateway, "max_requests_per_connection"), 1.0);

    // Open connections: with three held open (two here, one by /readyz probes
    // at most), a fourth is closed before it is read. Breaks without
    // `ConnectionLimit`.
    let held: Vec<TcpStream> = (0..3).map(|_| connect(gateway.proxy)).collect();
    assert!(wait_until(Duration::from_secs(5), || gateway
        .try_metric("hookgate_client_connections", &[])
        .is_ok_and(|open| open.is_some_and(|open| open >= 3.0))));
    let mut extra = connect(gateway.proxy);
    let _ = extra.write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na");
    let (_, answer) = wait_closed(&mut extra);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(hits(&gateway, "max_connections") >= 1.0);
    drop(held);
    // Freed: served again.
    // The count of open connections drops a moment after the close, so an
    // early try may still be turned away (a reset): poll, never panic.
    assert!(wait_until(Duration::from_secs(5), || try_post(
        gateway.proxy,
        "/hooks/again",
        &[],
        b"a"
    )
    .is_ok_and(|answer| answer.status == 200)));
}

/// A gateway (`server` lines) whose upstream `app` (`extra` lines) answers
/// 32 MiB at once, and a sender that sends one request to route `hooks` and
/// never reads: the gateway's writes stall once the socket buffers are full.
/// The upstream and the sender are returned to be kept open.
fn a_sender_that_never_reads(server: &str, extra: &str) -> (Gateway, Upstream, TcpStream) {
    let upstream = Upstream::with(
        "app",
        Behavior {
            body: vec![b'x'; 32 * 1024 * 1024],
            ..Behavior::default()
        },
    );
    let gateway = Setup::new()
        .server(server)
        .upstream_named("app", &[upstream.addr], extra)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let mut stream = connect(gateway.proxy);
    stream
        .write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        .unwrap();
    (gateway, upstream, stream)
}

/// The upstream answered whole: the cut-off answer is the sender's doing, not
/// an upstream failure that would fire the upstream-errors alert.
#[track_caller]
fn assert_client_interrupted(gateway: &Gateway) {
    assert!(
        wait_until(Duration::from_secs(10), || gateway.metric(
            "hookgate_requests_total",
            &[("route", "hooks"), ("outcome", "client_interrupted")]
        ) == Some(1.0)),
        "the cut-off answer is counted as client_interrupted"
    );
    gateway.assert_requests("hooks", "upstream_error", 0.0);
}

/// Breaks without `set_write_timeout` in `client::apply`; the outcome guards
/// `Interruption::client` in `forward::relay_response`.
#[test]
fn a_sender_that_stops_reading_is_cut_off() {
    let (gateway, _upstream, _stream) = a_sender_that_never_reads("send_timeout = \"1s\"", "");
    // Polled without panicking: a failed scrape is "not yet".
    assert!(
        wait_until(Duration::from_secs(10), || gateway
            .try_metric(
                "hookgate_client_limit_hits_total",
                &[("limit", "send_timeout")]
            )
            .is_ok_and(|hits| hits.is_some_and(|hits| hits >= 1.0))),
        "no send timeout counted"
    );
    assert_client_interrupted(&gateway);
}

/// A sender that takes the answer too slowly for the upstream's
/// `response_timeout` (here it never reads, and `send_timeout` is longer) is
/// cut off when that deadline passes, and it is the sender's doing: the
/// upstream answered at once. Counted `client_interrupted`, not
/// `upstream_error` (found by a hostile pass). Guards the `writing` flag of
/// `forward::relay_response`, read when the deadline cuts the relay off.
#[test]
fn a_sender_too_slow_for_the_response_timeout_is_client_interrupted() {
    let (gateway, _upstream, _stream) =
        a_sender_that_never_reads("send_timeout = \"30s\"", "response_timeout = \"1s\"");
    assert_client_interrupted(&gateway);
}

#[test]
fn an_upstream_that_drips_is_bounded_and_its_2xx_still_counts() {
    // Head at once, then one byte every 700 ms: each read is quick, the whole
    // answer (7 s) is not (response_timeout = 1s). Breaks without the deadline in
    // `forward::forward`.
    let upstream = Upstream::with(
        "app",
        Behavior::drip(200, b"0123456789", Duration::from_millis(700)),
    );
    let copies = Upstream::start("copies");
    let gateway = Setup::new()
        .upstream_named("app", &[upstream.addr], "response_timeout = \"1s\"")
        .upstream(&copies)
        .fan_out(
            "hooks",
            "/hooks/*",
            &["app", "copies"],
            "dedupe = { key = \"header:X-Delivery\" }",
        )
        .start();
    let started = Instant::now();
    let mut stream = connect(gateway.proxy);
    stream
        .write_all(
            b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nX-Delivery: d-1\r\nContent-Length: 1\r\n\r\na",
        )
        .unwrap();
    let (after, answer) = wait_closed(&mut stream);
    assert!(started.elapsed() < Duration::from_secs(5), "{after:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.ends_with("0123456789"),
        "the whole body arrived: {answer}"
    );

    // The app answered 2xx: the delivery counts as forwarded (a retry is a
    // duplicate, not a second delivery) and the copy goes out. Breaks when
    // `handle` remembers and copies only answers relayed whole.
    assert!(wait_until(Duration::from_secs(5), || copies.count() == 1));
    let retry = post(gateway.proxy, "/hooks/a", &[("X-Delivery", "d-1")], b"a");
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["status"], "duplicate");
    assert_eq!(upstream.count(), 1);
}
