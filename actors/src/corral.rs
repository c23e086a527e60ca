//! Corral: the actor tree of the session domain, started with one call, standalone (`corral
//! serve`) or linked under a host application's actor (embedding).
//!
//! ```text
//! corral (root Supervisor, one_for_one)
//! ├── reaper      permanent: reaps zombies handed over (and orphans, in subreaper mode)
//! └── sessions    dynamic supervisor; one temporary child per session
//! ```
//!
//! Graceful shutdown is [`Corral::shutdown`]: every session is stopped concurrently with its own
//! grace, then the tree stops in reverse order. A host that embeds corral calls it from its own
//! `post_stop`, or runs corral under a corral-runtime Supervisor, whose ordered stop does the
//! same (a plain ractor parent *kills* its children, which skips the grace: sessions are then
//! killed by their Drop, still without leaks).

use std::time::Duration;

use corral_runtime::{
    ChildSpec, Restart, Shutdown, Strategy, Supervisor, SupervisorError, SupervisorRef,
    SupervisorSpec, TreeNode,
};
use ractor::ActorCell;

use crate::manager::{Sessions, SessionsConfig};
use crate::process::reaper::Reaper;

/// Settings of the whole tree.
#[derive(Debug, Clone, Default)]
pub struct CorralConfig {
    /// Session layer settings.
    pub sessions: SessionsConfig,
    /// Become the child subreaper of this process (orphans of sessions reparent to us and are
    /// reaped). Right for `corral serve`; an embedding host decides for itself, because the
    /// reaper then also reaps orphans that are not corral's.
    pub subreaper: bool,
}

/// A running corral tree.
#[derive(Clone)]
pub struct Corral {
    /// The root supervisor.
    root: SupervisorRef,
    /// The session API.
    sessions: Sessions,
}

impl Corral {
    /// Starts the tree standalone.
    pub async fn start(config: CorralConfig) -> Result<Corral, SupervisorError> {
        Self::start_inner(config, None).await
    }

    /// Starts the tree linked under `host`, which receives the root's supervision events.
    pub async fn start_linked(
        config: CorralConfig,
        host: ActorCell,
    ) -> Result<Corral, SupervisorError> {
        Self::start_inner(config, Some(host)).await
    }

    async fn start_inner(
        config: CorralConfig,
        host: Option<ActorCell>,
    ) -> Result<Corral, SupervisorError> {
        if config.subreaper
            && let Err(e) = crate::process::reaper::enable_subreaper()
        {
            tracing::warn!(error = %e, "could not become child subreaper; orphans go to init");
        }
        let spec = SupervisorSpec::new("corral")
            .strategy(Strategy::OneForOne)
            .child(
                ChildSpec::actor("reaper", || (Reaper, ()))
                    .shutdown(Shutdown::Timeout(Duration::from_secs(1))),
            );
        let (root, _) = match host {
            Some(h) => Supervisor::start_linked(spec, h).await,
            None => Supervisor::start(spec).await,
        }
        .map_err(|e| SupervisorError::StartFailed {
            id: "corral".into(),
            reason: e.to_string(),
        })?;
        let sessions_spec = SupervisorSpec::new("sessions")
            .max_children(config.sessions.max_sessions)
            // A session actor is temporary; nothing restarts here, the intensity is moot.
            .intensity(1, Duration::from_secs(5));
        let cell = root
            .start_child(
                Supervisor::child_spec("sessions", sessions_spec).restart(Restart::Transient),
            )
            .await?;
        let sessions = Sessions::new(SupervisorRef::from_cell(cell), config.sessions);
        Ok(Corral { root, sessions })
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

    /// Stops every session gracefully (concurrently, each with its grace), then the tree.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        self.sessions.stop_all().await;
        self.root.stop(None).await
    }
}
