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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Twenty jobs given at once to a bound of 3: never more than 3 run together, all run.
    #[tokio::test]
    async fn no_more_than_the_bound_runs_at_once() {
        static BOUND: Bounded = Bounded::new(3);
        let (now, peak, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let jobs = (0..20).map(|_| {
            let (now, peak, done) = (now.clone(), peak.clone(), done.clone());
            BOUND.run(move || {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            })
        });
        for r in futures::future::join_all(jobs).await {
            r.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 20);
        let peak = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "{peak} at once");
    }
}
