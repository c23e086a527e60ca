//! Watch: the live session list of one connection (`{"type":"watch"}`, admin). After the full
//! list, the connection is pushed `session {session}` whenever a session is created or changes
//! and `removed {session}` when it is gone — fed by the sessions' event broadcast (state,
//! exits, restarts, hooks: pushed as they happen) and, for what changes without an event
//! (viewers, CPU, RSS), by a comparison every [`REFRESH`] that pushes only what differs. The page
//! never polls; a quiet server pushes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::app::App;
use crate::protocol::{Reply, SessionView};

/// How often figures without events (viewers, CPU, RSS) are compared.
pub const REFRESH: Duration = Duration::from_secs(2);

/// What was last pushed per session: its fingerprint, and its process figures (an event-driven
/// push reuses them; only the tick reads /proc).
type Seen = HashMap<Uuid, (String, Option<f64>, Option<u64>)>;

/// The state a watch stream carries between items.
struct Watch {
    /// The server.
    app: Arc<App>,
    /// Every session's events.
    events: tokio::sync::broadcast::Receiver<corral_actors::SessionEvent>,
    /// The comparison tick.
    tick: tokio::time::Interval,
    /// What the client has.
    seen: Seen,
}

/// The sessions now, measured, and the `seen` map they make.
pub async fn snapshot(app: &App) -> (Vec<SessionView>, Seen) {
    let views = SessionView::measure_all(app.corral.sessions().list()).await;
    let seen = views
        .iter()
        .map(|v| (v.info.id, (fingerprint(v), v.cpu_percent, v.rss_kib)))
        .collect();
    (views, seen)
}

/// A view's JSON without the clock-driven CPU average (which drifts every tick even for an
/// idle process): a change of state, viewers, restarts or memory shows; CPU goes along.
fn fingerprint(v: &SessionView) -> String {
    let mut v = v.clone();
    v.cpu_percent = v.cpu_percent.map(|c| (c * 10.0).round() / 10.0);
    serde_json::to_string(&v).unwrap_or_default()
}

/// The pushes after the initial list (`seen` is what that list held).
pub fn stream(app: Arc<App>, seen: Seen) -> BoxStream<'static, Vec<Reply>> {
    let events = app.corral.sessions().events();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let watch = Watch {
        app,
        events,
        tick,
        seen,
    };
    Box::pin(futures::stream::unfold(watch, |mut w| async move {
        loop {
            let changed = tokio::select! {
                ev = w.events.recv() => match ev {
                    Ok(e) => Some(e.session),
                    // Missed events: compare everything instead (nothing is lost, only batched).
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return None,
                },
                _ = w.tick.tick() => None,
            };
            let pushes = diff(&mut w, changed).await;
            if !pushes.is_empty() {
                return Some((pushes, w));
            }
        }
    }))
}

/// What differs from what the client has: one session (an event: its process figures are the
/// last ones read, no /proc scan per event) or all (the tick: measured).
async fn diff(w: &mut Watch, only: Option<Uuid>) -> Vec<Reply> {
    let sessions = w.app.corral.sessions();
    let views = match only {
        Some(id) => match sessions.get(&id.to_string()) {
            Ok(h) => {
                let mut v = SessionView::from(h.info());
                if let Some((_, cpu, rss)) = w.seen.get(&id) {
                    (v.cpu_percent, v.rss_kib) = (*cpu, *rss);
                }
                vec![v]
            }
            Err(_) => Vec::new(),
        },
        None => SessionView::measure_all(sessions.list()).await,
    };
    let mut out = Vec::new();
    let mut present = std::collections::HashSet::new();
    for v in views {
        present.insert(v.info.id);
        let f = fingerprint(&v);
        if w.seen.get(&v.info.id).map(|s| &s.0) != Some(&f) {
            w.seen.insert(v.info.id, (f, v.cpu_percent, v.rss_kib));
            out.push(Reply::Session {
                id: None,
                session: v,
            });
        }
    }
    let gone: Vec<Uuid> = match only {
        Some(id) if !present.contains(&id) => vec![id],
        Some(_) => Vec::new(),
        None => w
            .seen
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect(),
    };
    for id in gone {
        if w.seen.remove(&id).is_some() {
            out.push(Reply::Removed {
                session: id.to_string(),
            });
        }
    }
    out
}
