//! Parts: a session as the introspection tree shows it — its process with the state the OS
//! reports (never a cached label: a process that exited shows `exited`, a zombie `zombie`), its
//! actors as ractor reports them, its input writer's queue, the persister's progress on its log
//! and its subscribers. Read on request; nothing polls.

use corral_runtime::{NodeKind, Status, TreeNode};
use ractor::ActorStatus;

use super::shared::SessionShared;
use crate::event::SessionState;
use crate::process::procfs;

/// The session's actors in the order `describe` lists them: what the session keeps, then what
/// each process has (its holder's link, its readers).
const WORKERS: [&str; 4] = ["screen", "holder link", "output reader", "stderr reader"];

/// The name of a `/proc/<pid>/stat` state letter: running, sleeping, stopped, zombie, exited.
fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' | 'D' | 'I' => "sleeping",
        'T' | 't' => "stopped",
        'Z' => "zombie",
        'X' => "exited",
        _ => "sleeping",
    }
}

/// A process's node: its state as the OS reports it, and its age.
fn process_node(id: String, pid: i32) -> TreeNode {
    let stat = procfs::read_stat(pid).ok();
    let os = stat.as_ref().map_or("exited", |s| state_name(s.state));
    let status = match os {
        "zombie" | "exited" => Status::Stopped,
        _ => Status::Running,
    };
    let mut n = TreeNode::new(id, NodeKind::Process, status)
        .with("pid", pid)
        .with("os_state", os);
    n.uptime_ms = stat
        .and_then(|s| procfs::age(s.starttime))
        .map(|d| d.as_millis() as u64);
    n
}

/// A ractor actor's status as a tree status.
fn actor_status(s: ActorStatus) -> Status {
    match s {
        ActorStatus::Unstarted | ActorStatus::Starting => Status::Starting,
        ActorStatus::Running | ActorStatus::Upgrading | ActorStatus::Draining => Status::Running,
        ActorStatus::Stopping => Status::Stopping,
        ActorStatus::Stopped => Status::Stopped,
    }
}

/// Fills `node` (the session's node in the supervision tree) with what the session is now and
/// its parts as children. `actor` is the session actor's cell.
pub fn describe(node: &mut TreeNode, shared: &SessionShared, actor: &ractor::ActorCell) {
    let info = shared.info();
    node.detail.insert("name".into(), info.name.clone().into());
    node.detail
        .insert("state".into(), info.state.as_str().into());
    if let Some(a) = info.attention {
        node.detail.insert(
            "attention".into(),
            serde_json::to_value(a).unwrap_or_default(),
        );
    }
    node.lag_count = Some(info.lag_events);
    // The process, as the OS sees it.
    // How long this incarnation has run (its readers and holder link started with it).
    let run_ms = info.started_at.and_then(|t| {
        std::time::SystemTime::now()
            .duration_since(t)
            .ok()
            .map(|d| d.as_millis() as u64)
    });
    let process = match info.pid {
        Some(pid) => {
            let mut p = process_node(pid.to_string(), pid);
            p.uptime_ms = run_ms.or(p.uptime_ms);
            p
        }
        None => {
            let mut p =
                TreeNode::new("-", NodeKind::Process, Status::Stopped).with("os_state", "exited");
            if let Some(exit) = info.last_exit {
                p = p.with("last_exit", serde_json::to_value(exit).unwrap_or_default());
            }
            p
        }
    };
    node.children.push(process);
    // Its holder (sessions of `corral serve`): the process that keeps it alive without us.
    if let Some(holder) = info.holder_pid {
        node.children.push(process_node("holder".into(), holder));
    }
    // The session's actors (output reader(s), holder link, screen), as ractor reports them.
    let screen = shared.screen.read().as_ref().map(|s| s.get_id());
    let roles = shared.roles.read().clone();
    let mut workers = Vec::new();
    for child in actor.get_children() {
        let role = roles
            .iter()
            .find(|(a, _)| *a == child.get_id())
            .map(|r| r.1);
        let id = match role {
            Some(role) => role,
            None if Some(child.get_id()) == screen => "screen",
            // A reader of a process that just ended (its roles are the next one's).
            None => "output reader",
        };
        let mut n = TreeNode::new(id, NodeKind::Worker, actor_status(child.get_status()));
        n.actor = Some(child.get_id().to_string());
        // Readers and the holder link start with each process; the screen with the session.
        n.uptime_ms = match role {
            Some(_) => run_ms,
            None if id == "screen" => node.uptime_ms,
            None => None,
        };
        workers.push(n);
    }
    // In one order every time (ractor lists an actor's children in no order: the holder link
    // moved around between sessions and between two `corral tree`s).
    workers.sort_by_key(|n| {
        let rank = WORKERS
            .iter()
            .position(|w| *w == n.id)
            .unwrap_or(WORKERS.len());
        (rank, n.actor.clone())
    });
    node.children.extend(workers);
    // The input writer's queue (a task, bounded in bytes).
    if let Some(queue) = shared.writer.read().as_ref() {
        let mut n = TreeNode::new("input writer", NodeKind::Task, Status::Running)
            .with("input_rejected", info.input_rejected)
            .with("input_lost", info.input_lost);
        n.mailbox_depth = Some(queue.depth());
        n.mailbox_bound = Some(queue.capacity());
        node.children.push(n);
    }
    // The persister's progress on this session's log.
    if let Some(persisted) = shared.feed.persisted_offset() {
        let mut n = TreeNode::new("log writer", NodeKind::Task, Status::Running)
            .with("persisted_offset", persisted)
            .with("output_offset", info.output_offset);
        if let Some(e) = &info.persist_error {
            n.last_exit = Some(e.clone());
        }
        node.children.push(n);
    }
    // Subscribers.
    let mut subs =
        TreeNode::new("subscribers", NodeKind::Task, Status::Running).with("viewers", info.viewers);
    subs.lag_count = Some(info.lag_events);
    node.children.push(subs);
    if matches!(
        info.state,
        SessionState::Stopped | SessionState::Failed | SessionState::Exited
    ) {
        // The actor lives on to keep the session (log, events, tokens); what ran is over.
        node.detail.insert("process".into(), "ended".into());
    }
}
