//! `SessionTree`: which processes belong to one corral session.
//!
//! A session's main process starts as a session leader (pid = pgid = sid), but what it spawns can
//! leave in several ways: a new process group (job control), a new session (`setsid`), or a lost
//! parent (double fork, reparenting to init or to corral as subreaper). No single rule finds them
//! all, so membership is the union of four, cheapest first:
//!
//! 1. descendants of the main process (ppid links in `/proc`) — catches `setsid` escapees whose
//!    parent is still alive;
//! 2. the session id — catches double-forked orphans that kept the session;
//! 3. the recorded process groups;
//! 4. the environment marker (`CORRAL_SESSION_ID=<uuid>`, inherited by everything the session
//!    spawns) — catches orphans that both left the session and lost their parent. Reading an
//!    environ costs a file read, so it is only checked for processes not matched already whose
//!    parent is a place orphans land: init, corral itself, or one of corral's ancestors (an
//!    orphan of corral's subtree is reparented to the nearest subreaper *above* its dead parent,
//!    which is one of those unless it is itself a member).
//!
//! plus every descendant of any member. Never by process name, and never corral itself, its
//! ancestors, or pid 1: the protected set is excluded even if a rule matches it, and a rule whose
//! sid/pgid is shared with a protected process is ignored (a mis-recorded tree must not sweep the
//! shell corral runs in).
//!
//! Where to look ([`SessionTree::candidates`]): while corral is a child subreaper, every process a
//! session ever started is a descendant of the main process or of an *unowned* child of corral
//! (an orphan reparented to us), so the rules run over just those subtrees, walked through the
//! kernel's `children` lists: a stop costs O(the session's processes), not O(every process on the
//! machine) (`stop_all` of N sessions was O(N²) file reads). Everything else — no subreaper,
//! no `children` files, a marker-only tree after a restart (its orphans went to init) — scans all
//! of `/proc`. What the short walk cannot see is a process that inherited the marker but was
//! started by a daemon outside our tree (say `systemd-run --setenv`): not our descendant, so not
//! the session's to stop.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::process::procfs::{self, ProcStat};
use crate::process::reaper;

/// The environment variable every process of a session inherits.
pub const MARKER_KEY: &str = "CORRAL_SESSION_ID";

/// What corral recorded about one session's processes, enough to find all of them later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTree {
    /// The session's main process (the one the session actor spawned and owns).
    pub main_pid: i32,
    /// Its session id (= `main_pid` for a session leader).
    pub sid: i32,
    /// Process groups known to belong to the session (at least the leader's own).
    pub pgids: BTreeSet<i32>,
    /// The environment marker, as (key, value), e.g. (`CORRAL_SESSION_ID`, uuid).
    pub marker: Option<(String, String)>,
    /// The session's holder (0: none), the parent and subreaper of its processes: every
    /// process under it belongs to the session (a holder holds one), and it is never a member.
    pub holder: i32,
}

impl SessionTree {
    /// The tree of a session leader: sid = pgid = `main_pid`, no marker yet.
    pub fn new(main_pid: i32) -> SessionTree {
        SessionTree {
            main_pid,
            sid: main_pid,
            pgids: BTreeSet::from([main_pid]),
            marker: None,
            holder: 0,
        }
    }

    /// A tree known only by its marker (recovery, when the recorded main process is gone):
    /// no pid, session or group rules, so nothing but marked processes (and their descendants)
    /// can match.
    pub fn marker_only(session_id: impl Into<String>) -> SessionTree {
        SessionTree {
            main_pid: 0,
            sid: 0,
            pgids: BTreeSet::new(),
            marker: Some((MARKER_KEY.to_owned(), session_id.into())),
            holder: 0,
        }
    }

    /// Sets the marker to (`CORRAL_SESSION_ID`, `session_id`).
    pub fn with_marker(mut self, session_id: impl Into<String>) -> SessionTree {
        self.marker = Some((MARKER_KEY.to_owned(), session_id.into()));
        self
    }

    /// Adds a process group known to belong to the session.
    pub fn with_pgid(mut self, pgid: i32) -> SessionTree {
        self.pgids.insert(pgid);
        self
    }

    /// The processes [`SessionTree::members`] should be given: corral itself plus the subtrees
    /// of the main process and of every unowned child of corral when that is enough (see the
    /// module docs), else all of `/proc`.
    pub fn candidates(&self) -> Vec<ProcStat> {
        if self.main_pid > 0
            && (reaper::subreaper_enabled() || self.holder > 0)
            && let Some(procs) = self.descendant_candidates()
        {
            return procs;
        }
        procfs::all()
    }

    /// [`candidates`](Self::candidates) for a caller looking at many sessions at once (usage
    /// figures): `adopted` is [`adopted`] read once for all of them, so each session costs its
    /// own subtrees only. Falls back to all of `/proc` as `candidates` does.
    pub fn candidates_among(&self, adopted: Option<&[ProcStat]>) -> Vec<ProcStat> {
        let short = self.main_pid > 0 && (reaper::subreaper_enabled() || self.holder > 0);
        let Some(adopted) = adopted.filter(|_| short) else {
            return procfs::all();
        };
        let mut seen: HashSet<i32> = adopted.iter().map(|p| p.pid).collect();
        let mut out = adopted.to_vec();
        procfs::walk_subtree(self.main_pid, &mut seen, &mut out);
        if self.holder > 0 {
            procfs::walk_subtree(self.holder, &mut seen, &mut out);
        }
        out
    }

    /// The short walk; `None` when the kernel has no `children` files or corral's children kept
    /// changing under the walk (then the caller scans everything).
    fn descendant_candidates(&self) -> Option<Vec<ProcStat>> {
        let me = std::process::id() as i32;
        let mut seen = HashSet::from([me]);
        let mut out = vec![procfs::read_stat(me).ok()?];
        procfs::walk_subtree(self.main_pid, &mut seen, &mut out);
        // Under a holder, orphans land on the holder.
        if self.holder > 0 {
            procfs::walk_subtree(self.holder, &mut seen, &mut out);
        }
        // Orphans land on us; re-read our children after each walk, because a process whose
        // parent died during the walk was moved onto our list before its parent vanished. Our
        // owned children are sessions' main processes and our disowned live ones are holders
        // (each session's own is walked above): neither is an orphan, and walking every
        // holder's subtree on every sweep made 200 concurrent stops quadratic.
        for _ in 0..8 {
            let kids = procfs::children_from_task_files("/proc/self/task")?;
            let fresh: Vec<i32> = kids
                .into_iter()
                .filter(|k| !seen.contains(k) && !reaper::is_owned(*k) && !reaper::is_disowned(*k))
                .collect();
            if fresh.is_empty() {
                return Some(out);
            }
            for kid in fresh {
                procfs::walk_subtree(kid, &mut seen, &mut out);
            }
        }
        None
    }

    /// Every live (non-zombie) process in `procs` that belongs to this session, by the rules in
    /// the module docs, sorted by pid. `self_pid` is corral's own pid: it, its ancestors and pid 1
    /// are never members.
    pub fn members(&self, procs: &[ProcStat], self_pid: i32) -> Vec<ProcStat> {
        let by_pid: HashMap<i32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in procs {
            children.entry(p.ppid).or_default().push(p.pid);
        }

        // Protected: corral, its ancestors, init (and the kernel's pid 0). These are also
        // exactly the parents an orphan of our subtree can be reparented to.
        let mut protected: HashSet<i32> = HashSet::from([0, 1, self_pid]);
        if self.holder > 0 {
            protected.insert(self.holder);
        }
        let mut cursor = self_pid;
        while let Some(p) = by_pid.get(&cursor) {
            if p.ppid <= 0 || !protected.insert(p.ppid) {
                break;
            }
            cursor = p.ppid;
        }
        let protected_sids: HashSet<i32> = protected
            .iter()
            .filter_map(|pid| by_pid.get(pid).map(|p| p.sid))
            .collect();
        let protected_pgids: HashSet<i32> = protected
            .iter()
            .filter_map(|pid| by_pid.get(pid).map(|p| p.pgid))
            .collect();

        let use_sid = self.sid > 1 && !protected_sids.contains(&self.sid);
        if !use_sid && self.sid != 0 {
            tracing::warn!(
                sid = self.sid,
                "session id is shared with corral or its ancestors; not matching by sid"
            );
        }
        let pgids: BTreeSet<i32> = self
            .pgids
            .iter()
            .copied()
            .filter(|g| {
                let ok = *g > 1 && !protected_pgids.contains(g);
                if !ok {
                    tracing::warn!(pgid = g, "process group is shared with corral; ignored");
                }
                ok
            })
            .collect();

        let mut matched: BTreeSet<i32> = BTreeSet::new();
        if by_pid.contains_key(&self.main_pid) && !protected.contains(&self.main_pid) {
            matched.insert(self.main_pid);
        }
        for p in procs {
            if protected.contains(&p.pid) {
                continue;
            }
            if (use_sid && p.sid == self.sid) || pgids.contains(&p.pgid) {
                matched.insert(p.pid);
            }
        }
        // Everything a holder parents is its session's (orphans reparent to it).
        if self.holder > 0 {
            for p in procs {
                if p.ppid == self.holder && !protected.contains(&p.pid) {
                    matched.insert(p.pid);
                }
            }
        }
        if let Some((key, value)) = &self.marker {
            for p in procs {
                if matched.contains(&p.pid)
                    || protected.contains(&p.pid)
                    || p.is_zombie()
                    || !protected.contains(&p.ppid)
                {
                    continue;
                }
                // Owned pids are the main processes of (other) sessions, never anyone's orphans:
                // skipping them keeps a sweep from reading every session's environ, which made
                // stopping N sessions cost O(N²) file reads.
                if p.pid != self.main_pid && reaper::is_owned(p.pid) {
                    continue;
                }
                if procfs::environ_has(p.pid, key, value) {
                    matched.insert(p.pid);
                }
            }
        }

        // Close over descendants (this is where rule 1 takes effect, from the main process).
        let mut queue: Vec<i32> = matched.iter().copied().collect();
        while let Some(pid) = queue.pop() {
            for kid in children.get(&pid).into_iter().flatten() {
                if !protected.contains(kid) && matched.insert(*kid) {
                    queue.push(*kid);
                }
            }
        }

        matched
            .into_iter()
            .filter_map(|pid| by_pid.get(&pid).copied())
            .filter(|p| !p.is_zombie())
            .cloned()
            .collect()
    }
}

/// Corral itself and the orphans it adopted (its children that are neither a session's main
/// process nor a holder), with their subtrees: the part of every session's candidates that is
/// the same for all (see [`SessionTree::candidates_among`]). `None` without `children` files.
pub fn adopted() -> Option<Vec<ProcStat>> {
    let me = std::process::id() as i32;
    let mut seen = HashSet::from([me]);
    let mut out = vec![procfs::read_stat(me).ok()?];
    for kid in procfs::children_from_task_files("/proc/self/task")? {
        if !reaper::is_owned(kid) && !reaper::is_disowned(kid) {
            procfs::walk_subtree(kid, &mut seen, &mut out);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgid: i32, sid: i32) -> ProcStat {
        ProcStat {
            pid,
            comm: "x".into(),
            state: 'S',
            ppid,
            pgid,
            sid,
            starttime: 1,
            cpu_ticks: 0,
            rss_pages: 0,
        }
    }

    #[test]
    fn rules_and_protection() {
        // 1 init; 10 shell (sid 10); 20 corral (child of 10, same session); 30 leader;
        // 31 child of 30 in own group; 32 setsid escapee child of 31; 33 double-fork orphan
        // (ppid 1, sid 30); 40 unrelated; 41 child of escapee 32; 50 zombie in session.
        let mut procs = vec![
            p(1, 0, 1, 1),
            p(10, 1, 10, 10),
            p(20, 10, 20, 10),
            p(30, 20, 30, 30),
            p(31, 30, 31, 30),
            p(32, 31, 32, 32),
            p(33, 1, 30, 30),
            p(40, 1, 40, 40),
            p(41, 32, 32, 32),
            p(50, 30, 30, 30),
        ];
        procs[9].state = 'Z';
        let tree = SessionTree::new(30);
        let pids: Vec<i32> = tree.members(&procs, 20).iter().map(|m| m.pid).collect();
        assert_eq!(pids, vec![30, 31, 32, 33, 41]);

        // A tree mis-recorded with corral's own session matches nothing by sid.
        let bad = SessionTree {
            main_pid: 99,
            sid: 10,
            pgids: BTreeSet::from([20]),
            marker: None,
            holder: 0,
        };
        assert!(bad.members(&procs, 20).is_empty());
    }

    #[test]
    fn under_a_holder_everything_it_parents_is_the_sessions_but_the_holder_is_not() {
        // 20 corral; 25 holder (own session, a child of corral); 30 leader under it; 60 an
        // escapee (own session, no marker) orphaned onto the holder; 61 its child.
        let procs = vec![
            p(1, 0, 1, 1),
            p(20, 1, 20, 20),
            p(25, 20, 25, 25),
            p(30, 25, 30, 30),
            p(60, 25, 60, 60),
            p(61, 60, 60, 60),
            p(70, 1, 70, 70),
        ];
        let mut tree = SessionTree::new(30);
        tree.holder = 25;
        let pids: Vec<i32> = tree.members(&procs, 20).iter().map(|m| m.pid).collect();
        assert_eq!(pids, vec![30, 60, 61]);
    }
}
