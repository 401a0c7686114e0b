//! Message framing: one reading of where an HTTP/1.1 request's body ends,
//! checked on the head before anything else is decided.
//!
//! Owns: refusing heads whose framing a proxy in front of hookgate could read
//! differently (RFC 9112 §6.1 and §6.3, the request-smuggling classics). Does
//! not own: the head reader (`request`: it already refuses obs-fold, NUL, CR or
//! LF inside a value, invalid names, several differing `Content-Length` values
//! and `Transfer-Encoding` on HTTP/1.0), reading the body (`body`), or closing
//! the connection (every refusal from here is answered with `Connection: close`).
//!
//! Refused, with the reason the sender sees:
//! - `Transfer-Encoding` other than exactly one `chunked` (`gzip, chunked`,
//!   `chunked, chunked`, two fields, `xchunked`);
//! - `Transfer-Encoding` together with `Content-Length`, in either order (read
//!   on the raw head, as a field line);
//! - `Content-Length` that is not one plain decimal number (`4, 4`, `+4`, two fields);
//! - a line of the head ended by a bare LF instead of CRLF;
//! - a `#` in the request line (a fragment: the URI parser drops it, a proxy in
//!   front might not).

use super::downstream::Downstream;

/// Checks the framing of the request head `session` has read.
///
/// # Errors
/// The reason to show the sender (never a header value).
pub fn check(session: &Downstream) -> Result<(), &'static str> {
    // HTTP/2 frames bodies itself and forbids Transfer-Encoding (RFC 9113 §8.2.2).
    let Some(raw) = session.raw_head() else {
        return Ok(());
    };
    let headers = &session.req_header().headers;
    let mut encodings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(encoding) = encodings.next() {
        if encodings.next().is_some()
            || !encoding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err("Transfer-Encoding must be exactly \"chunked\"");
        }
        if has_content_length_line(raw) {
            return Err("both Content-Length and Transfer-Encoding");
        }
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        if lengths.next().is_some() {
            return Err("several Content-Length fields");
        }
        let digits = length.as_bytes();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length is not a decimal number");
        }
    }
    if has_bare_lf(raw) {
        return Err("a line of the request head ends in a bare LF, not CRLF");
    }
    let request_line = &raw[..memchr::memchr(b'\n', raw).unwrap_or(raw.len())];
    if memchr::memchr(b'#', request_line).is_some() {
        return Err("the request target contains a fragment ('#')");
    }
    Ok(())
}

/// Whether the raw head has a `Content-Length` field line.
fn has_content_length_line(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    memchr::memchr_iter(b'\n', raw).any(|end| {
        let line = &raw[end + 1..];
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && matches!(line[NAME.len()], b':' | b' ' | b'\t')
    })
}

/// Whether a `\n` in the raw head is not preceded by `\r`.
fn has_bare_lf(raw: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', raw).any(|at| at == 0 || raw[at - 1] != b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_lines_in_raw_heads() {
        let cases: [(&[u8], bool); 5] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\ncontent-LENGTH:4\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Lengthy: 4\r\n\r\n", false),
            (b"POST /Content-Length: HTTP/1.1\r\n\r\n", false),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                has_content_length_line(raw),
                expected,
                "{:?}",
                raw.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn bare_line_feeds() {
        assert!(!has_bare_lf(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"POST / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"POST / HTTP/1.1\r\nHost: a\r\n\n"));
    }
}
