//! Finish: how a session's process ends for the actor — its exit collected (drain to EOF,
//! reap, sweep of what is left of its tree) or its holder lost — before the restart policy
//! decides ([`super`]): Running → Exited, or lost.

use super::*;

/// Longest an exited program's last output waits in its holder for a log that cannot take it
/// (a full disk) before it is given up on, and said lost.
const DISK_WAIT: Duration = Duration::from_secs(60);

impl SessionActorState {
    /// The holder died under a running process: kill its tree (its processes reparented to
    /// this server, a subreaper, or to init), record the loss, apply the restart policy.
    #[tracing::instrument(name = "session.lost", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    pub(super) async fn lose_process(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        // invariant: the caller checked `running` is Some.
        let mut run = self.running.take().expect("a running process");
        *self.shared.writer.write() = None;
        drop(run.writer.take());
        if let Some((link, _)) = &run.held {
            link.forget();
        }
        let report = process::sweep::kill_all(&run.tree).await;
        tracing::error!(pid = run.pid, killed = report.killed, %why, "session lost its holder");
        // Its exit status went with the holder; the sweep made sure nothing runs.
        run.reaped = true;
        drop(run);
        // What the dead holder could not remove itself.
        if let Some(holders) = &self.holders {
            holders.forget_async(self.shared.id).await;
        }
        {
            let mut s = self.shared.status.write();
            s.no_process();
            s.last_exit = Some(ExitStatus::Signal(libc::SIGKILL));
        }
        self.shared
            .set_state(SessionState::Exited, Some(why.clone()));
        self.shared.emit(EventKind::Exited {
            status: ExitStatus::Signal(libc::SIGKILL),
        });
        self.settle_loss(myself, format!("lost: {why}"));
    }

    /// After a lost process: the restart policy decides, as after a failure.
    pub(super) fn settle_loss(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        match self.spec.restart {
            RestartPolicy::Never => {
                self.shared.set_state(SessionState::Stopped, Some(why));
            }
            RestartPolicy::OnFailure | RestartPolicy::Always => self.schedule_restart(myself, why),
        }
    }

    /// Collects the exit of the current process (which has exited or is being killed), sweeps
    /// what is left of its tree (unless the caller just did), drains the output, and announces
    /// the exit.
    #[tracing::instrument(name = "session.exit", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    pub(super) async fn finish_process(&mut self, swept: bool) -> ExitStatus {
        // invariant: callers check `running` is Some.
        let mut run = self.running.take().expect("a running process");
        *self.shared.writer.write() = None;
        // Input to a process that is going away has nowhere to go.
        drop(run.writer.take());
        // When it exited, as its holder saw it (it may have been while no server was there).
        let mut exited_at = None;
        let status = match &mut run.held {
            Some((_, exit)) => {
                // The holder is the parent: it reaps and reports.
                let reported = tokio::time::timeout(KILL_WAIT, exit.wait_for(|e| e.is_some()))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|e| *e));
                match reported {
                    Some(exit) => {
                        exited_at =
                            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(exit.at_ms));
                        exit.status
                    }
                    None => {
                        tracing::error!(
                            pid = run.pid,
                            "holder reported no exit; sweeping and releasing it"
                        );
                        process::sweep::kill_all(&run.tree).await;
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                }
            }
            None => {
                if let Some(pidfd) = &run.pidfd
                    && tokio::time::timeout(KILL_WAIT, pidfd.exited())
                        .await
                        .is_err()
                {
                    tracing::error!(
                        pid = run.pid,
                        "main process still alive after kill; sweeping again"
                    );
                    process::sweep::kill_all(&run.tree).await;
                }
                let status = match process::try_reap(run.pid) {
                    Ok(Some(status)) => status,
                    Ok(None) => {
                        tracing::error!(pid = run.pid, "exited process not reapable yet");
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                    Err(e) => {
                        tracing::error!(pid = run.pid, error = %e, "could not reap the main process");
                        ExitStatus::Signal(libc::SIGKILL)
                    }
                };
                reaper::release(run.pid);
                status
            }
        };
        run.reaped = true;
        // What is left of the tree goes the way of a stop (the kernel already hung up the
        // session when its leader exited).
        if !swept {
            let report = process::sweep::kill_all(&run.tree).await;
            if report.killed > 0 {
                tracing::info!(
                    pid = run.pid,
                    killed = report.killed,
                    "swept leftovers of the session's tree"
                );
            }
        }
        for eof in &mut run.eof {
            let mut waited_for_disk = Duration::ZERO;
            loop {
                let head = self.shared.ring.head();
                if tokio::time::timeout(DRAIN_TIMEOUT, eof.wait_for(|done| *done))
                    .await
                    .is_ok()
                {
                    break;
                }
                // A held terminal that is closed has its last bytes in the holder's ring (up to
                // its size): keep draining while they move. Only a terminal still held open by
                // a leftover process, or a drain that stopped moving, is given up on.
                let closed = run.shm.as_ref().is_some_and(|r| r.closed());
                if closed && self.shared.ring.head() > head {
                    continue;
                }
                // The log cannot take more (a full disk): the holder keeps the rest, which goes
                // in when the disk does (bounded: this session's actor waits meanwhile).
                if closed && self.shared.persist_error().is_some() && waited_for_disk < DISK_WAIT {
                    if waited_for_disk.is_zero() {
                        tracing::warn!(
                            pid = run.pid,
                            "waiting (up to {DISK_WAIT:?}) for the log to take the last output of an exited program"
                        );
                    }
                    waited_for_disk += DRAIN_TIMEOUT;
                    continue;
                }
                // Given up: what the holder still has goes with it, and that is said.
                if let Some(shm) = &run.shm {
                    let (from, to) = (self.shared.ring.head(), shm.end());
                    if to > from {
                        let why = self
                            .shared
                            .persist_error()
                            .unwrap_or_else(|| "the terminal is still held open".into());
                        self.shared.emit(EventKind::Recovery {
                            decision: format!(
                                "output {from}..{to} lost: the program's last output could not be logged ({why})"
                            ),
                        });
                    }
                }
                tracing::warn!(
                    pid = run.pid,
                    "output not drained within {DRAIN_TIMEOUT:?}; something still holds the terminal, or the log cannot take it"
                );
                break;
            }
        }
        drop(run);
        {
            let mut s = self.shared.status.write();
            s.no_process();
            s.last_exit = Some(status);
        }
        tracing::info!(session = %self.shared.id, %status, "process exited");
        let at = exited_at.map_or_else(SystemTime::now, |at| at.min(SystemTime::now()));
        self.shared.set_state_at(SessionState::Exited, None, at);
        self.shared.emit_at(EventKind::Exited { status }, at);
        status
    }
}
