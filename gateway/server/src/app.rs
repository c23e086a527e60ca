//! App: the state every connection and request shares — the corral tree, tokens, metrics,
//! limits — and the gateway-level session operations that add what the gateway owns (hook
//! tokens and CORRAL_* variables in the environment, token revocation on removal).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use corral_actors::{Corral, SessionError, SessionHandle, SessionInfo, SessionSpec};
use corral_runtime::SupervisorRef;
use uuid::Uuid;

use crate::auth::{Grant, Tokens};
use crate::config::GatewayConfig;
use crate::metrics::Metrics;

/// How the server leaves (see `crate::upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// Stop every session, then exit (SIGTERM, SIGINT, `corral shutdown`).
    Stop,
    /// Exit, leaving sessions with holders running for the next server.
    KeepSessions,
    /// A successor is ready: leave as `KeepSessions`, closing WebSockets with 1012.
    Upgrade,
}

/// Shared server state.
pub struct App {
    /// The session tree.
    pub corral: Corral,
    /// Valid tokens.
    pub tokens: Tokens,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub config: GatewayConfig,
    /// Supervisor of client actors.
    pub clients: SupervisorRef,
    /// The server's base URL (for CORRAL_URL).
    pub url: String,
    /// Viewer ids for the resize policy.
    pub next_viewer: AtomicU64,
    /// The server's binary's path, read once at start: `corral upgrade` starts it by path, so
    /// a binary replaced on disk (a rebuild, an upgrade) is the one it runs, never a
    /// "(deleted)" one.
    pub exe: std::path::PathBuf,
    /// The binary agents' hooks run (`<hooks> hook`) by path, chosen by whoever starts the
    /// server (`corral_cli`: the `corral` beside `corrald`).
    pub hooks: std::path::PathBuf,
    /// The data dir (agents' hooks reach the server through its Unix socket, which every
    /// server of this data dir binds: their hooks keep working across restarts and upgrades).
    pub data_dir: std::path::PathBuf,
    /// Sessions whose notifications are muted.
    pub mutes: crate::mute::Mutes,
    /// Login codes outstanding (`POST /v1/login/code`, traded at `POST /v1/login`).
    pub login_codes: crate::login_code::LoginCodes,
    /// User messages posted through the agentapi endpoints.
    pub conversations: crate::conversation::Conversations,
    /// Live connections' figures (for `corral tree`).
    pub connections: crate::connections::Registry,
    /// When the server started.
    pub started: std::time::Instant,
    /// PermissionRequest hooks waiting for an answer, by session (see `crate::permission`).
    pub permissions: crate::permission::Waiting,
    /// Flips to true when the server shuts down: client actors, which spend their time awaiting
    /// their socket inside a handler (where a ractor stop cannot reach them), watch it to say
    /// goodbye with a close frame and end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Set when the server is asked to leave, and how (see `crate::upgrade`).
    pub leave: tokio::sync::watch::Sender<Option<Leaving>>,
    /// A successor is being started (`corral upgrade`): one at a time.
    pub upgrading: std::sync::atomic::AtomicBool,
    /// A duplicate of the TCP listener, for a successor to inherit (`corral upgrade`).
    pub listener: Option<std::os::fd::OwnedFd>,
    /// A duplicate of the data dir's Unix socket listener, for a successor to inherit.
    pub unix_listener: Option<std::os::fd::OwnedFd>,
    /// Spawns and removals running to their end whoever waits for them.
    pub in_flight: crate::in_flight::InFlight,
}

/// What an [`App`] is made of that its maker chooses; everything else starts empty. An
/// application that mounts corral's router (`routes::router`) in its own server makes its App
/// from these, as `serve` does (new fields of the App then do not break it).
pub struct AppParts {
    /// The session tree.
    pub corral: Corral,
    /// Valid tokens (`Tokens::new(admin)`, or with a token log).
    pub tokens: Tokens,
    /// Settings.
    pub config: GatewayConfig,
    /// The supervisor WebSocket connections run under.
    pub clients: SupervisorRef,
    /// The server's base URL, given to sessions as `CORRAL_URL`.
    pub url: String,
    /// The server's binary (`corral upgrade` starts it).
    pub exe: std::path::PathBuf,
    /// The binary agents' hooks run (`<hooks> hook`).
    pub hooks: std::path::PathBuf,
    /// The data dir (mutes, the hook spool, the Unix socket hooks reach).
    pub data_dir: std::path::PathBuf,
    /// Listeners a successor inherits (`corral upgrade`; None for an application's own).
    pub listeners: (Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>),
}

impl App {
    /// An App of `parts`, with no connection, question or conversation yet.
    pub fn new(parts: AppParts) -> App {
        App {
            mutes: crate::mute::Mutes::load(&parts.data_dir),
            login_codes: Default::default(),
            corral: parts.corral,
            tokens: parts.tokens,
            metrics: Metrics::default(),
            config: parts.config,
            clients: parts.clients,
            url: parts.url,
            next_viewer: AtomicU64::new(1),
            permissions: Default::default(),
            connections: Default::default(),
            conversations: Default::default(),
            hooks: parts.hooks,
            exe: parts.exe,
            data_dir: parts.data_dir,
            started: std::time::Instant::now(),
            shutdown: tokio::sync::watch::channel(false).0,
            leave: tokio::sync::watch::channel(None).0,
            upgrading: std::sync::atomic::AtomicBool::new(false),
            listener: parts.listeners.0,
            unix_listener: parts.listeners.1,
            in_flight: Default::default(),
        }
    }

    /// The close frame WebSockets get when the server leaves: 1012 when a successor takes
    /// over (clients reconnect and resume), 1001 otherwise.
    pub fn closing(&self) -> (u16, &'static str) {
        match *self.leave.borrow() {
            Some(Leaving::Upgrade) => (1012, "server restarting"),
            _ => (1001, "server shutting down"),
        }
    }
}

impl App {
    /// Spawns a session with a hook token and `CORRAL_URL` / `CORRAL_DATA_DIR` /
    /// `CORRAL_HOOK_TOKEN` in its env.
    ///
    /// It starts now and runs to its end whether or not the answer is awaited (see
    /// `crate::in_flight`).
    pub fn spawn(
        self: &Arc<Self>,
        spec: SessionSpec,
    ) -> impl Future<Output = Result<SessionHandle, SessionError>> + Send + 'static {
        let app = self.clone();
        let answer = self
            .in_flight
            .start(async move { app.spawn_now(spec).await });
        async move {
            answer
                .await
                .unwrap_or_else(|| Err(SessionError::Unavailable("the spawn failed inside".into())))
        }
    }

    async fn spawn_now(&self, mut spec: SessionSpec) -> Result<SessionHandle, SessionError> {
        let id = Uuid::new_v4();
        let hook = self
            .tokens
            .issue(Grant::Hook(id))
            .map_err(|e| SessionError::Unsupported(e.to_string()))?;
        spec.env.retain(|(k, _)| {
            k != "CORRAL_URL" && k != "CORRAL_HOOK_TOKEN" && k != "CORRAL_DATA_DIR"
        });
        spec.env.push(("CORRAL_URL".into(), self.url.clone()));
        spec.env.push((
            "CORRAL_DATA_DIR".into(),
            self.data_dir.display().to_string(),
        ));
        spec.env.push(("CORRAL_HOOK_TOKEN".into(), hook));
        // Hooks call this very binary by its absolute path (never whatever `corral` is on PATH,
        // and never a command a client sent).
        spec.hook_command = None;
        if spec.agent.is_some() {
            spec.hook_command = Some(vec![self.hooks.display().to_string(), "hook".into()]);
        }
        let result = self.corral.sessions().spawn_with_id(id, spec).await;
        if result.is_err() {
            // A new id has its hook token only (kept in memory, never recorded): revoking it
            // touches no file, so it may run here, on a worker.
            self.tokens.revoke_session(id);
        }
        result
    }

    /// Stops and forgets a session, revoking its tokens (recorded in the token log, off the
    /// runtime's workers).
    /// It starts now and runs to its end whether or not the answer is awaited (see
    /// `crate::in_flight`).
    pub fn remove(
        self: &Arc<Self>,
        key: &str,
    ) -> impl Future<Output = Result<SessionInfo, SessionError>> + Send + 'static {
        let (app, key) = (self.clone(), key.to_string());
        let answer = self
            .in_flight
            .start(async move { app.remove_now(&key).await });
        async move {
            answer.await.unwrap_or_else(|| {
                Err(SessionError::Unavailable(
                    "the removal failed inside".into(),
                ))
            })
        }
    }

    async fn remove_now(self: &Arc<Self>, key: &str) -> Result<SessionInfo, SessionError> {
        let info = self.corral.sessions().remove(key).await?;
        let (app, id) = (self.clone(), info.id);
        self.conversations.forget(id);
        if let Err(e) = tokio::task::spawn_blocking(move || app.tokens.revoke_session(id)).await {
            tracing::error!(session = %id, error = %e, "revoking the session's tokens failed");
        }
        Ok(info)
    }
}
