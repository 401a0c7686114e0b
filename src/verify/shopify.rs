//! Shopify: `X-Shopify-Hmac-Sha256` (new "events" webhooks: `shopify-hmac-sha256`) =
//! base64 (not hex) of HMAC-SHA256(app client secret, raw body). No timestamp (dedupe on
//! `X-Shopify-Webhook-Id` / `X-Shopify-Event-Id`; `X-Shopify-Triggered-At` is not signed).

use http::HeaderName;

use super::compile::Cx;
use super::engine::{keys, HmacScheme};
use super::mac::Algorithm;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&[]);
    let secrets = cx.secrets(
        "the app's client secret (Partner Dashboard → App → Client credentials), or for store-created \
         webhooks the key shown under Settings → Notifications → Webhooks",
    );
    Some(HmacScheme::body_only(
        Algorithm::Sha256,
        keys(Algorithm::Sha256, &secrets),
        Encoding::Base64,
        vec![
            HeaderName::from_static("x-shopify-hmac-sha256"),
            HeaderName::from_static("shopify-hmac-sha256"),
        ],
        "",
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"shopify\"",
            whsec: false,
            msg: Msg::post("/shop", "{\"id\":1,\"note\":\"café\"}".as_bytes()),
            signature_header: "x-shopify-hmac-sha256",
            tolerance: None,
        }
        .run();
    }

    #[test]
    fn events_header_name_and_hex_is_malformed() {
        let v = compile("scheme = \"shopify\"\nsecrets = [\"${A}\"]");
        let base = Msg::post("/shop", b"{}");
        let signed = v.sign(&base.request(), at(NOW)).unwrap();
        let value = &signed[0].1;
        let events = base.clone().header("shopify-hmac-sha256", value);
        assert_eq!(reason(events.verify(&v, NOW)), "ok");
        let hex_value = hex::encode(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).unwrap(),
        );
        let hexed = base.clone().header("X-Shopify-Hmac-Sha256", &hex_value);
        assert_eq!(reason(hexed.verify(&v, NOW)), "malformed");
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"shopify\"\nsecrets = []",
            "secrets",
            "client secret",
        );
        assert_problem(
            "scheme = \"shopify\"\nsecrets = [\"${A}\"]\ntolerance = \"1m\"",
            "tolerance",
            "remove it (it takes only scheme and secrets)",
        );
    }
}
