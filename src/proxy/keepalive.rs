//! The HTTP/1 keep-alive loop of a client connection: serve a request, wait
//! for the next one while holding only the bare stream, serve it, and so on.
//!
//! Pingora's own loop (its blanket `ServerApp` for an `HttpServerApp`) builds
//! the next `ServerSession` as soon as an answer is sent and leaves it waiting
//! in `read_request` for as long as the connection idles: the session, its
//! 4 KiB head buffer, the boxed request future and two timers, per idle
//! connection (docs/performance.md, "Memory per idle keep-alive connection").
//! This loop runs in a task of its own (`ConnectionLimit` spawns it and lets
//! Pingora's per-connection task end, whose future is sized for a TLS
//! handshake), and waits with a one-byte read on the bare [`Stream`] and
//! builds the session only once the first byte of the next head is in; that
//! byte becomes the start of the session's head buffer (Pingora's pipelined
//! prefix), so nothing read is lost or read twice. Bytes the client sent
//! ahead (a pipelined request still in the stream's read buffer or in the TLS
//! layer) satisfy the read at once: the wait is a read through every layer of
//! the stream, never a socket readiness check.
//!
//! Owns: the idle wait between two requests of one HTTP/1 connection (the
//! keep-alive timeout of `[server] keepalive_timeout`, and closing idle
//! connections on shutdown) and the hand-over of the connection's persistent
//! settings (requests left, keep-alive) from one session to the next, as
//! Pingora's loop does. Does not own: reading, answering and finishing a
//! request (`Gateway::process_new_http`), the limits it applies (`client`),
//! the connection cap (`client::ConnectionLimit`), or HTTP/2 connections,
//! which keep Pingora's own loop and task (its HTTP/2 connection state, not
//! measured here).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession as Session;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::Gateway;

/// Pingora's default keep-alive for a connection's first request (`apps`:
/// `set_keepalive(Some(60))`), before `client::apply` sets `[server]`'s.
const FIRST_REQUEST_KEEPALIVE_SECS: u64 = 60;

/// The head buffer a session starts from, as Pingora's `read_request`
/// allocates it (`INIT_HEADER_BUF_SIZE`, 4 KiB); it grows as Pingora's does.
const HEAD_BUFFER: usize = 4 * 1024;

/// Whether this loop serves `stream`: HTTP/1 over TCP, or over TLS when ALPN
/// chose HTTP/1.1 or nothing. HTTP/2 (ALPN `h2`, or cleartext `h2c` when the
/// gateway's options turn it on) and custom protocols stay with Pingora's
/// loop, which this must mirror: it picks HTTP/1 in exactly these cases.
pub fn serves(gateway: &Gateway, stream: &Stream) -> bool {
    let options = gateway.server_options();
    let h2c = options.is_some_and(|o| o.h2c) && stream.get_ssl_digest().is_none();
    let custom = options.is_some_and(|o| o.force_custom);
    let alpn_h1 = !matches!(
        stream.selected_alpn_proto(),
        Some(ALPN::H2) | Some(ALPN::Custom(_))
    );
    alpn_h1 && !h2c && !custom
}

/// Serves every request of one HTTP/1 connection, then closes it.
///
/// Bounded: each pass serves one request and `client::apply` caps them at
/// `max_requests_per_connection`; between two passes the connection may idle
/// for the keep-alive timeout at most.
pub async fn serve(gateway: &Arc<Gateway>, stream: Stream, shutdown: &ShutdownWatch) {
    let mut session = Session::new_http1(stream);
    // As Pingora's loop: no keep-alive once shutting down.
    if *shutdown.borrow() {
        session.set_keepalive(None);
    } else {
        session.set_keepalive(Some(FIRST_REQUEST_KEEPALIVE_SECS));
    }
    session.set_keepalive_reuses_remaining(
        gateway
            .server_options()
            .and_then(|options| options.keepalive_request_limit),
    );
    // The first head is read at once: a connection that sends nothing gets
    // `header_timeout` and its 408, as before.
    let mut reused = gateway.process_new_http(session, shutdown).await;
    while let Some(connection) = reused {
        let Some(session) = next_session(gateway, connection, shutdown).await else {
            return;
        };
        reused = gateway.process_new_http(session, shutdown).await;
    }
}

/// Waits on a connection whose last answer was sent for the first byte of its
/// next request, holding only the stream; then builds the session for it.
/// `None`: the connection is closed (idle timeout, shutdown, the client
/// closed it or broke it).
async fn next_session(
    gateway: &Gateway,
    connection: ReusedHttpStream,
    shutdown: &ShutdownWatch,
) -> Option<Session> {
    let (mut stream, settings) = connection.consume();
    let idle = idle_timeout(gateway)?;
    let first = first_byte(&mut stream, idle, shutdown).await?;
    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
    head.put_u8(first);
    take_arrived(&mut stream, &mut head);
    let mut session = Session::new_http1(stream);
    if let Some(settings) = settings {
        // Requests left (one fewer), keep-alive, and any pipelined prefix.
        settings.apply_to_session(&mut session);
    }
    if session.pipelining_enabled() {
        // Pingora hands a session that read past its request its overread
        // bytes as a prefix only when pipelining is on, and the byte read
        // above would belong after them. hookgate never turns pipelining on
        // (a session that read past its request is not reused at all), so
        // this is never reached; close rather than reorder bytes.
        tracing::error!("HTTP/1 pipelining is on: closing the connection (keepalive loop)");
        return None;
    }
    session.set_pipelined_prefix(head);
    Some(session)
}

/// Moves what the client has already sent after the first byte into `head`,
/// without waiting: the one-byte read above filled the stream's read buffer
/// with the rest of a small request, and the session then parses the head at
/// once instead of asking the stream again (one parse attempt and one read
/// with its keep-alive timer fewer per request). Whatever is not there yet is
/// read by the session as usual; an error or the end of the stream is met
/// again by that read.
fn take_arrived(stream: &mut Stream, head: &mut BytesMut) {
    let mut context = Context::from_waker(Waker::noop());
    let read = std::pin::pin!(stream.read_buf(head));
    let _ = read.poll(&mut context);
}

/// How long a kept-alive connection may idle: `[server] keepalive_timeout` in
/// whole seconds, at least one (what `client::apply` gives Pingora). `None`
/// when keep-alive was turned off by a reload since the last answer.
fn idle_timeout(gateway: &Gateway) -> Option<Duration> {
    let limits = gateway.state.load().config.server.limits;
    limits
        .keepalive_timeout
        .map(|idle| Duration::from_secs(idle.as_secs().max(1)))
}

/// Reads the first byte of the next request, waiting at most `idle`, and
/// not at all once shutting down (unless the byte is already there).
async fn first_byte(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> Option<u8> {
    let mut byte = [0u8; 1];
    let mut stopping = shutdown.clone();
    let read = tokio::select! {
        // biased: a request already sent is served rather than dropped.
        biased;
        // Pingora's coarse timer, registered only if the read has to wait.
        read = pingora::prelude::timeout(idle, stream.read(&mut byte)) => read,
        _ = stopping.wait_for(|stop| *stop) => return None,
    };
    match read {
        Ok(Ok(1)) => Some(byte[0]),
        // Closed by the client (0), broken, or idle too long.
        _ => None,
    }
}
