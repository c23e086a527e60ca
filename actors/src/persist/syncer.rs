//! The syncer: a second thread that `fdatasync`s the scrollback logs on the persister's behalf
//! (a sealed segment, and every log written to within the last second), on dup'd file
//! handles, so a flush to disk (tens of milliseconds) never stalls the copying (`writer.rs`:
//! 100 sessions writing at once lost 16 % of their output to gaps with inline syncs). A flush
//! request is answered after the syncs queued before it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Receiver;

use super::journal::{Feed, PersistStats};

/// Work for the syncer thread.
pub(super) enum SyncJob {
    /// `fdatasync` this file of this session's log.
    Sync(Arc<Feed>, std::fs::File),
    /// Answer once every job before this one is done.
    Done(tokio::sync::oneshot::Sender<()>),
}

/// Bound on queued sync jobs (a full queue skips a periodic sync, which the next round redoes;
/// a skipped seal sync is counted as a segment error).
pub(super) const SYNC_QUEUE: usize = 4096;

/// The syncer thread's loop.
pub(super) fn run(jobs: Receiver<SyncJob>, stats: Arc<PersistStats>) {
    for job in jobs {
        match job {
            SyncJob::Sync(shared, file) => {
                if let Err(e) = file.sync_data() {
                    stats.segment_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(session = %shared.id, error = %e, "scrollback fdatasync failed");
                    let msg = format!("scrollback fdatasync failed: {e}");
                    shared.set_persist_error(Some(msg.clone()));
                    stats.set_error(Some(msg));
                }
            }
            SyncJob::Done(reply) => {
                if reply.send(()).is_err() {
                    tracing::debug!("a flush's caller stopped waiting");
                }
            }
        }
    }
}
