//! The Linux process layer against real processes: session trees built with bash, `setsid` and
//! double forks, stopped by the sweep, checked from `/proc`.
//!
//! Tests run in parallel threads of one process, so each uses its own random marker, looks only
//! at its own processes, owns every child it spawns (under the spawn guard, as sessions do), and
//! kills whatever carries its marker when it ends, pass or fail. The binary is a child subreaper
//! (as corral is), so orphans land on the test process and must be reaped by the code under test.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_actors::process::procfs::{self, ProcStat};
use corral_actors::process::{
    Delivery, ExitStatus, MARKER_KEY, PidFd, ProcessIdentity, ReapError, Reaper, ReaperMsg,
    SessionTree, kill_all, kill_all_now, reaper, terminate, try_reap,
};
use nix::sys::signal::Signal;
use ractor::Actor;

fn me() -> i32 {
    std::process::id() as i32
}

/// Every test starts here: subreaper mode on (idempotent), like corral at boot.
fn setup() {
    reaper::enable_subreaper().expect("prctl(PR_SET_CHILD_SUBREAPER)");
}

fn new_marker() -> String {
    format!("test-{:016x}", fastrand::u64(..))
}

/// One spawned session leader and everything that carries its marker; killed on drop.
struct Session {
    marker: String,
    leader: i32,
    reaped: bool,
}

impl Session {
    /// `bash -c script` as a session leader (setsid) with `CORRAL_SESSION_ID=marker`, owned.
    fn spawn(script: &str) -> Session {
        let marker = new_marker();
        let leader = spawn_owned(&["bash", "-c", script], &marker);
        Session {
            marker,
            leader,
            reaped: false,
        }
    }

    fn tree(&self) -> SessionTree {
        SessionTree::new(self.leader).with_marker(self.marker.clone())
    }

    /// Waits for the leader to exit and reaps it, as its owner would.
    async fn reap_leader(&mut self) -> ExitStatus {
        let fd = PidFd::open(self.leader).expect("leader is unreaped, so openable");
        tokio::time::timeout(Duration::from_secs(3), fd.exited())
            .await
            .expect("leader exits");
        let status = try_reap(self.leader)
            .expect("leader is our child")
            .expect("leader has exited");
        reaper::release(self.leader);
        self.reaped = true;
        status
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        kill_marked(&self.marker);
        if !self.reaped {
            // Killed just now (or already dead): let the reaper collect it.
            reaper::disown(self.leader);
        }
    }
}

/// Spawns `argv` in a new session with the marker, stdio detached, owned by the caller.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by pid through try_reap/the reaper, as a session does"
)]
fn spawn_owned(argv: &[&str], marker: &str) -> i32 {
    let _guard = reaper::spawn_guard();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .env(MARKER_KEY, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // signal(2) and sigprocmask(2), which are async-signal-safe and touch no memory shared with
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            // Default dispositions and no blocked signal, as the product's own spawns have
            // (POSIX_SPAWN_SETSIGDEF): a test run under `nohup` (SIGHUP ignored, inherited
            // across exec) must not make these programs immune to the SIGHUP they are sent.
            for sig in [
                Signal::SIGHUP,
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGTERM,
            ] {
                nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl)
                    .map_err(io::Error::from)?;
            }
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(io::Error::from)
        });
    }
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as i32;
    reaper::own(pid);
    pid
}

/// SIGKILLs every live process that carries `marker`, wherever it is in the process tree.
fn kill_marked(marker: &str) {
    for p in marked_live(marker) {
        match PidFd::open(p.pid).and_then(|fd| fd.send_signal(Signal::SIGKILL)) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => eprintln!("cleanup: cannot kill {}: {e}", p.pid),
        }
    }
}

/// Live (non-zombie) processes carrying `marker`, anywhere.
fn marked_live(marker: &str) -> Vec<ProcStat> {
    procfs::all()
        .into_iter()
        .filter(|p| !p.is_zombie() && procfs::environ_has(p.pid, MARKER_KEY, marker))
        .collect()
}

/// Polls `/proc` until the marked processes satisfy `done`, up to 3 s.
async fn wait_for(marker: &str, what: &str, done: impl Fn(&[ProcStat]) -> bool) -> Vec<ProcStat> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let procs = marked_live(marker);
        if done(&procs) {
            return procs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {procs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing of the session is left: no member, nothing carrying the marker, and none of the
/// processes seen before the sweep exists any more — not even as a zombie of ours.
fn assert_clean(tree: &SessionTree, marker: &str, seen: &[ProcStat]) {
    let members = tree.members(&procfs::all(), me());
    assert!(members.is_empty(), "members left: {members:?}");
    let marked = marked_live(marker);
    assert!(marked.is_empty(), "marked processes left: {marked:?}");
    for p in seen {
        if let Ok(now) = procfs::read_stat(p.pid)
            && now.starttime == p.starttime
        {
            panic!("pid {} still exists after the sweep: {now:?}", p.pid);
        }
    }
}

#[tokio::test]
async fn hup_stops_bash_and_its_jobs() {
    setup();
    let mut s = Session::spawn("sleep 1000 & sleep 1000 & wait");
    let seen = wait_for(&s.marker, "bash + 2 sleeps", |p| p.len() == 3).await;
    let tree = s.tree();
    let main = PidFd::open(s.leader).expect("pidfd of leader");

    let report = terminate(&tree, Signal::SIGHUP, Duration::from_secs(2), Some(&main)).await;

    assert!(!report.grace_expired, "bash dies of SIGHUP: {report:?}");
    assert_eq!(report.signalled, 3, "{report:?}");
    assert!(report.leftover.is_empty(), "{report:?}");
    assert_eq!(
        s.reap_leader().await,
        ExitStatus::Signal(libc::SIGHUP),
        "the owner still gets the real status"
    );
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn ignoring_hup_is_killed_after_grace() {
    setup();
    let mut s = Session::spawn("trap '' HUP TERM; sleep 1000 & wait; sleep 1000");
    let seen = wait_for(&s.marker, "bash + sleep", |p| p.len() == 2).await;
    let tree = s.tree();
    let main = PidFd::open(s.leader).expect("pidfd of leader");
    let grace = Duration::from_millis(300);

    let started = Instant::now();
    let report = terminate(&tree, Signal::SIGHUP, grace, Some(&main)).await;
    let took = started.elapsed();

    assert!(report.grace_expired, "{report:?}");
    assert!(took >= grace, "returned before the grace: {took:?}");
    assert!(took < grace + Duration::from_secs(1), "took {took:?}");
    assert_eq!(report.killed, 2, "{report:?}");
    assert_eq!(s.reap_leader().await, ExitStatus::Signal(libc::SIGKILL));
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn setsid_escapee_is_found_as_descendant() {
    setup();
    // The leader ignores HUP so it is still alive, and the escapee still its child, at kill time.
    let mut s = Session::spawn("trap '' HUP TERM; setsid sleep 1000 & wait");
    let leader = s.leader;
    let seen = wait_for(&s.marker, "leader + escapee", |p| {
        p.len() == 2 && p.iter().any(|x| x.sid != leader && x.ppid == leader)
    })
    .await;
    let escapee = seen
        .iter()
        .find(|x| x.sid != leader)
        .map(|x| x.pid)
        .expect("escapee present");
    // Without the marker, only descent can find it: it has its own session and group.
    let tree = SessionTree::new(s.leader);
    let members: Vec<i32> = tree
        .members(&procfs::all(), me())
        .iter()
        .map(|m| m.pid)
        .collect();
    assert!(members.contains(&escapee), "{members:?}");

    let main = PidFd::open(s.leader).expect("pidfd of leader");
    let report = terminate(
        &tree,
        Signal::SIGHUP,
        Duration::from_millis(200),
        Some(&main),
    )
    .await;

    assert!(report.leftover.is_empty(), "{report:?}");
    assert_eq!(s.reap_leader().await, ExitStatus::Signal(libc::SIGKILL));
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn double_forked_orphan_is_found_by_sid() {
    setup();
    // With job control on, the subshell and the last sleep get their own process groups; the
    // subshell's background sleep is orphaned to us (subreaper), keeping only the session id.
    let mut s = Session::spawn("set -m; (sleep 1000 &); sleep 1000");
    let leader = s.leader;
    let seen = wait_for(&s.marker, "orphan in the session", |p| {
        p.iter()
            .any(|x| x.sid == leader && x.pgid != leader && x.ppid == me())
    })
    .await;
    let orphan = seen
        .iter()
        .find(|x| x.sid == leader && x.pgid != leader && x.ppid == me())
        .map(|x| x.pid)
        .expect("orphan present");
    let tree = SessionTree::new(s.leader); // no marker: found by sid alone
    let members: Vec<i32> = tree
        .members(&procfs::all(), me())
        .iter()
        .map(|m| m.pid)
        .collect();
    assert!(members.contains(&orphan), "{members:?}");

    let main = PidFd::open(s.leader).expect("pidfd of leader");
    let report = terminate(&tree, Signal::SIGHUP, Duration::from_secs(2), Some(&main)).await;

    assert!(report.leftover.is_empty(), "{report:?}");
    assert!(
        report.killed >= 1,
        "the orphan outlives SIGHUP to the leader's group: {report:?}"
    );
    s.reap_leader().await;
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn orphaned_setsid_escapee_is_found_by_marker() {
    setup();
    let mut s = Session::spawn(r#"setsid bash -c "sleep 1000" & sleep 0.2; exit 0"#);
    assert_eq!(s.reap_leader().await, ExitStatus::Code(0));
    let leader = s.leader;
    let seen = wait_for(&s.marker, "orphaned escapee", |p| {
        p.len() == 1 && p[0].sid != leader && p[0].ppid == me()
    })
    .await;
    let escapee = seen[0].pid;
    let unmarked = SessionTree::new(leader);
    assert!(
        unmarked.members(&procfs::all(), me()).is_empty(),
        "only the marker can find it"
    );
    let tree = s.tree();
    let members: Vec<i32> = tree
        .members(&procfs::all(), me())
        .iter()
        .map(|m| m.pid)
        .collect();
    assert_eq!(members, vec![escapee]);

    // The leader is reaped, so its group must not be signalled: main = None.
    let report = terminate(&tree, Signal::SIGHUP, Duration::from_secs(2), None).await;

    assert_eq!(report.signalled, 1, "{report:?}");
    assert!(report.leftover.is_empty(), "{report:?}");
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn unrelated_process_is_not_touched() {
    setup();
    let mut s = Session::spawn("sleep 1000 & sleep 1000 & wait");
    let seen = wait_for(&s.marker, "bash + 2 sleeps", |p| p.len() == 3).await;
    // A bystander: its own session, another marker, and no link to the session.
    let by_marker = new_marker();
    let by_pid = spawn_owned(&["sleep", "1000"], &by_marker);
    let mut bystander = Session {
        marker: by_marker,
        leader: by_pid,
        reaped: false,
    };
    wait_for(&bystander.marker, "bystander", |p| p.len() == 1).await;
    let by_id = ProcessIdentity::of(by_pid).expect("bystander identity");

    let tree = s.tree();
    let report = kill_all(&tree).await;

    assert!(report.leftover.is_empty(), "{report:?}");
    assert_eq!(report.killed, 3, "{report:?}");
    assert!(
        by_id.is_alive_same(),
        "the bystander must survive the sweep"
    );
    let by_fd = PidFd::open(by_pid).expect("bystander pidfd");
    assert_eq!(
        by_fd.send_signal(Signal::SIGKILL).expect("kill bystander"),
        Delivery::Delivered
    );
    // `s` owns its leader: kill_all left its zombie for us.
    assert_eq!(s.reap_leader().await, ExitStatus::Signal(libc::SIGKILL));
    assert_clean(&tree, &s.marker, &seen);
    assert_eq!(
        bystander.reap_leader().await,
        ExitStatus::Signal(libc::SIGKILL)
    );
}

#[tokio::test]
async fn kill_all_now_is_synchronous_and_reapable() {
    setup();
    let mut s = Session::spawn("sleep 1000 & sleep 1000 & wait");
    let seen = wait_for(&s.marker, "bash + 2 sleeps", |p| p.len() == 3).await;
    let tree = s.tree();

    let report = kill_all_now(&tree);

    assert_eq!(report.killed, 3, "{report:?}");
    assert!(report.leftover.is_empty(), "{report:?}");
    assert_eq!(s.reap_leader().await, ExitStatus::Signal(libc::SIGKILL));
    // The sleeps were bash's children when killed; they die reparented to us, and a reaping
    // pass (what the Reaper actor runs on SIGCHLD) collects them.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        reaper::reap_now();
        let left: Vec<i32> = seen
            .iter()
            .filter(|p| matches!(procfs::read_stat(p.pid), Ok(n) if n.starttime == p.starttime))
            .map(|p| p.pid)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not reaped: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_clean(&tree, &s.marker, &seen);
}

#[tokio::test]
async fn reaper_reaps_orphans_but_never_owned_children() {
    setup();
    let (actor, handle) = Actor::spawn(None, Reaper, ()).await.expect("reaper starts");
    let reaped = reaper::reaped_counter();
    let before = reaped.load(std::sync::atomic::Ordering::Relaxed);

    // An orphan: the leader exits, its background sleep reparents to us and exits later.
    let mut s = Session::spawn("sleep 0.5 & exit 0");
    assert_eq!(s.reap_leader().await, ExitStatus::Code(0));
    let orphan = wait_for(&s.marker, "orphan", |p| p.len() == 1 && p[0].ppid == me()).await;
    let orphan = orphan[0].clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match procfs::read_stat(orphan.pid) {
            Ok(n) if n.starttime == orphan.starttime => {
                assert!(Instant::now() < deadline, "orphan not reaped: {n:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break,
        }
    }
    assert!(reaped.load(std::sync::atomic::Ordering::Relaxed) > before);

    // An owned child: exits with 7; no pass may take its status.
    let marker = new_marker();
    let owned = spawn_owned(&["bash", "-c", "exit 7"], &marker);
    let fd = PidFd::open(owned).expect("unreaped child is openable");
    tokio::time::timeout(Duration::from_secs(3), fd.exited())
        .await
        .expect("exits");
    reaper::reap_now();
    let n = ractor::call!(actor, ReaperMsg::ReapAndReply).expect("reaper answers");
    assert_eq!(n, 0, "nothing unowned was waiting");
    assert_eq!(
        procfs::read_stat(owned).map(|p| p.state).ok(),
        Some('Z'),
        "still a zombie, waiting for its owner"
    );
    assert_eq!(
        try_reap(owned).expect("still ours"),
        Some(ExitStatus::Code(7))
    );
    reaper::release(owned);
    assert!(matches!(
        try_reap(owned),
        Err(ReapError::NotAChild { pid }) if pid == owned
    ));

    actor.stop(None);
    handle.await.expect("reaper stops");
}

#[tokio::test]
async fn pidfd_signals_and_reports_exit() {
    setup();
    let marker = new_marker();
    let pid = spawn_owned(&["sleep", "1000"], &marker);
    let fd = PidFd::open(pid).expect("pidfd");
    assert_eq!(fd.pid(), pid);
    assert!(!fd.is_exited());
    assert_eq!(
        fd.send_signal(Signal::SIGKILL).expect("kill"),
        Delivery::Delivered
    );
    tokio::time::timeout(Duration::from_secs(3), fd.exited())
        .await
        .expect("exits");
    assert!(fd.is_exited());
    // A zombie still accepts signals (and ignores them).
    assert_eq!(
        fd.send_signal(Signal::SIGKILL).expect("zombie"),
        Delivery::Delivered
    );
    assert_eq!(try_reap(pid).expect("ours"), Some(ExitStatus::Signal(9)));
    reaper::release(pid);
    // Reaped: the pidfd knows, and can never reach whoever gets the pid next.
    assert_eq!(
        fd.send_signal(Signal::SIGKILL).expect("reaped"),
        Delivery::AlreadyExited
    );
}

#[test]
fn limits_are_readable() {
    let (old, new) = corral_actors::process::raise_nofile().expect("raise nofile");
    assert!(new >= old);
    assert!(corral_actors::process::pty_max().is_some_and(|m| m > 0));
    assert!(!procfs::boot_id().expect("boot id").is_empty());
}

#[tokio::test]
async fn fork_loop_cannot_outrun_the_sweep() {
    setup();
    let mut s = Session::spawn("trap '' HUP; while :; do sleep 1000 & done");
    wait_for(&s.marker, "a crowd of sleeps", |p| p.len() > 50).await;
    let tree = s.tree();
    let main = PidFd::open(s.leader).expect("pidfd of leader");
    // Everything ignores the stop signal, so the sweep meets a loop that is still forking.
    let report = terminate(
        &tree,
        Signal::SIGHUP,
        Duration::from_millis(100),
        Some(&main),
    )
    .await;
    assert!(report.grace_expired, "{report:?}");
    assert!(report.killed > 50, "{report:?}");
    assert!(report.leftover.is_empty(), "{report:?}");
    s.reap_leader().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let zombies: Vec<i32> = procfs::children_of(me())
            .into_iter()
            .filter(|pid| {
                procfs::environ_has(*pid, MARKER_KEY, &s.marker)
                    || matches!(procfs::read_stat(*pid), Ok(p) if p.is_zombie() && p.sid == s.leader)
            })
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "zombies left: {zombies:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_clean(&tree, &s.marker, &[]);
}
