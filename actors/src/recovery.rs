//! Boot reconciliation: bring back the sessions an earlier run of the server recorded, after a
//! graceful shutdown or a crash (SIGKILL, OOM, power loss).
//!
//! For every recorded session, in this order:
//!
//! 1. **Retention.** Sessions that ended (Stopped/Failed and not interrupted by a shutdown) longer
//!    ago than [`EndedRetention::max_age`], or beyond the newest [`EndedRetention::max_sessions`],
//!    are deleted with their scrollback.
//!    Kept sessions that share a name (a data dir written by an older server) are told apart:
//!    the name stays with the one whose process still runs, the others are renamed
//!    (`unique_names`), so every session is restored — none runs on outside the registry.
//! 2. **Orphans.** A session recorded as live (not final) means the server died under it. Its
//!    main process is looked up by its recorded identity (pid, start time, boot id) — never by
//!    name — and, when it is still that very process, it and its tree (session id, process
//!    group, descendants, and anything carrying the session's `CORRAL_SESSION_ID` marker) are
//!    terminated with the session's own stop rules: stop signal, grace, SIGKILL. When the main
//!    process is gone (or its pid now belongs to someone else), only processes carrying the
//!    marker are swept. corral does not adopt orphans: it cannot own their PTY or their exit
//!    status, so it restarts them cleanly instead.
//! 3. **Decision.** A session that was live at the crash or interrupted by a shutdown is started
//!    again when its policy is `always` or `on-failure` (an agent profile resumes its
//!    conversation through its resume template, e.g. `claude --resume <id>`), and is recorded
//!    Stopped with the reason when its policy is `never`. Sessions that had ended stay as they
//!    were, with their scrollback, until retention removes them.
//!
//! A session whose removal (`corral rm`) the server died in the middle of is not restored: the
//! removal is finished (`finish_removals`).
//!
//! Before that, holders of no live record (a spawn the registry never recorded, an ended session
//! whose holder was not released yet) are released with their programs: nothing could list,
//! stop or remove them otherwise.
//!
//! Each decision is a `recovery` event in the session's journal.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::SessionState;
use crate::manager::Sessions;
use crate::persist::PersistError;
use crate::persist::journal::SessionRecord;
use crate::persist::store::now_ms;
use crate::persist::{EndedRetention, Persist};
use crate::process::procfs::ProcessIdentity;
use crate::process::sweep;
use crate::process::{MARKER_KEY, SessionTree};
use crate::session::Begin;
use crate::spec::{RestartPolicy, SessionSpec};

/// Sessions restored concurrently (each restore may spawn a process).
const CONCURRENCY: usize = 32;

/// What reconciliation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Records found.
    pub found: usize,
    /// Sessions brought back (running again or dormant).
    pub restored: usize,
    /// Of those, started again.
    pub restarted: usize,
    /// Of those, reattached to the holder that kept their process running.
    pub reattached: usize,
    /// Sessions whose processes outlived the old server and were terminated.
    pub orphans_terminated: usize,
    /// Processes killed in those sweeps.
    pub processes_killed: usize,
    /// Ended sessions deleted by retention.
    pub collected: usize,
    /// Holders of no live record, ended with their programs (see `release_strays`).
    pub strays_released: usize,
    /// Sessions whose removal a server died in the middle of, removed now (see
    /// `finish_removals`; one whose deletion the registry's queue refused is not counted).
    #[serde(default)]
    pub removed: usize,
    /// Records that could not be restored (with the reason, also logged).
    pub failed: Vec<(Uuid, String)>,
    /// Wall time of the whole reconciliation (seconds in JSON, as every duration of the API).
    #[serde(with = "corral_runtime::seconds")]
    pub took: Duration,
    /// The specs of restored sessions (the gateway re-registers their hook tokens).
    #[serde(skip)]
    pub specs: Vec<(Uuid, SessionSpec)>,
}

/// Whether the session was alive when the server went away.
fn was_live(row_state: SessionState, interrupted: bool) -> bool {
    !row_state.is_final() || interrupted
}

/// Splits records into kept and collected by the ended-session retention.
pub fn retain(
    records: Vec<SessionRecord>,
    rules: EndedRetention,
    now_ms: u64,
) -> (Vec<SessionRecord>, Vec<SessionRecord>) {
    let (mut ended, mut keep): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| !was_live(r.row.state, r.row.interrupted));
    // Newest first.
    ended.sort_by_key(|r| std::cmp::Reverse(r.ended_ms.unwrap_or(r.created_ms)));
    let max_age = rules.max_age.as_millis() as u64;
    let mut collected = Vec::new();
    for (i, r) in ended.into_iter().enumerate() {
        let ended_at = r.ended_ms.unwrap_or(r.created_ms);
        if i >= rules.max_sessions || now_ms.saturating_sub(ended_at) > max_age {
            collected.push(r);
        } else {
            keep.push(r);
        }
    }
    keep.sort_by_key(|r| r.created_ms);
    (keep, collected)
}

/// Gives every kept record a name of its own, and returns what each renamed one is told.
///
/// Two records of one name come from a data dir an older server wrote (it recorded a spawn it
/// then refused for its name). Restoring both would fail one of them — and a running agent
/// left out of the registry is seen by nobody and stopped by nothing. So the name stays with
/// the session that matters most (its process runs under its holder, then it was live, then
/// the newest) and the others become `name-<first 8 hex of the id>` (the whole id if that is
/// taken too), recorded as such.
fn unique_names(
    keep: &mut [SessionRecord],
    held: &std::collections::HashSet<Uuid>,
) -> std::collections::HashMap<Uuid, String> {
    let rank = |r: &SessionRecord| {
        (
            held.contains(&r.id),
            was_live(r.row.state, r.row.interrupted),
            r.created_ms,
        )
    };
    let mut order: Vec<usize> = (0..keep.len()).collect();
    order.sort_by(|a, b| rank(&keep[*b]).cmp(&rank(&keep[*a])));
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut renamed = std::collections::HashMap::new();
    for i in order {
        let r = &mut keep[i];
        if taken.insert(r.name.clone()) {
            continue;
        }
        let short = format!("{}-{}", r.name, &r.id.simple().to_string()[..8]);
        let new = if taken.contains(&short) {
            format!("{}-{}", r.name, r.id)
        } else {
            short
        };
        tracing::warn!(session = %r.id, old = %r.name, new = %new, "two sessions had one name; renamed");
        renamed.insert(
            r.id,
            format!("renamed from '{}' (another session has that name)", r.name),
        );
        r.name = new.clone();
        r.spec.name = Some(new.clone());
        taken.insert(new);
    }
    renamed
}

/// Ends the session of a holder whose record could not be restored (see [`restore_one`]), is
/// a stray's or is being removed; its socket and log go too (a dead holder, which answered
/// nothing, leaves them).
async fn release_holder(sessions: &Sessions, id: Uuid) {
    let Some(holders) = sessions.holders() else {
        return;
    };
    let socket = holders.socket(id);
    let released = tokio::task::spawn_blocking(move || {
        crate::holder::launch::release(&socket, Duration::from_secs(5))
    })
    .await;
    match released {
        Ok(Ok(())) => {
            tracing::warn!(session = %id, "its holder ended its program, released")
        }
        Ok(Err(e)) => {
            tracing::error!(session = %id, error = %e, "could not release a holder")
        }
        Err(e) => {
            tracing::error!(session = %id, error = %e, "releasing a holder panicked")
        }
    }
    holders.forget_async(id).await;
}

/// Ends the holders no live record keeps, and returns how many: a spawn the registry never
/// recorded (its commit failed — a full disk — and the server died before the next one), a
/// session recorded as ended whose holder was not released yet, one retention removed. Nothing
/// could ever see, stop or remove them (`corral ps` lists records), so each is released: its
/// program is killed and reaped, its socket and log go; an unrecorded session's scrollback
/// and TMPDIR go too.
async fn release_strays(
    sessions: &Sessions,
    persist: &Persist,
    keep: &[SessionRecord],
    held: &std::collections::HashSet<Uuid>,
) -> usize {
    let Some(holders) = sessions.holders() else {
        return 0;
    };
    let listed = {
        let holders = holders.clone();
        tokio::task::spawn_blocking(move || holders.sockets()).await
    };
    let strays: Vec<Uuid> = match listed {
        Ok(ids) => ids.into_iter().filter(|id| !held.contains(id)).collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing the holders panicked");
            return 0;
        }
    };
    for &id in &strays {
        let recorded = keep.iter().any(|r| r.id == id);
        tracing::warn!(session = %id, recorded, "a holder of no live session: ending its program");
        release_holder(sessions, id).await;
        if !recorded {
            if !persist.remove(id) {
                tracing::warn!(session = %id, "a stray holder's record stays: the registry's queue did not take its deletion");
            }
            remove_tmp(sessions, id).await;
        }
    }
    strays.len()
}

/// Finishes the removals a server died in the middle of (`corral rm` recorded `removing`
/// before its stop's signal): what is left of each session's processes is ended with its own
/// stop rules (stop signal, grace, SIGKILL — the rest of a stop it may have begun), its holder
/// released, its record, scrollback and TMPDIR deleted. Kept instead, a session its user
/// removed would come back stopped — or, with `restart = always`, running. Returns how many.
async fn finish_removals(
    sessions: &Sessions,
    persist: &Persist,
    removing: Vec<SessionRecord>,
    held: &std::collections::HashSet<Uuid>,
    ours: &Path,
) -> usize {
    let each = removing.iter().map(|r| async move {
        let (killed, _) = terminate_leftovers(r, ours).await;
        if held.contains(&r.id) {
            // Its program is gone now: the holder reports the exit to nobody and ends.
            release_holder(sessions, r.id).await;
        }
        if !persist.remove(r.id) {
            tracing::warn!(session = %r.id, name = %r.name, "a removal left unfinished stays: the registry's queue did not take its deletion (the next start retries)");
            return false;
        }
        remove_tmp(sessions, r.id).await;
        tracing::warn!(session = %r.id, name = %r.name, processes_ended = killed, "the previous server died removing this session; removed now");
        true
    });
    let done = futures::future::join_all(each).await;
    done.into_iter().filter(|removed| *removed).count()
}

/// Removes session `id`'s private TMPDIR (on a blocking thread: a program may have left many
/// files), for a session that is gone without its actor (whose stop removes it otherwise).
async fn remove_tmp(sessions: &Sessions, id: Uuid) {
    let tmp = crate::env::PrivateTmp::path_of(sessions.tmp_root(), id);
    if let Err(e) = crate::env::TMP_WORK
        .run(move || crate::env::PrivateTmp::remove(&tmp))
        .await
    {
        tracing::error!(session = %id, error = %e, "removing a session's TMPDIR panicked");
    }
}

/// The variable a server gives its sessions naming its data dir (`corral serve`'s sessions
/// have it; an embedding application's may not).
const DATA_DIR_VAR: &str = "CORRAL_DATA_DIR";

/// Whether process `pid` belongs to a server of another data dir than `ours`: its environment
/// names one. A copy of this data dir (a backup restored on the same machine) has the same
/// session ids, pids and start times in its registry: its server took the original's running
/// programs for its own survivors and ended them. `ours` is canonical ([`canonical`]).
fn foreign(pid: i32, ours: &Path) -> bool {
    crate::process::procfs::environ_value(pid, DATA_DIR_VAR)
        .is_some_and(|theirs| canonical(Path::new(&theirs)) != ours)
}

/// `path` with its links resolved, as it is when it cannot be.
fn canonical(path: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Terminates what is left of a session whose server died under it. Returns processes killed,
/// and whether the recorded main process was still alive. A main process of another data dir's
/// server ([`foreign`]) is left alone, and so is its tree.
async fn terminate_leftovers(record: &SessionRecord, ours: &Path) -> (usize, bool) {
    if let Some(identity) = &record.row.process
        && identity.is_alive_same()
        && foreign(identity.pid, ours)
    {
        tracing::warn!(
            session = %record.id,
            name = %record.name,
            pid = identity.pid,
            "its recorded process runs under another data dir's server (this data dir is a copy?): left alone"
        );
        return (0, false);
    }
    let marker = SessionTree::marker_only(record.id.to_string());
    let (tree, main_alive) = match &record.row.process {
        Some(identity) if identity.is_alive_same() => (
            SessionTree::new(identity.pid).with_marker(record.id.to_string()),
            true,
        ),
        _ => (marker, false),
    };
    let signal = record.spec.stop_signal().unwrap_or(Signal::SIGHUP);
    // No pidfd of ours leads the group (the leader is not our child), so signals go to each
    // member through its own pidfd.
    let report = sweep::terminate(&tree, signal, record.spec.grace, None).await;
    if report.signalled > 0 || report.killed > 0 {
        tracing::warn!(
            session = %record.id,
            name = %record.name,
            signalled = report.signalled,
            killed = report.killed,
            "terminated processes that outlived the previous server"
        );
    }
    (report.signalled.max(report.killed), main_alive)
}

/// Reconciles the registry with the system and restores every kept session into `sessions`.
pub async fn reconcile(
    sessions: &Sessions,
    persist: &Persist,
) -> Result<RecoveryReport, PersistError> {
    let began = Instant::now();
    let records = persist.load().await?;
    let mut report = RecoveryReport {
        found: records.len(),
        ..Default::default()
    };
    let (keep, collected) = retain(records, persist.config().ended, now_ms());
    for r in &collected {
        if persist.remove(r.id) {
            tracing::info!(session = %r.id, name = %r.name, "ended session past retention; deleted");
        } else {
            tracing::warn!(session = %r.id, name = %r.name, "ended session past retention; the registry's queue did not take its deletion (the next start retries)");
        }
    }
    report.collected = collected.len();

    // Phase 1: what did the old server leave running? One /proc scan for all sessions (a scan
    // per session costs O(sessions × processes) file reads); only sessions with survivors get
    // a full sweep, all of them concurrently (each waits its own grace).
    let ours = canonical(&persist.config().dir);
    let scan = ours.clone();
    let survivors = match tokio::task::spawn_blocking(move || survivors_by_session(&scan)).await {
        Ok(survivors) => survivors,
        Err(e) => {
            // Nothing found is nothing swept: the orphans stay until the next start's scan.
            tracing::error!(error = %e, "scanning /proc for survivors panicked");
            Default::default()
        }
    };
    // Sessions whose holder is still there keep their processes: they are adopted, not swept.
    // (A stat per session: on a blocking thread.)
    let held: std::collections::HashSet<Uuid> = match sessions.holders() {
        Some(h) => {
            let sockets: Vec<(Uuid, std::path::PathBuf)> = keep
                .iter()
                .filter(|r| !r.row.state.is_final())
                .map(|r| (r.id, h.socket(r.id)))
                .collect();
            let there = tokio::task::spawn_blocking(move || {
                sockets
                    .into_iter()
                    .filter(|(_, socket)| socket.exists())
                    .map(|(id, _)| id)
                    .collect()
            })
            .await;
            match there {
                Ok(held) => held,
                Err(e) => {
                    // None held: their sessions are swept and restarted as after a crash
                    // without holders (the holders then end with their programs).
                    tracing::error!(error = %e, "looking for the holders' sockets panicked");
                    Default::default()
                }
            }
        }
        None => Default::default(),
    };
    report.strays_released = release_strays(sessions, persist, &keep, &held).await;
    let (removing, mut keep): (Vec<_>, Vec<_>) = keep.into_iter().partition(|r| r.row.removing);
    let renamed = unique_names(&mut keep, &held);
    for r in keep.iter().filter(|r| renamed.contains_key(&r.id)) {
        if persist.create(r.clone()).is_none() {
            tracing::warn!(session = %r.id, name = %r.name, "renamed, but the registry's queue did not take the new name: the next start renames it again");
        }
    }
    let sweeps = keep
        .iter()
        .filter(|r| !r.row.state.is_final() && !held.contains(&r.id))
        .filter(|r| {
            survivors.contains_key(&r.id.to_string())
                || r.row.process.as_ref().is_some_and(|p| p.is_alive_same())
        })
        .map(|r| {
            let ours = ours.as_path();
            async move { (r.id, terminate_leftovers(r, ours).await) }
        });
    let (swept, removed) = futures::future::join(
        futures::future::join_all(sweeps),
        finish_removals(sessions, persist, removing, &held, &ours),
    )
    .await;
    let swept: std::collections::HashMap<Uuid, (usize, bool)> = swept.into_iter().collect();
    report.removed = removed;
    // Phase 2: restore, a bounded number at a time.
    let swept = &swept;
    let held = &held;
    let renamed = &renamed;
    let outcomes: Vec<(Uuid, SessionSpec, Result<Outcome, String>)> =
        futures::stream::iter(keep.into_iter().map(|record| async move {
            let id = record.id;
            let spec = record.spec.clone();
            let leftovers = swept.get(&id).copied().unwrap_or((0, false));
            let adopt = held.contains(&id);
            let note = renamed.get(&id).map(String::as_str);
            (
                id,
                spec,
                restore_one(sessions, record, leftovers, adopt, note).await,
            )
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (id, spec, outcome) in outcomes {
        match outcome {
            Ok(o) => {
                report.restored += 1;
                report.restarted += usize::from(o.restarted);
                report.reattached += usize::from(o.reattached);
                report.orphans_terminated += usize::from(o.killed > 0);
                report.processes_killed += o.killed;
                report.specs.push((id, spec));
            }
            Err(e) => {
                tracing::error!(session = %id, error = %e, "session not restored");
                report.failed.push((id, e));
            }
        }
    }
    report.took = began.elapsed();
    tracing::info!(
        found = report.found,
        restored = report.restored,
        restarted = report.restarted,
        reattached = report.reattached,
        orphans = report.orphans_terminated,
        collected = report.collected,
        strays = report.strays_released,
        failed = report.failed.len(),
        took_ms = report.took.as_millis() as u64,
        "boot reconciliation done"
    );
    Ok(report)
}

/// What happened to one session.
struct Outcome {
    /// Its process was started again.
    restarted: bool,
    /// Its process was still running under its holder and was adopted.
    reattached: bool,
    /// Leftover processes killed.
    killed: usize,
}

/// Live processes carrying a `CORRAL_SESSION_ID` marker, by marker value: one pass over /proc.
fn survivors_by_session(ours: &Path) -> std::collections::HashMap<String, Vec<i32>> {
    let me = std::process::id() as i32;
    let mut out: std::collections::HashMap<String, Vec<i32>> = Default::default();
    for p in crate::process::procfs::all() {
        if p.is_zombie() || p.pid == me || p.pid <= 1 {
            continue;
        }
        // Only a session's process is asked whose data dir it has (a second read of its
        // environment, not one for every process on the machine).
        if let Some(v) = crate::process::procfs::environ_value(p.pid, MARKER_KEY)
            && !foreign(p.pid, ours)
        {
            out.entry(v).or_default().push(p.pid);
        }
    }
    out
}

async fn restore_one(
    sessions: &Sessions,
    mut record: SessionRecord,
    (killed, main_alive): (usize, bool),
    adopt: bool,
    note: Option<&str>,
) -> Result<Outcome, String> {
    let noted = |decision: Option<String>| match (note, decision) {
        (Some(n), Some(d)) => Some(format!("{n}; {d}")),
        (Some(n), None) => Some(n.to_string()),
        (None, d) => d,
    };
    if adopt {
        // Its process kept running under its holder: the session attaches to it (and if that
        // fails, reports the process lost and applies its policy itself).
        let pid = record.row.process.as_ref().map(|p| p.pid);
        // A stop, kill or restart asked of it was under way when the server died (its process
        // may already have had the signal): the new server finishes it. One a server shutdown
        // began (interrupted) is left to the restart policy, as for any session it stopped: a
        // policy that would start it again keeps it running (the process is still there), and
        // `never` has the stop finished, as the shutdown would have (they came back running).
        let unfinished = (record.row.state == SessionState::Stopping
            && (!record.row.interrupted || record.spec.restart == RestartPolicy::Never))
            .then(|| record.row.reason.clone())
            .flatten();
        record.row.interrupted = false;
        // What is left of the stop's grace (the grace asked, from when it began): a program
        // that ignores its stop signal is not given a whole grace again at each server.
        let left_of_grace = record.row.stop_grace.map(|(grace_ms, at_ms)| {
            Duration::from_millis(grace_ms.saturating_sub(now_ms().saturating_sub(at_ms)))
        });
        // Neutral on why: an upgrade, a shutdown that kept sessions and a crash look the same
        // from here.
        let mut decision = match pid {
            Some(pid) => format!(
                "the session ran on under its holder between servers; reattaching (its process is {pid})"
            ),
            None => "the session ran on under its holder between servers; reattaching".into(),
        };
        if let Some(why) = &unfinished {
            decision.push_str(&format!("; then finishing what was asked of it ({why})"));
        }
        let id = record.id;
        return match sessions
            .restore(record, Begin::Adopt, noted(Some(decision)))
            .await
        {
            Ok(h) => {
                if let Some(why) = &unfinished {
                    h.finish_request(why, left_of_grace);
                }
                Ok(Outcome {
                    restarted: false,
                    reattached: h.info().pid.is_some(),
                    killed: 0,
                })
            }
            Err(e) => {
                // Not in the registry, its program would run on unseen and never be stopped:
                // its holder ends it (a holder never outlives its session).
                release_holder(sessions, id).await;
                Err(e.to_string())
            }
        };
    }
    let live = was_live(record.row.state, record.row.interrupted);
    let crashed = !record.row.state.is_final();
    let mut found = String::new();
    if crashed {
        let n = killed;
        let pid = record.row.process.as_ref().map(|p: &ProcessIdentity| p.pid);
        found = match (pid, main_alive) {
            (Some(pid), true) => format!(
                "the server stopped unexpectedly while the session ran; its process {pid} survived and was terminated ({n} processes)"
            ),
            // Alive but not swept: it runs under another data dir's server (see `foreign`).
            (Some(pid), false)
                if record
                    .row
                    .process
                    .as_ref()
                    .is_some_and(|p| p.is_alive_same()) =>
            {
                format!(
                    "its process {pid} runs under another data dir's server (this data dir is a copy?): left alone, this session taken as ended"
                )
            }
            (Some(pid), false) => format!(
                "the server stopped unexpectedly while the session ran; its process {pid} was already gone{}",
                if n > 0 {
                    format!(" ({n} leftover processes terminated)")
                } else {
                    String::new()
                }
            ),
            (None, _) => format!(
                "the server stopped unexpectedly while the session was {:?}",
                record.row.state
            ),
        };
    } else if live {
        found = "the server shut down while the session ran".to_string();
    }
    let restart = live
        && matches!(
            record.spec.restart,
            RestartPolicy::Always | RestartPolicy::OnFailure
        );
    let (begin, decision) = if restart {
        record.row.restarts += 1;
        record.row.state = SessionState::Starting;
        record.row.reason = None;
        let how = match (&record.spec.agent, &record.row.agent_session_id) {
            (Some(agent), Some(sid)) => format!("; {agent} resumes its session {sid}"),
            _ => String::new(),
        };
        (
            Begin::Recover,
            Some(format!(
                "{found}; restarting (policy {:?}){how}",
                record.spec.restart
            )),
        )
    } else if live {
        record.row.state = SessionState::Stopped;
        record.row.reason = Some(if crashed {
            "server crashed while it ran; not restarted (policy never)".to_string()
        } else {
            "stopped by server shutdown; not restarted (policy never)".to_string()
        });
        (
            Begin::Dormant,
            Some(format!("{found}; not restarted (policy never)")),
        )
    } else {
        (Begin::Dormant, None)
    };
    record.row.process = None;
    record.row.interrupted = false;
    let fallback = record.clone();
    match sessions.restore(record, begin, noted(decision)).await {
        Ok(_) => Ok(Outcome {
            restarted: restart,
            reattached: false,
            killed,
        }),
        Err(e) if begin == Begin::Recover => {
            // It could not start again (its program is gone, say): keep it visible, Failed.
            let mut record = fallback;
            record.row.state = SessionState::Failed;
            record.row.reason = Some(format!("could not restart after recovery: {e}"));
            sessions
                .restore(
                    record,
                    Begin::Dormant,
                    noted(Some(format!("restart failed: {e}"))),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome {
                restarted: false,
                reattached: false,
                killed,
            })
        }
        Err(e) => Err(e.to_string()),
    }
}
