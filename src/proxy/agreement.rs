//! Request headers a backend could read differently from hookgate, refused
//! before anything is decided: what the gateway checked must be what the app
//! acts on.
//!
//! Owns the refusals, each with the reason the sender sees:
//! - a header name with `_`: servers that expose headers as CGI variables
//!   (Python's WSGI, PHP, Rack) turn `X_Real_IP` and `X-Real-IP` into the same
//!   `HTTP_X_REAL_IP`, so a sender could speak over the gateway's own headers
//!   (nginx drops such names by default; Puma's CVE-2024-45614);
//! - method and URL override headers (`X-HTTP-Method-Override`,
//!   `X-HTTP-Method`, `X-Method-Override`, `X-Override-Method`,
//!   `X-Original-Method`, `X-Forwarded-Method`, `X-Original-URL`,
//!   `X-Rewrite-URL`, `X-Original-URI`, `X-Forwarded-Uri`) and a `_method`
//!   parameter in the query or a form body: Rails, Laravel, Symfony, Express's
//!   method-override and IIS act on them, so the app would run another handler
//!   than the route that was checked;
//! - host and prefix headers an app may route on (`X-Host`, `X-Original-Host`,
//!   `X-Forwarded-Server`, `X-Forwarded-Prefix`) unless the peer is a trusted
//!   proxy;
//! - `Connection` naming an end-to-end header the request carries: it would be
//!   removed after verification (RFC 9110 §7.6.1), so the app would get less
//!   than what was checked.
//!
//! Does not own: the target and host (`target`), framing (`framing`), or the
//! body's content types (`events`).

use http::header;
use pingora::http::RequestHeader;

/// Override headers that change the method or the path an app acts on.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-override-method",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
];

/// Host and prefix headers an app may route on; believed from trusted proxies only.
const HOST_OVERRIDES: &[&str] = &[
    "x-host",
    "x-original-host",
    "x-forwarded-server",
    "x-forwarded-prefix",
];

/// Checks the request's header names, override headers and parameters, and
/// `Connection`. `trusted_peer`: the peer is one of `[server] trusted_proxies`.
///
/// # Errors
/// The reason to show the sender (never a header value).
pub fn check(
    head: &RequestHeader,
    query: Option<&str>,
    trusted_peer: bool,
) -> Result<(), &'static str> {
    for name in head.headers.keys() {
        let name = name.as_str();
        if name.as_bytes().contains(&b'_') {
            return Err("a header name contains '_', which backends read as '-'");
        }
        // Every override name starts with `x-`: most headers skip the lists.
        if !name.starts_with("x-") {
            continue;
        }
        if OVERRIDES.contains(&name) {
            return Err("method and URL override headers are not accepted");
        }
        if !trusted_peer && HOST_OVERRIDES.contains(&name) {
            return Err("host and prefix override headers are accepted from trusted proxies only");
        }
    }
    if query.is_some_and(has_method_parameter) {
        return Err("a _method parameter (method override) is not accepted");
    }
    for value in head.headers.get_all(header::CONNECTION) {
        let value = value.as_bytes();
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            let Ok(name) = header::HeaderName::from_bytes(token) else {
                continue;
            };
            let hop_by_hop =
                matches!(
                    name,
                    header::CONNECTION
                        | header::TE
                        | header::TRAILER
                        | header::TRANSFER_ENCODING
                        | header::UPGRADE
                        | header::PROXY_AUTHORIZATION
                        | header::PROXY_AUTHENTICATE
                        | header::EXPECT
                ) || matches!(name.as_str(), "keep-alive" | "close" | "proxy-connection");
            if !hop_by_hop && head.headers.contains_key(&name) {
                return Err("Connection lists an end-to-end header of the request");
            }
        }
    }
    Ok(())
}

/// A form body (`application/x-www-form-urlencoded`) with a `_method` field.
///
/// # Errors
/// The reason to show the sender.
pub fn check_form_body(head: &RequestHeader, body: &[u8]) -> Result<(), &'static str> {
    if declares_form(head) && has_method_field(body) {
        return Err("a _method field (method override) is not accepted");
    }
    Ok(())
}

/// Whether the request declares a form body (`application/x-www-form-urlencoded`), whose
/// fields [`check_form_body`] reads.
pub fn declares_form(head: &RequestHeader) -> bool {
    head.headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.as_bytes().split(|&b| b == b';').next())
        .is_some_and(|essence| {
            essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        })
}

/// Whether a query has a `_method` parameter.
fn has_method_parameter(query: &str) -> bool {
    has_method_field(query.as_bytes())
}

/// Whether urlencoded `pairs` have a `_method` key as a reader may decode it:
/// percent-escapes and `+` decoded (Node's `querystring`, PHP), any letter
/// case, leading blanks dropped and the name ended at a NUL (PHP). Pairs are
/// split on `&` and `;` (older Python and Rack split on both).
fn has_method_field(pairs: &[u8]) -> bool {
    // Cheap exit: every spelling keeps a `_` or a `%` (for `%5F`).
    if memchr::memchr2(b'_', b'%', pairs).is_none() {
        return false;
    }
    pairs.split(|&b| b == b'&' || b == b';').any(|pair| {
        let raw_key = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let key: Vec<u8> = form_urlencoded::parse(raw_key)
            .next()
            .map(|(key, _)| key.into_owned().into_bytes())
            .unwrap_or_default();
        let key = key
            .split(|&b| b == 0)
            .next()
            .unwrap_or_default()
            .trim_ascii_start();
        key.eq_ignore_ascii_case(b"_method")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut head = RequestHeader::build("POST", b"/h", None).unwrap();
        for (name, value) in headers {
            head.append_header(name.to_string(), *value).unwrap();
        }
        head
    }

    /// Request headers and a query.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn refusals() {
        let refused: [Case; 16] = [
            (&[("X_Real_IP", "6.6.6.6")], None),
            (&[("Content_Length", "5")], None),
            (&[("X-HTTP-Method-Override", "DELETE")], None),
            (&[("X-Original-URL", "/admin")], None),
            (&[("Connection", "X-Token"), ("X-Token", "t")], None),
            (
                &[
                    ("Connection", "keep-alive, Content-Type"),
                    ("Content-Type", "a/b"),
                ],
                None,
            ),
            (&[], Some("a=1&_method=DELETE")),
            (&[], Some("%5FMETHOD=put")),
            (&[], Some("_me%74hod=DELETE")),
            (&[], Some("%5f%6d%65%74%68%6f%64=DELETE")),
            (&[], Some("+_method=DELETE")),
            (&[], Some("%20_method=DELETE")),
            (&[], Some("_method%00x=DELETE")),
            (&[("X-Original-Method", "DELETE")], None),
            (&[("X-Forwarded-Uri", "/admin")], None),
            (&[("X-Forwarded-Prefix", "/admin")], None),
        ];
        for (headers, query) in refused {
            assert!(
                check(&head(headers), query, false).is_err(),
                "{headers:?} {query:?}"
            );
        }
        // Host and prefix headers are a trusted proxy's to send.
        assert_eq!(
            check(&head(&[("X-Forwarded-Prefix", "/p")]), None, true),
            Ok(())
        );
        assert!(check(&head(&[("X-Original-URL", "/p")]), None, true).is_err());
        let accepted: [Case; 6] = [
            // `Expect` is not forwarded either (README: hop-by-hop headers).
            (
                &[("Connection", "Expect"), ("Expect", "100-continue")],
                None,
            ),
            (
                &[
                    ("X-Real-IP", "1.2.3.4"),
                    ("Content-Type", "application/json"),
                ],
                None,
            ),
            (&[("Connection", "keep-alive, Upgrade, TE")], None),
            (&[("Connection", "close, X-Absent")], None),
            (&[], Some("method=a&x_method=b")),
            (&[], Some("")),
        ];
        for (headers, query) in accepted {
            assert_eq!(
                check(&head(headers), query, false),
                Ok(()),
                "{headers:?} {query:?}"
            );
        }
    }

    #[test]
    fn form_bodies_with_a_method_field() {
        let form = head(&[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )]);
        assert!(check_form_body(&form, b"id=1&_method=DELETE").is_err());
        assert!(check_form_body(&form, b"id=1&%5Fmethod=DELETE").is_err());
        assert_eq!(check_form_body(&form, b"id=1&method=x"), Ok(()));
        let json = head(&[("Content-Type", "application/json")]);
        assert_eq!(check_form_body(&json, b"{\"_method\":\"x\"}"), Ok(()));
    }
}
