//! The hook spool: Claude Code hook events that found no server, kept in the data dir until
//! the next server takes them.
//!
//! Sessions outlive their server (issue 17), and so do their agents' hooks: a Stop or a
//! UserPromptSubmit fired while `corral serve` is down (a crash, a `shutdown --keep-sessions`)
//! used to be lost, and the agent's attention stayed what the last delivered hook said —
//! `working` after its turn was over — until another hook came. `corral hook` tries the server
//! for a while (2 s); if none is there it writes the event here (`<data dir>/hooks/`, 0700,
//! each file 0600, written whole with a rename) and the next server replays the files in the
//! order they were written, before it serves anything, so a replayed event always precedes the
//! events delivered live.
//!
//! Claiming is a rename on the server's side and an unlink on the hook's, so an event is taken
//! once: a hook that spooled and then finds a server up (it started between the hook's failed
//! connect and its write) takes its file back with an unlink and posts it itself; if the unlink
//! finds nothing, the server has it. A permission question is never spooled (no one would be
//! there to answer it: Claude asks in its own dialog). A record older than the last hook its
//! session's journal already holds is stale and dropped (it could only come from a server that
//! was up but refused the connection).
//!
//! Bounds: [`MAX_FILES`] records (further events are lost, and `corral hook` says so on its
//! stderr), each at most the API's request body bound.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::auth::Grant;

/// The most records the spool holds (each ≤ [`crate::access::MAX_BODY`]: 64 MiB at worst).
pub const MAX_FILES: usize = 256;

/// One hook event that found no server (its `Debug` leaves the token out).
#[derive(Serialize, Deserialize)]
pub struct Spooled {
    /// The session it is for.
    pub session: uuid::Uuid,
    /// The session's hook token, checked as the API would check it.
    pub token: String,
    /// When the hook ran.
    #[serde(with = "corral_actors::time")]
    pub at: SystemTime,
    /// The hook's payload as Claude Code gave it.
    pub payload: serde_json::Value,
}

impl std::fmt::Debug for Spooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("session", &self.session)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// The spool of data dir `data`.
pub fn dir(data: &Path) -> PathBuf {
    data.join("hooks")
}

/// Why a record was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// [`MAX_FILES`] records wait already.
    #[error("the hook spool is full ({MAX_FILES} events wait for a server)")]
    Full,
    /// The payload is larger than any server would take.
    #[error("the event is larger than {} bytes", crate::access::MAX_BODY)]
    TooLarge,
    /// The file system refused.
    #[error("cannot write the hook spool: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `record` into the spool of data dir `data`; the file's path (to take it back with
/// [`take_back`]). Called by `corral hook`, a process of its own (blocking I/O is fine).
pub fn write(data: &Path, record: &Spooled) -> Result<PathBuf, SpoolError> {
    let dir = dir(data);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    if bytes.len() > crate::access::MAX_BODY {
        return Err(SpoolError::TooLarge);
    }
    if std::fs::read_dir(&dir)?.count() >= MAX_FILES {
        return Err(SpoolError::Full);
    }
    let nanos = record
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Named so that names sort in the order the events happened (then by writer).
    let path = dir.join(format!("{nanos:020}-{}.json", std::process::id()));
    crate::atomic::write_atomic(&path, &bytes, 0o600)?;
    Ok(path)
}

/// Takes a spooled record back before a server claims it: true if it was still there (the
/// caller now owns the event), false if a server took it.
pub fn take_back(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Events recorded for their sessions.
    pub recorded: usize,
    /// Records dropped: unreadable, for a session that is gone, with a token that is not the
    /// session's, a permission question, or older than the session's last journaled hook.
    pub dropped: usize,
}

/// Replays the spool into the sessions of `app`, oldest first, and empties it. Run by a
/// starting server before it serves (so replayed events precede live ones).
pub async fn replay(app: &Arc<App>) -> Replayed {
    let dir = dir(&app.data_dir);
    let claimed = match tokio::task::spawn_blocking(move || claim(&dir)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the hook spool; its events wait for the next server");
            return Replayed::default();
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the hook spool failed");
            return Replayed::default();
        }
    };
    let mut done = Replayed::default();
    // Each session's last journaled hook, as it was before this replay recorded any.
    let mut last_hooks = std::collections::HashMap::new();
    for (path, read) in claimed {
        match read {
            Ok(record) => match apply(app, record, &mut last_hooks).await {
                Ok(()) => done.recorded += 1,
                Err(why) => {
                    tracing::warn!(file = %path.display(), why, "a spooled hook event was dropped");
                    done.dropped += 1;
                }
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "an unreadable spooled hook event was dropped");
                done.dropped += 1;
            }
        }
        let gone = path.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_file(&gone)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a replayed hook event")
            }
            Err(e) => tracing::warn!(error = %e, "removing a replayed hook event failed"),
        }
    }
    if done != Replayed::default() {
        tracing::info!(
            recorded = done.recorded,
            dropped = done.dropped,
            "hook events that found no server replayed"
        );
    }
    done
}

/// Claims every record of the spool (renamed to `*.taken`: a hook can no longer take it back)
/// and reads it, in the order they were written. Records a server claimed but did not finish
/// (it died replaying) are read again: an event twice is better than none.
fn claim(dir: &Path) -> std::io::Result<Vec<(PathBuf, Result<Spooled, String>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // Temp files of a write in progress start with a dot.
        .filter(|n| !n.starts_with('.') && (n.ends_with(".json") || n.ends_with(".json.taken")))
        .collect();
    names.sort();
    let mut claimed = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let taken = if name.ends_with(".taken") {
            path
        } else {
            let taken = dir.join(format!("{name}.taken"));
            match std::fs::rename(&path, &taken) {
                Ok(()) => taken,
                // Taken back by its hook in the meantime.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        };
        let read = std::fs::read(&taken)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Spooled>(&b).map_err(|e| e.to_string()));
        claimed.push((taken, read));
    }
    Ok(claimed)
}

/// Records one spooled event as the API would have when it happened.
async fn apply(
    app: &Arc<App>,
    record: Spooled,
    last_hooks: &mut std::collections::HashMap<uuid::Uuid, Option<SystemTime>>,
) -> Result<(), &'static str> {
    let Ok(grant) = app.tokens.check(Some(&record.token)) else {
        return Err("its token is not known");
    };
    if !matches!(grant, Grant::Hook(s) if s == record.session) {
        return Err("its token is not the session's hook token");
    }
    let Ok(session) = app.corral.sessions().get(&record.session.to_string()) else {
        return Err("its session is gone");
    };
    let Some(name) = record
        .payload
        .get("hook_event_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return Err("it names no hook event");
    };
    if name == "PermissionRequest" {
        return Err("a permission question no one holds any more");
    }
    let last = match last_hooks.get(&record.session) {
        Some(last) => *last,
        None => {
            let last = last_hook_at(app, &session).await;
            last_hooks.insert(record.session, last);
            last
        }
    };
    if last.is_some_and(|last| record.at <= last) {
        return Err("older than the last hook its session recorded");
    }
    crate::routes::take_hook(app, &session, &name, record.payload, Some(record.at));
    Ok(())
}

/// How far back a replay looks for a session's last hook event.
const LOOK_BACK: u64 = 64;

/// When the last hook event among a session's last [`LOOK_BACK`] journaled events ran.
async fn last_hook_at(app: &App, session: &corral_actors::SessionHandle) -> Option<SystemTime> {
    let persist = app.corral.persist()?;
    let last = session.shared().last_seq();
    let events = persist
        .events(session.id(), last.saturating_sub(LOOK_BACK), LOOK_BACK as usize)
        .await
        .inspect_err(|e| tracing::warn!(session = %session.id(), error = %e, "cannot read the journal to order spooled hooks"))
        .ok()?;
    // When it ran, if its poster said (as `corral hook` does): the spooled records' times
    // are when they ran too.
    events.iter().rev().find_map(|e| match &e.kind {
        corral_actors::EventKind::Hook { ran_at, .. } => Some(ran_at.unwrap_or(e.time)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, payload: serde_json::Value) -> Spooled {
        Spooled {
            session: uuid::Uuid::nil(),
            token: "t".into(),
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(n),
            payload,
        }
    }

    /// The spool takes 256 records; the next is refused as full (what `corral hook` says), and
    /// so is a record larger than any server would take, both leaving the spool as it was.
    #[test]
    fn the_spool_refuses_past_its_bounds() {
        let data = tempfile::tempdir().unwrap();
        for n in 0..MAX_FILES as u64 {
            write(data.path(), &record(n, serde_json::json!({"n": n}))).unwrap();
        }
        let full = write(data.path(), &record(9999, serde_json::json!({})));
        assert!(matches!(full, Err(SpoolError::Full)), "{full:?}");
        assert_eq!(
            std::fs::read_dir(dir(data.path())).unwrap().count(),
            MAX_FILES
        );
        let other = tempfile::tempdir().unwrap();
        let big = serde_json::json!({"x": "y".repeat(crate::access::MAX_BODY)});
        let large = write(other.path(), &record(1, big));
        assert!(matches!(large, Err(SpoolError::TooLarge)), "{large:?}");
        assert_eq!(std::fs::read_dir(dir(other.path())).unwrap().count(), 0);
    }
}
