//! Linear: `Linear-Signature = hex(HMAC-SHA256(secret, raw body))`, no prefix. The only
//! trustworthy timestamp is `webhookTimestamp` (Unix ms) *inside the signed body*; Linear's
//! SDK requires it within ±60 s. Because it is in the body, it is read only after the MAC
//! matched (never parse unauthenticated JSON), and only the top-level key counts (a duplicate
//! top-level key is malformed). The `Linear-Timestamp` header is deprecated and ignored.

use std::time::{Duration, SystemTime};

use http::HeaderName;

use super::clock;
use super::compile::Cx;
use super::engine::{keys, HmacScheme};
use super::mac::Algorithm;
use super::wire::Encoding;
use super::{malformed, VerifyError};

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(60));
    let secrets =
        cx.secrets("the webhook's signing secret (Settings → API → Webhooks → your webhook)");
    Some(HmacScheme {
        tolerance: Some(tolerance),
        after_mac: Some(check_body_timestamp),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Hex,
            vec![HeaderName::from_static("linear-signature")],
            "",
        )
    })
}

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "webhookTimestamp")]
    webhook_timestamp: Option<u64>,
}

/// Checks the authenticated body's top-level `webhookTimestamp` (ms) against the window.
fn check_body_timestamp(
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "body is not a JSON object with an integer webhookTimestamp ({})",
            e.classify_name()
        ))
    })?;
    let ms = envelope
        .webhook_timestamp
        .ok_or_else(|| malformed("body has no webhookTimestamp"))?;
    clock::check_window(i128::from(ms) * 1_000_000, now, tolerance)
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong type or duplicate key",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    fn body(ms: u64) -> Vec<u8> {
        format!("{{\"action\":\"create\",\"data\":{{\"webhookTimestamp\":1}},\"webhookTimestamp\":{ms}}}").into_bytes()
    }

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"linear\"",
            whsec: false,
            msg: Msg::post("/linear", &body(NOW * 1000)),
            signature_header: "linear-signature",
            tolerance: Some(60),
        }
        .run();
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"linear\"\nsecrets = [\"${A}\"]\nheader = \"Linear-Signature\"",
            "header",
            "does not use it",
        );
        assert_problem("scheme = \"linear\"", "secrets", "signing secret");
    }

    #[test]
    fn body_timestamp_rules() {
        let v = compile("scheme = \"linear\"\nsecrets = [\"${A}\"]");
        let signed = |b: &[u8]| {
            let base = Msg::post("/linear", b);
            base.clone()
                .with(&v.sign(&base.request(), at(NOW)).unwrap())
        };
        assert_eq!(
            reason(signed(&body(NOW * 1000 + 500)).verify(&v, NOW)),
            "ok"
        );
        assert_eq!(
            reason(signed(b"{\"action\":\"x\"}").verify(&v, NOW)),
            "malformed"
        );
        assert_eq!(reason(signed(b"[1,2]").verify(&v, NOW)), "malformed");
        assert_eq!(
            reason(signed(b"{\"webhookTimestamp\":1.5}").verify(&v, NOW)),
            "malformed"
        );
        let dup = format!(
            "{{\"webhookTimestamp\":{0},\"webhookTimestamp\":{0}}}",
            NOW * 1000
        );
        assert_eq!(reason(signed(dup.as_bytes()).verify(&v, NOW)), "malformed");
        // Unauthenticated bodies are never parsed: a forgery is a mismatch, whatever it holds.
        let forged = Msg::post("/linear", b"not json").header("Linear-Signature", &"00".repeat(32));
        assert_eq!(reason(forged.verify(&v, NOW)), "mismatch");
    }
}
