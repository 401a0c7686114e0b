//! Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex HMAC-SHA256(secret,
//! id + timestamp + raw body)>`, no separators, with `Twitch-Eventsub-Message-Id` and
//! `Twitch-Eventsub-Message-Timestamp` (RFC 3339 with nanoseconds, signed verbatim). Twitch
//! says reject messages older than 10 minutes; we reject 10 minutes into the future too.
//! The message id is signed, so [`super::Verified::signed_id`] returns it for deduplication.

use std::time::Duration;

use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, HmacScheme, Template};
use super::mac::Algorithm;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(600));
    let secrets = cx.secrets(
        "the `secret` you chose when creating the EventSub subscription (10–100 characters)",
    );
    Some(HmacScheme {
        timestamp_header: Some(HeaderName::from_static("twitch-eventsub-message-timestamp")),
        timestamp_format: Some(TimestampFormat::Rfc3339),
        id_header: Some(HeaderName::from_static("twitch-eventsub-message-id")),
        template: Template::preset("{id}{timestamp}{body}"),
        tolerance: Some(tolerance),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Hex,
            vec![HeaderName::from_static("twitch-eventsub-message-signature")],
            "sha256=",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"twitch\"",
            whsec: false,
            msg: Msg::post(
                "/twitch",
                b"{\"subscription\":{\"type\":\"channel.follow\"}}",
            ),
            signature_header: "twitch-eventsub-message-signature",
            tolerance: Some(600),
        }
        .run();
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"twitch\"\nsecrets = []",
            "secrets",
            "EventSub subscription",
        );
        assert_problem(
            "scheme = \"twitch\"\nsecrets = [\"${A}\"]\npublic_url = \"https://a.b\"",
            "public_url",
            "does not use it",
        );
    }

    #[test]
    fn signed_id_and_timestamp_format() {
        let v = compile("scheme = \"twitch\"\nsecrets = [\"${A}\"]");
        let base = Msg::post("/twitch", b"{}");
        let m = base
            .clone()
            .with(&v.sign(&base.request(), at(NOW)).unwrap());
        let ok = v.verify(&m.request(), at(NOW)).unwrap();
        assert_eq!(
            ok.signed_id(),
            Some(m.headers["twitch-eventsub-message-id"].to_str().unwrap())
        );
        let mut unix = m.clone();
        unix.set("Twitch-Eventsub-Message-Timestamp", "1700000000");
        assert_eq!(reason(unix.verify(&v, NOW)), "malformed");
    }
}
