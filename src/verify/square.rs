//! Square: `x-square-hmacsha256-signature = base64(HMAC-SHA256(signature key,
//! notification URL + raw body))`
//! (<https://developer.squareup.com/docs/webhooks/step3validate>; square-nodejs-sdk
//! `WebhooksHelper.verifySignature`). The notification URL must match the subscription's URL
//! byte for byte: it is `public_url` (scheme, host, the port if the subscription URL has one,
//! any path prefix; taken as configured, no port variants) + the request target exactly as
//! sent, escapes, `+`, parameter order and an empty `?` included (see `url.rs`). The legacy
//! HMAC-SHA1 `x-square-signature` is never accepted as a substitute. No timestamp (dedupe on
//! `event_id`).

use http::HeaderName;

use super::compile::Cx;
use super::engine::{keys, HmacScheme, Template};
use super::mac::Algorithm;
use super::url::SignedUrl;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["public_url"]);
    let public_url = cx.public_url();
    let secrets = cx.secrets(
        "the subscription's Signature key (Developer Console → your app → Webhooks → Subscriptions)",
    );
    Some(HmacScheme {
        template: Template::preset("{url}{body}"),
        public_url: Some(SignedUrl::as_sent(public_url?)),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Base64,
            vec![HeaderName::from_static("x-square-hmacsha256-signature")],
            "",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const SPEC: &str = "scheme = \"square\"\npublic_url = \"https://webhook.site\"";

    #[test]
    fn suite() {
        Suite {
            spec_toml: SPEC,
            whsec: false,
            msg: Msg::post("/679a4f3a", b"{\"type\":\"payment.created\"}"),
            signature_header: "x-square-hmacsha256-signature",
            tolerance: None,
        }
        .run();
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"square\"\nsecrets = [\"${A}\"]",
            "public_url",
            "set public_url",
        );
        assert_problem(
            &format!("{SPEC}\nsecrets = [\"${{A}}\"]\ntolerance = \"5m\""),
            "tolerance",
            "no signed timestamp",
        );
    }

    #[test]
    fn trailing_slash_differs_and_legacy_header_is_missing() {
        let v = compile(&format!("{SPEC}\nsecrets = [\"${{A}}\"]"));
        let base = Msg::post("/hook", b"{}");
        let m = base
            .clone()
            .with(&v.sign(&base.request(), at(NOW)).unwrap());
        let mut slash = m.clone();
        slash.path = "/hook/".into();
        assert_eq!(reason(slash.verify(&v, NOW)), "mismatch");
        let legacy = base
            .clone()
            .header("x-square-signature", "PEYReMjNCdIy+vY+HRlpIceWYYg=");
        assert_eq!(reason(legacy.verify(&v, NOW)), "missing");
    }
}
