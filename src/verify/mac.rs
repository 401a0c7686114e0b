//! Keyed MAC states: the hash algorithms the schemes use and an HMAC whose key schedule is
//! computed once per secret and cloned per request.
//!
//! Owns only the primitive; what is fed into it is the schemes' business.

use std::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// Largest MAC output of any supported algorithm (SHA-512).
pub(super) const MAX_MAC: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "HMAC-SHA1",
            Algorithm::Sha256 => "HMAC-SHA256",
            Algorithm::Sha512 => "HMAC-SHA512",
        }
    }

    /// MAC length in bytes.
    pub(super) fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// An HMAC with its key already absorbed. Clone it per request (a copy of the inner and outer
/// hash states, no allocation), feed it, finalize it.
#[derive(Clone)]
pub(super) enum KeyedMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl KeyedMac {
    pub(super) fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC accepts keys of any length (long keys are hashed), so these cannot fail.
        const ANY_LENGTH: &str = "HMAC accepts keys of any length";
        match algorithm {
            Algorithm::Sha1 => KeyedMac::Sha1(Hmac::new_from_slice(key).expect(ANY_LENGTH)),
            Algorithm::Sha256 => KeyedMac::Sha256(Hmac::new_from_slice(key).expect(ANY_LENGTH)),
            Algorithm::Sha512 => KeyedMac::Sha512(Hmac::new_from_slice(key).expect(ANY_LENGTH)),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            KeyedMac::Sha1(m) => m.update(data),
            KeyedMac::Sha256(m) => m.update(data),
            KeyedMac::Sha512(m) => m.update(data),
        }
    }

    pub(super) fn finalize(self) -> Digest {
        let mut out = Digest {
            bytes: [0; MAX_MAC],
            len: 0,
        };
        let mut put = |tag: &[u8]| {
            out.bytes[..tag.len()].copy_from_slice(tag);
            out.len = tag.len();
        };
        match self {
            KeyedMac::Sha1(m) => put(&m.finalize().into_bytes()),
            KeyedMac::Sha256(m) => put(&m.finalize().into_bytes()),
            KeyedMac::Sha512(m) => put(&m.finalize().into_bytes()),
        }
        out
    }
}

impl fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            KeyedMac::Sha1(_) => "sha1",
            KeyedMac::Sha256(_) => "sha256",
            KeyedMac::Sha512(_) => "sha512",
        };
        write!(f, "KeyedMac({name}, [redacted])")
    }
}

/// A finished MAC on the stack.
pub(super) struct Digest {
    bytes: [u8; MAX_MAC],
    len: usize,
}

impl Digest {
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_and_clone_reuse() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let keyed = KeyedMac::new(Algorithm::Sha256, b"Jefe");
        for _ in 0..2 {
            let mut m = keyed.clone();
            m.update(b"what do ya ");
            m.update(b"want for nothing?");
            assert_eq!(
                hex::encode(m.finalize().as_slice()),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            );
        }
        let mut m = KeyedMac::new(Algorithm::Sha512, b"Jefe");
        m.update(b"what do ya want for nothing?");
        assert!(hex::encode(m.finalize().as_slice()).starts_with("164b7a7bfcf819e2"));
    }

    #[test]
    fn debug_redacts() {
        let m = KeyedMac::new(Algorithm::Sha1, b"hunter2");
        assert_eq!(format!("{m:?}"), "KeyedMac(sha1, [redacted])");
    }
}
