//! Admission: how many requests and connections the gateway holds at once.
//!
//! Owns: the counters with a cap ([`InflightLimit`]: `[server] max_inflight` for
//! requests, 503 `overloaded` when full; `[server] max_connections` for client
//! connections) and their slots ([`InflightSlot`]); the `hookgate_inflight_requests`
//! gauge's guard ([`Counted`]), which counts every request being answered, admitted or
//! not. Does not own: answering 503 (the proxy), closing refused connections
//! (`proxy::client`), or the metric's registration (`metrics`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The global cap on requests in flight (`[server]` setting; 503 when exceeded).
///
/// Clones share the counter, so a reload can [`set_max`](InflightLimit::set_max) without
/// losing track of requests already running.
#[derive(Clone)]
pub struct InflightLimit(Arc<Inflight>);

struct Inflight {
    max: AtomicUsize,
    current: AtomicUsize,
}

/// Holds one in-flight slot; dropping it frees the slot. Keep it in the request context.
#[must_use = "the slot is released when the guard is dropped"]
pub struct InflightSlot(Arc<Inflight>);

impl InflightLimit {
    /// At most `max` requests at once (0 refuses everything).
    pub fn new(max: usize) -> Self {
        InflightLimit(Arc::new(Inflight {
            max: AtomicUsize::new(max),
            current: AtomicUsize::new(0),
        }))
    }

    /// No cap; still counts (for the `hookgate_inflight_requests` gauge).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// A slot, or `None` when `max` requests are already in flight.
    pub fn try_acquire(&self) -> Option<InflightSlot> {
        let max = self.0.max.load(Ordering::Relaxed);
        self.0
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InflightSlot(Arc::clone(&self.0)))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.0.max.load(Ordering::Relaxed)
    }

    /// Changes the cap; requests already in flight are not affected.
    pub fn set_max(&self, max: usize) {
        self.0.max.store(max, Ordering::Relaxed);
    }
}

impl fmt::Debug for InflightLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InflightLimit")
            .field("in_flight", &self.in_flight())
            .field("max", &self.max())
            .finish()
    }
}

impl Drop for InflightSlot {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InflightSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InflightSlot")
    }
}

/// Counts a request in `hookgate_inflight_requests` for as long as it lives.
pub struct Counted(prometheus::IntGauge);

impl Counted {
    /// Increments `gauge` now and decrements it on drop.
    pub fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_limit() {
        let limit = InflightLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.in_flight(), 2);
        drop(a);
        let c = limit.clone().try_acquire().unwrap();
        assert_eq!(limit.in_flight(), 2);
        limit.set_max(1);
        assert!(limit.try_acquire().is_none());
        drop((b, c));
        assert_eq!(limit.in_flight(), 0);
        assert!(limit.try_acquire().is_some());
        assert!(InflightLimit::new(0).try_acquire().is_none());
        let unlimited = InflightLimit::unlimited();
        let guards: Vec<_> = (0..100).map(|_| unlimited.try_acquire().unwrap()).collect();
        assert_eq!(unlimited.in_flight(), 100);
        drop(guards);
        assert_eq!(unlimited.in_flight(), 0);
    }

    #[test]
    fn counted_follows_the_guard() {
        let gauge = prometheus::IntGauge::new("g", "help").unwrap();
        let a = Counted::new(&gauge);
        let b = Counted::new(&gauge);
        assert_eq!(gauge.get(), 2);
        drop(a);
        assert_eq!(gauge.get(), 1);
        drop(b);
        assert_eq!(gauge.get(), 0);
    }
}
