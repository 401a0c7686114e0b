//! A JWS compact token in a header (scheme `jwt`, RFC 7515 §7.1 / RFC 7519), signed with
//! HS256 (shared secrets), RS256 or ES256 (the sender's public key, see [`super::keys`]), whose
//! claims may bind the body: Netlify's `X-Webhook-Signature` is an HS256 JWT with
//! `iss = "netlify"` and `sha256` = hex SHA-256 of the body
//! (<https://docs.netlify.com/site-deploys/deploy-notifications/#payload-signature>); Plaid's
//! `Plaid-Verification` is an ES256 JWT with `request_body_sha256` and an `iat` no older than
//! 5 minutes (<https://plaid.com/docs/api/webhooks/webhook-verification/>).
//!
//! Keys: `algorithm` (`HS256` | `RS256` | `ES256`, required: the algorithm is pinned by the
//! config, never taken from the token, so `alg: none` and HS256-with-the-public-key confusion
//! are refused), `header` (or `bearer = true` for `Authorization: Bearer <jwt>`), `secrets`
//! (HS256) or `public_key` (RS256/ES256; PEM, JWK or JWK Set, whose `kid` selects the key),
//! `issuer` (the required `iss`), `body_sha256_claim` (the claim holding the hex SHA-256 of the
//! body; without it the token proves only who sent the request, not what), `tolerance`
//! (default 5 minutes).
//!
//! Order, as for every scheme: missing header → malformed (not three base64url parts, JOSE
//! header or claims not a JSON object or with a member twice, `alg` other than the pinned
//! one, a `crit` or `b64` header we do not implement, a configured claim absent or of the wrong
//! type) → expired (`iat` outside `now ± tolerance`; `exp` passed or `nbf` not reached, each
//! with `tolerance` of clock difference) → mismatch (signature under no configured key, body
//! hash, then `iss`). Claims are read before the signature only to answer "expired" without
//! key work, and are trusted only once it verified. A token with no `iat` or `exp` never
//! expires: pair such a provider with `dedupe`.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderName;
use jsonwebtoken::DecodingKey;
use serde::de::{Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::clock::{self, human, nanos_since_epoch};
use super::compile::Cx;
use super::keys;
use super::mac::{Algorithm, KeyedMac};
use super::{expired, malformed, mismatch, Request, VerifyError};
use crate::secret::Secret;

/// Longest token accepted, in bytes (a JWS of a few claims is a few hundred).
const MAX_TOKEN: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// Signature length in bytes, where fixed (RS256's is the modulus length).
    fn signature_len(self) -> Option<usize> {
        match self {
            Alg::Hs256 => Some(32),
            Alg::Es256 => Some(64),
            Alg::Rs256 => None,
        }
    }
}

pub(super) struct Jwt {
    alg: Alg,
    header: HeaderName,
    bearer: bool,
    /// HS256: one keyed state per secret.
    macs: Vec<KeyedMac>,
    /// HS256: the first secret, for `hookgate sign`.
    first_secret: Option<Secret>,
    /// RS256/ES256: each key with its JWK `kid`, if any.
    public: Vec<(Option<String>, DecodingKey)>,
    issuer: Option<String>,
    body_claim: Option<String>,
    tolerance: Duration,
}

/// What the token says, before any key is used.
struct Token<'a> {
    signing_input: &'a str,
    signature_b64: &'a str,
    signature: Vec<u8>,
    kid: Option<String>,
    iat: Option<i128>,
    exp: Option<i128>,
    nbf: Option<i128>,
    iss: Option<String>,
    body_sha256: Option<[u8; 32]>,
}

impl Jwt {
    pub(super) fn verify(&self, request: &Request<'_>, now: SystemTime) -> Result<(), VerifyError> {
        let value = super::wire::header(request.headers, &self.header)?;
        let token = self.parse(value)?;
        self.check_times(&token, now)?;
        if !self.signature_matches(&token) {
            return Err(mismatch(format!(
                "{} signature of the token in {} does not verify under the {} configured key(s)",
                self.alg.name(),
                self.header,
                self.macs.len() + self.public.len()
            )));
        }
        if let Some(expected) = &token.body_sha256 {
            let actual: [u8; 32] = Sha256::digest(request.body).into();
            if !bool::from(actual.ct_eq(expected)) {
                return Err(mismatch(format!(
                    "the body's SHA-256 is not the token's {} claim",
                    self.body_claim.as_deref().unwrap_or_default()
                )));
            }
        }
        if let (Some(wanted), Some(iss)) = (&self.issuer, &token.iss) {
            if wanted != iss {
                return Err(mismatch("the token's iss is not the configured issuer"));
            }
        }
        Ok(())
    }

    fn parse<'a>(&self, value: &'a str) -> Result<Token<'a>, VerifyError> {
        let name = &self.header;
        let text = if self.bearer {
            match value.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                _ => return Err(malformed(format!("header {name} is not `Bearer <token>`"))),
            }
        } else {
            value
        };
        if text.len() > MAX_TOKEN {
            return Err(malformed(format!(
                "the token in {name} is longer than {MAX_TOKEN} bytes"
            )));
        }
        let mut parts = text.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(format!(
                "header {name} is not a compact JWS (header.payload.signature)"
            )));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| malformed(format!("the token's {what} is not unpadded base64url")))
        };
        let jose = object(&decode(h, "header")?, "JOSE header")?;
        let alg = jose
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("the token's JOSE header has no alg"))?;
        if alg != self.alg.name() {
            let shown: String = alg.chars().take(16).collect();
            return Err(malformed(format!(
                "the token's alg is {shown:?}; this route accepts only {}",
                self.alg.name()
            )));
        }
        for unsupported in ["crit", "b64"] {
            if jose.contains_key(unsupported) {
                return Err(malformed(format!(
                    "the token's JOSE header has {unsupported:?}, which is not supported"
                )));
            }
        }
        let kid = match jose.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(malformed("the token's kid is not a string")),
        };
        let signature = decode(s, "signature")?;
        if self
            .alg
            .signature_len()
            .is_some_and(|n| n != signature.len())
            || signature.is_empty()
        {
            return Err(malformed(format!(
                "the token's signature is {} bytes, not a {} signature",
                signature.len(),
                self.alg.name()
            )));
        }
        let claims = object(&decode(p, "payload")?, "claims")?;
        let time = |claim: &str| -> Result<Option<i128>, VerifyError> {
            match claims.get(claim) {
                None => Ok(None),
                Some(Value::Number(n)) => {
                    if let Some(i) = n.as_i64() {
                        Ok(Some(i128::from(i) * 1_000_000_000))
                    } else {
                        match n.as_f64() {
                            Some(f) if f.is_finite() && f.abs() < 1e12 => {
                                Ok(Some((f * 1e9) as i128))
                            }
                            _ => Err(malformed(format!("the token's {claim} is out of range"))),
                        }
                    }
                }
                Some(_) => Err(malformed(format!(
                    "the token's {claim} is not a NumericDate (seconds)"
                ))),
            }
        };
        let (iat, exp, nbf) = (time("iat")?, time("exp")?, time("nbf")?);
        let iss = match (&self.issuer, claims.get("iss")) {
            (None, _) => None,
            (Some(_), Some(Value::String(iss))) => Some(iss.clone()),
            (Some(_), _) => return Err(malformed("the token has no iss string")),
        };
        let body_sha256 = match &self.body_claim {
            None => None,
            Some(claim) => {
                let mut digest = [0u8; 32];
                match claims.get(claim) {
                    // The length first: the decoder would also take a `0x` prefix.
                    Some(Value::String(hex))
                        if hex.len() == 64 && hex::decode_to_slice(hex, &mut digest).is_ok() =>
                    {
                        Some(digest)
                    }
                    _ => {
                        return Err(malformed(format!(
                            "the token has no {claim} claim of 64 hex digits"
                        )))
                    }
                }
            }
        };
        Ok(Token {
            signing_input: &text[..h.len() + 1 + p.len()],
            signature_b64: s,
            signature,
            kid,
            iat,
            exp,
            nbf,
            iss,
            body_sha256,
        })
    }

    fn check_times(&self, token: &Token<'_>, now: SystemTime) -> Result<(), VerifyError> {
        if let Some(iat) = token.iat {
            clock::check_window(iat, now, self.tolerance)
                .map_err(|e| expired(format!("iat: {}", e.detail())))?;
        }
        let now = nanos_since_epoch(now);
        let skew = self.tolerance.as_nanos() as i128;
        if let Some(exp) = token.exp {
            if now - exp > skew {
                return Err(expired(format!(
                    "the token expired {} ago, tolerance {}",
                    human(now - exp),
                    human(skew)
                )));
            }
        }
        if let Some(nbf) = token.nbf {
            if nbf - now > skew {
                return Err(expired(format!(
                    "the token is not valid for another {}, tolerance {}",
                    human(nbf - now),
                    human(skew)
                )));
            }
        }
        Ok(())
    }

    fn signature_matches(&self, token: &Token<'_>) -> bool {
        match self.alg {
            Alg::Hs256 => {
                let mut found = Choice::from(0);
                for key in &self.macs {
                    let mut mac = key.clone();
                    mac.update(token.signing_input.as_bytes());
                    found |= mac.finalize().as_slice().ct_eq(&token.signature);
                }
                found.into()
            }
            Alg::Rs256 | Alg::Es256 => {
                let algorithm = match self.alg {
                    Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
                    _ => jsonwebtoken::Algorithm::ES256,
                };
                let named = token
                    .kid
                    .as_deref()
                    .filter(|kid| self.public.iter().any(|(k, _)| k.as_deref() == Some(*kid)));
                self.public
                    .iter()
                    .filter(|(k, _)| named.is_none() || k.as_deref() == named)
                    .any(|(_, key)| {
                        jsonwebtoken::crypto::verify(
                            token.signature_b64,
                            token.signing_input.as_bytes(),
                            key,
                            algorithm,
                        )
                        .unwrap_or(false)
                    })
            }
        }
    }

    /// An HS256 token for `request.body` with the first secret, as of `now` (`iat`, `iss`
    /// and the body claim as configured).
    pub(super) fn sign(
        &self,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        if self.alg != Alg::Hs256 {
            return Err(format!(
                "{} tokens are signed with the sender's private key; the gateway has only the public key, so it cannot sign a test delivery",
                self.alg.name()
            ));
        }
        let secret = self.first_secret.as_ref().ok_or("no secret configured")?;
        let mut claims = Map::new();
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), Value::String(iss.clone()));
        }
        let secs = nanos_since_epoch(now) / 1_000_000_000;
        claims.insert("iat".into(), Value::from(secs as i64));
        if let Some(claim) = &self.body_claim {
            claims.insert(
                claim.clone(),
                Value::String(hex::encode(Sha256::digest(request.body))),
            );
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = KeyedMac::new(Algorithm::Sha256, secret.expose());
        mac.update(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().as_slice())
        );
        let value = if self.bearer {
            format!("Bearer {token}")
        } else {
            token
        };
        Ok(vec![(self.header.to_string(), value)])
    }
}

fn non_empty(cx: &mut Cx, key: &str, value: Option<String>) -> Option<String> {
    match value {
        Some(v) if v.trim().is_empty() => {
            cx.problem(key, "is empty; remove it or set a value");
            None
        }
        other => other,
    }
}

/// A JSON object whose member names each appear once (RFC 7515 §5.2 and RFC 7519 §7.2 require
/// refusing duplicates: parsers disagree about which one counts).
fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, VerifyError> {
    serde_json::from_slice::<UniqueObject>(bytes)
        .map(|o| o.0)
        .map_err(|e| {
            malformed(if e.to_string().contains("appears twice") {
                format!("the token's {what} has a member twice")
            } else {
                format!("the token's {what} is not a JSON object")
            })
        })
}

struct UniqueObject(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value = access.next_value::<Value>()?;
                    if map.insert(key, value).is_some() {
                        return Err(A::Error::custom("a member name appears twice"));
                    }
                }
                Ok(UniqueObject(map))
            }
        }
        d.deserialize_map(Members)
    }
}

pub(super) fn compile(cx: &mut Cx) -> Option<Jwt> {
    cx.allow_only(&[
        "algorithm",
        "header",
        "bearer",
        "public_key",
        "issuer",
        "body_sha256_claim",
        "tolerance",
    ]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let bearer = cx.spec.bearer.unwrap_or(false);
    let header = match (cx.spec.header.clone(), bearer) {
        (Some(h), _) => cx.header_name("header", &h),
        (None, true) => Some(AUTHORIZATION),
        (None, false) => {
            cx.problem(
                "header",
                "the jwt scheme needs the header carrying the token, e.g. header = \"X-Webhook-Signature\", or bearer = true for `Authorization: Bearer <token>`",
            );
            None
        }
    };
    let alg = match cx.spec.algorithm.as_deref() {
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            None => {
                cx.problem(
                    "algorithm",
                    format!("{name:?} is not supported; use \"HS256\" (shared secret), \"RS256\" or \"ES256\" (public key)"),
                );
                None
            }
        },
        None => {
            cx.problem(
                "algorithm",
                "the jwt scheme pins the token's algorithm: set algorithm = \"HS256\" (shared secret), \"RS256\" or \"ES256\" (public key), as the provider documents",
            );
            None
        }
    };
    let issuer = non_empty(cx, "issuer", cx.spec.issuer.clone());
    let body_claim = non_empty(cx, "body_sha256_claim", cx.spec.body_sha256_claim.clone());
    let alg = alg?;
    let (mut macs, mut first_secret, mut public) = (Vec::new(), None, Vec::new());
    if alg == Alg::Hs256 {
        if cx.spec.public_key.is_some() {
            cx.problem(
                "public_key",
                "algorithm HS256 verifies with shared secrets; remove public_key and set secrets (or pin RS256/ES256 if the sender signs with a key pair)",
            );
        }
        let secrets = cx.secrets("the JWS secret you gave the sender");
        first_secret = secrets.first().map(|(_, s)| s.clone());
        macs = secrets
            .iter()
            .map(|(_, s)| KeyedMac::new(Algorithm::Sha256, s.expose()))
            .collect();
    } else {
        if !cx.spec.secrets.is_empty() {
            cx.problem(
                "secrets",
                format!(
                    "algorithm {} verifies with the sender's public key, not a shared secret; remove secrets and set public_key",
                    alg.name()
                ),
            );
        }
        let text = keys::text(cx, "the provider publishes it as PEM or JWK")?;
        match keys::entries(&text) {
            Ok(entries) => {
                for entry in &entries {
                    if let keys::Entry::Jwk(jwk) = entry {
                        if let Some(a) = &jwk.common.key_algorithm {
                            if format!("{a:?}") != alg.name() {
                                cx.problem(
                                    "public_key",
                                    format!(
                                        "holds a JWK for {a:?}, but the route pins {}",
                                        alg.name()
                                    ),
                                );
                                continue;
                            }
                        }
                    }
                    let key = match alg {
                        Alg::Es256 => keys::es256_key(entry),
                        _ => keys::rs256_key(entry),
                    };
                    match key {
                        Ok(k) => public.push((entry.kid().map(str::to_string), k)),
                        Err(e) => cx.problem("public_key", format!("the key {e}")),
                    }
                }
            }
            Err(e) => cx.problem("public_key", format!("the key {e}")),
        }
        if public.is_empty() {
            return None;
        }
    }
    Some(Jwt {
        alg,
        header: header?,
        bearer,
        macs,
        first_secret,
        public,
        issuer,
        body_claim,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use sha2::{Digest as _, Sha256};

    /// A 2048-bit RSA test key pair made for these tests (Python `cryptography`); only the
    /// public half and one token signed with the private half are kept.
    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqpbsQ+t1gGynQblOkfaq\nV2Ku5bi4yOCn0LBT5HZkutkl2MqBdHHJcHlM9WiSm2PwROTKm2tNXek9DRS28uzl\n4osjejp+J82pWduE2QC74C/hiv40VQdWKgdv50P0JSdPEFRevnyy0ILxuyIaJoN2\nLF0fWxre/60ejHBAnLCTDPzpi4/qbdTSKZOz96jQF1wpuLrft1pwNLzsTG5uEwxO\nIerU02aIxnw9ukx9c1Qxpmvqzmaz199qh9hwci4hRb/Az3XtoZV6qAoy5lUqXAaI\nG780py6+olK7xTzOEsAGjUmB/snB+UVVL5vUb3DHYvzXJqdKoCheI0bcltJRIskB\nSQIDAQAB\n-----END PUBLIC KEY-----";
    const RSA_JWK: &str = r#"{"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": "qpbsQ-t1gGynQblOkfaqV2Ku5bi4yOCn0LBT5HZkutkl2MqBdHHJcHlM9WiSm2PwROTKm2tNXek9DRS28uzl4osjejp-J82pWduE2QC74C_hiv40VQdWKgdv50P0JSdPEFRevnyy0ILxuyIaJoN2LF0fWxre_60ejHBAnLCTDPzpi4_qbdTSKZOz96jQF1wpuLrft1pwNLzsTG5uEwxOIerU02aIxnw9ukx9c1Qxpmvqzmaz199qh9hwci4hRb_Az3XtoZV6qAoy5lUqXAaIG780py6-olK7xTzOEsAGjUmB_snB-UVVL5vUb3DHYvzXJqdKoCheI0bcltJRIskBSQ", "e": "AQAB"}"#;
    /// RS256 over {"alg":"RS256","kid":"rsa-1"} . {"iat":1700000000,"sha256":hex(sha256(RSA_BODY))}.
    const RSA_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJpYXQiOjE3MDAwMDAwMDAsInNoYTI1NiI6ImNmODEwNTEzMTA4NzQ5NzAwNTk1YzBkZWZhMzQzYTRlNTZiYzUxMmI1N2I5NGQwNzg1NzA2ZGY5Zjc4MmZhYTEifQ.nonmUe5QgYGJ0rXMsxruELWBkquInrEKSbJ317W3Boz67maUC6JOAXeJsagxVLKqHq_LpH3y3fu1Pl2CC-zwrypP__JF7FTAY4NkD_aebeA_GswpDtDRaIn31obkivfe7i0DEsE_l-UAc6Q8w1ybKVeGR8AIPUEBiaFFT61uE59AWFYPGdiyy2UlsZj5ZBbpRZvdTH7uSyGfjC91-ZHxI2crAgnKpdDOFPlQiEVaWzALLC9Lg4tZFoBoYdvUc6WdwdebuZmEchjuRi41_U6GYsbhI1osIXmumn6kKR0C-PEdHm6xYaca_30y2MIeHoiMUbpyzqdCf1t98_WxoedUdA";
    const RSA_BODY: &[u8] = br#"{"rs":1}"#;
    const NETLIFY: &str = "scheme = \"jwt\"\nalgorithm = \"HS256\"\nheader = \"X-Webhook-Signature\"\nissuer = \"netlify\"\nbody_sha256_claim = \"sha256\"";

    fn b64(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    /// A compact HS256 JWS assembled by hand (not through the scheme's `sign`).
    fn hs256(secret: &str, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn digest(body: &[u8]) -> String {
        hex::encode(Sha256::digest(body))
    }

    const HS: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
    const BODY: &[u8] = br#"{"state":"ready"}"#;

    fn netlify(token: &str, body: &[u8]) -> Msg {
        Msg::post("/netlify", body).header("X-Webhook-Signature", token)
    }

    fn claims(extra: &str) -> String {
        format!(r#"{{"iss":"netlify","sha256":"{}"{extra}}}"#, digest(BODY))
    }

    #[test]
    fn hs256_netlify_checks_in_order() {
        let v = compile(&format!("{NETLIFY}\nsecrets = [\"${{A}}\"]"));
        let rotated = compile(&format!("{NETLIFY}\nsecrets = [\"${{B}}\", \"${{A}}\"]"));
        let wrong = compile(&format!("{NETLIFY}\nsecrets = [\"${{B}}\"]"));
        let a = "secret-a-0123456789";
        let good = netlify(&hs256(a, HS, &claims("")), BODY);
        assert_eq!(reason(good.verify(&v, NOW)), "ok");
        assert_eq!(reason(good.verify(&rotated, NOW)), "ok");
        assert_eq!(reason(good.verify(&wrong, NOW)), "mismatch");
        let mut tampered = good.clone();
        tampered.body = br#"{"state":"error"}"#.to_vec();
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch", "body hash");
        let other_iss = format!(r#"{{"iss":"evil","sha256":"{}"}}"#, digest(BODY));
        assert_eq!(
            reason(netlify(&hs256(a, HS, &other_iss), BODY).verify(&v, NOW)),
            "mismatch"
        );
        let no_iss = format!(r#"{{"sha256":"{}"}}"#, digest(BODY));
        assert_eq!(
            reason(netlify(&hs256(a, HS, &no_iss), BODY).verify(&v, NOW)),
            "malformed"
        );
        let no_hash = r#"{"iss":"netlify"}"#;
        assert_eq!(
            reason(netlify(&hs256(a, HS, no_hash), BODY).verify(&v, NOW)),
            "malformed"
        );

        // Times: iat within ±tolerance; exp and nbf with tolerance of clock difference.
        let at_iat = |iat: u64| netlify(&hs256(a, HS, &claims(&format!(",\"iat\":{iat}"))), BODY);
        assert_eq!(reason(at_iat(NOW).verify(&v, NOW + 300)), "ok");
        assert_eq!(reason(at_iat(NOW).verify(&v, NOW + 301)), "expired");
        assert_eq!(reason(at_iat(NOW).verify(&v, NOW - 301)), "expired");
        let forged_stale = netlify(
            &hs256("nope", HS, &claims(&format!(",\"iat\":{NOW}"))),
            BODY,
        );
        assert_eq!(
            reason(forged_stale.verify(&v, NOW + 301)),
            "expired",
            "window before key"
        );
        let exp = netlify(&hs256(a, HS, &claims(&format!(",\"exp\":{NOW}"))), BODY);
        assert_eq!(reason(exp.verify(&v, NOW + 300)), "ok");
        assert_eq!(reason(exp.verify(&v, NOW + 301)), "expired");
        let nbf = netlify(
            &hs256(a, HS, &claims(&format!(",\"nbf\":{}", NOW + 400))),
            BODY,
        );
        assert_eq!(reason(nbf.verify(&v, NOW)), "expired");
        assert_eq!(reason(nbf.verify(&v, NOW + 100)), "ok");
        let text_iat = netlify(&hs256(a, HS, &claims(",\"iat\":\"1700000000\"")), BODY);
        assert_eq!(reason(text_iat.verify(&v, NOW)), "malformed");

        // Syntax.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims("").as_bytes())
        );
        let twice = hs256(
            a,
            HS,
            &format!(
                r#"{{"iss":"netlify","iss":"netlify","sha256":"{}"}}"#,
                digest(BODY)
            ),
        );
        let crit = hs256(a, r#"{"alg":"HS256","crit":["exp"]}"#, &claims(""));
        let padded = format!("{}=", hs256(a, HS, &claims("")));
        let short_sig = format!(
            "{}.AAAA",
            hs256(a, HS, &claims("")).rsplit_once('.').unwrap().0
        );
        for (what, token) in [
            ("alg none", none.as_str()),
            ("duplicate claim", twice.as_str()),
            ("crit", crit.as_str()),
            ("padding", padded.as_str()),
            ("short signature", short_sig.as_str()),
            ("two parts", "abc.def"),
            ("not base64url", "a*b.c.d"),
        ] {
            assert_eq!(
                reason(netlify(token, BODY).verify(&v, NOW)),
                "malformed",
                "{what}"
            );
        }
        assert_eq!(reason(Msg::post("/n", BODY).verify(&v, NOW)), "missing");

        // hookgate sign makes a token this verifier (and the hand-made check above) accepts.
        let m = Msg::post("/n", BODY);
        let signed = v.sign(&m.request(), at(NOW)).unwrap();
        assert_eq!(reason(m.clone().with(&signed).verify(&v, NOW)), "ok");
        let e = tampered.verify(&v, NOW).unwrap_err();
        assert!(!format!("{e:?}").contains("secret-a"), "{e:?}");
    }

    #[test]
    fn bearer_tokens() {
        let v = compile("scheme = \"jwt\"\nalgorithm = \"HS256\"\nbearer = true\nbody_sha256_claim = \"sha256\"\nsecrets = [\"${A}\"]");
        let token = hs256(
            "secret-a-0123456789",
            HS,
            &format!(r#"{{"sha256":"{}"}}"#, digest(BODY)),
        );
        let m = Msg::post("/j", BODY).header("Authorization", &format!("Bearer {token}"));
        assert_eq!(reason(m.verify(&v, NOW)), "ok");
        let bare = Msg::post("/j", BODY).header("Authorization", &token);
        assert_eq!(reason(bare.verify(&v, NOW)), "malformed");
        let signed = v.sign(&Msg::post("/j", BODY).request(), at(NOW)).unwrap();
        assert!(signed[0].1.starts_with("Bearer "), "{signed:?}");
    }

    fn rsa_spec(key_toml: &str) -> String {
        format!("scheme = \"jwt\"\nalgorithm = \"RS256\"\nheader = \"X-Token\"\nbody_sha256_claim = \"sha256\"\npublic_key = {key_toml}")
    }

    #[test]
    fn rs256_with_pem_or_jwk_and_no_alg_confusion() {
        for key in [format!("'''{RSA_PEM}'''"), format!("'{RSA_JWK}'")] {
            let v = compile(&rsa_spec(&key));
            let good = Msg::post("/r", RSA_BODY).header("X-Token", RSA_TOKEN);
            assert_eq!(reason(good.verify(&v, NOW)), "ok", "{key}");
            let mut tampered = good.clone();
            tampered.body = br#"{"rs":2}"#.to_vec();
            assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
            assert_eq!(reason(good.verify(&v, NOW + 301)), "expired");
            // The signature with one bit flipped.
            let (input, sig) = RSA_TOKEN.rsplit_once('.').unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
            bytes[10] ^= 1;
            let flipped = format!("{input}.{}", b64(&bytes));
            assert_eq!(
                reason(good.clone().header("X-Token", &flipped).verify(&v, NOW)),
                "mismatch"
            );
            // Alg confusion: an HS256 token keyed with the public key's text is refused on
            // its alg, whatever its MAC.
            let confused = hs256(
                RSA_PEM,
                HS,
                &format!(r#"{{"iat":{NOW},"sha256":"{}"}}"#, digest(RSA_BODY)),
            );
            assert_eq!(
                reason(good.clone().header("X-Token", &confused).verify(&v, NOW)),
                "malformed"
            );
            assert!(v
                .sign(&good.request(), at(NOW))
                .unwrap_err()
                .contains("cannot sign"));
        }
    }

    #[test]
    fn es256_with_a_jwk_set_selects_by_kid() {
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32].into()).unwrap(),
            SigningKey::from_bytes(&[2; 32].into()).unwrap(),
        );
        let jwk = |k: &SigningKey, kid: &str| {
            let p = k.verifying_key().to_encoded_point(false);
            format!(
                r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","alg":"ES256","use":"sig","x":"{}","y":"{}"}}"#,
                b64(p.x().unwrap()),
                b64(p.y().unwrap())
            )
        };
        let v = compile(&format!(
            "scheme = \"jwt\"\nalgorithm = \"ES256\"\nheader = \"Plaid-Verification\"\nbody_sha256_claim = \"request_body_sha256\"\npublic_key = '{{\"keys\": [{}, {}]}}'",
            jwk(&k1, "k1"),
            jwk(&k2, "k2")
        ));
        let token = |k: &SigningKey, kid: &str, body: &[u8]| {
            let input = format!(
                "{}.{}",
                b64(format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#).as_bytes()),
                b64(format!(
                    r#"{{"iat":{NOW},"request_body_sha256":"{}"}}"#,
                    digest(body)
                )
                .as_bytes())
            );
            let sig: Signature = k.sign(input.as_bytes());
            format!("{input}.{}", b64(&sig.to_bytes()))
        };
        let m = |t: &str| Msg::post("/plaid", BODY).header("Plaid-Verification", t);
        assert_eq!(reason(m(&token(&k2, "k2", BODY)).verify(&v, NOW)), "ok");
        assert_eq!(reason(m(&token(&k1, "k1", BODY)).verify(&v, NOW)), "ok");
        assert_eq!(
            reason(m(&token(&k2, "k1", BODY)).verify(&v, NOW)),
            "mismatch",
            "kid selects the key"
        );
        assert_eq!(
            reason(m(&token(&k2, "k9", BODY)).verify(&v, NOW)),
            "ok",
            "unknown kid: every key"
        );
        let k3 = SigningKey::from_bytes(&[3; 32].into()).unwrap();
        assert_eq!(
            reason(m(&token(&k3, "k9", BODY)).verify(&v, NOW)),
            "mismatch"
        );
        assert_eq!(
            reason(m(&token(&k1, "k1", b"other")).verify(&v, NOW)),
            "mismatch"
        );
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            &rsa_spec(&format!("'''{RSA_PEM}'''")).replace("RS256", "none"),
            "algorithm",
            "not supported",
        );
        assert_problem(
            "scheme = \"jwt\"\nheader = \"X\"\nsecrets = [\"${A}\"]",
            "algorithm",
            "pins",
        );
        assert_problem(
            &format!(
                "{}\nsecrets = [\"${{A}}\"]",
                rsa_spec(&format!("'''{RSA_PEM}'''"))
            ),
            "secrets",
            "not a shared secret",
        );
        assert_problem(
            &format!("{NETLIFY}\nsecrets = [\"${{A}}\"]\npublic_key = '{RSA_JWK}'"),
            "public_key",
            "remove public_key",
        );
        assert_problem(
            &format!(
                "scheme = \"jwt\"\nalgorithm = \"ES256\"\nheader = \"X\"\npublic_key = '{RSA_JWK}'"
            ),
            "public_key",
            "holds a JWK for RS256",
        );
        assert_problem(&rsa_spec("\"${NOPE}\""), "public_key", "NOPE is not set");
        assert_problem(
            "scheme = \"jwt\"\nalgorithm = \"HS256\"\nsecrets = [\"${A}\"]",
            "header",
            "bearer = true",
        );
        assert_problem(
            &format!(
                "{}\nsecrets = [\"${{A}}\"]",
                NETLIFY.replace("\"netlify\"", "\" \"")
            ),
            "issuer",
            "empty",
        );
        assert_problem(
            &format!("{NETLIFY}\nsecrets = [\"${{A}}\"]\nprefix = \"x\""),
            "prefix",
            "remove it",
        );
    }
}
