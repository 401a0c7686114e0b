//! The request head sent upstream and the response head sent back: hop-by-hop
//! headers removed, framing set from the buffered body, the target and `Host`
//! that routing decided on, and the gateway's own headers (`X-Forwarded-For`,
//! `-Proto`, `-Host`, `-Port`, the client header, `X-Request-Id`,
//! `X-Hookgate-Route`, `X-Hookgate-Event`) added. The forwarded headers of a
//! peer outside `trusted_proxies` are replaced, never passed on (see [`Forwarding`]).
//!
//! The upstream head is serialized once, straight from the sender's parsed head
//! into HTTP/1.1 wire bytes ([`UpstreamHead`]): no intermediate header map is
//! built or cloned, and `forward` writes it together with the body in one write.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::Method;
use pingora::http::RequestHeader;

use super::downstream::AnswerHead;
use pingora::{Error, ErrorType, Result};

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_HOOKGATE_ROUTE: &str = "x-hookgate-route";
pub const X_HOOKGATE_EVENT: &str = "x-hookgate-event";
/// Set on queued deliveries only (`delivery`); a sender's own is never passed.
pub const X_HOOKGATE_EVENT_ID: &str = "x-hookgate-event-id";
pub const X_HOOKGATE_ATTEMPT: &str = "x-hookgate-attempt";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_REAL_IP: &str = "x-real-ip";

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `Expect` (answered by the gateway) and the framing headers (re-set from the body).
/// Every `Proxy-*` header is hop-by-hop too ([`is_hop_by_hop`]).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
    header::CONTENT_LENGTH,
];
const HOP_BY_HOP_EXTRA: &[&str] = &["keep-alive", "proxy-connection"];

/// What the gateway decided about a request and adds to the forwarded head.
pub struct Forwarding<'a> {
    /// The origin-form target to send: the canonical path and the query
    /// (`target::RequestTarget::forwarded`).
    pub target: &'a str,
    /// The `Host` to send (`target::Authority::header`); `None` sends an empty one.
    pub authority: Option<&'a str>,
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Whether the peer is in `[server] trusted_proxies`: then its
    /// `X-Forwarded-For` chain is extended and its `X-Forwarded-Proto` and
    /// `X-Forwarded-Port` kept. From any other peer they are replaced.
    /// `X-Forwarded-Host` is always the decided authority; `Forwarded` and
    /// `X-Real-IP` are always removed.
    pub trusted_peer: bool,
    /// The client address hookgate decided on (the one the allowlist judged) and
    /// the header it is sent in (`[server] client_header`); the sender's own
    /// value of that header is never forwarded.
    pub client: Option<IpAddr>,
    pub client_header: Option<&'a HeaderName>,
    pub tls: bool,
    /// The port of the listener the request arrived on.
    pub local_port: Option<u16>,
    pub request_id: &'a str,
    pub route: &'a str,
    /// The extracted event type, when the route reads one.
    pub event: Option<&'a str>,
}

impl Forwarding<'_> {
    /// Whether a sender's header is forwarded as it is.
    fn keeps(&self, name: &HeaderName, listed: &[String]) -> bool {
        if is_hop_by_hop(name)
            || *name == header::HOST
            || self.client_header == Some(name)
            || listed.iter().any(|l| name.as_str().eq_ignore_ascii_case(l))
        {
            return false;
        }
        match name.as_str() {
            // `X-Forwarded-Host` is always the host routing decided on, even
            // from a trusted proxy: an app that trusts it (Django's
            // USE_X_FORWARDED_HOST) must see the host that was checked.
            // `Forwarded` and `X-Real-IP` would be a second reading of the
            // client and host beside the ones hookgate decided on: never passed.
            X_FORWARDED_FOR | X_FORWARDED_HOST | X_REQUEST_ID | X_HOOKGATE_ROUTE
            | X_HOOKGATE_EVENT | X_HOOKGATE_EVENT_ID | X_HOOKGATE_ATTEMPT | X_REAL_IP
            | "forwarded" => false,
            X_FORWARDED_PROTO | X_FORWARDED_PORT => self.trusted_peer,
            _ => true,
        }
    }
}

/// A request head ready for the upstream: its method (a `HEAD` response has no
/// body, whatever its framing says) and its HTTP/1.1 wire bytes, shared by the
/// primary exchange and every fan-out copy.
#[derive(Debug, Clone)]
pub struct UpstreamHead {
    method: Method,
    wire: Bytes,
}

impl UpstreamHead {
    /// A head serialized earlier by [`upstream_head`] (kept by a fan-out copy).
    pub fn from_parts(method: Method, wire: Bytes) -> Self {
        UpstreamHead { method, wire }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// `METHOD target HTTP/1.1\r\n`, the headers, and the empty line.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
}

/// Serializes the upstream request head for a buffered body of `body_len` bytes:
/// the canonical origin-form target and `Host` that routing decided on, the
/// sender's end-to-end headers, and the gateway's own.
///
/// Header values come from the sender's parsed head (the `http` crate has already
/// refused control characters in them) or from the gateway; each of the
/// gateway's own is checked the same way before it is written.
pub fn upstream_head(
    downstream: &RequestHeader,
    body_len: usize,
    forwarding: &Forwarding<'_>,
) -> Result<UpstreamHead> {
    let target = forwarding.target.as_bytes();
    if !target.starts_with(b"/")
        || target
            .iter()
            .any(|&b| matches!(b, 0x00 | b'\r' | b'\n' | b' '))
    {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the request target cannot be forwarded",
        );
    }
    let headers = &downstream.headers;
    let listed = connection_listed(headers);
    // One allocation: the sender's headers plus room for the gateway's own.
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target.len()
        + 320
        + forwarding.event.map_or(0, str::len);
    let mut wire = BytesMut::with_capacity(size);
    wire.put_slice(downstream.method.as_str().as_bytes());
    wire.put_u8(b' ');
    wire.put_slice(target);
    wire.put_slice(b" HTTP/1.1\r\n");
    put_checked(
        &mut wire,
        "host",
        forwarding.authority.unwrap_or("").as_bytes(),
    )?;
    for (name, value) in headers.iter() {
        if forwarding.keeps(name, &listed) {
            put_header(&mut wire, name.as_str(), value.as_bytes());
        }
    }
    put_forwarded_for(&mut wire, headers, forwarding);
    let kept = |name: &str| forwarding.trusted_peer && headers.contains_key(name);
    if !kept(X_FORWARDED_PROTO) {
        put_header(
            &mut wire,
            X_FORWARDED_PROTO,
            if forwarding.tls { b"https" } else { b"http" },
        );
    }
    if let Some(authority) = forwarding.authority {
        put_checked(&mut wire, X_FORWARDED_HOST, authority.as_bytes())?;
    }
    if let Some(port) = forwarding.local_port.filter(|_| !kept(X_FORWARDED_PORT)) {
        put_number(&mut wire, X_FORWARDED_PORT, port);
    }
    if let (Some(name), Some(client)) = (forwarding.client_header, forwarding.client) {
        wire.put_slice(name.as_str().as_bytes());
        wire.put_slice(b": ");
        put_ip(&mut wire, client);
        wire.put_slice(b"\r\n");
    }
    put_checked(&mut wire, X_REQUEST_ID, forwarding.request_id.as_bytes())?;
    put_checked(&mut wire, X_HOOKGATE_ROUTE, forwarding.route.as_bytes())?;
    if let Some(event) = forwarding.event {
        // Events may be non-ASCII UTF-8; one with control characters is not sent.
        if valid_header_value(event.as_bytes()) {
            put_header(&mut wire, X_HOOKGATE_EVENT, event.as_bytes());
        }
    }
    if body_len > 0 || sends_body(downstream) {
        put_number(&mut wire, "content-length", body_len);
    }
    wire.put_slice(b"\r\n");
    Ok(UpstreamHead {
        method: downstream.method.clone(),
        wire: wire.freeze(),
    })
}

/// `X-Forwarded-For`: from a trusted proxy, its chain (every such header, in
/// order) then the peer; from any other peer, the peer alone.
fn put_forwarded_for(wire: &mut BytesMut, headers: &http::HeaderMap, forwarding: &Forwarding<'_>) {
    let chain = headers.get_all(X_FORWARDED_FOR);
    let mut previous = chain.iter().filter(|_| forwarding.trusted_peer).peekable();
    if previous.peek().is_none() && forwarding.peer.is_none() {
        return;
    }
    wire.put_slice(X_FORWARDED_FOR.as_bytes());
    wire.put_slice(b": ");
    let mut first = true;
    for value in previous {
        if !first {
            wire.put_slice(b", ");
        }
        wire.put_slice(value.as_bytes());
        first = false;
    }
    if let Some(peer) = forwarding.peer {
        if !first {
            wire.put_slice(b", ");
        }
        put_ip(wire, peer);
    }
    wire.put_slice(b"\r\n");
}

/// An address in its standard text form (`Display`), IPv4 without the formatter.
fn put_ip(wire: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    wire.put_u8(b'.');
                }
                wire.put_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => write!(wire, "{ip}").expect("BytesMut grows"),
    }
}

/// `name: value\r\n` for a number.
fn put_number(wire: &mut BytesMut, name: &str, value: impl itoa::Integer) {
    put_header(wire, name, itoa::Buffer::new().format(value).as_bytes());
}

fn put_header(wire: &mut BytesMut, name: &str, value: &[u8]) {
    wire.put_slice(name.as_bytes());
    wire.put_slice(b": ");
    wire.put_slice(value);
    wire.put_slice(b"\r\n");
}

/// [`put_header`] for a value the gateway made: refused if it could split the head.
fn put_checked(wire: &mut BytesMut, name: &str, value: &[u8]) -> Result<()> {
    if !valid_header_value(value) {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            format!("the {name} header value cannot be sent"),
        );
    }
    put_header(wire, name, value);
    Ok(())
}

/// The `http` crate's rule for header values: visible ASCII, tab, space and
/// obs-text (bytes above 0x7f); no other control characters.
fn valid_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The upstream's response head without its connection-level headers, for the
/// sender, names as the upstream wrote them. `Content-Length` and
/// `Transfer-Encoding` stay: the downstream writer frames by them.
/// `Content-Length` goes once, with one value: a list (`2, 2`) or repeated
/// fields the response reader found to agree (it refuses any that differ)
/// become the single field RFC 9110 §8.6 lets a recipient replace them with,
/// so the sender cannot read a framing other than the one relayed. `Date` is
/// dropped: the writer sends its own in every answer. `X-Request-Id` is the
/// request's own, once: an upstream's value (another id, or several) is
/// replaced, so the sender can find the access-log line by it.
///
/// # Errors
/// `InvalidHTTPHeader` for a value with a control character (the upstream's
/// parser refuses those already; checked again as the head is re-sent).
pub fn downstream_response<F>(status: u16, fields: F, request_id: &str) -> Result<AnswerHead>
where
    F: Iterator<Item = (Bytes, Bytes)> + Clone,
{
    let listed: Vec<String> = fields
        .clone()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .filter_map(|(_, value)| String::from_utf8(value.to_vec()).ok())
        .flat_map(|value| connection_tokens(&value))
        .collect();
    let mut response = AnswerHead::new(status, fields.size_hint().0 + 1);
    let mut has_length = false;
    for (name, mut value) in fields {
        let dropped = [
            "connection",
            "upgrade",
            "trailer",
            "te",
            "date",
            "keep-alive",
            "proxy-connection",
        ]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
            || (name.len() >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
            || listed
                .iter()
                .any(|l| name.eq_ignore_ascii_case(l.as_bytes()));
        if dropped {
            continue;
        }
        if !valid_header_value(&value) {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "invalid response header value",
            );
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if has_length {
                continue;
            }
            has_length = true;
            let first = value.split(|b| *b == b',').next().unwrap_or_default();
            value = value.slice_ref(first.trim_ascii());
        }
        if name.eq_ignore_ascii_case(X_REQUEST_ID.as_bytes()) {
            // The sender gets the id the access log and the upstream have,
            // once, whatever the upstream answered with.
            continue;
        }
        response.push(name, value);
    }
    response.copied(X_REQUEST_ID, request_id.as_bytes());
    Ok(response)
}

/// A fresh request id: a random UUID (RFC 9562 §5.4) in its hyphenated lower-case
/// form, written without the formatting machinery of `to_string`.
pub fn new_request_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// The sender's `X-Request-Id` when it is short and plain, so it can be echoed into
/// JSON and logs unescaped; otherwise `None` and the gateway makes one.
pub fn sender_request_id(request: &RequestHeader) -> Option<&str> {
    // A `HeaderName` is looked up without parsing a `&str` name first.
    static NAME: HeaderName = HeaderName::from_static(X_REQUEST_ID);
    let value = request.headers.get(&NAME)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    plain.then_some(value)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || HOP_BY_HOP_EXTRA.contains(&name.as_str())
        || name.as_str().starts_with("proxy-")
}

/// Header names listed in `Connection: a, b` are hop-by-hop too.
fn connection_listed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(connection_tokens)
        .collect()
}

/// The header names one `Connection` value lists, lower-cased (`close` and
/// `keep-alive` are options, not names).
fn connection_tokens(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty() && token != "close" && token != "keep-alive")
        .collect()
}

/// Whether the original request framed a body (so an empty body is sent as `Content-Length: 0`).
fn sends_body(request: &RequestHeader) -> bool {
    request.headers.contains_key(header::CONTENT_LENGTH)
        || request.headers.contains_key(header::TRANSFER_ENCODING)
        || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH")
}

#[cfg(test)]
mod tests;
