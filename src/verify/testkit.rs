//! Test helpers shared by the scheme files: a fake secret resolver, requests that own their
//! parts, specs written as TOML (so deserialization is exercised too), and the suite of
//! checks every scheme must pass (valid, tampered, wrong secret, rotation, window, missing,
//! malformed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Request, Verifier, VerifyError, VerifySpec};
use crate::problem::Problem;
use crate::secret::Secret;

pub(crate) const NOW: u64 = 1_700_000_000;

pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `${A}`/`${B}`: plain secrets; `${WH_A}`/`${WH_B}`: Standard Webhooks `whsec_` secrets;
/// `${EMPTY}`: empty; anything else fails like an unset variable.
pub(crate) fn resolve(reference: &str) -> Result<Secret, String> {
    let name = reference
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("{reference:?} is not a ${{ENV}} reference"))?;
    let value = match name {
        "A" => "secret-a-0123456789".to_string(),
        "B" => "secret-b-9876543210".to_string(),
        "WH_A" => format!("whsec_{}", STANDARD.encode([0xa1u8; 32])),
        "WH_B" => format!("whsec_{}", STANDARD.encode([0xb2u8; 32])),
        "EMPTY" => String::new(),
        other => return Err(format!("environment variable {other} is not set")),
    };
    Ok(Secret::new(value))
}

/// A request on a route without `verify` (every request passes): the [`Verified`]
/// that event and dedupe tests read from.
pub(crate) fn unsigned<'a>(headers: &'a http::HeaderMap, body: &'a [u8]) -> super::Verified<'a> {
    let request = super::Request {
        method: "POST",
        path_and_query: "/hook",
        headers,
        body,
    };
    super::Verifier::disabled()
        .verify(&request, at(NOW))
        .expect("a route without verify passes every request")
}

pub(crate) fn spec(toml_text: &str) -> VerifySpec {
    match toml::from_str(toml_text) {
        Ok(s) => s,
        Err(e) => panic!("bad test spec {toml_text:?}: {e}"),
    }
}

pub(crate) fn compile(toml_text: &str) -> Verifier {
    match Verifier::compile(&spec(toml_text), &resolve) {
        Ok(v) => v,
        Err(problems) => panic!("{toml_text:?} did not compile: {problems:?}"),
    }
}

pub(crate) fn problems(toml_text: &str) -> Vec<Problem> {
    match Verifier::compile(&spec(toml_text), &resolve) {
        Ok(_) => panic!("{toml_text:?} compiled but should not"),
        Err(problems) => problems,
    }
}

/// Asserts that compiling `toml_text` reports a problem at `key` whose message contains
/// `needle`.
pub(crate) fn assert_problem(toml_text: &str, key: &str, needle: &str) {
    let found = problems(toml_text);
    assert!(
        found
            .iter()
            .any(|p| p.key == key && p.message.contains(needle)),
        "expected a problem at {key:?} containing {needle:?}, got {found:#?}"
    );
}

/// A request that owns its parts.
#[derive(Clone)]
pub(crate) struct Msg {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Msg {
    pub(crate) fn post(path: &str, body: &[u8]) -> Msg {
        Msg {
            method: "POST".into(),
            path: path.into(),
            headers: HeaderMap::new(),
            body: body.to_vec(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Msg {
        self.set(name, value);
        self
    }

    pub(crate) fn set(&mut self, name: &str, value: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
        let value = HeaderValue::from_str(value).expect("test header value");
        self.headers.insert(name, value);
    }

    pub(crate) fn with(mut self, headers: &[(String, String)]) -> Msg {
        for (n, v) in headers {
            self.set(n, v);
        }
        self
    }

    pub(crate) fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path_and_query: &self.path,
            headers: &self.headers,
            body: &self.body,
        }
    }

    pub(crate) fn verify(&self, v: &Verifier, now: u64) -> Result<(), VerifyError> {
        v.verify(&self.request(), at(now)).map(|_| ())
    }
}

pub(crate) fn reason(r: Result<(), VerifyError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.reason(),
    }
}

/// The checks every signing scheme must pass. `spec_toml` has no `secrets` line; the suite
/// adds `[A]`, `[B]` and `[B, A]` (or the `WH_` variants). `signature_header` is the header
/// whose corruption must be malformed; `tolerance` is the scheme's default window, if any.
pub(crate) struct Suite<'a> {
    pub(crate) spec_toml: &'a str,
    pub(crate) whsec: bool,
    pub(crate) msg: Msg,
    pub(crate) signature_header: &'a str,
    pub(crate) tolerance: Option<u64>,
}

impl Suite<'_> {
    fn with_secrets(&self, names: &[&str]) -> String {
        let prefix = if self.whsec { "WH_" } else { "" };
        let list: Vec<String> = names
            .iter()
            .map(|n| format!("\"${{{prefix}{n}}}\""))
            .collect();
        format!("{}\nsecrets = [{}]", self.spec_toml, list.join(", "))
    }

    pub(crate) fn run(&self) {
        let v_a = compile(&self.with_secrets(&["A"]));
        let v_b = compile(&self.with_secrets(&["B"]));
        let v_rotated = compile(&self.with_secrets(&["B", "A"]));
        let signed_headers = v_a.sign(&self.msg.request(), at(NOW)).expect("sign");
        let signed = self.msg.clone().with(&signed_headers);
        let ctx = self.spec_toml;

        assert_eq!(reason(signed.verify(&v_a, NOW)), "ok", "{ctx}: valid");
        assert_eq!(
            reason(signed.verify(&v_rotated, NOW)),
            "ok",
            "{ctx}: rotated second secret"
        );
        assert_eq!(
            reason(signed.verify(&v_b, NOW)),
            "mismatch",
            "{ctx}: wrong secret"
        );

        let mut tampered = signed.clone();
        tampered.body.push(b' ');
        assert_eq!(
            reason(tampered.verify(&v_a, NOW)),
            "mismatch",
            "{ctx}: tampered body"
        );

        if let Some(tol) = self.tolerance {
            assert_eq!(
                reason(signed.verify(&v_a, NOW + tol)),
                "ok",
                "{ctx}: edge of window"
            );
            assert_eq!(
                reason(signed.verify(&v_a, NOW + tol + 1)),
                "expired",
                "{ctx}: stale"
            );
            assert_eq!(
                reason(signed.verify(&v_a, NOW - tol - 1)),
                "expired",
                "{ctx}: future"
            );
            // Expiry is decided before the MAC: a stale forgery is "expired" too; except where
            // the timestamp is inside the body (Linear), which is read only once authenticated.
            let stale_forgery = if self.spec_toml.contains("linear") {
                "mismatch"
            } else {
                "expired"
            };
            assert_eq!(
                reason(signed.verify(&v_b, NOW + tol + 1)),
                stale_forgery,
                "{ctx}: stale, wrong key"
            );
        }

        for (name, _) in &signed_headers {
            let mut m = signed.clone();
            m.headers.remove(name.as_str());
            assert_eq!(
                reason(m.verify(&v_a, NOW)),
                "missing",
                "{ctx}: without {name}"
            );
        }

        let mut garbled = signed.clone();
        garbled.set(self.signature_header, "garbage");
        assert_eq!(
            reason(garbled.verify(&v_a, NOW)),
            "malformed",
            "{ctx}: garbage signature"
        );
        let mut doubled = signed.clone();
        let value = doubled.headers[self.signature_header].clone();
        doubled.headers.append(
            HeaderName::from_bytes(self.signature_header.as_bytes()).expect("name"),
            value,
        );
        assert_eq!(
            reason(doubled.verify(&v_a, NOW)),
            "malformed",
            "{ctx}: repeated header"
        );
    }
}
