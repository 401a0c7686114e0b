//! Tests of `fanout`.

use super::*;
use std::collections::VecDeque;
use tokio::time::Instant;

fn payload(body: &'static str) -> Arc<Payload> {
    Arc::new(Payload {
        method: Method::POST,
        head: Bytes::from_static(b"POST /webhooks/github HTTP/1.1\r\n\r\n"),
        body: Bytes::from_static(body.as_bytes()),
    })
}

/// Answers from a script per upstream (then 200), records each attempt's time.
#[derive(Default)]
struct Fake {
    scripts: Mutex<std::collections::HashMap<String, VecDeque<AttemptOutcome>>>,
    calls: Mutex<Vec<(String, u32, Instant)>>,
    /// How long each attempt takes.
    latency: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn script(&self, upstream: &str, outcomes: Vec<AttemptOutcome>) {
        lock(&self.scripts).insert(upstream.into(), outcomes.into());
    }
    fn calls(&self, upstream: &str) -> Vec<(u32, Instant)> {
        lock(&self.calls)
            .iter()
            .filter(|(u, _, _)| u == upstream)
            .map(|(_, a, t)| (*a, *t))
            .collect()
    }
}

#[async_trait]
impl Deliver for Fake {
    async fn deliver(&self, job: &Job, attempt: u32) -> AttemptOutcome {
        lock(&self.calls).push((job.upstream.to_string(), attempt, Instant::now()));
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        lock(&self.scripts)
            .get_mut(&*job.upstream)
            .and_then(VecDeque::pop_front)
            .unwrap_or(AttemptOutcome::response(200))
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn delivered(&self, job: &Job, attempts: u32) {
        lock(&self.events).push(format!(
            "delivered {}/{} after {attempts}",
            job.route, job.upstream
        ));
    }
    fn retried(&self, job: &Job, attempt: u32, outcome: &AttemptOutcome, _delay: Duration) {
        lock(&self.events).push(format!(
            "retry {} #{attempt} {}",
            job.upstream,
            outcome.label()
        ));
    }
    fn failed(&self, job: &Job, attempts: u32, last: &AttemptOutcome, why: Failure) {
        lock(&self.events).push(format!(
            "failed {} after {attempts} {} {why:?}",
            job.upstream,
            last.label()
        ));
    }
}

fn start(config: FanoutConfig, fake: &Arc<Fake>, rec: &Arc<Recorder>) -> Fanout {
    Fanout::start(
        config,
        Arc::clone(fake) as Arc<dyn Deliver>,
        Arc::clone(rec) as Arc<dyn Observer>,
        Handle::current(),
    )
}

fn config() -> FanoutConfig {
    FanoutConfig {
        queue: 10,
        concurrency: 2,
        attempts: 4,
        backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
        ..FanoutConfig::default()
    }
}

async fn settle(fanout: &Fanout) {
    tokio::time::timeout(Duration::from_secs(3600), fanout.wait_idle())
        .await
        .expect("copies did not finish");
}

#[test]
fn classification_table() {
    use AttemptOutcome as O;
    let table = [
        (O::response(200), Class::Delivered),
        (O::response(204), Class::Delivered),
        (O::response(500), Class::Retry),
        (O::response(502), Class::Retry),
        (O::response(503), Class::Retry),
        (O::response(429), Class::Retry),
        (O::response(408), Class::Retry),
        (O::response(400), Class::Fail),
        (O::response(401), Class::Fail),
        (O::response(404), Class::Fail),
        (O::response(422), Class::Fail),
        (O::response(301), Class::Fail),
        (O::response(101), Class::Fail),
        (O::ConnectFailed("refused".into()), Class::Retry),
        (O::TimedOut, Class::Retry),
        (O::Io("reset".into()), Class::Retry),
    ];
    for (outcome, class) in table {
        assert_eq!(outcome.class(), class, "{outcome:?}");
    }
    assert_eq!(O::response(503).label(), "5xx");
    assert_eq!(O::TimedOut.label(), "timeout");
}

#[test]
fn backoff_table() {
    let c = config();
    let ms = Duration::from_millis;
    let table = [
        (1, ms(500)),
        (2, ms(1000)),
        (3, ms(2000)),
        (4, ms(4000)),
        (7, ms(30_000)),
        (40, ms(30_000)),
    ];
    for (retry, ceiling) in table {
        assert_eq!(c.backoff_ceiling(retry), ceiling, "retry {retry}");
        // Jitter stays in the upper half.
        assert_eq!(c.backoff_delay(retry, 0, None), ceiling / 2);
        let span = (ceiling - ceiling / 2).as_nanos() as u64;
        assert_eq!(c.backoff_delay(retry, span, None), ceiling);
        for r in [1, 12345, u64::MAX] {
            let d = c.backoff_delay(retry, r, None);
            assert!(d >= ceiling / 2 && d <= ceiling, "{retry} {r} {d:?}");
        }
    }
    // Retry-After lengthens the wait, up to max_backoff.
    assert_eq!(
        c.backoff_delay(1, 0, Some(Duration::from_secs(5))),
        Duration::from_secs(5)
    );
    assert_eq!(
        c.backoff_delay(1, 0, Some(Duration::from_secs(600))),
        Duration::from_secs(30)
    );
    assert_eq!(c.backoff_delay(1, 0, Some(ms(1))), ms(250));
}

#[tokio::test(start_paused = true)]
async fn delivers_copies_once_each() {
    let fake = Arc::new(Fake::default());
    let rec = Arc::new(Recorder::default());
    let fanout = start(config(), &fake, &rec);
    let p = payload("{\"action\":\"opened\"}");
    fanout.enqueue("github", "audit", Arc::clone(&p)).unwrap();
    fanout.enqueue("github", "archive", p).unwrap();
    settle(&fanout).await;
    let mut events = lock(&rec.events).clone();
    events.sort();
    assert_eq!(
        events,
        [
            "delivered github/archive after 1",
            "delivered github/audit after 1"
        ]
    );
    let c = fanout.counts();
    assert_eq!(
        (
            c.accepted,
            c.delivered,
            c.retried,
            c.failed,
            c.dropped,
            c.held
        ),
        (2, 2, 0, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn retries_with_exponential_backoff_then_delivers() {
    let fake = Arc::new(Fake::default());
    fake.script(
        "audit",
        vec![
            AttemptOutcome::ConnectFailed("connection refused".into()),
            AttemptOutcome::response(503),
            AttemptOutcome::TimedOut,
        ],
    );
    let rec = Arc::new(Recorder::default());
    let fanout = start(config(), &fake, &rec);
    let t0 = Instant::now();
    fanout.enqueue("github", "audit", payload("x")).unwrap();
    settle(&fanout).await;
    let calls = fake.calls("audit");
    assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // Gaps: jittered into [ceiling/2, ceiling] for ceilings 0.5 s, 1 s, 2 s.
    let ms = Duration::from_millis;
    for (i, ceiling) in [ms(500), ms(1000), ms(2000)].into_iter().enumerate() {
        let gap = calls[i + 1].1 - calls[i].1;
        assert!(gap >= ceiling / 2 && gap <= ceiling, "gap {i}: {gap:?}");
    }
    assert!(calls[0].1 - t0 < ms(1));
    assert_eq!(
        *lock(&rec.events),
        [
            "retry audit #1 connect",
            "retry audit #2 5xx",
            "retry audit #3 timeout",
            "delivered github/audit after 4"
        ]
    );
    assert_eq!(fanout.counts().retried, 3);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_attempts_and_never_retries_4xx() {
    let fake = Arc::new(Fake::default());
    fake.script("down", vec![AttemptOutcome::response(500); 10]);
    fake.script("strict", vec![AttemptOutcome::response(400)]);
    fake.script(
        "busy",
        vec![AttemptOutcome::Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(Duration::from_secs(20)),
        }],
    );
    let rec = Arc::new(Recorder::default());
    let fanout = start(config(), &fake, &rec);
    for upstream in ["down", "strict", "busy"] {
        fanout.enqueue("r", upstream, payload("x")).unwrap();
    }
    settle(&fanout).await;
    assert_eq!(fake.calls("down").len(), 4);
    assert_eq!(fake.calls("strict").len(), 1);
    let busy = fake.calls("busy");
    assert_eq!(busy.len(), 2);
    assert!(
        busy[1].1 - busy[0].1 >= Duration::from_secs(20),
        "Retry-After honoured"
    );
    let events = lock(&rec.events).clone();
    assert!(
        events.contains(&"failed down after 4 5xx Exhausted".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"failed strict after 1 4xx NotRetryable".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"delivered r/busy after 2".to_string()),
        "{events:?}"
    );
    let c = fanout.counts();
    assert_eq!((c.delivered, c.failed, c.retried), (1, 2, 4));
}

#[tokio::test(start_paused = true)]
async fn full_queue_drops_are_reported_not_silent() {
    let fake = Arc::new(Fake {
        latency: Duration::from_secs(1),
        ..Fake::default()
    });
    let rec = Arc::new(Recorder::default());
    let fanout = start(
        FanoutConfig {
            queue: 3,
            ..config()
        },
        &fake,
        &rec,
    );
    let mut dropped = Vec::new();
    for i in 0..5 {
        if let Err(d) = fanout.enqueue("github", &format!("u{i}"), payload("x")) {
            dropped.push(d);
        }
    }
    assert_eq!(dropped.len(), 2);
    assert_eq!(dropped[0].reason, DropReason::QueueFull);
    assert_eq!(&*dropped[0].upstream, "u3");
    assert_eq!(
        dropped[0].to_string(),
        "fan-out copy for route github to upstream u3 dropped: queue_full"
    );
    assert_eq!(fanout.counts().dropped, 2);
    assert_eq!(fanout.held(), 3);
    settle(&fanout).await;
    // Room again once copies finish.
    fanout.enqueue("github", "u5", payload("x")).unwrap();
    settle(&fanout).await;
    assert_eq!(fanout.counts().delivered, 4);

    // The byte bound.
    let fanout = start(
        FanoutConfig {
            max_bytes: 10,
            ..config()
        },
        &fake,
        &rec,
    );
    fanout.enqueue("r", "a", payload("123456")).unwrap();
    let d = fanout.enqueue("r", "b", payload("123456")).unwrap_err();
    assert_eq!(d.reason, DropReason::BytesFull);
    fanout.enqueue("r", "c", payload("1234")).unwrap();
    settle(&fanout).await;
    fanout.enqueue("r", "d", payload("123456")).unwrap();
    settle(&fanout).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_capped_and_backoff_frees_the_slot() {
    let fake = Arc::new(Fake {
        latency: Duration::from_millis(100),
        ..Fake::default()
    });
    // "dead" keeps failing; its backoff waits must not hold the two workers.
    fake.script(
        "dead",
        vec![AttemptOutcome::ConnectFailed("refused".into()); 10],
    );
    let rec = Arc::new(Recorder::default());
    let fanout = start(
        FanoutConfig {
            queue: 100,
            ..config()
        },
        &fake,
        &rec,
    );
    fanout.enqueue("r", "dead", payload("x")).unwrap();
    fanout.enqueue("r", "dead", payload("x")).unwrap();
    let t0 = Instant::now();
    for _ in 0..8 {
        fanout.enqueue("r", "live", payload("x")).unwrap();
    }
    settle(&fanout).await;
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 2);
    let live = fake.calls("live");
    assert_eq!(live.len(), 8);
    // 8 copies of 100 ms on 2 workers, after the dead ones' first attempts: ≤ 500 ms.
    assert!(
        live.last().unwrap().1 - t0 <= Duration::from_millis(500),
        "{:?}",
        live.last().unwrap().1 - t0
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_grace_then_reports_the_rest() {
    let fake = Arc::new(Fake {
        latency: Duration::from_millis(200),
        ..Fake::default()
    });
    fake.script("flaky", vec![AttemptOutcome::response(503); 10]);
    let rec = Arc::new(Recorder::default());
    let fanout = start(
        FanoutConfig {
            concurrency: 1,
            ..config()
        },
        &fake,
        &rec,
    );
    fanout.enqueue("github", "ok", payload("x")).unwrap();
    fanout.enqueue("github", "flaky", payload("x")).unwrap();
    for _ in 0..20 {
        let _ = fanout.enqueue("github", "slow", payload("x"));
    }
    let report = fanout.shutdown(Duration::from_millis(500)).await;
    // In 500 ms at 200 ms per attempt with one worker: "ok" is delivered, flaky's first
    // attempt fails (it then waits to retry), one "slow" is cut off mid-attempt.
    assert_eq!(report.finished_in_grace, 1, "{report:?}");
    assert!(!report.abandoned.is_empty());
    assert!(report
        .abandoned
        .iter()
        .any(|a| &*a.upstream == "flaky" && a.attempts == 1 && !a.in_progress));
    let cut_off = report.abandoned.iter().filter(|a| a.in_progress).count();
    assert_eq!(cut_off, 1, "{report:?}");
    let c = fanout.counts();
    assert_eq!(c.held, 0);
    assert_eq!(
        c.accepted,
        c.delivered + c.failed + report.abandoned.len() as u64
    );
    assert_eq!(c.dropped, report.abandoned.len() as u64 + (22 - c.accepted));
    // Closed: new copies are refused with a reason.
    let d = fanout.enqueue("github", "ok", payload("x")).unwrap_err();
    assert_eq!(d.reason, DropReason::ShuttingDown);
    assert_eq!(
        fanout.shutdown(Duration::ZERO).await,
        ShutdownReport::default()
    );
}

#[test]
fn copies_lost_with_their_runtime_release_the_queue() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let fake = Arc::new(Fake {
        latency: Duration::from_secs(3600),
        ..Fake::default()
    });
    let rec = Arc::new(Recorder::default());
    let fanout = Fanout::start(
        config(),
        Arc::clone(&fake) as Arc<dyn Deliver>,
        Arc::clone(&rec) as Arc<dyn Observer>,
        runtime.handle().clone(),
    );
    fanout.enqueue("r", "a", payload("x")).unwrap();
    fanout.enqueue("r", "b", payload("x")).unwrap();
    assert_eq!(fanout.held(), 2);
    drop(runtime);
    assert_eq!(fanout.held(), 0);
    assert_eq!(fanout.shared.bytes.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_is_cut_by_the_attempt_timeout() {
    let fake = Arc::new(Fake {
        latency: Duration::from_secs(3600),
        ..Fake::default()
    });
    let rec = Arc::new(Recorder::default());
    let config = FanoutConfig {
        attempts: 2,
        attempt_timeout: Duration::from_secs(1),
        ..config()
    };
    let fanout = start(config, &fake, &rec);
    fanout.enqueue("r", "hung", payload("x")).unwrap();
    settle(&fanout).await;
    assert_eq!(
        *lock(&rec.events),
        [
            "retry hung #1 timeout",
            "failed hung after 2 timeout Exhausted"
        ]
    );
}
