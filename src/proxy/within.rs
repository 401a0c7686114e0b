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
use std::task::Poll;
use std::time::Duration;

/// Runs `future` to completion unless it is still waiting `limit()` after it
/// first had to wait: `None` then. `limit` is only called when the future
/// does not complete on its first poll.
pub async fn within<F, L>(limit: L, future: F) -> Option<F::Output>
where
    F: Future,
    L: FnOnce() -> Duration,
{
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await;
    match first {
        Some(output) => Some(output),
        None => pingora::prelude::timeout(limit(), future).await.ok(),
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
