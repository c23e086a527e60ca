//! Janitor: applies the retention of ended sessions while the server runs (boot reconciliation
//! applies it at start), so a long-lived server's data dir stays bounded too. A permanent child of
//! the corral root, after `sessions`; it ticks every [`JANITOR_PERIOD`] through a ractor interval
//! timer that the actor owns (aborted when it stops).

use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::manager::Sessions;
use crate::persist::EndedRetention;

/// How often ended sessions are checked against the retention rules.
pub const JANITOR_PERIOD: Duration = Duration::from_secs(60);

/// The actor.
pub struct Janitor;

/// Its state.
pub struct JanitorState {
    /// The sessions it tends.
    sessions: Sessions,
    /// The rules.
    rules: EndedRetention,
    /// The interval timer.
    timer: JoinHandle<()>,
}

impl Drop for JanitorState {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// A retention pass.
pub struct Sweep;

impl Actor for Janitor {
    type Msg = Sweep;
    type State = JanitorState;
    type Arguments = (Sessions, EndedRetention);

    async fn pre_start(
        &self,
        myself: ActorRef<Sweep>,
        (sessions, rules): Self::Arguments,
    ) -> Result<JanitorState, ActorProcessingErr> {
        let timer = myself.send_interval(JANITOR_PERIOD, || Sweep);
        Ok(JanitorState {
            sessions,
            rules,
            timer,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Sweep>,
        _: Sweep,
        st: &mut JanitorState,
    ) -> Result<(), ActorProcessingErr> {
        let removed = st.sessions.collect_ended(st.rules).await;
        if !removed.is_empty() {
            tracing::info!(removed = removed.len(), "retention removed ended sessions");
        }
        Ok(())
    }
}
