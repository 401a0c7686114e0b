//! hookgate's own HTTP/1 session (`proxy::request`), end to end through the
//! real binary: the chunked bodies it refuses (Pingora's session forwarded
//! a chunk extension and a space after the size), and the answers it writes
//! itself (a relayed chunked answer, then the connection reused).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn connect(gateway: &Gateway) -> TcpStream {
    let stream = TcpStream::connect_timeout(&gateway.proxy, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Chunked bodies a proxy in front could frame differently: each is a 400
/// JSON answer with `Connection: close`, the connection is closed, and
/// nothing reaches the upstream; the gateway then serves the next request.
#[test]
fn chunked_bodies_that_are_not_plain_chunks_are_refused() {
    // Breaks when `request::chunk_size` accepts a chunk extension (`;`), as
    // `httparse::parse_chunk_size` and Pingora's reader do.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let head = "POST /hooks/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let smuggled = "GET /hooks/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // Each with the `reason` the sender gets (README, "Answers": "with a `reason`").
    let cases = [
        (
            "chunk extension",
            "3;x=GET\r\nabc\r\n0\r\n\r\n",
            "invalid chunked body: chunk extension (not accepted)",
        ),
        (
            "space after the size",
            "3 \r\nabc\r\n0\r\n\r\n",
            "invalid chunked body: whitespace in the chunk-size line",
        ),
        (
            "a size that is not hex",
            "3g\r\nabc\r\n0\r\n\r\n",
            "invalid chunked body: chunk size not hexadecimal",
        ),
        (
            "sixteen digits",
            "0000000000000003\r\nabc\r\n0\r\n\r\n",
            "invalid chunked body: chunk size over 15 hex digits",
        ),
        (
            "trailer ended by a bare LF",
            "3\r\nabc\r\n0\r\nX-T: 1\n\r\n",
            "",
        ),
    ];
    for (case, body, reason) in cases {
        let mut stream = connect(&gateway);
        stream
            .write_all(format!("{head}{body}{smuggled}").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let answer = read_response(&mut reader).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(answer.status, 400, "{case}");
        assert_eq!(answer.json()["error"], "bad_request", "{case}");
        if !reason.is_empty() {
            assert_eq!(answer.json()["reason"], reason, "{case}");
        }
        assert_eq!(answer.header("connection"), Some("close"), "{case}");
        let mut rest = Vec::new();
        // The connection ends (EOF or reset): no second answer.
        let _ = reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{case}: more after the refusal");
        assert_eq!(upstream.count(), 0, "{case}: something was forwarded");
    }
    let answer = post(gateway.proxy, "/hooks/health", &[], b"ok");
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.count(), 1);
}

/// An upstream's chunked answer is relayed chunked, its body intact, and the
/// connection then carries the next request.
#[test]
fn a_chunked_answer_is_relayed_whole_and_the_connection_reused() {
    // Breaks when `Http1Session::write_body` does not end a chunked answer
    // with its last chunk (`0\r\n\r\n`): the sender waits for the rest.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
    );
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let mut stream = connect(&gateway);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for round in 1..=2 {
        let body = format!("delivery {round}");
        stream
            .write_all(
                format!(
                    "POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let answer = read_response(&mut reader).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(answer.status, 201, "round {round}");
        assert_eq!(answer.body, b"hello world", "round {round}");
        assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
        assert_eq!(answer.header("connection"), Some("keep-alive"));
        assert!(answer.header("date").is_some(), "round {round}: no Date");
        assert!(answer.header("x-request-id").is_some(), "round {round}");
        let received = upstream.received();
        assert_eq!(received.len(), round, "round {round}");
        assert_eq!(received[round - 1].body, body.as_bytes(), "round {round}");
    }
}

/// Reads whatever the gateway sends until it closes the connection (bounded
/// by the stream's read timeout).
fn read_all(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

/// Two requests in one write: the first is answered with `Connection: close`
/// (the gateway never reads the second as part of it, and closes), so the
/// sender knows to send the second again; the upstream gets only the first.
#[test]
fn an_answer_before_a_pipelined_request_says_close() {
    // Breaks when `Http1Session::serialize` ignores bytes read past the
    // request: the answer said keep-alive, then the connection closed.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let one = "POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none";
    let two = "POST /hooks/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo";
    let mut stream = connect(&gateway);
    stream.write_all(format!("{one}{two}").as_bytes()).unwrap();
    let all = read_all(&mut stream);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(
        all.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{all}"
    );
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, b"one");
}

/// An HTTP/1.0 sender gets no transfer coding (RFC 9112 §6.1): an upstream's
/// chunked answer is relayed as its data, ended by the close; and its
/// `Expect: 100-continue` is ignored (RFC 9110 §10.1.1).
#[test]
fn an_http10_sender_gets_neither_chunks_nor_100_continue() {
    // Breaks when `Http1Session::serialize` keeps `Transfer-Encoding` for an
    // HTTP/1.0 request, or `body::expects_continue` ignores the version.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
    );
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let mut stream = connect(&gateway);
    stream
        .write_all(
            b"POST /hooks/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\
              Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        )
        .unwrap();
    let all = read_all(&mut stream);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(!all.contains("100 Continue"), "{all}");
    let lower = all.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{all}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nhello world"), "{all}");
    assert_eq!(upstream.received()[0].body, b"abc");
}

/// A 204 is relayed without the `Content-Length` its upstream sent
/// (RFC 9110 §8.6), and the connection carries the next request.
#[test]
fn a_204_is_relayed_without_content_length() {
    // Breaks when `Http1Session::serialize` relays a 204's Content-Length.
    let upstream = Upstream::with(
        "app",
        Behavior::raw(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    );
    let gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let mut stream = connect(&gateway);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for round in 1..=2 {
        stream
            .write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
            .unwrap();
        let answer = read_response(&mut reader).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(answer.status, 204, "round {round}");
        assert_eq!(answer.header("content-length"), None, "round {round}");
        assert_eq!(
            answer.header("connection"),
            Some("keep-alive"),
            "round {round}"
        );
    }
    assert_eq!(upstream.count(), 2);
}

/// On a kept-alive connection, a head that stops half-way is answered 408
/// once `header_timeout` passes, though `keepalive_timeout` is shorter: the
/// keep-alive timeout bounds the wait for a head's first byte only.
#[test]
fn a_stalled_head_on_a_kept_alive_connection_gets_408() {
    // Breaks when `Http1Session::read_request` applies the keep-alive
    // timeout to a head already begun: the connection closed at 1 s, silently.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .server("keepalive_timeout = \"1s\"\nheader_timeout = \"3s\"")
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let mut stream = connect(&gateway);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    stream.write_all(b"POST /hooks/b HTTP/1.1\r\nHo").unwrap();
    let answer = read_response(&mut reader).expect("an answer, not a silent close");
    assert_eq!(answer.status, 408);
    assert_eq!(upstream.count(), 1);
}

/// SIGTERM while a request of a kept-alive connection is upstream (its head
/// read before the signal): the answer arrives whole, says `Connection:
/// close` (RFC 9112 §9.6), and the connection then ends.
#[test]
fn an_answer_written_after_sigterm_says_close() {
    // Breaks when `Http1Session::serialize` does not read the shutdown
    // signal: the answer said keep-alive, then the connection closed.
    let gate = Gate::new();
    let upstream = Upstream::with("app", Behavior::held(&gate));
    let mut gateway = Setup::new()
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    // A connection with no request yet: closed once the gateway shuts down.
    let mut idle = connect(&gateway);
    let mut stream = connect(&gateway);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || upstream.count() == 1));
    gateway.signal("TERM");
    // The idle connection closing shows the gateway is shutting down.
    assert_eq!(read_all(&mut idle), "", "the idle connection got an answer");
    gate.open();
    let answer = read_response(&mut reader).expect("the in-flight answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"{\"ok\":true}");
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    // EOF (or a reset): the connection ends after the answer.
    let _ = reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(gateway.wait_exit(Duration::from_secs(5)), Some(0));
}

/// The JSON access-log line whose `request_id` is `id`, once it is written.
fn access_line(gateway: &Gateway, id: &str) -> Option<serde_json::Value> {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = gateway
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["target"] == "hookgate::access" && line["request_id"] == id);
        found.is_some()
    });
    found
}

/// A head refused while read (431, too many fields) is logged with the
/// method and path of its request line, which arrived whole and valid, and
/// with none of its field values nor its query; a garbage request line gets
/// its 400 and no invented method or path.
#[test]
fn a_refused_heads_log_line_names_its_request_line() {
    // Breaks when `Gateway::refuse_head` logs without
    // `Downstream::refused_request_line`: method and path were empty.
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .server("log_format = \"json\"\nmax_header_count = 5")
        .upstream(&upstream)
        .route("hooks", "/hooks/*", "app", "")
        .start();
    let fields: String = (0..8)
        .map(|i| format!("X-Field-{i}: fieldvalue{i}\r\n"))
        .collect();
    let cases = [
        (
            "too many fields",
            format!(
                "POST /hooks/a?token=queryvalue HTTP/1.1\r\nHost: x\r\n{fields}Content-Length: 0\r\n\r\n"
            ),
            431,
            "POST",
            "/hooks/a",
        ),
        (
            "garbage request line",
            "NOT HTTP AT ALL\r\nHost: x\r\n\r\n".to_string(),
            400,
            "",
            "",
        ),
    ];
    for (case, wire, status, method, path) in cases {
        let answer =
            send_raw(gateway.proxy, wire.as_bytes()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(answer.status, status, "{case}");
        let id = answer.header("x-request-id").expect("a request id");
        let line = access_line(&gateway, id)
            .unwrap_or_else(|| panic!("{case}: no access line; log:\n{}", gateway.log()));
        assert_eq!(line["status"], status, "{case}: {line}");
        assert_eq!(line["method"], method, "{case}: {line}");
        assert_eq!(line["path"], path, "{case}: {line}");
    }
    let log = gateway.log();
    assert!(
        !log.contains("fieldvalue"),
        "a field value was logged:\n{log}"
    );
    assert!(!log.contains("queryvalue"), "the query was logged:\n{log}");
    assert_eq!(upstream.count(), 0);
}
