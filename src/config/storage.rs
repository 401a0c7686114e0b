//! The `[storage]` table and a route's `delivery` and `retry` keys (issue 14,
//! queued delivery): their file form, defaults and validation.
//!
//! Owns: [`StorageFile`] / [`RetryFile`] as written, and the checked
//! [`StorageSettings`], [`Delivery`] and [`RetryPolicy`]. Does not own the
//! store or the delivery runtime (`delivery`), nor the wait before a retry
//! (`fanout::FanoutConfig::backoff_delay`, shared with fan-out copies).
//!
//! ```toml
//! [storage]                  # required once any route is queued
//! backend = "redb"           # or "redis": the store in [cluster]'s Redis, shared by every instance
//! path = "data"              # redb: a directory, relative to the config file
//! lease = "30s"              # redis: a delivery held by an instance that stopped renewing
//!                            # it this long is taken over by another instance
//! max_bytes = "10GiB"        # when full, deliveries get 503, never a 202 that is not stored
//! retention = "7d"           # delivered and dead events are kept this long
//! concurrency = 8            # attempts in progress at once, per upstream
//!
//! [[routes]]
//! delivery = "queued"        # or "direct" (the default)
//! retry = { attempts = 15, backoff = "1s", max_backoff = "1h", max_age = "3d" }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use crate::units::{parse_duration, parse_size};

/// `[storage]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub lease: Option<String>,
    pub max_bytes: Option<String>,
    pub retention: Option<String>,
    pub concurrency: Option<usize>,
}

/// A route's `retry = { ... }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub max_age: Option<String>,
}

/// Where queued events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store (`delivery::redb_store`), one instance.
    Redb {
        /// The store's directory (the config file's directory joined with `path`).
        path: PathBuf,
    },
    /// Redis Streams (`delivery::redis_store`) in the `[cluster]` Redis,
    /// shared by every instance.
    Redis {
        /// A pending delivery whose holder has not renewed it for this long is
        /// taken over by another instance; 30 s by default.
        lease: Duration,
    },
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Redb { path } => write!(f, "redb in {}", path.display()),
            Backend::Redis { lease } => {
                write!(f, "redis (lease {})", humantime::format_duration(*lease))
            }
        }
    }
}

/// The checked `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    pub backend: Backend,
    /// Bytes of stored events (heads, bodies and records) at most; 10 GiB by default.
    pub max_bytes: u64,
    /// How long delivered and dead events are kept; 7 days by default.
    pub retention: Duration,
    /// Attempts in progress at once per upstream; 8 by default.
    pub concurrency: usize,
}

/// How a route hands a verified request to its upstream(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Relay it and answer the sender with the upstream's answer (the default).
    Direct,
    /// Store it, answer 202 once it is on disk, deliver it in the background.
    Queued(RetryPolicy),
}

/// When a queued delivery is retried and when it is given up (dead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per upstream, the first included.
    pub attempts: u32,
    /// The wait before the first retry; doubled for each next one, jittered.
    pub backoff: Duration,
    /// The longest wait between two tries (also caps a `Retry-After`).
    pub max_backoff: Duration,
    /// After this long since it was received (or last replayed), an event is not tried again.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 15,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            max_age: Duration::from_secs(3 * 86_400),
        }
    }
}

pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_CONCURRENCY: usize = 8;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest lease: it is renewed every third of it, one command per renewal.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

impl StorageFile {
    /// Checks the table; `base_dir` is the config file's directory.
    pub fn compile(&self, base_dir: &Path) -> Result<StorageSettings, Vec<Problem>> {
        let mut problems = Vec::new();
        let backend = match self.backend.as_deref() {
            None | Some("redb") => {
                if self.lease.is_some() {
                    problems.push(Problem::new(
                        "lease",
                        "lease applies only to backend = \"redis\" (one redb store has one instance)",
                    ));
                }
                match self.path.as_deref().map(str::trim) {
                    Some(path) if !path.is_empty() => Some(Backend::Redb {
                        path: base_dir.join(path),
                    }),
                    _ => {
                        problems.push(Problem::new(
                            "path",
                            "name the store's directory, e.g. path = \"data\" (relative to the config file)",
                        ));
                        None
                    }
                }
            }
            Some("redis") => {
                if self.path.is_some() {
                    problems.push(Problem::new(
                        "path",
                        "backend = \"redis\" keeps events in [cluster]'s Redis, not in a directory; remove path",
                    ));
                }
                match &self.lease {
                    None => Some(Backend::Redis {
                        lease: DEFAULT_LEASE,
                    }),
                    Some(text) => match parse_duration(text) {
                        Ok(lease) if lease >= MIN_LEASE => Some(Backend::Redis { lease }),
                        Ok(_) => {
                            problems.push(Problem::new(
                                "lease",
                                "use at least \"1s\" (the lease is renewed every third of it)",
                            ));
                            None
                        }
                        Err(e) => {
                            problems.push(Problem::new("lease", e));
                            None
                        }
                    },
                }
            }
            Some(_) => {
                problems.push(Problem::new(
                    "backend",
                    "unknown backend; use \"redb\" (embedded, one instance) or \"redis\" (shared by every instance, needs [cluster])",
                ));
                None
            }
        };
        let max_bytes = match &self.max_bytes {
            None => Some(DEFAULT_MAX_BYTES),
            Some(text) => match parse_size(text) {
                Ok(0) => {
                    problems.push(Problem::new(
                        "max_bytes",
                        "0 would refuse every queued delivery; use a size such as \"10GiB\"",
                    ));
                    None
                }
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(Problem::new("max_bytes", e));
                    None
                }
            },
        };
        let retention = match &self.retention {
            None => Some(DEFAULT_RETENTION),
            Some(text) => parse_duration(text)
                .map_err(|e| problems.push(Problem::new("retention", e)))
                .ok(),
        };
        let concurrency = match self.concurrency {
            Some(0) => {
                problems.push(Problem::new(
                    "concurrency",
                    "0 would never deliver; use at least 1 (attempts in progress per upstream)",
                ));
                None
            }
            n => Some(n.unwrap_or(DEFAULT_CONCURRENCY)),
        };
        match (backend, max_bytes, retention, concurrency) {
            (Some(backend), Some(max_bytes), Some(retention), Some(concurrency))
                if problems.is_empty() =>
            {
                Ok(StorageSettings {
                    backend,
                    max_bytes,
                    retention,
                    concurrency,
                })
            }
            _ => Err(problems),
        }
    }
}

/// A route's `delivery` and `retry` keys → its [`Delivery`]. Problems are keyed
/// relative to the route (`"delivery"`, `"retry.attempts"`).
pub fn compile_delivery(
    delivery: Option<&str>,
    retry: Option<&RetryFile>,
) -> Result<Delivery, Vec<Problem>> {
    let mut problems = Vec::new();
    let queued = match delivery {
        None | Some("direct") => false,
        Some("queued") => true,
        Some(_) => {
            return Err(vec![Problem::new(
                "delivery",
                "unknown delivery mode; use \"direct\" (relay and answer with the app's answer) or \"queued\" (store, answer 202, deliver in the background)",
            )])
        }
    };
    if !queued {
        if retry.is_some() {
            problems.push(Problem::new(
                "retry",
                "retry applies only to delivery = \"queued\"; direct deliveries are retried by their sender",
            ));
            return Err(problems);
        }
        return Ok(Delivery::Direct);
    }
    let defaults = RetryPolicy::default();
    let retry = retry.cloned().unwrap_or_default();
    let mut duration = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Some(default),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() && key != "backoff" => {
                problems.push(Problem::new(format!("retry.{key}"), "must be more than 0"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(Problem::new(format!("retry.{key}"), e));
                None
            }
        },
    };
    let backoff = duration("backoff", &retry.backoff, defaults.backoff);
    let max_backoff = duration("max_backoff", &retry.max_backoff, defaults.max_backoff);
    let max_age = duration("max_age", &retry.max_age, defaults.max_age);
    let attempts = retry.attempts.unwrap_or(defaults.attempts);
    if attempts == 0 {
        problems.push(Problem::new(
            "retry.attempts",
            "0 would never deliver; use at least 1 (the first try included)",
        ));
    }
    if let (Some(backoff), Some(max_backoff)) = (backoff, max_backoff) {
        if backoff > max_backoff {
            problems.push(Problem::new(
                "retry.backoff",
                "is longer than retry.max_backoff; the wait doubles from backoff up to max_backoff",
            ));
        }
    }
    match (backoff, max_backoff, max_age) {
        (Some(backoff), Some(max_backoff), Some(max_age)) if problems.is_empty() => {
            Ok(Delivery::Queued(RetryPolicy {
                attempts,
                backoff,
                max_backoff,
                max_age,
            }))
        }
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_defaults_and_refusals() {
        assert_eq!(compile_delivery(None, None).unwrap(), Delivery::Direct);
        assert_eq!(
            compile_delivery(Some("queued"), None).unwrap(),
            Delivery::Queued(RetryPolicy::default())
        );
        let retry = RetryFile {
            attempts: Some(3),
            backoff: Some("100ms".into()),
            max_backoff: Some("1s".into()),
            max_age: Some("1m".into()),
        };
        assert_eq!(
            compile_delivery(Some("queued"), Some(&retry)).unwrap(),
            Delivery::Queued(RetryPolicy {
                attempts: 3,
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                max_age: Duration::from_secs(60),
            })
        );
        let keys = |r: Result<Delivery, Vec<Problem>>| {
            r.unwrap_err()
                .into_iter()
                .map(|p| p.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(compile_delivery(Some("later"), None)), ["delivery"]);
        assert_eq!(keys(compile_delivery(None, Some(&retry))), ["retry"]);
        let bad = RetryFile {
            attempts: Some(0),
            backoff: Some("2h".into()),
            max_backoff: Some("1h".into()),
            max_age: Some("soon".into()),
        };
        assert_eq!(
            keys(compile_delivery(Some("queued"), Some(&bad))),
            ["retry.max_age", "retry.attempts", "retry.backoff"]
        );
    }

    #[test]
    fn storage_defaults_and_refusals() {
        let file = StorageFile {
            backend: None,
            path: Some("data".into()),
            lease: None,
            max_bytes: None,
            retention: None,
            concurrency: None,
        };
        let settings = file.compile(Path::new("/etc/hookgate")).unwrap();
        assert_eq!(
            settings.backend,
            Backend::Redb {
                path: "/etc/hookgate/data".into()
            }
        );
        assert_eq!(settings.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(settings.retention, DEFAULT_RETENTION);
        assert_eq!(settings.concurrency, DEFAULT_CONCURRENCY);
        let bad = StorageFile {
            backend: None,
            path: Some("".into()),
            lease: None,
            max_bytes: Some("0".into()),
            retention: Some("a week".into()),
            concurrency: Some(0),
        };
        let keys: Vec<String> = bad
            .compile(Path::new("."))
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["path", "max_bytes", "retention", "concurrency"]);
    }

    #[test]
    fn redis_backend_takes_a_lease_and_no_path() {
        let file = |path: Option<&str>, lease: Option<&str>| StorageFile {
            backend: Some("redis".into()),
            path: path.map(Into::into),
            lease: lease.map(Into::into),
            max_bytes: None,
            retention: None,
            concurrency: None,
        };
        let settings = file(None, None).compile(Path::new(".")).unwrap();
        assert_eq!(
            settings.backend,
            Backend::Redis {
                lease: DEFAULT_LEASE
            }
        );
        let settings = file(None, Some("5s")).compile(Path::new(".")).unwrap();
        assert_eq!(
            settings.backend,
            Backend::Redis {
                lease: Duration::from_secs(5)
            }
        );
        let keys = |f: StorageFile| -> Vec<String> {
            f.compile(Path::new("."))
                .unwrap_err()
                .into_iter()
                .map(|p| p.key)
                .collect()
        };
        assert_eq!(keys(file(Some("data"), Some("10ms"))), ["path", "lease"]);
        let mut other = file(None, None);
        other.backend = Some("etcd".into());
        assert_eq!(keys(other), ["backend"]);
        let mut redb_lease = file(Some("data"), Some("5s"));
        redb_lease.backend = None;
        assert_eq!(keys(redb_lease), ["lease"]);
    }
}
