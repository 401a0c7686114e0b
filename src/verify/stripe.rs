//! Stripe (and Stripe-format providers such as Mux, via `header = "Mux-Signature"`):
//! `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…][,v0=…]`, each `v1` =
//! HMAC-SHA256(endpoint secret, "{t}.{raw body}"). The key is the whole `whsec_…` string as
//! UTF-8, *not* base64-decoded. Any `v1` may match (Stripe sends one per active secret while a
//! secret is rolled); `v0` and unknown keys are ignored; a header without `t` or without any
//! usable `v1` is malformed. Default tolerance 300 s, checked both ways: Stripe's SDKs accept
//! any future timestamp, we do not.

use std::time::Duration;

use http::HeaderName;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, Carrier, HmacScheme, Template};
use super::mac::Algorithm;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["tolerance", "header"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let name = match cx.spec.header.clone() {
        Some(h) => cx.header_name("header", &h),
        None => Some(HeaderName::from_static("stripe-signature")),
    };
    let secrets = cx.secrets(
        "the endpoint's Signing secret, whsec_… (Dashboard → Developers → Webhooks → your endpoint; \
         Mux: Settings → Webhooks → Signing Secret)",
    );
    Some(HmacScheme {
        carrier: Carrier::Pairs {
            name: name?,
            item_sep: ',',
            ts_key: "t",
            sig_key: "v1",
        },
        timestamp_format: Some(TimestampFormat::UnixSeconds),
        template: Template::preset("{timestamp}.{body}"),
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
            spec_toml: "scheme = \"stripe\"",
            whsec: false,
            msg: Msg::post("/stripe", b"{\"id\":\"evt_1\",\"object\":\"event\"}"),
            signature_header: "stripe-signature",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn mux_header() {
        Suite {
            spec_toml: "scheme = \"stripe\"\nheader = \"Mux-Signature\"",
            whsec: false,
            msg: Msg::post("/mux", b"{\"type\":\"video.asset.ready\"}"),
            signature_header: "mux-signature",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn header_parsing() {
        let v = compile("scheme = \"stripe\"\nsecrets = [\"${A}\"]");
        let base = Msg::post("/stripe", b"{}");
        let signed = v.sign(&base.request(), at(NOW)).unwrap();
        let value = signed[0].1.clone();
        let (t, v1) = value.split_once(',').unwrap();
        let cases = [
            (format!("{t},v1={},{v1}", "0".repeat(64)), "ok"),
            (format!("{v1},{t},v0=dead"), "ok"),
            (format!("{t}, {v1}"), "ok"),
            (format!("{t},v1=zz,{v1}"), "ok"),
            (format!("{t},v0={}", &v1[3..]), "malformed"),
            (format!("{t},v1=zz"), "malformed"),
            (v1.to_string(), "malformed"),
            (format!("{t},{t},{v1}"), "malformed"),
            ("bad_header".to_string(), "malformed"),
            (format!("t=,{v1}"), "malformed"),
            (format!("t=-1,{v1}"), "malformed"),
            (format!("{t},v1={}", "0".repeat(64)), "mismatch"),
        ];
        for (header, expected) in cases {
            let m = base.clone().header("Stripe-Signature", &header);
            assert_eq!(reason(m.verify(&v, NOW)), expected, "{header}");
        }
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"stripe\"\nsecrets = [\"${A}\"]\nheader = \"bad header\"",
            "header",
            "not a valid HTTP header name",
        );
        let p = problems("scheme = \"stripe\"\nsecrets = [\"${NOPE}\"]\ntolerance = \"soon\"\npublic_key = \"00\"");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["public_key", "tolerance", "secrets[0]"], "{p:#?}");
    }
}
