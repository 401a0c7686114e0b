//! Measures the embedded stores considered for queued delivery, the way hookgate
//! uses one: an append of one ~1.2 KiB event (head + body) that must be on disk
//! (fsync) before the sender's 202, alone (batch 1) or group-committed (batch 64);
//! the time to reopen a store holding 100k events and find the pending ones; and
//! the disk it takes. Usage: `store-compare [DIR]` (default: a fresh temp dir).
//! Build each store alone (`--no-default-features --features redb`) to time its
//! clean build.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EVENT_BYTES: usize = 1200;
const BATCH1_EVENTS: u64 = 1000;
const BATCH64_EVENTS: u64 = 64 * 200;
const RECOVERY_EVENTS: u64 = 100_000;

/// Incompressible bytes (xorshift), as signed JSON with ids and hashes nearly is.
fn event(seq: u64) -> Vec<u8> {
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut value = Vec::with_capacity(EVENT_BYTES);
    while value.len() < EVENT_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        value.extend_from_slice(&state.to_le_bytes());
    }
    value.truncate(EVENT_BYTES);
    value
}

trait Store {
    fn name(&self) -> &'static str;
    /// Counts the events of the open store (a recovery scan).
    fn scan(&mut self) -> u64;
    /// Appends events `seq..seq+n` in one durable commit.
    fn append(&mut self, seq: u64, n: u64);
    /// Closes, reopens and counts the events (a recovery scan of the pending index).
    fn reopen_and_count(&mut self) -> (Duration, Duration, u64);
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            total += if meta.is_dir() {
                dir_size(&entry.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

fn measure(store: &mut dyn Store, dir: &Path) {
    let mut seq = 0;
    let started = Instant::now();
    for _ in 0..BATCH1_EVENTS {
        store.append(seq, 1);
        seq += 1;
    }
    let batch1 = BATCH1_EVENTS as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..BATCH64_EVENTS / 64 {
        store.append(seq, 64);
        seq += 64;
    }
    let batch64 = BATCH64_EVENTS as f64 / started.elapsed().as_secs_f64();
    while seq < RECOVERY_EVENTS {
        let n = 1000.min(RECOVERY_EVENTS - seq);
        store.append(seq, n);
        seq += n;
    }
    let (open, scan, count) = store.reopen_and_count();
    assert_eq!(count, RECOVERY_EVENTS);
    let disk = dir_size(dir);
    println!(
        "{:<8} batch1 {:>8.0} ev/s  batch64 {:>8.0} ev/s  open {:>7.1} ms  open+scan {:>7.1} ms  disk {:>6.1} MiB ({:.2}x payload)",
        store.name(),
        batch1,
        batch64,
        open.as_secs_f64() * 1e3,
        (open + scan).as_secs_f64() * 1e3,
        disk as f64 / 1048576.0,
        disk as f64 / (RECOVERY_EVENTS as f64 * EVENT_BYTES as f64),
    );
}

#[cfg(feature = "redb")]
mod redb_store {
    use super::*;
    use redb::{Database, ReadableTableMetadata, TableDefinition};
    const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

    pub struct S(pub Option<Database>, pub PathBuf);
    impl S {
        pub fn open(path: PathBuf) -> S {
            S(Some(Database::create(&path).unwrap()), path)
        }
    }
    impl Store for S {
        fn name(&self) -> &'static str {
            "redb"
        }
        fn append(&mut self, seq: u64, n: u64) {
            let db = self.0.as_ref().unwrap();
            let tx = db.begin_write().unwrap(); // Durability::Immediate by default
            {
                let mut table = tx.open_table(EVENTS).unwrap();
                for s in seq..seq + n {
                    table.insert(s, event(s).as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn scan(&mut self) -> u64 {
            let tx = self.0.as_ref().unwrap().begin_read().unwrap();
            let table = tx.open_table(EVENTS).unwrap();
            table.range::<u64>(..).unwrap().map(|e| e.unwrap()).count() as u64
        }
        fn reopen_and_count(&mut self) -> (Duration, Duration, u64) {
            drop(self.0.take());
            let started = Instant::now();
            let db = Database::create(&self.1).unwrap();
            let open = started.elapsed();
            let started = Instant::now();
            let tx = db.begin_read().unwrap();
            let table = tx.open_table(EVENTS).unwrap();
            let mut count = 0;
            for entry in table.range::<u64>(..).unwrap() {
                entry.unwrap();
                count += 1;
            }
            assert_eq!(count, table.len().unwrap());
            let scan = started.elapsed();
            drop(table);
            drop(tx);
            self.0 = Some(db);
            (open, scan, count)
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use super::*;
    use rusqlite::{params, Connection};

    pub struct S(pub Option<Connection>, pub PathBuf);
    fn connect(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        // WAL with synchronous=FULL: the WAL is fsynced at every commit.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, value BLOB NOT NULL);",
        )
        .unwrap();
        conn
    }
    impl S {
        pub fn open(path: PathBuf) -> S {
            S(Some(connect(&path)), path)
        }
    }
    impl Store for S {
        fn name(&self) -> &'static str {
            "sqlite"
        }
        fn append(&mut self, seq: u64, n: u64) {
            let conn = self.0.as_mut().unwrap();
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO events (id, value) VALUES (?1, ?2)")
                    .unwrap();
                for s in seq..seq + n {
                    insert.execute(params![s as i64, event(s)]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn scan(&mut self) -> u64 {
            let conn = self.0.as_ref().unwrap();
            let mut stmt = conn
                .prepare("SELECT id, length(value) FROM events")
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut count = 0;
            while rows.next().unwrap().is_some() {
                count += 1;
            }
            count
        }
        fn reopen_and_count(&mut self) -> (Duration, Duration, u64) {
            drop(self.0.take());
            let started = Instant::now();
            let conn = connect(&self.1);
            let open = started.elapsed();
            let started = Instant::now();
            let mut count = 0u64;
            {
                let mut stmt = conn
                    .prepare("SELECT id, length(value) FROM events")
                    .unwrap();
                let mut rows = stmt.query([]).unwrap();
                while rows.next().unwrap().is_some() {
                    count += 1;
                }
            }
            let scan = started.elapsed();
            self.0 = Some(conn);
            (open, scan, count)
        }
    }
}

#[cfg(feature = "fjall")]
mod fjall_store {
    use super::*;
    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub struct S(pub Option<(Keyspace, PartitionHandle)>, pub PathBuf);
    fn connect(path: &Path) -> (Keyspace, PartitionHandle) {
        let keyspace = Config::new(path).open().unwrap();
        let events = keyspace
            .open_partition("events", PartitionCreateOptions::default())
            .unwrap();
        (keyspace, events)
    }
    impl S {
        pub fn open(path: PathBuf) -> S {
            S(Some(connect(&path)), path)
        }
    }
    impl Store for S {
        fn name(&self) -> &'static str {
            "fjall"
        }
        fn append(&mut self, seq: u64, n: u64) {
            let (keyspace, events) = self.0.as_ref().unwrap();
            let mut batch = keyspace.batch().durability(Some(PersistMode::SyncAll));
            for s in seq..seq + n {
                batch.insert(events, s.to_be_bytes(), event(s));
            }
            batch.commit().unwrap();
        }
        fn scan(&mut self) -> u64 {
            let (_, events) = self.0.as_ref().unwrap();
            events.iter().map(|e| e.unwrap()).count() as u64
        }
        fn reopen_and_count(&mut self) -> (Duration, Duration, u64) {
            drop(self.0.take());
            let started = Instant::now();
            let (keyspace, events) = connect(&self.1);
            let open = started.elapsed();
            let started = Instant::now();
            let mut count = 0;
            for entry in events.iter() {
                entry.unwrap();
                count += 1;
            }
            let scan = started.elapsed();
            self.0 = Some((keyspace, events));
            (open, scan, count)
        }
    }
}

/// Fills a store with RECOVERY_EVENTS and aborts without closing it (a crash).
fn fill_and_abort(store: &mut dyn Store) -> ! {
    let mut seq = 0;
    while seq < RECOVERY_EVENTS {
        let n = 1000.min(RECOVERY_EVENTS - seq);
        store.append(seq, n);
        seq += n;
    }
    std::process::abort();
}

fn open_store(name: &str, dir: &Path) -> Box<dyn Store> {
    std::fs::create_dir_all(dir).unwrap();
    match name {
        #[cfg(feature = "redb")]
        "redb" => Box::new(redb_store::S::open(dir.join("events.redb"))),
        #[cfg(feature = "sqlite")]
        "sqlite" => Box::new(sqlite_store::S::open(dir.join("events.db"))),
        #[cfg(feature = "fjall")]
        "fjall" => Box::new(fjall_store::S::open(dir.to_path_buf())),
        _ => panic!("unknown store {name}"),
    }
}

/// Times opening a store whose writer was killed after 100k durable events.
fn crash_recovery(name: &str, base: &Path) {
    let dir = base.join(format!("{name}-crash"));
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["fill-and-abort", name, dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(!status.success(), "the filler aborts");
    let started = Instant::now();
    let mut store = open_store(name, &dir);
    let opened = started.elapsed();
    let started = Instant::now();
    let count = store.scan();
    let scan = started.elapsed();
    assert_eq!(count, RECOVERY_EVENTS);
    println!(
        "{name:<8} after a crash: open {:>8.1} ms  open+scan {:>8.1} ms",
        opened.as_secs_f64() * 1e3,
        (opened + scan).as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fill-and-abort") {
        let mut store = open_store(&args[2], Path::new(&args[3]));
        fill_and_abort(store.as_mut());
    }
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("store-compare-{}", std::process::id()))
        });
    std::fs::create_dir_all(&base).unwrap();
    println!(
        "{EVENT_BYTES}-byte events; batch1: {BATCH1_EVENTS} commits; batch64: {} commits; recovery with {RECOVERY_EVENTS} events; dir {}",
        BATCH64_EVENTS / 64,
        base.display()
    );
    #[cfg(feature = "redb")]
    {
        let dir = base.join("redb");
        std::fs::create_dir_all(&dir).unwrap();
        measure(&mut redb_store::S::open(dir.join("events.redb")), &dir);
    }
    #[cfg(feature = "sqlite")]
    {
        let dir = base.join("sqlite");
        std::fs::create_dir_all(&dir).unwrap();
        measure(&mut sqlite_store::S::open(dir.join("events.db")), &dir);
    }
    #[cfg(feature = "fjall")]
    {
        let dir = base.join("fjall");
        measure(&mut fjall_store::S::open(dir.clone()), &dir);
    }
    for name in ["redb", "sqlite", "fjall"] {
        if cfg!(feature = "redb") && name == "redb"
            || cfg!(feature = "sqlite") && name == "sqlite"
            || cfg!(feature = "fjall") && name == "fjall"
        {
            crash_recovery(name, &base);
        }
    }
    std::fs::remove_dir_all(&base).ok();
}
