//! Corral: the actor tree of the session domain, started with one call, standalone (`corral
//! serve`) or linked under a host application's actor (embedding).
//!
//! ```text
//! corral (root Supervisor, one_for_one)
//! ├── persister   permanent, first started, last stopped: state.db and scrollback (optional)
//! ├── reaper      permanent: reaps zombies handed over (and orphans, in subreaper mode)
//! ├── sessions    dynamic supervisor; one temporary child per session
//! └── janitor     permanent (with persistence): removes ended sessions past retention
//! ```
//!
//! With persistence configured, the start ends with boot reconciliation ([`crate::recovery`]):
//! the sessions of the previous run come back before `start` returns.
//!
//! Graceful shutdown is [`Corral::shutdown`]: every session is stopped concurrently with its own
//! grace (and recorded as interrupted, so the next boot starts it again per its policy), then
//! the tree stops in reverse order, the persister last. A host that embeds corral calls it from its own
//! `post_stop`, or runs corral under a corral-runtime Supervisor, whose ordered stop does the
//! same (its sessions, temporary children, are stopped at once; a plain ractor parent *kills*
//! its children, which skips the grace: sessions are then killed by their Drop and their main
//! processes reaped, still without leaks). A host process that ends without unwinding runs no
//! Drop: see docs/embedding.md.

use std::time::Duration;

use corral_runtime::{
    ChildSpec, Restart, Shutdown, Strategy, Supervisor, SupervisorError, SupervisorRef,
    SupervisorSpec, TreeNode,
};
use ractor::ActorCell;

use crate::janitor::Janitor;
use crate::manager::{Sessions, SessionsConfig};
use crate::persist::{Persist, PersistConfig, Persister};
use crate::process::reaper::Reaper;
use crate::recovery::{self, RecoveryReport};

/// Why a corral tree did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its persistence could not open the data dir: another process holds it
    /// ([`crate::persist::PersistError::InUse`], naming that process), or its database or
    /// files failed.
    #[error(transparent)]
    Persist(#[from] crate::persist::PersistError),
    /// A child of the tree did not start.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// Settings of the whole tree.
#[derive(Debug, Clone, Default)]
pub struct CorralConfig {
    /// Session layer settings.
    pub sessions: SessionsConfig,
    /// Become the child subreaper of this process (orphans of sessions reparent to us and are
    /// reaped). Right for `corral serve`; an embedding host decides for itself, because the
    /// reaper then also reaps orphans that are not corral's.
    pub subreaper: bool,
    /// Persist sessions, events and scrollback here, and reconcile at start (None: in memory
    /// only; sessions end with the tree, and with a process that unwinds).
    pub persist: Option<PersistConfig>,
}

/// A running corral tree.
#[derive(Clone)]
pub struct Corral {
    /// The root supervisor.
    root: SupervisorRef,
    /// The session API.
    sessions: Sessions,
    /// What boot reconciliation did (with persistence).
    recovery: Option<std::sync::Arc<RecoveryReport>>,
    /// Resolves when the root supervisor's task has ended (see [`Corral::failed`]).
    root_ended: RootEnded,
}

/// The root supervisor's end, awaitable from every clone of [`Corral`].
type RootEnded = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

impl std::fmt::Debug for Corral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corral")
            .field("sessions", &self.sessions)
            .field("recovered", &self.recovery.is_some())
            .finish_non_exhaustive()
    }
}

impl Corral {
    /// Starts the tree standalone.
    pub async fn start(config: CorralConfig) -> Result<Corral, StartError> {
        Self::start_inner(config, None).await
    }

    /// Starts the tree linked under `host`, which receives the root's supervision events.
    pub async fn start_linked(config: CorralConfig, host: ActorCell) -> Result<Corral, StartError> {
        Self::start_inner(config, Some(host)).await
    }

    async fn start_inner(
        config: CorralConfig,
        host: Option<ActorCell>,
    ) -> Result<Corral, StartError> {
        if config.subreaper
            && let Err(e) = crate::process::reaper::enable_subreaper()
        {
            tracing::warn!(error = %e, "could not become child subreaper; orphans go to init");
        }
        let (persist, thread): (Option<Persist>, _) = match &config.persist {
            Some(pc) => {
                let (p, t) = Persister::start_thread(pc.clone()).await?;
                (Some(p), Some(t))
            }
            None => (None, None),
        };
        let mut spec = SupervisorSpec::new("corral").strategy(Strategy::OneForOne);
        if let Some(p) = &persist {
            let p = p.clone();
            let thread = std::sync::Arc::new(parking_lot::Mutex::new(thread));
            spec = spec.child(
                ChildSpec::actor("persister", move || {
                    (Persister, (p.clone(), thread.clone()))
                })
                .shutdown(Shutdown::Timeout(Duration::from_secs(10))),
            );
        }
        let spec = spec.child(
            ChildSpec::actor("reaper", || (Reaper, ()))
                .shutdown(Shutdown::Timeout(Duration::from_secs(1))),
        );
        let (root, root_task) = match host {
            Some(h) => Supervisor::start_linked(spec, h).await,
            None => Supervisor::start(spec).await,
        }
        .map_err(|e| SupervisorError::StartFailed {
            id: "corral".into(),
            reason: e.to_string(),
        })?;
        let root_ended: RootEnded = {
            use futures::FutureExt;
            // The task's result says nothing more than that it ended (a supervisor's own
            // panic is caught and logged by ractor); what ended it is in the log.
            root_task.map(|_| ()).boxed().shared()
        };
        let sessions_spec = SupervisorSpec::new("sessions")
            // The bound is `Sessions`'s to apply, the only way in: it refuses a new session
            // past `max_sessions` but must admit every restored one (a running agent left out
            // would run on unseen), so the supervisor adds no second, blind bound.
            .max_children(usize::MAX)
            // A session actor is temporary; nothing restarts here, the intensity is moot.
            .intensity(1, Duration::from_secs(5));
        let cell = root
            .start_child(
                Supervisor::child_spec("sessions", sessions_spec).restart(Restart::Transient),
            )
            .await?;
        let sessions = Sessions::with_persist(
            SupervisorRef::from_cell(cell),
            config.sessions,
            persist.clone(),
        );
        let recovery = match &persist {
            Some(p) => match recovery::reconcile(&sessions, p).await {
                Ok(report) => {
                    let janitor = (sessions.clone(), p.config().ended);
                    root.start_child(
                        ChildSpec::actor("janitor", move || (Janitor, janitor.clone()))
                            .shutdown(Shutdown::Timeout(Duration::from_secs(1))),
                    )
                    .await?;
                    Some(std::sync::Arc::new(report))
                }
                Err(reason) => {
                    let corral = Corral {
                        root,
                        sessions,
                        recovery: None,
                        root_ended,
                    };
                    if let Err(e) = corral.shutdown().await {
                        tracing::warn!(error = %e, "tree stopped after a failed recovery");
                    }
                    return Err(reason.into());
                }
            },
            None => None,
        };
        Ok(Corral {
            root,
            sessions,
            recovery,
            root_ended,
        })
    }

    /// What boot reconciliation did (None without persistence).
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.recovery.as_deref()
    }

    /// The persister's API (None without persistence).
    pub fn persist(&self) -> Option<&Persist> {
        self.sessions.persist()
    }

    /// The session API.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The root supervisor.
    pub fn root(&self) -> &SupervisorRef {
        &self.root
    }

    /// A snapshot of the whole tree.
    pub async fn tree(&self) -> Result<TreeNode, SupervisorError> {
        self.root.tree().await
    }

    /// Waits until the tree can no longer serve, and says why: its root supervisor stopped
    /// (a child kept failing past the root's restart intensity, OTP's escalation: the root
    /// stopped the rest of the tree first), or the persister's thread ended (it cannot restart
    /// in place). Never while the tree is fine; after [`shutdown`](Self::shutdown) it resolves
    /// too, so a caller races it against its own reasons to stop. `corral serve` leaves on it
    /// with a non-zero exit, as if it had crashed: held sessions stay with their holders and
    /// the next start reconciles.
    pub async fn failed(&self) -> String {
        let thread = async {
            match self.sessions.persist() {
                Some(p) => p.thread_ended().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.root_ended.clone() => "the root supervisor stopped".into(),
            how = thread => format!("the persister's thread {how}"),
        }
    }

    /// Stops every session gracefully (concurrently, each with its grace), then the tree.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        self.sessions.shutdown().await;
        self.root.stop(None).await
    }

    /// Stops the tree but leaves every session that has a holder running under it, for the
    /// next server to reattach (an upgrade, `corral shutdown --keep-sessions`); sessions
    /// without one stop as at [`shutdown`](Self::shutdown). Returns how many were kept.
    pub async fn shutdown_keeping_sessions(&self) -> Result<usize, SupervisorError> {
        let kept = self.sessions.detach_all().await;
        self.root.stop(None).await?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not resolved within `wait`.
    async fn pending(failed: impl std::future::Future<Output = String>, wait: Duration) -> bool {
        tokio::time::timeout(wait, failed).await.is_err()
    }

    #[tokio::test]
    async fn failed_says_when_the_root_gave_up_on_a_child() {
        let corral = Corral::start(CorralConfig::default()).await.expect("start");
        assert!(
            pending(corral.failed(), Duration::from_millis(200)).await,
            "a fine tree has not failed"
        );
        // A child killed twice within the root's intensity (one restart in 5 s): the first is
        // restarted, the second makes the root stop the rest and itself (OTP's escalation).
        for kill in 0..2 {
            let child = loop {
                match corral.root().cell().get_children().into_iter().next() {
                    Some(c) => break c,
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            };
            child.kill();
            if kill == 0 {
                assert!(
                    pending(corral.failed(), Duration::from_millis(200)).await,
                    "one restart is within the intensity"
                );
            }
        }
        let why = tokio::time::timeout(Duration::from_secs(5), corral.failed())
            .await
            .expect("the root gave up");
        assert_eq!(why, "the root supervisor stopped");
    }

    #[tokio::test]
    async fn failed_says_when_the_persister_thread_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let corral = Corral::start(CorralConfig {
            persist: Some(PersistConfig::new(dir.path())),
            ..Default::default()
        })
        .await
        .expect("start");
        assert!(
            pending(corral.failed(), Duration::from_millis(200)).await,
            "a fine tree has not failed"
        );
        // The thread ends as only the tree's stop should end it; the tree itself runs on.
        let persist = corral.persist().expect("persistence").clone();
        persist
            .request(crate::persist::journal::Op::Close)
            .await
            .expect("closed");
        let why = tokio::time::timeout(Duration::from_secs(5), corral.failed())
            .await
            .expect("the thread's end is seen");
        assert_eq!(why, "the persister's thread closed");
        corral.shutdown().await.expect("shutdown");
    }
}
