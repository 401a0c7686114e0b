//! Public keys for the asymmetric schemes (`ecdsa`, and `jwt` with RS256/ES256), read from the
//! route's `public_key`: a `file:` path (relative to the config file, re-read on every reload
//! like a `file:` secret), a `${ENV}` reference, or the text itself. The text may be:
//! - PEM: one or more `-----BEGIN PUBLIC KEY-----` blocks (SubjectPublicKeyInfo, RFC 5280
//!   §4.1.2.7) or, for RSA, `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1);
//! - a JWK or a JWK Set (`{"keys": [...]}`, RFC 7517 §4–5), each key's `kid` kept so that a
//!   token naming a `kid` is checked against that key only;
//! - bare base64 of the DER SubjectPublicKeyInfo, the form SendGrid shows its verification key
//!   in (<https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>).
//!
//! Several keys (blocks or JWKS entries) are accepted for rotation. Owns turning that text into
//! verifying keys, with messages that say which form was expected; never echoes key text.
//! Does not own resolving references (the config's resolver) or verification itself.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;

use super::compile::Cx;

/// One key of the configured text, before it is read for a given algorithm.
pub(super) enum Entry {
    /// One PEM block: its label (`PUBLIC KEY`, `RSA PUBLIC KEY`, …) and the whole block.
    Pem { label: String, block: String },
    /// DER SubjectPublicKeyInfo (from bare base64).
    Der(Vec<u8>),
    /// One JWK, boxed (it is large).
    Jwk(Box<Jwk>),
}

impl Entry {
    /// The JWK `kid`, if the key has one.
    pub(super) fn kid(&self) -> Option<&str> {
        match self {
            Entry::Jwk(jwk) => jwk.common.key_id.as_deref(),
            _ => None,
        }
    }
}

/// The text of `public_key`, resolved; reports a missing key with `hint` (where the provider
/// shows it).
pub(super) fn text(cx: &mut Cx, hint: &str) -> Option<String> {
    let Some(reference) = cx.spec.public_key.clone() else {
        cx.problem(
            "public_key",
            format!(
                "the {} scheme verifies with a public key: set public_key = \"file:keys/provider.pem\" (PEM, JWK or JWK Set; relative to the config file) or the key itself; {hint}",
                cx.scheme
            ),
        );
        return None;
    };
    if reference.starts_with("${") || reference.starts_with("file:") {
        match cx.resolve(&reference) {
            Ok(secret) => match String::from_utf8(secret.expose().to_vec()) {
                Ok(text) => Some(text),
                Err(_) => {
                    cx.problem(
                        "public_key",
                        format!("{reference:?} is not text; expected PEM, a JWK or JWK Set, or base64 DER"),
                    );
                    None
                }
            },
            Err(e) => {
                cx.problem("public_key", e);
                None
            }
        }
    } else {
        Some(reference)
    }
}

/// Splits the key text into its keys. `Err` says which form was recognised and what is wrong.
pub(super) fn entries(text: &str) -> Result<Vec<Entry>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.starts_with("-----BEGIN ") {
        return pem_blocks(text);
    }
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!("looks like JSON but does not parse ({e}); expected a JWK or a JWK Set")
        })?;
        let jwks: Vec<Jwk> = if value.get("keys").is_some() {
            serde_json::from_value::<JwkSet>(value)
                .map_err(|e| format!("is not a JWK Set: {e}"))?
                .keys
        } else {
            vec![serde_json::from_value::<Jwk>(value).map_err(|e| format!("is not a JWK: {e}"))?]
        };
        if jwks.is_empty() {
            return Err("is a JWK Set with no keys".into());
        }
        for jwk in &jwks {
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                return Err(
                    "holds a JWK whose \"use\" is not \"sig\"; only signature keys verify deliveries"
                        .into(),
                );
            }
        }
        return Ok(jwks.into_iter().map(|j| Entry::Jwk(Box::new(j))).collect());
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(compact).map_err(|_| {
        "is neither PEM (-----BEGIN PUBLIC KEY-----), a JWK/JWK Set, nor base64 DER".to_string()
    })?;
    Ok(vec![Entry::Der(der)])
}

fn pem_blocks(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after
            .find("-----")
            .ok_or("has a PEM -----BEGIN line that does not end in -----")?;
        let label = after[..label_end].to_string();
        let end_marker = format!("-----END {label}-----");
        let end = rest
            .find(&end_marker)
            .ok_or_else(|| format!("has a PEM block {label:?} without its {end_marker} line"))?;
        let block = rest[start..end + end_marker.len()].to_string();
        if label.contains("PRIVATE") {
            return Err(format!(
                "holds a {label}: give the provider's public key, never a private key"
            ));
        }
        out.push(Entry::Pem { label, block });
        rest = &rest[end + end_marker.len()..];
    }
    Ok(out)
}

/// A P-256 verifying key from one entry (SPKI PEM/DER, or an EC P-256 JWK).
pub(super) fn p256_key(entry: &Entry) -> Result<VerifyingKey, String> {
    let not_p256 = "is not an EC P-256 public key (SubjectPublicKeyInfo with curve prime256v1)";
    match entry {
        Entry::Pem { label, block } if label == "PUBLIC KEY" => {
            VerifyingKey::from_public_key_pem(block).map_err(|_| not_p256.to_string())
        }
        Entry::Pem { label, .. } => Err(format!(
            "holds a PEM {label:?}; expected -----BEGIN PUBLIC KEY----- of an EC P-256 key"
        )),
        Entry::Der(der) => VerifyingKey::from_public_key_der(der).map_err(|_| not_p256.to_string()),
        Entry::Jwk(jwk) => match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                let x = URL_SAFE_NO_PAD.decode(&ec.x).ok().filter(|x| x.len() == 32);
                let y = URL_SAFE_NO_PAD.decode(&ec.y).ok().filter(|y| y.len() == 32);
                let (Some(x), Some(y)) = (x, y) else {
                    return Err("holds an EC JWK whose x/y are not 32-byte base64url".into());
                };
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| "holds an EC JWK whose point is not on P-256".to_string())
            }
            _ => Err("holds a JWK that is not an EC P-256 key (kty \"EC\", crv \"P-256\")".into()),
        },
    }
}

/// An ES256 decoding key: the P-256 key checked by [`p256_key`], handed to `jsonwebtoken` as
/// its uncompressed point.
pub(super) fn es256_key(entry: &Entry) -> Result<DecodingKey, String> {
    let key = p256_key(entry)?;
    Ok(DecodingKey::from_ec_der(
        key.to_encoded_point(false).as_bytes(),
    ))
}

/// An RS256 decoding key (SPKI or PKCS#1 PEM, SPKI DER, or an RSA JWK), of at least 2048 bits.
pub(super) fn rs256_key(entry: &Entry) -> Result<DecodingKey, String> {
    let not_rsa = "is not an RSA public key";
    match entry {
        Entry::Pem { label, block } if label == "PUBLIC KEY" || label == "RSA PUBLIC KEY" => {
            let key =
                DecodingKey::from_rsa_pem(block.as_bytes()).map_err(|_| not_rsa.to_string())?;
            let body: String = block
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .flat_map(|line| line.chars().filter(|c| !c.is_ascii_whitespace()))
                .collect();
            let der = STANDARD.decode(body).map_err(|_| not_rsa.to_string())?;
            let pkcs1 = if label == "PUBLIC KEY" {
                spki_subject_key(&der)
            } else {
                Some(der.as_slice())
            };
            at_least_2048(pkcs1, not_rsa)?;
            Ok(key)
        }
        Entry::Pem { label, .. } => Err(format!(
            "holds a PEM {label:?}; expected -----BEGIN PUBLIC KEY----- of an RSA key"
        )),
        Entry::Der(der) => {
            let block = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                STANDARD.encode(der)
            );
            let key =
                DecodingKey::from_rsa_pem(block.as_bytes()).map_err(|_| not_rsa.to_string())?;
            at_least_2048(spki_subject_key(der), not_rsa)?;
            Ok(key)
        }
        Entry::Jwk(jwk) => match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = URL_SAFE_NO_PAD
                    .decode(rsa.n.trim_start_matches('A'))
                    .map_err(|_| "holds an RSA JWK whose n is not base64url".to_string())?;
                // Leading zero bytes (base64url 'A's) do not count towards the size.
                if n.len() < 256 {
                    return Err(format!(
                        "holds a {}-bit RSA key; RS256 needs at least 2048 bits",
                        n.len() * 8
                    ));
                }
                DecodingKey::from_jwk(jwk)
                    .map_err(|_| "holds an RSA JWK that does not parse".into())
            }
            _ => Err("holds a JWK that is not an RSA key (kty \"RSA\")".into()),
        },
    }
}

/// Refuses an RSA key under 2048 bits (the JWK branch's rule, for PEM and DER keys too):
/// `pkcs1` is its DER `RSAPublicKey` (RFC 8017 §A.1.1), `None` when it could not be found.
fn at_least_2048(pkcs1: Option<&[u8]>, not_rsa: &str) -> Result<(), String> {
    let bits = pkcs1
        .and_then(|der| der_field(der, 0x30))
        .and_then(|(sequence, _)| der_field(sequence, 0x02))
        .map(|(modulus, _)| {
            let significant: &[u8] = match modulus.iter().position(|&b| b != 0) {
                Some(first) => &modulus[first..],
                None => &[],
            };
            significant.first().map_or(0, |top| {
                significant.len() * 8 - top.leading_zeros() as usize
            })
        })
        .ok_or_else(|| not_rsa.to_string())?;
    if bits < 2048 {
        return Err(format!(
            "holds a {bits}-bit RSA key; RS256 needs at least 2048 bits"
        ));
    }
    Ok(())
}

/// The subject public key (for RSA, the DER `RSAPublicKey`) of a DER SubjectPublicKeyInfo
/// (RFC 5280 §4.1): SEQUENCE { SEQUENCE algorithm, BIT STRING key }.
fn spki_subject_key(der: &[u8]) -> Option<&[u8]> {
    let (info, _) = der_field(der, 0x30)?;
    let (_, rest) = der_field(info, 0x30)?;
    let (bits, _) = der_field(rest, 0x03)?;
    match bits.split_first()? {
        (0, key) => Some(key),
        _ => None,
    }
}

/// One DER field with `tag` at the start of `input`: its contents and what follows.
fn der_field(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_recognised() {
        assert!(entries("").is_err());
        let e = entries("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
            .err()
            .unwrap();
        assert!(e.contains("never a private key"), "{e}");
        assert!(entries("-----BEGIN PUBLIC KEY-----\nAAAA").is_err());
        let two = "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n";
        assert_eq!(entries(two).unwrap().len(), 2);
        assert!(matches!(entries("AAEC").unwrap()[0], Entry::Der(_)));
        assert!(entries("not a key!").is_err());
        assert!(entries("{\"keys\": []}").err().unwrap().contains("no keys"));
        assert!(entries("{\"kty\": \"oct\", \"k\": \"AA\", \"use\": \"enc\"}").is_err());
        assert!(entries("{").err().unwrap().contains("JWK"));
    }
}
