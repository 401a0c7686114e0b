//! Time limits on the request path that cost nothing when they are not needed.
//!
//! Each `pingora::prelude::timeout` made checks Pingora's clock thread (a clock
//! read and a subtraction) before anything is polled, and arms a timer once its
//! future has to wait: about ten are made per forwarded request. Several wrap
//! futures that are ready at once: writing a small request into an empty socket
//! buffer, reading a body the head's read already brought in, relaying an
//! answer already read. [`within`] polls the future once first, and makes the
//! timeout (and computes its limit) only when the future has to wait.
//!
//! [`timeout`] is `pingora::prelude::timeout` for the waits that usually do
//! wait (the next request on a kept-alive connection, the upstream's answer):
//! the same timer (Pingora's fast one, Tokio's above Pingora's threshold),
//! made at the same moment, but in one allocation where Pingora's boxes its
//! boxed timer future again, and with no clock read when the future is ready
//! at once (Pingora's checks its clock thread as the timeout is made).
//!
//! Owns: that first poll and the choice of timer. Does not own the limits
//! themselves (`[server]` and `[upstreams]` settings, read by the callers).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pin_project_lite::pin_project! {
    /// The future of [`within`]. It holds `future` once: an `async fn` taking
    /// the future as an argument and pinning it would hold it twice (the
    /// argument and the pinned local are separate fields of its state), and
    /// the upstream answer's relay is several KB.
    #[must_use = "futures do nothing unless polled"]
    pub struct Within<F, L> {
        #[pin]
        future: F,
        limit: Option<L>,
        delay: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
        timer: Timer,
    }
}

/// Which timer a [`Within`] arms once its future has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Pingora's fast timer, whatever the limit ([`within`]).
    Fast,
    /// As `pingora::prelude::timeout` chooses ([`timeout`]).
    AsPingoraTimeout,
}

/// Runs `future` to completion unless it is still waiting `limit()` after it
/// first had to wait: `None` then. `limit` is only called when the future
/// does not complete on its first poll.
pub fn within<F, L>(limit: L, future: F) -> Within<F, L>
where
    F: Future,
    L: FnOnce() -> Duration,
{
    Within {
        future,
        limit: Some(limit),
        delay: None,
        timer: Timer::Fast,
    }
}

/// `pingora::prelude::timeout(limit, future)`, as an `Option` (`None`: the
/// limit passed): the future alone while it completes on its first poll,
/// then Pingora's fast timer, or Tokio's when `limit` is above Pingora's
/// threshold (`fast_timeout_to_tokio_threshold`), registered from that poll.
pub fn timeout<F: Future>(limit: Duration, future: F) -> Within<F, impl FnOnce() -> Duration> {
    Within {
        future,
        limit: Some(move || limit),
        delay: None,
        timer: Timer::AsPingoraTimeout,
    }
}

/// Whether `pingora::prelude::timeout` would use Tokio's timer for `limit`
/// (its `should_use_tokio_timeout`).
fn tokio_timer(limit: Duration) -> bool {
    pingora::prelude::fast_timeout::fast_timeout_to_tokio_threshold()
        .is_some_and(|threshold| limit.as_secs() > threshold.as_secs())
}

impl<F, L> Future for Within<F, L>
where
    F: Future,
    L: FnOnce() -> Duration,
{
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        let delay = match this.delay {
            Some(delay) => delay,
            None => {
                let limit = this.limit.take().map_or(Duration::ZERO, |limit| limit());
                if *this.timer == Timer::AsPingoraTimeout && tokio_timer(limit) {
                    this.delay.insert(Box::pin(tokio::time::sleep(limit)))
                } else {
                    this.delay.insert(Box::pin(pingora::prelude::sleep(limit)))
                }
            }
        };
        delay.as_mut().poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_future_needs_no_limit() {
        let output = within(|| unreachable!("no limit needed"), async { 7 }).await;
        assert_eq!(output, Some(7));
    }

    #[tokio::test]
    async fn a_waiting_future_gets_its_limit() {
        let slow = within(
            || Duration::from_millis(20),
            tokio::time::sleep(Duration::from_secs(30)),
        );
        assert_eq!(slow.await, None);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let waiting = within(|| Duration::from_secs(30), receiver);
        sender.send(3).unwrap();
        assert_eq!(waiting.await, Some(Ok(3)));
    }

    #[tokio::test]
    async fn a_timeout_ends_a_wait_as_pingoras_does() {
        assert_eq!(timeout(Duration::from_secs(30), async { 7 }).await, Some(7));
        let slow = timeout(
            Duration::from_millis(20),
            tokio::time::sleep(Duration::from_secs(30)),
        );
        assert_eq!(slow.await, None);
    }

    /// Tokio's timer exactly where Pingora's `timeout` takes it (change the
    /// comparison in `tokio_timer` and this fails).
    #[test]
    fn tokio_takes_over_above_pingoras_threshold() {
        let threshold = pingora::prelude::fast_timeout::fast_timeout_to_tokio_threshold()
            .expect("Pingora's default threshold");
        assert!(!tokio_timer(threshold));
        assert!(!tokio_timer(threshold + Duration::from_millis(999)));
        assert!(tokio_timer(threshold + Duration::from_secs(1)));
        assert!(!tokio_timer(Duration::from_secs(5)));
    }
}
