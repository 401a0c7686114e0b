//! The upstream exchange: send a buffered request to a healthy target of a pool
//! over a new or kept-alive connection (`connections`), and stream the response
//! back to the sender.
//!
//! The gateway reads the whole body before it forwards (DESIGN.md §2), so the
//! exchange is done here rather than by Pingora's proxy phases. The serialized
//! head and the body go out in one write (Pingora's client session would flush
//! the head on its own first: two packets, and two wake-ups of the upstream):
//! up to [`ONE_SEND_MAX`] bytes copied into one buffer for one `send`, above
//! it as one vectored write. A target that cannot be connected to, or whose
//! kept-alive connection fails before the request is written, is retried on the next
//! healthy target: the request was not sent, so a retry cannot duplicate it.
//! Once the request is written nothing is retried here (background copies
//! have their own retry policy in `fanout`).
//!
//! Deadlines (linkerd2-proxy's typed stream timeouts, svix's whole-request
//! deadline): the upstream's `timeout` bounds each connect, read and write; its
//! `response_timeout` bounds the whole exchange, from the first write to the
//! response's last byte, so an upstream that drips its answer cannot hold a
//! request without end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType};
use tokio::io::AsyncWriteExt;

use super::connections::UpstreamConnections;
use super::downstream::Downstream as Session;
use super::headers::{self, UpstreamHead};
use super::response::UpstreamResponse;
use super::within::within;
use super::VerifiedBody;
use crate::upstream::UpstreamPool;

/// Why no upstream response could be relayed.
#[derive(Debug)]
pub enum ForwardError {
    /// No healthy target was left to try (503).
    Unavailable,
    /// Connection refused or broken, or an invalid response (502).
    Failed(Box<Error>),
    /// Connect, write or response-head timeout, or `response_timeout` passed
    /// before the response head (504).
    TimedOut(Box<Error>),
}

/// The upstream's answer, for dedupe, fan-out, metrics and the access log.
#[derive(Debug)]
pub struct Forwarded {
    /// The upstream's status: it received the request and answered this,
    /// whether or not the answer then reached the sender whole.
    pub status: u16,
    /// From starting to connect to the upstream's response head.
    pub upstream_time: Duration,
    /// Why the answer did not reach the sender whole, once it had started: the
    /// upstream or the sender broke off, or `response_timeout` passed. The
    /// connection to the sender must then be closed.
    pub interrupted: Option<Interruption>,
}

/// An answer cut off after its head was written to the sender.
#[derive(Debug)]
pub struct Interruption {
    pub error: Box<Error>,
    /// A write to the sender failed: it closed, or did not read within
    /// `[server] send_timeout`. Otherwise the upstream broke off, or
    /// `response_timeout` passed.
    pub by_client: bool,
}

impl Interruption {
    fn upstream(error: Box<Error>) -> Relay {
        Relay::Interrupted(Interruption {
            error,
            by_client: false,
        })
    }

    fn client(error: Box<Error>) -> Relay {
        Relay::Interrupted(Interruption {
            error,
            by_client: true,
        })
    }
}

/// The last target tried, set even when forwarding fails.
pub type LastTarget = Option<SocketAddr>;

/// One request for the primary upstream: the serialized head, the verified
/// body, and the request id the answer to the sender carries.
pub struct Outgoing<'a> {
    pub head: &'a UpstreamHead,
    pub body: &'a VerifiedBody,
    pub request_id: &'a str,
}

/// Sends `request` to `pool` and relays the answer to `session`.
/// `answered` is called with the upstream's status as soon as its response
/// head is read, and awaited before anything is relayed: whatever the sender
/// does next (a retry on another connection, say) already sees the delivery as
/// made, and what it does (storing fan-out copies) is done before the sender
/// has its answer. Its wait counts against `response_timeout`.
pub async fn forward<Answered>(
    connections: &UpstreamConnections,
    session: &mut Session,
    pool: &UpstreamPool,
    request: Outgoing<'_>,
    last_target: &mut LastTarget,
    answered: impl FnOnce(u16) -> Answered,
) -> Result<Forwarded, ForwardError>
where
    Answered: std::future::Future<Output = ()>,
{
    let Outgoing {
        head,
        body,
        request_id,
    } = request;
    let limit = pool.settings().response_timeout;
    // One clock read: the deadline counts from the exchange's start.
    let started = Instant::now();
    let deadline = started + limit;
    // The deadline bounds each write and read of the exchange (one timer at a
    // time, never a second one around them).
    let sent = send_within(
        connections,
        pool,
        Outbound {
            head,
            body: body.bytes(),
        },
        last_target,
        started,
        Some(deadline),
    )
    .await;
    let exchange = sent?;
    answered(exchange.status).await;
    let mut forwarded = Forwarded {
        status: exchange.status,
        upstream_time: exchange.started.elapsed(),
        interrupted: None,
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    let writing = AtomicBool::new(false);
    let relay = relay_response(session, exchange, request_id, connections, pool, &writing);
    match within(left, relay).await {
        Some(Ok(())) => {}
        Some(Err(Relay::NotStarted(e))) => return Err(ForwardError::Failed(e)),
        Some(Err(Relay::Interrupted(e))) => forwarded.interrupted = Some(e),
        None => {
            // Whoever the relay was waiting on when the time ran out: a sender
            // too slow to take the answer is the sender's doing, however
            // promptly the upstream answered.
            let by_client = writing.load(Ordering::Relaxed);
            let waiting_on = if by_client {
                "writing to the sender"
            } else {
                "reading the upstream"
            };
            forwarded.interrupted = Some(Interruption {
                error: Error::explain(
                    ErrorType::ReadTimedout,
                    format!(
                        "response not complete within response_timeout {limit:?} ({waiting_on})"
                    ),
                ),
                by_client,
            })
        }
    }
    Ok(forwarded)
}

/// Why relaying a response failed.
enum Relay {
    /// Before anything was written to the sender: it can still be answered.
    NotStarted(Box<Error>),
    /// After the response head was written.
    Interrupted(Interruption),
}

/// A request written to a target and its response head read; the body is next.
pub struct Exchange {
    upstream: UpstreamResponse,
    /// The peer's `reuse_hash`: where the connection goes back in the pool
    /// (the `HttpPeer` itself is ~700 bytes, moved with every await).
    reuse_key: u64,
    pub status: u16,
    started: Instant,
}

impl Exchange {
    /// The response's `Retry-After` in seconds, when it has one.
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.upstream.header_values("retry-after").next()?;
        std::str::from_utf8(value)
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(Duration::from_secs)
    }

    /// Reads and discards the response body (for copies nobody waits for).
    pub async fn drain(
        mut self,
        connections: &UpstreamConnections,
        pool: &UpstreamPool,
    ) -> Result<(), ForwardError> {
        // Bounded: a response body is finite, and each read is bounded by the pool's timeout.
        while self
            .upstream
            .body_chunk()
            .await
            .map_err(classify)?
            .is_some()
        {}
        self.release(connections, pool).await;
        Ok(())
    }

    /// Returns the connection to the pool when it can be reused: the response
    /// allowed keep-alive and was read exactly to its end.
    async fn release(self, connections: &UpstreamConnections, pool: &UpstreamPool) {
        if let Some(stream) = self.upstream.into_reusable().await {
            connections.put(self.reuse_key, stream, pool.settings().idle_timeout);
        }
    }
}

/// Writes `head` + `body` to a healthy target of `pool`, retrying the next
/// target while nothing was sent, and reads the response head. Each connect,
/// write and read is bounded by the pool's timeouts only (fan-out copies).
pub async fn send(
    connections: &UpstreamConnections,
    pool: &UpstreamPool,
    head: &UpstreamHead,
    body: &Bytes,
    last_target: &mut LastTarget,
) -> Result<Exchange, ForwardError> {
    let request = Outbound { head, body };
    send_within(
        connections,
        pool,
        request,
        last_target,
        Instant::now(),
        None,
    )
    .await
}

/// A request on its way to an upstream: the serialized head and the body.
struct Outbound<'a> {
    head: &'a UpstreamHead,
    body: &'a Bytes,
}

/// [`send`], with every write and read after the connect also ending by
/// `deadline` (the primary request's `response_timeout`), and so does the
/// reading of the body later. `started`: now, when the exchange starts (the
/// start of its `upstream_time`).
async fn send_within(
    connections: &UpstreamConnections,
    pool: &UpstreamPool,
    request: Outbound<'_>,
    last_target: &mut LastTarget,
    started: Instant,
    deadline: Option<Instant>,
) -> Result<Exchange, ForwardError> {
    let Outbound { head, body } = request;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error: Option<Box<Error>> = None;
    // Each target once, plus one fresh retry per target whose pooled connection was stale.
    let attempts = pool.settings().targets.len() * 2;
    for _ in 0..attempts {
        let Some(target) = pool.select(&tried) else {
            break;
        };
        *last_target = Some(target);
        let Some((peer, reuse_key)) = pool.peer(target) else {
            tried.push(target);
            continue;
        };
        let (upstream, reused) = match connections.get(peer, reuse_key).await {
            Ok(connected) => connected,
            Err(e) => {
                tried.push(target);
                last_error = Some(e);
                continue;
            }
        };
        let timeout = pool.settings().timeout;
        let write_timeout = || {
            deadline.map_or(timeout, |deadline| {
                timeout.min(deadline.saturating_duration_since(Instant::now()))
            })
        };
        let stream = match write_request(upstream, head, body, write_timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                if !reused {
                    tried.push(target);
                }
                last_error = Some(e);
                continue;
            }
        };
        let head_request = head.method() == http::Method::HEAD;
        let upstream = UpstreamResponse::read(stream, head_request, timeout, deadline)
            .await
            .map_err(classify)?;
        return Ok(Exchange {
            status: upstream.status,
            upstream,
            reuse_key,
            started,
        });
    }
    Err(match last_error {
        None => ForwardError::Unavailable,
        Some(e) => classify(e),
    })
}

/// The largest request (head and body, bytes) that [`write_request`] copies
/// into one buffer and writes with one `send`; a larger one goes as a
/// two-slice `writev`, which saves the copy. Measured on loopback TCP (Linux
/// 6.18, `docs/performance.md`, session 12): the copy and `send` of a 500-byte
/// head and a 1 KiB body cost 5.25 µs of CPU, the `writev` 5.79 µs (its VFS
/// path: `import_iovec`, `rw_verify_area`); at 4 KiB the two are 0.2 µs apart,
/// at 8 KiB the copy costs more than it saves.
pub const ONE_SEND_MAX: usize = 4096;

/// Writes the head and the body in one go (one `send` up to [`ONE_SEND_MAX`]
/// bytes, a vectored write above), each write bounded by `timeout`. On
/// failure the connection is dropped, which closes it.
async fn write_request(
    mut stream: Stream,
    head: &UpstreamHead,
    body: &Bytes,
    timeout: impl FnOnce() -> Duration,
) -> pingora::Result<Stream> {
    // Upstream peers offer only HTTP/1.1 in ALPN (`UpstreamPool::peer`).
    let wire = head.wire();
    let write = async {
        if wire.len() + body.len() <= ONE_SEND_MAX {
            let mut request = Vec::with_capacity(wire.len() + body.len());
            request.extend_from_slice(wire);
            request.extend_from_slice(body);
            stream.write_all(&request).await?;
        } else {
            let mut bytes = wire.clone().chain(body.clone());
            stream.write_all_buf(&mut bytes).await?;
        }
        stream.flush().await
    };
    let mut limit = Duration::ZERO;
    let timeout = || {
        limit = timeout();
        limit
    };
    match within(timeout, write).await {
        Some(Ok(())) => Ok(stream),
        Some(Err(e)) => Error::e_because(ErrorType::WriteError, "writing the request", e),
        None => Error::e_explain(
            ErrorType::WriteTimedout,
            format!("writing the request, timeout {limit:?}"),
        ),
    }
}

/// Relays the response to the sender. The upstream connection goes back to
/// the pool (when it can be reused) as soon as the answer was read to its
/// end, before its last piece is written to the sender: a sender that sends
/// its next request as soon as it has the answer finds the connection there.
/// `writing` is true while a write to the sender is under way, so a deadline
/// that cuts the relay off can tell whose wait it ended.
async fn relay_response(
    session: &mut Session,
    exchange: Exchange,
    request_id: &str,
    connections: &UpstreamConnections,
    pool: &UpstreamPool,
    writing: &AtomicBool,
) -> Result<(), Relay> {
    let upstream = &exchange.upstream;
    let response = headers::downstream_response(upstream.status, upstream.fields(), request_id)
        .map_err(Relay::NotStarted)?;
    writing.store(true, Ordering::Relaxed);
    session
        .write_head(response)
        .await
        .map_err(Interruption::client)?;
    writing.store(false, Ordering::Relaxed);
    let mut exchange = Some(exchange);
    // Bounded: a response body is finite, and each read is bounded by the pool's timeout.
    while let Some(reading) = exchange.as_mut() {
        let upstream = &mut reading.upstream;
        let Some(chunk) = upstream
            .body_chunk()
            .await
            .map_err(Interruption::upstream)?
        else {
            break;
        };
        if upstream.is_done() {
            if let Some(done) = exchange.take() {
                done.release(connections, pool).await;
            }
        }
        writing.store(true, Ordering::Relaxed);
        session
            .write_body(chunk, false)
            .await
            .map_err(Interruption::client)?;
        writing.store(false, Ordering::Relaxed);
    }
    if let Some(done) = exchange.take() {
        done.release(connections, pool).await;
    }
    writing.store(true, Ordering::Relaxed);
    session
        .write_body(Bytes::new(), true)
        .await
        .map_err(Interruption::client)
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
