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
//!   `X-HTTP-Method`, `X-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`)
//!   and a `_method` query parameter: Rails, Laravel, Symfony and IIS act on
//!   them, so the app would run another handler than the route that was checked;
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
    "x-original-url",
    "x-rewrite-url",
];

/// Checks the request's header names, override headers and parameters, and `Connection`.
///
/// # Errors
/// The reason to show the sender (never a header value).
pub fn check(head: &RequestHeader, query: Option<&str>) -> Result<(), &'static str> {
    for name in head.headers.keys() {
        let name = name.as_str();
        if name.contains('_') {
            return Err("a header name contains '_', which backends read as '-'");
        }
        if OVERRIDES.contains(&name) {
            return Err("method and URL override headers are not accepted");
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
                ) || matches!(name.as_str(), "keep-alive" | "close" | "proxy-connection");
            if !hop_by_hop && head.headers.contains_key(&name) {
                return Err("Connection lists an end-to-end header of the request");
            }
        }
    }
    Ok(())
}

/// Whether a query has a `_method` parameter (any letter case, raw or as `%5F`).
fn has_method_parameter(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        key.eq_ignore_ascii_case("_method") || key.eq_ignore_ascii_case("%5Fmethod")
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
        let refused: [Case; 8] = [
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
        ];
        for (headers, query) in refused {
            assert!(
                check(&head(headers), query).is_err(),
                "{headers:?} {query:?}"
            );
        }
        let accepted: [Case; 5] = [
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
                check(&head(headers), query),
                Ok(()),
                "{headers:?} {query:?}"
            );
        }
    }
}
