//! The client side of the gateway's limits: how many connections may be open,
//! how long a kept-alive one lives, how many requests it carries, and how big
//! and how slow a request head may be (`[server]`, [`ClientLimits`]).
//!
//! Owns: [`ConnectionLimit`], the Pingora `ServerApp` wrapped around the
//! gateway that closes a connection at once when `max_connections` are open,
//! and otherwise hands it to `keepalive`'s loop (HTTP/1) or Pingora's (HTTP/2);
//! the per-request session settings (keep-alive timeout, requests left, send
//! timeout); the head-size and header-count checks. Does not own: the head
//! deadline's answer (`Gateway::process_new_http`), the body deadline (`body`),
//! or any upstream deadline (`forward`). Each limit reached is counted in
//! `hookgate_client_limit_hits_total{limit}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::downstream::Downstream as Session;
use super::request::HeadLimits;
use super::{keepalive, Gateway};
use crate::admission::InflightLimit;
use crate::config::ClientLimits;
use crate::metrics::{ClientLimit, Metrics};

/// The gateway behind a cap on open client connections.
pub struct ConnectionLimit {
    gateway: Arc<Gateway>,
    open: InflightLimit,
    metrics: Arc<Metrics>,
}

impl ConnectionLimit {
    /// At most `max_connections` connections are served at once.
    pub fn new(gateway: Gateway, max_connections: usize, metrics: Arc<Metrics>) -> Self {
        ConnectionLimit {
            gateway: Arc::new(gateway),
            open: InflightLimit::new(max_connections),
            metrics,
        }
    }
}

#[async_trait]
impl ServerApp for ConnectionLimit {
    /// Serves the connection, or closes it at once when the cap is reached
    /// (the client sees the connection closed before any byte is read).
    /// `None` always: the connection is served to its end, or handed over.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(slot) = self.open.try_acquire() else {
            self.metrics.client_limit_hit(ClientLimit::MaxConnections);
            return None;
        };
        self.metrics.client_connections.inc();
        let held = (slot, OpenConnection(Arc::clone(&self.metrics)));
        if keepalive::serves(&self.gateway, &stream) {
            // HTTP/1: our keep-alive loop, in a task of its own, and Pingora's
            // per-connection task ends here. That task holds its TLS handshake
            // future inline even on plain TCP (8.8 kB, measured) for as long as
            // it runs; ours holds the loop's few hundred bytes.
            let gateway = Arc::clone(&self.gateway);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _held = held;
                keepalive::serve(&gateway, stream, &shutdown).await;
            });
            return None;
        }
        // HTTP/2: Pingora's loop, in Pingora's task.
        let _held = held;
        ServerApp::process_new(&self.gateway, stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.gateway.as_ref()).await;
    }
}

/// Counts a connection in `hookgate_client_connections` while it is served.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.client_connections.dec();
    }
}

/// How long a request head may take to arrive in full once it has begun:
/// `header_timeout`. On a kept-alive connection the idle time before the head's
/// first byte is bounded apart, by the keep-alive timeout (`keepalive::serve`),
/// so a head trickled byte by byte never outlives `keepalive_timeout` +
/// `header_timeout`; on a new connection the deadline counts from the accept.
/// (Pingora's keep-alive timeout only bounds each read, so without this a
/// head trickled byte by byte would never end.)
pub fn head_deadline(limits: &ClientLimits) -> Duration {
    limits.header_timeout
}

/// The limits an HTTP/1 head is read under: refused while it is read
/// (`request`), never buffered past `max_head_size`.
pub fn head_limits(limits: &ClientLimits) -> HeadLimits {
    HeadLimits {
        max_head_size: limits.max_head_size,
        max_header_count: limits.max_header_count,
    }
}

/// Checks the head just read against `max_header_count` and `max_head_size`
/// (an HTTP/2 head; an HTTP/1 one was checked as it was read).
pub fn check_head(session: &Session, limits: &ClientLimits) -> Result<(), ClientLimit> {
    let head = session.req_header();
    if head.headers.len() > limits.max_header_count {
        return Err(ClientLimit::MaxHeaderCount);
    }
    let size = match session.raw_head() {
        Some(raw) => raw.len(),
        // HTTP/2 heads arrive HPACK-coded; count what they decode to.
        None => {
            head.raw_path().len()
                + head
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 4)
                    .sum::<usize>()
        }
    };
    if size > limits.max_head_size {
        return Err(ClientLimit::MaxHeadSize);
    }
    Ok(())
}

/// Applies the per-request limits to a session whose head was just read: the
/// send timeout, the keep-alive idle timeout (Pingora would otherwise keep an
/// HTTP/1.1 connection without `Keep-Alive` open forever), and the requests
/// left on this connection. Counts the connection's last request.
pub fn apply(session: &mut Session, limits: &ClientLimits, metrics: &Metrics) {
    session.set_write_timeout(Some(limits.send_timeout));
    // Only where the sender asked for keep-alive (`Connection: close` stays closed).
    if session.get_keepalive().is_some() {
        match limits.keepalive_timeout {
            Some(idle) => session.set_keepalive(Some(idle.as_secs().max(1))),
            None => session.set_keepalive(None),
        }
    }
    if session.is_http1() && session.get_keepalive_reuses_remaining().is_none() {
        // The first request of the connection: the ones after it are counted
        // down as the connection is reused (`HttpPersistentSettings`).
        session.set_keepalive_reuses_remaining(Some(
            limits.max_requests_per_connection.saturating_sub(1),
        ));
    }
    if session.get_keepalive_reuses_remaining() == Some(0) && session.get_keepalive().is_some() {
        metrics.client_limit_hit(ClientLimit::MaxRequestsPerConnection);
    }
}
