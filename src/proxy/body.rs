//! Reading a request body whole, bounded by the route's `max_body`.
//!
//! A declared `Content-Length` over the limit is refused before a byte is read;
//! a chunked body is counted while reading and refused as soon as it crosses the
//! limit. `Expect: 100-continue` is answered only once the body is acceptable.
//! The whole body must arrive by a deadline (`[server] body_timeout` from the
//! first read that has to wait), so a sender trickling bytes cannot hold an
//! in-flight slot for longer. A body that came in with the head reads no clock.

use super::downstream::Downstream as Session;
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Declared or actual size above the limit; the rest of the body was not read.
    TooLarge,
    /// `Content-Length` is not a number, or framing is contradictory.
    Malformed(&'static str),
    /// The client went away or was too slow for one read (`client_timeout`).
    Read(Box<pingora::Error>),
    /// The whole body did not arrive by the deadline (`body_timeout`).
    Late,
}

/// Reads the whole request body within `timeout` of the first read that has
/// to wait, refusing more than `limit` bytes.
pub async fn read_bounded(
    session: &mut Session,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let mut deadline = Deadline { timeout, at: None };
    let declared = declared_length(session)?;
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    if expects_continue(session) && declared != Some(0) {
        // The deadline covers writing `100 Continue` (its first read waits anyway).
        deadline.start();
        session
            .write_continue_response()
            .await
            .map_err(BodyError::Read)?;
    }
    // Most webhook bodies arrive in one read: keep that chunk without copying.
    let mut first: Option<Bytes> = None;
    let mut buffer: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(chunk) = read_chunk(session, &mut deadline).await? {
        total += chunk.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        match (&mut buffer, first.take()) {
            (Some(buffer), _) => buffer.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let capacity = declared.unwrap_or(0).max(total).min(limit) as usize;
                let mut joined = BytesMut::with_capacity(capacity);
                joined.extend_from_slice(&previous);
                joined.extend_from_slice(&chunk);
                buffer = Some(joined);
            }
        }
    }
    Ok(match buffer {
        Some(buffer) => buffer.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// When the whole body must be in: `timeout` after the first read that had to
/// wait, or after the `100 Continue` was written (the clock is read only then).
struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    /// Starts the deadline now, unless it has started.
    fn start(&mut self) -> Instant {
        *self.at.get_or_insert_with(|| Instant::now() + self.timeout)
    }

    /// The time left, starting the deadline now when it has not started.
    fn left(&mut self) -> Duration {
        self.start().saturating_duration_since(Instant::now())
    }
}

/// The next piece of the body, unless the deadline passes first.
async fn read_chunk(
    session: &mut Session,
    deadline: &mut Deadline,
) -> Result<Option<Bytes>, BodyError> {
    let left = || deadline.left();
    match super::within::within(left, session.read_request_body()).await {
        Some(read) => read.map_err(BodyError::Read),
        None => Err(BodyError::Late),
    }
}

fn declared_length(session: &Session) -> Result<Option<u64>, BodyError> {
    let header = session.req_header();
    let mut values = header.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BodyError::Malformed("several Content-Length headers"));
    }
    if header.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(BodyError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or(BodyError::Malformed("Content-Length is not a number"))
}

/// `Expect: 100-continue` on an HTTP/1.1 request: an HTTP/1.0 client does not
/// know `100 Continue`, and its expectation is ignored (RFC 9110 §10.1.1).
fn expects_continue(session: &Session) -> bool {
    let head = session.req_header();
    head.version != http::Version::HTTP_10
        && head
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
