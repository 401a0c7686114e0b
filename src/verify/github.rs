//! GitHub (and Meta/Facebook/WhatsApp, which send the same header):
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`. No timestamp (dedupe on
//! `X-GitHub-Delivery`). The legacy `X-Hub-Signature: sha1=<hex HMAC-SHA1>` is accepted only
//! with `sha1_fallback = true`, and only when the SHA-256 header is absent, so a request that
//! carries both can never be downgraded to SHA-1.

use http::HeaderName;

use super::compile::Cx;
use super::engine::{keys, HmacScheme};
use super::mac::Algorithm;
use super::wire::Encoding;

pub(super) const SECRET_HINT: &str =
    "the webhook's secret (Settings → Webhooks → Secret; Meta: the App Secret)";

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&["sha1_fallback"]);
    let secrets = cx.secrets(SECRET_HINT);
    let mut scheme = HmacScheme::body_only(
        Algorithm::Sha256,
        keys(Algorithm::Sha256, &secrets),
        Encoding::Hex,
        vec![HeaderName::from_static("x-hub-signature-256")],
        "sha256=",
    );
    if cx.spec.sha1_fallback == Some(true) {
        scheme.fallback = Some(Box::new(HmacScheme::body_only(
            Algorithm::Sha1,
            keys(Algorithm::Sha1, &secrets),
            Encoding::Hex,
            vec![HeaderName::from_static("x-hub-signature")],
            "sha1=",
        )));
    }
    Some(scheme)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const DOCS_BODY: &[u8] = b"Hello, World!";
    const DOCS_SHA256: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const DOCS_SHA1: &str = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";

    fn docs(extra: &str) -> super::super::Verifier {
        // The published docs secret, through an inline-value resolver.
        let spec = spec(&format!(
            "scheme = \"github\"\nsecrets = [\"docs\"]\n{extra}"
        ));
        super::super::Verifier::compile(&spec, &|_| {
            Ok(crate::secret::Secret::new("It's a Secret to Everybody"))
        })
        .unwrap()
    }

    #[test]
    fn published_docs_example() {
        let v = docs("");
        let m = Msg::post("/gh", DOCS_BODY).header("X-Hub-Signature-256", DOCS_SHA256);
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        assert_eq!(v.scheme(), "github");
        let signed = v
            .sign(&Msg::post("/gh", DOCS_BODY).request(), at(NOW))
            .unwrap();
        assert_eq!(
            signed,
            vec![("x-hub-signature-256".to_string(), DOCS_SHA256.to_string())]
        );
    }

    #[test]
    fn suite() {
        Suite {
            spec_toml: "scheme = \"github\"",
            whsec: false,
            msg: Msg::post("/gh", b"{\n  \"zen\": \"Keep it logically awesome.\"\n}\n"),
            signature_header: "x-hub-signature-256",
            tolerance: None,
        }
        .run();
    }

    #[test]
    fn sha1_only_with_fallback_and_never_as_downgrade() {
        let sha1_only = Msg::post("/gh", DOCS_BODY).header("X-Hub-Signature", DOCS_SHA1);
        assert_eq!(reason(sha1_only.verify(&docs(""), NOW)), "missing");
        let v = docs("sha1_fallback = true");
        assert_eq!(reason(sha1_only.verify(&v, NOW)), "ok");
        let mut tampered = sha1_only.clone();
        tampered.body = b"Hello, World".to_vec();
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
        // A bad SHA-256 header next to a good SHA-1 one fails: no downgrade.
        let both = sha1_only
            .clone()
            .header("X-Hub-Signature-256", &DOCS_SHA256.replace('7', "8"));
        assert_eq!(reason(both.verify(&v, NOW)), "mismatch");
        let neither = Msg::post("/gh", DOCS_BODY);
        let err = v.verify(&neither.request(), at(NOW)).unwrap_err();
        assert_eq!(err.detail(), "header x-hub-signature-256 absent");
    }

    #[test]
    fn malformed_prefixes() {
        let v = docs("");
        for value in [
            &DOCS_SHA256[7..],
            DOCS_SHA1,
            "sha256=zz",
            "sha256=",
            "SHA256=00",
        ] {
            let m = Msg::post("/gh", DOCS_BODY).header("X-Hub-Signature-256", value);
            assert_eq!(reason(m.verify(&v, NOW)), "malformed", "{value}");
        }
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"github\"",
            "secrets",
            "needs at least one secret",
        );
        assert_problem(
            "scheme = \"github\"\nsecrets = [\"${A}\"]\ntolerance = \"5m\"",
            "tolerance",
            "no signed timestamp",
        );
        assert_problem(
            "scheme = \"github\"\nsecrets = [\"${A}\", \"${NOPE}\"]",
            "secrets[1]",
            "NOPE is not set",
        );
        assert_problem(
            "scheme = \"github\"\nsecrets = [\"${EMPTY}\"]",
            "secrets[0]",
            "empty value",
        );
        assert_problem(
            "scheme = \"github\"\nsecrets = [\"${A}\"]\nheader = \"X\"",
            "header",
            "does not use it",
        );
    }
}
