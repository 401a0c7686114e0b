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
//! handshake), and waits with a read into the next head's buffer on the bare
//! [`Stream`] (one `recv` of whatever arrived, up to 4 KiB, straight into the
//! buffer the session parses: a plain listener has no read buffer of
//! Pingora's in between, see `server::tls_client_buffers`), and builds hookgate's
//! HTTP/1 session (`request::Http1Session`) only once the first bytes of the
//! next head are in; nothing read is lost or read twice. Bytes the client
//! sent ahead (a pipelined request still in the TLS layer or its read buffer)
//! satisfy the read at once: the wait is a read through every layer of the
//! stream, never a socket readiness check. A session that
//! read past the end of its request is not reused (the connection is closed:
//! `Http1Session::into_reusable`), so bytes are never dropped or reordered.
//!
//! Owns: the idle wait between two requests of one HTTP/1 connection (the
//! keep-alive timeout of `[server] keepalive_timeout`, and closing idle
//! connections on shutdown) and the hand-over of the connection's persistent
//! settings (requests left, keep-alive, the shutdown signal) from one session
//! to the next, as Pingora's loop did. Does not own: reading, answering and
//! finishing a request (`request`, `Gateway::serve_request`), the limits it
//! applies (`client`), the connection cap (`client::ConnectionLimit`), or
//! HTTP/2 connections, which keep Pingora's own loop, session and task (its
//! HTTP/2 connection state, not measured here).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pingora::apps::HttpServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::downstream::Downstream;
use super::request::{Http1Session, Persistent, HEAD_BUFFER};
use super::within;
use super::Gateway;

/// Pingora's default keep-alive for a connection's first request (`apps`:
/// `set_keepalive(Some(60))`), before `client::apply` sets `[server]`'s.
const FIRST_REQUEST_KEEPALIVE_SECS: u64 = 60;

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
    // As Pingora's loop: no keep-alive once shutting down.
    let keepalive = (!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE_SECS);
    let persistent = Persistent {
        keepalive,
        reuses_remaining: gateway
            .server_options()
            .and_then(|options| options.keepalive_request_limit),
        // One clone per connection, handed from session to session.
        shutdown: shutdown.clone(),
    };
    // The first head is read at once: a connection that sends nothing gets
    // `header_timeout` and its 408, as before.
    let mut session = Downstream::Http1(Http1Session::new(stream, BytesMut::new(), persistent));
    // Bounded: see above.
    loop {
        if !gateway.serve_request(&mut session, shutdown).await {
            session.shutdown().await;
            return;
        }
        let Downstream::Http1(served) = session else {
            return;
        };
        let Some((stream, persistent)) = served.into_reusable().await else {
            return;
        };
        let Some(next) = next_session(gateway, stream, persistent, shutdown).await else {
            return;
        };
        session = Downstream::Http1(next);
    }
}

/// Waits on a connection whose last answer was sent for the first byte of its
/// next request, holding only the stream; then builds the session for it,
/// with one request fewer left. `None`: the connection is closed (idle
/// timeout, shutdown, the client closed it or broke it).
async fn next_session(
    gateway: &Gateway,
    mut stream: Stream,
    persistent: Persistent,
    shutdown: &ShutdownWatch,
) -> Option<Http1Session> {
    let idle = idle_timeout(gateway)?;
    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
    first_bytes(&mut stream, &mut head, idle, shutdown).await?;
    let persistent = Persistent {
        reuses_remaining: persistent
            .reuses_remaining
            .map(|left| left.saturating_sub(1)),
        ..persistent
    };
    Some(Http1Session::new(stream, head, persistent))
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

/// Reads the first bytes of the next request into `head` (what has arrived,
/// up to its capacity: one read), waiting at most `idle`, and not at all once
/// shutting down (unless the bytes are already there). `None`: closed by the
/// client, broken, or idle too long.
async fn first_bytes(
    stream: &mut Stream,
    head: &mut BytesMut,
    idle: Duration,
    shutdown: &ShutdownWatch,
) -> Option<()> {
    let mut stopping = shutdown.clone();
    let read = tokio::select! {
        // biased: a request already sent is served rather than dropped.
        biased;
        // Pingora's coarse timer, registered only if the read has to wait.
        read = within::timeout(idle, stream.read_buf(head)) => read,
        _ = stopping.wait_for(|stop| *stop) => return None,
    };
    match read {
        Some(Ok(read)) if read > 0 => Some(()),
        _ => None,
    }
}
