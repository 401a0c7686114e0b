//! An upstream's HTTP/1.1 response, read from the connection the request was
//! written to: the head parsed with `httparse`, the body's framing decided as
//! RFC 9112 §6.3 says, the body handed over chunk by chunk as it arrives, and
//! whether the connection may carry another request afterwards.
//!
//! hookgate used Pingora's HTTP/1 client session for this. That session parses
//! every head into an `http::HeaderMap` plus a case map, which the relay then
//! copied into another one for the sender: about 10,000 instructions per
//! request at 1 KiB (docs/performance.md). Here the head stays one `Bytes`
//! block, its headers are ranges into it, and only the relay builds a header
//! map, once.
//!
//! Strict where a lenient reading could desynchronise a kept-alive connection
//! (RFC 9112 §6.3, §11.2): a response with both `Transfer-Encoding` and
//! `Content-Length`, conflicting or invalid `Content-Length` values, an
//! invalid chunk size, or bytes past the end of the response is an invalid
//! response (502 to the sender), and its connection is never reused.
//!
//! Owns: reading one response (head, framing, body, trailers skipped) and the
//! reuse verdict. Does not own: writing the request or choosing a target
//! (`forward`), keeping idle connections (`connections`), or which of the
//! response's headers reach the sender (`headers::downstream_response`).

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncReadExt;

/// The largest response head read (status line and header fields), in bytes.
/// Pingora's client allows about as much; a webhook answer needs far less.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The most header fields in one response head (or trailer section).
pub const MAX_HEADERS: usize = 128;

/// The longest chunk-size line (size and extensions, RFC 9112 §7.1.1), in bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// The most bytes asked of the connection in one read of the body.
const BODY_READ: usize = 64 * 1024;

/// The first read of a response head: enough for a small answer whole.
const HEAD_READ: usize = 4 * 1024;

/// How the response's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: the request was `HEAD`, or the status is 204 or 304.
    Empty,
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked(Chunk),
    /// Neither: the body ends when the upstream closes the connection.
    Close,
    /// The whole body was read.
    Done,
}

/// Where a chunked body's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes are left, then its CRLF.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// One response read from `stream`: the head is in, the body is next.
pub struct UpstreamResponse {
    stream: Stream,
    /// Bytes read from the connection and not yet handed over.
    buffer: BytesMut,
    /// The response head as received (status line and fields).
    head: Bytes,
    /// Name and value of each header field, as ranges into `head`.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The final status code (informational responses are skipped).
    pub status: u16,
    framing: Framing,
    /// Whether the response allows another request on this connection: HTTP/1.1
    /// without `Connection: close`, framed by length or chunks.
    keepalive: bool,
    /// The bound on each read.
    read_timeout: Duration,
    /// When set, no read waits past it (`response_timeout`).
    deadline: Option<Instant>,
}

impl UpstreamResponse {
    /// Reads the response head from `stream`, skipping informational (1xx)
    /// responses. `head_request`: the request was `HEAD`, so the response has
    /// no body whatever its framing fields say. Each read of the head and,
    /// later, of the body waits at most `read_timeout`, and never past
    /// `deadline`. Errors: `ReadError` or `ConnectionClosed` on the
    /// connection, `ReadTimedout` when a read waited that long,
    /// `InvalidHTTPHeader` for a head that is malformed, larger than
    /// [`MAX_HEAD_BYTES`], or frames its body two ways.
    pub async fn read(
        stream: Stream,
        head_request: bool,
        read_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<UpstreamResponse> {
        let mut response = UpstreamResponse {
            stream,
            buffer: BytesMut::with_capacity(HEAD_READ),
            head: Bytes::new(),
            fields: Vec::new(),
            status: 0,
            framing: Framing::Empty,
            keepalive: false,
            read_timeout,
            deadline,
        };
        // Bounded: an upstream sending endless 1xx heads is broken.
        for _ in 0..16 {
            response.read_head().await?;
            if !(100..200).contains(&response.status) {
                response.framing = response.framing(head_request)?;
                return Ok(response);
            }
            if response.status == 101 {
                // hookgate never asks for an upgrade (`Upgrade` is hop-by-hop).
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "unexpected 101 response");
            }
        }
        Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "too many informational responses",
        )
    }

    /// The header fields, in order: name and value bytes as received.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (&self.head[name.clone()], &self.head[value.clone()]))
    }

    /// The field values of `name` (ASCII case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The header fields, in order: name and value as received, each a shared
    /// slice of the head (no copy), for the relay's answer head.
    pub fn fields(&self) -> impl Iterator<Item = (Bytes, Bytes)> + Clone + '_ {
        self.fields.iter().map(|(name, value)| {
            (
                self.head.slice(name.clone()),
                self.head.slice(value.clone()),
            )
        })
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Empty | Framing::Done)
    }

    /// The next piece of the body, `None` once it is complete. Errors as
    /// [`UpstreamResponse::read`], and `ConnectionClosed` when the upstream
    /// closes before a length- or chunk-framed body is complete.
    pub async fn body_chunk(&mut self) -> Result<Option<Bytes>> {
        // Bounded: each pass consumes buffered bytes or reads more (each read
        // bounded by the timeout), and a finite body ends.
        loop {
            match self.framing {
                Framing::Empty | Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(left) => {
                    if self.buffer.is_empty() && self.fill(left).await? == 0 {
                        return Error::e_explain(
                            ErrorType::ConnectionClosed,
                            "upstream closed before the end of the response body",
                        );
                    }
                    let take = self.buffer.len().min(clamp(left));
                    self.framing = match left - take as u64 {
                        0 => Framing::Done,
                        rest => Framing::Length(rest),
                    };
                    return Ok(Some(self.buffer.split_to(take).freeze()));
                }
                Framing::Close => {
                    if self.buffer.is_empty() && self.fill(BODY_READ as u64).await? == 0 {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buffer.split().freeze()));
                }
                Framing::Chunked(state) => {
                    if let Some(data) = self.chunked(state)? {
                        return Ok(Some(data));
                    }
                    if !matches!(self.framing, Framing::Done) {
                        // The buffer holds no complete step: read more.
                        if self.fill(BODY_READ as u64).await? == 0 {
                            return Error::e_explain(
                                ErrorType::ConnectionClosed,
                                "upstream closed inside a chunked response body",
                            );
                        }
                    }
                }
            }
        }
    }

    /// The connection, when it can carry another request: the response allowed
    /// keep-alive, its body was read exactly to its end, and the upstream sent
    /// nothing after it. Otherwise the connection is closed.
    pub async fn into_reusable(mut self) -> Option<Stream> {
        if self.keepalive && self.is_done() && self.buffer.is_empty() {
            return Some(self.stream);
        }
        self.shutdown().await;
        None
    }

    /// Closes the connection.
    pub async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stream.shutdown().await;
    }

    /// Reads until the buffer holds one complete head, and parses it.
    async fn read_head(&mut self) -> Result<()> {
        // Bounded: each read adds at least one byte, up to MAX_HEAD_BYTES.
        loop {
            if !self.buffer.is_empty() {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut fields);
                match parsed.parse(&self.buffer) {
                    Ok(httparse::Status::Complete(length)) => {
                        let status = parsed.code.unwrap_or(0);
                        let version = parsed.version.unwrap_or(0);
                        let base = self.buffer.as_ptr() as usize;
                        let offset = |part: &[u8]| {
                            let start = part.as_ptr() as usize - base;
                            start..start + part.len()
                        };
                        let ranges: Vec<_> = parsed
                            .headers
                            .iter()
                            .map(|field| (offset(field.name.as_bytes()), offset(field.value)))
                            .collect();
                        self.fields = ranges;
                        self.head = self.buffer.split_to(length).freeze();
                        self.status = status;
                        self.keepalive = version == 1 && !self.has_token("connection", "close");
                        return Ok(());
                    }
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD_BYTES => {}
                    Ok(httparse::Status::Partial) => {
                        return Error::e_explain(
                            ErrorType::InvalidHTTPHeader,
                            format!("response head larger than {MAX_HEAD_BYTES} bytes"),
                        )
                    }
                    Err(e) => {
                        return Error::e_explain(
                            ErrorType::InvalidHTTPHeader,
                            format!("invalid response head: {e}"),
                        )
                    }
                }
            }
            let want = (MAX_HEAD_BYTES - self.buffer.len()).min(HEAD_READ) as u64;
            if self.fill(want).await? == 0 {
                let message = if self.buffer.is_empty() {
                    "upstream closed the connection without a response"
                } else {
                    "upstream closed the connection inside the response head"
                };
                return Error::e_explain(ErrorType::ConnectionClosed, message);
            }
        }
    }

    /// How the body of the response just parsed is framed (RFC 9112 §6.3).
    fn framing(&mut self, head_request: bool) -> Result<Framing> {
        let codings: Vec<&[u8]> = self
            .header_values("transfer-encoding")
            .flat_map(|value| value.split(|b| *b == b','))
            .map(trim)
            .filter(|coding| !coding.is_empty())
            .collect();
        let mut length: Option<u64> = None;
        let mut lengths = 0;
        for value in self.header_values("content-length") {
            for item in value.split(|b| *b == b',').map(trim) {
                lengths += 1;
                let parsed = parse_length(item).ok_or_else(|| {
                    Error::explain(ErrorType::InvalidHTTPHeader, "invalid Content-Length")
                })?;
                if length.is_some_and(|seen| seen != parsed) {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        "conflicting Content-Length values",
                    );
                }
                length = Some(parsed);
            }
        }
        if head_request || matches!(self.status, 204 | 304) {
            return Ok(Framing::Empty);
        }
        if !codings.is_empty() {
            if lengths > 0 {
                // §6.3 item 3: "ought to be handled as an error".
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "response has both Transfer-Encoding and Content-Length",
                );
            }
            if codings
                .last()
                .is_some_and(|last| last.eq_ignore_ascii_case(b"chunked"))
                && codings
                    .iter()
                    .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
                    .count()
                    == 1
            {
                return Ok(Framing::Chunked(Chunk::Size));
            }
            if codings.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "chunked is not the last transfer coding exactly once",
                );
            }
            // §6.3 item 4: read until the connection closes.
            self.keepalive = false;
            return Ok(Framing::Close);
        }
        match length {
            Some(length) => Ok(Framing::Length(length)),
            None => {
                self.keepalive = false;
                Ok(Framing::Close)
            }
        }
    }

    /// Advances a chunked body over the buffered bytes: `Some` with chunk data
    /// when there is some, `None` when the buffer holds no complete step (or
    /// the body just ended: then the framing is `Done`).
    fn chunked(&mut self, mut state: Chunk) -> Result<Option<Bytes>> {
        // Bounded: each pass consumes buffered bytes or returns.
        loop {
            match state {
                Chunk::Size => {
                    if self.buffer.is_empty() {
                        break;
                    }
                    if !self.buffer[0].is_ascii_hexdigit() {
                        return invalid_chunk();
                    }
                    match httparse::parse_chunk_size(&self.buffer) {
                        // A whole line past the limit is refused as one
                        // still unfinished at the limit is.
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                            return invalid_chunk();
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.buffer.advance(used);
                            state = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if self.buffer.len() < MAX_CHUNK_LINE => {
                            break
                        }
                        _ => return invalid_chunk(),
                    }
                }
                Chunk::Data(left) => {
                    if self.buffer.is_empty() {
                        break;
                    }
                    let take = self.buffer.len().min(clamp(left));
                    let data = self.buffer.split_to(take).freeze();
                    let rest = left - take as u64;
                    self.framing = Framing::Chunked(if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    });
                    return Ok(Some(data));
                }
                Chunk::DataEnd => {
                    if self.buffer.len() < 2 {
                        break;
                    }
                    if &self.buffer[..2] != b"\r\n" {
                        return invalid_chunk();
                    }
                    self.buffer.advance(2);
                    state = Chunk::Size;
                }
                Chunk::Trailers => {
                    // Trailer fields are not relayed; skip them to the empty line.
                    let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") else {
                        if self.buffer.len() >= MAX_HEAD_BYTES {
                            return invalid_chunk();
                        }
                        break;
                    };
                    self.buffer.advance(end + 2);
                    if end == 0 {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                }
            }
        }
        self.framing = Framing::Chunked(state);
        Ok(None)
    }

    /// Reads at most `want` more bytes (at least 1) into the buffer: the number
    /// read, 0 when the upstream closed the connection.
    async fn fill(&mut self, want: u64) -> Result<usize> {
        let want = clamp(want).clamp(1, BODY_READ);
        self.buffer.reserve(want);
        let mut room = (&mut self.buffer).limit(want);
        let read = self.stream.read_buf(&mut room);
        let limit = match self.deadline {
            Some(deadline) => self
                .read_timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.read_timeout,
        };
        // Pingora's coarse timer, registered only if the read has to wait.
        match super::within::timeout(limit, read).await {
            Some(read) => {
                read.map_err(|e| Error::because(ErrorType::ReadError, "reading the response", e))
            }
            None => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("reading the response: nothing within {limit:?} (timeout, or what was left of response_timeout)"),
            ),
        }
    }

    /// Whether a comma-separated field `name` lists `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|value| value.split(|b| *b == b','))
            .any(|item| trim(item).eq_ignore_ascii_case(token.as_bytes()))
    }
}

fn invalid_chunk<T>() -> Result<T> {
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "invalid chunked response body",
    )
}

fn clamp(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// `1*DIGIT` (RFC 9110 §8.6), at most 18 digits so it fits a `u64`.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
