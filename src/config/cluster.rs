//! The `[cluster]` table (issue 15): several hookgate instances sharing their
//! rate limits and dedupe state (and, with `[storage] backend = "redis"`, their
//! queue) in one Redis.
//!
//! Owns: [`ClusterFile`] as written, and the checked [`Cluster`] with its
//! [`RedisUrl`], whose password never shows in `Debug`, `Display`, errors,
//! logs or `hookgate check` ([`RedisUrl::redacted`]). Does not own the
//! connection to Redis (`cluster`), nor what is kept there (`ratelimit`,
//! `dedupe`, `delivery`).
//!
//! ```toml
//! [cluster]
//! redis = "redis://redis:6379/0"     # or rediss:// (TLS), redis+unix:///path;
//!                                    # or "${REDIS_URL}" / "file:/run/secrets/redis_url"
//! password = "${REDIS_PASSWORD}"     # optional; overrides a password in the URL
//! key_prefix = "hookgate:"           # every key hookgate writes starts with it
//! on_unavailable = "reject"          # or "local": see [`OnUnavailable`]
//! connect_timeout = "1s"             # each connection attempt
//! command_timeout = "250ms"          # each command, from the request's point of view
//! claim_lease = "65s"                # optional; at least the response_timeout of every
//!                                    # deduped route's upstreams; see [`Cluster::claim_lease`]
//! ```
//!
//! Sentinel is not supported yet: point `redis` at the primary (or at a proxy
//! that follows failovers).

use std::fmt;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use serde::Deserialize;

use super::secrets::{self, Resolver};
use super::Problem;
use crate::secret::Secret;
use crate::units::parse_duration;

/// `[cluster]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// A Redis URL, or a `${ENV}` / `file:` / `literal:` reference to one.
    pub redis: String,
    /// A secret reference (`${ENV}`, `file:`, `literal:`) to the password.
    pub password: Option<String>,
    pub key_prefix: Option<String>,
    pub on_unavailable: Option<String>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub claim_lease: Option<String>,
}

/// What rate limits and dedupe do while Redis cannot be reached (down, or a
/// command took longer than `command_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Fall back to this instance's own limiter and dedupe table: requests keep
    /// flowing, but the limit is per instance and a retry that lands on another
    /// instance is forwarded again. Each fallback is counted.
    Local,
    /// Answer 503 `cluster_unavailable` with `Retry-After` on routes that rate
    /// limit or dedupe, and report not ready. The default: when hookgate cannot
    /// decide as configured, it fails closed and the sender retries later.
    Reject,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Reject => "reject",
        }
    }
}

pub const DEFAULT_KEY_PREFIX: &str = "hookgate:";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest `key_prefix`: every key carries it.
const MAX_KEY_PREFIX: usize = 64;

/// The checked `[cluster]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub redis: RedisUrl,
    /// Put in front of every key hookgate writes (`hookgate:`), so several
    /// deployments can share one Redis database.
    pub key_prefix: String,
    pub on_unavailable: OnUnavailable,
    /// Bound on each connection attempt to Redis.
    pub connect_timeout: Duration,
    /// Bound on each command's round trip; past it the command counts as failed
    /// and `on_unavailable` decides.
    pub command_timeout: Duration,
    /// How long a dedupe claim outlives an instance that died holding it; `None`:
    /// derived per route from its upstream's timeouts (`dedupe`). A config whose
    /// lease is shorter than a direct deduped route's upstream `response_timeout`
    /// is refused (`config::check_claim_lease`): the claim would end mid-forward.
    pub claim_lease: Option<Duration>,
}

/// A Redis connection URL with its credentials. `Debug` and `Display` print
/// [`RedisUrl::redacted`]; the full URL is reachable only through
/// [`RedisUrl::connection_info`].
#[derive(Clone, PartialEq)]
pub struct RedisUrl {
    url: Secret,
    password: Option<Secret>,
    redacted: String,
}

impl RedisUrl {
    /// Parses `url` (`redis://`, `rediss://`, `redis+unix://`, `unix://`);
    /// `password` replaces the URL's. Errors never quote the URL.
    pub fn parse(url: &str, password: Option<Secret>) -> Result<RedisUrl, String> {
        let info = url.into_connection_info().map_err(|_| {
            "not a valid Redis URL; write redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… for TLS, or redis+unix:///PATH (percent-encode '@', ':' and '/' in a password)".to_string()
        })?;
        let has_password = password.is_some() || info.redis_settings().password().is_some();
        let redacted = redact(&info, has_password);
        Ok(RedisUrl {
            url: Secret::new(url.as_bytes()),
            password,
            redacted,
        })
    }

    /// The URL with any password replaced by `[redacted]`: safe for logs and `check`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Whether it connects with TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.redacted.starts_with("rediss://")
    }

    /// The connection settings, credentials included. Never log them: the
    /// redis crate's `Debug` of them prints the password.
    pub fn connection_info(&self) -> ConnectionInfo {
        let url = String::from_utf8_lossy(self.url.expose());
        let info = url
            .as_ref()
            .into_connection_info()
            .expect("checked when the config was loaded");
        match &self.password {
            None => info,
            Some(password) => {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_password(String::from_utf8_lossy(password.expose()));
                info.set_redis_settings(settings)
            }
        }
    }
}

fn redact(info: &ConnectionInfo, has_password: bool) -> String {
    let settings = info.redis_settings();
    let credentials = match (settings.username(), has_password) {
        (Some(user), true) => format!("{user}:[redacted]@"),
        (Some(user), false) => format!("{user}@"),
        (None, true) => ":[redacted]@".to_string(),
        (None, false) => String::new(),
    };
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            format!("redis://{credentials}{host}:{port}/{}", settings.db())
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{credentials}{host}:{port}/{}", settings.db())
        }
        ConnectionAddr::Unix(path) => {
            format!(
                "redis+unix://{credentials}{}?db={}",
                path.display(),
                settings.db()
            )
        }
        _ => format!("redis://{credentials}(unknown address)"),
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// A `redis` value that is a reference (`${ENV}`, `file:`, `literal:`) rather
/// than a URL written in the file.
fn is_reference(text: &str) -> bool {
    text.starts_with("${") || text.starts_with("file:") || text.starts_with("literal:")
}

impl ClusterFile {
    /// Checks the table. Problems are keyed relative to `[cluster]`; warnings
    /// (a password written in the file) go to `warn`. `resolver` records the
    /// files read, so a change to them is seen by a reload.
    pub fn compile(
        &self,
        resolver: &Resolver<'_>,
        warn: &mut dyn FnMut(String),
    ) -> Result<Cluster, Vec<Problem>> {
        let mut problems = Vec::new();
        let password = match &self.password {
            None => None,
            Some(reference) => {
                if secrets::is_literal(reference) {
                    warn("cluster.password is written inline (literal:); prefer \"${ENV_VAR}\" or \"file:/path\"".to_string());
                }
                match resolver.resolve(reference) {
                    Ok(secret) if std::str::from_utf8(secret.expose()).is_ok() => Some(secret),
                    Ok(_) => {
                        problems.push(Problem::new("password", "is not valid UTF-8"));
                        None
                    }
                    Err(e) => {
                        problems.push(Problem::new("password", e));
                        None
                    }
                }
            }
        };
        let redis = if is_reference(&self.redis) {
            match resolver.resolve(&self.redis) {
                Ok(url) => match std::str::from_utf8(url.expose()) {
                    Ok(url) => RedisUrl::parse(url.trim(), password.clone()),
                    Err(_) => Err("the referenced URL is not valid UTF-8".to_string()),
                },
                Err(e) => Err(e),
            }
        } else {
            let parsed = RedisUrl::parse(&self.redis, password.clone());
            if let Ok(url) = &parsed {
                if url.redacted.contains("[redacted]") && self.password.is_none() {
                    warn("cluster.redis carries a password written in the config file; prefer redis = \"${REDIS_URL}\" or password = \"${REDIS_PASSWORD}\"".to_string());
                }
            }
            parsed
        };
        let redis = redis
            .map_err(|e| problems.push(Problem::new("redis", e)))
            .ok();
        let key_prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
        if key_prefix.len() > MAX_KEY_PREFIX
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push(Problem::new(
                "key_prefix",
                format!("use at most {MAX_KEY_PREFIX} characters without spaces, e.g. \"hookgate:\" or \"hookgate:prod:\""),
            ));
        }
        let on_unavailable = match self.on_unavailable.as_deref() {
            None | Some("reject") => Some(OnUnavailable::Reject),
            Some("local") => Some(OnUnavailable::Local),
            Some(_) => {
                problems.push(Problem::new(
                    "on_unavailable",
                    "use \"reject\" (503 cluster_unavailable while Redis is unreachable) or \"local\" (fall back to this instance's own limits and dedupe)",
                ));
                None
            }
        };
        let mut duration =
            |key: &str, value: &Option<String>, default: Option<Duration>| match value {
                None => Some(default),
                Some(text) => match parse_duration(text) {
                    Ok(d) if d.is_zero() => {
                        problems.push(Problem::new(key, "must be more than 0"));
                        None
                    }
                    Ok(d) => Some(Some(d)),
                    Err(e) => {
                        problems.push(Problem::new(key, e));
                        None
                    }
                },
            };
        let connect_timeout = duration(
            "connect_timeout",
            &self.connect_timeout,
            Some(DEFAULT_CONNECT_TIMEOUT),
        );
        let command_timeout = duration(
            "command_timeout",
            &self.command_timeout,
            Some(DEFAULT_COMMAND_TIMEOUT),
        );
        let claim_lease = duration("claim_lease", &self.claim_lease, None);
        match (
            redis,
            on_unavailable,
            connect_timeout,
            command_timeout,
            claim_lease,
        ) {
            (
                Some(redis),
                Some(on_unavailable),
                Some(Some(connect_timeout)),
                Some(Some(command_timeout)),
                Some(claim_lease),
            ) if problems.is_empty() => Ok(Cluster {
                redis,
                key_prefix,
                on_unavailable,
                connect_timeout,
                command_timeout,
                claim_lease,
            }),
            _ => Err(problems),
        }
    }
}

impl Cluster {
    /// One line for `hookgate check` and the start log; never the password.
    pub fn describe(&self) -> String {
        format!(
            "{} (key_prefix {:?}, on_unavailable {}, connect_timeout {}, command_timeout {}{})",
            self.redis.redacted(),
            self.key_prefix,
            self.on_unavailable.as_str(),
            humantime::format_duration(self.connect_timeout),
            humantime::format_duration(self.command_timeout),
            self.claim_lease.map_or(String::new(), |lease| format!(
                ", claim_lease {}",
                humantime::format_duration(lease)
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(redis: &str) -> ClusterFile {
        ClusterFile {
            redis: redis.to_string(),
            password: None,
            key_prefix: None,
            on_unavailable: None,
            connect_timeout: None,
            command_timeout: None,
            claim_lease: None,
        }
    }

    fn compile(file: &ClusterFile) -> (Result<Cluster, Vec<Problem>>, Vec<String>) {
        let resolver = Resolver::new(Path::new("."));
        let mut warnings = Vec::new();
        let result = file.compile(&resolver, &mut |w| warnings.push(w));
        (result, warnings)
    }

    #[test]
    fn defaults() {
        let (cluster, warnings) = compile(&file("redis://127.0.0.1:6379/0"));
        let cluster = cluster.unwrap();
        assert!(warnings.is_empty());
        assert_eq!(cluster.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(cluster.on_unavailable, OnUnavailable::Reject);
        assert_eq!(cluster.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(cluster.command_timeout, DEFAULT_COMMAND_TIMEOUT);
        assert_eq!(cluster.claim_lease, None);
        assert_eq!(cluster.redis.redacted(), "redis://127.0.0.1:6379/0");
        assert!(!cluster.redis.is_tls());
    }

    /// The password shows nowhere: not in Debug, Display, describe, nor
    /// in the error for a URL that does not parse.
    #[test]
    fn passwords_are_redacted_everywhere() {
        let (cluster, warnings) = compile(&file("rediss://app:Sup3rS3cret@redis.internal:6380/2"));
        let cluster = cluster.unwrap();
        assert_eq!(warnings.len(), 1, "a password in the file is warned about");
        assert!(!warnings[0].contains("Sup3rS3cret"));
        for shown in [
            format!("{cluster:?}"),
            format!("{}", cluster.redis),
            cluster.describe(),
        ] {
            assert!(!shown.contains("Sup3rS3cret"), "{shown}");
            assert!(
                shown.contains("rediss://app:[redacted]@redis.internal:6380/2"),
                "{shown}"
            );
        }
        assert!(cluster.redis.is_tls());
        assert_eq!(
            cluster.redis.connection_info().redis_settings().password(),
            Some("Sup3rS3cret")
        );
        let (bad, _) = compile(&file("http://user:Sup3rS3cret@host"));
        let problems = bad.unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "redis");
        assert!(!problems[0].message.contains("Sup3rS3cret"));
    }

    #[test]
    fn references_and_a_separate_password() {
        std::env::set_var("HOOKGATE_TEST_REDIS_URL", "redis://10.0.0.5:6379/1");
        std::env::set_var("HOOKGATE_TEST_REDIS_PASSWORD", "pw-from-env");
        let mut written = file("${HOOKGATE_TEST_REDIS_URL}");
        written.password = Some("${HOOKGATE_TEST_REDIS_PASSWORD}".into());
        let (cluster, warnings) = compile(&written);
        let cluster = cluster.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            cluster.redis.redacted(),
            "redis://:[redacted]@10.0.0.5:6379/1"
        );
        let info = cluster.redis.connection_info();
        assert_eq!(info.redis_settings().password(), Some("pw-from-env"));
        assert_eq!(info.redis_settings().db(), 1);
        let (missing, _) = compile(&file("${HOOKGATE_TEST_REDIS_UNSET}"));
        assert!(missing.unwrap_err()[0].message.contains("is not set"));
    }

    #[test]
    fn refusals_name_each_key() {
        let bad = ClusterFile {
            redis: "redis://127.0.0.1".into(),
            password: Some("bare-password".into()),
            key_prefix: Some("has space".into()),
            on_unavailable: Some("ignore".into()),
            connect_timeout: Some("0s".into()),
            command_timeout: Some("fast".into()),
            claim_lease: Some("0s".into()),
        };
        let keys: Vec<String> = compile(&bad)
            .0
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "password",
                "key_prefix",
                "on_unavailable",
                "connect_timeout",
                "command_timeout",
                "claim_lease"
            ]
        );
        let mut local = file("redis://127.0.0.1");
        local.on_unavailable = Some("local".into());
        local.claim_lease = Some("40s".into());
        let cluster = compile(&local).0.unwrap();
        assert_eq!(cluster.on_unavailable, OnUnavailable::Local);
        assert_eq!(cluster.claim_lease, Some(Duration::from_secs(40)));
        assert_eq!(cluster.redis.redacted(), "redis://127.0.0.1:6379/0");
    }
}
