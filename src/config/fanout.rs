//! The `[server] fanout` table: its file layer ([`FanoutSpec`]) and its validation into a
//! [`FanoutConfig`] (`crate::fanout`, which owns the queue and documents every key).

use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use crate::fanout::FanoutConfig;
use crate::units::{parse_duration, parse_size};

/// The `[server] fanout` table, as written. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutSpec {
    pub queue: Option<usize>,
    pub max_bytes: Option<String>,
    pub concurrency: Option<usize>,
    pub attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub attempt_timeout: Option<String>,
    pub stored: Option<bool>,
}

impl FanoutSpec {
    /// Validates the table. Problem keys: `"queue"`, `"max_bytes"`, `"concurrency"`,
    /// `"attempts"`, `"backoff"`, `"max_backoff"`, `"attempt_timeout"`; the loader prefixes
    /// `"server.fanout"`. Every problem is reported.
    pub fn compile(&self) -> Result<FanoutConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let defaults = FanoutConfig::default();
        let mut range =
            |key: &str, value: Option<u64>, min: u64, max: u64, default: u64| match value {
                None => default,
                Some(v) if (min..=max).contains(&v) => v,
                Some(v) => {
                    problems.push(Problem::new(
                        key,
                        format!(
                            "{key} = {v} is out of range; use {min} to {max} (default {default})"
                        ),
                    ));
                    default
                }
            };
        let queue = range("queue", self.queue.map(|v| v as u64), 1, 1_000_000, 1000) as usize;
        let concurrency = range(
            "concurrency",
            self.concurrency.map(|v| v as u64),
            1,
            1024,
            4,
        ) as usize;
        let attempts = range("attempts", self.attempts.map(u64::from), 1, 100, 5) as u32;
        let mut duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => default,
            Some(text) => {
                match parse_duration(text) {
                    Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => d,
                    Ok(_) => {
                        problems.push(Problem::new(
                        key,
                        format!("{key} = {text:?} is out of range; use more than 0 and at most \"24h\""),
                    ));
                        default
                    }
                    Err(m) => {
                        problems.push(Problem::new(key, m));
                        default
                    }
                }
            }
        };
        let backoff = duration("backoff", &self.backoff, defaults.backoff);
        let max_backoff = duration("max_backoff", &self.max_backoff, defaults.max_backoff);
        let attempt_timeout = duration(
            "attempt_timeout",
            &self.attempt_timeout,
            defaults.attempt_timeout,
        );
        if max_backoff < backoff {
            problems.push(Problem::new(
                "max_backoff",
                format!(
                    "max_backoff ({}) is shorter than backoff ({}); raise it or lower backoff",
                    humantime::format_duration(max_backoff),
                    humantime::format_duration(backoff)
                ),
            ));
        }
        let max_bytes = match self.max_bytes.as_deref() {
            None => defaults.max_bytes,
            Some(text) => match parse_size(text) {
                Ok(0) => {
                    problems.push(Problem::new("max_bytes", "max_bytes must be more than 0"));
                    0
                }
                Ok(n) => n,
                Err(m) => {
                    problems.push(Problem::new("max_bytes", m));
                    0
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(FanoutConfig {
            queue,
            max_bytes,
            concurrency,
            attempts,
            backoff,
            max_backoff,
            attempt_timeout,
            stored: self.stored.unwrap_or(defaults.stored),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_and_problems() {
        assert_eq!(
            FanoutSpec::default().compile().unwrap(),
            FanoutConfig::default()
        );
        #[derive(Deserialize)]
        struct Server {
            fanout: FanoutSpec,
        }
        let s: Server = toml::from_str(
            "fanout = { queue = 1000, concurrency = 4, attempts = 5, backoff = \"500ms\", max_backoff = \"30s\" }",
        )
        .unwrap();
        assert_eq!(s.fanout.compile().unwrap(), FanoutConfig::default());
        let s: Server = toml::from_str(
            "fanout = { queue = 5, max_bytes = \"1MiB\", attempts = 1, attempt_timeout = \"2s\" }",
        )
        .unwrap();
        let c = s.fanout.compile().unwrap();
        assert_eq!((c.queue, c.max_bytes, c.attempts), (5, 1 << 20, 1));
        assert_eq!(c.attempt_timeout, Duration::from_secs(2));
        let err = toml::from_str::<Server>("fanout = { queue = 5, retries = 3 }")
            .err()
            .unwrap();
        assert!(err.to_string().contains("retries"), "{err}");

        let bad = FanoutSpec {
            queue: Some(0),
            max_bytes: Some("lots".into()),
            concurrency: Some(0),
            attempts: Some(0),
            backoff: Some("10s".into()),
            max_backoff: Some("1s".into()),
            attempt_timeout: Some("0s".into()),
            stored: None,
        };
        let keys: Vec<String> = bad
            .compile()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "queue",
                "concurrency",
                "attempts",
                "attempt_timeout",
                "max_backoff",
                "max_bytes"
            ]
        );
    }
}
