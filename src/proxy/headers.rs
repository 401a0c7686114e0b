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
use pingora::http::{RequestHeader, ResponseHeader};
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
        write!(wire, "{X_FORWARDED_PORT}: {port}\r\n").expect("BytesMut grows");
    }
    if let (Some(name), Some(client)) = (forwarding.client_header, forwarding.client) {
        write!(wire, "{name}: {client}\r\n").expect("BytesMut grows");
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
        write!(wire, "content-length: {body_len}\r\n").expect("BytesMut grows");
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
        write!(wire, "{peer}").expect("BytesMut grows");
    }
    wire.put_slice(b"\r\n");
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
/// sender. `Content-Length` and `Transfer-Encoding` stay: the downstream writer
/// frames by them. Built fresh rather than cloned and pruned: the upstream head
/// also carries a header-case map that the answer does not need.
pub fn downstream_response(upstream: &ResponseHeader, request_id: &str) -> Result<ResponseHeader> {
    let headers = &upstream.headers;
    let listed = connection_listed(headers);
    let mut response = ResponseHeader::build_no_case(upstream.status, Some(headers.len() + 1))?;
    let mut has_request_id = false;
    for (name, value) in headers.iter() {
        let dropped = matches!(
            *name,
            header::CONNECTION | header::UPGRADE | header::TRAILER | header::TE
        ) || HOP_BY_HOP_EXTRA.contains(&name.as_str())
            || name.as_str().starts_with("proxy-")
            || listed.iter().any(|l| name.as_str().eq_ignore_ascii_case(l));
        if !dropped {
            has_request_id |= name.as_str() == X_REQUEST_ID;
            response.append_header(name.clone(), value.clone())?;
        }
    }
    if !has_request_id {
        response.insert_header(X_REQUEST_ID, request_id)?;
    }
    Ok(response)
}

/// The sender's `X-Request-Id` when it is short and plain, so it can be echoed into
/// JSON and logs unescaped; otherwise `None` and the gateway makes one.
pub fn sender_request_id(request: &RequestHeader) -> Option<&str> {
    let value = request.headers.get(X_REQUEST_ID)?.to_str().ok()?;
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
        .flat_map(|value| value.split(','))
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
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", b"/hook?x=1", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn forwarding() -> Forwarding<'static> {
        Forwarding {
            target: "/hook?x=1",
            authority: Some("gw.example"),
            peer: Some("10.1.2.3".parse().unwrap()),
            trusted_peer: false,
            client: Some("10.1.2.3".parse().unwrap()),
            client_header: None,
            tls: false,
            local_port: None,
            request_id: "req-1",
            route: "stripe",
            event: None,
        }
    }

    /// The head as an upstream parses it: request line and headers in order.
    struct Parsed {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
    }

    impl Parsed {
        fn all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        }

        fn one(&self, name: &str) -> &str {
            match self.all(name).as_slice() {
                [value] => value,
                other => panic!("{name}: expected one value, got {other:?}"),
            }
        }
    }

    fn parse(head: &UpstreamHead) -> Parsed {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut slots);
        let status = request.parse(head.wire()).expect("a valid HTTP/1.1 head");
        assert_eq!(
            status,
            httparse::Status::Complete(head.wire().len()),
            "nothing after the head"
        );
        assert_eq!(request.version, Some(1));
        Parsed {
            method: request.method.unwrap().to_string(),
            target: request.path.unwrap().to_string(),
            headers: request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn strips_hop_by_hop_and_sets_framing() {
        let downstream = request(&[
            ("Host", "gw.example"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Expect", "100-continue"),
            ("Proxy-Client-IP", "6.6.6.6"),
            ("Stripe-Signature", "t=1,v1=ab"),
            ("X-Hookgate-Route", "spoofed"),
        ]);
        let head = upstream_head(&downstream, 11, &forwarding()).unwrap();
        assert_eq!(head.method(), Method::POST);
        let up = parse(&head);
        assert_eq!(
            (up.method.as_str(), up.target.as_str()),
            ("POST", "/hook?x=1")
        );
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "transfer-encoding",
            "expect",
            "proxy-client-ip",
        ] {
            assert!(up.all(gone).is_empty(), "{gone} forwarded");
        }
        assert_eq!(up.one("content-length"), "11");
        assert_eq!(up.one("host"), "gw.example");
        assert_eq!(up.one("stripe-signature"), "t=1,v1=ab");
        assert_eq!(up.one("x-hookgate-route"), "stripe");
        assert_eq!(up.one("x-request-id"), "req-1");
        assert_eq!(up.one("x-forwarded-for"), "10.1.2.3");
        assert_eq!(up.one("x-forwarded-proto"), "http");
    }

    #[test]
    fn the_wire_form_is_exact() {
        let downstream = request(&[("Host", "gw.example"), ("X-A", "1"), ("X-A", "2")]);
        let forwarding = Forwarding {
            tls: true,
            event: Some("push"),
            ..forwarding()
        };
        let head = upstream_head(&downstream, 3, &forwarding).unwrap();
        assert_eq!(
            std::str::from_utf8(head.wire()).unwrap(),
            "POST /hook?x=1 HTTP/1.1\r\n\
             host: gw.example\r\n\
             x-a: 1\r\n\
             x-a: 2\r\n\
             x-forwarded-for: 10.1.2.3\r\n\
             x-forwarded-proto: https\r\n\
             x-forwarded-host: gw.example\r\n\
             x-request-id: req-1\r\n\
             x-hookgate-route: stripe\r\n\
             x-hookgate-event: push\r\n\
             content-length: 3\r\n\
             \r\n"
        );
    }

    #[test]
    fn forwarded_headers_are_kept_from_trusted_proxies_only() {
        let downstream = request(&[
            ("Host", "spoofed.example"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "lb.example"),
            ("X-Forwarded-Port", "443"),
            ("Forwarded", "for=9.9.9.9;proto=https"),
            ("X-Real-IP", "9.9.9.9"),
            ("X-Client-IP", "9.9.9.9"),
        ]);
        let client_header = HeaderName::from_static("x-client-ip");
        let untrusted = Forwarding {
            client_header: Some(&client_header),
            local_port: Some(8080),
            ..forwarding()
        };
        let up = parse(&upstream_head(&downstream, 0, &untrusted).unwrap());
        assert_eq!(up.one("host"), "gw.example");
        assert_eq!(up.one("x-forwarded-for"), "10.1.2.3");
        assert_eq!(up.one("x-forwarded-proto"), "http");
        assert_eq!(up.one("x-forwarded-host"), "gw.example");
        assert_eq!(up.one("x-forwarded-port"), "8080");
        assert_eq!(up.one("x-client-ip"), "10.1.2.3");
        assert!(up.all("forwarded").is_empty());
        assert!(up.all("x-real-ip").is_empty());
        assert_eq!(up.one("content-length"), "0");

        let trusted = Forwarding {
            trusted_peer: true,
            client: Some("2.2.2.2".parse().unwrap()),
            ..untrusted
        };
        let up = parse(&upstream_head(&downstream, 0, &trusted).unwrap());
        assert_eq!(up.one("host"), "gw.example");
        assert_eq!(up.one("x-forwarded-for"), "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(up.one("x-forwarded-proto"), "https");
        assert_eq!(up.one("x-forwarded-host"), "gw.example");
        assert_eq!(up.one("x-forwarded-port"), "443");
        assert_eq!(up.one("x-client-ip"), "2.2.2.2");
        assert!(up.all("forwarded").is_empty());
        assert!(up.all("x-real-ip").is_empty());

        let unknown_peer = Forwarding {
            peer: None,
            ..trusted
        };
        let up = parse(&upstream_head(&downstream, 0, &unknown_peer).unwrap());
        assert_eq!(up.one("x-forwarded-for"), "1.1.1.1, 2.2.2.2");
    }

    #[test]
    fn a_bodiless_get_has_no_framing_and_the_decided_target_and_host() {
        let downstream =
            RequestHeader::build("GET", b"https://gw.example:8443//ping?q=1", None).unwrap();
        let decided = Forwarding {
            target: "/ping?q=1",
            authority: Some("gw.example:8443"),
            ..forwarding()
        };
        let up = parse(&upstream_head(&downstream, 0, &decided).unwrap());
        assert_eq!(
            (up.method.as_str(), up.target.as_str()),
            ("GET", "/ping?q=1")
        );
        assert!(up.all("content-length").is_empty());
        assert_eq!(up.one("host"), "gw.example:8443");
        let no_host = Forwarding {
            authority: None,
            ..decided
        };
        let up = parse(&upstream_head(&downstream, 0, &no_host).unwrap());
        assert_eq!(up.one("host"), "");
        assert!(up.all("x-forwarded-host").is_empty());
    }

    #[test]
    fn values_that_could_split_the_head_are_not_written() {
        let downstream = request(&[("Host", "gw.example")]);
        let event = Forwarding {
            event: Some("push\r\nx-injected: 1"),
            ..forwarding()
        };
        let up = parse(&upstream_head(&downstream, 0, &event).unwrap());
        assert!(up.all("x-hookgate-event").is_empty());
        assert!(up.all("x-injected").is_empty());
        let route = Forwarding {
            route: "a\nb",
            ..forwarding()
        };
        assert!(upstream_head(&downstream, 0, &route).is_err());
        let event = Forwarding {
            event: Some("pédé\tcafé"),
            ..forwarding()
        };
        let up = parse(&upstream_head(&downstream, 0, &event).unwrap());
        assert_eq!(up.one("x-hookgate-event"), "pédé\tcafé");
    }

    #[test]
    fn responses_lose_their_connection_headers_only() {
        let mut upstream = ResponseHeader::build(201, None).unwrap();
        for (name, value) in [
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Length", "2"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Foo", "1"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ] {
            upstream.append_header(name, value).unwrap();
        }
        let response = downstream_response(&upstream, "req-1").unwrap();
        let h = &response.headers;
        assert_eq!(response.status, 201);
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "proxy-authenticate",
            "proxy-foo",
        ] {
            assert!(!h.contains_key(gone), "{gone} relayed");
        }
        assert_eq!(h["content-length"], "2");
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h["x-request-id"], "req-1");
        upstream.insert_header("X-Request-Id", "theirs").unwrap();
        let response = downstream_response(&upstream, "req-1").unwrap();
        assert_eq!(response.headers["x-request-id"], "theirs");
    }

    #[test]
    fn request_ids_from_senders_must_be_plain() {
        assert_eq!(
            sender_request_id(&request(&[("X-Request-Id", "abc-123")])),
            Some("abc-123")
        );
        assert_eq!(
            sender_request_id(&request(&[("X-Request-Id", "a\"b")])),
            None
        );
        assert_eq!(sender_request_id(&request(&[("X-Request-Id", "")])), None);
        let long = "a".repeat(129);
        assert_eq!(
            sender_request_id(&request(&[("X-Request-Id", &long)])),
            None
        );
        assert_eq!(sender_request_id(&request(&[])), None);
    }
}
