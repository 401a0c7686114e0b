//! hookgate's own HTTP/1 server session for a client connection: the request
//! head read with `httparse` into a `pingora::http::RequestHeader` built
//! without a case map, the body read by `Content-Length` or `chunked`
//! (RFC 9112 §6–7), and the answer serialized straight onto the stream.
//!
//! Pingora's `ServerSession` did this before. Its head reader builds the
//! header map and a second, case-preserving one, and its writer turns every
//! answer into a `ResponseHeader` and serializes it again: about 15,000 and
//! 9,000 instructions per forwarded request at 1 KiB (docs/performance.md).
//! Here the head is parsed once, the header map is built once, and an answer
//! is one buffer written in one write when it is small.
//!
//! Strict, because this reading decides the framing the app will see: every
//! head Pingora refused is refused (an invalid or conflicting
//! `Content-Length`, `Transfer-Encoding` on HTTP/1.0 or not ending in
//! `chunked`, an ambiguous authority: Pingora's `validate_request_authority`,
//! which this calls), and more: a request target `httparse` refuses is
//! refused rather than URI-escaped as Pingora did; a chunk-size line with an
//! extension, not plain hex, or longer than 4 KiB, a chunk longer than
//! announced, and a trailer section that is not plain CRLF lines are refused.
//! `framing` and `agreement` then check the head as before. A head with more
//! than `max_header_count` fields or more bytes than `max_head_size` is
//! refused (431), an incomplete one as soon as it is longer than
//! `max_head_size`: no connection buffers more of a head than that.
//!
//! Owns: reading one request head and its body, writing one answer, the
//! connection's keep-alive state for that request, and whether the stream
//! may carry another request. Does not own: the wait between requests
//! (`keepalive`), the limits' values (`client`), the checks on the head
//! (`framing`, `agreement`, `target`), or HTTP/2 (Pingora's session, behind
//! `downstream::Downstream`).

use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::{
    raw_target_authority, validate_request_authority, RawTargetAuthority,
};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::downstream::AnswerHead;
use super::within::within;

/// The head buffer a session starts from (Pingora's `INIT_HEADER_BUF_SIZE`).
pub const HEAD_BUFFER: usize = 4 * 1024;

/// The most of an incomplete head read whatever `max_head_size` says (431
/// beyond): Pingora's `MAX_HEADER_SIZE`. An incomplete head is refused as
/// soon as it is longer than `max_head_size`.
const MAX_HEAD_READ: usize = 1024 * 1024;

/// The most header fields `httparse` is given room for; `max_header_count`
/// is at most this in practice (more is refused as too many, 431).
const PARSE_HEADERS: usize = 256;

/// The longest chunk-size line, CRLF included (RFC 9112 §7.1), in bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// The most bytes asked of the connection in one read of the body.
const BODY_READ: usize = 64 * 1024;

/// A `Content-Length` body up to this size is read whole into one buffer of
/// its size before it is handed over (webhooks are almost always below it);
/// a longer one is handed over read by read, [`BODY_READ`] at most each.
const WHOLE_BODY: usize = 1024 * 1024;

/// Pingora's read timeout of a session before `client::apply` sets one.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An error for a request head refused as too large (431, `max_head_size`).
pub const HEAD_TOO_LARGE: ErrorType = ErrorType::Custom("HeadTooLarge");
/// An error for a request head with too many fields (431, `max_header_count`).
pub const TOO_MANY_HEADERS: ErrorType = ErrorType::Custom("TooManyHeaders");
/// An error for an absolute-form target whose authority a `Host` field
/// contradicts (400, with [`crate::target::TargetError::HostDiffers`]'s reason).
pub const HOST_DIFFERS: ErrorType = ErrorType::Custom("HostDiffers");
/// Pingora's error type for an invalid chunked body (`body_refusal` reads it).
const INVALID_CHUNK: ErrorType = ErrorType::Custom("InvalidChunk");

/// The limits a head is read under (`[server]`: `max_head_size`, `max_header_count`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_size: usize,
    pub max_header_count: usize,
}

/// Where the parts of a complete head are in the read buffer.
struct ParsedHead {
    /// The head's length, empty line included.
    length: usize,
    method: Range<usize>,
    path: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    /// Name and value of each field.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// How the request body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `Content-Length`: this many bytes are still to come (0: done).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Read whole (or there was none).
    Done,
}

/// Where a chunked body's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer fields (skipped, not forwarded): this many bytes of them so far.
    Trailers(usize),
}

/// How the answer's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304): whatever is written is dropped.
    Empty,
    /// `Content-Length`: this many bytes are still to be written.
    Length(u64),
    Chunked,
    /// Neither: the body ends when the connection closes.
    Close,
}

/// What the keep-alive loop carries from one request to the next.
#[derive(Debug)]
pub struct Persistent {
    /// Keep-alive: `None` off, `Some(0)` without a timeout, else seconds.
    pub keepalive: Option<u64>,
    /// Requests this connection may still carry after the current one.
    pub reuses_remaining: Option<u32>,
    /// The server's shutdown signal (`true` once a graceful shutdown began):
    /// an answer whose head is written after it says `Connection: close`, and
    /// the connection then closes (RFC 9112 §9.6).
    pub shutdown: ShutdownWatch,
}

/// One HTTP/1 request on a client connection.
pub struct Http1Session {
    stream: Stream,
    /// Bytes read from the connection and not consumed yet: the head while it
    /// is read, then the body, then whatever the client sent after it.
    buffer: BytesMut,
    /// The head as received (request line and fields), once it is read.
    raw_head: Bytes,
    head: Option<RequestHeader>,
    body: Body,
    persistent: Persistent,
    read_timeout: Duration,
    write_timeout: Option<Duration>,
    /// The status of the answer once its head was written.
    answered: Option<u16>,
    /// A `100 Continue` was sent.
    continued: bool,
    framing: Framing,
    /// The head of an answer framed by `Content-Length`, kept to go out with its body.
    pending: BytesMut,
    /// The answer was written whole.
    complete: bool,
}

impl Http1Session {
    /// A session on `stream` whose first bytes, already read, are `prefix`.
    pub fn new(stream: Stream, prefix: BytesMut, persistent: Persistent) -> Self {
        Http1Session {
            stream,
            buffer: prefix,
            raw_head: Bytes::new(),
            head: None,
            body: Body::Done,
            persistent,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: None,
            answered: None,
            continued: false,
            framing: Framing::Empty,
            pending: BytesMut::new(),
            complete: false,
        }
    }

    /// Reads and checks the request head. `Ok(false)`: the client closed the
    /// connection (or let it idle past its keep-alive timeout) before a byte
    /// of a head. Errors: `InvalidHTTPHeader` for a head that is not valid
    /// HTTP/1 or frames its body ambiguously (400), [`HOST_DIFFERS`] (400 with
    /// its own reason), [`HEAD_TOO_LARGE`] and
    /// [`TOO_MANY_HEADERS`] (431), `ReadTimedout`, `ReadError` and
    /// `ConnectionClosed` when the head stopped arriving.
    pub async fn read_request(&mut self, limits: HeadLimits) -> Result<bool> {
        let mut fresh = self.buffer.is_empty();
        // Bounded: each pass reads at least one byte, up to max_head_size.
        loop {
            if !fresh {
                if let Some(parsed) = self.parse_head(limits)? {
                    self.raw_head = self.buffer.split_to(parsed.length).freeze();
                    self.build_head(parsed)?;
                    return Ok(true);
                }
                if self.buffer.len() > limits.max_head_size.min(MAX_HEAD_READ) {
                    return Error::e_explain(HEAD_TOO_LARGE, "max_head_size exceeded");
                }
            }
            fresh = false;
            if self.buffer.capacity() - self.buffer.len() < 512 {
                // Doubling: a large head is parsed a few times, not once per 4 KiB.
                self.buffer.reserve(self.buffer.len().max(HEAD_BUFFER));
            }
            let already = self.buffer.len();
            let read = self.stream.read_buf(&mut self.buffer);
            // The keep-alive timeout bounds the wait for a head's first byte
            // only; once part of a head is in, it is read under the read
            // timeout, and the caller's `header_timeout` answers 408.
            let idle = self.persistent.keepalive.filter(|_| already == 0);
            let read = match idle {
                Some(0) => Ok(read.await),
                Some(idle) => super::within::timeout(Duration::from_secs(idle), read)
                    .await
                    .ok_or(()),
                None => match super::within::timeout(self.read_timeout, read).await {
                    Some(read) => Ok(read),
                    None => {
                        return Error::e_explain(
                            ErrorType::ReadTimedout,
                            "reading the request head",
                        )
                    }
                },
            };
            match read {
                // Idle past the keep-alive timeout: closed without an answer.
                Err(()) => return Ok(false),
                Ok(Ok(0)) | Ok(Err(_)) if already == 0 => return Ok(false),
                Ok(Ok(0)) => {
                    return Error::e_explain(
                        ErrorType::ConnectionClosed,
                        "the client closed the connection inside the request head",
                    )
                }
                Ok(Err(e)) => {
                    return Error::e_because(ErrorType::ReadError, "reading the request head", e)
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Parses the buffered bytes: where the head's parts are once it is complete.
    fn parse_head(&self, limits: HeadLimits) -> Result<Option<ParsedHead>> {
        // Uninitialised room: an initialised array of 256 fields is 8 KiB to
        // fill per request.
        let mut room =
            [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; PARSE_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        match request.parse_with_uninit_headers(&self.buffer, &mut room) {
            // The count first, then the size, as `client::check_head`.
            Ok(httparse::Status::Complete(length)) => {
                if request.headers.len() > limits.max_header_count {
                    return Error::e_explain(TOO_MANY_HEADERS, "max_header_count exceeded");
                }
                if length > limits.max_head_size {
                    return Error::e_explain(HEAD_TOO_LARGE, "max_head_size exceeded");
                }
                let base = self.buffer.as_ptr() as usize;
                let range = |part: &[u8]| {
                    let start = part.as_ptr() as usize - base;
                    start..start + part.len()
                };
                Ok(Some(ParsedHead {
                    length,
                    method: range(request.method.unwrap_or("").as_bytes()),
                    path: range(request.path.unwrap_or("").as_bytes()),
                    version: request.version.unwrap_or(1),
                    fields: request
                        .headers
                        .iter()
                        .map(|field| (range(field.name.as_bytes()), range(field.value)))
                        .collect(),
                }))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                Error::e_explain(TOO_MANY_HEADERS, "max_header_count exceeded")
            }
            Err(e) => Error::e_because(ErrorType::InvalidHTTPHeader, "invalid request head", e),
        }
    }

    /// Builds the `RequestHeader` of the head now in `raw_head` (no case map:
    /// names are lower-cased) and decides the body's framing and keep-alive.
    fn build_head(&mut self, parsed: ParsedHead) -> Result<()> {
        let raw = &self.raw_head;
        let text = |range: Range<usize>| std::str::from_utf8(&raw[range]).unwrap_or("");
        // The fields go straight into the map (Pingora's `append_header`
        // parses each name again from a case-preserving copy), with the names
        // webhook senders use taken from `known_name` rather than allocated.
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = http::Method::from_bytes(text(parsed.method).as_bytes())
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "invalid method", e))?;
        parts.version = match parsed.version {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        parts.headers.reserve(parsed.fields.len());
        for (name, value) in parsed.fields {
            let name = known_name(&raw[name.clone()]).map_or_else(
                || {
                    http::HeaderName::from_bytes(&raw[name]).map_err(|e| {
                        Error::because(ErrorType::InvalidHTTPHeader, "invalid header name", e)
                    })
                },
                Ok,
            )?;
            let value = HeaderValue::from_maybe_shared(raw.slice(value)).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "invalid header value", e)
            })?;
            parts.headers.try_append(name, value).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "too many header fields", e)
            })?;
        }
        // An origin-form target (`/path?query`, valid UTF-8, no fragment)
        // becomes the URI as a shared slice of the head, which is what
        // Pingora's `set_raw_path` makes of it, less its copy. Any other
        // target, and one the URI parser refuses, goes through `set_raw_path`
        // (fragment, absolute form, lossy UTF-8, the error it gives).
        let target = &raw[parsed.path.clone()];
        let origin_form = target.first() == Some(&b'/')
            && memchr::memchr(b'#', target).is_none()
            && std::str::from_utf8(target).is_ok();
        let shared = origin_form
            .then(|| http::uri::PathAndQuery::from_maybe_shared(raw.slice(parsed.path.clone())))
            .and_then(Result::ok);
        let from_uri = shared.is_some();
        if let Some(path_and_query) = shared {
            parts.uri = http::Uri::from(path_and_query);
        }
        let mut head = RequestHeader::from(parts);
        if !from_uri {
            head.set_raw_path(&raw[parsed.path])?;
        }
        self.body = body_framing(&head)?;
        if let Err(refused) = validate_request_authority(&head) {
            return Err(if only_host_differs(&head) {
                Error::explain(
                    HOST_DIFFERS,
                    "Host header differs from the request-target authority",
                )
            } else {
                refused
            });
        }
        self.persistent.keepalive = keepalive(&head, self.persistent.keepalive);
        self.head = Some(head);
        Ok(())
    }

    /// The head read by [`Http1Session::read_request`].
    ///
    /// # Panics
    /// Before a head was read (as Pingora's session).
    pub fn req_header(&self) -> &RequestHeader {
        self.head.as_ref().expect("the request head was read")
    }

    /// The head's bytes as received (request line, fields, empty line).
    pub fn raw_head(&self) -> &[u8] {
        &self.raw_head
    }

    /// The request line of a head refused while it was read (400, 408, 431),
    /// for the access log: a `RequestHeader` with the line's method and
    /// request-target and no fields, built as [`Http1Session::read_request`]
    /// builds a head (so `uri.path()` reads as for any request). `Some` only
    /// when the line (RFC 9112 §3: method SP request-target SP HTTP-version
    /// CRLF, after any empty lines, §2.2) had arrived whole and is valid;
    /// `None` when it is incomplete or invalid. Reads no header field.
    pub fn refused_request_line(&self) -> Option<RequestHeader> {
        // A head refused after it was parsed is in `raw_head`; one refused
        // while read is still in the buffer.
        let received = if self.raw_head.is_empty() {
            &self.buffer[..]
        } else {
            &self.raw_head[..]
        };
        let start = received.iter().position(|&b| !matches!(b, b'\r' | b'\n'))?;
        let end = start + memchr::memchr(b'\n', &received[start..])? + 1;
        // The line alone, empty lines before it included: valid and whole when
        // `httparse` read it to its end and then waits for the fields.
        let mut request = httparse::Request::new(&mut []);
        match request.parse(&received[..end]) {
            Ok(httparse::Status::Partial) if request.version.is_some() => {}
            _ => return None,
        }
        RequestHeader::build_no_case(
            request.method?.as_bytes(),
            request.path?.as_bytes(),
            Some(0),
        )
        .ok()
    }

    /// Whether the whole body was read (or there was none).
    pub fn is_body_done(&self) -> bool {
        self.body == Body::Done
    }

    /// The next piece of the body, `None` once it is complete. Each read waits
    /// at most the read timeout (`ReadTimedout`). Errors: `ConnectionClosed`
    /// when the client closes inside the body, `InvalidChunk` for a chunked
    /// body that is not plain RFC 9112 §7.1 chunks.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        // Bounded: each pass consumes buffered bytes or reads more (each read
        // bounded by the timeout), and the body is finite.
        loop {
            match self.body {
                Body::Done => return Ok(None),
                Body::Length(0) => {
                    self.body = Body::Done;
                    return Ok(None);
                }
                Body::Length(left) => {
                    if left <= WHOLE_BODY as u64 {
                        // Read whole into one buffer sized for it: the body is
                        // then one chunk (the caller keeps it without joining
                        // copies) and only one buffer of its size is held.
                        // Bounded: each read adds at least one byte, or fails.
                        while (self.buffer.len() as u64) < left {
                            self.fill(left - self.buffer.len() as u64).await?;
                        }
                    } else if self.buffer.is_empty() {
                        self.fill(left.min(BODY_READ as u64)).await?;
                    }
                    let take = self.buffer.len().min(clamp(left));
                    let rest = left - take as u64;
                    self.body = if rest == 0 {
                        Body::Done
                    } else {
                        Body::Length(rest)
                    };
                    return Ok(Some(self.buffer.split_to(take).freeze()));
                }
                Body::Chunked(state) => {
                    if let Some(data) = self.chunked(state)? {
                        return Ok(Some(data));
                    }
                    if self.body != Body::Done {
                        self.fill(BODY_READ as u64).await?;
                    }
                }
            }
        }
    }

    /// Advances a chunked body over the buffered bytes: chunk data when there
    /// is some, `None` when the buffer holds no complete step (or the body
    /// just ended).
    fn chunked(&mut self, mut state: Chunk) -> Result<Option<Bytes>> {
        // Bounded: each pass consumes buffered bytes or returns.
        loop {
            match state {
                Chunk::Size => match chunk_size(&self.buffer)? {
                    None => break,
                    Some((used, size)) => {
                        self.buffer.advance(used);
                        state = if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        };
                    }
                },
                Chunk::Data(left) => {
                    if self.buffer.is_empty() {
                        break;
                    }
                    let take = self.buffer.len().min(clamp(left));
                    let data = self.buffer.split_to(take).freeze();
                    let rest = left - take as u64;
                    self.body = Body::Chunked(if rest == 0 {
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
                        return invalid_chunk("no CRLF after the chunk data");
                    }
                    self.buffer.advance(2);
                    state = Chunk::Size;
                }
                Chunk::Trailers(seen) => {
                    // Trailer fields are read and dropped, never forwarded.
                    let Some(end) = memchr::memchr(b'\n', &self.buffer) else {
                        if seen + self.buffer.len() > MAX_CHUNK_LINE {
                            return invalid_chunk("trailer section too large");
                        }
                        break;
                    };
                    let line = &self.buffer[..end];
                    if line.last() != Some(&b'\r') || memchr::memchr(b'\r', line) != Some(end - 1) {
                        return invalid_chunk("a trailer line not ended by CRLF");
                    }
                    if seen + end + 1 > MAX_CHUNK_LINE {
                        return invalid_chunk("trailer section too large");
                    }
                    self.buffer.advance(end + 1);
                    if end == 1 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    state = Chunk::Trailers(seen + end + 1);
                }
            }
        }
        self.body = Body::Chunked(state);
        Ok(None)
    }

    /// Reads at most `want` more bytes (at least 1) into the buffer, waiting
    /// at most the read timeout.
    async fn fill(&mut self, want: u64) -> Result<()> {
        let want = clamp(want).clamp(1, WHOLE_BODY);
        self.buffer.reserve(want);
        let mut room = (&mut self.buffer).limit(want);
        let read = self.stream.read_buf(&mut room);
        let limit = self.read_timeout;
        match within(|| limit, read).await {
            Some(Ok(0)) => Error::e_explain(
                ErrorType::ConnectionClosed,
                "the client closed the connection inside the request body",
            ),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Error::e_because(ErrorType::ReadError, "reading the request body", e),
            None => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("reading the request body: nothing within {limit:?}"),
            ),
        }
    }

    /// Writes `HTTP/1.1 100 Continue` once, before any answer.
    pub async fn write_continue_response(&mut self) -> Result<()> {
        if self.continued || self.answered.is_some() {
            return Ok(());
        }
        self.continued = true;
        self.write_out(b"HTTP/1.1 100 Continue\r\n\r\n").await
    }

    /// Writes a whole answer: `head`, the gateway's `Date` and `Connection`,
    /// and `body`, in one write. `close`: the connection is closed after it.
    pub async fn write_answer(
        &mut self,
        mut head: AnswerHead,
        body: Bytes,
        close: bool,
    ) -> Result<()> {
        if close {
            self.persistent.keepalive = None;
        }
        let mut wire = self.serialize(&mut head, body.len(), close);
        if self.framing != Framing::Empty {
            wire.put_slice(&body);
        }
        self.complete = true;
        self.write_out(&wire).await
    }

    /// Writes the head of an answer whose body follows in pieces
    /// ([`Http1Session::write_body`]). A head framed by `Content-Length` waits
    /// to go out with the body, as Pingora's writer did.
    pub async fn write_head(&mut self, mut head: AnswerHead) -> Result<()> {
        let wire = self.serialize(&mut head, 0, false);
        if matches!(self.framing, Framing::Length(_)) {
            self.pending = wire;
            return Ok(());
        }
        self.write_out(&wire).await
    }

    /// Writes a piece of the answer's body in its framing; `end`: the last one.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        let mut wire = std::mem::take(&mut self.pending);
        match self.framing {
            Framing::Empty => {}
            Framing::Length(left) => {
                let take = data.len().min(clamp(left));
                wire.put_slice(&data[..take]);
                let rest = left - take as u64;
                self.framing = Framing::Length(rest);
                if end && rest > 0 {
                    // The body ended short of its length: the sender cannot
                    // find the end of this answer, so the connection ends it.
                    self.persistent.keepalive = None;
                }
            }
            Framing::Chunked => {
                if !data.is_empty() {
                    wire.put_slice(format!("{:X}\r\n", data.len()).as_bytes());
                    wire.put_slice(&data);
                    wire.put_slice(b"\r\n");
                }
                if end {
                    wire.put_slice(b"0\r\n\r\n");
                }
            }
            Framing::Close => wire.put_slice(&data),
        }
        if end {
            self.complete = true;
        }
        if wire.is_empty() && !end {
            return Ok(());
        }
        self.write_out(&wire).await
    }

    /// `status` with an empty body, when an error left no other answer.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        let mut head = AnswerHead::new(status, 1);
        head.field("Content-Length", Bytes::from_static(b"0"));
        self.write_answer(head, Bytes::new(), false).await
    }

    /// The status of the answer once its head was written.
    pub fn response_written(&self) -> Option<u16> {
        self.answered
    }

    /// The status line, `head`'s fields, `Date` and `Connection`; decides the
    /// body's framing. `body_len` sizes the buffer. `close`: the caller asked
    /// for `Connection: close`, which then comes before `Date` (the order
    /// Pingora's writer left them in).
    fn serialize(&mut self, head: &mut AnswerHead, body_len: usize, close: bool) -> BytesMut {
        let status = http::StatusCode::from_u16(head.status).ok();
        let http10 = self
            .head
            .as_ref()
            .is_some_and(|h| h.version == Version::HTTP_10);
        if http10 && head.has(b"transfer-encoding") {
            // No transfer coding towards an HTTP/1.0 client (RFC 9112 §6.1):
            // the relayed data goes out as it is, ended by the close.
            head.remove(b"transfer-encoding");
        }
        if head.status == 204 || (100..200).contains(&head.status) {
            // RFC 9110 §8.6: no Content-Length on a 1xx or 204 answer.
            head.remove(b"content-length");
        }
        self.framing = if matches!(head.status, 204 | 304)
            || self
                .head
                .as_ref()
                .is_some_and(|h| h.method == http::Method::HEAD)
        {
            Framing::Empty
        } else if head.has(b"transfer-encoding") {
            Framing::Chunked
        } else if let Some(length) = head.content_length() {
            Framing::Length(length)
        } else {
            Framing::Close
        };
        // As Pingora's writer: an answer before the request was read whole, or
        // one whose end is the connection's, closes the connection; so does
        // one after which the client already sent more (a pipelined request is
        // never read as part of this one: the connection closes after the
        // answer, and the answer says so); and so does every answer once the
        // server is shutting down, though the signal came after the head was
        // read (RFC 9112 §9.6; the keep-alive loop would close it anyway).
        if self.body != Body::Done
            || self.framing == Framing::Close
            || !self.buffer.is_empty()
            || *self.persistent.shutdown.borrow()
        {
            self.persistent.keepalive = None;
        }
        let mut wire = BytesMut::with_capacity(head.wire_len() + body_len + 96);
        wire.put_slice(b"HTTP/1.1 ");
        wire.put_slice(itoa::Buffer::new().format(head.status).as_bytes());
        wire.put_u8(b' ');
        if let Some(reason) = status.and_then(|s| s.canonical_reason()) {
            wire.put_slice(reason.as_bytes());
        }
        wire.put_slice(b"\r\n");
        head.put_fields(&mut wire);
        let date = pingora::protocols::http::date::get_cached_date();
        if close {
            wire.put_slice(b"Connection: close\r\nDate: ");
            wire.put_slice(date.as_bytes());
            wire.put_slice(b"\r\n\r\n");
        } else {
            wire.put_slice(b"Date: ");
            wire.put_slice(date.as_bytes());
            wire.put_slice(if self.will_keepalive() {
                b"\r\nConnection: keep-alive\r\n\r\n"
            } else {
                b"\r\nConnection: close\r\n\r\n"
            });
        }
        self.answered = Some(head.status);
        wire
    }

    /// Writes and flushes `wire`, within the write timeout (`WriteTimedout`).
    /// Borrowed: freezing the buffer into `Bytes` would allocate its shared
    /// header, for bytes that are only written.
    async fn write_out(&mut self, wire: &[u8]) -> Result<()> {
        let stream = &mut self.stream;
        // `write_all`, not `write_all_buf`: one contiguous buffer goes out with
        // `send`, where the vectored path would take `writev`'s longer way
        // through the kernel for a single slice.
        let write = async {
            stream.write_all(wire).await?;
            stream.flush().await
        };
        let written = match self.write_timeout {
            Some(limit) => within(|| limit, write).await,
            None => Some(write.await),
        };
        match written {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Error::e_because(ErrorType::WriteError, "writing the answer", e),
            None => Error::e_explain(ErrorType::WriteTimedout, "writing the answer"),
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
    }

    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Keep-alive: `None` off, `Some(0)` without a timeout, else seconds.
    pub fn get_keepalive(&self) -> Option<u64> {
        self.persistent.keepalive
    }

    pub fn set_keepalive(&mut self, seconds: Option<u64>) {
        self.persistent.keepalive = seconds;
    }

    pub fn get_keepalive_reuses_remaining(&self) -> Option<u32> {
        self.persistent.reuses_remaining
    }

    pub fn set_keepalive_reuses_remaining(&mut self, remaining: Option<u32>) {
        self.persistent.reuses_remaining = remaining;
    }

    /// Whether the connection may carry another request after this one.
    fn will_keepalive(&self) -> bool {
        self.persistent.keepalive.is_some() && self.persistent.reuses_remaining != Some(0)
    }

    /// The client's address (`None` on a Unix socket).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        let digest = self.stream.get_socket_digest()?;
        digest.peer_addr()?.as_inet().map(|addr| addr.ip())
    }

    /// The port of the listener the request arrived on.
    pub fn local_port(&self) -> Option<u16> {
        let digest = self.stream.get_socket_digest()?;
        digest.local_addr()?.as_inet().map(|addr| addr.port())
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.get_ssl_digest().is_some()
    }

    /// Closes the connection.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The stream and its keep-alive state when the connection can carry the
    /// next request: keep-alive on, requests left, the request read to its
    /// end, the answer written whole, and nothing sent after the request (a
    /// pipelined request is not served: the connection is closed, and the
    /// client retries it, RFC 9112 §9.3.2). Otherwise the connection is closed.
    pub async fn into_reusable(mut self) -> Option<(Stream, Persistent)> {
        if self.will_keepalive()
            && self.body == Body::Done
            && self.complete
            && self.buffer.is_empty()
            && self.pending.is_empty()
        {
            return Some((self.stream, self.persistent));
        }
        self.shutdown().await;
        None
    }
}

/// Whether the one thing wrong with `head`'s authority is a single `Host`
/// field that differs from its absolute-form target's authority: the target
/// is an http(s) URL and both authorities are `host[:port]` as `target` reads
/// them, and Pingora's check passes both the head with `Host` set to that
/// authority and the head with an origin-form target (the `Host` alone). Only
/// on the error path (it copies the head).
fn only_host_differs(head: &RequestHeader) -> bool {
    let RawTargetAuthority::Absolute { authority, .. } = raw_target_authority(head.raw_path())
    else {
        return false;
    };
    let mut hosts = head.headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let Ok(agreeing_host) = HeaderValue::from_bytes(authority) else {
        return false;
    };
    if host == agreeing_host {
        return false;
    }
    // The target and both authorities as hookgate reads them later: a target
    // that is no http(s) URL, or a `Host` or authority it refuses on its own,
    // is another problem than the difference.
    let ours = |text: &[u8]| std::str::from_utf8(text).is_ok_and(crate::target::is_valid_authority);
    if crate::target::read_target(head.raw_path()).is_err()
        || !ours(authority)
        || !ours(host.as_bytes())
    {
        return false;
    }
    let mut agreeing = head.clone();
    let mut host_alone = head.clone();
    agreeing.insert_header(HOST, agreeing_host).is_ok()
        && host_alone.set_raw_path(b"/").is_ok()
        && validate_request_authority(&agreeing).is_ok()
        && validate_request_authority(&host_alone).is_ok()
}

/// How the request's body is framed (RFC 9112 §6.3), refusing what Pingora's
/// `validate_request` refused: `Transfer-Encoding` on HTTP/1.0 or without
/// `chunked` last, `Content-Length` values that are not all one number.
/// `Transfer-Encoding` together with `Content-Length` is read as chunked here
/// and refused by `framing::check` (with the reason the sender sees).
fn body_framing(head: &RequestHeader) -> Result<Body> {
    let headers = &head.headers;
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        if head.version == Version::HTTP_10 {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "HTTP/1.0 requests cannot include Transfer-Encoding",
            );
        }
        let bytes = last.as_bytes();
        let final_coding = bytes
            .iter()
            .rposition(|&b| b == b',')
            .map_or(bytes, |at| &bytes[at + 1..]);
        if !final_coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "non-chunked final Transfer-Encoding",
            );
        }
        return Ok(Body::Chunked(Chunk::Size));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let parsed = parse_length(item.trim_ascii()).ok_or_else(|| {
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
    Ok(match length {
        Some(0) | None => Body::Done,
        Some(length) => Body::Length(length),
    })
}

/// Keep-alive after this request's head, as Pingora's `respect_keepalive`:
/// `Connection: close` turns it off, `keep-alive` on; otherwise HTTP/1.1 keeps
/// the connection and HTTP/1.0 closes it. `Some(0)`: on, timeout unchanged.
fn keepalive(head: &RequestHeader, current: Option<u64>) -> Option<u64> {
    let mut close = false;
    let mut keep = false;
    for value in head.headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if close || (!keep && head.version == Version::HTTP_10) {
        return None;
    }
    Some(current.unwrap_or(0))
}

/// A chunk-size line at the start of `buffer`: bytes used and the size, or
/// `None` while the line is incomplete. Only `1*HEXDIG CRLF` is accepted: no
/// extensions, no whitespace, at most 15 digits, a line of at most 4 KiB.
fn chunk_size(buffer: &[u8]) -> Result<Option<(usize, u64)>> {
    let window = &buffer[..buffer.len().min(MAX_CHUNK_LINE)];
    let Some(end) = memchr::memchr(b'\n', window) else {
        if buffer.len() >= MAX_CHUNK_LINE {
            return invalid_chunk("chunk-size line too long");
        }
        // Refuse early what can never become a valid line.
        if let Some(bad) = window.iter().position(|b| !b.is_ascii_hexdigit()) {
            if !(window[bad] == b'\r' && bad + 1 == window.len()) {
                return invalid_chunk(not_hex(window[bad]));
            }
        }
        return Ok(None);
    };
    let digits = &window[..end];
    let Some(digits) = digits.strip_suffix(b"\r") else {
        return invalid_chunk("chunk-size line not ended by CRLF");
    };
    if let Some(&bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return invalid_chunk(not_hex(bad));
    }
    if digits.is_empty() {
        return invalid_chunk("chunk size missing");
    }
    if digits.len() > 15 {
        return invalid_chunk("chunk size over 15 hex digits");
    }
    let text = std::str::from_utf8(digits).map_err(|_| Error::new(INVALID_CHUNK))?;
    let size = u64::from_str_radix(text, 16).map_err(|_| Error::new(INVALID_CHUNK))?;
    Ok(Some((end + 1, size)))
}

/// Why a chunk-size line with `byte` in it is refused (RFC 9112 §7.1: `chunk-size
/// [ chunk-ext ] CRLF`; hookgate accepts no extension and no whitespace).
fn not_hex(byte: u8) -> &'static str {
    match byte {
        b';' => "chunk extension (not accepted)",
        b' ' | b'\t' => "whitespace in the chunk-size line",
        _ => "chunk size not hexadecimal",
    }
}

fn invalid_chunk<T>(why: &'static str) -> Result<T> {
    Error::e_explain(INVALID_CHUNK, why)
}

/// Header names webhook senders and the proxies in front of hookgate send.
/// Parsed from the wire, a name outside the `http` crate's standard ones is a
/// new allocation per request (`HeaderName::from_bytes`), and a standard one
/// is lower-cased into a scratch buffer and matched again: a name in this list
/// is a comparison in any case and a static name.
const KNOWN_NAMES: [&str; 41] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "expect",
    "authorization",
    "x-github-event",
    "x-github-delivery",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "stripe-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-webhook-id",
    "x-shopify-api-version",
    "x-shopify-triggered-at",
    "x-gitlab-token",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-webhook-uuid",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-twilio-signature",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// The `HeaderName` of `name` (any case) when it is one of [`KNOWN_NAMES`]:
/// a static name, no allocation. Looked up by length first.
fn known_name(name: &[u8]) -> Option<http::HeaderName> {
    static BY_LENGTH: std::sync::OnceLock<Vec<Vec<http::HeaderName>>> = std::sync::OnceLock::new();
    let table = BY_LENGTH.get_or_init(|| {
        let longest = KNOWN_NAMES.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut table = vec![Vec::new(); longest + 1];
        for known in KNOWN_NAMES {
            table[known.len()].push(http::HeaderName::from_static(known));
        }
        table
    });
    table
        .get(name.len())?
        .iter()
        .find(|known| known.as_str().as_bytes().eq_ignore_ascii_case(name))
        .cloned()
}

fn clamp(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
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
