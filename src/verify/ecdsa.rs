//! ECDSA P-256 / SHA-256 over `timestamp + body` (scheme `ecdsa`), as Twilio SendGrid signs its
//! Event Webhook: `X-Twilio-Email-Event-Webhook-Signature` is base64 of a DER ECDSA signature
//! (RFC 3279 §2.2.3 `Ecdsa-Sig-Value`) by SendGrid's private key over the
//! `X-Twilio-Email-Event-Webhook-Timestamp` value followed by the raw body, no separator; the
//! public key is shown in SendGrid's settings as base64 DER SubjectPublicKeyInfo
//! (<https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>).
//!
//! Keys: `public_key` (see [`super::keys`]: SendGrid's base64 text, a PEM file, or a JWK Set
//! for rotation), `header`, `timestamp_header` (both required; the `sendgrid` provider row sets
//! them), `tolerance` (default 5 minutes: SendGrid documents no window, this is gateway policy,
//! checked before the signature as for every scheme). The gateway holds no private key, so it
//! cannot sign.
//!
//! Keys and the DER signature are parsed with `p256` (RustCrypto); the verification itself is
//! ring's, through `jsonwebtoken`, the same as the `jwt` scheme's ES256: about 38 µs against
//! 190 µs for `p256`'s (1 KiB body, release build, this machine). Ring takes the message in one
//! piece, so timestamp + body is copied once per request.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::ecdsa::Signature;

use super::clock::{self, TimestampFormat};
use super::compile::Cx;
use super::keys;
use super::wire;
use super::{malformed, mismatch, Request, VerifyError};

pub(super) const CANNOT_SIGN: &str =
    "ecdsa deliveries are signed with the provider's private key; the gateway has only the public key, so it cannot sign a test delivery";

/// A DER P-256 signature is at most 72 bytes: 96 base64 characters.
const MAX_SIGNATURE_BASE64: usize = 96;

pub(super) struct Ecdsa {
    /// Each key as its uncompressed SEC1 point, checked to be on P-256 by `p256`.
    keys: Vec<DecodingKey>,
    header: HeaderName,
    timestamp_header: HeaderName,
    tolerance: Duration,
}

impl Ecdsa {
    pub(super) fn verify(&self, request: &Request<'_>, now: SystemTime) -> Result<(), VerifyError> {
        let encoded = wire::header(request.headers, &self.header)?;
        let timestamp = wire::header(request.headers, &self.timestamp_header)?;
        let signature = (encoded.len() <= MAX_SIGNATURE_BASE64)
            .then(|| STANDARD.decode(encoded).ok())
            .flatten()
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "header {} is not base64 of a DER ECDSA P-256 signature",
                    self.header
                ))
            })?;
        let ts = TimestampFormat::UnixSeconds
            .parse(timestamp)
            .ok_or_else(|| {
                malformed(format!(
                    "header {} is not integer Unix seconds",
                    self.timestamp_header
                ))
            })?;
        clock::check_window(ts, now, self.tolerance)?;
        // Ring reads the fixed-size r‖s form, base64url as in a JWS.
        let fixed = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        let mut message = Vec::with_capacity(timestamp.len() + request.body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(request.body);
        let matched = self.keys.iter().any(|key| {
            jsonwebtoken::crypto::verify(&fixed, &message, key, Algorithm::ES256).unwrap_or(false)
        });
        if matched {
            Ok(())
        } else {
            Err(mismatch(format!(
                "ECDSA signature in {} does not verify under the {} configured public key(s)",
                self.header,
                self.keys.len()
            )))
        }
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<Ecdsa> {
    cx.allow_only(&["public_key", "header", "timestamp_header", "tolerance"]);
    cx.no_secrets("set public_key to the provider's verification key");
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let header = required_header(cx, "header", "X-Twilio-Email-Event-Webhook-Signature");
    let timestamp_header = required_header(
        cx,
        "timestamp_header",
        "X-Twilio-Email-Event-Webhook-Timestamp",
    );
    let text = keys::text(
        cx,
        "SendGrid shows it under Settings → Mail Settings → Signed Event Webhook Requests",
    )?;
    let mut verifying = Vec::new();
    match keys::entries(&text) {
        Ok(entries) => {
            for entry in &entries {
                match keys::es256_key(entry) {
                    Ok(key) => verifying.push(key),
                    Err(e) => cx.problem("public_key", format!("the key {e}")),
                }
            }
        }
        Err(e) => cx.problem("public_key", format!("the key {e}")),
    }
    if verifying.is_empty() {
        return None;
    }
    Some(Ecdsa {
        keys: verifying,
        header: header?,
        timestamp_header: timestamp_header?,
        tolerance,
    })
}

fn required_header(cx: &mut Cx, key: &str, example: &str) -> Option<HeaderName> {
    let value = match key {
        "header" => cx.spec.header.clone(),
        _ => cx.spec.timestamp_header.clone(),
    };
    match value {
        Some(v) => cx.header_name(key, &v),
        None => {
            cx.problem(
                key,
                format!("the ecdsa scheme needs {key}, e.g. {key} = \"{example}\" (or use provider = \"sendgrid\")"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::EncodePublicKey as _;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).expect("test scalar")
    }

    fn public_der_b64(seed: u8) -> String {
        let der = key(seed).verifying_key().to_public_key_der().expect("spki");
        STANDARD.encode(der.as_bytes())
    }

    fn spec(public: &str) -> String {
        format!(
            "scheme = \"ecdsa\"\nheader = \"X-Twilio-Email-Event-Webhook-Signature\"\ntimestamp_header = \"X-Twilio-Email-Event-Webhook-Timestamp\"\npublic_key = \"{public}\""
        )
    }

    fn signed(seed: u8, ts: &str, body: &[u8]) -> Msg {
        let mut message = ts.as_bytes().to_vec();
        message.extend_from_slice(body);
        let sig: Signature = key(seed).sign(&message);
        Msg::post("/sendgrid", body)
            .header(
                "X-Twilio-Email-Event-Webhook-Signature",
                &STANDARD.encode(sig.to_der().as_bytes()),
            )
            .header("X-Twilio-Email-Event-Webhook-Timestamp", ts)
    }

    #[test]
    fn checks_in_order() {
        let v = compile(&spec(&public_der_b64(7)));
        let ts = NOW.to_string();
        let body = br#"[{"email":"a@example.com","event":"delivered"}]"#;
        let m = signed(7, &ts, body);
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let mut tampered = m.clone();
        tampered.body.push(b' ');
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
        let mut other_ts = m.clone();
        other_ts.set(
            "X-Twilio-Email-Event-Webhook-Timestamp",
            &(NOW + 1).to_string(),
        );
        assert_eq!(reason(other_ts.verify(&v, NOW)), "mismatch");
        let wrong_key = signed(8, &ts, body);
        assert_eq!(reason(wrong_key.verify(&v, NOW)), "mismatch");
        assert_eq!(reason(m.verify(&v, NOW + 301)), "expired");
        assert_eq!(reason(m.verify(&v, NOW - 301)), "expired");
        assert_eq!(reason(m.verify(&v, NOW + 300)), "ok");
        // Expiry is decided before the signature: a stale forgery is "expired" too.
        assert_eq!(reason(wrong_key.verify(&v, NOW + 301)), "expired");
        for bad in ["garbage!", "AAAA", &"A".repeat(200)] {
            let mut g = m.clone();
            g.set("X-Twilio-Email-Event-Webhook-Signature", bad);
            assert_eq!(reason(g.verify(&v, NOW)), "malformed", "{bad}");
        }
        let mut bad_ts = m.clone();
        bad_ts.set("X-Twilio-Email-Event-Webhook-Timestamp", "12.5");
        assert_eq!(reason(bad_ts.verify(&v, NOW)), "malformed");
        for h in [
            "x-twilio-email-event-webhook-signature",
            "x-twilio-email-event-webhook-timestamp",
        ] {
            let mut missing = m.clone();
            missing.headers.remove(h);
            assert_eq!(reason(missing.verify(&v, NOW)), "missing", "{h}");
        }
        let err = v.sign(&m.request(), at(NOW)).unwrap_err();
        assert!(err.contains("cannot sign"), "{err}");
    }

    #[test]
    fn pem_and_jwks_with_rotation() {
        let pem = key(7)
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap()
            .replace('\n', "\\n");
        let v = compile(&spec(&pem));
        let m = signed(7, &NOW.to_string(), b"[]");
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let point = key(8).verifying_key().to_encoded_point(false);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = format!(
            r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "x": "{}", "y": "{}"}}, {{"kty": "EC", "crv": "P-256", "x": "{}", "y": "{}"}}]}}"#,
            b64(point.x().unwrap()),
            b64(point.y().unwrap()),
            b64(key(7).verifying_key().to_encoded_point(false).x().unwrap()),
            b64(key(7).verifying_key().to_encoded_point(false).y().unwrap()),
        );
        let v = compile(&format!("{}\n", spec(&jwks.replace('"', "\\\""))));
        assert_eq!(reason(m.verify(&v, NOW)), "ok", "second key of the set");
        assert_eq!(
            reason(signed(8, &NOW.to_string(), b"[]").verify(&v, NOW)),
            "ok"
        );
        assert_eq!(
            reason(signed(9, &NOW.to_string(), b"[]").verify(&v, NOW)),
            "mismatch"
        );
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"ecdsa\"\nheader = \"X-Sig\"\ntimestamp_header = \"X-Ts\"",
            "public_key",
            "public key",
        );
        assert_problem(
            &spec("bm90IGEga2V5"),
            "public_key",
            "not an EC P-256 public key",
        );
        assert_problem(
            &format!("{}\nsecrets = [\"${{A}}\"]", spec(&public_der_b64(7))),
            "secrets",
            "remove secrets",
        );
        assert_problem(
            &format!("scheme = \"ecdsa\"\npublic_key = \"{}\"", public_der_b64(7)),
            "header",
            "provider = \"sendgrid\"",
        );
        assert_problem(
            &spec("-----BEGIN EC PRIVATE KEY-----\\nAAAA\\n-----END EC PRIVATE KEY-----"),
            "public_key",
            "never a private key",
        );
        assert_problem(
            &format!("{}\nsigned = \"{{body}}\"", spec(&public_der_b64(7))),
            "signed",
            "remove it",
        );
    }
}
