//! Introspection: a serializable snapshot of a supervisor and its descendants, for `corral tree`,
//! metrics and tests. A snapshot is taken on request; nothing polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::bounded::MailboxGauge;

/// Where a supervised child is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being started.
    Starting,
    /// Started and alive.
    Running,
    /// Exited; waiting for its backoff delay before being started again.
    Restarting,
    /// Being stopped by its supervisor.
    Stopping,
    /// Stopped and not to be restarted (its spec is kept until deleted).
    Stopped,
    /// Exited abnormally and not to be restarted, or its supervisor gave up.
    Failed,
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A [`crate::Supervisor`].
    Supervisor,
    /// Any other actor.
    Worker,
    /// A task owned by an actor (not an actor itself: no mailbox).
    Task,
    /// An operating-system process.
    Process,
    /// A listening socket.
    Listener,
}

/// One node of a supervision tree snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The child id inside its supervisor (the supervisor's own name at the root).
    pub id: String,
    /// ractor's id of the running actor, if running.
    pub actor: Option<String>,
    /// Supervisor or worker.
    pub kind: NodeKind,
    /// Lifecycle status.
    pub status: Status,
    /// Restarts inside the supervisor's intensity window (for a supervisor: its own window).
    pub restarts_in_window: u32,
    /// Restarts since the spec was added.
    pub restarts_total: u64,
    /// Why it last exited, if it did.
    pub last_exit: Option<String>,
    /// Milliseconds since it was last started, if running.
    pub uptime_ms: Option<u64>,
    /// Messages in flight, for actors behind a [`crate::BoundedRef`].
    pub mailbox_depth: Option<usize>,
    /// Sends refused because the mailbox was full.
    pub mailbox_full: Option<u64>,
    /// Lag events the actor reported (readers that fell behind a ring).
    pub lag_count: Option<u64>,
    /// The bound of its mailbox or queue, where it has one (null where not: every node has
    /// every field, as docs/protocol.md's schema says).
    #[serde(default)]
    pub mailbox_bound: Option<usize>,
    /// Facts read from the node itself (a process's pid and OS state, a connection's peer and
    /// byte counts, ...), by name (`{}` when there are none).
    #[serde(default)]
    pub detail: std::collections::BTreeMap<String, serde_json::Value>,
    /// Children, in start order.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// A node with nothing but its id, kind and status (to add details and children to).
    pub fn new(id: impl Into<String>, kind: NodeKind, status: Status) -> TreeNode {
        TreeNode {
            id: id.into(),
            actor: None,
            kind,
            status,
            restarts_in_window: 0,
            restarts_total: 0,
            last_exit: None,
            uptime_ms: None,
            mailbox_depth: None,
            mailbox_full: None,
            lag_count: None,
            mailbox_bound: None,
            detail: Default::default(),
            children: Vec::new(),
        }
    }

    /// Sets a detail (builder style).
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> TreeNode {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// Finds a descendant (or self) by child id, mutably, depth first.
    pub fn find_mut(&mut self, id: &str) -> Option<&mut TreeNode> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter_mut().find_map(|c| c.find_mut(id))
    }

    /// Finds a descendant (or self) by child id, depth first.
    pub fn find(&self, id: &str) -> Option<&TreeNode> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(id))
    }
}

/// Gauges a child exposes to introspection; handed over by its start function.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The child's bounded mailbox, if it has one.
    pub mailbox: Option<Arc<MailboxGauge>>,
    /// A counter of lag events the child maintains.
    pub lag: Option<Arc<AtomicU64>>,
}

impl Probe {
    /// Fills the gauge fields of `node`.
    pub(crate) fn fill(&self, node: &mut TreeNode) {
        if let Some(m) = &self.mailbox {
            node.mailbox_depth = Some(m.depth());
            node.mailbox_full = Some(m.full_count());
            node.mailbox_bound = Some(m.capacity());
        }
        if let Some(l) = &self.lag {
            node.lag_count = Some(l.load(Ordering::Relaxed));
        }
    }
}
