//! GitLab: the secret token, sent verbatim in `X-Gitlab-Token` (compared in constant time, no
//! body signature, no timestamp), and GitLab's newer signing token, which is Standard
//! Webhooks (`webhook-id`/`webhook-timestamp`/`webhook-signature`, HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, ±5 minutes).
//!
//! Secrets starting with `whsec_` are signing tokens (GitLab generates them with that prefix);
//! any other secret is a secret token. A request carrying `webhook-signature` is verified by
//! its signature whenever a signing token is configured, and never falls back to the token.
//! With only signing tokens configured, a request without `webhook-signature` is missing.

use std::time::{Duration, SystemTime};

use http::HeaderName;

use super::compile::Cx;
use super::engine::HmacScheme;
use super::mac::{Algorithm, KeyedMac};
use super::token::TokenCheck;
use super::{standard_webhooks, Request, VerifyError};

pub(super) struct Gitlab {
    token: Option<TokenCheck>,
    signing: Option<HmacScheme>,
}

const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

impl Gitlab {
    pub(super) fn verify<'a>(
        &self,
        request: &Request<'a>,
        now: SystemTime,
    ) -> Result<Option<&'a str>, VerifyError> {
        match (&self.signing, &self.token) {
            (Some(signing), Some(_)) if request.headers.contains_key(SIGNATURE) => {
                signing.verify(request, now)
            }
            (_, Some(token)) => token.verify(request).map(|()| None),
            (Some(signing), None) => signing.verify(request, now),
            (None, None) => Err(super::missing("no GitLab token configured")),
        }
    }

    pub(super) fn sign(
        &self,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        match (&self.signing, &self.token) {
            (Some(signing), _) => signing.sign(request, now),
            (None, Some(token)) => Ok(token.sign()),
            (None, None) => Err("no GitLab token configured".into()),
        }
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<Gitlab> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let secrets = cx.secrets(
        "the webhook's Secret token, or its signing token (whsec_…) (project → Settings → Webhooks)",
    );
    let (signing, tokens): (Vec<_>, Vec<_>) = secrets
        .into_iter()
        .partition(|(_, s)| s.expose().starts_with(b"whsec_"));
    let mut keys = Vec::new();
    for (i, secret) in &signing {
        match standard_webhooks::decode_key(secret.expose()) {
            Ok(key) => keys.push(KeyedMac::new(Algorithm::Sha256, &key)),
            Err(e) => cx.problem(format!("secrets[{i}]"), format!("the signing token {e}")),
        }
    }
    if signing.is_empty() && cx.spec.tolerance.is_some() {
        cx.problem(
            "tolerance",
            "applies only to GitLab signing tokens (whsec_…), and none is configured; remove it",
        );
    }
    Some(Gitlab {
        token: (!tokens.is_empty())
            .then(|| TokenCheck::new(HeaderName::from_static("x-gitlab-token"), false, &tokens)),
        signing: (!signing.is_empty()).then(|| standard_webhooks::scheme(keys, tolerance, false)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn secret_token() {
        let v = compile("scheme = \"gitlab\"\nsecrets = [\"${A}\"]");
        let base = Msg::post("/gl", b"{\"object_kind\":\"push\"}");
        let m = base.clone().header("X-Gitlab-Token", "secret-a-0123456789");
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let wrong = base.clone().header("X-Gitlab-Token", "secret-b-9876543210");
        assert_eq!(reason(wrong.verify(&v, NOW)), "mismatch");
        assert_eq!(reason(base.verify(&v, NOW)), "missing");
        let rotated = compile("scheme = \"gitlab\"\nsecrets = [\"${B}\", \"${A}\"]");
        assert_eq!(reason(m.verify(&rotated, NOW)), "ok");
    }

    #[test]
    fn signing_token_suite() {
        Suite {
            spec_toml: "scheme = \"gitlab\"",
            whsec: true,
            msg: Msg::post("/gl", b"{\"object_kind\":\"push\"}"),
            signature_header: "webhook-signature",
            tolerance: Some(300),
        }
        .run();
    }

    #[test]
    fn signature_never_falls_back_to_token() {
        let v = compile("scheme = \"gitlab\"\nsecrets = [\"${A}\", \"${WH_A}\"]");
        let base = Msg::post("/gl", b"{}");
        let good_token = base.clone().header("X-Gitlab-Token", "secret-a-0123456789");
        assert_eq!(reason(good_token.verify(&v, NOW)), "ok");
        let bad_sig = good_token.clone().header("webhook-signature", "v1,AAAA");
        assert_eq!(reason(bad_sig.verify(&v, NOW)), "missing"); // webhook-id absent
        let signed = base
            .clone()
            .with(&v.sign(&base.request(), at(NOW)).unwrap());
        assert_eq!(reason(signed.verify(&v, NOW)), "ok");
        assert_eq!(reason(signed.verify(&v, NOW + 301)), "expired");
        // No webhook-* headers from GitLab for an svix-style sender.
        let signing_only = compile("scheme = \"gitlab\"\nsecrets = [\"${WH_A}\"]");
        assert_eq!(reason(good_token.verify(&signing_only, NOW)), "missing");
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"gitlab\"\nsecrets = [\"${A}\"]\ntolerance = \"1m\"",
            "tolerance",
            "signing tokens",
        );
        let p = problems("scheme = \"gitlab\"\nsecrets = [\"${A}\", \"${NOPE}\"]");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "secrets[1]");
    }
}
