//! The response reader against a real loopback connection: the upstream side
//! writes fixed bytes, the reader's body and reuse verdict are checked.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What reading `wire` as one response gave: status, body, reusable,
/// or the error's text.
struct Outcome {
    status: u16,
    body: Vec<u8>,
    reusable: bool,
}

/// Serves `wire` from a loopback upstream (then closes when `close`), and
/// reads it as the response to a request (`head_request` for `HEAD`).
async fn read(wire: &'static [u8], close: bool, head_request: bool) -> Result<Outcome> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(wire).await.unwrap();
        if close {
            socket.shutdown().await.unwrap();
        } else {
            // Hold the connection open until the reader is done.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let stream = connect(address).await;
    let outcome = async {
        let mut response =
            UpstreamResponse::read(stream, head_request, Duration::from_secs(1), None).await?;
        let mut body = Vec::new();
        // Bounded: the wire is finite and each read has a timeout.
        while let Some(chunk) = response.body_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        let status = response.status;
        let reusable = response.into_reusable().await.is_some();
        Ok(Outcome {
            status,
            body,
            reusable,
        })
    }
    .await;
    server.abort();
    outcome
}

/// A plain TCP connection to `address`, as Pingora's connector makes them.
async fn connect(address: std::net::SocketAddr) -> Stream {
    let tcp = TcpStream::connect(address).await.unwrap();
    Box::new(pingora::protocols::l4::stream::Stream::from(tcp))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ok(wire: &'static [u8]) -> Outcome {
    rt().block_on(read(wire, false, false))
        .expect("a valid response")
}

fn refused(wire: &'static [u8]) -> String {
    match rt().block_on(read(wire, true, false)) {
        Ok(outcome) => panic!("accepted with status {}", outcome.status),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_length_framed_answer_is_read_exactly_and_kept() {
    let got = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello");
    assert_eq!(
        (got.status, &got.body[..], got.reusable),
        (200, &b"hello"[..], true)
    );
}

#[test]
fn identical_repeated_lengths_are_one_length() {
    let got = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!((&got.body[..], got.reusable), (&b"ok"[..], true));
}

#[test]
fn a_chunked_answer_is_decoded_and_its_trailers_skipped() {
    let got = ok(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    assert_eq!(got.status, 201);
    assert_eq!(got.body, b"hello world");
    assert!(got.reusable);
}

#[test]
fn informational_answers_are_skipped() {
    let got =
        ok(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((got.status, got.body.len(), got.reusable), (202, 0, true));
}

#[test]
fn answers_without_a_body_are_empty_whatever_their_fields_say() {
    let got = ok(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
    assert_eq!((got.body.len(), got.reusable), (0, true));
    let got = rt()
        .block_on(read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            false,
            true,
        ))
        .unwrap();
    assert_eq!((got.body.len(), got.reusable), (0, true));
}

#[test]
fn an_answer_without_framing_ends_at_close_and_is_not_kept() {
    let got = rt()
        .block_on(read(b"HTTP/1.1 200 OK\r\n\r\nuntil close", true, false))
        .unwrap();
    assert_eq!((&got.body[..], got.reusable), (&b"until close"[..], false));
    let got = rt()
        .block_on(read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
            true,
            false,
        ))
        .unwrap();
    assert_eq!((&got.body[..], got.reusable), (&b"zz"[..], false));
}

#[test]
fn connections_asked_closed_or_http_1_0_are_not_kept() {
    let got = ok(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n");
    assert!(!got.reusable);
    let got = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(!got.reusable);
}

#[test]
fn bytes_after_the_answer_make_the_connection_unusable() {
    // An upstream that answers twice would answer the next request with its
    // second answer: never reuse it.
    let got = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n");
    assert_eq!((&got.body[..], got.reusable), (&b"ok"[..], false));
}

#[test]
fn ambiguous_framing_is_an_invalid_answer() {
    for (wire, why) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "chunked is not the last",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "chunked is not the last",
        ),
    ] {
        let error = refused(wire);
        assert!(error.contains(why), "{error} (expected {why})");
    }
}

#[test]
fn bad_chunks_are_an_invalid_answer() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"[..],
        // An empty size line is not a zero size.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n",
        // Data longer than its size.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
        // 17 hex digits do not fit.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    ] {
        let error = refused(wire);
        assert!(error.contains("invalid chunked"), "{error}");
    }
}

#[test]
fn a_body_cut_short_is_an_error() {
    let error = refused(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    assert!(error.contains("closed before the end"), "{error}");
    let error = refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
    assert!(error.contains("closed inside a chunked"), "{error}");
}

#[test]
fn malformed_or_missing_heads_are_errors() {
    assert!(refused(b"").contains("without a response"));
    assert!(refused(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n").contains("inside the response head"));
    assert!(refused(b"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n").contains("invalid response head"));
    assert!(refused(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").contains("unexpected 101"));
}

#[test]
fn a_head_past_the_limit_is_refused() {
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| {
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        // Bounded: ~70 KiB of fields.
        for i in 0..1000 {
            wire.extend_from_slice(format!("X-Field-{i}: {}\r\n", "v".repeat(60)).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    });
    let error = refused(big);
    assert!(
        error.contains("larger than") || error.contains("invalid response head"),
        "{error}"
    );
}

#[test]
fn fields_keep_their_order_and_bytes() {
    let wire = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Mixed-Case: V\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n";
    rt().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(wire).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let stream = connect(address).await;
        let response = UpstreamResponse::read(stream, false, Duration::from_secs(1), None)
            .await
            .unwrap();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = response
            .fields()
            .map(|(name, value)| (name.to_vec(), value.to_vec()))
            .collect();
        assert_eq!(
            fields,
            [
                (b"Set-Cookie".to_vec(), b"a=1".to_vec()),
                (b"X-Mixed-Case".to_vec(), b"V".to_vec()),
                (b"Set-Cookie".to_vec(), b"b=2".to_vec()),
                (b"Content-Length".to_vec(), b"0".to_vec()),
            ]
        );
        server.abort();
    });
}
