//! Zoom: `x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:{ts}:{raw body}")>` with
//! `x-zm-request-timestamp` (Unix seconds): Slack's basestring. Zoom documents no window; we
//! apply ±5 minutes as gateway policy. Also computes the `endpoint.url_validation` answer
//! (`encryptedToken = hex(HMAC-SHA256(secret token, plainToken))`) for whoever answers it.

use super::compile::Cx;
use super::engine::HmacScheme;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    super::slack::v0_basestring(
        cx,
        "x-zm-signature",
        "x-zm-request-timestamp",
        "the app's Secret Token (Zoom App Marketplace → your app → Features → Access → Secret Token)",
    )
}

pub(super) fn url_validation(scheme: &HmacScheme, plain_token: &str) -> Option<String> {
    scheme
        .mac_first(plain_token.as_bytes())
        .map(|d| hex::encode(d.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"zoom\"",
            whsec: false,
            msg: Msg::post("/zoom", b"{\"event\":\"meeting.started\"}"),
            signature_header: "x-zm-signature",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn compile_errors() {
        assert_problem("scheme = \"zoom\"", "secrets", "Secret Token");
        assert_problem(
            "scheme = \"zoom\"\nsecrets = [\"${A}\"]\ntolerance = \"five minutes\"",
            "tolerance",
            "invalid duration",
        );
    }

    #[test]
    fn url_validation_only_for_zoom() {
        let v = compile("scheme = \"zoom\"\nsecrets = [\"${A}\"]");
        assert_eq!(v.zoom_url_validation("abc").map(|s| s.len()), Some(64));
        let s = compile("scheme = \"slack\"\nsecrets = [\"${A}\"]");
        assert_eq!(s.zoom_url_validation("abc"), None);
    }
}
