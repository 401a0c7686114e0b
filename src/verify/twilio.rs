//! Twilio: `X-Twilio-Signature = base64(HMAC-SHA1(auth token, URL + params))`
//! (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>).
//!
//! - **URL**: the full URL Twilio requested, "from the protocol through the end of the query
//!   string": `public_url` (scheme, host, port if any, path prefix) + the request target
//!   exactly as sent, percent-escapes, `+`, parameter order, repeats and an empty `?` included
//!   (see `url.rs`; Twilio's error 57012: "keep any query parameters URL-encoded",
//!   <https://www.twilio.com/docs/api/errors/57012>). Ports: Twilio's SDKs
//!   (twilio-python `RequestValidator.validate`, twilio-node `validateRequest`) try the URL
//!   with its port removed (any port) and with the scheme's default port added, because
//!   Twilio's back end signs either; so do we: `public_url` as configured, and toggled.
//!   twilio-node also tries a re-encoded query, undoing its own `new URL()` normalisation
//!   (twilio-node#1059); we hold the target as sent, so, like twilio-python, we do not.
//! - **Params**: the POST form parameters sorted by name (then value), each appended as
//!   `name + value` with no separators. Duplicate identical pairs count once, as in Twilio's
//!   SDK. JSON (and other non-form) bodies are covered instead by a `bodySHA256=<hex SHA-256 of
//!   the body>` query parameter, which is checked against the body.
//! - `algorithm = "sha256"` is for Twilio's SharedKey HMAC-SHA256 signing. Primary and
//!   secondary auth tokens: list both.
//!
//! Caveat (Twilio's design, documented rather than fixed): form parameters are signed after
//! decoding and sorting, so for form bodies the signature does not pin the exact bytes:
//! percent-encoding, the order of parameters (and of repeated names) and unseparated
//! `name+value` boundaries can change without breaking it. Only JSON bodies with `bodySHA256`
//! are byte-exact. No timestamp: dedupe on `I-Twilio-Idempotency-Token`.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::CONTENT_TYPE;
use http::HeaderName;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::compile::Cx;
use super::mac::{Algorithm, KeyedMac, MAX_MAC};
use super::url;
use super::wire::{self, Encoding, SigList};
use super::{malformed, mismatch, Request, VerifyError};

const SIGNATURE: HeaderName = HeaderName::from_static("x-twilio-signature");

pub(super) struct Twilio {
    algorithm: Algorithm,
    keys: Vec<KeyedMac>,
    /// `public_url` as configured, then with the default port toggled (when meaningful).
    origins: Vec<String>,
}

/// A decoded form parameter: name, value.
type Param<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// How the body is covered by the signature.
enum Coverage<'a> {
    /// Sorted, decoded form parameters.
    Params(Vec<Param<'a>>),
    /// `bodySHA256` in the URL (checked separately), or an empty body.
    Url,
}

impl Twilio {
    pub(super) fn verify(&self, request: &Request<'_>) -> Result<(), VerifyError> {
        let value = wire::header(request.headers, &SIGNATURE)?;
        let mut sigs = SigList::new(self.algorithm.output_len());
        if !sigs.push(Encoding::Base64, value)? {
            return Err(malformed(format!(
                "header {SIGNATURE} is not base64 of a {}-byte {}",
                self.algorithm.output_len(),
                self.algorithm.name()
            )));
        }
        url::origin_form(request.path_and_query)?;
        let coverage = coverage(request)?;
        let matched = self.keys.iter().any(|key| {
            self.origins
                .iter()
                .any(|origin| sigs.matches(compute(key, origin, request, &coverage).as_slice()))
        });
        if matched {
            Ok(())
        } else {
            Err(mismatch(format!(
                "header {SIGNATURE} matches the URL and parameters under none of the {} configured token(s)",
                self.keys.len()
            )))
        }
    }

    pub(super) fn sign(&self, request: &Request<'_>) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("no auth token configured")?;
        url::origin_form(request.path_and_query).map_err(|e| e.detail().to_string())?;
        let coverage = match coverage(request) {
            Ok(c) => c,
            Err(VerifyError::Malformed(_)) => {
                return Err(format!(
                    "Twilio signs non-form bodies through the URL: add bodySHA256={} to the query string",
                    hex::encode(Sha256::digest(request.body))
                ))
            }
            // A wrong bodySHA256 in the URL.
            Err(e) => return Err(e.to_string()),
        };
        let mac = compute(key, &self.origins[0], request, &coverage);
        Ok(vec![(
            SIGNATURE.to_string(),
            STANDARD.encode(mac.as_slice()),
        )])
    }
}

fn compute(
    key: &KeyedMac,
    origin: &str,
    request: &Request<'_>,
    coverage: &Coverage<'_>,
) -> super::mac::Digest {
    let mut mac = key.clone();
    mac.update(origin.as_bytes());
    mac.update(request.path_and_query.as_bytes());
    if let Coverage::Params(params) = coverage {
        for (name, value) in params {
            mac.update(name);
            mac.update(value);
        }
    }
    mac.finalize()
}

/// Decides how the body is covered; checks `bodySHA256` against the body (public data, so
/// before any key is used).
fn coverage<'a>(request: &Request<'a>) -> Result<Coverage<'a>, VerifyError> {
    let query = request
        .path_and_query
        .split_once('?')
        .map_or("", |(_, q)| q);
    let body_hash = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("bodySHA256="));
    if let Some(expected) = body_hash {
        let mut decoded = [0u8; MAX_MAC];
        if !Encoding::Hex.decode(expected, 32, &mut decoded) {
            return Err(malformed("query parameter bodySHA256 is not 64 hex digits"));
        }
        let actual = Sha256::digest(request.body);
        if bool::from(actual.as_slice().ct_eq(&decoded[..32])) {
            return Ok(Coverage::Url);
        }
        return Err(mismatch(
            "body does not match the bodySHA256 query parameter",
        ));
    }
    let is_form = match wire::optional_header(request.headers, &CONTENT_TYPE)? {
        None => true,
        Some(ct) => ct.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }),
    };
    if is_form {
        Ok(Coverage::Params(form_params(request.body)))
    } else if request.body.is_empty() {
        Ok(Coverage::Url)
    } else {
        Err(malformed(
            "a non-form body is covered only by a bodySHA256 query parameter, and the URL has none",
        ))
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space; invalid `%` escapes
/// stay literal), sorted and deduplicated as Twilio's SDK does.
fn form_params(body: &[u8]) -> Vec<Param<'_>> {
    let mut params: Vec<_> = body
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    params.sort();
    params.dedup();
    params
}

fn percent_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(input);
    }
    let hex_value = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_value);
                let lo = input.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// `public_url` and, like Twilio's SDKs, the same URL with its port toggled: the scheme's
/// default port added when there is none, any port removed when there is one
/// (twilio-python `add_port`/`remove_port`).
fn origins(public_url: &str) -> Vec<String> {
    let (scheme, rest) = public_url
        .split_once("://")
        .unwrap_or(("https", public_url));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    };
    let default_port = if scheme == "https" { "443" } else { "80" };
    let toggled = match port {
        Some(_) => format!("{scheme}://{host}{path}"),
        None => format!("{scheme}://{host}:{default_port}{path}"),
    };
    vec![public_url.to_string(), toggled]
}

pub(super) fn compile(cx: &mut Cx) -> Option<Twilio> {
    cx.allow_only(&["public_url", "algorithm"]);
    let algorithm = match cx.spec.algorithm.as_deref() {
        None | Some("sha1") => Algorithm::Sha1,
        Some("sha256") => Algorithm::Sha256,
        Some(other) => {
            cx.problem(
                "algorithm",
                format!("{other:?} is not a Twilio algorithm; use \"sha1\" (auth token) or \"sha256\" (SharedKey)"),
            );
            Algorithm::Sha1
        }
    };
    let public_url = cx.public_url();
    let secrets = cx.secrets(
        "the account's Auth Token (Console → Account → API keys & tokens); list the secondary token too while rotating",
    );
    Some(Twilio {
        algorithm,
        keys: secrets
            .iter()
            .map(|(_, s)| KeyedMac::new(algorithm, s.expose()))
            .collect(),
        origins: origins(&public_url?),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const FORM: &[u8] = b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";

    fn published() -> super::super::Verifier {
        super::super::Verifier::compile(
            &spec("scheme = \"twilio\"\npublic_url = \"https://mycompany.com\"\nsecrets = [\"t\"]"),
            &|_| Ok(crate::secret::Secret::new("12345")),
        )
        .unwrap()
    }

    #[test]
    fn published_sdk_vectors() {
        let v = published();
        let form = Msg::post("/myapp.php?foo=1&bar=2", FORM)
            .header("Content-Type", "application/x-www-form-urlencoded");
        let ok = form
            .clone()
            .header("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(reason(ok.verify(&v, NOW)), "ok");
        let port = form
            .clone()
            .header("X-Twilio-Signature", "kvajT1Ptam85bY51eRf/AJRuM3w=");
        assert_eq!(reason(port.verify(&v, NOW)), "ok");
        let signed = v.sign(&form.request(), at(NOW)).unwrap();
        assert_eq!(signed[0].1, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        let json = Msg::post(
            "/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
            b"{\"property\": \"value\", \"boolean\": true}",
        )
        .header("Content-Type", "application/json")
        .header("X-Twilio-Signature", "a9nBmqA0ju/hNViExpshrM61xv4=");
        assert_eq!(reason(json.verify(&v, NOW)), "ok");
        let mut tampered = json.clone();
        tampered.body = b"{\"property\": \"value\", \"boolean\": false}".to_vec();
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
    }

    #[test]
    fn suite_json_and_form() {
        let json_path = format!(
            "/voice?bodySHA256={}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{\"a\":1}"))
        );
        Suite {
            spec_toml: "scheme = \"twilio\"\npublic_url = \"https://hooks.example.com\"",
            whsec: false,
            msg: Msg::post(&json_path, b"{\"a\":1}").header("Content-Type", "application/json"),
            signature_header: "x-twilio-signature",
            tolerance: None,
        }
        .run();
        Suite {
            spec_toml: "scheme = \"twilio\"\npublic_url = \"https://hooks.example.com:8443/prefix\"\nalgorithm = \"sha256\"",
            whsec: false,
            msg: Msg::post("/voice", b"Digits=1&From=%2B1"),
            signature_header: "x-twilio-signature",
            tolerance: None,
        }
        .run();
    }

    #[test]
    fn form_decoding_and_sorting() {
        let params = super::form_params(b"b=2&a=x+y&a=%41%4&&c&a=x+y");
        let flat: Vec<(String, String)> = params
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(
            flat,
            [("a", "A%4"), ("a", "x y"), ("b", "2"), ("c", "")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn json_without_body_hash_cannot_be_verified_or_signed() {
        let v = published();
        let m = Msg::post("/x", b"{}").header("Content-Type", "application/json");
        let err = v.sign(&m.request(), at(NOW)).unwrap_err();
        assert!(
            err.contains(
                "add bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
            ),
            "{err}"
        );
        let m = m.header("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(reason(m.verify(&v, NOW)), "malformed");
        let bad_hash = Msg::post("/x?bodySHA256=zz", b"{}")
            .header("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(reason(bad_hash.verify(&v, NOW)), "malformed");
    }

    #[test]
    fn port_toggling() {
        assert_eq!(super::origins("https://a.com")[1], "https://a.com:443");
        assert_eq!(super::origins("https://a.com:443/p")[1], "https://a.com/p");
        assert_eq!(super::origins("http://a.com:1234")[1], "http://a.com");
        assert_eq!(super::origins("http://[::1]")[1], "http://[::1]:80");
        assert_eq!(super::origins("http://[::1]:8080/x")[1], "http://[::1]/x");
    }

    #[test]
    fn compile_errors() {
        assert_problem(
            "scheme = \"twilio\"\nsecrets = [\"${A}\"]",
            "public_url",
            "set public_url",
        );
        assert_problem(
            "scheme = \"twilio\"\nsecrets = [\"${A}\"]\npublic_url = \"https://a.com\"\nalgorithm = \"md5\"",
            "algorithm",
            "not a Twilio algorithm",
        );
    }
}
