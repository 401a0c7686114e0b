//! Configuration: the TOML file (`file`), its validation into the compiled
//! [`Config`] the gateway runs on, and errors that name the file, line and key.
//!
//! Owns parsing, defaults and cross-checks (routes name existing upstreams, paths
//! are well formed, units parse), failing closed: secrets need an explicit form
//! (`secrets`), a file without routes is refused unless `allow_no_routes`, and
//! parse errors name the key, never the value (`problem`). It records every file
//! the config refers to and a fingerprint over them (`inputs`) for reloads.
//! Nothing downstream re-parses a string. It does
//! not own the runtime objects built from a `Config` (pools, route table): those
//! live in `upstream` and `routing`.

pub mod cluster;
pub mod dedupe;
pub mod events;
pub mod fanout;
pub mod file;
pub mod handshake;
pub mod inputs;
pub mod ip_sets;
mod locate;
mod neighbours;
mod present;

pub mod ratelimit;
pub mod secrets;
pub mod storage;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;

pub use crate::problem::{self, Problem};
pub use storage::{Delivery, RetryPolicy, StorageSettings};

use crate::allowlist::{Allowlist, IpSet};
use crate::dedupe::DedupeConfig;
use crate::events::EventRouter;
use crate::fanout::FanoutConfig;
use crate::logging::LogFormat;
use crate::ratelimit::RateLimit;
use crate::secret::Secret;
use crate::units::{parse_duration, parse_duration_within, parse_size};
use crate::verify::Verifier;
use events::OneOrMany;
use file::{FileConfig, RouteFile, UpstreamFile};
use ip_sets::{IpSetSource, IpSets};

/// Idle upstream connections kept by default: enough for a few hundred
/// concurrent deliveries without reconnecting (Pingora's own default is 128).
pub const DEFAULT_UPSTREAM_KEEPALIVE_POOL: usize = 1024;

/// The longest `[upstreams.NAME]` duration (`connect_timeout`, `timeout`,
/// `response_timeout`, `idle_timeout`, `health.interval`): a day. Each is also
/// more than 0. Deadlines are instants, and a claim lease derived from the
/// `response_timeout` goes to Redis, so neither may overflow.
pub const MAX_UPSTREAM_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (or a label such as `<embedded demo>`).
    pub source: PathBuf,
    /// SHA-256 (hex) of the text it was compiled from, as `sha256sum` prints it.
    pub source_hash: String,
    /// Fingerprint of the text and of every file it refers to (see [`inputs`]):
    /// equal fingerprints mean a reload would change nothing.
    pub fingerprint: String,
    /// The files the config refers to (`file:` secrets, `[ip_sets]` files),
    /// sorted: what a reload re-reads and the watcher watches.
    pub inputs: Vec<PathBuf>,
    /// Accepted but risky settings, e.g. a secret written inline with `literal:`.
    /// `hookgate check` prints them; `serve` and reloads log them.
    pub warnings: Vec<String>,
    pub server: ServerSettings,
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    /// `[storage]`: where queued deliveries are kept (restart to change).
    pub storage: Option<StorageSettings>,
    /// `[cluster]`: the Redis that instances share rate limits and dedupe
    /// through (restart to change).
    pub cluster: Option<cluster::Cluster>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsListener>,
    pub admin: SocketAddr,
    pub max_body: u64,
    /// `max_decoded_body`, when set; otherwise each route's is 8 × its `max_body`.
    pub max_decoded_body: Option<u64>,
    /// Peers whose `X-Forwarded-For` is believed (see `allowlist::client_addr`).
    pub trusted_proxies: IpSet,
    /// The allowlist of routes that set none.
    pub allow: Allowlist,
    /// Requests handled at once (`DEFAULT_MAX_INFLIGHT` when not configured).
    pub max_inflight: usize,
    pub shutdown_grace: Duration,
    pub threads: usize,
    pub client_timeout: Duration,
    /// Reload when the config file changes on disk.
    pub watch: bool,
    pub log_format: LogFormat,
    /// The background queue for fan-out copies.
    pub fanout: FanoutConfig,
    /// Idle keep-alive connections kept to upstreams, across all targets.
    pub upstream_keepalive_pool: usize,
    /// The header the decided client address is forwarded in; `None` sends none.
    pub client_header: Option<http::HeaderName>,
    /// Limits on client connections and requests.
    pub limits: ClientLimits,
    /// Bearer token the admin listener requires (except on `/healthz` and `/readyz`).
    pub admin_token: Option<Secret>,
    /// Host names (lower case, no port) the admin listener answers besides IP
    /// literals and `localhost`; DNS rebinding needs a name, so other names are refused.
    pub admin_hosts: Vec<String>,
    /// A config without routes is accepted (every delivery gets 404 `no_route`).
    pub allow_no_routes: bool,
}

/// Limits on what a client (a sender, or a proxy in front) may hold or take,
/// in the style of nginx's and HAProxy's timeouts. Each reached limit is
/// counted in `hookgate_client_limit_hits_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Open connections; more are closed at once (restart to change).
    pub max_connections: usize,
    /// Idle time allowed between requests on a kept-alive connection; `None`: no keep-alive.
    pub keepalive_timeout: Option<Duration>,
    /// Requests on one connection, then `Connection: close`.
    pub max_requests_per_connection: u32,
    /// The whole request head, from the connection's start (or, on a kept-alive
    /// connection, after up to `keepalive_timeout` of idleness).
    pub header_timeout: Duration,
    /// The whole request body, from the end of the head.
    pub body_timeout: Duration,
    /// Each write of the answer to the sender.
    pub send_timeout: Duration,
    /// Header fields in one request.
    pub max_header_count: usize,
    /// Bytes of the request head.
    pub max_head_size: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: 10_000,
            keepalive_timeout: Some(Duration::from_secs(60)),
            max_requests_per_connection: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_header_count: 100,
            max_head_size: 32 * 1024,
        }
    }
}

/// `[server] max_inflight` when absent: with the default `max_body`, at most
/// 1 GiB of buffered bodies.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;

/// A route's `max_decoded_body`, when neither it nor `[server]` sets one, is this many times
/// its `max_body`: webhook JSON compresses 5–10×.
pub const DECODED_BODY_FACTOR: u64 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub name: String,
    /// Resolved target addresses, in config order.
    pub targets: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    /// Bound on each read and write to the upstream, and on waiting for its response head.
    pub timeout: Duration,
    /// Bound on the whole exchange, from the first write to the response's last byte.
    pub response_timeout: Duration,
    /// How long an idle pooled connection to a target is kept.
    pub idle_timeout: Duration,
    pub health: HealthSettings,
    /// TLS to the targets, with this SNI, when set.
    pub tls_sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// `None`: TCP connect check; `Some(path)`: HTTP GET expecting 2xx.
    pub http_path: Option<String>,
    pub interval: Duration,
}

/// How a route's path matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `"/webhooks/stripe"` matches only that path.
    Exact(String),
    /// `"/webhooks/github/*"` matches `/webhooks/github` and everything below it.
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub name: String,
    pub host: Option<String>,
    pub path: PathPattern,
    /// Allowed methods; `None` allows any.
    pub methods: Option<Vec<Method>>,
    /// The route's own upstreams: the first answers the sender, the others get
    /// background copies (fan-out). Event rules may pick others.
    pub upstreams: Vec<String>,
    /// Event extraction and `[[routes.events]]` rules.
    pub events: Arc<EventRouter>,
    pub dedupe: Option<DedupeConfig>,
    pub max_body: u64,
    /// Bytes a body may decode to when it is decoded (`encoding`); more is refused with 413.
    pub max_decoded_body: u64,
    pub allow: Allowlist,
    pub rate_limit: Option<RateLimit>,
    /// Compiled with its secrets resolved; `Verifier::disabled()` when the route has no `verify`.
    pub verifier: Arc<Verifier>,
    /// Direct relay, or queued with its retry policy.
    pub delivery: Delivery,
    /// The setup handshake the gateway answers itself (`handshake = true`).
    pub handshake: Option<Arc<crate::handshake::Handshake>>,
}

/// Every problem found in one configuration file, each with its line where known.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<LocatedProblem>,
}

#[derive(Debug, Clone)]
pub struct LocatedProblem {
    pub line: Option<usize>,
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "{}: {count} configuration problem{}",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for located in &self.problems {
            match located.line {
                Some(line) => writeln!(f, "  {}:{line}: {}", self.file.display(), located.problem)?,
                None => writeln!(f, "  {}: {}", self.file.display(), located.problem)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// What runs in the process a file is reloaded into. `[storage]` and
/// `[cluster]` are read only at start, so a reload is checked against the
/// running store and claim lease, and its problems say to restart where only a
/// restart helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// A store runs: the process started with `[storage]`.
    pub store: bool,
    /// The running `[cluster] claim_lease` and `command_timeout`; `None`
    /// without `[cluster]` or without the `claim_lease` key (derived per route).
    pub claim_lease: Option<ClaimLease>,
}

/// A `[cluster] claim_lease` with the `command_timeout` its forwarded marks
/// are written within: what [`check_claim_lease`] holds a route's forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLease {
    /// How long a claim holds its id in Redis.
    pub lease: Duration,
    /// The longest wait for one Redis command (the forwarded mark's).
    pub command_timeout: Duration,
}

impl ClaimLease {
    /// The set lease of `cluster`, if it has one.
    fn of(cluster: &cluster::Cluster) -> Option<ClaimLease> {
        cluster.claim_lease.map(|lease| ClaimLease {
            lease,
            command_timeout: cluster.command_timeout,
        })
    }
}

impl Running {
    /// What `config` (a running snapshot's, which holds the running start-only
    /// settings) runs.
    pub fn of(config: &Config) -> Running {
        Running {
            store: config.storage.is_some(),
            claim_lease: config.cluster.as_ref().and_then(ClaimLease::of),
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path` (for a start or `check`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_into(path, None)
    }

    /// [`Config::load`] for a reload into a process where `running` runs: every
    /// problem of the file at once, those the running store and claim lease
    /// add included.
    pub fn load_for_reload(path: &Path, running: Running) -> Result<Config, ConfigError> {
        Config::load_into(path, Some(running))
    }

    fn load_into(path: &Path, running: Option<Running>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![LocatedProblem {
                line: None,
                problem: Problem::new("", format!("cannot read the file: {e}")),
            }],
        })?;
        Config::parse(&text, path, running)
    }

    /// Parses and validates `text`; `source` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, source: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, source, None)
    }

    fn parse(text: &str, source: &Path, running: Option<Running>) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<LocatedProblem>| ConfigError {
            file: source.to_path_buf(),
            problems,
        };
        if text.trim().is_empty() {
            return Err(fail(vec![LocatedProblem {
                line: None,
                problem: Problem::new(
                    "",
                    "the file is empty; a gateway without routes would answer every delivery 404 (was the file truncated while being written?)",
                ),
            }]));
        }
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| span.start);
            // Serde's message quotes the value, which may be a secret: name the key instead.
            let key = at
                .and_then(|at| locate::key_at(text, at))
                .unwrap_or_default();
            fail(vec![LocatedProblem {
                line: at.map(|at| locate::line_at(text, at)),
                problem: Problem::new(key, problem::without_values(e.message())),
            }])
        })?;
        let base_dir = source.parent().unwrap_or(Path::new("."));
        let source_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
        compile(file, text, source, base_dir, source_hash, running).map_err(|problems| {
            fail(
                problems
                    .into_iter()
                    .map(|problem| LocatedProblem {
                        line: locate::line_of(text, &problem.key),
                        problem,
                    })
                    .collect(),
            )
        })
    }

    pub fn route(&self, name: &str) -> Option<&RouteSettings> {
        self.routes.iter().find(|route| route.name == name)
    }
}

/// Collects problems while compiling, so every one is reported at once, and
/// warnings (accepted but risky settings) for [`Config::warnings`].
#[derive(Default)]
struct Problems(Vec<Problem>, Vec<String>);

impl Problems {
    fn warn(&mut self, warning: String) {
        self.1.push(warning);
    }

    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }

    /// Records problems of a section compiler, keyed under `prefix`.
    fn extend(&mut self, prefix: &str, found: Vec<Problem>) {
        self.0.extend(found.into_iter().map(|p| p.within(prefix)));
    }

    /// Keeps the value, or records the problems and returns `None`.
    fn take_all<T>(&mut self, result: Result<T, Vec<Problem>>) -> Option<T> {
        result.map_err(|found| self.0.extend(found)).ok()
    }

    /// Keeps the value, or records the problem under `key` and returns `None`.
    fn take<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(key, message)).ok()
    }
}

fn compile(
    file: FileConfig,
    text: &str,
    source: &Path,
    base_dir: &Path,
    source_hash: String,
    running: Option<Running>,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    // IP list files are read for the fingerprint before they are compiled: if one
    // changes in between, the fingerprint is the older one and the next reload
    // sees a difference, instead of the reverse (a change that is never applied).
    let ip_files: Vec<PathBuf> = file
        .ip_sets
        .values()
        .filter_map(|source| match source {
            IpSetSource::File(reference) => Some(base_dir.join(&reference.file)),
            IpSetSource::Inline(_) => None,
        })
        .collect();
    let mut input_bytes = inputs::read_all(&ip_files);
    let resolver = secrets::Resolver::new(base_dir);
    // The sets that compiled serve the references to them; a reference to a
    // broken one is not reported again.
    let (ip_sets, found) = IpSets::compile_partly(&file.ip_sets, base_dir);
    problems.extend("ip_sets", found);
    let server = compile_server(file.server, &resolver, &ip_sets, &mut problems);
    let storage = match &file.storage {
        None => None,
        Some(storage) => match storage.compile(base_dir) {
            Ok(settings) => Some(settings),
            Err(found) => {
                problems.extend("storage", found);
                None
            }
        },
    };
    let cluster = match &file.cluster {
        None => None,
        Some(cluster) => {
            let mut warnings = Vec::new();
            let compiled = cluster.compile(&resolver, &mut |w| warnings.push(w));
            warnings.into_iter().for_each(|w| problems.warn(w));
            match compiled {
                Ok(cluster) => Some(cluster),
                Err(found) => {
                    problems.extend("cluster", found);
                    None
                }
            }
        }
    };
    // Declared names, so an upstream with a bad field does not also fail every route naming it.
    let upstream_names: Vec<String> = file.upstreams.keys().cloned().collect();
    let upstreams: BTreeMap<String, UpstreamSettings> = file
        .upstreams
        .into_iter()
        .filter_map(|(name, upstream)| {
            compile_upstream(&name, upstream, &mut problems).map(|u| (name, u))
        })
        .collect();
    let mut seen_names = HashSet::new();
    let mut routes = Vec::new();
    // Each compiled route's position in the file: a route that did not compile
    // is left out of `routes`, and later problems must name the file's entry.
    let mut positions = Vec::new();
    let had_routes = !file.routes.is_empty();
    for (index, route) in file.routes.into_iter().enumerate() {
        let key = format!("routes[{index}]");
        if !seen_names.insert(route.name.clone()) {
            problems.push(
                format!("{key}.name"),
                format!("route name {:?} is used twice; route names must be unique because metrics and logs use them", route.name),
            );
        }
        if let Some(route) = compile_route(
            &key,
            route,
            &upstream_names,
            server.as_ref(),
            &ip_sets,
            &resolver,
            &mut problems,
        ) {
            routes.push(route);
            positions.push(index);
        }
    }
    check_route_overlaps(&routes, &positions, &mut problems);
    let redis_store = file
        .storage
        .as_ref()
        .is_some_and(|s| s.backend.as_deref() == Some("redis"));
    if redis_store && file.cluster.is_none() {
        problems.push(
            "storage.backend",
            "backend = \"redis\" keeps queued events in the [cluster] Redis, and there is no [cluster] table; add [cluster] redis = \"redis://HOST:6379/0\", or use backend = \"redb\"",
        );
    }
    let no_store_runs = running.is_some_and(|running| !running.store);
    for (route, index) in routes.iter().zip(&positions) {
        if !matches!(route.delivery, Delivery::Queued(_)) {
            continue;
        }
        let key = format!("routes[{index}].delivery");
        if no_store_runs {
            problems.push(key, queued_without_running_store(&route.name));
        } else if file.storage.is_none() {
            problems.push(
                key,
                format!("route {:?} is queued but there is no [storage] table; add [storage] path = \"data\" (a directory for the queued events), or use delivery = \"direct\"", route.name),
            );
        }
    }
    let file_lease = cluster.as_ref().and_then(ClaimLease::of);
    let running_lease = running.and_then(|running| running.claim_lease);
    // A restart reads the file's [cluster], its command_timeout included.
    let restart_command_timeout = cluster.as_ref().map(|c| c.command_timeout);
    if let Some(lease) = running_lease {
        check_claim_lease(
            lease,
            Lease::Running,
            restart_command_timeout,
            &routes,
            &upstreams,
            &mut problems,
        );
    }
    // A new lease applies at the next start: it must hold then too.
    if let Some(lease) = file_lease.filter(|&lease| Some(lease) != running_lease) {
        check_claim_lease(lease, Lease::File, None, &routes, &upstreams, &mut problems);
    }
    let no_routes_allowed = server.as_ref().is_some_and(|s| s.allow_no_routes);
    if !had_routes && !no_routes_allowed {
        problems.push(
            "routes",
            "no [[routes]]: every delivery would be answered 404; add a route, or set [server] allow_no_routes = true to run without routes on purpose",
        );
    }
    input_bytes.extend(
        resolver
            .into_files()
            .into_iter()
            .map(|(path, bytes)| (path, Some(bytes))),
    );
    let input_bytes = inputs::normalize(input_bytes);
    for warning in neighbours::weaker_neighbours(&routes) {
        problems.warn(warning);
    }
    for route in &routes {
        if matches!(route.delivery, Delivery::Queued(_))
            && route.verifier.scheme() == "none"
            && route.allow.set().is_none()
        {
            problems.warn(format!(
                "route {:?} is queued without verify: anyone who can reach it can store \
                 requests (up to [storage] max_bytes) that are then delivered to the app; \
                 add verify, or an allow list",
                route.name
            ));
        }
    }
    match server {
        Some(server) if problems.0.is_empty() => Ok(Config {
            source: source.to_path_buf(),
            source_hash,
            fingerprint: inputs::fingerprint(text.as_bytes(), &input_bytes),
            inputs: input_bytes.into_iter().map(|(path, _)| path).collect(),
            warnings: problems.1,
            server,
            upstreams,
            routes,
            storage,
            cluster,
        }),
        _ => Err(problems.0),
    }
}

/// The problem of a queued route on a reload while no store runs:
/// `[storage]` is opened only at start, so a file that adds it (and a queued
/// route) cannot apply until a restart, and the route would answer 503
/// meanwhile. The reload is refused and the running routes stay (fail closed,
/// and lose nothing).
fn queued_without_running_store(route: &str) -> String {
    format!(
        "route {route:?} is queued, but this process runs no store: [storage] is opened only at start; restart hookgate with a [storage] table to queue it, or keep delivery = \"direct\" until then (the running config stays in use)"
    )
}

/// Which `claim_lease` [`check_claim_lease`] holds the routes to, and so the remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// The file's: it applies at the next start.
    File,
    /// The running one, on a reload: `[cluster]` is read only at start, so
    /// it stays until a restart whatever the file says.
    Running,
}

/// A dedupe claim must outlive the forward it guards and the forwarded mark
/// written after it: with `[cluster] claim_lease` shorter than an upstream's
/// `response_timeout` (which bounds the whole exchange, `proxy::forward`) plus
/// `command_timeout` (the mark's write), a live instance still forwarding, or
/// still writing its mark, loses its claim and another instance forwards the
/// same delivery. Queued routes are exempt (their claim ends when the event is
/// stored). One problem per route concerned, naming every upstream of it over
/// the bound, so following the remedy once is enough. The remedies of a
/// file's lease and of the running one name the same bounds; a restart's
/// uses `restart_command_timeout`, the file's own (`None`: the lease's).
fn check_claim_lease(
    lease: ClaimLease,
    which: Lease,
    restart_command_timeout: Option<Duration>,
    routes: &[RouteSettings],
    upstreams: &BTreeMap<String, UpstreamSettings>,
    problems: &mut Problems,
) {
    let ClaimLease {
        lease,
        command_timeout,
    } = lease;
    let text = |d: Duration| humantime::format_duration(d).to_string();
    let deduped = routes
        .iter()
        .filter(|route| route.dedupe.is_some() && !matches!(route.delivery, Delivery::Queued(_)));
    for route in deduped {
        let mut over: Vec<(&str, Duration)> = route
            .upstreams
            .iter()
            .map(String::as_str)
            .chain(route.events.upstreams())
            .filter_map(|name| upstreams.get(name).map(|u| (name, u.response_timeout)))
            .filter(|&(_, timeout)| timeout.saturating_add(command_timeout) > lease)
            .collect();
        over.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        over.dedup_by_key(|(name, _)| *name);
        let Some(&(_, slowest)) = over.first() else {
            continue;
        };
        let (those, which_timeouts) = match over.as_slice() {
            [(name, timeout)] => (
                "that response_timeout",
                format!(
                    "the response_timeout {} of upstream {name:?}",
                    text(*timeout)
                ),
            ),
            many => (
                "those response_timeouts",
                format!(
                    "the response_timeouts of upstreams {}",
                    many.iter()
                        .map(|(name, timeout)| format!("{name:?} ({})", text(*timeout)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        let lower = match lease.checked_sub(command_timeout).filter(|d| !d.is_zero()) {
            Some(most) => format!("lower {those} to at most {}, or ", text(most)),
            None => String::new(),
        };
        let why = format!(
            "is shorter than {which_timeouts} plus the command_timeout {} of the forwarded mark (route {:?} dedupes): a claim would end while its instance still forwards, and another instance would forward the same delivery again",
            text(command_timeout),
            route.name,
        );
        let message = match which {
            Lease::File => format!(
                "claim_lease {} {why}; {lower}set claim_lease to at least {}, or leave claim_lease out (derived per route: the longest response_timeout + {})",
                text(lease),
                text(slowest.saturating_add(command_timeout)),
                text(crate::dedupe::claim_lease_margin(command_timeout)),
            ),
            Lease::Running => format!(
                "the running claim_lease {} {why}; [cluster] is read only at start, so {lower}restart hookgate with a claim_lease of at least {} (or none: derived per route)",
                text(lease),
                text(slowest.saturating_add(restart_command_timeout.unwrap_or(command_timeout))),
            ),
        };
        problems.push("cluster.claim_lease", message);
    }
}

fn compile_server(
    server: file::ServerFile,
    resolver: &secrets::Resolver<'_>,
    ip_sets: &IpSets,
    problems: &mut Problems,
) -> Option<ServerSettings> {
    let base_dir = resolver.base_dir();
    let listen: Vec<SocketAddr> = server
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| {
            problems.take(&format!("server.listen[{i}]"), parse_listen_addr(addr))
        })
        .collect();
    if server.listen.is_empty() {
        problems.push(
            "server.listen",
            "at least one listen address is needed, e.g. listen = [\"0.0.0.0:8080\"]",
        );
    }
    let limits = compile_limits(&server, problems);
    let tls = server.tls.and_then(|tls| {
        let listen = problems.take("server.tls.listen", parse_listen_addr(&tls.listen));
        let cert = problems.take("server.tls.cert", existing_file(base_dir, &tls.cert));
        let key = problems.take("server.tls.key", existing_file(base_dir, &tls.key));
        Some(TlsListener {
            listen: listen?,
            cert: cert?,
            key: key?,
        })
    });
    let admin = problems.take("server.admin", parse_listen_addr(&server.admin));
    let max_body = problems.take("server.max_body", parse_size(&server.max_body));
    let max_decoded_body = match &server.max_decoded_body {
        Some(text) => problems
            .take("server.max_decoded_body", parse_size(text))
            .map(Some),
        None => Some(None),
    };
    let trusted_proxies =
        problems.take_all(ip_sets.resolve("server.trusted_proxies", &server.trusted_proxies));
    let allow = problems.take_all(ip_sets.allowlist(
        "server.allow",
        server.allow.as_deref(),
        &Allowlist::any(),
    ));
    if server.max_inflight == Some(0) {
        problems.push(
            "server.max_inflight",
            "0 would refuse every request; remove the key for the default of 1024",
        );
    }
    let shutdown_grace = problems.take(
        "server.shutdown_grace",
        parse_duration(&server.shutdown_grace),
    );
    let client_timeout = match &server.client_timeout {
        Some(text) => problems.take("server.client_timeout", parse_duration(text)),
        None => Some(Duration::from_secs(60)),
    };
    let fanout = match &server.fanout {
        None => Some(FanoutConfig::default()),
        Some(spec) => match spec.compile() {
            Ok(fanout) => Some(fanout),
            Err(found) => {
                problems.extend("server.fanout", found);
                None
            }
        },
    };
    let client_header = problems.take(
        "server.client_header",
        parse_client_header(server.client_header.as_deref().unwrap_or("X-Real-IP")),
    );
    let admin_token = match &server.admin_token {
        None => Some(None),
        Some(reference) => {
            if secrets::is_literal(reference) {
                problems.warn(
                    "server.admin_token is written inline (literal:); anyone who can read the config file can use the admin API; prefer \"${ENV_VAR}\" or \"file:/path\"".to_string(),
                );
            }
            problems
                .take("server.admin_token", resolver.resolve(reference))
                .map(Some)
        }
    };
    let admin_hosts: Vec<String> = server
        .admin_hosts
        .iter()
        .enumerate()
        .filter_map(|(i, host)| {
            problems.take(&format!("server.admin_hosts[{i}]"), parse_admin_host(host))
        })
        .collect();
    if let (Some(addr), Some(None)) = (admin, &admin_token) {
        if !addr.ip().is_loopback() {
            problems.warn(format!(
                "server.admin listens on {addr}, not loopback, without admin_token: whoever reaches it can read /config and /metrics and reload; set admin_token = \"${{ENV_VAR}}\" or keep it private"
            ));
        }
    }
    let threads = match server.threads {
        Some(0) | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => n,
    };
    Some(ServerSettings {
        listen,
        tls,
        admin: admin?,
        max_body: max_body?,
        max_decoded_body: max_decoded_body?,
        trusted_proxies: trusted_proxies?,
        allow: allow?,
        max_inflight: server.max_inflight.unwrap_or(DEFAULT_MAX_INFLIGHT),
        shutdown_grace: shutdown_grace?,
        threads,
        client_timeout: client_timeout?,
        watch: server.watch,
        log_format: server.log_format,
        fanout: fanout?,
        upstream_keepalive_pool: server
            .upstream_keepalive_pool
            .unwrap_or(DEFAULT_UPSTREAM_KEEPALIVE_POOL),
        client_header: client_header?,
        limits: limits?,
        admin_token: admin_token?,
        admin_hosts,
        allow_no_routes: server.allow_no_routes,
    })
}

fn compile_limits(server: &file::ServerFile, problems: &mut Problems) -> Option<ClientLimits> {
    let defaults = ClientLimits::default();
    let mut duration = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Some(default),
        Some(text) => {
            let parsed = problems.take(&format!("server.{key}"), parse_duration(text))?;
            if parsed.is_zero() && key != "keepalive_timeout" {
                problems.push(
                    format!("server.{key}"),
                    "0 would refuse every request; use a positive duration such as \"10s\"",
                );
                return None;
            }
            Some(parsed)
        }
    };
    let keepalive_timeout = duration(
        "keepalive_timeout",
        &server.keepalive_timeout,
        defaults.keepalive_timeout.unwrap_or_default(),
    );
    let header_timeout = duration(
        "header_timeout",
        &server.header_timeout,
        defaults.header_timeout,
    );
    let body_timeout = duration("body_timeout", &server.body_timeout, defaults.body_timeout);
    let send_timeout = duration("send_timeout", &server.send_timeout, defaults.send_timeout);
    let max_head_size = match &server.max_head_size {
        None => Some(defaults.max_head_size),
        Some(text) => problems
            .take("server.max_head_size", parse_size(text))
            .map(|size| size as usize),
    };
    let positive =
        |problems: &mut Problems, key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                problems.push(
                    format!("server.{key}"),
                    "0 would refuse every connection or request; remove the key for the default",
                );
                None
            }
            Some(n) => Some(n),
            None => Some(default),
        };
    let max_connections = positive(
        problems,
        "max_connections",
        server.max_connections,
        defaults.max_connections,
    );
    let max_header_count = positive(
        problems,
        "max_header_count",
        server.max_header_count,
        defaults.max_header_count,
    );
    let max_requests = positive(
        problems,
        "max_requests_per_connection",
        server.max_requests_per_connection.map(|n| n as usize),
        defaults.max_requests_per_connection as usize,
    );
    Some(ClientLimits {
        max_connections: max_connections?,
        // Whole seconds: Pingora keeps the keep-alive timeout in seconds.
        keepalive_timeout: keepalive_timeout
            .map(|t| Duration::from_secs(t.as_secs_f64().ceil() as u64))
            .filter(|t| !t.is_zero()),
        max_requests_per_connection: max_requests? as u32,
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        send_timeout: send_timeout?,
        max_header_count: max_header_count?,
        max_head_size: max_head_size?,
    })
}

/// `[server] client_header`: a header name hookgate does not set for another purpose.
fn parse_client_header(text: &str) -> Result<Option<http::HeaderName>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let name = http::HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))?;
    let reserved = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-request-id",
        "x-hookgate-route",
        "x-hookgate-event",
        "x-hookgate-event-id",
        "x-hookgate-attempt",
    ];
    if reserved.contains(&name.as_str()) {
        return Err(format!(
            "{text:?} is a header hookgate sets or strips for another purpose; use e.g. \
             \"X-Real-IP\" or \"X-Client-IP\", or \"\" for none"
        ));
    }
    Ok(Some(name))
}

/// An `admin_hosts` entry: a DNS name such as `"hookgate"` or `"admin.example.com"`,
/// without port (any port is accepted) or scheme.
fn parse_admin_host(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err("must be a host name such as \"hookgate\" or \"admin.example.com\", without scheme or port (IP addresses and localhost are always accepted)".to_string())
    }
}

fn compile_upstream(
    name: &str,
    upstream: UpstreamFile,
    problems: &mut Problems,
) -> Option<UpstreamSettings> {
    let key = format!("upstreams.{name}");
    if upstream.targets.is_empty() {
        problems.push(
            format!("{key}.targets"),
            "an upstream needs at least one target, e.g. targets = [\"127.0.0.1:9000\"]",
        );
    }
    let targets: Vec<SocketAddr> = upstream
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, target)| {
            problems.take(&format!("{key}.targets[{i}]"), resolve_target(target))
        })
        .collect();
    let mut duration = |field: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => problems.take(
            &format!("{key}.{field}"),
            parse_duration_within(text, MAX_UPSTREAM_DURATION),
        ),
        None => Some(default),
    };
    let connect_timeout = duration(
        "connect_timeout",
        &upstream.connect_timeout,
        Duration::from_secs(1),
    );
    let timeout = duration("timeout", &upstream.timeout, Duration::from_secs(10));
    let response_timeout = duration(
        "response_timeout",
        &upstream.response_timeout,
        Duration::from_secs(60),
    );
    let idle_timeout = duration(
        "idle_timeout",
        &upstream.idle_timeout,
        Duration::from_secs(60),
    );
    let health_interval = duration(
        "health.interval",
        &upstream.health.as_ref().and_then(|h| h.interval.clone()),
        Duration::from_secs(5),
    );
    let http_path = upstream.health.and_then(|h| h.path);
    if let Some(path) = &http_path {
        if !path.starts_with('/') {
            problems.push(
                format!("{key}.health.path"),
                format!("health check path {path:?} must start with '/'"),
            );
        }
    }
    Some(UpstreamSettings {
        name: name.to_string(),
        targets,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        response_timeout: response_timeout?,
        idle_timeout: idle_timeout?,
        health: HealthSettings {
            http_path,
            interval: health_interval?,
        },
        tls_sni: upstream.tls.map(|tls| tls.sni),
    })
}

fn compile_route(
    key: &str,
    route: RouteFile,
    upstream_names: &[String],
    server: Option<&ServerSettings>,
    ip_sets: &IpSets,
    resolver: &secrets::Resolver<'_>,
    problems: &mut Problems,
) -> Option<RouteSettings> {
    if route.name.is_empty()
        || !route
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problems.push(
            format!("{key}.name"),
            format!("route name {:?} must be non-empty and use only letters, digits, '-', '_' or '.' (it becomes a metric label)", route.name),
        );
    }
    let path = problems.take(&format!("{key}.path"), parse_path_pattern(&route.path));
    let methods = match route.methods {
        None => Some(None),
        Some(list) => {
            let parsed: Vec<Option<Method>> = list
                .iter()
                .enumerate()
                .map(|(i, m)| problems.take(&format!("{key}.methods[{i}]"), parse_method(m)))
                .collect();
            if list.is_empty() {
                problems.push(format!("{key}.methods"), "an empty method list would refuse every request; remove the key to allow any method");
            }
            for (i, method) in parsed.iter().enumerate() {
                let Some(method) = method else { continue };
                if parsed[..i]
                    .iter()
                    .flatten()
                    .any(|earlier| earlier == method)
                {
                    problems.push(
                        format!("{key}.methods[{i}]"),
                        format!("{method} is listed twice; list each method once"),
                    );
                }
            }
            parsed.into_iter().collect::<Option<Vec<_>>>().map(Some)
        }
    };
    let listed = matches!(route.upstream, OneOrMany::Many(_));
    let upstreams = match route.upstream {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    };
    if upstreams.is_empty() {
        problems.push(
            format!("{key}.upstream"),
            "name at least one upstream; with several, the first answers the sender and the others get copies",
        );
    }
    for (i, name) in upstreams.iter().enumerate() {
        let at = if listed {
            format!("{key}.upstream[{i}]")
        } else {
            format!("{key}.upstream")
        };
        if !upstream_names.contains(name) {
            problems.push(
                at,
                format!(
                    "unknown upstream {name:?}; defined upstreams: {}",
                    list_or_none(upstream_names)
                ),
            );
        } else if upstreams[..i].contains(name) {
            problems.push(at, format!("upstream {name:?} is listed twice"));
        }
    }
    let is_upstream = |name: &str| upstream_names.iter().any(|n| n == name);
    // A provider route with event rules but no `event` table reads the event
    // where the provider's row says it is.
    let provider = route
        .verify
        .as_ref()
        .and_then(|v| v.provider.as_deref())
        .and_then(crate::verify::providers::find);
    let from_provider = match (&route.event, provider) {
        (None, Some(row)) if !route.events.is_empty() || route.unmatched.is_some() => {
            provider_event(&row.event)
        }
        _ => None,
    };
    let events = events::compile_router(
        route.event.as_ref().or(from_provider.as_ref()),
        &route.events,
        route.unmatched.as_deref(),
        &upstreams,
        &is_upstream,
    )
    .map(|router| router.verified_body(route.verify.is_some()));
    let events = match events {
        Ok(router) => Some(router),
        Err(found) => {
            problems.extend(key, found);
            None
        }
    };
    let max_body = match &route.max_body {
        Some(text) => problems.take(&format!("{key}.max_body"), parse_size(text)),
        None => server.map(|s| s.max_body),
    };
    let max_decoded_body = match &route.max_decoded_body {
        Some(text) => problems.take(&format!("{key}.max_decoded_body"), parse_size(text)),
        None => match server.and_then(|s| s.max_decoded_body) {
            Some(limit) => Some(limit),
            None => max_body.map(|limit| limit.saturating_mul(DECODED_BODY_FACTOR)),
        },
    };
    let host = route.host.map(|h| h.to_ascii_lowercase());
    let default_allow = server.map_or_else(Allowlist::any, |s| s.allow.clone());
    let allow = problems.take_all(ip_sets.allowlist(
        &format!("{key}.allow"),
        route.allow.as_deref(),
        &default_allow,
    ));
    let rate_limit = match &route.rate_limit {
        None => Some(None),
        Some(spec) => match spec.compile() {
            Ok(limit) => Some(Some(limit)),
            Err(found) => {
                problems.extend(&format!("{key}.rate_limit"), found);
                None
            }
        },
    };
    let plan = match handshake::plan(route.handshake.as_ref(), route.verify.as_ref()) {
        Ok(plan) => plan,
        Err(found) => {
            problems.extend(key, found);
            None
        }
    };
    // Asana's handshake route verifies with the secret its handshake hands over.
    let verify_spec = plan
        .as_ref()
        .and_then(|p| p.verify.as_ref())
        .or(route.verify.as_ref());
    let verifier = match verify_spec {
        None => Some(Verifier::disabled()),
        Some(spec) => {
            for (i, reference) in spec.secrets.iter().enumerate() {
                if secrets::is_literal(reference) {
                    problems.warn(format!(
                        "{key}.verify.secrets[{i}] (route {:?}) is written inline (literal:); anyone who can read the config file can forge deliveries; prefer \"${{ENV_VAR}}\" or \"file:/path\"",
                        route.name
                    ));
                }
            }
            let name = &route.name;
            let resolve = |reference: &str| {
                if reference == crate::handshake::ASANA_SECRET_REFERENCE {
                    return Ok(handshake::placeholder_secret());
                }
                resolver
                    .resolve(reference)
                    .map_err(|e| format!("route {name:?}: {e}"))
            };
            match Verifier::compile(spec, &resolve) {
                Ok(verifier) => Some(verifier),
                Err(found) => {
                    let prefix = format!("{key}.verify");
                    problems
                        .0
                        .extend(found.into_iter().map(|p| p.within(&prefix)));
                    None
                }
            }
        }
    };
    let verifier = verifier?;
    let handshake = match plan {
        None => None,
        Some(plan) => match handshake::compile(
            plan,
            &route.name,
            route.verify.as_ref(),
            &verifier,
            resolver,
        ) {
            Ok(handshake) => Some(handshake),
            Err(found) => {
                problems.extend(key, found);
                return None;
            }
        },
    };
    let dedupe_spec = match &route.dedupe {
        Some(spec) if spec.key.trim() == "provider" => {
            match provider.and_then(|row| provider_key(&row.delivery_id)) {
                Some(id) => Some(dedupe::DedupeSpec {
                    key: id.to_string(),
                    ..spec.clone()
                }),
                None => {
                    problems.push(
                        format!("{key}.dedupe.key"),
                        match provider {
                            Some(row) => format!(
                                "provider {:?} names no delivery id hookgate can read ({}); write the key, e.g. key = \"header:<Name>\" or \"json:<pointer>\"",
                                row.name, row.delivery_id
                            ),
                            None => "key = \"provider\" needs verify = { provider = \"...\" } on the route; or write the key, e.g. key = \"header:<Name>\"".to_string(),
                        },
                    );
                    return None;
                }
            }
        }
        other => other.clone(),
    };
    let dedupe = match &dedupe_spec {
        None => Some(None),
        Some(spec) => match spec.compile(verifier.scheme()) {
            Ok(dedupe) => Some(Some(dedupe)),
            Err(found) => {
                problems.extend(&format!("{key}.dedupe"), found);
                None
            }
        },
    };
    let delivery = match storage::compile_delivery(route.delivery.as_deref(), route.retry.as_ref())
    {
        Ok(delivery) => Some(delivery),
        Err(found) => {
            problems.extend(key, found);
            None
        }
    };
    Some(RouteSettings {
        delivery: delivery?,
        name: route.name,
        host,
        path: path?,
        methods: methods?,
        upstreams,
        events: Arc::new(events?),
        dedupe: dedupe?,
        max_body: max_body?,
        max_decoded_body: max_decoded_body?,
        allow: allow?,
        rate_limit: rate_limit?,
        verifier: Arc::new(verifier),
        handshake,
    })
}

/// Two routes with the same host, path and overlapping methods would make the second unreachable.
/// `positions[i]`: the file's index of `routes[i]`.
fn check_route_overlaps(routes: &[RouteSettings], positions: &[usize], problems: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let shadowed_by = routes[..i].iter().find(|earlier| {
            // Hosts and paths match without regard to ASCII case (`routing`).
            crate::routing::same_target_of(
                (&earlier.host, &earlier.path),
                (&route.host, &route.path),
            ) && match (&earlier.methods, &route.methods) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
            }
        });
        if let Some(earlier) = shadowed_by {
            problems.push(
                format!("routes[{}].path", positions[i]),
                format!("route {:?} has the same host, path and methods as route {:?} (letter case aside: paths match without regard to it) and could never match", route.name, earlier.name),
            );
        }
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("invalid listen address {text:?}; use IP:PORT such as \"0.0.0.0:8080\" or \"[::]:8080\"")
    })
}

fn resolve_target(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(format!("target {text:?} needs a port, e.g. \"{text}:80\""));
    }
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve target {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("target {text:?} resolves to no address"))
}

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "unknown method {text:?}; use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"
        )),
    }
}

fn parse_path_pattern(text: &str) -> Result<PathPattern, String> {
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must start with '/'"));
    }
    if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path {text:?} must be a plain path without query, fragment or spaces"
        ));
    }
    let (pattern, path) = match text.strip_suffix("/*") {
        Some(prefix) if prefix.contains('*') => {
            return Err(format!(
                "path {text:?}: '*' is only allowed as a final \"/*\""
            ))
        }
        Some(prefix) => (PathPattern::Prefix(prefix.to_string()), prefix),
        None if text.contains('*') => {
            return Err(format!(
                "path {text:?}: '*' is only allowed as a final \"/*\""
            ))
        }
        None => (PathPattern::Exact(text.to_string()), text),
    };
    // Requests are routed on their canonical, decoded path (`target`): a route
    // path must be written in that form to be reachable at all.
    let canonical = match path {
        "" => Ok(true),
        path if path.contains('%') => Ok(false),
        path => crate::target::canonical_path(path).map(|(_, routed)| routed == path),
    };
    match canonical {
        Ok(true) if path.len() > 1 && path.ends_with('/') => Err(format!(
            "path {text:?}: write it without the trailing '/'; routes match with or without it"
        )),
        Ok(true) => Ok(pattern),
        Ok(false) => Err(format!(
            "path {text:?} is not in canonical form: write it decoded (no %-escapes), \
             without \"//\", \".\" or \"..\" segments; requests are routed on that form"
        )),
        Err(why) => Err(format!("path {text:?} can never match a request: {why}")),
    }
}

fn existing_file(base_dir: &Path, text: &str) -> Result<PathBuf, String> {
    let path = base_dir.join(text);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("file {} does not exist", path.display()))
    }
}

impl Config {
    /// A human-readable summary for `hookgate check`: listeners and the route table.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let server = &self.server;
        let _ = writeln!(out, "{}: OK", self.source.display());
        let listen: Vec<String> = server.listen.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "listen: {}", listen.join(", "));
        if let Some(tls) = &server.tls {
            let _ = writeln!(out, "tls:    {} (cert {})", tls.listen, tls.cert.display());
        }
        let _ = writeln!(out, "admin:  {}", server.admin);
        let _ = writeln!(out, "routes:");
        if self.routes.is_empty() {
            let _ = writeln!(
                out,
                "  (none: allow_no_routes = true, every delivery is answered 404)"
            );
        }
        for route in &self.routes {
            let path = match &route.path {
                PathPattern::Exact(path) => path.clone(),
                PathPattern::Prefix(prefix) => format!("{prefix}/*"),
            };
            let methods = route.methods.as_ref().map_or("*".to_string(), |ms| {
                ms.iter().map(Method::as_str).collect::<Vec<_>>().join(",")
            });
            let host = route.host.as_deref().unwrap_or("*");
            let targets = self
                .upstreams
                .get(&route.upstreams[0])
                .map_or(String::new(), |u| {
                    u.targets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            let _ = writeln!(
                out,
                "  {:<16} {:<6} {host} {path} -> {} [{targets}] (verify {}, handshake {}, max_body {} B{}{}{}{})",
                route.name,
                methods,
                route.upstreams.join("+"),
                route.verifier.describe(),
                route
                    .handshake
                    .as_ref()
                    .map_or("off", |h| h.kind().as_str()),
                route.max_body,
                route.allow.set().map_or(String::new(), |set| {
                    let nets = set.networks();
                    let shown: Vec<String> = nets.iter().take(3).map(ToString::to_string).collect();
                    match nets.len() {
                        n if n > 3 => format!(", allow {} and {} more", shown.join(" "), n - 3),
                        _ => format!(", allow {}", shown.join(" ")),
                    }
                }),
                route.rate_limit.as_ref().map_or(String::new(), |limit| format!(
                    ", rate_limit {} burst {} per {}{}",
                    limit.rate,
                    limit.burst,
                    limit.by,
                    if self.cluster.is_some() { " (shared: [cluster])" } else { "" }
                )),
                route.dedupe.as_ref().map_or(String::new(), |dedupe| format!(
                    ", dedupe {} ttl {}{}",
                    dedupe.key,
                    humantime::format_duration(dedupe.ttl),
                    if self.cluster.is_some() { " (shared: [cluster])" } else { "" }
                )),
                match route.delivery {
                    Delivery::Direct => String::new(),
                    Delivery::Queued(retry) => format!(
                        ", queued: {} attempts, backoff {} to {}, max_age {}",
                        retry.attempts,
                        humantime::format_duration(retry.backoff),
                        humantime::format_duration(retry.max_backoff),
                        humantime::format_duration(retry.max_age)
                    ),
                }
            );
        }
        if let Some(cluster) = &self.cluster {
            let _ = writeln!(out, "cluster: {}", cluster.describe());
        }
        if let Some(storage) = &self.storage {
            let _ = writeln!(
                out,
                "storage: {} (max_bytes {} B, retention {}, {} attempts at once per upstream)",
                storage.backend,
                storage.max_bytes,
                humantime::format_duration(storage.retention),
                storage.concurrency
            );
        }
        out
    }
}

/// A provider row's event source as an `event` table, when it is one
/// (`"header:<Name>"`, `"json:<pointer>"`, `"form:<field>"`); `None` for a note.
fn provider_event(source: &str) -> Option<events::EventSpec> {
    let source = provider_key(source)?;
    let mut spec = events::EventSpec::default();
    if let Some(name) = source.strip_prefix("header:") {
        spec.header = Some(name.to_string());
    } else if let Some(pointer) = source.strip_prefix("json:") {
        spec.json = Some(pointer.to_string());
    } else if let Some(field) = source.strip_prefix("form:") {
        spec.form = Some(field.to_string());
    } else {
        return None;
    }
    Some(spec)
}

/// A provider row's source when it is a bare key (`"header:X-Id"`,
/// `"json:/id"`, `"standard-webhooks"`), not a note with words after it.
fn provider_key(source: &str) -> Option<&str> {
    let source = source.trim();
    let key = source.starts_with("header:")
        || source.starts_with("json:")
        || source.starts_with("form:")
        || source == "standard-webhooks";
    (key && !source.contains(char::is_whitespace)).then_some(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = \"app\"\n";

    fn server(keys: &str) -> ServerSettings {
        let text = format!("[server]\n{keys}\n{ROUTE}");
        Config::from_toml(&text, Path::new("t.toml"))
            .expect("valid config")
            .server
    }

    /// The defaults the README's `[server]` table and `conf/hookgate.toml` state.
    #[test]
    fn client_limits_default_to_the_documented_values() {
        let written = server(
            "max_inflight = 1024\nmax_connections = 10000\nkeepalive_timeout = \"60s\"\n\
             max_requests_per_connection = 1000\nheader_timeout = \"10s\"\nbody_timeout = \"30s\"\n\
             send_timeout = \"30s\"\nmax_header_count = 100\nmax_head_size = \"32KiB\"\n\
             client_header = \"X-Real-IP\"",
        );
        let defaults = server("");
        assert_eq!(written.limits, defaults.limits);
        assert_eq!(defaults.limits, ClientLimits::default());
        assert_eq!(written.max_inflight, defaults.max_inflight);
        assert_eq!(defaults.max_inflight, DEFAULT_MAX_INFLIGHT);
        assert_eq!(written.client_header, defaults.client_header);
        assert_eq!(
            server("keepalive_timeout = \"0s\"")
                .limits
                .keepalive_timeout,
            None
        );
        assert_eq!(server("client_header = \"\"").client_header, None);
    }

    #[test]
    fn zero_limits_and_reserved_client_headers_are_refused() {
        for keys in [
            "max_connections = 0",
            "header_timeout = \"0s\"",
            "body_timeout = \"0s\"",
            "max_header_count = 0",
            "client_header = \"X-Forwarded-For\"",
            "client_header = \"bad header\"",
        ] {
            let text = format!("[server]\n{keys}\n{ROUTE}");
            assert!(
                Config::from_toml(&text, Path::new("t.toml")).is_err(),
                "{keys}"
            );
        }
    }

    #[test]
    fn route_paths_must_be_canonical() {
        for path in [
            "/a//b", "/a/./b", "/a/../b", "/a%2Fb", "/a%41", "/a/", "/a;b",
        ] {
            assert!(parse_path_pattern(path).is_err(), "{path}");
        }
        for path in ["/a/b", "/a/*", "/*", "/.well-known/x", "/a:b@c"] {
            assert!(parse_path_pattern(path).is_ok(), "{path}");
        }
    }
}
