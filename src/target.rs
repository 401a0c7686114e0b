//! The request target and the authority as hookgate reads them: one canonical
//! path and one host per request, decided before routing and forwarded exactly
//! as decided, so that the route whose checks ran is the route the app serves.
//!
//! Owns: splitting the request target into its form (RFC 9112 §3.2: origin,
//! absolute, authority, asterisk), the canonical path (RFC 3986 §6.2.2),
//! the path that routes are matched on, the authority rule (absolute-form
//! authority, then `Host`, then HTTP/2 `:authority`; RFC 9112 §3.2.2), and the
//! reasons for refusing what cannot be made unambiguous. Does not own: the
//! route table (`routing`), message framing (`proxy::framing`), the answer.
//!
//! # The canonical path
//! 1. Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!    decoded; every other escape is kept with upper-case hex (RFC 3986 §6.2.2.1–2).
//! 2. Dot segments are removed, `..` stopping at the root (RFC 3986 §5.2.4), after
//!    step 1, so `%2E%2E` is a dot segment too.
//! 3. Repeated slashes are merged (Envoy's `merge_slashes`).
//! 4. A trailing slash is kept in the forwarded path; routes match with or
//!    without it (`routing`).
//!
//! Refused with 400, because common backends disagree on what they mean: an
//! encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, a `;` (path parameters, which
//! Spring and Tomcat strip), an invalid escape, NUL and control characters, a
//! byte outside ASCII (raw or encoded), a fragment. Other characters that
//! RFC 3986 does not allow raw in a path are percent-encoded.
//!
//! The *route path* is the canonical path fully decoded: what the app sees
//! after its own decoding. It is matched without regard to ASCII letter case,
//! as Express and ASP.NET route by default. The query is forwarded as received.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, Version};

/// Why a request target or authority was refused; the text is shown to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Neither a path (origin-form) nor an `http(s)://` URL (absolute-form):
    /// `*` or `host:port` (CONNECT).
    Form,
    Fragment,
    EncodedSlash,
    Backslash,
    PathParameter,
    InvalidEscape,
    Control,
    NonAscii,
    HostMissing,
    HostInvalid,
    /// A `Host` field that is not the absolute-form target's authority (the
    /// head reader, `proxy::request`, finds it).
    HostDiffers,
}

impl TargetError {
    /// What the sender is told, under `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            TargetError::Form => {
                "the request target must be a path or an http(s) URL (RFC 9112 §3.2)"
            }
            TargetError::Fragment => "the request target contains a fragment ('#')",
            TargetError::EncodedSlash => "the path contains an encoded '/' or '\\' (%2F, %5C)",
            TargetError::Backslash => "the path contains a '\\'",
            TargetError::PathParameter => "the path contains a ';' (path parameters)",
            TargetError::InvalidEscape => "the path contains an invalid percent-escape",
            TargetError::Control => "the request target contains a control character",
            TargetError::NonAscii => "the path contains a byte outside ASCII",
            TargetError::HostMissing => "the Host header is missing (RFC 9112 §3.2)",
            TargetError::HostInvalid => "the Host is not a valid host[:port]",
            TargetError::HostDiffers => {
                "the Host header differs from the request target's authority"
            }
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TargetError {}

/// A request target read once: what is routed on, what is forwarded, and what
/// the sender signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// The canonical path, percent-encoded, starting with `/`: forwarded.
    pub path: Cow<'a, str>,
    /// The canonical path decoded: routes are matched on it.
    pub route_path: Cow<'a, str>,
    /// The query after `?`, as received; `None` without a `?`.
    pub query: Option<&'a str>,
    /// The origin-form target as the sender sent it (path and query; for an
    /// absolute-form target, the part after the authority): what URL-signing
    /// providers signed.
    pub received: &'a str,
    /// The authority of an absolute-form target, which wins over `Host`.
    pub absolute_authority: Option<&'a str>,
}

impl RequestTarget<'_> {
    /// The origin-form target to forward: the canonical path and the query.
    pub fn forwarded(&self) -> Cow<'_, str> {
        match self.query {
            None => Cow::Borrowed(&*self.path),
            Some(query) => Cow::Owned(format!("{}?{query}", self.path)),
        }
    }
}

/// Reads a raw request target (`RequestHeader::raw_path()`).
pub fn read_target(raw: &[u8]) -> Result<RequestTarget<'_>, TargetError> {
    let raw = std::str::from_utf8(raw).map_err(|_| TargetError::NonAscii)?;
    let (authority, origin) = if raw.starts_with('/') {
        (None, raw)
    } else if let Some(rest) = strip_prefix_ignore_case(raw, "http://")
        .or_else(|| strip_prefix_ignore_case(raw, "https://"))
    {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (Some(&rest[..end]), &rest[end..])
    } else {
        return Err(TargetError::Form);
    };
    if origin.contains('#') {
        return Err(TargetError::Fragment);
    }
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    };
    if query.is_some_and(|q| q.bytes().any(|b| b.is_ascii_control() || b == b' ')) {
        return Err(TargetError::Control);
    }
    let (path, route_path) = if path.is_empty() {
        // `http://host` and `http://host?q`: the path is `/` (RFC 9112 §3.2.2).
        (Cow::Borrowed("/"), Cow::Borrowed("/"))
    } else {
        canonical_path(path)?
    };
    Ok(RequestTarget {
        path,
        route_path,
        query,
        received: origin,
        absolute_authority: authority,
    })
}

/// `text` without a leading `prefix`, ignoring ASCII case (schemes, and paths
/// as routes match them).
pub fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Characters allowed raw in a path segment and kept as they are: RFC 3986
/// `pchar` without `;` and `%` (`unreserved / sub-delims / ":" / "@"`).
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The canonical path and the route path of `path` (which starts with `/`).
///
/// Returns both borrowed when `path` is already canonical and has no escapes,
/// which is the common case and costs one pass over the bytes.
pub fn canonical_path(path: &str) -> Result<(Cow<'_, str>, Cow<'_, str>), TargetError> {
    debug_assert!(path.starts_with('/'));
    if is_already_canonical(path) {
        return Ok((Cow::Borrowed(path), Cow::Borrowed(path)));
    }
    let mut forwarded: Vec<String> = Vec::new();
    let mut decoded: Vec<String> = Vec::new();
    let mut trailing = false;
    for segment in path[1..].split('/') {
        let (fwd, dec) = decode_segment(segment)?;
        match dec.as_str() {
            "" | "." => trailing = true,
            ".." => {
                forwarded.pop();
                decoded.pop();
                trailing = true;
            }
            _ => {
                forwarded.push(fwd);
                decoded.push(dec);
                trailing = false;
            }
        }
    }
    let join = |segments: &[String]| {
        let mut out = String::with_capacity(path.len());
        for segment in segments {
            out.push('/');
            out.push_str(segment);
        }
        if trailing || segments.is_empty() {
            out.push('/');
        }
        out
    };
    Ok((Cow::Owned(join(&forwarded)), Cow::Owned(join(&decoded))))
}

/// One pass: only plain characters, no empty segment before the last, no dot segment.
fn is_already_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut segment_start = 1;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        if byte == b'/' {
            let segment = &bytes[segment_start..i];
            if matches!(segment, b"" | b"." | b"..") {
                return false;
            }
            segment_start = i + 1;
        } else if !is_plain(byte) {
            return false;
        }
    }
    !matches!(&bytes[segment_start..], b"." | b"..")
}

/// A segment in its forwarded (encoded) and decoded forms.
fn decode_segment(segment: &str) -> Result<(String, String), TargetError> {
    let bytes = segment.as_bytes();
    let mut forwarded = String::with_capacity(bytes.len());
    let mut decoded = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let value = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(TargetError::InvalidEscape)?;
            i += 3;
            check_byte(value, true)?;
            if is_unreserved(value) {
                forwarded.push(value as char);
            } else {
                forwarded.push_str(&format!("%{value:02X}"));
            }
            decoded.push(value as char);
            continue;
        }
        check_byte(byte, false)?;
        if is_plain(byte) {
            forwarded.push(byte as char);
        } else {
            forwarded.push_str(&format!("%{byte:02X}"));
        }
        decoded.push(byte as char);
        i += 1;
    }
    Ok((forwarded, decoded))
}

/// The bytes no path may carry, raw or (`encoded`) percent-escaped.
fn check_byte(byte: u8, encoded: bool) -> Result<(), TargetError> {
    match byte {
        b'/' if encoded => Err(TargetError::EncodedSlash),
        b'\\' if encoded => Err(TargetError::EncodedSlash),
        b'\\' => Err(TargetError::Backslash),
        b';' => Err(TargetError::PathParameter),
        b'#' if !encoded => Err(TargetError::Fragment),
        0x80.. => Err(TargetError::NonAscii),
        _ if byte.is_ascii_control() || (byte == b' ' && !encoded) => Err(TargetError::Control),
        _ => Ok(()),
    }
}

/// The host a request is for (lower-case, without a trailing dot) and the
/// authority to forward in `Host` (that host and the port as received), kept
/// in one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    header: String,
    host_len: usize,
}

impl Authority {
    /// `example.com`, `127.0.0.1`, `[::1]`: matched against route hosts.
    pub fn host(&self) -> &str {
        &self.header[..self.host_len]
    }

    /// `host[:port]`, canonical: sent upstream as `Host`.
    pub fn header(&self) -> &str {
        &self.header
    }
}

/// `a.b.c.d`, each a decimal from 0 to 255 without leading zeros. One pass
/// over the bytes (a `split('.')` cost ~500 instructions per request).
fn is_dotted_quad(name: &str) -> bool {
    let (mut octets, mut value, mut digits, mut leading_zero) = (0u8, 0u16, 0u8, false);
    for &b in name.as_bytes() {
        match b {
            b'0'..=b'9' => {
                if digits == 3 || leading_zero {
                    return false;
                }
                leading_zero = digits == 0 && b == b'0';
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' => {
                if digits == 0 || value > 255 || octets == 3 {
                    return false;
                }
                octets += 1;
                (value, digits, leading_zero) = (0, 0, false);
            }
            _ => return false,
        }
    }
    octets == 3 && digits > 0 && value <= 255
}

/// The request's authority by one rule: the absolute-form target's authority,
/// then the `Host` header, then HTTP/2's `:authority` (RFC 9112 §3.2.2,
/// RFC 9113 §8.3.1). `Ok(None)` for an empty `Host` or an HTTP/1.0 request
/// without one; an HTTP/1.1 request without `Host` is refused, whatever its
/// target's form (RFC 9112 §3.2).
/// The head reader (`proxy::request`) has already refused several `Host`
/// fields and a `Host` that differs from the target's authority
/// ([`TargetError::HostDiffers`]).
pub fn read_authority(
    target: &RequestTarget<'_>,
    headers: &HeaderMap,
    uri_authority: Option<&str>,
    version: Version,
) -> Result<Option<Authority>, TargetError> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::HostInvalid);
    }
    let text = match (target.absolute_authority, host_header, uri_authority) {
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without
        // `Host`, an absolute-form target included.
        (Some(_), None, _) if version == Version::HTTP_11 => return Err(TargetError::HostMissing),
        (Some(authority), _, _) => authority,
        // RFC 9110 §4.2.1: an `http` URI with an empty host is invalid; only
        // HTTP/1.0 may leave the authority out (an empty `Host`, as none).
        (None, Some(value), _) if value.is_empty() && version == Version::HTTP_11 => {
            return Err(TargetError::HostInvalid)
        }
        (None, Some(value), _) => value.to_str().map_err(|_| TargetError::HostInvalid)?,
        (None, None, Some(authority)) => authority,
        (None, None, None) if version == Version::HTTP_11 => return Err(TargetError::HostMissing),
        (None, None, None) => return Ok(None),
    };
    parse_authority(text)
}

/// Whether `text` is a non-empty `host[:port]` this module accepts (the rules of
/// [`read_authority`]).
pub fn is_valid_authority(text: &str) -> bool {
    matches!(parse_authority(text), Ok(Some(_)))
}

/// Parses `host[:port]` (RFC 3986 §3.2.2–3): a registered name of letters,
/// digits, `-`, `.` and `_`, an IPv4 address, or an IPv6 literal in brackets.
fn parse_authority(text: &str) -> Result<Option<Authority>, TargetError> {
    if text.is_empty() {
        return Ok(None);
    }
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']').ok_or(TargetError::HostInvalid)?;
        let literal = &text[1..end];
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::HostInvalid);
        }
        (&text[..=end], &text[end + 1..])
    } else {
        match text.find(':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, ""),
        }
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return Err(TargetError::HostInvalid),
        // `host:` has an empty port (RFC 3986 §3.2.3): the same as none.
        Some("") => None,
        Some(digits) => {
            let valid = digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok();
            if !valid {
                return Err(TargetError::HostInvalid);
            }
            // One spelling per port: `:0080` is `:80`.
            let digits = digits.trim_start_matches('0');
            Some(if digits.is_empty() { "0" } else { digits })
        }
    };
    let host = if host.starts_with('[') {
        // One spelling per address: `[::FFFF:127.0.0.1]` is `[::ffff:127.0.0.1]`.
        let literal: std::net::Ipv6Addr = host[1..host.len() - 1]
            .parse()
            .map_err(|_| TargetError::HostInvalid)?;
        // `[::ffff:127.0.0.1]` and `[::127.0.0.1]` are 127.0.0.1 to apps that
        // compare addresses (Go's `net.IP.Equal`): one spelling, the IPv4 one.
        let segments = literal.segments();
        let embeds_ipv4 =
            literal.to_ipv4_mapped().is_some() || (segments[..6] == [0; 6] && segments[6] != 0);
        if embeds_ipv4 {
            return Err(TargetError::HostInvalid);
        }
        format!("[{literal}]")
    } else {
        let name = host.strip_suffix('.').unwrap_or(host);
        if !is_registered_name(name) {
            return Err(TargetError::HostInvalid);
        }
        // A name whose last label is numeric is an IPv4 address to every URL
        // parser (WHATWG), which also reads `127.1`, `0x7f.0.0.1` and
        // `2130706433` as 127.0.0.1: only the dotted-quad spelling is taken.
        let last = name.rsplit('.').next().unwrap_or(name);
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
        if numeric && !is_dotted_quad(name) {
            return Err(TargetError::HostInvalid);
        }
        // Room for the port, so the header is built in this one allocation.
        let mut lower = String::with_capacity(text.len());
        lower.push_str(name);
        lower.make_ascii_lowercase();
        lower
    };
    let host_len = host.len();
    let mut header = host;
    if let Some(port) = port {
        header.push(':');
        header.push_str(port);
    }
    Ok(Some(Authority { header, host_len }))
}

/// Letters, digits, `-` and `_` in labels separated by single dots, neither
/// first nor last (RFC 3986 §3.2.2 reg-name, as DNS names are written): one
/// pass over the bytes.
fn is_registered_name(name: &str) -> bool {
    let mut previous = b'.';
    for byte in name.bytes() {
        let allowed = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_')
            || (byte == b'.' && previous != b'.');
        if !allowed {
            return false;
        }
        previous = byte;
    }
    !name.is_empty() && previous != b'.'
}

#[cfg(test)]
mod tests;
