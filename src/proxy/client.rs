//! The client side of the gateway's limits: how many connections may be open,
//! how long a kept-alive one lives, how many requests it carries, and how big
//! and how slow a request head may be (`[server]`, [`ClientLimits`]).
//!
//! Owns: [`ConnectionLimit`], the Pingora `ServerApp` wrapped around the
//! gateway that closes a connection at once when `max_connections` are open;
//! the per-request session settings (keep-alive timeout, requests left, send
//! timeout); the head-size and header-count checks. Does not own: the head
//! deadline's answer (`Gateway::process_new_http`), the body deadline (`body`),
//! or any upstream deadline (`forward`). Each limit reached is counted in
//! `hookgate_client_limit_hits_total{limit}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession as Session;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::Gateway;
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
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_slot) = self.open.try_acquire() else {
            self.metrics.client_limit_hit(ClientLimit::MaxConnections);
            return None;
        };
        self.metrics.client_connections.inc();
        let _open = OpenConnection(&self.metrics);
        ServerApp::process_new(&self.gateway, stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.gateway.as_ref()).await;
    }
}

/// Counts a connection in `hookgate_client_connections` while it is served.
struct OpenConnection<'m>(&'m Metrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.client_connections.dec();
    }
}

/// How long the next request head may take to arrive in full on `session`:
/// `header_timeout`, plus the keep-alive idle time on a reused connection
/// (Pingora's keep-alive timeout only bounds each read, so a head trickled
/// byte by byte would otherwise never end).
pub fn head_deadline(session: &Session, limits: &ClientLimits) -> Duration {
    // Requests left are counted from the first request of a connection on.
    let reused = session.get_keepalive_reuses_remaining().is_some();
    if reused {
        limits.header_timeout + limits.keepalive_timeout.unwrap_or_default()
    } else {
        limits.header_timeout
    }
}

/// Checks the head just read against `max_header_count` and `max_head_size`.
pub fn check_head(session: &Session, limits: &ClientLimits) -> Result<(), ClientLimit> {
    let head = session.req_header();
    if head.headers.len() > limits.max_header_count {
        return Err(ClientLimit::MaxHeaderCount);
    }
    let size = match session.as_http1() {
        Some(h1) => h1.get_headers_raw_bytes().len(),
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
    if session.as_http1().is_some() && session.get_keepalive_reuses_remaining().is_none() {
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
