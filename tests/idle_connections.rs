//! Kept-alive HTTP/1 connections between two requests, end to end through the
//! real binary: the gateway's own keep-alive loop (`proxy::keepalive`) waits
//! for the next request holding only the stream, so these check what that
//! wait must not change: bytes sent ahead are served in order, a head split
//! across the wait keeps its first byte, TLS connections are reused, the head
//! deadline still holds, and shutdown closes idle connections at once.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Route `hooks` on `/hooks/*` to `upstream` (as `app`).
fn app(upstream: &Upstream) -> Setup {
    Setup::new()
        .upstream_named("app", &[upstream.addr], "")
        .route("hooks", "/hooks/*", "app", "")
}

fn connect(to: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What the upstream received: (target, body), in arrival order.
fn seen(upstream: &Upstream) -> Vec<(String, Vec<u8>)> {
    upstream
        .received()
        .into_iter()
        .map(|r| (r.target, r.body))
        .collect()
}

/// Reads until the gateway closes the connection (bounded by the read
/// timeout and 64 reads); whether it was closed, and what came first.
fn read_to_close(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) => return (true, seen),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, seen),
            Err(_) => return (false, seen),
        }
    }
    (false, seen)
}

#[test]
fn a_request_sent_ahead_is_answered_after_the_one_before_it() {
    // The first body is larger than Pingora's 4 KiB head buffer, so the
    // session reads it from the stream up to its Content-Length exactly, and
    // the second request stays in the stream's read buffer, not in the
    // session: the connection is reused, and the idle wait must find those
    // bytes there (a wait for the socket to turn readable would sleep until
    // the keep-alive timeout). Breaks when `keepalive::next_session` drops the
    // byte its wait read instead of handing it to the session
    // (`set_pipelined_prefix`): the second head then lacks its first byte.
    let upstream = Upstream::start("app");
    let gateway = app(&upstream).server("keepalive_timeout = \"5s\"").start();
    let large = bytes(6_000, 3);
    let mut both = request("/hooks/a", &large);
    both.extend_from_slice(&request("/hooks/b", b"second"));
    let mut stream = connect(gateway.proxy);
    stream.write_all(&both).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for round in ["a", "b"] {
        let answer = read_response(&mut reader)
            .unwrap_or_else(|e| panic!("answer to {round}: {e}; log:\n{}", gateway.log()));
        assert_eq!(answer.status, 200, "{round}: {answer:?}");
        assert_ne!(answer.header("connection"), Some("close"), "{round}");
    }
    assert_eq!(
        seen(&upstream),
        [
            ("/hooks/a".to_string(), large),
            ("/hooks/b".to_string(), b"second".to_vec())
        ]
    );
    // Still kept alive: a third request on the same connection.
    stream.write_all(&request("/hooks/c", b"third")).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    assert_eq!(upstream.count(), 3);
}

#[test]
fn a_head_split_across_the_idle_wait_keeps_its_first_byte() {
    // The next head starts with one byte after an idle pause and the rest
    // follows later: the byte that ended the wait is the start of the head.
    // Breaks when `keepalive::next_session` drops that byte (then 400).
    let upstream = Upstream::start("app");
    let gateway = app(&upstream).server("keepalive_timeout = \"5s\"").start();
    let mut stream = connect(gateway.proxy);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(&request("/hooks/a", b"first")).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    // Idle, then the first byte alone, then the rest.
    std::thread::sleep(Duration::from_millis(200));
    let next = request("/hooks/b", b"second");
    stream.write_all(&next[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&next[1..]).unwrap();
    let answer = read_response(&mut reader).unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        seen(&upstream),
        [
            ("/hooks/a".to_string(), b"first".to_vec()),
            ("/hooks/b".to_string(), b"second".to_vec())
        ]
    );
}

#[test]
fn a_head_trickled_on_a_kept_alive_connection_is_cut_off() {
    // After an answer, the next head trickles one byte per 100 ms: each read
    // is quick (so the keep-alive timeout never fires), only the whole head is
    // late. Breaks when `client::head_deadline` no longer bounds the head read
    // of a reused connection in `Gateway::process_new_http`.
    let upstream = Upstream::start("app");
    let gateway = app(&upstream)
        .server("keepalive_timeout = \"1s\"\nheader_timeout = \"1s\"")
        .start();
    let before = gateway.metric_required(
        "hookgate_client_limit_hits_total",
        &[("limit", "header_timeout")],
    );
    let mut stream = connect(gateway.proxy);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(&request("/hooks/a", b"first")).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    let head = b"POST /hooks/b HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    trickle(
        &mut stream,
        head,
        Duration::from_millis(100),
        Duration::from_secs(6),
    );
    let (closed, answer) = read_to_close(&mut stream);
    assert!(closed, "the connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "still reading the head after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert_eq!(
        gateway.metric_required(
            "hookgate_client_limit_hits_total",
            &[("limit", "header_timeout")]
        ),
        before + 1.0
    );
    assert_eq!(upstream.count(), 1);
}

#[test]
fn shutdown_closes_idle_connections_while_requests_finish() {
    // SIGTERM with one request in flight (the upstream answers after 3 s) and
    // one connection idle after its answer: the idle one is closed at once,
    // the in-flight one is answered. Breaks when the idle wait
    // (`keepalive::first_byte`) stops watching for shutdown: the idle
    // connection then stays open until the process exits.
    let slow = Upstream::with("slow", Behavior::delayed(Duration::from_secs(3)));
    let quick = Upstream::start("quick");
    let mut gateway = Setup::new()
        .upstream(&slow)
        .upstream(&quick)
        .route("slow", "/slow", "slow", "")
        .route("quick", "/quick", "quick", "")
        .server("keepalive_timeout = \"30s\"")
        .start();
    let mut idle = connect(gateway.proxy);
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    idle.write_all(&request("/quick", b"before")).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);

    let proxy = gateway.proxy;
    let in_flight = std::thread::spawn(move || try_post(proxy, "/slow", &[], b"in flight"));
    assert!(wait_until(Duration::from_secs(5), || slow.count() == 1));
    gateway.signal("TERM");
    let (closed, rest) = read_to_close(&mut idle);
    assert!(closed, "the idle connection stayed open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        !in_flight.is_finished(),
        "the idle connection was closed only after the in-flight request ended"
    );
    let answered = in_flight.join().unwrap().expect("the in-flight answer");
    assert_eq!(answered.status, 200, "the in-flight request completes");
    assert_eq!(gateway.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn a_tls_connection_is_kept_alive_across_requests() {
    // HTTP/1.1 over TLS: the idle wait reads through the TLS layer. One
    // client, one pooled connection, three requests in turn; the open
    // connection count stays at one throughout. Breaks when
    // `keepalive::next_session` drops the byte its wait read (the second
    // request then fails).
    let certificate = LocalhostCertificate::new();
    let upstream = Upstream::start("app");
    let gateway = app(&upstream)
        .server(&certificate.tls_setting())
        .server("keepalive_timeout = \"30s\"")
        .start();
    let tls_addr = gateway.tls.expect("the TLS listener announced");
    let root = reqwest::Certificate::from_pem(certificate.pem.as_bytes()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .resolve("localhost", tls_addr)
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for round in 0..3u8 {
        let response = client
            .post(format!("https://localhost:{}/hooks/t", tls_addr.port()))
            .body(vec![b'a' + round; 100])
            .send()
            .unwrap_or_else(|e| panic!("round {round}: {e}; log:\n{}", gateway.log()));
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.text().unwrap(), "{\"ok\":true}");
        assert!(
            wait_until(Duration::from_secs(5), || gateway
                .metric("hookgate_client_connections", &[])
                == Some(1.0)),
            "round {round}: one open connection"
        );
    }
    let bodies: Vec<Vec<u8>> = seen(&upstream).into_iter().map(|(_, body)| body).collect();
    assert_eq!(bodies, [vec![b'a'; 100], vec![b'b'; 100], vec![b'c'; 100]]);
}

/// The gateway turns transparent huge pages off for its process: with them,
/// mimalloc's arenas held 2 MiB pages, 12 MiB of an idle gateway's 26 MiB.
/// Guards the `no_transparent_huge_pages` call at the top of `main`
/// (`server::no_transparent_huge_pages`): without it `THP_enabled` reads 1
/// and, on a host whose THP setting is `always` or `madvise`, anonymous huge
/// pages show up once requests were served.
#[test]
fn the_gateway_runs_without_transparent_huge_pages() {
    let upstream = Upstream::start("app");
    let gateway = app(&upstream).start();
    for i in 0..50 {
        post(gateway.proxy, &format!("/hooks/{i}"), &[], &[b'x'; 4096]).expect_status(200);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
        .expect("the gateway's /proc status");
    let thp = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "THP_enabled in /proc/PID/status:\n{status}");
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", gateway.pid()))
        .expect("the gateway's smaps_rollup");
    let huge = rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .map(|kb| kb.trim().trim_end_matches("kB").trim().to_string());
    assert_eq!(huge.as_deref(), Some("0"), "{rollup}");
}
