//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{raw body}")>`
//! with `X-Slack-Request-Timestamp` (Unix seconds), ±5 minutes. Form bodies (slash commands,
//! interactivity) are signed as sent: never decode them first.

use std::time::Duration;

use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, HmacScheme, Template};
use super::mac::Algorithm;
use super::wire::Encoding;

/// Shared with Zoom, which copied Slack's basestring.
pub(super) fn v0_basestring(
    cx: &mut Cx,
    signature: &'static str,
    timestamp: &'static str,
    hint: &str,
) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let secrets = cx.secrets(hint);
    Some(HmacScheme {
        timestamp_header: Some(HeaderName::from_static(timestamp)),
        timestamp_format: Some(TimestampFormat::UnixSeconds),
        template: Template::preset("v0:{timestamp}:{body}"),
        tolerance: Some(tolerance),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Hex,
            vec![HeaderName::from_static(signature)],
            "v0=",
        )
    })
}

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    v0_basestring(
        cx,
        "x-slack-signature",
        "x-slack-request-timestamp",
        "the app's Signing Secret (api.slack.com/apps → Basic Information → App Credentials)",
    )
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"slack\"",
            whsec: false,
            msg: Msg::post("/slack", b"token=x&text=hello+world&command=%2Fdo"),
            signature_header: "x-slack-signature",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn published_docs_example() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let v = super::super::Verifier::compile(
            &spec("scheme = \"slack\"\nsecrets = [\"x\"]"),
            &|_| {
                Ok(crate::secret::Secret::new(
                    "8f742231b10e8888abcd99yyyzzz85a5",
                ))
            },
        )
        .unwrap();
        let m = Msg::post("/slack", body)
            .header("X-Slack-Request-Timestamp", "1531420618")
            .header(
                "X-Slack-Signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            );
        assert_eq!(reason(m.verify(&v, 1531420678)), "ok");
        let mut bad_ts = m.clone();
        bad_ts.set("X-Slack-Request-Timestamp", "1531420618.0");
        assert_eq!(reason(bad_ts.verify(&v, 1531420678)), "malformed");
    }

    #[test]
    fn custom_tolerance_and_errors() {
        let v = compile("scheme = \"slack\"\nsecrets = [\"${A}\"]\ntolerance = \"10s\"");
        let base = Msg::post("/slack", b"x");
        let m = base
            .clone()
            .with(&v.sign(&base.request(), at(NOW)).unwrap());
        assert_eq!(reason(m.verify(&v, NOW + 10)), "ok");
        assert_eq!(reason(m.verify(&v, NOW + 11)), "expired");
        assert_problem(
            "scheme = \"slack\"\nsecrets = [\"${A}\"]\ntolerance = \"5\"",
            "tolerance",
            "invalid duration",
        );
        assert_problem(
            "scheme = \"slack\"\nsecrets = [\"${A}\"]\ntolerance = \"0s\"",
            "tolerance",
            "more than 0",
        );
    }
}
