//! The shared connection to Redis of a `[cluster]` (issue 15): one multiplexed
//! connection that reconnects with backoff, a per-command deadline, and whether
//! Redis is up right now.
//!
//! Owns: the [`ClusterClient`] handle (a redis-rs `ConnectionManager` with the
//! `[cluster]` timeouts), the key names it builds ([`ClusterClient::key`]), the
//! background ping that keeps [`ClusterClient::is_up`] and `hookgate_cluster_up`
//! current and drives reconnects, and the counting of failed commands
//! (`hookgate_cluster_errors_total{operation}`) and fallbacks
//! (`hookgate_cluster_fallbacks_total{operation}`). Does not own what is stored
//! (`ratelimit`, `dedupe`, `delivery`), nor the choice between falling back and
//! refusing (`[cluster] on_unavailable`, applied by the callers).
//!
//! While Redis is down, commands fail at once ([`ClusterError::Down`]) instead
//! of each waiting for its deadline: the ping finds out when it is back, every
//! `PING_INTERVAL`. With `[cluster] sentinel`, the ping asks `ROLE` instead of
//! `PING`, and a failed ping (or a `READONLY` answer to a command) makes the
//! [`sentinel::Link`] ask the Sentinels where the master is now. Nothing here
//! logs the URL's password or a key's value.

pub mod sentinel;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use self::sentinel::{Link, Target};
use crate::config::cluster::{Cluster, Endpoint};
use crate::metrics::Metrics;

/// The `Retry-After` (seconds) of a 503 `cluster_unavailable`.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// How often Redis is pinged, up or down.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// The longest wait between two reconnection attempts of the connection manager.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What a command was for: the `operation` label of the cluster metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The background health ping.
    Ping,
    /// A rate limit decision (`ratelimit`).
    RateLimit,
    /// A dedupe claim, mark or release (`dedupe`).
    Dedupe,
    /// The queued-delivery store on Redis (`delivery`).
    Store,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Ping,
        Operation::RateLimit,
        Operation::Dedupe,
        Operation::Store,
    ];

    /// Operations that can fall back to this instance's state (`on_unavailable = "local"`).
    pub const FALLBACKS: [Operation; 2] = [Operation::RateLimit, Operation::Dedupe];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::RateLimit => "rate_limit",
            Operation::Dedupe => "dedupe",
            Operation::Store => "store",
        }
    }
}

/// `EVALSHA` of `script` on the one key `key`; the caller adds the arguments
/// (`ARGV`) and runs it with [`invoke`]. Builds the command in one buffer,
/// where `Script::key(..).arg(..)` would copy every argument twice more.
pub fn evalsha(script: &redis::Script, key: &str) -> redis::Cmd {
    let mut command = redis::cmd("EVALSHA");
    command.arg(script.get_hash()).arg(1).arg(key);
    command
}

/// Runs `command` (from [`evalsha`] of `script`); when Redis does not know the
/// script (`NOSCRIPT`: after a restart or a `SCRIPT FLUSH`), loads it and runs
/// the command once more, as `Script::invoke_async` does.
pub async fn invoke<T: redis::FromRedisValue>(
    connection: &mut ConnectionManager,
    script: &redis::Script,
    command: &redis::Cmd,
) -> redis::RedisResult<T> {
    match command.query_async(connection).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(connection).await?;
            command.query_async(connection).await
        }
        answer => answer,
    }
}

/// Whether `error` says the connection was lost or could not be made (broken
/// pipe, reset, refused, end of stream), as opposed to an answer from Redis or a
/// timeout.
pub(crate) fn is_dropped(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() || error.is_connection_refusal()
}

/// One proxy worker thread's connection to one client's Redis.
struct WorkerConnection {
    /// [`ClusterClient::id`].
    client: u64,
    /// The link's generation (node) it was opened for.
    generation: u64,
    /// [`ClusterClient::epoch`] when it was opened.
    epoch: u64,
    connection: ConnectionManager,
}

thread_local! {
    static WORKER_CONNECTIONS: std::cell::RefCell<Vec<WorkerConnection>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether this thread runs a current-thread runtime (a proxy worker), whose
/// commands go on the thread's own connections.
fn on_own_thread() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// The pieces of a key: `prefix`, then `parts` separated by `:`.
fn key_pieces<'p>(prefix: &'p str, parts: &'p [&'p str]) -> impl Iterator<Item = &'p str> {
    let separated = parts.iter().enumerate().flat_map(|(i, part)| {
        let separator = if i > 0 { ":" } else { "" };
        [separator, *part]
    });
    std::iter::once(prefix).chain(separated)
}

/// `prefix` followed by `parts` joined with `:`, gathered on the stack and
/// allocated once; `None` when that is longer than 256 bytes.
pub(crate) fn joined(prefix: &str, parts: &[&str]) -> Option<Arc<str>> {
    let mut buffer = [0u8; 256];
    let mut at = 0;
    for piece in key_pieces(prefix, parts) {
        let end = at + piece.len();
        buffer.get_mut(at..end)?.copy_from_slice(piece.as_bytes());
        at = end;
    }
    std::str::from_utf8(&buffer[..at]).ok().map(Arc::from)
}

/// Why a command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis was already known to be unreachable; nothing was sent.
    #[error("Redis is unreachable")]
    Down,
    /// No answer within `[cluster] command_timeout`.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    /// Redis or the connection answered with an error.
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
}

impl ClusterError {
    /// The same error again, for each of the callers that shared one command.
    pub fn duplicate(&self) -> ClusterError {
        match self {
            ClusterError::Down => ClusterError::Down,
            ClusterError::Timeout(after) => ClusterError::Timeout(*after),
            ClusterError::Redis(e) => ClusterError::Redis(e.clone()),
        }
    }
}

/// What `cluster`'s connections are built from: its URL (or Sentinels),
/// credentials and TLS. The store (`[storage] backend = "redis"`) builds its
/// own [`Link`] from it.
pub fn redis_client(cluster: &Cluster) -> Result<Target, sentinel::SentinelError> {
    Target::of(cluster)
}

/// Connection-manager settings for `cluster`: its connect and command timeouts,
/// reconnects with jittered exponential backoff from 100 ms up to 2 s. Few
/// retries per reconnection: the ping starts the next one.
pub fn manager_config(cluster: &Cluster) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cluster.connect_timeout))
        .set_response_timeout(Some(cluster.command_timeout))
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(MAX_RECONNECT_DELAY)
        .set_number_of_retries(2)
}

/// [`manager_config`] without the response timeout: the client's own
/// connections are bounded by [`ClusterClient::run`] and the ping, so each
/// command arms one timer, not two.
fn own_config(cluster: &Cluster) -> ConnectionManagerConfig {
    manager_config(cluster).set_response_timeout(None)
}

/// The shared handle: cheap to clone the connection out of, safe to call from
/// any runtime. `Debug` shows the redacted URL only.
pub struct ClusterClient {
    /// Tells this client's per-thread connections from another client's.
    id: u64,
    settings: Cluster,
    /// The node commands go to (followed across failovers with Sentinel):
    /// its manager is the connection of the ping and of callers outside a
    /// proxy worker.
    link: Arc<Link>,
    up: AtomicBool,
    /// Bumped each time the ping finds Redis back after it was down: every
    /// thread's connection older than that is rebuilt before its next command
    /// (it most likely died with the old server).
    epoch: AtomicU64,
    metrics: Arc<Metrics>,
    /// The runtime the connection and the ping run on; background writes too.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("redis", &self.settings.redis)
            .field("node", &self.link.address())
            .field("up", &self.is_up())
            .finish()
    }
}

impl ClusterClient {
    /// Creates the client on `runtime` (which runs its connection and its
    /// ping), tries one ping (bounded by the connect and command timeouts) so a
    /// reachable Redis counts as up from the first request, and starts pinging
    /// every [`PING_INTERVAL`]. A Redis that is down at start is not an error:
    /// the client is down until a ping gets through. Call outside any runtime.
    pub fn start(
        settings: &Cluster,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<ClusterClient>, ClusterError> {
        let link = redis_client(settings)
            .and_then(|target| Link::new(&target, own_config(settings), runtime))
            .map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot build the client",
                    e.to_string(),
                ))
            })?;
        for operation in Operation::ALL {
            metrics
                .cluster_errors
                .with_label_values(&[operation.as_str()]);
        }
        for operation in Operation::FALLBACKS {
            metrics
                .cluster_fallbacks
                .with_label_values(&[operation.as_str()]);
        }
        metrics.cluster_up.with_label_values::<&str>(&[]).set(0);
        metrics.cluster_marks_lost.with_label_values::<&str>(&[]);
        for operation in Operation::FALLBACKS {
            metrics
                .cluster_commands
                .with_label_values(&[operation.as_str()]);
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let client = Arc::new(ClusterClient {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            settings: settings.clone(),
            link,
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            metrics,
            runtime: runtime.clone(),
        });
        let first = client.clone();
        let attempt = settings.connect_timeout + settings.command_timeout;
        // With Sentinel the first ping also finds the master: up to two
        // connections per Sentinel, then the ping.
        let deadline = match &settings.redis {
            Endpoint::Sentinel(sentinel) => attempt * (2 * sentinel.nodes.len() as u32 + 1),
            Endpoint::Url(_) => attempt,
        };
        let failed = runtime
            .block_on(async move { tokio::time::timeout(deadline, first.ping()).await })
            .unwrap_or_else(|_| Some(client.no_answer()));
        if let Some(error) = failed {
            tracing::warn!(redis = %settings.redis, %error, "cluster: Redis does not answer yet; retrying every {PING_INTERVAL:?}");
        }
        let pinger = Arc::downgrade(&client);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PING_INTERVAL).await;
                match pinger.upgrade() {
                    Some(client) => {
                        client.ping().await;
                    }
                    None => return,
                }
            }
        });
        Ok(client)
    }

    /// Tells this client from another one in the same process (a reload
    /// builds a new one): for state kept per thread and per client.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the caller runs on a proxy worker thread, whose commands go on
    /// the thread's own connection (see [`Self::run`]).
    pub fn on_worker_thread(&self) -> bool {
        on_own_thread()
    }

    /// The `[cluster]` settings it was built from.
    pub fn settings(&self) -> &Cluster {
        &self.settings
    }

    /// Whether the last ping or command got an answer.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// `key_prefix` followed by `parts` joined with `:`. Callers pass bounded,
    /// key-safe parts (route names, hex digests), never raw header values.
    pub fn key(&self, parts: &[&str]) -> String {
        key_pieces(&self.settings.key_prefix, parts).collect()
    }

    /// [`Self::key`] as a shared string, in one allocation: for a key that a
    /// request and the writes it issues hold at once.
    pub fn shared_key(&self, parts: &[&str]) -> Arc<str> {
        joined(&self.settings.key_prefix, parts).unwrap_or_else(|| Arc::from(self.key(parts)))
    }

    /// Runs `task` on the cluster's runtime: for writes nobody waits for (a
    /// released claim).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// A clone of the multiplexed connection, for a caller that runs its own
    /// commands (and its own deadline); `None` while the Sentinels have named
    /// no master yet.
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.link.manager()
    }

    /// Runs `command`, which carries one operation, as [`Self::run_for`] does.
    pub async fn run<T, F, Fut>(&self, operation: Operation, command: F) -> Result<T, ClusterError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_for(operation, 1, command).await
    }

    /// Runs `command` on this thread's connection (see [`Self::worker_connection`])
    /// within `command_timeout`. Fails at once while Redis is known to be down.
    /// A failure is counted `operations` times under `operation`: the
    /// operations `command` carries (a dedupe batch carries several), each of
    /// which failed; 0 for a resend of operations already counted.
    ///
    /// A connection that died while idle (Redis restarted, closed an idle
    /// client under its `timeout` setting, `CLIENT KILL`) fails the next
    /// command with a dropped-connection error although Redis is fine: then
    /// the command is sent once more on a fresh connection, within the same
    /// deadline, and Redis is not marked down for it (the ping decides that).
    /// Redis-rs gives the same error whether the command never left (the usual
    /// case: the connection was found dead) or the connection dropped after it
    /// was written, so **every command run here must be safe to run twice**:
    /// the dedupe scripts are idempotent for their token (a claim re-run by its
    /// holder answers "claimed"), a forwarded mark or a release is the same
    /// write again, and a rate-limit script run twice can only take one token
    /// too many (refuse, never admit more). Only when the fresh connection
    /// fails too, or on a timeout, is Redis marked down until the next ping
    /// gets through.
    pub async fn run_for<T, F, Fut>(
        &self,
        operation: Operation,
        operations: usize,
        command: F,
    ) -> Result<T, ClusterError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            self.count_errors(operation, operations);
            return Err(ClusterError::Down);
        }
        let timeout = self.settings.command_timeout;
        let commands = self
            .metrics
            .cluster_commands
            .with_label_values(&[operation.as_str()]);
        let attempts = async {
            let connection = self.worker_connection().ok_or(ClusterError::Down)?;
            commands.inc();
            match command(connection).await {
                Err(e) if is_dropped(&e) => {
                    self.forget_worker_connection();
                    let connection = self.worker_connection().ok_or(ClusterError::Down)?;
                    commands.inc();
                    command(connection).await.map_err(|e| {
                        // Also on a fresh connection: Redis itself is unreachable.
                        if is_dropped(&e) {
                            self.set_up(false);
                        }
                        ClusterError::Redis(e)
                    })
                }
                answer => answer.map_err(ClusterError::Redis),
            }
        };
        // Pingora's coarse timer: cheaper than tokio's wheel, and precise enough.
        let answer = pingora::prelude::timeout(timeout, attempts).await;
        let result = match answer {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(ClusterError::Redis(e))) => {
                if (e.is_unrecoverable_error() && !is_dropped(&e)) || e.is_timeout() {
                    self.set_up(false);
                }
                // A replica (a demoted master): stop sending there; the ping
                // asks the Sentinels for the new master.
                if e.code() == Some("READONLY") {
                    self.set_up(false);
                    self.link.suspect();
                }
                ClusterError::Redis(e)
            }
            Ok(Err(other)) => other,
            Err(_) => {
                self.set_up(false);
                ClusterError::Timeout(timeout)
            }
        };
        self.count_errors(operation, operations);
        Err(result)
    }

    /// Sends `command` on this thread's connection, behind whatever this thread
    /// sent before, whether or not Redis is known to be up, and returns at once;
    /// the command is given up after `bound`. For undoing a command that timed
    /// out but that Redis may still run once it answers again (a paused Redis
    /// runs what was queued on its sockets when it resumes): Redis runs one
    /// connection's commands in order, so the undo runs after it. A failure is
    /// counted under `operation`.
    pub fn send_behind<T, F, Fut>(&self, operation: Operation, bound: Duration, command: F)
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        let Some(connection) = self.worker_connection() else {
            metrics
                .cluster_errors
                .with_label_values(&[operation.as_str()])
                .inc();
            return;
        };
        metrics
            .cluster_commands
            .with_label_values(&[operation.as_str()])
            .inc();
        let sent = command(connection);
        self.runtime.spawn(async move {
            if !matches!(tokio::time::timeout(bound, sent).await, Ok(Ok(_))) {
                metrics
                    .cluster_errors
                    .with_label_values(&[operation.as_str()])
                    .inc();
            }
        });
    }

    /// The connection for a command issued on this thread. On a current-thread
    /// runtime (each proxy worker: `work_stealing = false`) it is the thread's
    /// own, created on first use (and again when the link moved to another
    /// node, when the ping found Redis back after it was down, or after
    /// [`Self::forget_worker_connection`]), whose I/O runs on that same thread:
    /// a command then costs no wakeup of another thread, and the commands of
    /// the requests a worker holds at once leave in one write. Elsewhere, the
    /// shared one. `None` while no node is known (Sentinel, before the first
    /// master).
    fn worker_connection(&self) -> Option<ConnectionManager> {
        if !on_own_thread() {
            return self.link.manager();
        }
        let generation = self.link.generation();
        let epoch = self.epoch.load(Ordering::Acquire);
        WORKER_CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            let found = connections.iter().position(|c| c.client == self.id);
            if let Some(i) = found {
                if connections[i].generation == generation && connections[i].epoch == epoch {
                    return Some(connections[i].connection.clone());
                }
                connections.swap_remove(i);
            }
            let (generation, client) = self.link.client()?;
            match ConnectionManager::new_lazy_with_config(client, own_config(&self.settings)) {
                Ok(connection) => {
                    connections.push(WorkerConnection {
                        client: self.id,
                        generation,
                        epoch,
                        connection: connection.clone(),
                    });
                    Some(connection)
                }
                Err(_) => self.link.manager(),
            }
        })
    }

    /// Drops this thread's connection (it was found dead): the next
    /// [`Self::worker_connection`] opens a fresh one.
    fn forget_worker_connection(&self) {
        if on_own_thread() {
            WORKER_CONNECTIONS.with(|connections| {
                connections.borrow_mut().retain(|c| c.client != self.id);
            });
        }
    }

    /// Counts one decision taken on this instance's own state because Redis
    /// did not answer (`on_unavailable = "local"`).
    pub fn count_fallback(&self, operation: Operation) {
        self.metrics
            .cluster_fallbacks
            .with_label_values(&[operation.as_str()])
            .inc();
    }

    /// Counts one forwarded dedupe mark that never reached Redis.
    pub fn count_lost_mark(&self) {
        self.metrics
            .cluster_marks_lost
            .with_label_values::<&str>(&[])
            .inc();
    }

    fn count_error(&self, operation: Operation) {
        self.count_errors(operation, 1);
    }

    /// Counts `operations` failed operations under `operation`.
    pub fn count_errors(&self, operation: Operation, operations: usize) {
        self.metrics
            .cluster_errors
            .with_label_values(&[operation.as_str()])
            .inc_by(u64::try_from(operations).unwrap_or(u64::MAX));
    }

    /// Pings Redis and records whether it answered; the error when it did
    /// not. With Sentinel: finds the master first if none is known, asks
    /// `ROLE` (a replica does not count as up), and after a failed ping asks
    /// the Sentinels again and, if they name another node, pings that one.
    async fn ping(&self) -> Option<String> {
        if !self.link.follows_sentinels() {
            return self.ping_once().await;
        }
        if self.link.manager().is_none() && !self.link.lookup().await {
            let error = self
                .link
                .last_error()
                .unwrap_or_else(|| "no master known".to_string());
            self.count_error(Operation::Ping);
            if self.set_up(false) {
                tracing::warn!(redis = %self.settings.redis, %error, "cluster: the Sentinels name no reachable master");
            }
            return Some(error);
        }
        let failed = self.ping_once().await?;
        let before = self.link.generation();
        self.link.lookup().await;
        if self.link.generation() != before {
            return self.ping_once().await;
        }
        Some(failed)
    }

    /// One `PING` (`ROLE` with Sentinel) on the link's connection.
    async fn ping_once(&self) -> Option<String> {
        let Some(connection) = self.link.manager() else {
            return Some("no master known".to_string());
        };
        let sentinel = self.link.follows_sentinels();
        let node = self.link.address().unwrap_or_default();
        let ask = |mut connection: ConnectionManager| async move {
            if sentinel {
                sentinel::role_of(&mut connection).await
            } else {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            }
        };
        let answer = tokio::time::timeout(
            self.settings
                .command_timeout
                .max(self.settings.connect_timeout),
            async {
                match ask(connection.clone()).await {
                    // The connection died while idle (`CLIENT KILL`, a restart):
                    // the manager reconnects; ask once more on the new one.
                    Err(e) if is_dropped(&e) => ask(connection).await,
                    answer => answer,
                }
            },
        )
        .await;
        match answer {
            Ok(Ok(role)) if sentinel && role != "master" => {
                self.count_error(Operation::Ping);
                let error = format!("{node} answers ROLE {role:?}, not master");
                if self.set_up(false) {
                    tracing::warn!(redis = %self.settings.redis, %node, "cluster: the node is no longer the master");
                }
                Some(error)
            }
            Ok(Ok(_)) => {
                self.set_up(true);
                None
            }
            Ok(Err(e)) => {
                self.count_error(Operation::Ping);
                let error = sentinel::describe(&e);
                if self.set_up(false) {
                    tracing::warn!(redis = %self.settings.redis, %node, %error, "cluster: Redis is unreachable");
                }
                Some(error)
            }
            Err(_) => {
                self.count_error(Operation::Ping);
                if self.set_up(false) {
                    tracing::warn!(redis = %self.settings.redis, %node, "cluster: Redis does not answer the ping in time");
                }
                Some(self.no_answer())
            }
        }
    }

    /// What a ping that timed out says; over TLS, the likely cause too.
    fn no_answer(&self) -> String {
        if self.settings.redis.is_tls() {
            "no answer to PING in time (TLS: a server that does not speak TLS on this port never completes the handshake; check the port and tls-port)".to_string()
        } else {
            "no answer to PING in time".to_string()
        }
    }

    /// Records whether Redis answers; returns whether that changed.
    fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::AcqRel);
        self.metrics
            .cluster_up
            .with_label_values::<&str>(&[])
            .set(i64::from(up));
        if up && !was {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::info!(redis = %self.settings.redis, node = %self.link.address().unwrap_or_default(), "cluster: Redis answers");
        }
        was != up
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_joined_key_is_the_prefix_and_the_parts_with_colons() {
        let key = super::joined("hookgate:", &["dd", "github", "00ff"]);
        assert_eq!(key.as_deref(), Some("hookgate:dd:github:00ff"));
        let long = "r".repeat(240);
        assert_eq!(super::joined("hookgate:", &["dd", &long, "00ff"]), None);
        assert_eq!(super::joined("", &[]).as_deref(), Some(""));
        // The heap path (`ClusterClient::key`) joins the same pieces.
        let pieces: String = super::key_pieces("hookgate:", &["dd", &long, "00ff"]).collect();
        assert_eq!(pieces, format!("hookgate:dd:{long}:00ff"));
        assert_eq!(
            super::key_pieces("p:", &["one"]).collect::<String>(),
            "p:one"
        );
    }
}
