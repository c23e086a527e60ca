//! In flight: the session requests a server accepted (a spawn, a removal) run to their end even
//! when their client stops waiting — hyper drops an HTTP handler whose client hung up, and a
//! spawn dropped halfway left its session running but out of the registry, seen by no `ps`.
//!
//! Each such request runs as a task of this set, owned by the server's `App`, started when the
//! request is read: the caller awaits its answer, and leaving early (or never awaiting, as a
//! WebSocket connection that closes with requests queued) only means nobody reads it. Finished tasks are reaped
//! as new ones start (the set never holds more than the requests running, plus the finished
//! ones since the last start), and the server waits for what is still running before it stops
//! its sessions ([`InFlight::drain`]).

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinSet;

/// The requests running to their end.
#[derive(Debug, Default)]
pub struct InFlight {
    set: Mutex<JoinSet<()>>,
}

impl InFlight {
    /// Starts `request` now (whether or not the answer is ever awaited) and returns its answer
    /// to come; `None` only if it panicked.
    pub fn start<T: Send + 'static>(
        &self,
        request: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut set = self.set.lock();
            while let Some(done) = set.try_join_next() {
                joined(done);
            }
            set.spawn(async move {
                if tx.send(request.await).is_err() {
                    tracing::debug!("a request finished after its client left");
                }
            });
        }
        async move { rx.await.ok() }
    }

    /// Waits up to `bound` for the requests still running (the server is stopping).
    pub async fn drain(&self, bound: Duration) {
        let mut set = std::mem::take(&mut *self.set.lock());
        let left = set.len();
        let all = async {
            while let Some(done) = set.join_next().await {
                joined(done);
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!(
                left,
                "requests still running when the server stopped; aborted"
            );
            set.abort_all();
        }
    }
}

/// A finished request's end: a panic is logged (its client, if still there, got no answer).
fn joined(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a request's task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_whose_caller_left_still_runs_to_its_end() {
        let in_flight = InFlight::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let call = in_flight.start(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            done_tx.send(()).is_ok()
        });
        // The caller gives up at once.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), call)
                .await
                .is_err()
        );
        in_flight.drain(Duration::from_secs(5)).await;
        assert_eq!(done_rx.await, Ok(()), "it ran to its end");
        assert_eq!(in_flight.start(async { 7 }).await, Some(7));
        // Started when asked, not when awaited: a caller that never awaits still gets it done.
        let (tx, rx) = tokio::sync::oneshot::channel();
        drop(in_flight.start(async move { tx.send(()).is_ok() }));
        assert_eq!(rx.await, Ok(()));
    }
}
