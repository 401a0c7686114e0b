//! Paddle Billing: `Paddle-Signature: ts=<unix s>;h1=<hex>[;h1=<hex>…]`, each `h1` =
//! HMAC-SHA256(notification destination's secret key, "{ts}:{raw body}"); the key is the whole
//! `pdl_ntfset_…` string. Every `h1` is tried (one per active secret during rotation; Paddle's
//! Node SDK keeps only the last). Paddle's SDKs allow 5 seconds either way, so that is the
//! default: raise `tolerance` if your queue replays deliveries later.

use std::time::Duration;

use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, Carrier, HmacScheme, Template};
use super::mac::Algorithm;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(5));
    let secrets = cx.secrets(
        "the notification destination's secret key, pdl_ntfset_… (Paddle → Developer tools → Notifications → destination)",
    );
    Some(HmacScheme {
        carrier: Carrier::Pairs {
            name: HeaderName::from_static("paddle-signature"),
            item_sep: ';',
            ts_key: "ts",
            sig_key: "h1",
        },
        timestamp_format: Some(TimestampFormat::UnixSeconds),
        template: Template::preset("{timestamp}:{body}"),
        tolerance: Some(tolerance),
        ..HmacScheme::body_only(
            Algorithm::Sha256,
            keys(Algorithm::Sha256, &secrets),
            Encoding::Hex,
            vec![],
            "",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"paddle\"",
            whsec: false,
            msg: Msg::post("/paddle", b"{\"event_type\":\"subscription.activated\"}"),
            signature_header: "paddle-signature",
            tolerance: Some(5),
        }
        .run();
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"paddle\"\nsecrets = [\"${A}\"]\ntolerance = \"0s\"",
            "tolerance",
            "the paddle default is 5s",
        );
        assert_problem(
            "scheme = \"paddle\"\nsecrets = [\"${A}\", \"${EMPTY}\"]",
            "secrets[1]",
            "empty value",
        );
    }

    #[test]
    fn comma_separator_is_malformed() {
        let v = compile("scheme = \"paddle\"\nsecrets = [\"${A}\"]");
        let base = Msg::post("/paddle", b"{}");
        let value = v.sign(&base.request(), at(NOW)).unwrap()[0]
            .1
            .replace(';', ",");
        let m = base.clone().header("Paddle-Signature", &value);
        assert_eq!(reason(m.verify(&v, NOW)), "malformed");
    }
}
