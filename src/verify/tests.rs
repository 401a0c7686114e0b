//! Cross-scheme properties: sign-then-verify round trips for random bodies and secrets,
//! single-byte tampering always failing, parsers never panicking on arbitrary header values,
//! redaction of secrets, and the scheme table itself.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::testkit::*;
use super::{Verifier, VerifySpec};
use crate::secret::Secret;

/// Every scheme the gateway can sign, as (spec without secrets, uses a whsec_ key).
const SIGNABLE: &[(&str, bool)] = &[
    ("scheme = \"github\"", false),
    ("scheme = \"github\"\nsha1_fallback = true", false),
    ("scheme = \"shopify\"", false),
    ("scheme = \"slack\"", false),
    ("scheme = \"zoom\"", false),
    ("scheme = \"twitch\"", false),
    ("scheme = \"stripe\"", false),
    ("scheme = \"stripe\"\nheader = \"Mux-Signature\"", false),
    ("scheme = \"paddle\"", false),
    ("scheme = \"linear\"", false),
    ("scheme = \"hubspot\"\npublic_url = \"https://api.example.com\"", false),
    ("scheme = \"square\"\npublic_url = \"https://api.example.com/sq\"", false),
    ("scheme = \"twilio\"\npublic_url = \"https://api.example.com\"", false),
    ("scheme = \"twilio\"\npublic_url = \"https://api.example.com\"\nalgorithm = \"sha256\"", false),
    ("scheme = \"standard-webhooks\"", true),
    ("scheme = \"svix\"", true),
    ("scheme = \"gitlab\"", true),
    ("scheme = \"hmac\"\nheader = \"X-Sig\"", false),
    ("scheme = \"hmac\"\nalgorithm = \"sha1\"\nheader = \"X-Hub-Signature\"\nprefix = \"sha1=\"", false),
    (
        "scheme = \"hmac\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\nheader = \"X-Sig\"\nseparator = \" \"\nsigned = \"{method}:{url}:{id}:{timestamp}:{body}\"\ntimestamp_header = \"X-Ts\"\nid_header = \"X-Id\"\npublic_url = \"http://h:8080\"",
        false,
    ),
];

fn verifier(spec_toml: &str, whsec: bool, raw: &[u8], wh: &[u8]) -> Verifier {
    let reference = if whsec { "${WH}" } else { "${RAW}" };
    let spec: VerifySpec = spec(&format!("{spec_toml}\nsecrets = [\"{reference}\"]"));
    let whsec_text = format!("whsec_{}", STANDARD.encode(wh));
    Verifier::compile(&spec, &|r| {
        Ok(Secret::new(if r == "${WH}" {
            whsec_text.clone().into_bytes()
        } else {
            raw.to_vec()
        }))
    })
    .unwrap_or_else(|p| panic!("{spec_toml}: {p:?}"))
}

/// A request for `body` that the scheme can sign: Linear needs its timestamp in the body,
/// Twilio a bodySHA256 for non-form bodies.
fn message(spec_toml: &str, body: &[u8]) -> Msg {
    if spec_toml.contains("linear") {
        let mut b = format!("{{\"webhookTimestamp\":{},\"data\":\"", NOW * 1000).into_bytes();
        b.extend(STANDARD.encode(body).bytes());
        b.extend(b"\"}");
        Msg::post("/hook", &b)
    } else if spec_toml.contains("twilio") {
        let path = format!("/hook?a=1&bodySHA256={}", hex::encode(Sha256::digest(body)));
        Msg::post(&path, body).header("Content-Type", "application/octet-stream")
    } else {
        Msg::post("/hook?a=1", body)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sign_then_verify_and_any_flip_fails(
        body in proptest::collection::vec(any::<u8>(), 0..1500),
        raw in proptest::collection::vec(any::<u8>(), 1..100),
        wh in proptest::collection::vec(any::<u8>(), 24..=64),
        at_index in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        for (spec_toml, whsec) in SIGNABLE {
            let v = verifier(spec_toml, *whsec, &raw, &wh);
            let base = message(spec_toml, &body);
            let headers = v.sign(&base.request(), at(NOW)).map_err(TestCaseError::fail)?;
            let signed = base.clone().with(&headers);
            prop_assert_eq!(reason(signed.verify(&v, NOW)), "ok", "{}", spec_toml);
            if !signed.body.is_empty() {
                let mut flipped = signed.clone();
                let i = at_index.index(flipped.body.len());
                flipped.body[i] ^= 1 << bit;
                prop_assert_eq!(reason(flipped.verify(&v, NOW)), "mismatch", "{} byte {}", spec_toml, i);
            }
        }
    }

    #[test]
    fn token_round_trip(token in "[!-~]{1,64}", other in "[!-~]{1,64}") {
        for extra in ["header = \"X-Token\"", "bearer = true"] {
            let spec = spec(&format!("scheme = \"token\"\n{extra}\nsecrets = [\"${{T}}\"]"));
            let v = Verifier::compile(&spec, &|_| Ok(Secret::new(token.clone()))).unwrap();
            let base = Msg::post("/t", b"{}");
            let signed = base.clone().with(&v.sign(&base.request(), at(NOW)).unwrap());
            prop_assert_eq!(reason(signed.verify(&v, NOW)), "ok");
            let name = signed.headers.keys().next().unwrap().to_string();
            let value = if extra.contains("bearer") { format!("Bearer {other}") } else { other.clone() };
            let wrong = base.clone().header(&name, &value);
            prop_assert_eq!(reason(wrong.verify(&v, NOW)), if other == token { "ok" } else { "mismatch" });
        }
    }

    #[test]
    fn arbitrary_header_values_never_panic(
        values in proptest::collection::vec("[ -~]{0,160}", 12),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        const HEADERS: &[&str] = &[
            "x-hub-signature-256", "stripe-signature", "x-slack-signature", "x-slack-request-timestamp",
            "webhook-signature", "webhook-timestamp", "webhook-id", "x-twilio-signature",
            "twitch-eventsub-message-timestamp", "x-hubspot-request-timestamp", "paddle-signature",
            "x-signature-ed25519",
        ];
        let mut all: Vec<Verifier> = SIGNABLE
            .iter()
            .map(|(s, w)| verifier(s, *w, b"k", &[7; 32]))
            .collect();
        all.push(compile("scheme = \"discord\"\npublic_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\""));
        all.push(compile("scheme = \"token\"\nbearer = true\nsecrets = [\"${A}\"]"));
        let mut m = Msg::post("/hook?bodySHA256=00", &body);
        for (name, value) in HEADERS.iter().zip(&values) {
            m.set(name, value);
        }
        m.set("authorization", &values[0]);
        m.set("x-signature-timestamp", &values[1]);
        m.set("twitch-eventsub-message-signature", &values[2]);
        m.set("linear-signature", &values[3]);
        for v in &all {
            let _ = v.verify(&m.request(), at(NOW));
        }
    }
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let v = compile("scheme = \"stripe\"\nsecrets = [\"${A}\"]");
    let base = Msg::post("/s", b"{}");
    let headers = v.sign(&base.request(), at(NOW)).unwrap();
    let good_sig = headers[0].1.split("v1=").nth(1).unwrap().to_string();
    let mut forged = base.clone().with(&headers);
    forged.body = b"{ }".to_vec();
    let err = forged.verify(&v, NOW).unwrap_err();
    for text in [err.to_string(), format!("{err:?}"), format!("{v:?}")] {
        assert!(!text.contains("secret-a"), "{text}");
        assert!(!text.contains(&good_sig), "{text}");
    }
    let inline = VerifySpec::new("github", &["hunter2-inline", "${GITHUB_SECRET}"]);
    let debug = format!("{inline:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("${GITHUB_SECRET}"),
        "{debug}"
    );
    // An inline value that resolves empty is not echoed in the problem either.
    let p = Verifier::compile(&inline, &|_| Ok(Secret::new(""))).unwrap_err();
    assert!(p.iter().all(|p| !p.message.contains("hunter2")), "{p:?}");
}

#[test]
fn scheme_table_aliases_and_unknown() {
    for name in super::SCHEMES {
        assert!(super::canonical_scheme(name).is_some(), "{name}");
    }
    assert_eq!(super::canonical_scheme("svix"), Some("standard-webhooks"));
    let p = problems("scheme = \"stripe2\"\nsecrets = [\"${A}\", \"${NOPE}\"]");
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].key, "scheme");
    assert!(p[0].message.contains("standard-webhooks"));
    assert_eq!(p[1].key, "secrets[1]");
    let p = problems("scheme = \"github\"\nsecrets = [\"${NOPE}\"]");
    assert_eq!(
        p[0].clone().within("routes[2].verify").key,
        "routes[2].verify.secrets[0]"
    );
}

#[test]
fn unknown_keys_are_refused_by_serde() {
    let e = toml::from_str::<VerifySpec>("scheme = \"github\"\nsecret = [\"${A}\"]").unwrap_err();
    assert!(e.to_string().contains("unknown field `secret`"), "{e}");
}

#[test]
fn disabled_passes_everything() {
    let v = Verifier::disabled();
    assert_eq!(v.scheme(), "none");
    let m = Msg::post("/x", b"anything");
    let ok = v.verify(&m.request(), at(NOW)).unwrap();
    assert_eq!(
        (ok.body(), ok.scheme(), ok.signed_id()),
        (&b"anything"[..], "none", None)
    );
    assert!(v.sign(&m.request(), at(NOW)).unwrap().is_empty());
}

#[test]
fn error_classes() {
    use super::VerifyError::*;
    let table = [
        (Missing("a".into()), "missing", "signature_missing"),
        (Malformed("b".into()), "malformed", "signature_invalid"),
        (Mismatch("c".into()), "mismatch", "signature_invalid"),
        (Ambiguous("e".into()), "ambiguous", "bad_request"),
        (Expired("d".into()), "expired", "timestamp_out_of_range"),
    ];
    for (e, reason, code) in table {
        assert_eq!((e.reason(), e.error_code()), (reason, code));
        assert!(e.to_string().ends_with(e.detail()));
    }
}

#[test]
fn verifier_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<super::Verified<'static>>();
}
