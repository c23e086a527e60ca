//! Blocking work of one kind, bounded: at most N at a time on tokio's blocking pool. Many
//! sessions doing the same blocking thing at once (a shutdown of 1000 removing their TMPDIRs,
//! 300 stops each scanning `/proc`) would otherwise each take a thread of their own — the pool
//! grows to 512 — where a few threads in turn do the same work as fast.

use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// A bound on one kind of blocking work (a `static`).
#[derive(Debug)]
pub struct Bounded {
    permits: Semaphore,
}

impl Bounded {
    /// At most `at_once` of this work at a time.
    pub const fn new(at_once: usize) -> Self {
        Self {
            permits: Semaphore::const_new(at_once),
        }
    }

    /// Runs `work` on the blocking pool once one of the places is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        // The semaphore is never closed: a place always comes.
        let _place = self.permits.acquire().await.ok();
        tokio::task::spawn_blocking(work).await
    }
}
