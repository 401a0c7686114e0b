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
//! Owns: that first poll. Does not own the limits themselves (`[server]` and
//! `[upstreams]` settings, read by the callers).

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
    }
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
    }
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
                this.delay.insert(Box::pin(pingora::prelude::sleep(limit)))
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
}
