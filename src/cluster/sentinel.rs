//! Which Redis node the cluster talks to, and following it when it changes:
//! one fixed address (`[cluster] redis`), or the master that Redis Sentinel
//! names (`[cluster] sentinel`), found again after a failover.
//!
//! Owns: asking the Sentinels for the master and checking that node says it
//! is one ([`Sentinels::master`], the protocol of
//! <https://redis.io/docs/latest/develop/reference/sentinel-clients/>: ask
//! each Sentinel in turn `SENTINEL GET-MASTER-ADDR-BY-NAME`, then `ROLE` on
//! the address it gives), and the [`Link`]: the current connection manager,
//! replaced by one to the new master when the old one fails or answers as a
//! replica. Does not own when a failure is noticed (the ping and the commands
//! of `cluster` and `delivery::redis_store` call [`Link::suspect`]), nor the
//! `[cluster]` settings (`config::cluster`).
//!
//! A `redis::aio::ConnectionManager` reconnects to the address it was built
//! with; after a failover that address is a dead node or a demoted replica.
//! So, with Sentinel, every suspicion (a lost connection, a timeout, a
//! `READONLY` answer, a ping whose `ROLE` is not `master`) starts one lookup
//! (never two at once, spaced by a backoff from 100 ms to 2 s), and a lookup
//! that finds another master swaps in a new manager; callers take the manager
//! of the moment for each command. Nothing here logs a password: addresses
//! only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ConnectionInfo};
use tokio::runtime::Handle;

use crate::config::cluster::{format_node, Cluster, Endpoint, SentinelSettings, TlsMaterial};

/// The first wait between two lookups that found no master; doubled up to
/// [`MAX_LOOKUP_DELAY`].
const MIN_LOOKUP_DELAY: Duration = Duration::from_millis(100);
const MAX_LOOKUP_DELAY: Duration = Duration::from_secs(2);

/// Why no master could be found. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// No Sentinel answered with an address that checks out; one reason per
    /// Sentinel, in the order asked.
    #[error("no Sentinel named a reachable master {master:?}: {}", reasons.join("; "))]
    NoMaster {
        master: String,
        reasons: Vec<String>,
    },
    /// The client could not be built (a TLS setting the crate refused).
    #[error("{0}")]
    Client(String),
}

/// A `redis::Client` for `info`, with `[cluster] tls` if any.
pub fn client_for(
    info: ConnectionInfo,
    tls: Option<&TlsMaterial>,
) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(tls) => redis::Client::build_with_tls(info, tls.certificates()),
        None => redis::Client::open(info),
    }
}

/// The Sentinels of one master, and how to reach the nodes they name.
pub struct Sentinels {
    settings: SentinelSettings,
    tls: Option<TlsMaterial>,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The Sentinel that answered last: asked first next time (the client
    /// guidelines' "move it to the head of the list").
    first: Mutex<usize>,
}

impl Sentinels {
    pub fn new(cluster: &Cluster, settings: &SentinelSettings) -> Sentinels {
        Sentinels {
            settings: settings.clone(),
            tls: cluster.tls.clone(),
            connect_timeout: cluster.connect_timeout,
            command_timeout: cluster.command_timeout,
            first: Mutex::new(0),
        }
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout.max(self.connect_timeout)))
    }

    /// The client for the data node at `host:port`.
    pub fn node_client(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        client_for(self.settings.node_info(host, port), self.tls.as_ref())
    }

    /// Asks each Sentinel in turn for the master's address, and returns the
    /// first one whose node answers `ROLE` with `master`. Each step is bounded
    /// by the connect and command timeouts, so a lookup ends in at most
    /// about `2 × nodes × (connect + command)`.
    pub async fn master(&self) -> Result<(String, u16), SentinelError> {
        let count = self.settings.nodes.len();
        let first = *self.first.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons = Vec::new();
        for i in (0..count).map(|i| (first + i) % count) {
            let (host, port) = &self.settings.nodes[i];
            let sentinel = format_node(host, *port);
            let named = match self.ask(i).await {
                Ok(Some(named)) => named,
                Ok(None) => {
                    reasons.push(format!(
                        "Sentinel {sentinel} does not know master {:?}",
                        self.settings.master
                    ));
                    continue;
                }
                Err(e) => {
                    reasons.push(format!("Sentinel {sentinel}: {}", describe(&e)));
                    continue;
                }
            };
            let node = format_node(&named.0, named.1);
            match self.role(&named.0, named.1).await {
                Ok(role) if role == "master" => {
                    *self.first.lock().unwrap_or_else(|p| p.into_inner()) = i;
                    return Ok(named);
                }
                Ok(role) => reasons.push(format!(
                    "Sentinel {sentinel} names {node}, which answers ROLE {role:?}"
                )),
                Err(e) => reasons.push(format!(
                    "Sentinel {sentinel} names {node}, which does not answer: {}",
                    describe(&e)
                )),
            }
        }
        Err(SentinelError::NoMaster {
            master: self.settings.master.clone(),
            reasons,
        })
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on Sentinel `node`: `None` when it
    /// does not know the name.
    async fn ask(&self, node: usize) -> redis::RedisResult<Option<(String, u16)>> {
        let client = client_for(self.settings.sentinel_info(node), self.tls.as_ref())?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.settings.master)
            .query_async(&mut connection)
            .await?;
        Ok(named)
    }

    /// The first field of `ROLE` on the data node at `host:port`
    /// (`master`, `slave`, `sentinel`). A user not allowed `ROLE` (ACL) is
    /// taken at the Sentinel's word: `master`.
    async fn role(&self, host: &str, port: u16) -> redis::RedisResult<String> {
        let client = self.node_client(host, port)?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await?;
        role_of(&mut connection).await
    }
}

/// `ROLE`'s first field on `connection`; `master` when the user may not run it.
pub async fn role_of<C: redis::aio::ConnectionLike>(
    connection: &mut C,
) -> redis::RedisResult<String> {
    let answer: redis::RedisResult<Vec<redis::Value>> =
        redis::cmd("ROLE").query_async(connection).await;
    match answer {
        Ok(fields) => match fields.first() {
            Some(first) => redis::from_redis_value_ref::<String>(first).map_err(Into::into),
            None => Ok(String::new()),
        },
        Err(e) if e.code() == Some("NOPERM") => Ok("master".to_string()),
        Err(e) => Err(e),
    }
}

/// A connection error in words an operator can act on: a TLS failure says so.
pub fn describe(error: &redis::RedisError) -> String {
    let text = error.to_string();
    let lower = text.to_ascii_lowercase();
    let tls = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "invalid peer",
        "unknownissuer",
        "alert",
    ]
    .iter()
    .any(|word| lower.contains(word));
    if tls && !lower.starts_with("tls") {
        format!("TLS handshake failed: {text}")
    } else {
        text
    }
}

/// What a [`Link`] connects to: a client for one fixed address, or the
/// `[cluster]` whose Sentinels name the master. `Debug` shows no password.
#[derive(Clone)]
pub enum Target {
    /// A client built from `[cluster] redis` (or by a test), with its
    /// redacted address for the log.
    Fixed(Box<redis::Client>, String),
    /// The master the Sentinels of this `[cluster]` name.
    Sentinel(Box<Cluster>),
}

impl Target {
    /// The target of `cluster`; builds the client of a fixed address now, so
    /// a TLS setting the crate refuses is an error at start.
    pub fn of(cluster: &Cluster) -> Result<Target, SentinelError> {
        match &cluster.redis {
            Endpoint::Url(url) => client_for(url.connection_info(), cluster.tls.as_ref())
                .map(|client| Target::Fixed(Box::new(client), url.redacted().to_string()))
                .map_err(|e| SentinelError::Client(describe(&e))),
            Endpoint::Sentinel(_) => Ok(Target::Sentinel(Box::new(cluster.clone()))),
        }
    }
}

impl From<redis::Client> for Target {
    /// A fixed address; the log shows it as `host:port` only.
    fn from(client: redis::Client) -> Target {
        let address = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => format_node(host, *port),
            _ => "(unix socket)".to_string(),
        };
        Target::Fixed(Box::new(client), address)
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Fixed(_, address) => write!(f, "Target({address})"),
            Target::Sentinel(cluster) => write!(f, "Target({})", cluster.redis),
        }
    }
}

/// The node commands go to now, and what built it.
struct Current {
    generation: u64,
    client: redis::Client,
    manager: ConnectionManager,
    /// `host:port` (or the redacted URL): for the log.
    address: String,
}

/// The connection to the cluster's Redis: fixed (`redis = …`), or the master
/// the Sentinels name, followed across failovers. Cheap to share; take
/// [`Link::manager`] for each command rather than keeping one.
pub struct Link {
    sentinels: Option<Sentinels>,
    config: ConnectionManagerConfig,
    runtime: Handle,
    /// `None` until the Sentinels name a master.
    current: RwLock<Option<Current>>,
    generation: AtomicU64,
    looking: AtomicBool,
    /// When the next lookup may start, and the wait after that one.
    backoff: Mutex<(Instant, Duration)>,
    /// The last lookup's failure, for the ping's log line.
    last_error: Mutex<Option<String>>,
}

impl Link {
    /// The link to `target`, whose managers use `config`, running on
    /// `runtime`. A fixed address connects lazily; with Sentinel, nothing is
    /// connected until [`Link::lookup`] finds the master (the caller's first
    /// ping or command). Call outside any runtime or inside `runtime`.
    pub fn new(
        target: &Target,
        config: ConnectionManagerConfig,
        runtime: &Handle,
    ) -> Result<Arc<Link>, SentinelError> {
        let link = Link {
            sentinels: None,
            config,
            runtime: runtime.clone(),
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            looking: AtomicBool::new(false),
            backoff: Mutex::new((Instant::now(), MIN_LOOKUP_DELAY)),
            last_error: Mutex::new(None),
        };
        match target {
            Target::Fixed(client, address) => {
                link.install((**client).clone(), address.clone())
                    .map_err(|e| SentinelError::Client(describe(&e)))?;
                Ok(Arc::new(link))
            }
            Target::Sentinel(cluster) => match &cluster.redis {
                Endpoint::Sentinel(settings) => Ok(Arc::new(Link {
                    sentinels: Some(Sentinels::new(cluster, settings)),
                    ..link
                })),
                Endpoint::Url(_) => {
                    Target::of(cluster).and_then(|fixed| Link::new(&fixed, link.config, runtime))
                }
            },
        }
    }

    /// Whether the node is found through Sentinels (and can change).
    pub fn follows_sentinels(&self) -> bool {
        self.sentinels.is_some()
    }

    fn install(&self, client: redis::Client, address: String) -> redis::RedisResult<()> {
        let manager = {
            let _entered = self.runtime.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone())?
        };
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Current {
            generation,
            client,
            manager,
            address,
        });
        Ok(())
    }

    /// The manager of the node commands go to now; `None` while the
    /// Sentinels have named no master yet.
    pub fn manager(&self) -> Option<ConnectionManager> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| c.manager.clone())
    }

    /// Changes each time the node changes: a cache of managers built from
    /// [`Link::client`] is stale when this moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The client of the current node, with its generation, to build a
    /// manager of one's own (e.g. one per worker thread).
    pub fn client(&self) -> Option<(u64, redis::Client)> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| (c.generation, c.client.clone()))
    }

    /// Where commands go now: `host:port`, or the redacted URL.
    pub fn address(&self) -> Option<String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| c.address.clone())
    }

    /// Why the last lookup found no master, if it did not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `error` means the node may no longer be the master: the
    /// connection failed or timed out, or it answered as a replica.
    pub fn is_suspect(error: &redis::RedisError) -> bool {
        error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
            || error.is_timeout()
            || error.code() == Some("READONLY")
            || error.code() == Some("MASTERDOWN")
    }

    /// The node failed a command or a ping: with Sentinel, start a lookup in
    /// the background (unless one runs, or the backoff has not passed).
    /// Returns at once; nothing for a fixed address.
    pub fn suspect(self: &Arc<Self>) {
        if self.sentinels.is_none() {
            return;
        }
        if self.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        self.runtime.spawn(async move {
            link.lookup().await;
        });
    }

    /// Asks the Sentinels for the master now (waiting out the backoff first
    /// if a lookup just failed) and swaps to it if it changed; whether a
    /// master is known afterwards. Concurrent callers run one lookup.
    pub async fn lookup(self: &Arc<Self>) -> bool {
        let Some(sentinels) = &self.sentinels else {
            return true;
        };
        self.looking.store(true, Ordering::Release);
        let wait = {
            let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            backoff.0.saturating_duration_since(Instant::now())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let found = sentinels.master().await;
        let known = match found {
            Ok((host, port)) => {
                *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) =
                    (Instant::now(), MIN_LOOKUP_DELAY);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let address = format_node(&host, port);
                if self.address().as_deref() != Some(address.as_str()) {
                    match sentinels.node_client(&host, port) {
                        Ok(client) => match self.install(client, address.clone()) {
                            Ok(()) => {
                                tracing::warn!(master = %address, name = %sentinels.settings.master, "cluster: the Sentinels name a new master; commands go there now");
                                true
                            }
                            Err(e) => self.failed(describe(&e)),
                        },
                        Err(e) => self.failed(describe(&e)),
                    }
                } else {
                    true
                }
            }
            Err(e) => self.failed(e.to_string()),
        };
        self.looking.store(false, Ordering::Release);
        known
    }

    /// Records a failed lookup and doubles the wait before the next.
    fn failed(&self, error: String) -> bool {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let delay = backoff.1;
        *backoff = (Instant::now() + delay, (delay * 2).min(MAX_LOOKUP_DELAY));
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.manager().is_some()
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address())
            .field("sentinel", &self.follows_sentinels())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_named() {
        let error = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received corrupt message of type InvalidContentType",
        ));
        assert!(
            describe(&error).starts_with("TLS handshake failed: "),
            "{}",
            describe(&error)
        );
        let refused = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert!(!describe(&refused).contains("TLS"));
    }
}
