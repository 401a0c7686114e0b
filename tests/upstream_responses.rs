//! How the gateway reads its upstreams' answers (`proxy::response`), end to
//! end: framings relayed byte for byte, and answers whose framing is ambiguous
//! or that carry bytes past their end refused with a 502, their connection
//! never used again, so one answer can never be taken for the next request's.

mod common;

use common::*;

/// Route `hooks` on `/hooks/*` to `upstream` (as upstream `app`).
fn gateway_for(upstream: &Upstream) -> Gateway {
    Setup::new()
        .upstream_named("app", &[upstream.addr], "")
        .route("hooks", "/hooks/*", "app", "")
        .start()
}

#[test]
fn a_chunked_answer_with_trailers_reaches_the_sender_whole() {
    // Guards the `Chunk::Data`/`Chunk::Trailers` steps of `UpstreamResponse::chunked`.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n\
              6;note=x\r\n{\"ok\":\r\n5\r\ntrue}\r\n0\r\nX-Checksum: 1\r\n\r\n",
        ),
    );
    let gateway = gateway_for(&upstream);
    for _ in 0..3 {
        let answered = post(gateway.proxy, "/hooks/a", &[], b"{}");
        answered.expect_status(201);
        assert_eq!(answered.body, b"{\"ok\":true}");
        assert_eq!(answered.header("x-app"), Some("1"));
        // Trailer fields are not relayed (README, "The request path").
        assert_eq!(answered.header("x-checksum"), None);
    }
    // Read exactly to its end, so the connection served all three.
    assert_eq!(upstream.connections_used(), 1);
}

#[test]
fn an_answer_framed_two_ways_is_a_502_and_its_connection_is_dropped() {
    // RFC 9112 §6.3: Content-Length beside Transfer-Encoding "ought to be
    // handled as an error". Guards the `lengths > 0` check in `UpstreamResponse::framing`:
    // without it the sender gets a 200 and the connection is reused.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    );
    let gateway = gateway_for(&upstream);
    for _ in 0..2 {
        let answered = post(gateway.proxy, "/hooks/a", &[], b"{}");
        answered.expect_status(502);
        assert_eq!(answered.json()["error"], "upstream_error");
    }
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        upstream.connections_used(),
        2,
        "a connection was reused after an invalid answer"
    );
    gateway.assert_requests("hooks", "upstream_error", 2.0);
}

#[test]
fn bytes_after_an_answer_are_never_taken_for_the_next_answer() {
    // An upstream that writes a second answer unasked would have it read as the
    // answer to the next request sent on that connection. Guards
    // `self.buffer.is_empty()` in `UpstreamResponse::into_reusable`.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrealHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge",
        ),
    );
    let gateway = gateway_for(&upstream);
    for _ in 0..3 {
        let answered = post(gateway.proxy, "/hooks/a", &[], b"{}");
        answered.expect_status(200);
        assert_eq!(answered.body, b"real");
    }
    assert_eq!(upstream.count(), 3);
    assert_eq!(upstream.connections_used(), 3);
}

#[test]
fn an_answer_framed_by_close_is_relayed_whole_and_not_reused() {
    // Guards `Framing::Close` (RFC 9112 §6.3 item 8) in `UpstreamResponse::body_chunk`.
    let upstream = Upstream::with(
        "app",
        Behavior {
            close_after_answer: true,
            ..Behavior::raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        },
    );
    let gateway = gateway_for(&upstream);
    for _ in 0..2 {
        let answered = post(gateway.proxy, "/hooks/a", &[], b"{}");
        answered.expect_status(200);
        assert_eq!(answered.body, b"until the end");
    }
    assert_eq!(upstream.connections_used(), 2);
}

#[test]
fn a_bad_chunk_size_is_a_502() {
    // Guards the hex-digit check in `UpstreamResponse::chunked`: httparse reads
    // an empty size line as size 0, which would end the body early.
    for wire in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n",
    ] {
        let upstream = Upstream::with("app", Behavior::raw(wire));
        let gateway = gateway_for(&upstream);
        // The head was relayed before the body failed: the sender's
        // connection is cut, never given a complete 200.
        match try_post(gateway.proxy, "/hooks/a", &[], b"{}") {
            Ok(answered) => assert_ne!(
                answered.status,
                200,
                "{:?}",
                String::from_utf8_lossy(&answered.body)
            ),
            Err(_cut) => {}
        }
        assert!(
            gateway.wait_log(
                std::time::Duration::from_secs(10),
                "invalid chunked response body"
            ),
            "no log line names the invalid chunk"
        );
        assert_eq!(upstream.count(), 1);
    }
}
