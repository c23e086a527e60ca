//! Start: how a session's process comes to run — spawned by this server (its own PTY or
//! pipes), under a new holder, or adopted from the holder a previous server left — and the
//! readers, writer and holder link every kind gets the same way ([`super::super::spawned`]).
//! Part of the session actor's state machine ([`super`]): Starting → Running.

use super::*;

/// Programs started at once without a holder, each on a blocking thread: 300 sessions started
/// together would otherwise take a thread each.
pub const SPAWNS_AT_ONCE: usize = 8;

/// See [`SPAWNS_AT_ONCE`].
static SPAWNS: crate::blocking::Bounded = crate::blocking::Bounded::new(SPAWNS_AT_ONCE);

impl SessionActorState {
    /// Spawns a new process incarnation and its I/O actors.
    #[tracing::instrument(name = "session.spawn", skip_all, fields(session = %self.shared.id, name = %self.shared.name, generation = self.generation + 1))]
    pub(super) async fn start(
        &mut self,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), SessionError> {
        self.shared.set_state(SessionState::Starting, None);
        self.generation += 1;
        let generation = self.generation;
        // Where the new process's output starts: after a predecessor's, the screen resets the
        // modes it left there.
        let base = self.shared.ring.head();
        if base > 0
            && let Some(screen) = &self.screen
            && let Err(e) = screen.send_message(crate::screen::ScreenMsg::NewProcessAt(base))
        {
            tracing::debug!(error = %e, "screen gone; no modes to reset");
        }
        let id = self.shared.id;
        let envv = env::build(
            id,
            self.spec.mode == Mode::Pty,
            self.tmp.path(),
            &self.spec.env,
        );
        let (size, agent_session, transcript, prompted) = {
            let s = self.shared.status.read();
            (
                s.size,
                s.agent_session_id.clone(),
                s.agent_transcript.clone(),
                s.agent_prompted,
            )
        };
        // A conversation is resumed after a crash or a restart once it exists: its transcript
        // holds a message. `--resume` of one never written fails at once ("No conversation
        // found"; exit 1), every restart again: no prompt yet, only `/exit`, or a prompt whose
        // turn the process did not write before it ended (a restart 12 ms after the turn's
        // Stop hook: the last process is gone by now, so what its transcript holds is all it
        // will hold). (Unknown where it is kept — a record from before that was noted —:
        // resumed as before.)
        // Its process ran before: here (a restart), under a previous server (a crash), or
        // under one that left it stopped (a `restart` of a session a new server restored).
        let ran_before = generation > 1 || matches!(self.begin, Begin::Recover | Begin::Dormant);
        let resume = match agent_session.filter(|_| ran_before) {
            Some(id) => {
                // The transcript (up to 1 MiB of it) is read on a blocking thread.
                let written = match transcript {
                    None => true,
                    Some(p) => tokio::task::spawn_blocking(move || {
                        crate::agent::has_conversation(std::path::Path::new(&p))
                    })
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(agent_session = %id, error = %e, "reading the transcript panicked: resumed as if written");
                        true
                    }),
                };
                if !written && prompted {
                    tracing::warn!(agent_session = %id, "the last process ended before it wrote its conversation down: the agent starts afresh");
                } else if !written {
                    tracing::info!(agent_session = %id, "no conversation to resume yet: the agent starts afresh");
                }
                written.then_some(id)
            }
            None => None,
        };
        // An agent profile rewrites argv: its settings (a file written on a blocking thread),
        // and after a crash, its resume template.
        let argv = match Profile::parse(self.spec.agent.as_deref()) {
            Ok(Some(profile)) => {
                let argv = self.spec.argv.clone();
                let mode = self.spec.mode;
                let dir = self.tmp.path().to_path_buf();
                let hooks = self.spec.hook_command.clone().unwrap_or_default();
                tokio::task::spawn_blocking(move || {
                    profile.prepare(&argv, mode, &dir, &hooks, resume.as_deref())
                })
                .await
                .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked)))
                .map_err(|e| SessionError::Spawn(format!("agent profile: {e}")))?
            }
            Ok(None) => self.spec.argv.clone(),
            Err(e) => return Err(e.into()),
        };
        let spawned = match (self.spec.mode, &self.holders) {
            (mode, Some(holders)) => {
                let holders = holders.clone();
                let program = crate::holder::launch::Program {
                    argv: argv.clone(),
                    env: envv.clone(),
                    cwd: self.spec.cwd.clone(),
                    size,
                    base: self.shared.ring.head(),
                    // What the program may write while no server is attached before it
                    // blocks (the session Ring's capacity, at least HOLDER_RING).
                    ring: self.spec.ring_capacity.max(HOLDER_RING),
                    pipes: mode != Mode::Pty,
                };
                let attached = tokio::task::spawn_blocking(move || {
                    crate::holder::launch::launch(&holders, id, program)
                })
                .await
                .map_err(|e| SessionError::Spawn(format!("holder launch: {e}")))?
                .map_err(|e| SessionError::Spawn(format!("holder: {e}")))?;
                Spawned::held(attached).map_err(|e| SessionError::Spawn(e.to_string()))?
            }
            // The PTY's opening and the program's spawn (its PATH search, `posix_spawn` waiting
            // for the exec) block: on the blocking pool, as the holder's launch above, a few at
            // a time ([`SPAWNS_AT_ONCE`]).
            (Mode::Pty, None) => {
                let cwd = self.spec.cwd.clone();
                let p = SPAWNS
                    .run(move || pty::spawn(&argv, cwd.as_deref(), &envv, size))
                    .await
                    .map_err(|e| SessionError::Spawn(format!("spawn: {e}")))?
                    .map_err(|e| SessionError::Spawn(e.to_string()))?;
                Spawned {
                    pid: p.pid,
                    pidfd: Some(p.pidfd),
                    master: Some(Master::Own(p.master)),
                    output: Source::Fd(p.output),
                    input: p.input,
                    stderr: None,
                    held: None,
                }
            }
            (Mode::Pipe | Mode::StreamJson, None) => {
                let cwd = self.spec.cwd.clone();
                let p = SPAWNS
                    .run(move || pipe::spawn(&argv, cwd.as_deref(), &envv))
                    .await
                    .map_err(|e| SessionError::Spawn(format!("spawn: {e}")))?
                    .map_err(|e| SessionError::Spawn(e.to_string()))?;
                Spawned {
                    pid: p.pid,
                    pidfd: Some(p.pidfd),
                    master: None,
                    output: Source::Fd(p.stdout),
                    input: p.stdin,
                    stderr: Some(p.stderr),
                    held: None,
                }
            }
        };
        self.run(myself, generation, spawned).await
    }

    /// Attaches to the holder a previous server left running ([`Begin::Adopt`]); if that fails,
    /// the process is lost and the restart policy decides.
    #[tracing::instrument(name = "session.adopt", skip_all, fields(session = %self.shared.id, name = %self.shared.name))]
    pub(super) async fn adopt(&mut self, myself: &ActorRef<SessionMsg>) {
        self.generation += 1;
        let generation = self.generation;
        let id = self.shared.id;
        let recorded = self.shared.status.read().identity.clone();
        let mut holder_gone = false;
        let attached = match &self.holders {
            Some(holders) => {
                let socket = holders.socket(id);
                let from = self.shared.ring.head();
                tokio::task::spawn_blocking(move || crate::holder::launch::attach(&socket, from))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        r.map_err(|e| {
                            // Nobody answers at its socket: the holder died while no server ran.
                            holder_gone = matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionRefused
                                    | std::io::ErrorKind::NotFound
                            );
                            e.to_string()
                        })
                    })
            }
            None => Err("this server runs no holders".to_string()),
        };
        // The holder of this session's socket runs this session's program, whatever the
        // registry says: a record older than the holder (a restart whose commit a full disk
        // refused, then a crash) is corrected, not obeyed (the program was killed for it).
        if let (Ok(a), Some(r)) = (&attached, &recorded)
            && (r.pid != a.pid || (a.starttime != 0 && r.starttime != a.starttime))
        {
            tracing::warn!(session = %id, holder_pid = a.pid, recorded_pid = r.pid,
                "the registry's record of this session's process is older than its holder's: adopting the holder's");
        }
        let result = match attached {
            Ok(a) => {
                let (pid, holder, exited) = (a.pid, a.holder, a.exited);
                if let Some((from, to)) = a.lost {
                    // The log lost its end (storage damage) and no holder has those bytes any
                    // more: the program keeps running, the gap is said, never papered over —
                    // the Ring skips it (a viewer behind gets `lagged`), the log records it.
                    tracing::warn!(session = %id, from, to, "output lost from the log and no longer held; recorded as a gap");
                    self.shared.ring.skip_to(to);
                    self.shared.emit(EventKind::Recovery {
                        decision: format!(
                            "output {from}..{to} lost: the log was damaged past what its holder still held; recorded as a gap"
                        ),
                    });
                }
                match Spawned::held(a) {
                    Ok(spawned) => {
                        // The size the last server left the terminal at (the viewer who typed
                        // there), not the spec's: viewers are told the session's real size.
                        if let Some(size) = spawned.master.as_ref().and_then(|m| m.size()) {
                            self.shared.status.write().size = size;
                            // The retained output was written at the sizes the journal says
                            // (a screen parsed at today's alone kept rows of what was drawn
                            // at another), and what comes next at the terminal's.
                            let mut sizes = std::mem::take(&mut self.sizes);
                            if sizes.is_empty() {
                                sizes.push((self.shared.ring.tail(), size));
                            }
                            if sizes.last().map(|(_, s)| *s) != Some(size) {
                                sizes.push((self.shared.ring.head(), size));
                            }
                            for (at, size) in sizes {
                                crate::screen::tell(
                                    self.screen.as_ref(),
                                    crate::screen::ScreenMsg::ResizeAt {
                                        at,
                                        rows: size.rows,
                                        cols: size.cols,
                                    },
                                );
                            }
                        }
                        match self.run(myself, generation, spawned).await {
                            Ok(()) => {
                                tracing::info!(session = %id, pid, holder, exited = exited.is_some(), "reattached to its holder");
                                Ok(())
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(why) = result {
            tracing::warn!(session = %id, error = %why, "could not reattach to the holder");
            // Whatever is left of the old process goes, as after a crash without holders.
            let mut tree = process::SessionTree::marker_only(id.to_string());
            if let Some(r) = recorded.filter(|r| r.is_alive_same()) {
                tree = process::SessionTree::new(r.pid).with_marker(id.to_string());
            }
            let report = process::sweep::kill_all(&tree).await;
            if let Some(holders) = &self.holders {
                holders.forget_async(id).await;
            }
            // Its recorded process is not this session's any more.
            self.shared.status.write().no_process();
            // A holder gone while no server ran refuses the connection (its socket is left):
            // said as such, not as a socket error.
            let why = if holder_gone {
                format!(
                    "lost: its holder died while no server was running; {}",
                    if report.killed > 0 {
                        format!("{} leftover processes of it were killed", report.killed)
                    } else {
                        "none of its processes were left".into()
                    }
                )
            } else {
                format!("lost: could not reattach to its holder: {why}")
            };
            self.settle_loss(myself, why);
        }
    }

    /// Sets up a spawned (or adopted) process incarnation: its readers, writer and status.
    pub(super) async fn run(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        generation: u64,
        spawned: Spawned,
    ) -> Result<(), SessionError> {
        let id = self.shared.id;
        let Spawned {
            pid,
            pidfd,
            master,
            output: out_fd,
            input: in_fd,
            stderr: err_fd,
            held,
        } = spawned;
        let tree = SessionTree {
            main_pid: pid,
            sid: pid,
            pgids: [pid].into_iter().collect(),
            marker: Some((env::SESSION_ID_VAR.to_string(), id.to_string())),
            holder: held.as_ref().map_or(0, |(l, _)| l.holder),
        };
        let exited_already = held.as_ref().and_then(|(_, e)| *e);
        let (exit_tx, exit_rx) = watch::channel(exited_already);
        let link = held.map(|(link, _)| link);
        let mut roles = Vec::new();
        let mut running = Running {
            generation,
            pid,
            pidfd: pidfd.clone(),
            held: link.clone().map(|l| (l, exit_rx)),
            shm: match &out_fd {
                Source::Held(ring, _) | Source::Kept(_, ring, _) => Some(ring.clone()),
                Source::Fd(_) => None,
            },
            tree,
            master,
            io_actors: Vec::new(),
            writer: None,
            eof: Vec::new(),
            started: Instant::now(),
            reaped: false,
        };
        // From here on, `running` owns the process: an error below drops it, killing the tree.
        if let Some(link) = link.clone() {
            let (l, _) = Actor::spawn_linked(
                None,
                HolderLink,
                LinkArgs {
                    link,
                    session: myself.clone(),
                    generation,
                    exit: exit_tx,
                },
                myself.get_cell(),
            )
            .await
            .map_err(|e| SessionError::Spawn(format!("holder link: {e}")))?;
            running.io_actors.push(l.get_cell());
            roles.push((l.get_id(), "holder link"));
        }
        let framing = Framing::of(self.spec.mode);
        // A holder reports the exit itself; otherwise the primary reader watches the pidfd.
        let exit = match (&running.held, pidfd) {
            (None, Some(pidfd)) => Some((pidfd, myself.clone(), generation)),
            _ => None,
        };
        let (eof_tx, eof_rx) = watch::channel(false);
        // Only the adopted process continues the line its log ends inside.
        let carry = match self.begin == Begin::Adopt && generation == 1 {
            true => self.carry.replace(Vec::new()),
            false => Some(Vec::new()),
        };
        let sink = |kept, eof| Sink {
            ring: self.shared.ring.clone(),
            shared: self.shared.clone(),
            framing,
            exit,
            eof,
            screen: self.screen.clone(),
            kept,
        };
        let reader = match out_fd {
            Source::Fd(fd) => output_reader(myself, fd, sink(None, eof_tx)).await,
            Source::Kept(fd, ring, reads) => {
                let kept = super::super::kept::Kept::new(ring, reads, self.shared.clone());
                output_reader(myself, fd, sink(Some(Arc::new(kept)), eof_tx)).await
            }
            Source::Held(ring, wake) => Actor::spawn_linked(
                None,
                HeldReader,
                HeldArgs {
                    ring,
                    wake,
                    shared: self.shared.clone(),
                    eof: eof_tx,
                    screen: self.screen.clone(),
                    lines: Lines::resume(framing, carry),
                },
                myself.get_cell(),
            )
            .await
            .map(|(r, _)| r.get_cell()),
        }
        .map_err(|e| SessionError::Spawn(format!("output reader: {e}")))?;
        roles.push((reader.get_id(), "output reader"));
        running.io_actors.push(reader);
        running.eof.push(eof_rx);
        if let Some(err_fd) = err_fd {
            let (eof_tx, eof_rx) = watch::channel(false);
            let (r, _) = Actor::spawn_linked(
                None,
                OutputReader,
                ReaderArgs {
                    fd: err_fd,
                    sink: Sink {
                        ring: self.shared.ring.clone(),
                        shared: self.shared.clone(),
                        framing: Framing::Raw,
                        exit: None,
                        eof: eof_tx,
                        screen: None,
                        kept: None,
                    },
                },
                myself.get_cell(),
            )
            .await
            .map_err(|e| SessionError::Spawn(format!("stderr reader: {e}")))?;
            roles.push((r.get_id(), "stderr reader"));
            running.io_actors.push(r.get_cell());
            running.eof.push(eof_rx);
        }
        let (queue, writer) = InputWriter::start(
            in_fd,
            self.shared.input_lost.clone(),
            INPUT_QUEUE_BYTES,
            self.shared.ring.clone(),
            self.shared.mode == Mode::Pty,
        );
        running.writer = Some(writer);
        *self.shared.writer.write() = Some(queue);
        let identity = match process::procfs::ProcessIdentity::of(pid) {
            Ok(identity) => Some(identity),
            // Already gone (a program that exits at once, reaped by its holder): nothing to
            // recover, and nothing to warn about.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(session = %id, pid, "process gone before its identity was read");
                None
            }
            Err(e) => {
                // Recovery would then find this process only by its environment marker.
                tracing::warn!(session = %id, pid, error = %e, "process identity not recorded");
                None
            }
        };
        // A new process, not the same one reattached under its holder (its reattachment is
        // the `recovery` event's to say).
        let fresh = self.begin != Begin::Adopt || generation > 1;
        {
            let mut s = self.shared.status.write();
            s.pid = Some(pid);
            s.holder_pid = running.held.as_ref().map(|(l, _)| l.holder);
            // An adopted process started long before this server: its real start time — read
            // from the identity recorded when it started if it has exited since (its holder
            // kept the exit: the reattach time was taken for its start).
            let recorded = s.identity.as_ref().filter(|r| r.pid == pid);
            s.started_at = identity
                .as_ref()
                .or(recorded)
                .and_then(|i| i.started_at())
                .filter(|_| self.begin == Begin::Adopt && generation == 1)
                .or(Some(SystemTime::now()));
            s.identity = identity;
            s.interrupted = false;
            // A new process of an agent has said nothing yet (its last process's `exited`, from
            // its SessionEnd, made `wait --for idle` give up on a restarted agent, and agentapi
            // call it stable while it started); an adopted one keeps what its events said.
            if fresh && s.attention.is_some() {
                s.set_attention(crate::attention::Attention::Starting);
                s.asks_at_start = None;
            }
        }
        *self.shared.roles.write() = roles;
        self.running = Some(running);
        // A holder reaped it before we attached (a program that ends at once, or one that
        // ended while no server was attached): handled as if the exit arrived now.
        if exited_already.is_some()
            && let Err(e) = myself.send_message(SessionMsg::ProcessExited { generation })
        {
            tracing::warn!(session = %id, error = %e, "an exit the holder reported was not delivered");
        }
        // Viewers reset their terminal's modes at `spawned` (a new program starts from plain
        // ones): said of a reattached process, that reset a running program's bracketed paste,
        // mouse and cursor keys in `attach` after every server restart or upgrade.
        if fresh {
            tracing::info!(session = %id, pid, generation, "process spawned");
            self.shared.emit(EventKind::Spawned { pid });
        } else {
            tracing::info!(session = %id, pid, "process reattached");
        }
        self.shared.set_state(SessionState::Running, None);
        // An agent that says nothing for a while may wait on its start screen.
        self.look_at_start(myself, crate::agent::STARTING_QUIET);
        Ok(())
    }
}

/// Starts the output reader of a terminal or pipe this server reads (`sink.kept`: a held
/// terminal read through its holder's io_uring).
async fn output_reader(
    myself: &ActorRef<SessionMsg>,
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    sink: Sink,
) -> Result<ractor::ActorCell, ractor::SpawnErr> {
    Actor::spawn_linked(
        None,
        OutputReader,
        ReaderArgs { fd, sink },
        myself.get_cell(),
    )
    .await
    .map(|(r, _)| r.get_cell())
}
