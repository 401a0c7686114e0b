//! The HTTP/1 session against a real loopback connection: a client writes
//! fixed bytes, the session's reading of them (or its refusal), and the
//! bytes of its answers, are checked.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_head_size: 2048,
    max_header_count: 8,
};

/// What the session read of one request.
#[derive(Debug)]
struct Read {
    head: RequestHeader,
    body: Vec<u8>,
    keepalive: Option<u64>,
    reusable: bool,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A session on a loopback connection whose client side is returned.
async fn pair() -> (Http1Session, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
    let persistent = Persistent {
        keepalive: Some(60),
        reuses_remaining: None,
        shutdown: tokio::sync::watch::channel(false).1,
    };
    let mut session = Http1Session::new(stream, BytesMut::new(), persistent);
    session.set_read_timeout(Some(Duration::from_secs(2)));
    (session, client)
}

/// Reads `wire` as one request (head and whole body), the client closing
/// its side after writing when `close`.
async fn read_async(wire: &[u8], close: bool) -> Result<Read> {
    let (mut session, mut client) = pair().await;
    client.write_all(wire).await.unwrap();
    if close {
        client.shutdown().await.unwrap();
    }
    if !session.read_request(LIMITS).await? {
        return Error::e_explain(ErrorType::ConnectionClosed, "no head");
    }
    let mut body = Vec::new();
    // Bounded: the wire is finite and each read has a timeout.
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    let head = session.req_header().clone();
    let keepalive = session.get_keepalive();
    session.complete = true;
    let reusable = session.into_reusable().await.is_some();
    drop(client);
    Ok(Read {
        head,
        body,
        keepalive,
        reusable,
    })
}

fn read(wire: &[u8]) -> Read {
    rt().block_on(read_async(wire, false))
        .unwrap_or_else(|e| panic!("{:?} refused: {e}", wire.escape_ascii().to_string()))
}

/// The error type of a refused request (head or body).
fn refused(wire: &[u8]) -> ErrorType {
    match rt().block_on(read_async(wire, true)) {
        Ok(read) => panic!(
            "{:?} accepted: {:?}",
            wire.escape_ascii().to_string(),
            read.head
        ),
        Err(e) => e.etype().clone(),
    }
}

#[test]
fn heads_and_bodies_as_received() {
    let read =
        read(b"POST /h?a=1 HTTP/1.1\r\nHost: a\r\nX-Sig: s\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(read.head.method, http::Method::POST);
    assert_eq!(read.head.raw_path(), b"/h?a=1");
    assert_eq!(read.head.headers["x-sig"], "s");
    assert_eq!(read.body, b"abcd");
    assert_eq!(read.keepalive, Some(60));
    assert!(read.reusable);
    // Identical Content-Length values collapse (RFC 9110 §8.6); `framing`
    // then refuses the list.
    assert_eq!(
        self::read(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab").body,
        b"ab"
    );
    let chunked = self::read(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(chunked.body, b"abc0123456789");
    assert!(chunked.reusable);
}

#[test]
fn keepalive_follows_the_version_and_connection() {
    let cases: [(&[u8], Option<u64>); 4] = [
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", None),
        (
            b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            Some(60),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            None,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
            None,
        ),
    ];
    for (wire, keepalive) in cases {
        let read = read(wire);
        assert_eq!(
            read.keepalive,
            keepalive,
            "{:?}",
            wire.escape_ascii().to_string()
        );
        assert_eq!(read.reusable, keepalive.is_some());
    }
}

#[test]
fn a_request_sent_behind_another_ends_the_connection() {
    let read =
        read(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nAGET / HTTP/1.1\r\n\r\n");
    assert_eq!(read.body, b"A");
    assert!(
        !read.reusable,
        "overread bytes must not be dropped or reordered"
    );
}

#[test]
fn heads_that_could_be_read_two_ways_are_refused() {
    let refused_heads: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
        b"POST /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        // Another problem beside a differing Host: the generic refusal.
        b"POST http://u@a/ HTTP/1.1\r\nHost: b\r\n\r\n",
        b"POST http://a/ HTTP/1.1\r\nHost: b\r\nHost: b\r\n\r\n",
        b"POST http://a/ HTTP/1.1\r\nHost: u@b\r\n\r\n",
    ];
    for wire in refused_heads {
        assert_eq!(
            refused(wire),
            ErrorType::InvalidHTTPHeader,
            "{:?}",
            wire.escape_ascii().to_string()
        );
    }
}

/// Guards `only_host_differs` (request.rs): a `Host` that differs from the
/// absolute-form target's authority, and nothing else, is `HOST_DIFFERS`.
#[test]
fn a_host_that_differs_from_the_target_authority_has_its_own_error() {
    for wire in [
        &b"POST http://a.example/h HTTP/1.1\r\nHost: b.example\r\n\r\n"[..],
        b"POST http://a.example/h HTTP/1.1\r\nHost: A.example\r\n\r\n",
        b"POST https://a.example:8443/h HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ] {
        assert_eq!(
            refused(wire),
            HOST_DIFFERS,
            "{:?}",
            wire.escape_ascii().to_string()
        );
    }
    let agreeing = read(b"POST http://a.example/h HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(agreeing.head.raw_path(), b"http://a.example/h");
}

#[test]
fn heads_over_the_limits_are_refused_while_read() {
    let long = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(refused(long.as_bytes()), HEAD_TOO_LARGE);
    // Never complete: refused once the buffer passes 1 MiB.
    let endless = format!(
        "POST / HTTP/1.1\r\nX-Big: {}",
        "a".repeat(MAX_HEAD_READ + 1)
    );
    assert_eq!(refused(endless.as_bytes()), HEAD_TOO_LARGE);
    let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("POST / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(refused(many.as_bytes()), TOO_MANY_HEADERS);
    let lots: String = (0..300).map(|i| format!("X-{i}: v\r\n")).collect();
    let lots = format!("POST / HTTP/1.1\r\n{lots}\r\n");
    let limits = HeadLimits {
        max_head_size: 64 * 1024,
        ..LIMITS
    };
    let refusal = rt().block_on(async {
        let (mut session, mut client) = pair().await;
        client.write_all(lots.as_bytes()).await.unwrap();
        session.read_request(limits).await.unwrap_err()
    });
    assert_eq!(refusal.etype(), &TOO_MANY_HEADERS);
}

/// A refused head's request line, as the access log reads it: method and
/// path when the line arrived whole and valid, nothing otherwise.
#[test]
fn a_refused_heads_request_line_is_read_only_when_whole_and_valid() {
    // Breaks when `Http1Session::refused_request_line` trusts a line without
    // its CRLF, or one `httparse` refuses.
    let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = [
        (
            "too many fields",
            format!("POST /hooks/a?token=t HTTP/1.1\r\n{many}\r\n"),
            Some(("POST", "/hooks/a")),
        ),
        (
            "too large",
            format!("PUT /a/b HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(3000)),
            Some(("PUT", "/a/b")),
        ),
        (
            "absolute form",
            format!("POST http://h.example/x/y HTTP/1.1\r\n{many}\r\n"),
            Some(("POST", "/x/y")),
        ),
        (
            "an empty line first",
            format!("\r\nPOST /e HTTP/1.1\r\n{many}\r\n"),
            Some(("POST", "/e")),
        ),
        (
            "a bad field after a good line",
            "POST /f HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_string(),
            Some(("POST", "/f")),
        ),
        (
            "garbage line",
            "NOT HTTP AT ALL\r\nHost: a\r\n\r\n".to_string(),
            None,
        ),
        (
            "a line longer than the head",
            format!("POST /{} HTTP/1.1", "a".repeat(3000)),
            None,
        ),
    ];
    for (case, wire, expected) in cases {
        let line = rt().block_on(async {
            let (mut session, mut client) = pair().await;
            client.write_all(wire.as_bytes()).await.unwrap();
            client.shutdown().await.unwrap();
            let refusal = session.read_request(LIMITS).await;
            assert!(refusal.is_err(), "{case}: accepted");
            session.refused_request_line()
        });
        let line = line
            .as_ref()
            .map(|head| (head.method.as_str(), head.uri.path()));
        assert_eq!(line, expected, "{case}");
    }
}

#[test]
fn chunked_bodies_must_be_plain_chunks() {
    let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_line = format!("{}3\r\nabc\r\n0\r\n\r\n", "0".repeat(5000));
    // A trailer section over 4 KiB (trailers are read and dropped, bounded).
    let long_trailer = format!("3\r\nabc\r\n0\r\nX-T: {}\r\n\r\n", "a".repeat(5000));
    let bodies: Vec<&str> = vec![
        &long_trailer,
        "3;ext=1\r\nabc\r\n0\r\n\r\n",
        "3 \r\nabc\r\n0\r\n\r\n",
        "zz\r\nabc\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcX\r\n0\r\n\r\n",
        "3\nabc\r\n0\r\n\r\n",
        "3\r\nabc\r\n0\r\nX-T: a\n\r\n",
        &long_line,
        // The client closes inside the body.
        "5\r\nabc",
    ];
    for body in bodies {
        let wire = format!("{head}{body}");
        let error = refused(wire.as_bytes());
        assert!(
            matches!(error, INVALID_CHUNK | ErrorType::ConnectionClosed),
            "{body:?}: {error:?}"
        );
    }
}

/// The bytes a client receives for what `answer` writes, with the `Date`
/// value replaced by `D`.
fn answered<F>(request: &'static [u8], answer: F) -> String
where
    F: for<'s> FnOnce(
        &'s mut Http1Session,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 's>>,
{
    rt().block_on(async {
        let (mut session, mut client) = pair().await;
        client.write_all(request).await.unwrap();
        assert!(session.read_request(LIMITS).await.unwrap());
        while session.read_request_body().await.unwrap().is_some() {}
        answer(&mut session).await.unwrap();
        drop(session);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let text = String::from_utf8(received).unwrap();
        let date = text.find("Date: ").map(|at| at + 6).unwrap();
        let end = date + text[date..].find("\r\n").unwrap();
        format!("{}D{}", &text[..date], &text[end..])
    })
}

fn json_head() -> AnswerHead {
    let mut head = AnswerHead::new(401, 3);
    head.field("Content-Type", Bytes::from_static(b"application/json"));
    head.number("Content-Length", 2usize);
    head.field("x-request-id", Bytes::from_static(b"r1"));
    head
}

#[test]
fn answers_are_written_as_pingora_wrote_them() {
    let post: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let kept = answered(post, |s| {
        Box::pin(s.write_answer(json_head(), Bytes::from_static(b"{}"), false))
    });
    assert_eq!(
        kept,
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         x-request-id: r1\r\nDate: D\r\nConnection: keep-alive\r\n\r\n{}"
    );
    let closed = answered(post, |s| {
        Box::pin(s.write_answer(json_head(), Bytes::from_static(b"{}"), true))
    });
    assert_eq!(
        closed,
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         x-request-id: r1\r\nConnection: close\r\nDate: D\r\n\r\n{}"
    );
    let head_request: &[u8] = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n";
    let no_body = answered(head_request, |s| {
        Box::pin(s.write_answer(json_head(), Bytes::from_static(b"{}"), false))
    });
    assert!(
        no_body.ends_with("Connection: keep-alive\r\n\r\n"),
        "{no_body}"
    );
}

#[test]
fn relayed_bodies_keep_their_framing() {
    let post: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let chunked = answered(post, |s| {
        Box::pin(async move {
            let mut head = AnswerHead::new(200, 1);
            head.push(
                Bytes::from_static(b"Transfer-Encoding"),
                Bytes::from_static(b"chunked"),
            );
            s.write_head(head).await?;
            s.write_body(Bytes::from_static(b"hello"), false).await?;
            s.write_body(Bytes::from_static(b"0123456789abcdef"), false)
                .await?;
            s.write_body(Bytes::new(), true).await
        })
    });
    assert_eq!(
        chunked,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: D\r\nConnection: keep-alive\r\n\r\n\
         5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    );
    let length = answered(post, |s| {
        Box::pin(async move {
            let mut head = AnswerHead::new(200, 1);
            head.number("Content-Length", 5usize);
            s.write_head(head).await?;
            s.write_body(Bytes::from_static(b"hel"), false).await?;
            s.write_body(Bytes::from_static(b"lo"), false).await?;
            s.write_body(Bytes::new(), true).await
        })
    });
    assert!(length.ends_with("\r\n\r\nhello"), "{length}");
    // Neither framing: the connection ends the body, and is not kept.
    let close = answered(post, |s| {
        Box::pin(async move {
            s.write_head(AnswerHead::new(200, 0)).await?;
            s.write_body(Bytes::from_static(b"hello"), true).await
        })
    });
    assert!(close.contains("Connection: close\r\n\r\nhello"), "{close}");
}

#[test]
fn an_answer_before_the_body_was_read_closes_the_connection() {
    rt().block_on(async {
        let (mut session, mut client) = pair().await;
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc")
            .await
            .unwrap();
        assert!(session.read_request(LIMITS).await.unwrap());
        session
            .write_answer(json_head(), Bytes::from_static(b"{}"), false)
            .await
            .unwrap();
        assert!(session.into_reusable().await.is_none());
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let text = String::from_utf8(received).unwrap();
        assert!(text.contains("Connection: close"), "{text}");
    });
}

/// The shutdown signal arrives after the head was read: the answer says
/// `Connection: close` and the connection is not kept.
#[test]
fn an_answer_written_once_shutting_down_says_close() {
    // Breaks when `Http1Session::serialize` does not read the shutdown signal.
    rt().block_on(async {
        let (mut session, mut client) = pair().await;
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        session.persistent.shutdown = shutdown;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(session.read_request(LIMITS).await.unwrap());
        assert!(session.get_keepalive().is_some());
        stop.send(true).unwrap();
        session
            .write_answer(json_head(), Bytes::from_static(b"{}"), false)
            .await
            .unwrap();
        assert!(session.into_reusable().await.is_none());
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let text = String::from_utf8(received).unwrap();
        assert!(text.ends_with("\r\nConnection: close\r\n\r\n{}"), "{text}");
    });
}

/// A `Content-Length` body that arrives in several writes is handed over as
/// one chunk of exactly its length (`read_request_body`'s whole-body read):
/// `body::read_bounded` then keeps it without a joining copy.
#[test]
fn a_length_body_in_several_reads_is_one_chunk() {
    rt().block_on(async {
        let (mut session, mut client) = pair().await;
        let body = vec![b'x'; 20_000];
        let head = format!(
            "POST /h HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body[..100]).await.unwrap();
        assert!(session.read_request(LIMITS).await.unwrap());
        let writer = tokio::spawn(async move {
            // Bounded: three writes, 10 ms apart.
            for part in body[100..].chunks(7_000) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                client.write_all(part).await.unwrap();
            }
            client
        });
        let chunk = session.read_request_body().await.unwrap().unwrap();
        assert_eq!(chunk.len(), 20_000);
        assert!(chunk.iter().all(|&b| b == b'x'));
        assert!(session.read_request_body().await.unwrap().is_none());
        drop(writer.await.unwrap());
    });
}

/// Webhook header names and the standard ones senders send are found in any
/// case (static, no allocation); other names are parsed as before, and both
/// read back the same.
#[test]
fn known_header_names_are_static() {
    assert_eq!(
        known_name(b"X-Hub-Signature-256"),
        Some(http::HeaderName::from_static("x-hub-signature-256"))
    );
    assert_eq!(known_name(b"X-Hub-Signature-257"), None);
    assert_eq!(
        known_name(b"Content-Type"),
        Some(http::header::CONTENT_TYPE)
    );
    assert_eq!(known_name(b"x-other"), None);
    let read = read(
        b"POST /h HTTP/1.1\r\nHost: a\r\nX-GitHub-Event: push\r\nX-Other: 1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(read.head.headers["x-github-event"], "push");
    assert_eq!(read.head.headers["x-other"], "1");
    assert_eq!(read.head.raw_path(), b"/h");
}

/// An origin-form target is made the URI without `set_raw_path`'s copy; every
/// target, of that form or not, reads back as `set_raw_path` makes it: the
/// same `uri`, `raw_path` and UTF-8 verdict. (The guards on the shortcut in
/// `build_head` are belt and braces: `httparse` and the URI parser already
/// refuse what they exclude, so dropping one alone does not turn this red.)
#[test]
fn targets_read_as_set_raw_path_reads_them() {
    let mut compared = 0;
    for target in [
        &b"/"[..],
        b"/h",
        b"/h?a=1&b=%20",
        b"/h#frag",
        b"/h?a#f",
        b"//double/slash",
        b"/caf\xc3\xa9",
        b"/caf\xe9",
        b"http://a/h?x=1",
        b"*",
    ] {
        let mut wire = b"OPTIONS ".to_vec();
        wire.extend_from_slice(target);
        wire.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        let Ok(read) = rt().block_on(read_async(&wire, false)) else {
            continue;
        };
        let mut expected = RequestHeader::build("OPTIONS", b"/", None).unwrap();
        expected.set_raw_path(target).unwrap();
        let shown = target.escape_ascii().to_string();
        assert_eq!(read.head.uri, expected.uri, "{shown}");
        assert_eq!(read.head.raw_path(), expected.raw_path(), "{shown}");
        assert_eq!(
            read.head.raw_path_is_utf8(),
            expected.raw_path_is_utf8(),
            "{shown}"
        );
        compared += 1;
    }
    assert!(compared >= 7, "only {compared} targets were read");
}
