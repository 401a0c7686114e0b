//! Content codings of request bodies (RFC 9110 §8.4): reading `Content-Encoding`, and
//! decoding `gzip`, `deflate` and `br` with a hard cap on the decoded size.
//!
//! Owns: the one reading of `Content-Encoding` ([`read`]) and the decoders ([`decode`]), each
//! strict, so that what hookgate reads is what any conforming app decodes from the same bytes:
//! - one coding at most: `identity` alone is no coding; a list of several (`gzip, br`, or two
//!   `Content-Encoding` lines) is refused as [`CodingError::Stacked`] (415), because apps
//!   differ on them (Express's `body-parser` and most SDK helpers take exactly one name, others
//!   undo them all) and every extra layer multiplies a compression bomb;
//! - an empty list member or a byte outside a token is [`CodingError::Malformed`] (400):
//!   RFC 9110 §5.6.1.2 asks recipients to skip empty members, apps that compare the whole
//!   value do not;
//! - `gzip` (and its alias `x-gzip`, RFC 9110 §8.4.1.3) is one RFC 1952 member whose CRC-32
//!   and length trailer must match; `deflate` is the zlib format (RFC 1950, RFC 9110 §8.4.1.2)
//!   only, never raw deflate; `br` is RFC 7932 Brotli with the standard window (at most
//!   16 MiB), not the large-window extension;
//! - a stream that ends early, or bytes after the end of the stream (a second gzip member
//!   included: Go and Node read it, Python's `zlib` does not), is [`DecodeError::Corrupt`].
//!
//! The decoded size is capped while decoding: output stops one byte past the cap, so a bomb
//! costs at most `limit + 1` bytes of memory (plus Brotli's window) and the CPU to produce
//! them. Does not own: when a body is decoded (the proxy's step 5 decodes only for a route
//! that reads the body), the answers (`proxy::reply`), or the cap's configuration (`config`:
//! `max_decoded_body`).

use flate2::{Decompress, FlushDecompress, Status};
use http::HeaderMap;

/// A content coding hookgate can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// RFC 9110 §8.4.1.3 (RFC 1952); also spelled `x-gzip`.
    Gzip,
    /// RFC 9110 §8.4.1.2: the zlib format (RFC 1950) around deflate data (RFC 1951).
    Deflate,
    /// RFC 7932 Brotli (registered as `br`).
    Brotli,
}

impl Coding {
    /// The coding's registered name, also the `coding` metric label: `gzip` | `deflate` | `br`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of a `415` answer's `Accept-Encoding` (RFC 9110 §12.5.3, §15.5.16).
pub const ACCEPTED: &str = "gzip, deflate, br";

/// Why `Content-Encoding` cannot be read. The `Display` texts are shown to the sender: they
/// never repeat the header's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    /// A coding hookgate does not decode (`compress`, `zstd`, …). 415.
    #[error("this Content-Encoding is not supported; send gzip, deflate (zlib) or br")]
    Unsupported,
    /// Several codings, applied in order. 415.
    #[error("Content-Encoding lists several codings; send at most one")]
    Stacked,
    /// An empty member, or a byte that cannot be in a coding name. 400.
    #[error("Content-Encoding is malformed (an empty member or a character outside a token)")]
    Malformed,
}

impl CodingError {
    /// The `result` metric label of a refused header (its `coding` label is `other`):
    /// `unsupported` (unknown or several codings) | `malformed`.
    pub fn label(&self) -> &'static str {
        match self {
            CodingError::Unsupported | CodingError::Stacked => "unsupported",
            CodingError::Malformed => "malformed",
        }
    }
}

/// The coding `headers` declare: `None` without `Content-Encoding` or for `identity` alone.
///
/// Every `Content-Encoding` line is one comma-separated list (RFC 9110 §5.3); names are
/// case-insensitive, with optional blanks around commas.
///
/// # Errors
/// [`CodingError`]: several codings, an unknown one, or a malformed list.
pub fn read(headers: &HeaderMap) -> Result<Option<Coding>, CodingError> {
    let (mut members, mut coding, mut unknown) = (0usize, None, false);
    for line in headers.get_all(http::header::CONTENT_ENCODING) {
        for member in line.as_bytes().split(|&b| b == b',') {
            let name = member.trim_ascii();
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(CodingError::Malformed);
            }
            members += 1;
            if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
                coding = Some(Coding::Gzip);
            } else if name.eq_ignore_ascii_case(b"deflate") {
                coding = Some(Coding::Deflate);
            } else if name.eq_ignore_ascii_case(b"br") {
                coding = Some(Coding::Brotli);
            } else if !name.eq_ignore_ascii_case(b"identity") {
                unknown = true;
            }
        }
    }
    match (members, unknown) {
        (0 | 1, false) => Ok(coding),
        (0 | 1, true) => Err(CodingError::Unsupported),
        _ => Err(CodingError::Stacked),
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More than `limit` decoded bytes; decoding stopped there. 413.
    #[error("the decoded body is over max_decoded_body ({limit} bytes)")]
    TooLarge { limit: u64 },
    /// Not a valid stream of the coding. 400. `why` is fixed text (shown to the sender);
    /// `detail`, the decoder's own message when it gives one, is for the log.
    #[error("the {coding} body is corrupt: {why}")]
    Corrupt {
        coding: Coding,
        why: &'static str,
        detail: Option<String>,
    },
}

impl DecodeError {
    /// The `result` metric label: `too_large` | `corrupt`.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Corrupt { .. } => "corrupt",
        }
    }
}

const TRUNCATED: &str = "the stream ends before its end marker";
const TRAILING: &str = "bytes follow the end of the stream";
const INVALID: &str = "invalid compressed data";

/// Output grows in steps of at least this much (and at most doubles).
const MIN_GROWTH: usize = 16 * 1024;

/// Decodes `body` (the whole of it, exactly one stream) as `coding`, refusing more than
/// `limit` decoded bytes.
///
/// # Errors
/// [`DecodeError::TooLarge`] as soon as the output passes `limit`; [`DecodeError::Corrupt`]
/// for invalid data (a bad header, block or checksum), a stream cut short, or bytes after it.
pub fn decode(coding: Coding, body: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    // One byte past the cap tells "over" from "exactly at".
    let ceiling = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    // Webhook JSON compresses 5–10×: start there, within the ceiling.
    let initial = body.len().saturating_mul(4).max(MIN_GROWTH).min(ceiling);
    match coding {
        Coding::Gzip => inflate(
            coding,
            Decompress::new_gzip(15),
            body,
            initial,
            ceiling,
            limit,
        ),
        Coding::Deflate => inflate(coding, Decompress::new(true), body, initial, ceiling, limit),
        Coding::Brotli => brotli(body, initial, ceiling, limit),
    }
}

fn corrupt(coding: Coding, why: &'static str, detail: Option<String>) -> DecodeError {
    DecodeError::Corrupt {
        coding,
        why,
        detail,
    }
}

/// Whether `out` may grow: `Err` when it already holds more than `limit` bytes.
fn grow(out: &mut Vec<u8>, ceiling: usize, limit: u64) -> Result<(), DecodeError> {
    if out.len() >= ceiling {
        return Err(DecodeError::TooLarge { limit });
    }
    let step = out.capacity().max(MIN_GROWTH).min(ceiling - out.len());
    out.reserve_exact(step);
    Ok(())
}

/// gzip and zlib through zlib's inflate, which checks the header and the trailer's checksum
/// (CRC-32 and length for gzip, Adler-32 for zlib).
fn inflate(
    coding: Coding,
    mut inflater: Decompress,
    body: &[u8],
    initial: usize,
    ceiling: usize,
    limit: u64,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(initial);
    loop {
        if out.len() == out.capacity() {
            grow(&mut out, ceiling, limit)?;
        }
        let consumed = consumed(&inflater);
        let (in_before, out_before) = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(&body[consumed..], &mut out, FlushDecompress::None)
            .map_err(|e| corrupt(coding, INVALID, e.message().map(str::to_string)))?;
        if status == Status::StreamEnd {
            break;
        }
        let progressed = inflater.total_in() != in_before || out.len() != out_before;
        if !progressed && out.len() < out.capacity() {
            // Room to write, and nothing more to read: the input ended inside the stream.
            return Err(corrupt(coding, TRUNCATED, None));
        }
    }
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    if consumed(&inflater) != body.len() {
        return Err(corrupt(coding, TRAILING, None));
    }
    Ok(out)
}

fn consumed(inflater: &Decompress) -> usize {
    usize::try_from(inflater.total_in()).unwrap_or(usize::MAX)
}

/// Brotli through `brotli-decompressor`'s streaming decoder, with the RFC 7932 window only.
fn brotli(body: &[u8], initial: usize, ceiling: usize, limit: u64) -> Result<Vec<u8>, DecodeError> {
    use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
    let mut state = BrotliState::new_strict(
        StandardAlloc::default(),
        StandardAlloc::default(),
        StandardAlloc::default(),
    );
    let mut out = vec![0u8; initial];
    let (mut available_in, mut input_offset) = (body.len(), 0usize);
    let (mut output_offset, mut total_out) = (0usize, 0usize);
    loop {
        let mut available_out = out.len() - output_offset;
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut input_offset,
            body,
            &mut available_out,
            &mut output_offset,
            &mut out,
            &mut total_out,
            &mut state,
        );
        match result {
            BrotliResult::ResultSuccess => break,
            BrotliResult::NeedsMoreOutput => {
                if out.len() >= ceiling {
                    return Err(DecodeError::TooLarge { limit });
                }
                let step = out.len().max(MIN_GROWTH).min(ceiling - out.len());
                out.resize(out.len() + step, 0);
            }
            BrotliResult::NeedsMoreInput => {
                return Err(corrupt(Coding::Brotli, TRUNCATED, None));
            }
            BrotliResult::ResultFailure => {
                return Err(corrupt(Coding::Brotli, INVALID, None));
            }
        }
    }
    out.truncate(output_offset);
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    if available_in != 0 {
        return Err(corrupt(Coding::Brotli, TRAILING, None));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
