//! Shared-token authentication (scheme `token`, and GitLab's `X-Gitlab-Token`): the sender
//! puts a fixed secret in a header, either bare (`header = "X-Okta-Token"`, or Okta's
//! `Authorization: <secret>`) or as `Authorization: Bearer <token>` (`bearer = true`). There is
//! no body signature or timestamp: the token proves only who sent the request, so pair it with
//! TLS and an allowlist.
//!
//! The provided token and each configured one are compared as SHA-256 digests in constant
//! time, so timing reveals neither content nor length.

use http::header::AUTHORIZATION;
use http::HeaderName;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::compile::Cx;
use super::wire;
use super::{malformed, mismatch, Request, VerifyError};
use crate::secret::Secret;

pub(super) struct TokenCheck {
    header: HeaderName,
    bearer: bool,
    digests: Vec<[u8; 32]>,
    /// For `sign`, which must print the token itself.
    first: Option<Secret>,
}

impl TokenCheck {
    pub(super) fn new(header: HeaderName, bearer: bool, secrets: &[(usize, Secret)]) -> Self {
        TokenCheck {
            header,
            bearer,
            digests: secrets
                .iter()
                .map(|(_, s)| Sha256::digest(s.expose()).into())
                .collect(),
            first: secrets.first().map(|(_, s)| s.clone()),
        }
    }

    /// The header the token travels in (`Authorization` with `bearer`).
    pub(super) fn header(&self) -> &HeaderName {
        &self.header
    }

    pub(super) fn verify(&self, request: &Request<'_>) -> Result<(), VerifyError> {
        let value = wire::header(request.headers, &self.header)?;
        let token = if self.bearer {
            match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    token.trim()
                }
                _ => {
                    return Err(malformed(format!(
                        "header {} is not `Bearer <token>`",
                        self.header
                    )))
                }
            }
        } else {
            value
        };
        let provided: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = Choice::from(0);
        for digest in &self.digests {
            found |= digest[..].ct_eq(&provided[..]);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(mismatch(format!(
                "header {} matches none of the {} configured token(s)",
                self.header,
                self.digests.len()
            )))
        }
    }

    pub(super) fn sign(&self) -> Vec<(String, String)> {
        let Some(first) = &self.first else {
            return Vec::new();
        };
        let token = String::from_utf8_lossy(first.expose());
        let value = if self.bearer {
            format!("Bearer {token}")
        } else {
            token.into_owned()
        };
        vec![(self.header.to_string(), value)]
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<TokenCheck> {
    cx.allow_only(&["header", "bearer"]);
    let bearer = cx.spec.bearer.unwrap_or(false);
    let header = match (cx.spec.header.clone(), bearer) {
        (Some(h), _) => cx.header_name("header", &h),
        (None, true) => Some(AUTHORIZATION),
        (None, false) => {
            cx.problem(
                "header",
                "the token scheme needs the header the sender puts the token in, e.g. header = \"X-Webhook-Token\", \
                 or bearer = true for `Authorization: Bearer <token>`",
            );
            None
        }
    };
    let secrets = cx.secrets("the shared token you configured at the sender");
    for (i, secret) in &secrets {
        if std::str::from_utf8(secret.expose())
            .map_or(true, |t| t.trim() != t || t.contains(['\r', '\n']))
        {
            cx.problem(
                format!("secrets[{i}]"),
                "a header token must be text without surrounding spaces or line breaks",
            );
        }
    }
    Some(TokenCheck::new(header?, bearer, &secrets))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn header_token() {
        let v = compile("scheme = \"token\"\nheader = \"X-Webhook-Token\"\nsecrets = [\"${A}\"]");
        let rotated = compile(
            "scheme = \"token\"\nheader = \"X-Webhook-Token\"\nsecrets = [\"${B}\", \"${A}\"]",
        );
        let base = Msg::post("/t", b"{}");
        let signed = v.sign(&base.request(), at(NOW)).unwrap();
        assert_eq!(
            signed,
            vec![(
                "x-webhook-token".to_string(),
                "secret-a-0123456789".to_string()
            )]
        );
        let m = base.clone().with(&signed);
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        assert_eq!(reason(m.verify(&rotated, NOW)), "ok");
        assert_eq!(reason(base.verify(&v, NOW)), "missing");
        let wrong = base.clone().header("X-Webhook-Token", "secret-a-012345678");
        assert_eq!(reason(wrong.verify(&v, NOW)), "mismatch");
        let err = wrong.request();
        let e = v.verify(&err, at(NOW)).unwrap_err();
        assert!(!e.detail().contains("secret-a"), "{e}");
    }

    #[test]
    fn bearer_token() {
        let v = compile("scheme = \"token\"\nbearer = true\nsecrets = [\"${A}\"]");
        let base = Msg::post("/t", b"{}");
        for (value, expected) in [
            ("Bearer secret-a-0123456789", "ok"),
            ("bearer  secret-a-0123456789", "ok"),
            ("Bearer secret-a-0123456780", "mismatch"),
            ("secret-a-0123456789", "malformed"),
            ("Basic secret-a-0123456789", "malformed"),
            ("Bearer ", "malformed"),
        ] {
            let m = base.clone().header("Authorization", value);
            assert_eq!(reason(m.verify(&v, NOW)), expected, "{value:?}");
        }
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"token\"\nsecrets = [\"${A}\"]",
            "header",
            "bearer = true",
        );
        assert_problem(
            "scheme = \"token\"\nbearer = true\nsecrets = [\"${A}\"]\ntolerance = \"1m\"",
            "tolerance",
            "remove it",
        );
        assert_problem(
            "scheme = \"token\"\nbearer = true",
            "secrets",
            "shared token",
        );
    }
}
