//! Sessions: the public API over every session (for the gateway and for embedding). Sessions are
//! temporary children of a dynamic corral-runtime Supervisor (the simple_one_for_one use); this
//! type adds the O(1) indexes by id and by name and the typed operations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_runtime::{ChildSpec, Restart, Ring, Shutdown, SupervisorRef};
use parking_lot::RwLock;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::SessionError;
use crate::event::SessionEvent;
use crate::handle::{CALL_TIMEOUT, SessionHandle};
use crate::persist::journal::{Op, SessionRecord};
use crate::persist::{Persist, store};
use crate::session::{Begin, Session, SessionArgs, SessionInfo, SessionMsg, SessionShared};
use crate::spec::SessionSpec;

mod admission;
mod restore;

use admission::{Admission, Registry, Reserved};
use restore::Restored;

/// The shortest start of an id that names a session (the 8 characters `corral ps` shows): with
/// 4, `rm 5aee` retried after it removed the session named `5aee` removed another whose id
/// happened to start so. A shorter key is only ever a name.
pub(crate) const ID_PREFIX_MIN: usize = 8;

/// Settings of the session layer.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Where private TMPDIRs are created.
    pub tmp_root: PathBuf,
    /// Bound on the sessions in the registry that a spawn is refused past (default 4096);
    /// sessions restored at boot are admitted whatever it is (see `Admission`).
    pub max_sessions: usize,
    /// Capacity of the all-sessions event stream.
    pub event_capacity: usize,
    /// Holders for PTY sessions, so they outlive the server (`corral serve` sets this; None:
    /// the server holds every PTY itself and its sessions end with it).
    pub holders: Option<crate::holder::Holders>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            tmp_root: std::env::temp_dir(),
            max_sessions: 4096,
            event_capacity: 4096,
            holders: None,
        }
    }
}

/// Longest `spawn` waits for the process to start (generous: a burst of a thousand spawns on
/// two cores queues behind fork+exec).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a session's start waits for room in the persister's queue for its attach: the queue
/// holds 65,536 operations (`persist::journal`'s bound), so a full one is a stuck persister,
/// not a burst.
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// Every session, with O(1) lookups by id and by name.
#[derive(Clone)]
pub struct Sessions {
    /// The dynamic supervisor sessions run under.
    supervisor: SupervisorRef,
    /// Indexes.
    registry: Arc<RwLock<Registry>>,
    /// Settings.
    config: Arc<SessionsConfig>,
    /// Events of every session.
    events: broadcast::Sender<SessionEvent>,
    /// The persister, when sessions are persisted.
    persist: Option<Persist>,
    /// Set when the sessions are being shut down or left: a spawn is refused from then on.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("len", &self.len())
            .field("persisted", &self.persist.is_some())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions that run under `supervisor` (a dynamic supervisor: no static children).
    pub fn new(supervisor: SupervisorRef, config: SessionsConfig) -> Self {
        Self::with_persist(supervisor, config, None)
    }

    /// Like [`new`](Self::new), recording every session, event and output byte with `persist`.
    pub fn with_persist(
        supervisor: SupervisorRef,
        config: SessionsConfig,
        persist: Option<Persist>,
    ) -> Self {
        let events = broadcast::channel(config.event_capacity.max(1)).0;
        Self {
            supervisor,
            registry: Default::default(),
            config: Arc::new(config),
            events,
            persist,
            closing: Default::default(),
        }
    }

    /// The persister, when sessions are persisted.
    pub fn persist(&self) -> Option<&Persist> {
        self.persist.as_ref()
    }

    /// Where sessions' private TMPDIRs are made.
    pub(crate) fn tmp_root(&self) -> &std::path::Path {
        &self.config.tmp_root
    }

    /// Where PTY sessions' holders live, when they have holders.
    pub fn holders(&self) -> Option<&crate::holder::Holders> {
        self.config.holders.as_ref()
    }

    /// The supervisor sessions run under.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.supervisor
    }

    /// Events of every session.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Starts a session; its process is running when this returns.
    pub async fn spawn(&self, spec: SessionSpec) -> Result<SessionHandle, SessionError> {
        self.spawn_with_id(Uuid::new_v4(), spec).await
    }

    /// Like [`spawn`](Self::spawn) with an id chosen by the caller (e.g. to issue a hook token
    /// for the session before its process starts, or to keep the id across a server restart).
    pub async fn spawn_with_id(
        &self,
        id: Uuid,
        spec: SessionSpec,
    ) -> Result<SessionHandle, SessionError> {
        let name = admission::check_spec(id, &spec)?;
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(SessionError::Unavailable(
                "shutting down: no new session is started".into(),
            ));
        }
        if spec.name.is_some() {
            admission::check_new_name(&name)?;
        }
        admission::check_new_environment(&spec)?;
        // Admission first: a spawn refused (its name taken, too many sessions) must leave no
        // record, or the next boot finds two sessions of one name.
        let reserved = self.reserve(id, &name, Admission::New)?;
        let ring = Ring::new(spec.ring_capacity);
        let recorded = self.persist.as_ref().map(|p| {
            p.create(SessionRecord {
                id,
                name: name.clone(),
                spec: spec.clone(),
                row: crate::persist::SessionRow {
                    state: crate::event::SessionState::Starting,
                    reason: None,
                    process: None,
                    restarts: 0,
                    last_exit: None,
                    agent_session_id: None,
                    agent_transcript: None,
                    agent_prompted: false,
                    interrupted: false,
                    removing: false,
                    stop_grace: None,
                    last_seq: 0,
                },
                created_ms: store::now_ms(),
                ended_ms: None,
            })
        });
        let handle = self
            .register(reserved, spec, ring, None, Begin::Start)
            .await?;
        // Answered once it is in the registry: a server SIGKILLed right after a spawn it
        // acknowledged must not leave the next one a holder it has no record of (it would end
        // that session). A commit is a write to the WAL, no sync: ~0.1 ms, and the record was
        // queued before the process started, so it is usually committed by now (no round trip
        // to the persister: 136 µs of a spawn's ~730, docs/performance.md, session 35). A
        // registry that cannot take it does not fail the spawn (the program runs; the error is
        // in every session's status and the record is retried).
        if let Some(p) = &self.persist {
            let committed = match recorded.flatten() {
                Some(c) if c.is_set() => Ok(()),
                Some(_) => p.committed().await,
                None => Err(crate::persist::PersistError::Data(
                    "the persister's queue did not take the record".into(),
                )),
            };
            if let Err(e) = committed {
                tracing::warn!(session = %id, error = %e, "spawned, but not yet in the registry: a crash now would lose the session");
                // Said with the session (its spawn's answer, `ps`), not only in the server's log;
                // the next write that succeeds clears it.
                handle.shared().feed.set_persist_error(Some(format!(
                    "not in the registry yet ({e}): a server crash now would lose this session"
                )));
            }
        }
        Ok(handle)
    }

    /// Starts the actor of a reserved session and indexes its handle.
    async fn register(
        &self,
        reserved: Reserved,
        spec: SessionSpec,
        ring: Ring,
        restored: Option<Restored>,
        begin: Begin,
    ) -> Result<SessionHandle, SessionError> {
        let (id, name) = (reserved.id, reserved.name.clone());
        let result = self
            .start_actor(id, name.clone(), spec, ring, restored, begin)
            .await;
        let handle = match result {
            Ok(h) => h,
            Err(e) => {
                if begin == Begin::Start
                    && let Some(p) = &self.persist
                {
                    // A spawn that failed never existed for the caller: no record stays.
                    if !p.remove(id) {
                        tracing::warn!(session = %id, "a failed spawn's record stays: the registry's queue did not take its deletion");
                    }
                }
                return Err(e);
            }
        };
        let mut reg = self.registry.write();
        reserved.settle(&mut reg);
        reg.by_name.insert(name, id);
        reg.by_id.insert(id, handle.clone());
        Ok(handle)
    }

    async fn start_actor(
        &self,
        id: Uuid,
        name: String,
        spec: SessionSpec,
        ring: Ring,
        restored: Option<Restored>,
        begin: Begin,
    ) -> Result<SessionHandle, SessionError> {
        let shared = SessionShared::new(
            id,
            name,
            &spec,
            ring,
            Some(self.events.clone()),
            self.persist.as_ref().map(|p| p.journal().clone()),
        );
        let mut carry = Some(Vec::new());
        let mut sizes = Vec::new();
        if let Some(Restored {
            row,
            decision,
            ended_ms,
            recent,
            lines,
            carry: line,
            sizes: then,
        }) = restored
        {
            sizes = then;
            shared.restore(&row, ended_ms);
            crate::agent::replay(&shared, &recent);
            for events in lines {
                crate::session::lines::emit(&shared, events);
            }
            carry = line;
            if let Some(decision) = decision {
                shared.emit(crate::event::EventKind::Recovery { decision });
            }
        }
        if let Some(p) = &self.persist {
            // Without its attach the persister never reads this session's output, and a reader
            // paced by the log would wait for it forever: a session that cannot be logged does
            // not start (a full queue means the persister is stuck; the wait is bounded).
            p.journal()
                .send_waiting(Op::Attach(shared.feed.clone()), ATTACH_WAIT)
                .await
                .map_err(|e| {
                    SessionError::Unavailable(format!("the session's log cannot be kept: {e}"))
                })?;
        }
        let tmp_root = self.config.tmp_root.clone();
        let grace = spec.grace;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let args = Arc::new(parking_lot::Mutex::new(Some(SessionArgs {
            shared: shared.clone(),
            spec,
            tmp_root,
            started: Some(started_tx),
            begin,
            holders: self.config.holders.clone(),
            carry,
            sizes,
        })));
        // Temporary: a session restarts its *process* itself; if the actor dies, the session
        // is over (its Drop killed the tree) and shows Failed.
        let child = ChildSpec::new(id.to_string(), move |sup| {
            let args = args.lock().take();
            async move {
                let args = args.ok_or_else(|| {
                    ractor::SpawnErr::StartupFailed("session arguments already used".into())
                })?;
                let (r, _) = Actor::spawn_linked(None, Session, args, sup).await?;
                Ok(r.get_cell().into())
            }
        })
        .restart(Restart::Temporary)
        .shutdown(Shutdown::Timeout(grace + Duration::from_secs(3)));
        let cell = self
            .supervisor
            .start_child(child)
            .await
            .map_err(|e| match e {
                corral_runtime::SupervisorError::StartFailed { reason, .. } => {
                    // The actor's own `SessionError::Spawn`, said once (its Display opens with
                    // this already: "could not start the process: could not start the …").
                    let said = "could not start the process: ";
                    SessionError::Spawn(
                        reason
                            .strip_prefix(said)
                            .map_or(reason.clone(), str::to_string),
                    )
                }
                corral_runtime::SupervisorError::TooManyChildren { max } => {
                    SessionError::TooMany { max, ended: 0 }
                }
                other => SessionError::Unavailable(other.to_string()),
            })?;
        // The process starts in the session's post_start; wait for its outcome.
        let outcome = tokio::time::timeout(START_TIMEOUT, started_rx).await;
        let failure = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e),
            Ok(Err(_)) => Some(SessionError::Spawn("session ended before starting".into())),
            Err(_) => Some(SessionError::Unavailable("process start timed out".into())),
        };
        if let Some(e) = failure {
            if let Err(rm) = self.supervisor.remove_child(&id.to_string()).await {
                tracing::debug!(session = %id, error = %rm, "failed session already gone");
            }
            return Err(e);
        }
        Ok(SessionHandle {
            shared,
            actor: ActorRef::from(cell),
        })
    }

    /// Finds a session by id, name, or the start of its id (at least the 8 characters `corral
    /// ps` shows, naming one session); a key that is one session's name and the start of
    /// another's id names neither.
    pub fn get(&self, key: &str) -> Result<SessionHandle, SessionError> {
        let reg = self.registry.read();
        let named = match Uuid::parse_str(key) {
            Ok(id) => {
                return reg
                    .by_id
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SessionError::NotFound(key.to_string()));
            }
            Err(_) => reg.by_name.get(key).copied(),
        };
        // The start of an id, as `corral ps` shows it (8 hex digits), when it names one
        // session.
        let by_prefix = |reg: &Registry| -> Vec<Uuid> {
            if key.len() < ID_PREFIX_MIN || !key.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            {
                return Vec::new();
            }
            let key_lower = key.to_ascii_lowercase();
            reg.by_id
                .keys()
                .filter(|id| id.to_string().starts_with(&key_lower))
                .take(2)
                .copied()
                .collect()
        };
        if let Some(h) = named.and_then(|id| reg.by_id.get(&id)) {
            // A name that is also the start of another session's id (an id copied from `ps`
            // would reach the session of that name: `rm` the wrong one) names neither.
            if by_prefix(&reg).iter().any(|id| Some(*id) != named) {
                return Err(SessionError::BadInput(format!(
                    "'{key}' is the name of one session and the start of another's id: give the whole id"
                )));
            }
            return Ok(h.clone());
        }
        {
            let prefixed = by_prefix(&reg);
            let mut found = prefixed
                .iter()
                .filter_map(|id| reg.by_id.get(id).map(|h| (id, h)));
            match (found.next(), found.next()) {
                (Some((_, h)), None) => return Ok(h.clone()),
                (Some(_), Some(_)) => {
                    return Err(SessionError::BadInput(format!(
                        "'{key}' starts the ids of more than one session: give more of it, or the name"
                    )));
                }
                _ => {}
            }
        }
        Err(SessionError::NotFound(key.to_string()))
    }

    /// Like [`get`](Self::get), but a session whose spawn is under way — its name and id
    /// reserved, its program perhaps already running and calling back, as an agent's first hook
    /// does — is waited for (up to `within`) instead of being "not found".
    pub async fn get_started(
        &self,
        key: &str,
        within: Duration,
    ) -> Result<SessionHandle, SessionError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.get(key) {
                Err(SessionError::NotFound(_))
                    if self.is_starting(key) && tokio::time::Instant::now() < deadline =>
                {
                    // Bounded, and only while a spawn of this very session is in progress.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether a session of this id or name is being spawned (or restored) right now.
    pub fn is_starting(&self, key: &str) -> bool {
        let reg = self.registry.read();
        reg.reserved.contains_key(key)
            || Uuid::parse_str(key).is_ok_and(|id| reg.reserved.values().any(|r| *r == id))
    }

    /// Every session's status, in no particular order.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.registry
            .read()
            .by_id
            .values()
            .map(|h| h.info())
            .collect()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.registry.read().by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops (gracefully) and forgets a session; its output stream closes.
    pub async fn remove(&self, key: &str) -> Result<SessionInfo, SessionError> {
        let handle = self.get(key)?;
        // Recorded with the stop's events, before its signal: a server that dies before the
        // removal is done leaves it to the next one (`recovery::finish_removals`), which
        // would otherwise keep the session, stopped, or even start it again.
        handle.shared.status.write().removing = true;
        let info = match handle.stop(None).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(session = %handle.id(), error = %e, "stop before remove failed; removing anyway");
                handle.info()
            }
        };
        if let Err(e) = self.supervisor.remove_child(&handle.id().to_string()).await {
            tracing::debug!(session = %handle.id(), error = %e, "session actor already gone");
        }
        {
            let mut reg = self.registry.write();
            reg.by_id.remove(&handle.id());
            reg.by_name.remove(handle.name());
        }
        handle.shared.ring.close();
        let mut info = info;
        if let Some(p) = &self.persist {
            // Answered once forgotten, as a spawn once recorded (`spawn_with_id`); if not yet,
            // the caller is told (a full disk), not only the log.
            let unsafe_yet = if !p.remove(handle.id()) {
                tracing::warn!(session = %handle.id(), "removed, but the registry's queue did not take the deletion: the next start brings it back");
                Some("the registry's queue did not take it".to_string())
            } else if let Err(e) = p.committed().await {
                tracing::warn!(session = %handle.id(), error = %e, "removed, but the registry still has it: a crash now would bring it back");
                Some(e.to_string())
            } else {
                None
            };
            info.persist_error = unsafe_yet.map(|e| {
                format!("removed, but not from the registry yet ({e}): a server crash now would bring it back")
            });
        }
        Ok(info)
    }

    /// Removes (records and scrollback included) the sessions that ended longer ago than
    /// `rules.max_age`, and the oldest ended ones beyond `rules.max_sessions`. Returns their
    /// ids. Running sessions are never touched.
    pub async fn collect_ended(&self, rules: crate::persist::EndedRetention) -> Vec<Uuid> {
        let now = std::time::SystemTime::now();
        let mut ended: Vec<(Uuid, std::time::SystemTime)> = self
            .registry
            .read()
            .by_id
            .values()
            .filter(|h| h.shared.state().is_final())
            .filter_map(|h| h.shared.ended_at().map(|t| (h.id(), t)))
            .collect();
        // Newest first.
        ended.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        let doomed: Vec<Uuid> = ended
            .iter()
            .enumerate()
            .filter(|(i, (_, t))| {
                *i >= rules.max_sessions
                    || now.duration_since(*t).unwrap_or_default() > rules.max_age
            })
            .map(|(_, (id, _))| *id)
            .collect();
        for id in &doomed {
            match self.remove(&id.to_string()).await {
                Ok(_) => tracing::info!(session = %id, "ended session past retention; removed"),
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "retention could not remove a session")
                }
            }
        }
        doomed
    }

    /// Stops every session gracefully, concurrently; returns when all are stopped.
    pub async fn stop_all(&self) {
        self.stop_every(false).await
    }

    /// Stops every session for a server shutdown: like [`stop_all`](Self::stop_all), but the
    /// sessions that were running are recorded as interrupted, so the next boot starts them
    /// again per their restart policy.
    pub async fn shutdown(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop_every(true).await
    }

    /// The server goes away and its sessions stay: every process under a holder is left
    /// running for the next server (which reattaches); the others are stopped as at a
    /// shutdown. Returns how many were kept.
    pub async fn detach_all(&self) -> usize {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        let mut kept = 0;
        // A session without a holder is stopped: its grace (≤ 60 s) bounds the wait.
        let detach = |h: SessionHandle| async move {
            h.call(SessionMsg::Detach, Duration::from_secs(60) + CALL_TIMEOUT)
                .await
        };
        for (h, r) in self.on_each(true, detach).await {
            match r {
                Ok(true) => kept += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(session = %h.id(), error = %e, "detach failed"),
            }
        }
        kept
    }

    /// Calls `call` on every registered session at once; with `until_none_left`, again on the
    /// sessions registered meanwhile (a spawn that got past the closing check just before it
    /// was set), until none is left unseen. Each session with what its call returned.
    async fn on_each<F, Fut>(
        &self,
        until_none_left: bool,
        call: F,
    ) -> Vec<(SessionHandle, Fut::Output)>
    where
        F: Fn(SessionHandle) -> Fut,
        Fut: std::future::Future,
    {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        loop {
            let handles: Vec<SessionHandle> = self
                .registry
                .read()
                .by_id
                .values()
                .filter(|h| seen.insert(h.id()))
                .cloned()
                .collect();
            if handles.is_empty() {
                break;
            }
            let results = futures::future::join_all(handles.iter().cloned().map(&call)).await;
            out.extend(handles.into_iter().zip(results));
            if !until_none_left {
                break;
            }
        }
        out
    }

    /// Stops every session concurrently: at a shutdown until none is left (see
    /// [`on_each`](Self::on_each)), else those registered when asked.
    async fn stop_every(&self, shutdown: bool) {
        let stop = |h: SessionHandle| async move { h.stop_inner(None, shutdown).await };
        for (h, r) in self.on_each(shutdown, stop).await {
            if let Err(e) = r {
                tracing::warn!(session = %h.id(), error = %e, "stop failed");
            }
        }
    }
}

pub use crate::spec::MAX_NAME;
