//! How the gateway reads its upstreams' answers (`proxy::response`), end to
//! end: framings relayed byte for byte, and answers whose framing is ambiguous
//! or that carry bytes past their end refused with a 502, their connection
//! never used again, so one answer can never be taken for the next request's.
//! The reader's limits: a head of up to 64 KiB and 128 fields is relayed, one
//! byte or field more is a 502; a chunk-size line longer than 4 KiB (whole, or
//! unfinished at 4 KiB) cuts the relayed answer.

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
    refused_before_the_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_vec(),
    );
}

/// RFC 9110 §8.6: a `Content-Length` list of one repeated value, or repeated
/// fields that agree, reach the sender as one field with one value, the
/// framing the gateway relayed by; values that differ stay a 502. Guards the
/// `content-length` arm of `headers::downstream_response` (helper-43's
/// finding: `Content-Length: 2, 2` was relayed as is, which strict senders
/// such as llhttp refuse).
#[test]
fn agreeing_content_length_values_reach_the_sender_as_one() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length:  2 ,2\r\nCONTENT-LENGTH: 2,2\r\n\r\nok",
    ] {
        for answered in passes_on_one_connection(wire.to_vec()) {
            let lengths: Vec<&str> = answered
                .headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map(|(_, value)| value.as_str())
                .collect();
            assert_eq!(lengths, ["2"], "{}", String::from_utf8_lossy(wire));
        }
    }
    refused_before_the_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok".to_vec());
}

/// The README: the request id is "echoed back to the sender". An upstream
/// that answers with ids of its own (one, or two that differ) does not
/// replace it: the sender gets the id the upstream received, once. Guards the
/// `x-request-id` arm of `headers::downstream_response` (it used to relay the
/// upstream's fields instead).
#[test]
fn the_sender_gets_its_request_id_whatever_the_upstream_answers() {
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 200 OK\r\nX-Request-Id: app-1\r\nx-request-id: app-2\r\nContent-Length: 2\r\n\r\nok",
        ),
    );
    let gateway = gateway_for(&upstream);
    let own = post(
        gateway.proxy,
        "/hooks/a",
        &[("X-Request-Id", "sender-7")],
        b"{}",
    );
    let fresh = post(gateway.proxy, "/hooks/a", &[], b"{}");
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    for (answered, sent) in [(&own, &received[0]), (&fresh, &received[1])] {
        answered.expect_status(200);
        assert_eq!(answered.body, b"ok");
        let ids: Vec<&str> = answered
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, value)| value.as_str())
            .collect();
        let forwarded = sent.header("x-request-id").expect("an id was forwarded");
        assert_eq!(ids, [forwarded]);
    }
    assert_eq!(received[0].header("x-request-id"), Some("sender-7"));
    assert_ne!(received[1].header("x-request-id"), Some("sender-7"));
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

// ---------------------------------------------------------------- the reader's limits

/// `proxy::response::MAX_HEAD_BYTES`, `MAX_HEADERS` and `MAX_CHUNK_LINE`, as
/// the tests below state them (the constants are private to the binary).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A 200 answer with body `ok` whose head (status line to the empty line) is
/// exactly `size` bytes (at least 16 KiB): `Content-Length`, padding fields
/// of 4000 bytes, and one last padding field of 4000 to 8000 bytes.
fn answer_with_head_of(size: usize) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    // Bounded: each field takes at least 4000 bytes of the room.
    for field in 0.. {
        // Room before the empty line that ends the head.
        let room = size - 2 - head.len();
        if room == 0 {
            break;
        }
        let name = format!("X-Pad-{field:04}: ");
        let overhead = name.len() + 2;
        let value = if room > 2 * (overhead + 4000) {
            4000
        } else {
            room - overhead
        };
        head.extend_from_slice(name.as_bytes());
        head.extend(std::iter::repeat_n(b'p', value));
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    assert_eq!(head.len(), size, "head size");
    head.extend_from_slice(b"ok");
    head
}

/// A 200 answer with body `ok` and exactly `fields` header fields.
fn answer_with_fields(fields: usize) -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    for i in 1..fields {
        wire.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\nok");
    wire
}

/// A chunked 200 answer whose first chunk-size line (size, an extension, CRLF)
/// is exactly `line` bytes; its chunk is `ok`.
fn chunked_with_size_line_of(line: usize) -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;e=".to_vec();
    let size_line = wire.len();
    wire.extend(std::iter::repeat_n(b'x', line - 4 - 2));
    wire.extend_from_slice(b"\r\n");
    assert_eq!(wire.len() - size_line + 4, line, "size line");
    wire.extend_from_slice(b"ok\r\n0\r\n\r\n");
    wire
}

/// Two requests to an upstream answering `wire`: both relayed byte for byte,
/// over one upstream connection (the answer was read exactly to its end).
#[track_caller]
fn passes_on_one_connection(wire: Vec<u8>) -> Vec<Response> {
    let upstream = Upstream::with("app", Behavior::raw(&wire));
    let gateway = gateway_for(&upstream);
    let answers: Vec<Response> = (0..2)
        .map(|_| post(gateway.proxy, "/hooks/a", &[], b"{}"))
        .collect();
    for answered in &answers {
        answered.expect_status(200);
        assert_eq!(answered.body, b"ok");
    }
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        upstream.connections_used(),
        1,
        "the connection was not reused"
    );
    answers
}

/// Two requests to an upstream answering `wire`, whose head the gateway
/// refuses: 502 `upstream_error` each, on two upstream connections.
#[track_caller]
fn refused_before_the_head(wire: Vec<u8>) {
    let upstream = Upstream::with("app", Behavior::raw(&wire));
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
        "a connection was reused after a refused answer"
    );
    gateway.assert_requests("hooks", "upstream_error", 2.0);
}

#[test]
fn a_head_of_64_kib_is_relayed_and_one_byte_more_is_a_502() {
    // Guards `MAX_HEAD_BYTES` (proxy/response.rs) and the `Partial` arm of
    // `read_head` that refuses past it: 64 KiB - 1 fails the first half,
    // 64 KiB + 1 (or no check) the second.
    let answers = passes_on_one_connection(answer_with_head_of(MAX_HEAD_BYTES));
    let pad = answers[0].header("x-pad-0000").unwrap_or_default();
    assert_eq!(pad.len(), 4000, "the padding fields are relayed");
    refused_before_the_head(answer_with_head_of(MAX_HEAD_BYTES + 1));
}

#[test]
fn a_head_of_128_fields_is_relayed_and_129_is_a_502() {
    // Guards `MAX_HEADERS` (proxy/response.rs), the size of the field array
    // `read_head` gives httparse: 127 fails the first half, 129 the second.
    let answers = passes_on_one_connection(answer_with_fields(MAX_HEADERS));
    assert_eq!(answers[0].header("x-field-127"), Some("127"));
    refused_before_the_head(answer_with_fields(MAX_HEADERS + 1));
}

#[test]
fn a_chunk_size_line_of_4_kib_is_read_and_4_kib_without_its_end_cuts_the_answer() {
    // Guards `MAX_CHUNK_LINE` (proxy/response.rs) in the `Partial` arm of
    // `UpstreamResponse::chunked`: a limit of 1 KiB fails the first half (one
    // of 4 KiB - 1 only when a read ends just before the line's LF); a larger
    // one (or no check) leaves the reader waiting for the line's end until the
    // upstream `timeout`, so the second half's log line is missing.
    passes_on_one_connection(chunked_with_size_line_of(MAX_CHUNK_LINE));

    // 4 KiB of a size line, and no line end: the head was relayed already,
    // so the sender's connection is cut, never given a complete 200.
    let mut unfinished = chunked_with_size_line_of(MAX_CHUNK_LINE + 2);
    unfinished.truncate(unfinished.len() - b"\r\nok\r\n0\r\n\r\n".len());
    let upstream = Upstream::with("app", Behavior::raw(&unfinished));
    cut_with_an_invalid_chunk(&gateway_for(&upstream), 2);
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        upstream.connections_used(),
        2,
        "a connection was reused after a cut answer"
    );
}

#[test]
fn a_whole_chunk_size_line_past_4_kib_cuts_the_answer() {
    // Guards the `used > MAX_CHUNK_LINE` arm of `UpstreamResponse::chunked`:
    // without it a line of any length that arrives whole in one read is
    // accepted (lines of 4,097 to 60,000 bytes were relayed as 200).
    for line in [MAX_CHUNK_LINE + 1, 60_000] {
        let upstream = Upstream::with("app", Behavior::raw(&chunked_with_size_line_of(line)));
        cut_with_an_invalid_chunk(&gateway_for(&upstream), 1);
    }
}

/// Sends `requests` requests whose chunked answers the gateway refuses after
/// relaying the head: the sender's connection is cut, never given a complete
/// 200, and the log names the invalid chunk.
#[track_caller]
fn cut_with_an_invalid_chunk(gateway: &Gateway, requests: usize) {
    for _ in 0..requests {
        match try_post(gateway.proxy, "/hooks/a", &[], b"{}") {
            Ok(answered) => assert_ne!(
                (answered.status, answered.body.as_slice()),
                (200, &b"ok"[..]),
                "a complete answer"
            ),
            Err(_cut) => {}
        }
    }
    assert!(
        gateway.wait_log(
            std::time::Duration::from_secs(5),
            "invalid chunked response body"
        ),
        "no log line names the invalid chunk; log:\n{}",
        gateway.log()
    );
}
