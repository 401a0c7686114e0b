//! The `dedupe` table of a route: its file layer ([`DedupeSpec`]) and its validation into a
//! [`DedupeConfig`] (`crate::dedupe`, which owns the store and documents every key).

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::Problem;
use crate::dedupe::{
    DedupeConfig, KeySource, DEFAULT_MAX_ENTRIES, DEFAULT_TTL, MAX_MAX_ENTRIES, MAX_TTL,
};
use crate::events::JsonPointer;
use crate::units::parse_duration;

/// Schemes whose verifier can produce `Verified::signed_id`.
const SIGNED_ID_SCHEMES: &[&str] = &["standard-webhooks", "twitch", "hmac", "gitlab", "mailgun"];

/// The `dedupe` table of a route, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeSpec {
    /// `"standard-webhooks"` | `"header:<Name>"` | `"json:<pointer>"`.
    pub key: String,
    /// `"24h"` by default.
    pub ttl: Option<String>,
    /// [`DEFAULT_MAX_ENTRIES`] by default.
    pub max_entries: Option<usize>,
}

impl DedupeSpec {
    /// Validates the table. `scheme` is the route's canonical verify scheme
    /// (`Verifier::scheme()`, `"none"` without `verify`): a signed-id key needs a scheme
    /// that signs ids. Problem keys: `"key"`, `"ttl"`, `"max_entries"`; the loader prefixes
    /// `"routes[N].dedupe"`. Every problem is reported.
    pub fn compile(&self, scheme: &str) -> Result<DedupeConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let key = parse_key(self.key.trim(), scheme)
            .map_err(|m| problems.push(Problem::new("key", m)))
            .ok();
        let ttl = match self.ttl.as_deref() {
            None => Some(DEFAULT_TTL),
            Some(text) => match parse_duration(text) {
                Err(m) => {
                    problems.push(Problem::new("ttl", m));
                    None
                }
                Ok(d) if d < Duration::from_secs(1) || d > MAX_TTL => {
                    problems.push(Problem::new(
                        "ttl",
                        format!(
                            "ttl {text:?} is out of range; use from \"1s\" to \"30d\" (longer \
                             than the provider's retry window, e.g. \"24h\")"
                        ),
                    ));
                    None
                }
                Ok(d) => Some(d),
            },
        };
        let max_entries = match self.max_entries {
            None => Some(DEFAULT_MAX_ENTRIES),
            Some(n) if n == 0 || n > MAX_MAX_ENTRIES => {
                problems.push(Problem::new(
                    "max_entries",
                    format!(
                        "max_entries must be from 1 to {MAX_MAX_ENTRIES}; omit it for the \
                         default of {DEFAULT_MAX_ENTRIES} (about {} MB)",
                        DEFAULT_MAX_ENTRIES * 118 / 1_000_000
                    ),
                ));
                None
            }
            Some(n) => Some(n),
        };
        match (key, ttl, max_entries) {
            (Some(key), Some(ttl), Some(max_entries)) if problems.is_empty() => Ok(DedupeConfig {
                key,
                ttl,
                max_entries,
            }),
            _ => Err(problems),
        }
    }
}

fn parse_key(key: &str, scheme: &str) -> Result<KeySource, String> {
    let usage = "use \"standard-webhooks\" (the signed delivery id), \"header:<Name>\" (e.g. \
                 \"header:X-GitHub-Delivery\") or \"json:<pointer>\" (e.g. \"json:/id\")";
    if key == "standard-webhooks" || key == "signed" {
        if !SIGNED_ID_SCHEMES.contains(&scheme) {
            return Err(format!(
                "key {key:?} needs a verify scheme that signs a delivery id ({}), but the \
                 route's scheme is {scheme:?}; use \"header:<Name>\" or \"json:<pointer>\"",
                SIGNED_ID_SCHEMES.join(", ")
            ));
        }
        return Ok(KeySource::Signed);
    }
    if let Some(name) = key.strip_prefix("header:") {
        return HeaderName::from_bytes(name.trim().as_bytes())
            .map(KeySource::Header)
            .map_err(|_| format!("invalid header name {name:?} in key {key:?}; {usage}"));
    }
    if let Some(pointer) = key.strip_prefix("json:") {
        return JsonPointer::parse(pointer.trim()).map(KeySource::Json);
    }
    Err(format!("unknown key {key:?}; {usage}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_compiles_with_defaults_and_reports_all_problems() {
        let c = DedupeSpec {
            key: "header:X-GitHub-Delivery".into(),
            ttl: None,
            max_entries: None,
        }
        .compile("github")
        .unwrap();
        assert_eq!(
            c.key,
            KeySource::Header(HeaderName::from_static("x-github-delivery"))
        );
        assert_eq!((c.ttl, c.max_entries), (DEFAULT_TTL, DEFAULT_MAX_ENTRIES));
        assert_eq!(c.key.to_string(), "header:x-github-delivery");
        let c = DedupeSpec {
            key: "json:/id".into(),
            ttl: Some("72h".into()),
            max_entries: Some(10),
        }
        .compile("stripe")
        .unwrap();
        assert_eq!(c.key.to_string(), "json:/id");
        assert_eq!(c.ttl, Duration::from_secs(72 * 3600));
        for scheme in ["standard-webhooks", "twitch", "hmac", "gitlab"] {
            let spec = DedupeSpec {
                key: "standard-webhooks".into(),
                ttl: None,
                max_entries: None,
            };
            assert_eq!(spec.compile(scheme).unwrap().key, KeySource::Signed);
        }

        let bad = DedupeSpec {
            key: "cookie:x".into(),
            ttl: Some("forever".into()),
            max_entries: Some(0),
        };
        let keys: Vec<String> = bad
            .compile("none")
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["key", "ttl", "max_entries"]);
        let table: [(&str, Option<&str>, &str, &str); 7] = [
            ("standard-webhooks", None, "github", "signs a delivery id"),
            ("signed", None, "none", "signs a delivery id"),
            ("header:bad header", None, "none", "invalid header name"),
            ("json:id", None, "none", "must start with '/'"),
            ("json:/id", Some("0s"), "none", "out of range"),
            ("json:/id", Some("31d"), "none", "out of range"),
            ("header:", None, "none", "invalid header name"),
        ];
        for (key, ttl, scheme, message) in table {
            let spec = DedupeSpec {
                key: key.into(),
                ttl: ttl.map(Into::into),
                max_entries: None,
            };
            let problems = spec.compile(scheme).unwrap_err();
            assert_eq!(problems.len(), 1, "{key}: {problems:?}");
            assert!(problems[0].message.contains(message), "{}", problems[0]);
        }
    }

    #[test]
    fn spec_serde_shape() {
        #[derive(Deserialize)]
        struct Route {
            dedupe: DedupeSpec,
        }
        let r: Route = toml::from_str(
            "dedupe = { key = \"header:X-GitHub-Delivery\", ttl = \"24h\", max_entries = 5000 }",
        )
        .unwrap();
        assert_eq!(r.dedupe.max_entries, Some(5000));
        let err = toml::from_str::<Route>("dedupe = { key = \"json:/id\", ttll = \"1h\" }")
            .err()
            .unwrap();
        assert!(err.to_string().contains("ttll"), "{err}");
    }
}
