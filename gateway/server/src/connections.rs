//! Connections: what each live WebSocket connection is doing, kept where `corral tree` can read
//! it without messaging the connection (its actor spends its time awaiting its socket). Every
//! field is written by the connection itself as things happen; the registry holds at most
//! `limits.max_connections` entries, and an entry leaves with its connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use corral_runtime::{NodeKind, Status, TreeNode};
use parking_lot::Mutex;

/// The close reason of a connection whose token was revoked.
pub const TOKEN_REVOKED: &str = "token revoked";
/// The close reason of a connection whose login cookie was logged out (in another tab).
pub const LOGGED_OUT: &str = "logged out";

/// One connection's live figures.
#[derive(Debug)]
pub struct ConnStats {
    /// Its id in the connections supervisor (`connection-<n>`).
    pub id: String,
    /// `native` or `ttyd`.
    pub endpoint: &'static str,
    /// Who is connected (address and port, or `unix`).
    pub peer: String,
    /// When it was accepted.
    pub since: Instant,
    /// Sessions it is subscribed to (names).
    pub sessions: Mutex<BTreeSet<String>>,
    /// Input bytes taken from it.
    pub bytes_in: AtomicU64,
    /// Output bytes sent to it.
    pub bytes_out: AtomicU64,
    /// Lag notices it was sent.
    pub lags: AtomicU64,
    /// A message of its waits for a limit (its socket is not being read).
    pub held: AtomicBool,
    /// The id of the token it was let in with (none before a ttyd client authenticates).
    pub token: Mutex<Option<String>>,
    /// Told when it must close because its login ended: the connection closes with 1008 and
    /// [`ConnStats::closing`]'s reason.
    pub revoked: tokio::sync::Notify,
    /// Why it must close, once it must (`token revoked`, or `logged out`: the page's logout in
    /// another tab of the same browser). Read before each turn of the connection, so nothing
    /// more is sent even when other work is ready at the same turn; the first reason stays.
    pub closing: std::sync::OnceLock<&'static str>,
    /// Let in by the web page's login cookie (not a bearer token): a logout closes it.
    pub by_cookie: AtomicBool,
}

impl ConnStats {
    /// Fresh figures for connection `id`.
    pub fn new(id: String, endpoint: &'static str, peer: String) -> Arc<ConnStats> {
        Arc::new(ConnStats {
            id,
            endpoint,
            peer,
            since: Instant::now(),
            sessions: Mutex::new(BTreeSet::new()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            lags: AtomicU64::new(0),
            held: AtomicBool::new(false),
            token: Mutex::new(None),
            revoked: tokio::sync::Notify::new(),
            closing: std::sync::OnceLock::new(),
            by_cookie: AtomicBool::new(false),
        })
    }

    /// Tells the connection to close if the token it was let in with is no longer valid
    /// (called once it is registered: a revocation between the token's check and the
    /// registration found no connection to close).
    pub fn close_if_revoked(&self, tokens: &crate::auth::Tokens) {
        if let Some(id) = self.token.lock().as_deref()
            && !tokens.holds(id)
        {
            self.revoke();
        }
    }

    /// Tells the connection its token was revoked.
    pub fn revoke(&self) {
        self.close_for(TOKEN_REVOKED);
    }

    /// Tells the connection to close (1008 `why`).
    fn close_for(&self, why: &'static str) {
        // Set once: a second reason for the same close changes nothing.
        if let Err(not_kept) = self.closing.set(why) {
            tracing::debug!(not_kept, "already closing for another reason");
        }
        // A stored permit: the connection sees it at its next turn even if it is busy.
        self.revoked.notify_one();
    }

    /// Fills the connection's node in the tree.
    pub fn describe(&self, node: &mut TreeNode) {
        let sessions: Vec<String> = self.sessions.lock().iter().cloned().collect();
        node.detail.insert("endpoint".into(), self.endpoint.into());
        node.detail.insert("peer".into(), self.peer.clone().into());
        node.detail.insert("sessions".into(), sessions.into());
        // Which token let it in (its id, never the token): what `corral token revoke` takes.
        if let Some(token) = self.token.lock().clone() {
            node.detail.insert("token".into(), token.into());
        }
        node.detail.insert(
            "bytes_in".into(),
            self.bytes_in.load(Ordering::Relaxed).into(),
        );
        node.detail.insert(
            "bytes_out".into(),
            self.bytes_out.load(Ordering::Relaxed).into(),
        );
        // Its queue: at most one message held for a limit (nothing else queues per connection).
        node.mailbox_depth = Some(usize::from(self.held.load(Ordering::Relaxed)));
        node.mailbox_bound = Some(1);
        node.lag_count = Some(self.lags.load(Ordering::Relaxed));
    }
}

/// Every live connection's figures, by id.
#[derive(Debug, Default)]
pub struct Registry {
    /// id → figures.
    live: Mutex<HashMap<String, Arc<ConnStats>>>,
    /// Connections let in before their token is known (ttyd's comes in the first frame).
    unauthenticated: Arc<std::sync::atomic::AtomicUsize>,
    /// Open agentapi event streams (each holds an HTTP connection for as long as it lasts).
    event_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// WebSocket connections, from their upgrade to their actor's end.
    websockets: Arc<std::sync::atomic::AtomicUsize>,
}

/// Most agentapi event streams open at once: each holds one of a listener's HTTP connections
/// for as long as it lasts, and one token's thousand streams locked every client out.
pub const MAX_EVENT_STREAMS: usize = 128;

/// Most connections at once that have not yet shown a token (a ttyd client's first frame
/// carries it): past it such an upgrade is refused (503), so clients that never authenticate
/// cannot take the slots of those that do.
pub const MAX_UNAUTHENTICATED: usize = 64;

/// How long a connection let in without a token has to show one (ttyd's first frame) before
/// it is closed (1008).
pub const AUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One of a bounded number of places (WebSocket connections, [`MAX_UNAUTHENTICATED`]
/// connections without a token, [`MAX_EVENT_STREAMS`] event streams), given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<std::sync::atomic::AtomicUsize>);

/// WebSocket places only the admin token may take: a sixteenth of `max` (64 of the default
/// 1024), at least one when there are two or more.
pub fn admin_reserved(max: usize) -> usize {
    if max < 2 {
        0
    } else {
        (max / 16).clamp(1, max - 1)
    }
}

/// A place among the `max` that `count` counts; None when all are taken.
fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Place> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
        .then(|| Place(count.clone()))
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// A place for a connection that has not shown its token yet; None when
    /// [`MAX_UNAUTHENTICATED`] are taken.
    pub fn unauthenticated(&self) -> Option<Place> {
        take(&self.unauthenticated, MAX_UNAUTHENTICATED)
    }

    /// A place for a WebSocket connection, taken at its upgrade and held by its actor; None
    /// when `max` are open (`limits.max_connections`). Taken, not read from a figure, so
    /// upgrades at the same moment cannot all pass the check. The last [`admin_reserved`]
    /// places are the admin token's: a viewer or driver token (or a ttyd client yet to show
    /// one) that takes every other place does not lock out the admin, the CLI included.
    pub fn websocket(&self, max: usize, admin: bool) -> Option<Place> {
        let bound = if admin {
            max
        } else {
            max - admin_reserved(max)
        };
        take(&self.websockets, bound)
    }

    /// A place for an agentapi event stream; None when [`MAX_EVENT_STREAMS`] are open.
    pub fn event_stream(&self) -> Option<Place> {
        take(&self.event_streams, MAX_EVENT_STREAMS)
    }

    /// Registers a connection.
    pub fn add(&self, stats: Arc<ConnStats>) {
        self.live.lock().insert(stats.id.clone(), stats);
    }

    /// Forgets a connection.
    pub fn remove(&self, id: &str) {
        self.live.lock().remove(id);
    }

    /// Closes every connection let in with token `id` (it was revoked); returns how many.
    pub fn close_token(&self, id: &str) -> usize {
        self.close_where(id, false, TOKEN_REVOKED)
    }

    /// Closes the connections the web page's login cookie carrying token `id` let in (a logout:
    /// the other tabs of that browser lose their login with it); returns how many.
    pub fn log_out(&self, id: &str) -> usize {
        self.close_where(id, true, LOGGED_OUT)
    }

    /// Closes (1008 `why`) the live connections token `id` let in — only those of the login
    /// cookie when `cookie_only`; returns how many.
    fn close_where(&self, id: &str, cookie_only: bool, why: &'static str) -> usize {
        let live = self.live.lock();
        let mut closed = 0;
        for stats in live.values() {
            if (!cookie_only || stats.by_cookie.load(Ordering::Relaxed))
                && stats.token.lock().as_deref() == Some(id)
            {
                stats.close_for(why);
                closed += 1;
            }
        }
        closed
    }

    /// Fills the connection nodes of the connections supervisor's tree.
    pub fn describe(&self, gateway: &mut TreeNode) {
        let live = self.live.lock();
        for node in &mut gateway.children {
            match live.get(&node.id) {
                Some(stats) => stats.describe(node),
                None => node.status = Status::Stopping,
            }
        }
    }
}

/// A listener's node.
pub fn listener(id: &str, address: String) -> TreeNode {
    TreeNode::new(id, NodeKind::Listener, Status::Running).with("address", address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Grant, Tokens, new_secret, token_id};

    /// A connection let in with a token revoked before it was registered (the revocation found
    /// nothing to close) closes at its first turn; one with a valid token does not.
    #[tokio::test]
    async fn a_connection_registered_after_its_token_was_revoked_is_told_to_close() {
        let tokens = Tokens::new(new_secret("admin"));
        let session = uuid::Uuid::new_v4();
        let (gone, kept) = (
            tokens.issue(Grant::Read(session)).unwrap(),
            tokens.issue(Grant::Read(session)).unwrap(),
        );
        let registry = Registry::default();
        let stats = |id: &str, token: &str| {
            let s = ConnStats::new(id.into(), "native", "unix".into());
            *s.token.lock() = token_id(token).map(str::to_string);
            s
        };
        let (late, fine) = (stats("connection-1", &gone), stats("connection-2", &kept));
        assert!(tokens.revoke(token_id(&gone).unwrap()).unwrap());
        assert_eq!(registry.close_token(token_id(&gone).unwrap()), 0);
        registry.add(late.clone());
        registry.add(fine.clone());
        late.close_if_revoked(&tokens);
        fine.close_if_revoked(&tokens);
        let told = |s: Arc<ConnStats>| async move {
            tokio::time::timeout(std::time::Duration::from_millis(50), s.revoked.notified())
                .await
                .is_ok()
        };
        assert!(told(late).await, "the late connection is told to close");
        assert!(!told(fine).await, "a valid token's connection is not");
    }
}
