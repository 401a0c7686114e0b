//! [`EventStore`] on redb (docs/storage.md has the measurements behind the
//! choice): one file, `events.redb`, in the `[storage] path` directory.
//!
//! Owns the tables and the writer. Every write goes through one writer thread
//! that takes whatever operations are waiting (up to [`MAX_BATCH`]), applies
//! them in one transaction and commits it with `Durability::Immediate` (fsync):
//! a group commit, so N concurrent deliveries cost one fsync, not N. Each
//! caller is answered after that commit. Reads use redb's MVCC read
//! transactions and never wait for the writer.
//!
//! A batch of attempt records and purges only (no append, no replay) is
//! committed with `Durability::None`: no fsync of its own; the next durable
//! commit (the next append) makes it durable with everything before it. Losing
//! such a record in a crash costs one more attempt of that delivery (delivery is
//! at least once), never an acknowledged event: appends are always fsynced
//! before their caller hears `Ok`.
//!
//! Tables: `events` (key → the JSON [`EventRecord`]), `heads` and `bodies`
//! (key → bytes), `pending` (keys with a pending delivery, for resuming),
//! `info` (the store's id, the next key, the bytes used), and `handshake_secrets`
//! (Asana handshake secrets by route, [`crate::handshake::SecretStore`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::store::{
    now_ms, AttemptRecord, EventKey, EventRecord, EventStore, Filter, NewEvent, Next, Status,
    StoreError,
};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const HEADS: TableDefinition<u64, &[u8]> = TableDefinition::new("heads");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const PENDING: TableDefinition<u64, ()> = TableDefinition::new("pending");
const INFO: TableDefinition<&str, u64> = TableDefinition::new("info");
const HANDSHAKE_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("handshake_secrets");

/// Operations applied in one transaction at most.
pub const MAX_BATCH: usize = 256;

/// Non-durable commits in a row at most (redb frees pages only in durable ones).
const MAX_LAZY_COMMITS: u32 = 32;

/// Events one purge removes at most (the next one takes the rest).
const MAX_PURGE: usize = 10_000;

/// The file inside the `[storage] path` directory.
pub const FILE_NAME: &str = "events.redb";

fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

enum Op {
    Append(Box<NewEvent>, oneshot::Sender<Result<EventKey, StoreError>>),
    Record {
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        next: Next,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Replay(EventKey, oneshot::Sender<Result<Vec<usize>, StoreError>>),
    /// Remove these keys if they are still finished before the time.
    Purge(Vec<EventKey>, u64, oneshot::Sender<Result<u64, StoreError>>),
    /// A durable commit, making every earlier record durable.
    Sync(oneshot::Sender<Result<(), StoreError>>),
}

/// The redb-backed store. Dropping it stops the writer after the waiting operations.
pub struct RedbStore {
    db: Arc<Database>,
    /// `None` once dropping.
    writer: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    bytes: Arc<AtomicU64>,
    store_id: u32,
}

impl Drop for RedbStore {
    /// Lets the writer finish the waiting operations and close the file, so
    /// the store can be opened again in this process.
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the directory. Repairs
    /// the file after an unclean stop (redb does so on open).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        // redb 2.6 asserts instead of erring on some damaged files (one cut short:
        // "raw_file_len() >= header.layout().len()"); later redb releases return an error.
        let db = std::panic::catch_unwind(|| Database::create(&path))
            .map_err(|_| {
                io(format!(
                    "cannot open {}: the file is damaged; move it away to start with an empty \
                     store, or restore a backup",
                    path.display()
                ))
            })?
            .map_err(|e| io(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(io)?;
        let (store_id, next_key, bytes) = {
            let mut info = tx.open_table(INFO).map_err(io)?;
            tx.open_table(EVENTS).map_err(io)?;
            tx.open_table(HEADS).map_err(io)?;
            tx.open_table(BODIES).map_err(io)?;
            tx.open_table(PENDING).map_err(io)?;
            let read = |info: &redb::Table<&str, u64>, key| -> Result<Option<u64>, StoreError> {
                Ok(info.get(key).map_err(io)?.map(|v| v.value()))
            };
            let store_id = match read(&info, "store_id")? {
                Some(id) => id as u32,
                None => {
                    let id = u64::from(uuid::Uuid::new_v4().as_u128() as u32);
                    info.insert("store_id", id).map_err(io)?;
                    id as u32
                }
            };
            (
                store_id,
                read(&info, "next_key")?.unwrap_or(1),
                read(&info, "bytes")?.unwrap_or(0),
            )
        };
        tx.commit().map_err(io)?;
        let db = Arc::new(db);
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (writer, ops) = mpsc::channel();
        let mut state = Writer {
            db: db.clone(),
            bytes: bytes.clone(),
            next_key,
            max_bytes,
            lazy_commits: 0,
        };
        let thread = std::thread::Builder::new()
            .name("hookgate-store".to_string())
            .spawn(move || state.run(ops))
            .map_err(|e| io(format!("cannot start the store writer: {e}")))?;
        Ok(RedbStore {
            db,
            writer: Some(writer),
            thread: Some(thread),
            bytes,
            store_id,
        })
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.writer
            .as_ref()
            .and_then(|writer| writer.send(op).ok())
            .ok_or_else(|| io("the store writer has stopped"))
    }

    fn read_record(
        table: &impl ReadableTable<u64, &'static [u8]>,
        key: EventKey,
    ) -> Result<Option<EventRecord>, StoreError> {
        match table.get(key).map_err(io)? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(value.value()).map(Some).map_err(io),
        }
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    rx.await
        .unwrap_or_else(|_| Err(io("the store writer has stopped")))
}

#[async_trait]
impl EventStore for RedbStore {
    async fn append(&self, event: NewEvent) -> Result<EventKey, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Append(Box::new(event), tx))?;
        answer(rx).await
    }

    async fn record(
        &self,
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        next: Next,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Op::Record {
            key,
            index,
            attempt,
            next,
            done,
        })?;
        answer(rx).await
    }

    async fn replay(&self, key: EventKey) -> Result<Vec<usize>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Replay(key, tx))?;
        answer(rx).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Sync(tx))?;
        answer(rx).await
    }

    async fn purge(&self, before_ms: u64) -> Result<u64, StoreError> {
        // Found in a read transaction, so the writer (and the acks waiting on
        // it) only pays for the removals.
        let mut expired = Vec::new();
        {
            let tx = self.db.begin_read().map_err(io)?;
            let table = tx.open_table(EVENTS).map_err(io)?;
            for entry in table.iter().map_err(io)? {
                let (key, value) = entry.map_err(io)?;
                let record: EventRecord = serde_json::from_slice(value.value()).map_err(io)?;
                if record.finished_ms().is_some_and(|f| f < before_ms) {
                    expired.push(key.value());
                    if expired.len() >= MAX_PURGE {
                        break;
                    }
                }
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Op::Purge(expired, before_ms, tx))?;
        answer(rx).await
    }

    async fn get(&self, key: EventKey) -> Result<Option<EventRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(EVENTS).map_err(io)?;
        RedbStore::read_record(&table, key)
    }

    async fn payload(&self, key: EventKey) -> Result<Option<(Bytes, Bytes)>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let heads = tx.open_table(HEADS).map_err(io)?;
        let bodies = tx.open_table(BODIES).map_err(io)?;
        let head = heads.get(key).map_err(io)?;
        let body = bodies.get(key).map_err(io)?;
        Ok(match (head, body) {
            (Some(head), Some(body)) => Some((
                Bytes::copy_from_slice(head.value()),
                Bytes::copy_from_slice(body.value()),
            )),
            _ => None,
        })
    }

    async fn list(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(EventKey, EventRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(EVENTS).map_err(io)?;
        let mut found = Vec::new();
        let range = table
            .range(..filter.before.unwrap_or(u64::MAX))
            .map_err(io)?;
        for entry in range.rev() {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(io)?;
            let record: EventRecord = serde_json::from_slice(value.value()).map_err(io)?;
            // Keys follow arrival order; a minute of slack covers requests that
            // took long to arrive before an earlier-received one was stored.
            if filter
                .since_ms
                .is_some_and(|since| record.received_ms.saturating_add(60_000) < since)
            {
                break;
            }
            if filter.matches(&record) {
                found.push((key.value(), record));
            }
        }
        Ok(found)
    }

    async fn pending(&self) -> Result<Vec<(EventKey, EventRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let pending = tx.open_table(PENDING).map_err(io)?;
        let events = tx.open_table(EVENTS).map_err(io)?;
        let mut found = Vec::new();
        for entry in pending.iter().map_err(io)? {
            let key = entry.map_err(io)?.0.value();
            if let Some(record) = RedbStore::read_record(&events, key)? {
                found.push((key, record));
            }
        }
        Ok(found)
    }

    fn bytes_used(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    fn event_id(&self, key: EventKey) -> String {
        format!("{:08x}{key:012x}", self.store_id)
    }

    fn key_of(&self, id: &str) -> Option<EventKey> {
        if id.len() != 20 || !id.is_ascii() {
            return None;
        }
        let (store, key) = id.split_at(8);
        (u32::from_str_radix(store, 16).ok()? == self.store_id)
            .then(|| u64::from_str_radix(key, 16).ok())
            .flatten()
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    bytes: Arc<AtomicU64>,
    next_key: u64,
    max_bytes: u64,
    /// Commits since the last durable one.
    lazy_commits: u32,
}

/// An operation's answer, sent only after its transaction committed.
enum Reply {
    Append(
        oneshot::Sender<Result<EventKey, StoreError>>,
        Result<EventKey, StoreError>,
    ),
    Record(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Replay(
        oneshot::Sender<Result<Vec<usize>, StoreError>>,
        Result<Vec<usize>, StoreError>,
    ),
    Purge(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
    Sync(oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    /// Sends the result, or `failure` for every operation when the commit failed.
    fn send(self, failure: Option<&StoreError>) {
        fn pick<T>(
            r: Result<T, StoreError>,
            failure: Option<&StoreError>,
        ) -> Result<T, StoreError> {
            match failure {
                Some(e) => Err(e.clone()),
                None => r,
            }
        }
        // A caller that gave up waiting is no longer listening: nothing to do.
        let _ = match self {
            Reply::Append(tx, r) => tx.send(pick(r, failure)).map_err(drop),
            Reply::Record(tx, r) => tx.send(pick(r, failure)).map_err(drop),
            Reply::Replay(tx, r) => tx.send(pick(r, failure)).map_err(drop),
            Reply::Purge(tx, r) => tx.send(pick(r, failure)).map_err(drop),
            Reply::Sync(tx) => tx.send(pick(Ok(()), failure)).map_err(drop),
        };
    }
}

struct Tables<'t> {
    events: redb::Table<'t, u64, &'static [u8]>,
    heads: redb::Table<'t, u64, &'static [u8]>,
    bodies: redb::Table<'t, u64, &'static [u8]>,
    pending: redb::Table<'t, u64, ()>,
}

/// A failed operation's reply (the error is sent in its place).
fn failed(op: Op) -> Reply {
    fn e<T>() -> Result<T, StoreError> {
        Err(io("aborted"))
    }
    match op {
        Op::Append(_, tx) => Reply::Append(tx, e()),
        Op::Record { done, .. } => Reply::Record(done, e()),
        Op::Replay(_, tx) => Reply::Replay(tx, e()),
        Op::Purge(_, _, tx) => Reply::Purge(tx, e()),
        Op::Sync(tx) => Reply::Sync(tx),
    }
}

impl Writer {
    fn run(&mut self, ops: mpsc::Receiver<Op>) {
        while let Ok(first) = ops.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Closing: make the last non-durable records durable, so a clean stop
        // repeats no delivered attempt at the next start.
        if self.lazy_commits > 0 {
            let durable = self
                .db
                .begin_write()
                .map_err(io)
                .and_then(|tx| tx.commit().map_err(io));
            if let Err(error) = durable {
                tracing::warn!(%error, "cannot make the last attempt records durable");
            }
        }
    }

    /// Applies `batch` in one transaction, commits it durably, then answers each.
    fn commit(&mut self, batch: Vec<Op>) {
        let saved_key = self.next_key;
        let mut bytes = self.bytes.load(Ordering::Acquire);
        let mut replies = Vec::with_capacity(batch.len());
        // Only what a caller was promised durable needs its own fsync; redb
        // frees pages only in durable commits, so every few batches is one.
        let durable = self.lazy_commits >= MAX_LAZY_COMMITS
            || batch
                .iter()
                .any(|op| matches!(op, Op::Append(..) | Op::Replay(..) | Op::Sync(..)));
        self.lazy_commits = if durable { 0 } else { self.lazy_commits + 1 };
        let result = match self.db.begin_write() {
            Err(e) => {
                replies.extend(batch.into_iter().map(failed));
                Err(io(e))
            }
            Ok(mut tx) => {
                if !durable {
                    tx.set_durability(Durability::None);
                }
                match self.apply_all(&tx, batch, &mut bytes, &mut replies) {
                    Ok(()) => tx.commit().map_err(io),
                    Err(e) => {
                        let _ = tx.abort();
                        Err(e)
                    }
                }
            }
        };
        match &result {
            Ok(()) => self.bytes.store(bytes, Ordering::Release),
            Err(error) => {
                tracing::error!(%error, "storage commit failed; the waiting operations get an error");
                self.next_key = saved_key;
            }
        }
        for reply in replies {
            reply.send(result.as_ref().err());
        }
    }

    fn apply_all(
        &mut self,
        tx: &redb::WriteTransaction,
        batch: Vec<Op>,
        bytes: &mut u64,
        replies: &mut Vec<Reply>,
    ) -> Result<(), StoreError> {
        let opened = (|| {
            Ok::<_, redb::TableError>(Tables {
                events: tx.open_table(EVENTS)?,
                heads: tx.open_table(HEADS)?,
                bodies: tx.open_table(BODIES)?,
                pending: tx.open_table(PENDING)?,
            })
        })();
        let mut tables = match opened {
            Ok(tables) => tables,
            Err(e) => {
                replies.extend(batch.into_iter().map(failed));
                return Err(io(e));
            }
        };
        let mut ops = batch.into_iter();
        while let Some(op) = ops.next() {
            let applied = self.apply(&mut tables, op, bytes);
            match applied {
                Ok(reply) => replies.push(reply),
                Err((reply, e)) => {
                    replies.push(reply);
                    replies.extend(ops.map(failed));
                    return Err(e);
                }
            }
        }
        drop(tables);
        let mut info = tx.open_table(INFO).map_err(io)?;
        info.insert("next_key", self.next_key).map_err(io)?;
        info.insert("bytes", *bytes).map_err(io)?;
        Ok(())
    }

    /// One operation. `Err` aborts the whole transaction.
    fn apply(
        &mut self,
        t: &mut Tables<'_>,
        op: Op,
        bytes: &mut u64,
    ) -> Result<Reply, (Reply, StoreError)> {
        match op {
            Op::Append(event, tx) => match self.append(t, &event, bytes) {
                Ok(r) => Ok(Reply::Append(tx, r)),
                Err(e) => Err((Reply::Append(tx, Err(e.clone())), e)),
            },
            Op::Record {
                key,
                index,
                attempt,
                next,
                done,
            } => match self.record(t, key, index, attempt, next, bytes) {
                Ok(r) => Ok(Reply::Record(done, r)),
                Err(e) => Err((Reply::Record(done, Err(e.clone())), e)),
            },
            Op::Replay(key, tx) => match self.replay(t, key, bytes) {
                Ok(r) => Ok(Reply::Replay(tx, r)),
                Err(e) => Err((Reply::Replay(tx, Err(e.clone())), e)),
            },
            Op::Purge(keys, before, tx) => match self.purge(t, &keys, before, bytes) {
                Ok(r) => Ok(Reply::Purge(tx, Ok(r))),
                Err(e) => Err((Reply::Purge(tx, Err(e.clone())), e)),
            },
            Op::Sync(tx) => Ok(Reply::Sync(tx)),
        }
    }

    /// `Ok(Err(Full))` refuses this event only; `Err` fails the transaction.
    fn append(
        &mut self,
        t: &mut Tables<'_>,
        event: &NewEvent,
        bytes: &mut u64,
    ) -> Result<Result<EventKey, StoreError>, StoreError> {
        let record = serde_json::to_vec(&EventRecord::new(event)).map_err(io)?;
        let size = (record.len() + event.head.len() + event.body.len()) as u64;
        if bytes.saturating_add(size) > self.max_bytes {
            return Ok(Err(StoreError::Full {
                max_bytes: self.max_bytes,
            }));
        }
        let key = self.next_key;
        t.events.insert(key, record.as_slice()).map_err(io)?;
        t.heads.insert(key, &event.head[..]).map_err(io)?;
        t.bodies.insert(key, &event.body[..]).map_err(io)?;
        t.pending.insert(key, ()).map_err(io)?;
        self.next_key += 1;
        *bytes += size;
        Ok(Ok(key))
    }

    fn load(t: &Tables<'_>, key: EventKey) -> Result<Option<(EventRecord, usize)>, StoreError> {
        match t.events.get(key).map_err(io)? {
            None => Ok(None),
            Some(value) => {
                let raw = value.value();
                Ok(Some((serde_json::from_slice(raw).map_err(io)?, raw.len())))
            }
        }
    }

    fn save(
        t: &mut Tables<'_>,
        key: EventKey,
        record: &EventRecord,
        old_len: usize,
        bytes: &mut u64,
    ) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(record).map_err(io)?;
        t.events.insert(key, raw.as_slice()).map_err(io)?;
        *bytes = (*bytes + raw.len() as u64).saturating_sub(old_len as u64);
        if record.status() == Status::Pending {
            t.pending.insert(key, ()).map_err(io)?;
        } else {
            t.pending.remove(key).map_err(io)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        t: &mut Tables<'_>,
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        next: Next,
        bytes: &mut u64,
    ) -> Result<Result<(), StoreError>, StoreError> {
        let Some((mut record, old_len)) = Writer::load(t, key)? else {
            return Ok(Err(StoreError::NotFound(key.to_string())));
        };
        let Some(delivery) = record.deliveries.get_mut(index) else {
            return Ok(Err(StoreError::NotFound(format!("{key}/{index}"))));
        };
        delivery.apply(attempt, next);
        Writer::save(t, key, &record, old_len, bytes)?;
        Ok(Ok(()))
    }

    fn replay(
        &mut self,
        t: &mut Tables<'_>,
        key: EventKey,
        bytes: &mut u64,
    ) -> Result<Result<Vec<usize>, StoreError>, StoreError> {
        let Some((mut record, old_len)) = Writer::load(t, key)? else {
            return Ok(Err(StoreError::NotFound(key.to_string())));
        };
        let now = now_ms();
        let mut replayed = Vec::new();
        for (index, delivery) in record.deliveries.iter_mut().enumerate() {
            if delivery.status != Status::Pending {
                delivery.status = Status::Pending;
                delivery.next_ms = now;
                delivery.tries = 0;
                delivery.reason = None;
                delivery.finished_ms = None;
                replayed.push(index);
            }
        }
        if !replayed.is_empty() {
            // A replayed event starts a new max_age; its receipt time stays.
            record.replayed_ms = Some(now);
            Writer::save(t, key, &record, old_len, bytes)?;
        }
        Ok(Ok(replayed))
    }

    /// Removes those of `keys` still finished before `before_ms` (a replay may
    /// have made one pending since it was listed).
    fn purge(
        &mut self,
        t: &mut Tables<'_>,
        keys: &[EventKey],
        before_ms: u64,
        bytes: &mut u64,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        for key in keys {
            let Some((record, len)) = Writer::load(t, *key)? else {
                continue;
            };
            if record.finished_ms().is_none_or(|f| f >= before_ms) {
                continue;
            }
            t.events.remove(*key).map_err(io)?;
            t.heads.remove(*key).map_err(io)?;
            t.bodies.remove(*key).map_err(io)?;
            t.pending.remove(*key).map_err(io)?;
            let size = len as u64 + record.head_bytes + record.body_bytes;
            *bytes = bytes.saturating_sub(size);
            removed += 1;
        }
        Ok(removed)
    }
}

/// Asana handshake secrets: written in their own durable transaction (rare: one per
/// handshake), outside the writer thread, which redb serializes with its batches.
impl crate::handshake::SecretStore for RedbStore {
    fn secret(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = match tx.open_table(HANDSHAKE_SECRETS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let value = table.get(key).map_err(|e| e.to_string())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn keep_first(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::Immediate);
        let kept = {
            let mut table = tx
                .open_table(HANDSHAKE_SECRETS)
                .map_err(|e| e.to_string())?;
            let earlier = table
                .get(key)
                .map_err(|e| e.to_string())?
                .map(|v| v.value().to_vec());
            match earlier {
                Some(earlier) => earlier,
                None => {
                    table.insert(key, value).map_err(|e| e.to_string())?;
                    value.to_vec()
                }
            }
        };
        tx.commit().map_err(|e| e.to_string())?;
        Ok(kept)
    }
    fn forget(&self, key: &str) -> Result<bool, String> {
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::Immediate);
        let removed = {
            let mut table = tx
                .open_table(HANDSHAKE_SECRETS)
                .map_err(|e| e.to_string())?;
            let removed = table.remove(key).map_err(|e| e.to_string())?;
            removed.is_some()
        };
        tx.commit().map_err(|e| e.to_string())?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;

    fn event(route: &str, upstreams: &[&str], body: &[u8]) -> NewEvent {
        NewEvent {
            route: route.to_string(),
            upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
            method: "POST".to_string(),
            head: Bytes::from_static(b"POST /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            body: Bytes::copy_from_slice(body),
            request_id: "r".to_string(),
            event: Some("push".to_string()),
            received_ms: now_ms(),
            retry: RetryPolicy::default(),
        }
    }

    fn attempt(status: u16) -> Option<AttemptRecord> {
        Some(AttemptRecord {
            at_ms: now_ms(),
            duration_ms: 1,
            status: Some(status),
            error: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_records_replays_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let a = store
            .append(event("gh", &["ci", "audit"], b"one"))
            .await
            .unwrap();
        let b = store
            .append(event("st", &["billing"], b"two"))
            .await
            .unwrap();
        assert!(b > a);
        assert_eq!(store.key_of(&store.event_id(a)), Some(a));
        assert_eq!(
            store.key_of("00000000000000000001"),
            None,
            "another store's id"
        );
        let (_, body) = store.payload(a).await.unwrap().unwrap();
        assert_eq!(&body[..], b"one");
        store
            .record(a, 0, attempt(200), Next::Delivered)
            .await
            .unwrap();
        store
            .record(a, 1, attempt(500), Next::Dead("3 attempts failed".into()))
            .await
            .unwrap();
        let record = store.get(a).await.unwrap().unwrap();
        assert_eq!(record.status(), Status::Dead);
        assert_eq!(record.deliveries[1].tries, 1);
        let dead = Filter {
            status: Some(Status::Dead),
            ..Filter::default()
        };
        let listed: Vec<EventKey> = store
            .list(&dead, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, [a]);
        // Paging: newest first, `before` continues.
        let all = store.list(&Filter::default(), 1).await.unwrap();
        assert_eq!(all[0].0, b);
        let next = Filter {
            before: Some(b),
            ..Filter::default()
        };
        assert_eq!(store.list(&next, 1).await.unwrap()[0].0, a);
        let pending: Vec<EventKey> = store
            .pending()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(pending, [b]);
        // A replay makes every finished delivery pending again, tries reset.
        assert_eq!(store.replay(a).await.unwrap(), vec![0, 1]);
        let record = store.get(a).await.unwrap().unwrap();
        assert_eq!(record.status(), Status::Pending);
        assert_eq!(record.deliveries[1].tries, 0);
        assert_eq!(record.deliveries[1].attempts.len(), 1, "the history stays");
        let used = store.bytes_used();
        let id = store.event_id(a);
        drop(store);
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.bytes_used(), used);
        assert_eq!(store.event_id(a), id, "ids are stable across restarts");
        assert_eq!(store.pending().await.unwrap().len(), 2);
        let c = store.append(event("gh", &["ci"], b"three")).await.unwrap();
        assert!(c > b, "keys are never reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_store_refuses_and_a_purge_frees_space() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 4096).unwrap();
        let mut keys = Vec::new();
        let refused = loop {
            match store.append(event("gh", &["ci"], &[b'x'; 500])).await {
                Ok(key) => keys.push(key),
                Err(e) => break e,
            }
            assert!(keys.len() < 100);
        };
        assert_eq!(refused, StoreError::Full { max_bytes: 4096 });
        assert!(store.bytes_used() <= 4096);
        for key in &keys {
            store
                .record(*key, 0, attempt(204), Next::Delivered)
                .await
                .unwrap();
        }
        // Finished before "now + 1 s": all of them.
        assert_eq!(
            store.purge(now_ms() + 1000).await.unwrap(),
            keys.len() as u64
        );
        assert!(store.get(keys[0]).await.unwrap().is_none());
        assert!(store.bytes_used() < 500, "{}", store.bytes_used());
        store
            .append(event("gh", &["ci"], &[b'x'; 500]))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(dir.path(), 1 << 30).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(event("gh", &["ci"], format!("{i}").as_bytes()))
                        .await
                })
            })
            .collect();
        let mut keys = std::collections::BTreeSet::new();
        for task in tasks {
            keys.insert(task.await.unwrap().unwrap());
        }
        assert_eq!(keys.len(), 200);
        assert_eq!(store.pending().await.unwrap().len(), 200);
    }
}
