//! The client side of one request, whatever its protocol: hookgate's own
//! HTTP/1 session (`request`) or Pingora's session for HTTP/2, behind one
//! type the request path takes ([`Downstream`]), and the answer head both
//! write ([`AnswerHead`]).
//!
//! Owns: the methods the request path uses on a session, each delegating to
//! the protocol's session (an enum: no `dyn` on the request path). Does not
//! own: reading or writing HTTP/1 (`request`), HTTP/2 (Pingora), or what an
//! answer says (`reply`, `queued`, `handshake`, `forward`).

use std::net::IpAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::Result;

use super::request::{HeadLimits, Http1Session};

/// A response head to write: the status and the header fields in order.
/// Names are written as given; the writer adds `Date` and `Connection`.
#[derive(Debug, Clone)]
pub struct AnswerHead {
    pub status: u16,
    fields: Vec<(Bytes, Value)>,
}

/// Longest value an [`AnswerHead`] keeps in place (a request id is 36 bytes).
const INLINE: usize = 46;

/// A field value: shared bytes (a static text, a slice of an upstream's
/// head), or a short one copied in place (a number, a request id), which
/// costs no allocation.
#[derive(Debug, Clone)]
enum Value {
    Shared(Bytes),
    Inline { bytes: [u8; INLINE], len: u8 },
}

impl Value {
    fn copied(value: &[u8]) -> Self {
        match u8::try_from(value.len()) {
            Ok(len) if value.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..value.len()].copy_from_slice(value);
                Value::Inline { bytes, len }
            }
            _ => Value::Shared(Bytes::copy_from_slice(value)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Shared(bytes) => bytes,
            Value::Inline { bytes, len } => &bytes[..usize::from(*len)],
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            Value::Shared(bytes) => bytes.clone(),
            Value::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
        }
    }
}

impl AnswerHead {
    /// An empty head for `status`, with room for `fields` fields.
    pub fn new(status: u16, fields: usize) -> Self {
        AnswerHead {
            status,
            fields: Vec::with_capacity(fields),
        }
    }

    /// Adds a field the gateway names.
    pub fn field(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.fields.push((
            Bytes::from_static(name.as_bytes()),
            Value::Shared(value.into()),
        ));
    }

    /// Adds a field the gateway names with a copy of `value` (kept in place
    /// when it is short: a request id).
    pub fn copied(&mut self, name: &'static str, value: &[u8]) {
        self.fields
            .push((Bytes::from_static(name.as_bytes()), Value::copied(value)));
    }

    /// Adds a field whose name and value were received (an upstream's answer).
    pub fn push(&mut self, name: Bytes, value: Bytes) {
        self.fields.push((name, Value::Shared(value)));
    }

    /// Adds a number field (`Content-Length`).
    pub fn number(&mut self, name: &'static str, value: impl itoa::Integer) {
        self.copied(name, itoa::Buffer::new().format(value).as_bytes());
    }

    /// Removes every field `name` (ASCII case-insensitive).
    pub fn remove(&mut self, name: &[u8]) {
        self.fields
            .retain(|(field, _)| !field.eq_ignore_ascii_case(name));
    }

    /// Whether a field `name` (lower case) is there.
    pub fn has(&self, name: &[u8]) -> bool {
        self.fields
            .iter()
            .any(|(field, _)| field.eq_ignore_ascii_case(name))
    }

    /// The values of the fields `name` (ASCII case-insensitive), in order.
    #[cfg(test)]
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value.as_bytes())
    }

    /// The value of `Content-Length`, when it is one number.
    pub fn content_length(&self) -> Option<u64> {
        let (_, value) = self
            .fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(b"content-length"))?;
        std::str::from_utf8(value.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The bytes the fields take on the wire.
    pub fn wire_len(&self) -> usize {
        self.fields
            .iter()
            .map(|(name, value)| name.len() + value.as_bytes().len() + 4)
            .sum::<usize>()
            + 32
    }

    /// `name: value\r\n` for each field.
    pub fn put_fields(&self, wire: &mut BytesMut) {
        for (name, value) in &self.fields {
            wire.put_slice(name);
            wire.put_slice(b": ");
            wire.put_slice(value.as_bytes());
            wire.put_slice(b"\r\n");
        }
    }

    /// The same head as Pingora's `ResponseHeader` (for HTTP/2).
    fn to_response_header(&self) -> Result<ResponseHeader> {
        let mut header = ResponseHeader::build_no_case(self.status, Some(self.fields.len() + 2))?;
        for (name, value) in &self.fields {
            let value = http::HeaderValue::from_maybe_shared(value.to_bytes()).map_err(|e| {
                pingora::Error::because(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "invalid response header value",
                    e,
                )
            })?;
            header.append_header(name.clone(), value)?;
        }
        Ok(header)
    }
}

/// The session of one request: HTTP/1 is hookgate's, HTTP/2 is Pingora's.
pub enum Downstream {
    Http1(Http1Session),
    Pingora(ServerSession),
}

/// What reading a request head gave.
pub enum HeadRead {
    /// The head is in.
    Read,
    /// The client closed the connection (or let it idle out) before a head.
    Closed,
}

impl Downstream {
    /// Reads the request head (see [`Http1Session::read_request`] for the errors).
    pub async fn read_request(&mut self, limits: HeadLimits) -> Result<HeadRead> {
        let read = match self {
            Downstream::Http1(session) => session.read_request(limits).await?,
            Downstream::Pingora(session) => session.read_request().await?,
        };
        Ok(if read {
            HeadRead::Read
        } else {
            HeadRead::Closed
        })
    }

    pub fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::Http1(session) => session.req_header(),
            Downstream::Pingora(session) => session.req_header(),
        }
    }

    /// The head's bytes as received, for an HTTP/1 request (`None`: HTTP/2).
    pub fn raw_head(&self) -> Option<&[u8]> {
        match self {
            Downstream::Http1(session) => Some(session.raw_head()),
            Downstream::Pingora(_) => None,
        }
    }

    /// The request line of an HTTP/1 head refused while it was read, when it
    /// had arrived whole and valid (see [`Http1Session::refused_request_line`]);
    /// `None` for HTTP/2.
    pub fn refused_request_line(&self) -> Option<RequestHeader> {
        match self {
            Downstream::Http1(session) => session.refused_request_line(),
            Downstream::Pingora(_) => None,
        }
    }

    pub fn is_http1(&self) -> bool {
        match self {
            Downstream::Http1(_) => true,
            Downstream::Pingora(session) => session.as_http1().is_some(),
        }
    }

    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Downstream::Http1(session) => session.read_request_body().await,
            Downstream::Pingora(session) => session.read_request_body().await,
        }
    }

    pub fn is_body_done(&mut self) -> bool {
        match self {
            Downstream::Http1(session) => session.is_body_done(),
            Downstream::Pingora(session) => session.is_body_done(),
        }
    }

    pub async fn write_continue_response(&mut self) -> Result<()> {
        match self {
            Downstream::Http1(session) => session.write_continue_response().await,
            Downstream::Pingora(session) => session.write_continue_response().await,
        }
    }

    /// Writes a whole answer; `close` adds `Connection: close` and ends the
    /// connection after it.
    pub async fn write_answer(&mut self, head: AnswerHead, body: Bytes, close: bool) -> Result<()> {
        match self {
            Downstream::Http1(session) => session.write_answer(head, body, close).await,
            Downstream::Pingora(session) => {
                let mut header = head.to_response_header()?;
                if close {
                    session.set_keepalive(None);
                    header.insert_header("Connection", "close")?;
                }
                session.write_response_header(Box::new(header)).await?;
                session.write_response_body(body, true).await
            }
        }
    }

    /// Writes the head of an answer whose body follows ([`Downstream::write_body`]).
    pub async fn write_head(&mut self, head: AnswerHead) -> Result<()> {
        match self {
            Downstream::Http1(session) => session.write_head(head).await,
            Downstream::Pingora(session) => {
                let header = head.to_response_header()?;
                session.write_response_header(Box::new(header)).await
            }
        }
    }

    /// Writes a piece of the answer's body; `end`: the last one.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        match self {
            Downstream::Http1(session) => session.write_body(data, end).await,
            Downstream::Pingora(session) => session.write_response_body(data, end).await,
        }
    }

    /// The answer's status once its head was written.
    pub fn response_written(&self) -> Option<u16> {
        match self {
            Downstream::Http1(session) => session.response_written(),
            Downstream::Pingora(session) => session.response_written().map(|r| r.status.as_u16()),
        }
    }

    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        match self {
            Downstream::Http1(session) => session.respond_error(status).await,
            Downstream::Pingora(session) => session.respond_error(status).await,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Downstream::Http1(session) => session.set_read_timeout(timeout),
            Downstream::Pingora(session) => session.set_read_timeout(timeout),
        }
    }

    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Downstream::Http1(session) => session.set_write_timeout(timeout),
            Downstream::Pingora(session) => session.set_write_timeout(timeout),
        }
    }

    pub fn get_keepalive(&self) -> Option<u64> {
        match self {
            Downstream::Http1(session) => session.get_keepalive(),
            Downstream::Pingora(session) => session.get_keepalive(),
        }
    }

    pub fn set_keepalive(&mut self, seconds: Option<u64>) {
        match self {
            Downstream::Http1(session) => session.set_keepalive(seconds),
            Downstream::Pingora(session) => session.set_keepalive(seconds),
        }
    }

    pub fn get_keepalive_reuses_remaining(&self) -> Option<u32> {
        match self {
            Downstream::Http1(session) => session.get_keepalive_reuses_remaining(),
            Downstream::Pingora(session) => session.get_keepalive_reuses_remaining(),
        }
    }

    pub fn set_keepalive_reuses_remaining(&mut self, remaining: Option<u32>) {
        match self {
            Downstream::Http1(session) => session.set_keepalive_reuses_remaining(remaining),
            Downstream::Pingora(session) => session.set_keepalive_reuses_remaining(remaining),
        }
    }

    /// The client's address (`None` on a Unix socket).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        match self {
            Downstream::Http1(session) => session.peer_ip(),
            Downstream::Pingora(session) => session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| addr.ip()),
        }
    }

    /// The port of the listener the request arrived on.
    pub fn local_port(&self) -> Option<u16> {
        match self {
            Downstream::Http1(session) => session.local_port(),
            Downstream::Pingora(session) => session
                .server_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| addr.port()),
        }
    }

    pub fn is_tls(&self) -> bool {
        match self {
            Downstream::Http1(session) => session.is_tls(),
            Downstream::Pingora(session) => session
                .digest()
                .is_some_and(|digest| digest.ssl_digest.is_some()),
        }
    }

    pub async fn shutdown(&mut self) {
        match self {
            Downstream::Http1(session) => session.shutdown().await,
            Downstream::Pingora(session) => session.shutdown().await,
        }
    }
}
