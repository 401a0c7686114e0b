//! HubSpot v3: `X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret,
//! method + URI + body + timestamp))` with `X-HubSpot-Request-Timestamp` in **milliseconds**,
//! rejected when older than 5 minutes (and, our policy, when more than 5 minutes ahead; this
//! also defeats moving digits between the unseparated body and timestamp). Source: "Validate
//! the v3 request signature",
//! <https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests>.
//!
//! The URI is the one HubSpot called: `public_url` (scheme, host, the port if the target URL
//! has one, any path prefix; taken as configured, no port variants) + the request target as
//! sent, **with the twelve escapes HubSpot's page lists decoded** (`%3A`, `%2F`, `%3F`, `%40`,
//! `%21`, `%24`, `%27`, `%28`, `%29`, `%2A`, `%2C`, `%3B`); everything else, `%20` and `+`
//! included, stays as sent. Spellings the signature cannot tell apart but the app may read
//! differently (`%2F`, `%3F`, `%3B` in the path; `%3B` in the query) are refused as ambiguous
//! (400 with the reason): see `url.rs`. HubSpot's SDKs (hubspot-api-nodejs, hubspot-api-python `Signature`) sign the
//! URI they are given and leave this decoding to the caller.
//!
//! Legacy v1/v2 (`X-HubSpot-Signature`, plain SHA-256 of secret-prefixed data, no timestamp,
//! length-extendable) are deliberately not accepted.

use std::time::Duration;

use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, HmacScheme, Template};
use super::mac::Algorithm;
use super::url::SignedUrl;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance", "public_url"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let public_url = cx.public_url();
    let secrets =
        cx.secrets("the app's Client secret (developer account → Apps → your app → Auth)");
    Some(HmacScheme {
        timestamp_header: Some(HeaderName::from_static("x-hubspot-request-timestamp")),
        timestamp_format: Some(TimestampFormat::UnixMillis),
        template: Template::preset("{method}{url}{body}{timestamp}"),
        public_url: Some(SignedUrl::hubspot_v3(public_url?)),
        tolerance: Some(tolerance),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Base64,
            vec![HeaderName::from_static("x-hubspot-signature-v3")],
            "",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const SPEC: &str = "scheme = \"hubspot\"\npublic_url = \"https://www.example.com/\"";

    #[test]
    fn suite() {
        Suite {
            spec_toml: SPEC,
            whsec: false,
            msg: Msg::post("/webhook_uri?x=1", b"[{\"eventId\":1}]"),
            signature_header: "x-hubspot-signature-v3",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn method_and_url_are_signed() {
        let v = compile(&format!("{SPEC}\nsecrets = [\"${{A}}\"]"));
        let base = Msg::post("/webhook_uri", b"{}");
        let m = base
            .clone()
            .with(&v.sign(&base.request(), at(NOW)).unwrap());
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let mut get = m.clone();
        get.method = "GET".into();
        assert_eq!(reason(get.verify(&v, NOW)), "mismatch");
        let mut other_path = m.clone();
        other_path.path = "/webhook_uri/".into();
        assert_eq!(reason(other_path.verify(&v, NOW)), "mismatch");
        let mut secs = m.clone();
        secs.set("X-HubSpot-Request-Timestamp", &NOW.to_string());
        assert_eq!(reason(secs.verify(&v, NOW)), "expired"); // seconds read as ms: 1970
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"hubspot\"\nsecrets = [\"${A}\"]",
            "public_url",
            "set public_url",
        );
        for (url, needle) in [
            ("hooks.example.com", "must start with https://"),
            ("https://", "has no host"),
            ("https://x.com/a?b=1", "must not contain a query"),
        ] {
            assert_problem(
                &format!("scheme = \"hubspot\"\nsecrets = [\"${{A}}\"]\npublic_url = \"{url}\""),
                "public_url",
                needle,
            );
        }
    }
}
