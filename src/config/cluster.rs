//! The `[cluster]` table (issue 15): several hookgate instances sharing their
//! rate limits and dedupe state (and, with `[storage] backend = "redis"`, their
//! queue) in one Redis.
//!
//! Owns: [`ClusterFile`] as written, and the checked [`Cluster`] with its
//! [`Endpoint`] (one [`RedisUrl`], or the [`SentinelSettings`] that name the
//! master) and its [`TlsMaterial`] (a private CA, a client certificate),
//! whose passwords and key never show in `Debug`, `Display`, errors, logs or
//! `hookgate check` ([`Endpoint::redacted`]). Does not own the connection to
//! Redis nor following a failover (`cluster`, `cluster::sentinel`), nor what
//! is kept there (`ratelimit`, `dedupe`, `delivery`).
//!
//! ```toml
//! [cluster]
//! redis = "redis://redis:6379/0"     # or rediss:// (TLS), redis+unix:///path;
//!                                    # or "${REDIS_URL}" / "file:/run/secrets/redis_url"
//! # or, instead of redis: the master the Sentinels name (Redis Sentinel,
//! # https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/)
//! # sentinel = { master = "mymaster", nodes = ["10.0.0.1:26379", "10.0.0.2:26379"],
//! #              password = "${SENTINEL_PASSWORD}", db = 0 }
//! password = "${REDIS_PASSWORD}"     # optional; the data nodes' (overrides a password in the URL)
//! tls = { ca = "certs/redis-ca.pem", cert = "certs/client.pem", key = "certs/client.key" }
//!                                    # optional, each key optional: trust this CA instead of
//!                                    # the system store; present this client certificate.
//!                                    # Needs rediss://; with sentinel, every connection is TLS.
//! key_prefix = "hookgate:"           # every key hookgate writes starts with it
//! on_unavailable = "reject"          # or "local": see [`OnUnavailable`]
//! connect_timeout = "1s"             # each connection attempt
//! command_timeout = "250ms"          # each command, from the request's point of view
//! claim_lease = "65s"                # optional; at least the response_timeout of every
//!                                    # deduped route's upstreams plus command_timeout;
//!                                    # see [`Cluster::claim_lease`]
//! ```

use std::fmt;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;

use super::secrets::{self, Resolver};
use super::Problem;
use crate::secret::Secret;
use crate::units::parse_duration_within;

/// `[cluster]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// A Redis URL, or a `${ENV}` / `file:` / `literal:` reference to one.
    /// Exactly one of `redis` and `sentinel`.
    pub redis: Option<String>,
    /// The Sentinels that name the master.
    pub sentinel: Option<SentinelFile>,
    /// A secret reference (`${ENV}`, `file:`, `literal:`) to the password of
    /// the data nodes (the master, whichever it is).
    pub password: Option<String>,
    /// TLS settings beyond the system trust store.
    pub tls: Option<TlsFile>,
    pub key_prefix: Option<String>,
    pub on_unavailable: Option<String>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub claim_lease: Option<String>,
}

/// `[cluster] sentinel = { … }` as written: what Redis's Sentinel docs call
/// the master name and the Sentinel addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    /// The master's name in the Sentinels' config (`sentinel monitor NAME …`).
    pub master: String,
    /// `HOST:PORT` of each Sentinel (port 26379 by default in Redis's docs).
    pub nodes: Vec<String>,
    /// A secret reference to the Sentinels' own password
    /// (`requirepass` in `sentinel.conf`), if they have one.
    pub password: Option<String>,
    /// The database number on the master; 0 if absent.
    pub db: Option<i64>,
}

/// `[cluster] tls = { … }` as written: paths relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM file of the CA certificates to trust instead of the system store.
    pub ca: Option<String>,
    /// PEM file of the client certificate chain (mutual TLS, with `key`).
    pub cert: Option<String>,
    /// PEM file of the client certificate's private key.
    pub key: Option<String>,
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
/// The longest `connect_timeout` and `command_timeout`: an hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest `claim_lease`: a week (it must exceed a route's longest
/// `response_timeout`, at most a day, plus `command_timeout`, at most an hour).
pub const MAX_CLAIM_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest `key_prefix`: every key carries it.
const MAX_KEY_PREFIX: usize = 64;

/// The checked `[cluster]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Where the data lives: one URL, or the master the Sentinels name.
    pub redis: Endpoint,
    /// A private CA and/or a client certificate; `None`: the system store
    /// (for `rediss://`) or plain TCP.
    pub tls: Option<TlsMaterial>,
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
    /// plus `command_timeout` is refused (`config::check_claim_lease`): the claim
    /// would end mid-forward, or before the forwarded mark is written.
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

    /// The URL with any password replaced by `[redacted]` and any user name by
    /// `***`: safe for logs, `check` and `/config`.
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

/// The URL without credentials: a password is `[redacted]`, a user name
/// `***` (a password written without its leading `:`, `redis://PASSWORD@host`,
/// is parsed as a user name).
fn redact(info: &ConnectionInfo, has_password: bool) -> String {
    let settings = info.redis_settings();
    let credentials = match (settings.username(), has_password) {
        (Some(_), true) => "***:[redacted]@".to_string(),
        (Some(_), false) => "***@".to_string(),
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

/// Where the cluster's data lives. `Debug` and `Display` print
/// [`Endpoint::redacted`].
#[derive(Clone, PartialEq)]
pub enum Endpoint {
    /// One address (`redis = "…"`).
    Url(RedisUrl),
    /// Whichever node the Sentinels name master (`sentinel = { … }`).
    Sentinel(SentinelSettings),
}

impl Endpoint {
    /// Safe for logs and `check`: passwords replaced by `[redacted]`.
    pub fn redacted(&self) -> &str {
        match self {
            Endpoint::Url(url) => url.redacted(),
            Endpoint::Sentinel(sentinel) => &sentinel.redacted,
        }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Endpoint::Url(url) => url.is_tls(),
            Endpoint::Sentinel(sentinel) => sentinel.tls,
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.redacted())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.redacted())
    }
}

/// The checked `sentinel = { … }`. Source of the protocol:
/// <https://redis.io/docs/latest/develop/reference/sentinel-clients/>.
#[derive(Clone, PartialEq)]
pub struct SentinelSettings {
    /// The master's name (`SENTINEL GET-MASTER-ADDR-BY-NAME name`).
    pub master: String,
    /// `(host, port)` of each Sentinel, in the order written: asked in turn.
    pub nodes: Vec<(String, u16)>,
    sentinel_password: Option<Secret>,
    /// `[cluster] password`: the data nodes'.
    password: Option<Secret>,
    pub db: i64,
    /// Every connection (Sentinels and data nodes) uses TLS: `[cluster] tls`.
    pub tls: bool,
    redacted: String,
}

impl SentinelSettings {
    /// How to reach Sentinel `node` (an index into `nodes`), its password
    /// included. Never log it: the redis crate's `Debug` prints the password.
    pub fn sentinel_info(&self, node: usize) -> ConnectionInfo {
        let (host, port) = &self.nodes[node];
        let mut settings = RedisConnectionInfo::default();
        if let Some(password) = &self.sentinel_password {
            settings = settings.set_password(String::from_utf8_lossy(password.expose()));
        }
        self.address(host, *port).set_redis_settings(settings)
    }

    /// How to reach the data node at `host:port` (the master the Sentinels
    /// named), with `[cluster] password` and `db`.
    pub fn node_info(&self, host: &str, port: u16) -> ConnectionInfo {
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(password) = &self.password {
            settings = settings.set_password(String::from_utf8_lossy(password.expose()));
        }
        self.address(host, port).set_redis_settings(settings)
    }

    fn address(&self, host: &str, port: u16) -> ConnectionInfo {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        };
        addr.into_connection_info()
            .expect("an address is always a valid ConnectionInfo")
    }
}

/// The contents of `[cluster] tls`, read when the config is loaded. `Debug`
/// shows the paths only.
#[derive(Clone, PartialEq)]
pub struct TlsMaterial {
    /// PEM CA certificates to trust instead of the system store.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate chain and its key (mutual TLS).
    pub client: Option<(Vec<u8>, Secret)>,
    /// The files, for `check` and the log.
    paths: Vec<String>,
}

impl TlsMaterial {
    /// In the form the redis crate takes (`Client::build_with_tls`).
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.expose().to_vec(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsMaterial({})", self.paths.join(", "))
    }
}

/// Reads and checks `[cluster] tls`: each file through `resolver` (so a
/// change is part of the reload fingerprint), each PEM parsed now so a bad
/// file is a config error, not a failed connection later.
fn compile_tls(
    file: &TlsFile,
    resolver: &Resolver<'_>,
    problems: &mut Vec<Problem>,
) -> Option<TlsMaterial> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut read = |key: &str, path: &Option<String>| -> Option<Secret> {
        let path = path.as_ref()?;
        match resolver.resolve(&format!("file:{path}")) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problems.push(Problem::new(key, e));
                None
            }
        }
    };
    let ca = read("tls.ca", &file.ca);
    let cert = read("tls.cert", &file.cert);
    let key = read("tls.key", &file.key);
    let mut ok = true;
    let mut certificates = |key: &str, pem: &Secret, what: &str| {
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.expose()).collect();
        match parsed {
            Ok(list) if !list.is_empty() => true,
            Ok(_) => {
                problems.push(Problem::new(
                    key,
                    format!(
                        "holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the {what}"
                    ),
                ));
                false
            }
            Err(e) => {
                problems.push(Problem::new(
                    key,
                    format!("is not a valid PEM certificate file ({e}); give the {what}"),
                ));
                false
            }
        }
    };
    if let Some(ca) = &ca {
        ok &= certificates(
            "tls.ca",
            ca,
            "CA certificate(s) that signed the Redis server's certificate",
        );
    }
    if let Some(cert) = &cert {
        ok &= certificates("tls.cert", cert, "client certificate chain");
    }
    if let Some(key) = &key {
        if PrivateKeyDer::from_pem_slice(key.expose()).is_err() {
            // The parser's message is not quoted: it might show key bytes.
            problems.push(Problem::new(
                "tls.key",
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
            ));
            ok = false;
        }
    }
    match (&file.cert, &file.key) {
        (Some(_), None) => {
            problems.push(Problem::new(
                "tls.key",
                "is missing: a client certificate (tls.cert) needs its private key",
            ));
            ok = false;
        }
        (None, Some(_)) => {
            problems.push(Problem::new(
                "tls.cert",
                "is missing: a private key (tls.key) needs its client certificate",
            ));
            ok = false;
        }
        _ => {}
    }
    if !ok
        || (file.ca.is_some() && ca.is_none())
        || (file.cert.is_some() && cert.is_none())
        || (file.key.is_some() && key.is_none())
    {
        return None;
    }
    if let (Some(cert), Some(key), Some(cert_path), Some(key_path)) =
        (&cert, &key, &file.cert, &file.key)
    {
        if let Err(reason) = client_key_matches(cert, key) {
            problems.push(Problem::new(
                "tls.key",
                format!(
                    "{key_path} does not fit the client certificate in {cert_path} (tls.cert): \
                     {reason}; give the private key the certificate was issued for"
                ),
            ));
            return None;
        }
    }
    let paths = [("ca", &file.ca), ("cert", &file.cert), ("key", &file.key)]
        .into_iter()
        .filter_map(|(name, path)| path.as_ref().map(|p| format!("{name} {p}")))
        .collect();
    Some(TlsMaterial {
        ca: ca.map(|ca| ca.expose().to_vec()),
        client: cert
            .zip(key)
            .map(|(cert, key)| (cert.expose().to_vec(), key)),
        paths,
    })
}

/// Whether `key` (PEM) is the private key of the first certificate of `cert`
/// (PEM; both already parsed once): they are built into a rustls client
/// configuration the way the redis crate builds one for every connection,
/// which refuses a key whose public key differs from the certificate's (or a
/// key type rustls cannot sign with). Without this, a mismatch passes `check`
/// and fails every connection: never ready. The error is rustls's text,
/// which names no key material.
fn client_key_matches(cert: &Secret, key: &Secret) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Ok(chain), Ok(private)) = (
        CertificateDer::pem_slice_iter(cert.expose()).collect::<Result<Vec<_>, _>>(),
        PrivateKeyDer::from_pem_slice(key.expose()),
    ) else {
        return Err("unreadable PEM".to_string());
    };
    pingora::tls::install_default_crypto_provider();
    pingora::tls::ClientConfig::builder()
        .with_root_certificates(pingora::tls::RootCertStore::empty())
        .with_client_auth_cert(chain, private)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks `sentinel = { … }`; problems keyed `sentinel.…`.
fn compile_sentinel(
    file: &SentinelFile,
    password: Option<Secret>,
    tls: bool,
    resolver: &Resolver<'_>,
    warn: &mut dyn FnMut(String),
    problems: &mut Vec<Problem>,
) -> Option<SentinelSettings> {
    let before = problems.len();
    if file.master.is_empty()
        || file
            .master
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        problems.push(Problem::new("sentinel.master", "give the master's name as the Sentinels know it (sentinel monitor NAME … in sentinel.conf), e.g. \"mymaster\""));
    }
    if file.nodes.is_empty() {
        problems.push(Problem::new("sentinel.nodes", "is empty; list at least one Sentinel as \"HOST:PORT\", e.g. [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]"));
    }
    let mut nodes = Vec::new();
    for (i, node) in file.nodes.iter().enumerate() {
        match parse_node(node) {
            Some(address) => nodes.push(address),
            None => problems.push(Problem::new(
                format!("sentinel.nodes[{i}]"),
                "is not HOST:PORT (e.g. \"10.0.0.1:26379\" or \"[::1]:26379\")",
            )),
        }
    }
    if file.db.is_some_and(|db| db < 0) {
        problems.push(Problem::new("sentinel.db", "must be 0 or more"));
    }
    let sentinel_password = match &file.password {
        None => None,
        Some(reference) => {
            if secrets::is_literal(reference) {
                warn("cluster.sentinel.password is written inline (literal:); prefer \"${ENV_VAR}\" or \"file:/path\"".to_string());
            }
            match resolver.resolve(reference) {
                Ok(secret) if std::str::from_utf8(secret.expose()).is_ok() => Some(secret),
                Ok(_) => {
                    problems.push(Problem::new("sentinel.password", "is not valid UTF-8"));
                    None
                }
                Err(e) => {
                    problems.push(Problem::new("sentinel.password", e));
                    None
                }
            }
        }
    };
    if problems.len() > before {
        return None;
    }
    let db = file.db.unwrap_or(0);
    let list: Vec<String> = nodes
        .iter()
        .map(|(host, port)| format_node(host, *port))
        .collect();
    let mut redacted = format!(
        "sentinel master {:?} via {} (db {db}",
        file.master,
        list.join(", ")
    );
    if password.is_some() {
        redacted.push_str(", password [redacted]");
    }
    if sentinel_password.is_some() {
        redacted.push_str(", sentinel password [redacted]");
    }
    if tls {
        redacted.push_str(", TLS");
    }
    redacted.push(')');
    Some(SentinelSettings {
        master: file.master.clone(),
        nodes,
        sentinel_password,
        password,
        db,
        tls,
        redacted,
    })
}

/// `HOST:PORT`, `[V6]:PORT`; a port from 1 to 65535.
fn parse_node(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?.to_string(),
        None if host.contains(':') => return None,
        None => host.to_string(),
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
    {
        return None;
    }
    Some((host, port))
}

/// `host:port`, with brackets around an IPv6 address.
pub fn format_node(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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
        let tls = self
            .tls
            .as_ref()
            .and_then(|file| compile_tls(file, resolver, &mut problems));
        let tls_failed = self.tls.is_some() && tls.is_none();
        let redis = match (&self.redis, &self.sentinel) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new(
                    "sentinel",
                    "give either redis (one address) or sentinel (the master the Sentinels name), not both",
                ));
                None
            }
            (None, None) => {
                problems.push(Problem::new(
                    "redis",
                    "is missing; give redis = \"redis://HOST:6379/0\", or sentinel = { master = \"mymaster\", nodes = [\"HOST:26379\"] }",
                ));
                None
            }
            (Some(redis), None) => {
                let url = self.compile_url(redis, password.clone(), resolver, warn);
                match url {
                    Ok(url) if self.tls.is_some() && !url.is_tls() => {
                        problems.push(Problem::new(
                            "tls",
                            "needs a rediss:// URL in redis (this one is plain redis://)",
                        ));
                        None
                    }
                    Ok(url) => Some(Endpoint::Url(url)),
                    Err(e) => {
                        problems.push(Problem::new("redis", e));
                        None
                    }
                }
            }
            (None, Some(sentinel)) => compile_sentinel(
                sentinel,
                password.clone(),
                self.tls.is_some(),
                resolver,
                warn,
                &mut problems,
            )
            .map(Endpoint::Sentinel),
        };
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
        let mut duration = |key: &str,
                            value: &Option<String>,
                            default: Option<Duration>,
                            max: Duration| match value {
            None => Some(default),
            Some(text) => match parse_duration_within(text, max) {
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
            MAX_TIMEOUT,
        );
        let command_timeout = duration(
            "command_timeout",
            &self.command_timeout,
            Some(DEFAULT_COMMAND_TIMEOUT),
            MAX_TIMEOUT,
        );
        let claim_lease = duration("claim_lease", &self.claim_lease, None, MAX_CLAIM_LEASE);
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
            ) if problems.is_empty() && !tls_failed => Ok(Cluster {
                redis,
                tls,
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

impl ClusterFile {
    /// `redis = "…"`: a URL, or a reference to one.
    fn compile_url(
        &self,
        redis: &str,
        password: Option<Secret>,
        resolver: &Resolver<'_>,
        warn: &mut dyn FnMut(String),
    ) -> Result<RedisUrl, String> {
        if is_reference(redis) {
            let url = resolver.resolve(redis)?;
            match std::str::from_utf8(url.expose()) {
                Ok(url) => RedisUrl::parse(url.trim(), password),
                Err(_) => Err("the referenced URL is not valid UTF-8".to_string()),
            }
        } else if redis.contains("${") {
            // Not the password's own text, most likely, and not a password
            // written in the file either: say what happens instead.
            Err("a ${…} reference inside a URL is not expanded (Redis would get the text itself as the password); put the whole URL in the variable (redis = \"${REDIS_URL}\") or give password = \"${REDIS_PASSWORD}\"".to_string())
        } else {
            let parsed = RedisUrl::parse(redis, password);
            if let Ok(url) = &parsed {
                if url.redacted.contains("[redacted]") && self.password.is_none() {
                    warn("cluster.redis carries a password written in the config file; prefer redis = \"${REDIS_URL}\" or password = \"${REDIS_PASSWORD}\"".to_string());
                } else if url.redacted.contains("***@") {
                    warn("cluster.redis has a user name and no password: if it is the password, write redis://:PASSWORD@HOST (with the ':'), better from password = \"${REDIS_PASSWORD}\"".to_string());
                }
            }
            parsed
        }
    }
}

impl Cluster {
    /// One line for `hookgate check` and the start log; never the password.
    pub fn describe(&self) -> String {
        format!(
            "{}{} (key_prefix {:?}, on_unavailable {}, connect_timeout {}, command_timeout {}{})",
            self.redis.redacted(),
            self.tls.as_ref().map_or(String::new(), |tls| format!(
                " with TLS {}",
                tls.paths.join(", ")
            )),
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
            redis: Some(redis.to_string()),
            sentinel: None,
            tls: None,
            password: None,
            key_prefix: None,
            on_unavailable: None,
            connect_timeout: None,
            command_timeout: None,
            claim_lease: None,
        }
    }

    fn url(cluster: &Cluster) -> &RedisUrl {
        match &cluster.redis {
            Endpoint::Url(url) => url,
            Endpoint::Sentinel(_) => panic!("not a URL"),
        }
    }

    fn sentinel(nodes: &[&str]) -> ClusterFile {
        ClusterFile {
            redis: None,
            sentinel: Some(SentinelFile {
                master: "mymaster".into(),
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                password: Some("${HOOKGATE_TEST_SENTINEL_PASSWORD}".into()),
                db: Some(2),
            }),
            ..file("unused")
        }
    }

    fn keys(result: Result<Cluster, Vec<Problem>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|p| p.key).collect()
    }

    /// `sentinel = { … }`: nodes parsed, both passwords resolved and shown
    /// nowhere, each data node reached with the master's password and db.
    #[test]
    fn sentinel_settings() {
        std::env::set_var("HOOKGATE_TEST_SENTINEL_PASSWORD", "Sent1nel-Pw");
        std::env::set_var("HOOKGATE_TEST_MASTER_PASSWORD", "Mast3r-Pw");
        let mut written = sentinel(&["10.0.0.1:26379", "[::1]:26380", "sentinel-3:26379"]);
        written.password = Some("${HOOKGATE_TEST_MASTER_PASSWORD}".into());
        let (cluster, warnings) = compile(&written);
        let cluster = cluster.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let Endpoint::Sentinel(settings) = &cluster.redis else {
            panic!("a sentinel endpoint")
        };
        assert_eq!(
            settings.nodes,
            [
                ("10.0.0.1".to_string(), 26379),
                ("::1".to_string(), 26380),
                ("sentinel-3".to_string(), 26379)
            ]
        );
        for shown in [
            format!("{cluster:?}"),
            cluster.describe(),
            cluster.redis.to_string(),
        ] {
            assert!(
                !shown.contains("Sent1nel-Pw") && !shown.contains("Mast3r-Pw"),
                "{shown}"
            );
            assert!(
                shown.contains("sentinel master \"mymaster\" via 10.0.0.1:26379, [::1]:26380, sentinel-3:26379 (db 2, password [redacted], sentinel password [redacted])"),
                "{shown}"
            );
        }
        assert_eq!(
            settings.sentinel_info(1).redis_settings().password(),
            Some("Sent1nel-Pw")
        );
        let node = settings.node_info("10.0.0.9", 6379);
        assert_eq!(node.redis_settings().password(), Some("Mast3r-Pw"));
        assert_eq!(node.redis_settings().db(), 2);
        assert!(matches!(node.addr(), ConnectionAddr::Tcp(host, 6379) if host == "10.0.0.9"));
        assert!(!cluster.redis.is_tls());
    }

    /// Exactly one of `redis` and `sentinel`; nodes that are not HOST:PORT,
    /// an empty list, an empty master name: each refused under its key.
    #[test]
    fn sentinel_refusals() {
        std::env::set_var("HOOKGATE_TEST_SENTINEL_PASSWORD", "Sent1nel-Pw");
        let mut both = sentinel(&["127.0.0.1:26379"]);
        both.redis = Some("redis://127.0.0.1:6379".into());
        assert_eq!(keys(compile(&both).0), ["sentinel"]);
        let neither = ClusterFile {
            redis: None,
            ..file("unused")
        };
        assert_eq!(keys(compile(&neither).0), ["redis"]);
        assert_eq!(keys(compile(&sentinel(&[])).0), ["sentinel.nodes"]);
        assert_eq!(
            keys(compile(&sentinel(&["127.0.0.1", "h:0", "a:b:1", "ok:26379"])).0),
            [
                "sentinel.nodes[0]",
                "sentinel.nodes[1]",
                "sentinel.nodes[2]"
            ]
        );
        let mut unnamed = sentinel(&["127.0.0.1:26379"]);
        unnamed.sentinel.as_mut().unwrap().master = String::new();
        unnamed.sentinel.as_mut().unwrap().password =
            Some("${HOOKGATE_TEST_SENTINEL_UNSET}".into());
        let problems = compile(&unnamed).0.unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["sentinel.master", "sentinel.password"]);
        assert!(problems.iter().all(|p| !p.message.contains("Sent1nel-Pw")));
    }

    /// `tls = { … }`: files read (relative to the config) and parsed at load;
    /// a missing or invalid file, a cert without its key, and TLS on a plain
    /// `redis://` URL are refused under their keys.
    #[test]
    fn tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
        let resolver = Resolver::new(dir.path());
        let compile_in = |file: &ClusterFile| file.compile(&resolver, &mut |_| {});
        let tls = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| TlsFile {
            ca: ca.map(Into::into),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
        };
        let mut good = file("rediss://127.0.0.1:6380/0");
        good.tls = Some(tls(Some("ca.pem"), Some("client.pem"), Some("client.key")));
        let cluster = compile_in(&good).unwrap();
        let material = cluster.tls.as_ref().unwrap();
        // Read through the resolver (part of the reload fingerprint), which
        // drops the final newline.
        assert_eq!(
            material.ca.as_deref(),
            Some(cert.pem().trim_end().as_bytes())
        );
        assert!(material.client.is_some());
        let shown = format!("{cluster:?} {}", cluster.describe());
        assert!(
            shown.contains("ca ca.pem, cert client.pem, key client.key"),
            "{shown}"
        );
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        let mut bad = file("rediss://127.0.0.1:6380/0");
        bad.tls = Some(tls(Some("missing.pem"), Some("junk.pem"), None));
        assert_eq!(keys(compile_in(&bad)), ["tls.ca", "tls.cert", "tls.key"]);
        let mut plain = file("redis://127.0.0.1:6379/0");
        plain.tls = Some(tls(Some("ca.pem"), None, None));
        assert_eq!(keys(compile_in(&plain)), ["tls"]);
        let mut junk_key = file("rediss://127.0.0.1:6380/0");
        junk_key.tls = Some(tls(None, Some("client.pem"), Some("junk.pem")));
        assert_eq!(keys(compile_in(&junk_key)), ["tls.key"]);
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
                shown.contains("rediss://***:[redacted]@redis.internal:6380/2"),
                "{shown}"
            );
        }
        assert!(cluster.redis.is_tls());
        assert_eq!(
            url(&cluster).connection_info().redis_settings().password(),
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
        let info = url(&cluster).connection_info();
        assert_eq!(info.redis_settings().password(), Some("pw-from-env"));
        assert_eq!(info.redis_settings().db(), 1);
        let (missing, _) = compile(&file("${HOOKGATE_TEST_REDIS_UNSET}"));
        assert!(missing.unwrap_err()[0].message.contains("is not set"));
    }

    #[test]
    fn refusals_name_each_key() {
        let bad = ClusterFile {
            redis: Some("redis://127.0.0.1".into()),
            sentinel: None,
            tls: None,
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
