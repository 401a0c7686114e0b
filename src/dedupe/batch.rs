//! Group commit of the dedupe commands of `[cluster]`: the claims, forwarded
//! marks and releases that the requests of one proxy worker thread issue go to
//! Redis as **one** script call per round trip.
//!
//! Owns: the per-thread pending batch ([`submit`]), the task that sends it,
//! and the script that runs each operation in the order it was submitted.
//! Does not own what an answer means (`dedupe`), the connection, its deadline
//! and its retry after a drop (`cluster::ClusterClient::run`).
//!
//! Nothing changes for the caller but the cost: each operation still waits for
//! its own answer, so a forwarded mark is in Redis before the answer it guards
//! is relayed (a retry on any instance gets `duplicate`), exactly as one
//! command per operation did. A Redis command costs this process about 9,000
//! instructions and, in the kernel, a write, a read and the wake-ups of a round
//! trip, so the operations a batch gathers (a request's claim beside another
//! one's mark) share that cost.
//!
//! One batch per thread and Redis is in flight at a time (group commit, as a
//! database log does it): the first operation spawns the task that sends it,
//! which a worker runs after the tasks woken before it, so the batch holds what
//! this turn of the event loop produced; operations submitted while it is on
//! its way wait for its answer and then go together as the next batch. The
//! more requests are in flight, the larger the batches, and the fewer round
//! trips per request; an operation waits at most one round trip longer than
//! alone. A batch that got no answer within `[cluster] command_timeout` marks
//! Redis down (`ClusterClient::run`), so the batch gathered behind it fails at
//! once: no operation waits longer than one `command_timeout`.
//!
//! Re-running a batch is safe (a dropped connection makes `run` send it once
//! more): a claim re-run by its holder answers "claimed" again, a mark and a
//! release are the same write again.
//!
//! Bounded: at most [`MAX_BATCH`] operations per script call; a batch that
//! reaches it is sent at once, beside the one in flight.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cluster::{ClusterClient, ClusterError, Operation};

/// The most operations one script call carries.
pub const MAX_BATCH: usize = 128;

/// One dedupe operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `SET key token NX PX lease` unless the key is there: answers 0 (claimed,
    /// also when the key already holds `token`), 1 (forwarded) or 2 (claimed by
    /// another token).
    Claim { token: Arc<str>, lease: Duration },
    /// `SET key "f" PX ttl`: the id was forwarded. Answers 0.
    Mark { ttl: Duration },
    /// Deletes the key if it still holds `token`. Answers 0.
    Release { token: Arc<str> },
}

/// Runs the operations of a batch in order; per operation `i`, `KEYS[i]` and
/// `ARGV[2i-1]` (the kind: `c`, `m` or `r`) and `ARGV[2i]` (the token, or the
/// TTL in ms for a mark); a claim's lease (ms) is in `ARGV[2n+i]`. Returns one
/// integer per operation.
const SCRIPT: &str = r#"
local n = #KEYS
local out = {}
for i = 1, n do
  local kind, value = ARGV[2 * i - 1], ARGV[2 * i]
  local key = KEYS[i]
  if kind == 'c' then
    if redis.call('SET', key, value, 'NX', 'PX', ARGV[2 * n + i]) then
      out[i] = 0
    else
      local held = redis.call('GET', key)
      if held == 'f' then
        out[i] = 1
      elseif held == value then
        out[i] = 0
      else
        out[i] = 2
      end
    end
  elseif kind == 'm' then
    redis.call('SET', key, 'f', 'PX', value)
    out[i] = 0
  else
    if redis.call('GET', key) == value then
      redis.call('DEL', key)
    end
    out[i] = 0
  end
end
return out
"#;

/// The batch script, for a command built by [`command`].
pub fn script() -> &'static redis::Script {
    static SCRIPT_: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT_.get_or_init(|| redis::Script::new(SCRIPT))
}

type Answer = Result<i64, ClusterError>;

/// One operation as it goes into the script's arguments.
struct Entry {
    key: Arc<str>,
    kind: &'static str,
    /// The token (claim, release); `None` for a mark.
    token: Option<Arc<str>>,
    /// A claim's lease or a mark's TTL, in ms.
    millis: u64,
}

/// The operations of one thread waiting to be sent to one client's Redis.
#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    waiters: Vec<oneshot::Sender<Answer>>,
}

impl Entry {
    fn of(key: Arc<str>, op: Op) -> Entry {
        let (kind, token, millis) = match op {
            Op::Claim { token, lease } => ("c", Some(token), millis(lease)),
            Op::Mark { ttl } => ("m", None, millis(ttl)),
            Op::Release { token } => ("r", Some(token), 0),
        };
        Entry {
            key,
            kind,
            token,
            millis,
        }
    }
}

impl Pending {
    fn push(&mut self, key: Arc<str>, op: Op, waiter: oneshot::Sender<Answer>) {
        self.entries.push(Entry::of(key, op));
        self.waiters.push(waiter);
    }

    fn len(&self) -> usize {
        self.waiters.len()
    }

    /// `EVALSHA sha n KEYS… ARGV…`, in one buffer of about its size.
    fn command(&self) -> redis::Cmd {
        let n = self.entries.len();
        let keys: usize = self.entries.iter().map(|entry| entry.key.len()).sum();
        let tokens: usize = (self.entries.iter())
            .map(|entry| entry.token.as_ref().map_or(20, |token| token.len()))
            .sum();
        let mut command = redis::Cmd::with_capacity(3 + 4 * n, 64 + keys + tokens + 21 * n);
        command
            .arg("EVALSHA")
            .arg(script().get_hash())
            .arg(self.entries.len());
        for entry in &self.entries {
            command.arg(&*entry.key);
        }
        for entry in &self.entries {
            command.arg(entry.kind);
            match &entry.token {
                Some(token) => command.arg(&**token),
                None => command.arg(entry.millis),
            };
        }
        for entry in &self.entries {
            command.arg(if entry.kind == "c" { entry.millis } else { 0 });
        }
        command
    }
}

/// The command of a batch of the one operation `op` on `key`, for a caller
/// that sends it itself (behind another command on the same connection).
/// Run it with `cluster::invoke` and [`script`]; it answers a list of one.
pub fn command(key: &Arc<str>, op: Op) -> redis::Cmd {
    Pending {
        entries: vec![Entry::of(key.clone(), op)],
        waiters: Vec::new(),
    }
    .command()
}

thread_local! {
    /// Per client id ([`ClusterClient::id`]): this thread's batch being gathered
    /// while the thread's sender task for that client runs. An entry exists
    /// exactly while that task does. The sender swaps in the buffers of the
    /// batch it sent last, so a batch reuses the capacity of the one before.
    static PENDING: RefCell<Vec<(u64, Pending)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `op` on `key` in this thread's next batch and waits for its answer.
/// Outside a proxy worker thread (a background task) it is sent as a batch of
/// its own. Errors are those of [`ClusterClient::run_for`], the same for every
/// operation of the batch, each counted under `dedupe`.
pub async fn submit(cluster: &Arc<ClusterClient>, key: Arc<str>, op: Op) -> Answer {
    let (waiter, answer) = oneshot::channel();
    if !cluster.on_worker_thread() {
        let mut batch = Pending::default();
        batch.push(key, op, waiter);
        send(cluster.clone(), batch, 1).await;
    } else {
        let (start, full) = PENDING.with(|pending| {
            let mut pending = pending.borrow_mut();
            let (start, i) = match pending.iter().position(|(id, _)| *id == cluster.id()) {
                Some(i) => (false, i),
                None => {
                    pending.push((cluster.id(), Pending::default()));
                    (true, pending.len() - 1)
                }
            };
            let batch = &mut pending[i].1;
            batch.push(key, op, waiter);
            let full = (batch.len() >= MAX_BATCH).then(|| std::mem::take(batch));
            (start, full)
        });
        if start {
            tokio::spawn(drain(cluster.clone()));
        }
        if let Some(batch) = full {
            let operations = batch.len();
            tokio::spawn(send(cluster.clone(), batch, operations));
        }
    }
    // A sender dropped unanswered (its runtime stopped): the batch may have
    // been written, so the caller treats it as a command that timed out.
    answer.await.unwrap_or(Err(ClusterError::Timeout(
        cluster.settings().command_timeout,
    )))
}

/// This thread's sender for `cluster`: sends the gathered batch, waits for its
/// answer, and repeats with what was gathered meanwhile; ends (removing the
/// thread's entry) when nothing was.
async fn drain(cluster: Arc<ClusterClient>) {
    let _slot = SenderSlot {
        client: cluster.id(),
    };
    let mut spare = Pending::default();
    // Bounded: each pass sends a non-empty batch whose operations each belong
    // to a request waiting for it, and every pass ends within command_timeout.
    loop {
        // Group commit: the tasks already woken in this turn of the event loop
        // run first and add theirs (a yielded task goes behind them, where a
        // spawned one would run next), so a batch holds the turn's operations.
        tokio::task::yield_now().await;
        let batch = PENDING.with(|pending| {
            let mut pending = pending.borrow_mut();
            let i = pending.iter().position(|(id, _)| *id == cluster.id())?;
            if pending[i].1.len() == 0 {
                return None;
            }
            Some(std::mem::replace(
                &mut pending[i].1,
                std::mem::take(&mut spare),
            ))
        });
        let Some(batch) = batch else {
            return;
        };
        let operations = batch.len();
        spare = send(cluster.clone(), batch, operations).await;
    }
}

/// The thread's entry for one client, removed when its sender task ends,
/// however it ends: a sender dropped with its runtime, or by a panic, leaves
/// no entry behind that later operations would join and wait on forever (the
/// waiters of what was gathered are dropped, and their callers get a timeout).
struct SenderSlot {
    client: u64,
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        // `try_with`: the thread-local may already be gone when a runtime is
        // dropped at thread exit.
        let _ = PENDING.try_with(|pending| {
            if let Ok(mut pending) = pending.try_borrow_mut() {
                if let Some(i) = pending.iter().position(|(id, _)| *id == self.client) {
                    pending.swap_remove(i);
                }
            }
        });
    }
}

/// Sends `op` on `key` again, as a batch of its own, for an operation whose
/// failure was counted when it was first sent (a forwarded mark,
/// `dedupe::retry_mark`): a failure now is not counted again, so
/// `hookgate_cluster_errors_total` counts the operation once however often it
/// is sent.
pub async fn resend(cluster: &Arc<ClusterClient>, key: Arc<str>, op: Op) -> Answer {
    let (waiter, answer) = oneshot::channel();
    let mut batch = Pending::default();
    batch.push(key, op, waiter);
    send(cluster.clone(), batch, 0).await;
    answer.await.unwrap_or(Err(ClusterError::Timeout(
        cluster.settings().command_timeout,
    )))
}

/// Sends `batch` and hands each operation its answer; gives back its buffers,
/// empty, for the next batch. A failure counts `counted` operations under
/// `dedupe` in `hookgate_cluster_errors_total`: each operation of the batch,
/// as one command each did, or none for a [`resend`].
async fn send(cluster: Arc<ClusterClient>, mut batch: Pending, counted: usize) -> Pending {
    let command = &batch.command();
    let answers = cluster
        .run_for(Operation::Dedupe, counted, |mut connection| async move {
            crate::cluster::invoke::<Vec<i64>>(&mut connection, script(), command).await
        })
        .await;
    batch.entries.clear();
    let operations = batch.waiters.len();
    let waiters = batch.waiters.drain(..);
    match answers {
        Ok(answers) if answers.len() == operations => {
            for (waiter, answer) in waiters.zip(answers) {
                let _ = waiter.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let error = redis::RedisError::from((
                redis::ErrorKind::Parse,
                "dedupe batch",
                format!("{} answers for {operations} operations", answers.len()),
            ));
            cluster.count_errors(Operation::Dedupe, counted);
            for waiter in waiters {
                let _ = waiter.send(Err(ClusterError::Redis(error.clone())));
            }
        }
        Err(error) => {
            for waiter in waiters {
                let _ = waiter.send(Err(error.duplicate()));
            }
        }
    }
    batch
}

/// Whole milliseconds, rounded up: a lease of `5s 1ns` is held 5,001 ms, never
/// less than the config's check (`config::check_claim_lease`) counted on.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease goes to Redis in whole milliseconds, never shorter than the
    /// config's check counted on.
    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::new(5, 1)), 5_001);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::ZERO), 1);
    }
}
