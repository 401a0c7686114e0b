//! The request head sent upstream and the response head sent back: hop-by-hop
//! headers removed, framing set from the buffered body, and the gateway's own
//! headers (`X-Forwarded-For`, `X-Forwarded-Proto`, `X-Request-Id`,
//! `X-Hookgate-Route`) added.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_HOOKGATE_ROUTE: &str = "x-hookgate-route";
pub const X_HOOKGATE_EVENT: &str = "x-hookgate-event";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `Expect` (answered by the gateway) and the framing headers (re-set from the body).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::EXPECT,
    header::CONTENT_LENGTH,
];
const HOP_BY_HOP_EXTRA: &[&str] = &["keep-alive", "proxy-connection"];

/// What the gateway adds to the forwarded request.
pub struct Forwarding<'a> {
    pub client: Option<IpAddr>,
    pub tls: bool,
    pub request_id: &'a str,
    pub route: &'a str,
    /// The extracted event type, when the route reads one.
    pub event: Option<&'a str>,
}

/// Builds the upstream request head for a buffered body of `body_len` bytes.
pub fn upstream_request(
    downstream: &RequestHeader,
    body_len: usize,
    forwarding: &Forwarding<'_>,
) -> Result<RequestHeader> {
    let mut request = RequestHeader::build_no_case(
        downstream.method.clone(),
        downstream.raw_path(),
        Some(downstream.headers.len() + 5),
    )?;
    let listed = connection_listed(&downstream.headers);
    let mut forwarded_for: Option<String> = None;
    for (name, value) in downstream.headers.iter() {
        if is_hop_by_hop(name) || listed.iter().any(|l| name.as_str().eq_ignore_ascii_case(l)) {
            continue;
        }
        match name.as_str() {
            X_FORWARDED_FOR => {
                let text = String::from_utf8_lossy(value.as_bytes());
                forwarded_for = Some(match forwarded_for {
                    Some(previous) => format!("{previous}, {text}"),
                    None => text.into_owned(),
                });
            }
            X_FORWARDED_PROTO | X_REQUEST_ID | X_HOOKGATE_ROUTE | X_HOOKGATE_EVENT => {}
            _ => {
                request.append_header(name.clone(), value.clone())?;
            }
        }
    }
    if !downstream.headers.contains_key(header::HOST) {
        if let Some(authority) = downstream.uri.authority() {
            request.insert_header(header::HOST, authority.as_str())?;
        }
    }
    if let Some(client) = forwarding.client {
        let chain = match forwarded_for {
            Some(previous) => format!("{previous}, {client}"),
            None => client.to_string(),
        };
        request.insert_header(X_FORWARDED_FOR, chain)?;
    } else if let Some(previous) = forwarded_for {
        request.insert_header(X_FORWARDED_FOR, previous)?;
    }
    request.insert_header(
        X_FORWARDED_PROTO,
        if forwarding.tls { "https" } else { "http" },
    )?;
    request.insert_header(X_REQUEST_ID, forwarding.request_id)?;
    request.insert_header(X_HOOKGATE_ROUTE, forwarding.route)?;
    if let Some(event) = forwarding.event {
        // Events may be non-ASCII UTF-8 (never control characters): bytes, not str.
        if let Ok(value) = http::HeaderValue::from_bytes(event.as_bytes()) {
            request.insert_header(X_HOOKGATE_EVENT, value)?;
        }
    }
    if body_len > 0 || sends_body(downstream) {
        request.insert_header(header::CONTENT_LENGTH, body_len)?;
    }
    Ok(request)
}

/// Removes connection-level headers from an upstream response before it goes back.
/// `Content-Length` and `Transfer-Encoding` stay: the downstream writer frames by them.
pub fn downstream_response(upstream: &ResponseHeader, request_id: &str) -> Result<ResponseHeader> {
    let mut response = upstream.clone();
    let listed = connection_listed(&upstream.headers);
    for name in listed {
        response.remove_header(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::TRAILER,
        header::TE,
    ] {
        response.remove_header(&name);
    }
    for name in HOP_BY_HOP_EXTRA {
        response.remove_header(*name);
    }
    if !response.headers.contains_key(X_REQUEST_ID) {
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
    HOP_BY_HOP.contains(name) || HOP_BY_HOP_EXTRA.contains(&name.as_str())
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
            client: Some("10.1.2.3".parse().unwrap()),
            tls: false,
            request_id: "req-1",
            route: "stripe",
            event: None,
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
            ("Stripe-Signature", "t=1,v1=ab"),
            ("X-Hookgate-Route", "spoofed"),
        ]);
        let upstream = upstream_request(&downstream, 11, &forwarding()).unwrap();
        let h = &upstream.headers;
        assert_eq!(upstream.raw_path(), b"/hook?x=1");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "transfer-encoding",
            "expect",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h["content-length"], "11");
        assert_eq!(h["host"], "gw.example");
        assert_eq!(h["stripe-signature"], "t=1,v1=ab");
        assert_eq!(h["x-hookgate-route"], "stripe");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn appends_to_an_existing_forwarded_for_chain() {
        let downstream = request(&[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
        ]);
        let upstream = upstream_request(&downstream, 0, &forwarding()).unwrap();
        assert_eq!(
            upstream.headers["x-forwarded-for"],
            "1.1.1.1, 2.2.2.2, 10.1.2.3"
        );
        assert_eq!(upstream.headers["content-length"], "0");
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
