//! Reading signature material off the wire: single-valued header lookup, hex/base64 decoding
//! of provided signatures into stack buffers, and constant-time matching against a MAC.
//!
//! Owns no scheme knowledge: which header, which prefix, which version is the schemes' call.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use subtle::{Choice, ConstantTimeEq};

use super::mac::MAX_MAC;
use super::{malformed, missing, VerifyError};

/// Most signatures accepted in one header (rotation sends two or three).
pub(super) const MAX_SIGS: usize = 8;

/// The single value of `name`, trimmed. Missing when absent or empty; malformed when sent
/// more than once or not visible ASCII.
pub(super) fn header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a str, VerifyError> {
    optional_header(headers, name)?.ok_or_else(|| missing(format!("header {name} absent")))
}

/// Like [`header`], but `Ok(None)` when absent or empty.
pub(super) fn optional_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(format!("header {name} sent more than once")));
    }
    let text = first
        .to_str()
        .map_err(|_| malformed(format!("header {name} is not visible ASCII")))?
        .trim();
    Ok((!text.is_empty()).then_some(text))
}

/// How a MAC is written in a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Hex, either case.
    Hex,
    /// Standard alphabet with canonical padding.
    Base64,
}

impl Encoding {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        match name {
            "hex" => Some(Encoding::Hex),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }

    /// Decodes `text` into `out[..len]`; false unless it is exactly `len` bytes.
    pub(super) fn decode(self, text: &str, len: usize, out: &mut [u8; MAX_MAC]) -> bool {
        if len > MAX_MAC {
            return false;
        }
        match self {
            // The length first: the decoder would also take a `0x` prefix.
            Encoding::Hex => {
                text.len() == 2 * len && hex::decode_to_slice(text, &mut out[..len]).is_ok()
            }
            Encoding::Base64 => {
                // 96 bytes is the decoder's estimate for 128 characters; longer cannot be ours.
                let mut scratch = [0u8; 96];
                if text.len() > 128 {
                    return false;
                }
                match STANDARD.decode_slice(text, &mut scratch) {
                    Ok(n) if n == len => {
                        out[..len].copy_from_slice(&scratch[..len]);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    pub(super) fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => STANDARD.encode(bytes),
        }
    }
}

/// Provided signatures, decoded, all of one length, on the stack.
pub(super) struct SigList {
    items: [[u8; MAX_MAC]; MAX_SIGS],
    count: usize,
    len: usize,
}

impl SigList {
    pub(super) fn new(len: usize) -> Self {
        SigList {
            items: [[0; MAX_MAC]; MAX_SIGS],
            count: 0,
            len,
        }
    }

    /// Decodes and keeps `text`. `Ok(false)` if it does not decode to a MAC of the right
    /// length; malformed when more than [`MAX_SIGS`] are given.
    pub(super) fn push(&mut self, encoding: Encoding, text: &str) -> Result<bool, VerifyError> {
        if self.count == MAX_SIGS {
            return Err(malformed(format!(
                "more than {MAX_SIGS} signatures in one header"
            )));
        }
        let ok = encoding.decode(text, self.len, &mut self.items[self.count]);
        if ok {
            self.count += 1;
        }
        Ok(ok)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True if any signature equals `mac`. Constant time in the contents, and every entry is
    /// compared (no early exit).
    pub(super) fn matches(&self, mac: &[u8]) -> bool {
        if mac.len() != self.len {
            return false;
        }
        let mut found = Choice::from(0);
        for item in &self.items[..self.count] {
            found |= item[..self.len].ct_eq(mac);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn header_rules() {
        let name = HeaderName::from_static("x-sig");
        let mut h = HeaderMap::new();
        assert_eq!(header(&h, &name).unwrap_err().reason(), "missing");
        h.insert(&name, HeaderValue::from_static("  "));
        assert_eq!(header(&h, &name).unwrap_err().reason(), "missing");
        h.insert(&name, HeaderValue::from_static(" abc "));
        assert_eq!(header(&h, &name).unwrap(), "abc");
        h.append(&name, HeaderValue::from_static("def"));
        assert_eq!(header(&h, &name).unwrap_err().reason(), "malformed");
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(header(&h, &name).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn decoding_table() {
        let mut out = [0u8; MAX_MAC];
        let table: &[(Encoding, &str, usize, bool)] = &[
            (Encoding::Hex, "00ff", 2, true),
            (Encoding::Hex, "00FF", 2, true),
            (Encoding::Hex, "00f", 2, false),
            (Encoding::Hex, "00fg", 2, false),
            (Encoding::Hex, "00ff00", 2, false),
            // A `0x` prefix is not hex digits, at either length.
            (Encoding::Hex, "0x00ff", 2, false),
            (Encoding::Hex, "0x00", 1, false),
            (Encoding::Hex, "0x00ff", 3, false),
            // Longer than the SIMD decoder's blocks, with an error in the last one.
            (Encoding::Hex, &"ab".repeat(32), 32, true),
            (Encoding::Hex, &format!("{}g", "a".repeat(63)), 32, false),
            (Encoding::Base64, "AP8=", 2, true),
            (Encoding::Base64, "AP8", 2, false),
            (Encoding::Base64, "AP9=", 2, false), // non-canonical trailing bits
            (Encoding::Base64, "AP8=", 3, false),
            (Encoding::Base64, "é", 2, false),
            (Encoding::Hex, "", 0, true),
        ];
        for &(enc, text, len, ok) in table {
            assert_eq!(
                enc.decode(text, len, &mut out),
                ok,
                "{enc:?} {text:?} {len}"
            );
        }
        let long = "A".repeat(4000);
        assert!(!Encoding::Base64.decode(&long, 32, &mut out));
    }

    #[test]
    fn siglist_matches_any_and_caps() {
        let mut list = SigList::new(2);
        assert!(list.push(Encoding::Hex, "0000").unwrap());
        assert!(!list.push(Encoding::Hex, "zz").unwrap());
        assert!(list.push(Encoding::Hex, "abcd").unwrap());
        assert!(list.matches(&[0xab, 0xcd]));
        assert!(!list.matches(&[0xab, 0xce]));
        assert!(!list.matches(&[0xab]));
        for _ in 2..MAX_SIGS {
            list.push(Encoding::Hex, "0101").unwrap();
        }
        assert_eq!(
            list.push(Encoding::Hex, "0101").unwrap_err().reason(),
            "malformed"
        );
    }
}
