//! Discord interactions and webhook events: `X-Signature-Ed25519` = hex of an Ed25519
//! signature by the application's key over `X-Signature-Timestamp` + raw body, checked with
//! the application's public key (`public_key`, hex; or a `${ENV}`/`file:` reference). Discord
//! deliberately sends bad signatures to check that endpoints answer 401.
//!
//! Verification is `verify_strict` (rejects malleable signatures and small-order points);
//! weak public keys are refused at compile time. Strict verification takes the message in one
//! piece, so timestamp+body is copied once per request (small next to the Ed25519 cost).
//! Discord documents no window; we apply ±5 minutes as gateway policy (`tolerance`).
//! The gateway holds no private key, so it cannot sign (`hookgate sign` says so).

use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};
use http::HeaderName;

use super::clock::{self, TimestampFormat};
use super::compile::Cx;
use super::mac::MAX_MAC;
use super::wire::{self, Encoding};
use super::{malformed, mismatch, Request, VerifyError};

pub(super) const CANNOT_SIGN: &str =
    "discord deliveries are signed with Discord's private key; the gateway has only the public key, so it cannot sign a test delivery";

const SIGNATURE: HeaderName = HeaderName::from_static("x-signature-ed25519");
const TIMESTAMP: HeaderName = HeaderName::from_static("x-signature-timestamp");

pub(super) struct Discord {
    key: VerifyingKey,
    tolerance: Duration,
}

impl Discord {
    pub(super) fn verify(&self, request: &Request<'_>, now: SystemTime) -> Result<(), VerifyError> {
        let signature = wire::header(request.headers, &SIGNATURE)?;
        let timestamp = wire::header(request.headers, &TIMESTAMP)?;
        let mut bytes = [0u8; MAX_MAC];
        if !Encoding::Hex.decode(signature, 64, &mut bytes) {
            return Err(malformed(format!(
                "header {SIGNATURE} is not 128 hex digits"
            )));
        }
        let ts = TimestampFormat::UnixSeconds
            .parse(timestamp)
            .ok_or_else(|| malformed(format!("header {TIMESTAMP} is not integer Unix seconds")))?;
        clock::check_window(ts, now, self.tolerance)?;
        let signature = Signature::from_bytes(&bytes);
        let mut message = Vec::with_capacity(timestamp.len() + request.body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(request.body);
        self.key.verify_strict(&message, &signature).map_err(|_| {
            mismatch("Ed25519 signature does not verify under the application's public key")
        })
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<Discord> {
    cx.allow_only(&["public_key", "tolerance"]);
    cx.no_secrets("set public_key to the application's public key");
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let Some(reference) = cx.spec.public_key.clone() else {
        cx.problem(
            "public_key",
            "set public_key to the application's Public Key, 64 hex digits (Developer Portal → your app → General Information)",
        );
        return None;
    };
    let text = if reference.starts_with("${") || reference.starts_with("file:") {
        match cx.resolve(&reference) {
            Ok(secret) => String::from_utf8_lossy(secret.expose()).trim().to_string(),
            Err(e) => {
                cx.problem("public_key", e);
                return None;
            }
        }
    } else {
        reference.trim().to_string()
    };
    let mut bytes = [0u8; 32];
    // The length first: the decoder would also take a `0x` prefix.
    let key = (text.len() == 64)
        .then(|| hex::decode_to_slice(&text, &mut bytes).ok())
        .flatten()
        .and_then(|()| VerifyingKey::from_bytes(&bytes).ok());
    match key {
        Some(key) if !key.is_weak() => Some(Discord { key, tolerance }),
        Some(_) => {
            cx.problem("public_key", "is a weak (small-order) key that anyone could sign for; use the application's Public Key");
            None
        }
        None => {
            cx.problem(
                "public_key",
                "is not an Ed25519 public key: expected 64 hex digits (Developer Portal → your app → General Information → Public Key)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use ed25519_dalek::{Signer, SigningKey};

    // RFC 8032 §7.1 TEST 1.
    const SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn signed(ts: &str, body: &[u8]) -> Msg {
        let mut sk = [0u8; 32];
        hex::decode_to_slice(SECRET, &mut sk).unwrap();
        let key = SigningKey::from_bytes(&sk);
        let mut message = ts.as_bytes().to_vec();
        message.extend_from_slice(body);
        let sig = key.sign(&message);
        Msg::post("/discord", body)
            .header("X-Signature-Ed25519", &hex::encode(sig.to_bytes()))
            .header("X-Signature-Timestamp", ts)
    }

    #[test]
    fn checks() {
        let v = compile(&format!("scheme = \"discord\"\npublic_key = \"{PUBLIC}\""));
        let ts = NOW.to_string();
        let m = signed(&ts, b"{\"type\":1}");
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let mut tampered = m.clone();
        tampered.body = b"{\"type\":2}".to_vec();
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
        let mut other_ts = m.clone();
        other_ts.set("X-Signature-Timestamp", &(NOW + 1).to_string());
        assert_eq!(reason(other_ts.verify(&v, NOW)), "mismatch");
        assert_eq!(reason(m.verify(&v, NOW + 301)), "expired");
        assert_eq!(reason(m.verify(&v, NOW - 301)), "expired");
        let mut garbage = m.clone();
        garbage.set("X-Signature-Ed25519", &"z".repeat(128));
        assert_eq!(reason(garbage.verify(&v, NOW)), "malformed");
        let mut short = m.clone();
        short.set("X-Signature-Ed25519", "00");
        assert_eq!(reason(short.verify(&v, NOW)), "malformed");
        for h in ["x-signature-ed25519", "x-signature-timestamp"] {
            let mut missing = m.clone();
            missing.headers.remove(h);
            assert_eq!(reason(missing.verify(&v, NOW)), "missing", "{h}");
        }
        let err = v.sign(&m.request(), at(NOW)).unwrap_err();
        assert!(err.contains("cannot sign"));
    }

    #[test]
    fn compile_errors() {
        assert_problem("scheme = \"discord\"", "public_key", "64 hex digits");
        assert_problem(
            "scheme = \"discord\"\npublic_key = \"abcd\"",
            "public_key",
            "not an Ed25519 public key",
        );
        assert_problem(
            &format!("scheme = \"discord\"\npublic_key = \"{PUBLIC}\"\nsecrets = [\"${{A}}\"]"),
            "secrets",
            "remove secrets",
        );
        // The identity point is small-order.
        assert_problem(
            &format!(
                "scheme = \"discord\"\npublic_key = \"01{}\"",
                "00".repeat(31)
            ),
            "public_key",
            "weak",
        );
        assert_problem(
            "scheme = \"discord\"\npublic_key = \"${NOPE}\"",
            "public_key",
            "NOPE is not set",
        );
    }
}
