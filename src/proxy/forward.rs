//! The upstream exchange: send a buffered request to a healthy target of a pool
//! with Pingora's pooled connector, and stream the response back to the sender.
//!
//! Pingora's own upstream phases cannot be used once `request_filter` has read
//! the body (DESIGN.md §2), so the exchange is done here. A target that cannot be
//! connected to, or whose pooled connection fails before the request is written,
//! is retried on the next healthy target: the request was not sent, so a retry
//! cannot duplicate it. Once the request is written nothing is retried here
//! (background copies have their own retry policy in `fanout`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use super::headers;
use super::VerifiedBody;
use crate::upstream::UpstreamPool;

/// Why no upstream response could be relayed.
#[derive(Debug)]
pub enum ForwardError {
    /// No healthy target was left to try (503).
    Unavailable,
    /// Connection refused or broken, or an invalid response (502).
    Failed(Box<Error>),
    /// Connect, write or response timeout (504).
    TimedOut(Box<Error>),
    /// The response had started when the upstream or the sender failed; the
    /// connection is closed and nothing more can be answered.
    Interrupted(Box<Error>),
}

/// What the sender got, for metrics and the access log.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    pub status: u16,
    /// From starting to connect to the upstream's response head.
    pub upstream_time: Duration,
}

/// The last target tried, set even when forwarding fails.
pub type LastTarget = Option<SocketAddr>;

/// Sends `request` + `body` to `pool` and relays the answer to `session`.
pub async fn forward(
    connector: &Connector,
    session: &mut Session,
    pool: &UpstreamPool,
    request: &RequestHeader,
    body: &VerifiedBody,
    request_id: &str,
    last_target: &mut LastTarget,
) -> Result<Forwarded, ForwardError> {
    let mut exchange = send(connector, pool, request, body.bytes(), last_target).await?;
    let forwarded = Forwarded {
        status: exchange.status,
        upstream_time: exchange.started.elapsed(),
    };
    relay_response(session, &mut exchange.upstream, request_id).await?;
    exchange.release(connector, pool).await;
    Ok(forwarded)
}

/// A request written to a target and its response head read; the body is next.
pub struct Exchange {
    upstream: HttpSession,
    peer: HttpPeer,
    pub status: u16,
    started: Instant,
}

impl Exchange {
    /// The response's `Retry-After` in seconds, when it has one.
    pub fn retry_after(&self) -> Option<Duration> {
        let head = self.upstream.response_header()?;
        let value = head.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
        value.trim().parse().ok().map(Duration::from_secs)
    }

    /// Reads and discards the response body (for copies nobody waits for).
    pub async fn drain(
        mut self,
        connector: &Connector,
        pool: &UpstreamPool,
    ) -> Result<(), ForwardError> {
        // Bounded: a response body is finite, and each read is bounded by the pool's timeout.
        while upstream_chunk(&mut self.upstream).await?.is_some() {}
        self.release(connector, pool).await;
        Ok(())
    }

    /// Returns the connection to the pool when it can be reused.
    async fn release(self, connector: &Connector, pool: &UpstreamPool) {
        connector
            .release_http_session(
                self.upstream,
                &self.peer,
                Some(pool.settings().idle_timeout),
            )
            .await;
    }
}

async fn upstream_chunk(upstream: &mut HttpSession) -> Result<Option<Bytes>, ForwardError> {
    upstream.read_response_body().await.map_err(classify)
}

/// Writes `request` + `body` to a healthy target of `pool`, retrying the next
/// target while nothing was sent, and reads the response head.
pub async fn send(
    connector: &Connector,
    pool: &UpstreamPool,
    request: &RequestHeader,
    body: &Bytes,
    last_target: &mut LastTarget,
) -> Result<Exchange, ForwardError> {
    let started = Instant::now();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error: Option<Box<Error>> = None;
    // Each target once, plus one fresh retry per target whose pooled connection was stale.
    let attempts = pool.settings().targets.len() * 2;
    for _ in 0..attempts {
        let Some(target) = pool.select(&tried) else {
            break;
        };
        *last_target = Some(target);
        let peer = pool.peer(target);
        let (mut upstream, reused) = match connector.get_http_session(&peer).await {
            Ok(connected) => connected,
            Err(e) => {
                tried.push(target);
                last_error = Some(e);
                continue;
            }
        };
        // The connector does not apply the peer's read/write timeouts to the session.
        upstream.set_read_timeout(Some(pool.settings().timeout));
        upstream.set_write_timeout(Some(pool.settings().timeout));
        if let Err(e) = send_request(&mut upstream, request, body).await {
            upstream.shutdown().await;
            if !reused {
                tried.push(target);
            }
            last_error = Some(e);
            continue;
        }
        let status = read_response_head(&mut upstream).await.map_err(classify)?;
        return Ok(Exchange {
            upstream,
            peer,
            status,
            started,
        });
    }
    Err(match last_error {
        None => ForwardError::Unavailable,
        Some(e) => classify(e),
    })
}

async fn send_request(
    upstream: &mut HttpSession,
    request: &RequestHeader,
    body: &Bytes,
) -> pingora::Result<()> {
    upstream
        .write_request_header(Box::new(request.clone()))
        .await?;
    if !body.is_empty() {
        upstream.write_request_body(body.clone(), true).await?;
    }
    upstream.finish_request_body().await
}

/// Reads the response head, skipping informational (1xx) responses.
async fn read_response_head(upstream: &mut HttpSession) -> pingora::Result<u16> {
    // Bounded: an upstream sending endless 1xx heads is broken.
    for _ in 0..16 {
        upstream.read_response_header().await?;
        let status = upstream
            .response_header()
            .map(|head| head.status.as_u16())
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response head"))?;
        if !(100..200).contains(&status) || status == 101 {
            return Ok(status);
        }
    }
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "too many informational responses",
    )
}

async fn relay_response(
    session: &mut Session,
    upstream: &mut HttpSession,
    request_id: &str,
) -> Result<(), ForwardError> {
    let head = upstream.response_header().ok_or_else(|| {
        ForwardError::Failed(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "no response head",
        ))
    })?;
    let response = headers::downstream_response(head, request_id).map_err(ForwardError::Failed)?;
    let done = upstream.response_done();
    session
        .write_response_header(Box::new(response), done)
        .await
        .map_err(ForwardError::Interrupted)?;
    if done {
        return session
            .write_response_body(None, true)
            .await
            .map_err(ForwardError::Interrupted);
    }
    // Bounded: a response body is finite, and each read is bounded by the pool's timeout.
    while let Some(chunk) = upstream
        .read_response_body()
        .await
        .map_err(ForwardError::Interrupted)?
    {
        session
            .write_response_body(Some(chunk), false)
            .await
            .map_err(ForwardError::Interrupted)?;
    }
    session
        .write_response_body(None, true)
        .await
        .map_err(ForwardError::Interrupted)
}

fn classify(error: Box<Error>) -> ForwardError {
    match error.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => ForwardError::TimedOut(error),
        _ => ForwardError::Failed(error),
    }
}
