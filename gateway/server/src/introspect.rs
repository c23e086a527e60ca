//! Introspect: the whole live tree `corral tree` shows — the server, its gateway (listeners and
//! every connection with its peer, endpoint, sessions, bytes and queue) and the corral tree
//! (persister, reaper, janitor, sessions), each session with its process as the OS reports it,
//! its actors as ractor reports them, its input queue, its log writer and its subscribers. Every
//! figure is read from the thing itself when asked; nothing polls.

use corral_runtime::{NodeKind, Status, TreeNode};

use crate::app::App;
use crate::connections::listener;
use crate::error::ApiError;

/// The tree now.
pub async fn tree(app: &App) -> Result<TreeNode, ApiError> {
    let mut corral = app
        .corral
        .tree()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(sessions) = corral.find_mut("sessions") {
        // Each session's process is read from /proc (blocking file reads, two per session):
        // off the runtime's workers.
        let mut nodes = std::mem::take(&mut sessions.children);
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| app.corral.sessions().get(&node.id).ok())
            .collect();
        nodes = tokio::task::spawn_blocking(move || {
            for (node, h) in nodes.iter_mut().zip(&handles) {
                if let Some(h) = h {
                    corral_actors::session::parts::describe(
                        node,
                        h.shared(),
                        &h.actor().get_cell(),
                    );
                }
            }
            nodes
        })
        .await
        .map_err(|e| ApiError::internal(format!("describing the sessions: {e}")))?;
        sessions.children = nodes;
    }
    let mut gateway = app
        .clients
        .tree()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    app.connections.describe(&mut gateway);
    gateway.id = "gateway".into();
    let mut listeners = vec![listener("tcp", app.url.clone())];
    listeners.push(listener("unix", "corral.sock (data dir)".into()));
    listeners.append(&mut gateway.children);
    gateway.children = listeners;
    let mut root = TreeNode::new("server", NodeKind::Supervisor, Status::Running)
        .with("pid", std::process::id())
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("url", app.url.clone());
    root.uptime_ms = Some(app.started.elapsed().as_millis() as u64);
    root.children = vec![gateway, corral];
    Ok(root)
}
