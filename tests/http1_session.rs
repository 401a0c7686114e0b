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
    let cases = [
        ("chunk extension", "3;x=GET\r\nabc\r\n0\r\n\r\n"),
        ("space after the size", "3 \r\nabc\r\n0\r\n\r\n"),
        (
            "trailer ended by a bare LF",
            "3\r\nabc\r\n0\r\nX-T: 1\n\r\n",
        ),
    ];
    for (case, body) in cases {
        let mut stream = connect(&gateway);
        stream
            .write_all(format!("{head}{body}{smuggled}").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let answer = read_response(&mut reader).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(answer.status, 400, "{case}");
        assert_eq!(answer.json()["error"], "bad_request", "{case}");
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
