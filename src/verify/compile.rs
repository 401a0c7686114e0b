//! Shared validation of a `verify` table while a scheme compiles it: which optional keys the
//! scheme accepts, secret resolution, tolerance, public URL and header names. Every check
//! records a [`Problem`] keyed relative to the table and carries on, so one pass reports
//! everything.
//!
//! Owns only the checks common to several schemes; each scheme file owns its own rules.

use std::time::Duration;

use http::HeaderName;

use super::VerifySpec;
use crate::problem::Problem;
use crate::secret::Secret;
use crate::units::parse_duration;

pub(super) struct Cx<'s> {
    pub(super) spec: &'s VerifySpec,
    pub(super) scheme: &'static str,
    resolve: &'s dyn Fn(&str) -> Result<Secret, String>,
    problems: Vec<Problem>,
}

impl<'s> Cx<'s> {
    pub(super) fn new(
        spec: &'s VerifySpec,
        scheme: &'static str,
        resolve: &'s dyn Fn(&str) -> Result<Secret, String>,
    ) -> Self {
        Cx {
            spec,
            scheme,
            resolve,
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    pub(super) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    pub(super) fn resolve(&self, reference: &str) -> Result<Secret, String> {
        (self.resolve)(reference)
    }

    /// Reports every optional key that is set but not in `allowed`.
    pub(super) fn allow_only(&mut self, allowed: &[&str]) {
        let s = self.spec;
        let set = [
            ("tolerance", s.tolerance.is_some()),
            ("public_url", s.public_url.is_some()),
            ("public_key", s.public_key.is_some()),
            ("sha1_fallback", s.sha1_fallback.is_some()),
            ("algorithm", s.algorithm.is_some()),
            ("header", s.header.is_some()),
            ("encoding", s.encoding.is_some()),
            ("prefix", s.prefix.is_some()),
            ("separator", s.separator.is_some()),
            ("signed", s.signed.is_some()),
            ("timestamp_header", s.timestamp_header.is_some()),
            ("timestamp_format", s.timestamp_format.is_some()),
            ("id_header", s.id_header.is_some()),
            ("bearer", s.bearer.is_some()),
            ("issuer", s.issuer.is_some()),
            ("body_sha256_claim", s.body_sha256_claim.is_some()),
        ];
        for (key, is_set) in set {
            if is_set && !allowed.contains(&key) {
                let why = match key {
                    "tolerance" => format!(
                        "{} deliveries carry no signed timestamp, so there is no window to check",
                        self.scheme
                    ),
                    _ => format!("the {} scheme does not use it", self.scheme),
                };
                let accepted = if allowed.is_empty() {
                    "it takes only scheme and secrets".to_string()
                } else {
                    format!("it accepts {}", allowed.join(", "))
                };
                self.problem(key, format!("{why}; remove it ({accepted})"));
            }
        }
    }

    /// Resolves every secret, with its index. Reports an empty list (with `hint` saying where
    /// the provider shows the secret), resolver failures and empty values.
    pub(super) fn secrets(&mut self, hint: &str) -> Vec<(usize, Secret)> {
        if self.spec.secrets.is_empty() {
            self.problem(
                "secrets",
                format!(
                    "the {} scheme needs at least one secret: secrets = [\"${{...}}\"] with {hint}",
                    self.scheme
                ),
            );
        }
        let mut out = Vec::new();
        for (i, reference) in self.spec.secrets.iter().enumerate() {
            match (self.resolve)(reference) {
                Ok(secret) if secret.expose().is_empty() => self.problem(
                    format!("secrets[{i}]"),
                    format!(
                        "{} resolves to an empty value; set it to {hint}",
                        shown(reference)
                    ),
                ),
                Ok(secret) => out.push((i, secret)),
                Err(e) => self.problem(format!("secrets[{i}]"), e),
            }
        }
        out
    }

    /// Reports secrets on a scheme that takes none.
    pub(super) fn no_secrets(&mut self, instead: &str) {
        if !self.spec.secrets.is_empty() {
            self.problem(
                "secrets",
                format!(
                    "the {} scheme uses no shared secret; remove secrets and {instead}",
                    self.scheme
                ),
            );
        }
    }

    /// The configured tolerance, or `default` (the provider's documented window).
    pub(super) fn tolerance(&mut self, default: Duration) -> Duration {
        let Some(text) = self.spec.tolerance.as_deref() else {
            return default;
        };
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problem(
                    "tolerance",
                    format!(
                        "must be more than 0 (the {} default is {})",
                        self.scheme,
                        humantime::format_duration(default)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem("tolerance", e);
                default
            }
        }
    }

    /// `public_url`, validated and without a trailing `/`; reported if absent.
    pub(super) fn public_url(&mut self) -> Option<String> {
        let Some(url) = self.spec.public_url.as_deref() else {
            self.problem(
                "public_url",
                format!(
                    "the {} scheme signs the URL the provider called; set public_url to the external \
                     origin it calls, e.g. \"https://hooks.example.com\" (the request path and query are appended)",
                    self.scheme
                ),
            );
            return None;
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let bad = match rest {
            None => Some("must start with https:// or http://"),
            Some(r) if r.is_empty() || r.starts_with('/') => Some("has no host"),
            Some(_) if url.contains(['?', '#']) => {
                Some("must not contain a query or fragment (the request's own query is appended)")
            }
            Some(_) if url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("must not contain spaces")
            }
            Some(_) => None,
        };
        if let Some(bad) = bad {
            self.problem(
                "public_url",
                format!("{url:?} {bad}; e.g. \"https://hooks.example.com\""),
            );
            return None;
        }
        Some(url.trim_end_matches('/').to_string())
    }

    /// A header name from key `key`, reported if invalid.
    pub(super) fn header_name(&mut self, key: &str, value: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(value.trim().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.problem(key, format!("{value:?} is not a valid HTTP header name"));
                None
            }
        }
    }
}

/// A secret reference as it may appear in a message: `${ENV}` and `file:` references are
/// shown, anything else might be an inline secret and is not.
pub(super) fn shown(reference: &str) -> String {
    if (reference.starts_with("${") && reference.ends_with('}')) || reference.starts_with("file:") {
        format!("{reference:?}")
    } else {
        "the inline value".to_string()
    }
}
