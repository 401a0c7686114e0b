//! Standard Webhooks (also Svix, Clerk, and GitLab's signing tokens): headers `webhook-id`,
//! `webhook-timestamp` (integer Unix seconds) and `webhook-signature`, a space-separated list
//! of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{raw body}")>`; Svix sends the same as
//! `svix-*`. The key is the base64 text after `whsec_` decoded (24–64 bytes), unlike Stripe.
//! Any `v1` entry may match (rotation); `v1a` (Ed25519), other versions and entries without a
//! comma are skipped. ±5 minutes. Fractional timestamps are malformed (the spec says integer;
//! the Python/npm libraries accept them and sign a re-formatted value). Ids containing `.` are
//! malformed (they would make the signed content ambiguous). The id is signed, so
//! [`super::Verified::signed_id`] returns it for deduplication.

use std::time::Duration;

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{Carrier, Family, HmacScheme, Template};
use super::mac::{Algorithm, KeyedMac};
use super::wire::Encoding;

const SECRET_HINT: &str = "the endpoint's signing secret, whsec_… (Svix/Clerk dashboard → Webhooks → endpoint → Signing Secret)";

/// Base64 with or without padding, as the libraries accept secrets.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC key of a `whsec_…` secret (the prefix is optional).
pub(super) fn decode_key(secret: &[u8]) -> Result<Vec<u8>, String> {
    let text = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    let key = LENIENT.decode(text).map_err(|_| {
        "is not whsec_ followed by base64; copy the whole signing secret".to_string()
    })?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; Standard Webhooks secrets are 24 to 64 bytes",
            key.len()
        ));
    }
    Ok(key)
}

fn family(prefix: &'static str) -> Family {
    let name = |suffix: &str| {
        HeaderName::from_bytes(format!("{prefix}-{suffix}").as_bytes()).expect("static header name")
    };
    Family {
        id: name("id"),
        timestamp: name("timestamp"),
        signature: name("signature"),
    }
}

/// The scheme over already-decoded keys. `svix` adds the `svix-*` header family.
pub(super) fn scheme(keys: Vec<KeyedMac>, tolerance: Duration, svix: bool) -> HmacScheme {
    let mut families = vec![family("webhook")];
    if svix {
        families.push(family("svix"));
    }
    HmacScheme {
        carrier: Carrier::StandardWebhooks { families },
        timestamp_format: Some(TimestampFormat::UnixSeconds),
        template: Template::preset("{id}.{timestamp}.{body}"),
        tolerance: Some(tolerance),
        ..HmacScheme::body_only(Algorithm::Sha256, keys, Encoding::Base64, vec![], "")
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let mut keys = Vec::new();
    for (i, secret) in cx.secrets(SECRET_HINT) {
        match decode_key(secret.expose()) {
            Ok(key) => keys.push(KeyedMac::new(Algorithm::Sha256, &key)),
            Err(e) => cx.problem(format!("secrets[{i}]"), format!("the secret {e}")),
        }
    }
    Some(scheme(keys, tolerance, true))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        for scheme in ["standard-webhooks", "svix"] {
            Suite {
                spec_toml: &format!("scheme = \"{scheme}\""),
                whsec: true,
                msg: Msg::post("/sw", b"{\"test\": 2432232314}"),
                signature_header: "webhook-signature",
                tolerance: Some(300),
            }
            .run();
        }
    }

    #[test]
    fn svix_headers_ids_and_lists() {
        let v = compile("scheme = \"svix\"\nsecrets = [\"${WH_A}\"]");
        assert_eq!(v.scheme(), "standard-webhooks");
        let base = Msg::post("/sw", b"{}");
        let signed = v.sign(&base.request(), at(NOW)).unwrap();
        let (id, ts, sig) = (&signed[0].1, &signed[1].1, &signed[2].1);
        let svix = base
            .clone()
            .header("svix-id", id)
            .header("svix-timestamp", ts)
            .header("svix-signature", sig);
        let verified = v.verify(&svix.request(), at(NOW)).unwrap();
        assert_eq!(verified.signed_id(), Some(id.as_str()));
        let cases = [
            (format!("garbage {sig}"), id.clone(), "ok"),
            (format!("v1a,AAAA v2,{} {sig}", &sig[3..]), id.clone(), "ok"),
            (format!("v2,{}", &sig[3..]), id.clone(), "malformed"),
            (
                format!("v1,{}", &sig[3..sig.len() - 1]),
                id.clone(),
                "malformed",
            ),
            (sig.clone(), format!("{id}x"), "mismatch"),
            (sig.clone(), format!("a.{id}"), "malformed"),
        ];
        for (sig_header, id_header, expected) in cases {
            let m = base
                .clone()
                .header("webhook-id", &id_header)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", &sig_header);
            assert_eq!(
                reason(m.verify(&v, NOW)),
                expected,
                "{sig_header} / {id_header}"
            );
        }
        let mut fractional = base.clone().with(&signed);
        fractional.set("webhook-timestamp", &format!("{ts}.9"));
        assert_eq!(reason(fractional.verify(&v, NOW)), "malformed");
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert_problem(
            "scheme = \"standard-webhooks\"\nsecrets = [\"${A}\"]",
            "secrets[0]",
            "whsec_",
        );
        assert!(super::decode_key(b"whsec_AAAA")
            .unwrap_err()
            .contains("3 bytes"));
        assert_eq!(
            super::decode_key(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
    }
}
