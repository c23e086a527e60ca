//! Serve: the lifecycle of `corral serve`, in order: data dir lock → token → corral tree →
//! listeners (TCP, and the data dir's Unix socket for the local CLI) → `server.json`. On
//! SIGTERM/SIGINT the reverse: stop accepting → close every connection (close frame) → stop
//! every session gracefully → unpublish.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use corral_actors::holder::Holders;
use corral_actors::{Corral, CorralConfig, SessionsConfig};
use corral_runtime::{Supervisor, SupervisorSpec};

use crate::app::App;
use crate::app::Leaving;
use crate::auth::{Grant, Tokens};
use crate::config::GatewayConfig;
use crate::datadir::{DataDir, ServerInfo};
use crate::listen::{Closable, Peer};
use crate::routes::router;
use crate::unix::{OwnerOnly, socket_path};

/// What `corral serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// The binary agents' hooks run (`<hooks> hook`): a program with corral's command line;
    /// `None` for the server's own binary.
    pub hooks: Option<PathBuf>,
}

/// Runs the server until SIGTERM/SIGINT, then shuts down in order.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    // The file steps before the session tree starts (the lock, the write probe, the token,
    // TMPDIR's root) run on this task: none of this server's work is running yet to be held
    // up. From the tree's start on, file work goes to the blocking pool (`server.json`, the
    // socket).
    // First of all: a signal from now on is the server's to answer (see `Signals`).
    let signals = Signals::install();
    // A successor started by `corral upgrade` says it is ready, then waits for the data dir
    // its predecessor is about to let go of.
    let successor = crate::upgrade::ready_pipe()?;
    let data = match successor {
        Some(mut ready) => {
            use std::io::Write;
            // A successor that could not write to its data dir (a full disk) would fail after
            // the old server left, leaving none: it says so before it says ready, and the old
            // one keeps serving.
            if let Err(e) = probe_writable(&opts.data_dir) {
                // Said to the old server, whose `corral upgrade` tells its user (it said only
                // that the new binary exited, killed — by the old server itself).
                if let Err(w) = writeln!(ready, "error: {e}") {
                    tracing::warn!(error = %w, "could not tell the old server why");
                }
                return Err(e);
            }
            // Under systemd the unit follows us from here: its old main process is about to
            // exit (after our `ready`), and must not end the unit when it does.
            crate::systemd::claim();
            ready.write_all(b"ready\n")?;
            drop(ready);
            lock_when_free(&opts.data_dir).await?
        }
        None => DataDir::open_exclusive(&opts.data_dir)?,
    };
    let admin = data.admin_token()?;
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the corral binary: {e}"))?;
    use corral_actors::process::limits;
    let nofile = match limits::raise_nofile() {
        Ok((old, new)) => {
            tracing::debug!(old, new, "RLIMIT_NOFILE raised");
            Ok(new)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise RLIMIT_NOFILE");
            limits::nofile()
        }
    };
    // Sessions past what the open-file limit holds are refused at their spawn: the next
    // server (a restart, an upgrade) must take back every one (docs/operations.md, "Open
    // files and the session limit").
    let max_sessions = {
        let most = SessionsConfig::default().max_sessions;
        match nofile {
            Ok(nofile) => {
                let room =
                    limits::session_capacity(nofile, opts.gateway.limits.max_connections as u64);
                if room < most {
                    tracing::info!(
                        nofile,
                        sessions = room,
                        "the open-file limit holds fewer sessions than {most}: at most {room} \
                         (raise `ulimit -n` / LimitNOFILE for more)"
                    );
                }
                room.min(most)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
                most
            }
        }
    };
    // The port first: a busy one fails the start before any session is touched.
    let listener = match crate::upgrade::inherited_listener()? {
        Some(l) => tokio::net::TcpListener::from_std(l)?,
        None => tokio::net::TcpListener::bind(opts.gateway.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {}: {e} (another server on that port? `--listen ADDR` or `listen` in the config picks another)",
                    opts.gateway.listen
                )
            })?,
    };
    let tmp_root = data.path().join("tmp");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp_root)?;
    }
    opts.gateway.agents.check()?;
    opts.gateway.check().map_err(anyhow::Error::msg)?;
    let holders = if opts.gateway.holders {
        Some(Holders::new(exe.clone(), data.path().join("holders"))?)
    } else {
        None
    };
    if let Some(h) = &holders {
        registry_not_lost(data.path(), h).await?;
    }
    let corral = Corral::start(CorralConfig {
        sessions: SessionsConfig {
            tmp_root,
            // PTY sessions get a holder each (`<this binary> holder`): they outlive this process.
            holders,
            max_sessions,
            ..SessionsConfig::default()
        },
        subreaper: true,
        persist: Some(opts.gateway.persist.to_config(data.path())?),
    })
    .await
    .map_err(|e| match full_disk(data.path()) {
        // SQLite says "disk I/O error" when it cannot grow its WAL: say why.
        Some(free) => anyhow::anyhow!(
            "{e} (the disk holding {} is full: {free} bytes free)",
            data.path().display()
        ),
        None if damaged(&e) => anyhow::anyhow!(
            "{e}: state.db is damaged. The sessions that ran go on under their holders and \
             their scrollback stays in logs/; put state.db back from a backup and start again \
             (without it, `corral serve` refuses to start while sessions run, rather than end them)"
        ),
        None => anyhow::Error::from(e),
    })?;
    match serving(&corral, &data, listener, (admin, exe), &opts, signals).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // The sessions came back before this failed (a full disk refusing `server.json`,
            // the socket, the token log): they must not go down with a server that could not
            // start. The process ends at once, as a crash would: every session stays with its
            // holder, every byte not yet logged stays in its holder's ring, and the next server
            // takes them back. (An orderly detach could wait on a session that is itself
            // waiting for the full disk, and then give its last output up; dropping the tree
            // would release the holders and kill every program.)
            tracing::error!(error = %e, "the server cannot go on; the sessions still running are left under their holders for the next server");
            eprintln!("corral: {e:#}");
            std::process::exit(1)
        }
    }
}

/// Whether starting failed on a damaged `state.db` (SQLite's "malformed", "not a database").
fn damaged(e: &corral_actors::StartError) -> bool {
    matches!(e, corral_actors::StartError::Persist(p) if p.is_damaged_db())
}

/// Refuses to start when `state.db` is gone but programs run under their holders: a server
/// started then would find no record of them and end each, with its scrollback, as a holder of
/// no session (`recovery::release_strays`). A registry removed by hand (a cleanup's
/// `rm state.db*`, one moved aside because it was damaged) must not take the running agents
/// with it; the message says the two ways on.
async fn registry_not_lost(dir: &std::path::Path, holders: &Holders) -> anyhow::Result<()> {
    let db = dir.join("state.db");
    let h = holders.clone();
    let (exists, running) =
        tokio::task::spawn_blocking(move || (db.exists(), h.answering())).await?;
    if exists || running.is_empty() {
        return Ok(());
    }
    let pids: Vec<String> = running.iter().map(|(_, pid)| pid.to_string()).collect();
    anyhow::bail!(
        "{} has no state.db, but {} session(s) run under their holders (holder pids {}): a \
         server started now would find no record of them and end them with their scrollback. \
         Put state.db back (a backup) and start again; or end them (`kill -9 {}`: each \
         holder's terminal closes, and its program gets SIGHUP) and start again",
        dir.display(),
        running.len(),
        pids.join(", "),
        pids.join(" ")
    )
}

/// The server from the moment its sessions are back: listeners, `server.json`, serving, then
/// the ordered stop. An error here leaves the sessions to their holders (see [`serve`]).
async fn serving(
    corral: &Corral,
    data: &DataDir,
    listener: tokio::net::TcpListener,
    (admin, exe): (String, std::path::PathBuf),
    opts: &ServeOptions,
    signals: Option<Signals>,
) -> anyhow::Result<()> {
    // Viewer and driver tokens issued by earlier servers, for the sessions that came back.
    let sessions: std::collections::HashSet<uuid::Uuid> =
        corral.sessions().list().iter().map(|s| s.id).collect();
    let dir = data.path().to_path_buf();
    let log = tokio::task::spawn_blocking(move || {
        crate::token_log::TokenLog::open(&dir, crate::auth::MAX_TOKENS, |s| sessions.contains(&s))
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot read the token log: {e}"))?;
    let tokens = Tokens::with_log(admin.clone(), log);
    if let Some(report) = corral.recovery() {
        // Restored agents keep the hook token in their environment: accept it again.
        for (id, spec) in &report.specs {
            if let Some((_, token)) = spec.env.iter().find(|(k, _)| k == "CORRAL_HOOK_TOKEN")
                && let Err(e) = tokens.register(token.clone(), Grant::Hook(*id))
            {
                tracing::warn!(session = %id, error = %e, "hook token of a restored session not accepted");
            }
        }
    }
    let (clients, clients_task) = Supervisor::start(
        SupervisorSpec::new("gateway")
            .max_children(opts.gateway.limits.max_connections)
            .intensity(1, Duration::from_secs(5)),
    )
    .await?;
    let unix = match crate::upgrade::inherited_unix()? {
        Some(l) => OwnerOnly::inherited(l)?,
        None => OwnerOnly::bind(&socket_path(data.path()))?,
    };
    // Kept for a successor (`corral upgrade`): it inherits these very sockets, so clients
    // connecting during the handover wait in their backlogs instead of being refused.
    let keep = |fd: std::os::fd::BorrowedFd<'_>| match fd.try_clone_to_owned() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a listener for upgrades");
            None
        }
    };
    let handover = {
        use std::os::fd::AsFd;
        keep(listener.as_fd())
    };
    let unix_handover = {
        use std::os::fd::AsFd;
        keep(unix.as_fd())
    };
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let app = Arc::new(App::new(crate::app::AppParts {
        corral: corral.clone(),
        tokens,
        config: opts.gateway.clone(),
        clients: clients.clone(),
        url: url.clone(),
        hooks: opts.hooks.clone().unwrap_or_else(|| exe.clone()),
        exe,
        data_dir: data.path().to_path_buf(),
        listeners: (handover, unix_handover),
    }));
    // Hook events that found no server while none was there, before anything is served: they
    // precede every event delivered live (whose hooks wait in the socket's backlog).
    // Notifications watch from before: a turn that ended while no server ran is told.
    let watch = crate::notify::watch(&app);
    crate::spool::replay(&app).await;
    data.publish(&ServerInfo {
        url: url.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .await?;
    tracing::info!(%url, data_dir = %data.path().display(), "corral serving");
    if !addr.ip().is_loopback() {
        // Loopback is the default; anything else was asked for, but plain HTTP beyond this
        // machine carries the tokens (and everything the agents print) readable on the way.
        tracing::warn!(
            %addr,
            "listening beyond this machine over plain HTTP: anyone on the network path can read \
             the traffic, tokens included; put a TLS-terminating proxy in front, or reach it \
             through an SSH tunnel to 127.0.0.1"
        );
    }
    crate::systemd::ready(&url);
    // Like Jupyter: the one line a user needs to open the page (on stdout, never in the logs;
    // `corral web` prints another). With a login code only on a terminal: a stdout that is not
    // one is kept somewhere (systemd's journal, a file), and secrets are never logged.
    let line = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let code = app.login_codes.issue(&admin);
        format!(
            "corral: open {} (the link logs in once, within {} minutes; `corral web` prints another)",
            crate::web::login_url(&url, &code),
            crate::login_code::CODE_TTL.as_secs() / 60
        )
    } else {
        format!(
            "corral: open {url}/ (log in with the URL `corral web` prints; the token is in {})",
            data.path().join("token").display()
        )
    };
    // Not `println!`: a closed stdout must not panic the server.
    if let Err(e) =
        std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes())
    {
        tracing::warn!(error = %e, "could not print the page's address on stdout");
    }
    let router = router(app.clone());
    // Keystrokes and echoes are tiny writes: Nagle must not hold one back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    // One signal stops both listeners. Accepting stops first (`closing`), before any
    // WebSocket is told to reconnect: a client reconnecting during a handover then waits in
    // the listener's backlog for the successor instead of reaching a server on its way out.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let listener = Closable {
        inner: listener,
        closing: closing.clone(),
    };
    let unix = Closable {
        inner: unix,
        closing,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // A leaving server waits for open HTTP responses, but not for long (`drained`): a slow
    // download (an export to a phone) must not hold up a shutdown or an upgrade.
    let tcp = drained(
        crate::http::serve(
            listener,
            router.clone(),
            |addr| Some(Peer(*addr)),
            stop_rx.clone(),
        ),
        stop_rx.clone(),
    );
    // No connect info on the Unix socket: its peers were checked by uid at accept.
    let local = drained(
        crate::http::serve(unix, router, |_| None, stop_rx.clone()),
        stop_rx,
    );
    let signal = async {
        let mut asked = app.leave.subscribe();
        tokio::select! {
            how = shutdown_signal(signals) => {
                app.leave.send_if_modified(|l| {
                    let unset = l.is_none();
                    if unset {
                        *l = Some(how);
                    }
                    unset
                });
            }
            _ = asked.wait_for(|l| l.is_some()) => {}
        }
        closing_tx.send_replace(true);
        if (*app.leave.borrow()).unwrap_or(Leaving::Stop) == Leaving::Stop {
            // A full stop ends the sessions while their viewers are still connected: a
            // `logs -f`, `events -f` or `wait` gets the last output and the final state and
            // ends on its own (closed first, they reconnected for a minute and failed). Spawns
            // and removals already accepted finish first (a spawn is then stopped too).
            crate::systemd::notify("STOPPING=1");
            app.in_flight.drain(Duration::from_secs(10)).await;
            if let Err(e) = corral.shutdown().await {
                tracing::warn!(error = %e, "session tree did not stop cleanly");
            }
        }
        // Long-lived responses (agentapi event streams, permission hooks waiting for an
        // answer) end on this flag: a graceful shutdown waits for open responses.
        app.shutdown.send_replace(true);
        stop_tx.send_replace(true);
    };
    // Notifications run beside the listeners and end with them (handing over what is not
    // delivered yet, see `notify::run`).
    let notify = crate::notify::run(app.clone(), watch);
    // A tree that can no longer serve (its root gave up on a child, the persister's thread
    // ended, the connections' supervisor stopped) ends the server as a crash would, with its
    // reason: held sessions stay with their holders and the next start reconciles (`serve`).
    // Not once the server is leaving: its own stop ends these too.
    let failed = async {
        let why = tree_failed(corral, clients_task).await;
        if app.leave.borrow().is_some() {
            std::future::pending::<()>().await;
        }
        why
    };
    let (tcp, local, (), ()) = tokio::select! {
        served = async { tokio::join!(tcp, local, signal, notify) } => served,
        why = failed => anyhow::bail!("{why}; the server cannot go on"),
    };
    tcp?;
    local?;
    let leaving = (*app.leave.borrow()).unwrap_or(Leaving::Stop);
    // A full stop has stopped the sessions already (their viewers saw them end); a handover
    // closes the connections first, then leaves the sessions to their holders.
    tracing::info!(?leaving, "shutting down: closing the connections");
    if leaving == Leaving::KeepSessions {
        // A handover says nothing: the successor has already claimed the unit. (A full stop
        // said it before it stopped the sessions.)
        crate::systemd::notify("STOPPING=1");
    }
    app.shutdown.send_replace(true);
    if let Err(e) = clients.stop(Some(Duration::from_secs(5))).await {
        tracing::warn!(error = %e, "connections did not stop cleanly");
    }
    // Spawns and removals already accepted finish first (a spawn then counts among the
    // sessions stopped or kept below).
    app.in_flight.drain(Duration::from_secs(10)).await;
    match leaving {
        // Stopped before the connections closed (above).
        Leaving::Stop => {}
        Leaving::KeepSessions | Leaving::Upgrade => {
            match corral.shutdown_keeping_sessions().await {
                Ok(kept) => tracing::info!(kept, "sessions left running under their holders"),
                Err(e) => tracing::warn!(error = %e, "session tree did not stop cleanly"),
            }
        }
    }
    // A successor serves the same socket (and rewrites `server.json` once it has the data
    // dir): both stay, so a CLI call or a hook during the handover waits in the backlog.
    if leaving != Leaving::Upgrade {
        let sock = socket_path(data.path());
        let at = sock.clone();
        if let Err(e) = crate::datadir::blocking_io(move || std::fs::remove_file(&at)).await {
            tracing::warn!(path = %sock.display(), error = %e, "could not remove the unix socket");
        }
        data.unpublish().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits until the session tree or the connections' supervisor can no longer serve, and says
/// why ([`Corral::failed`]).
async fn tree_failed(corral: &Corral, clients: tokio::task::JoinHandle<()>) -> String {
    tokio::select! {
        why = corral.failed() => why,
        _ = clients => "the connections' supervisor stopped".into(),
    }
}

/// How long open HTTP responses may hold a leaving server before they are cut (their
/// connections end with the process).
pub const DRAIN: Duration = Duration::from_secs(5);

/// `serve` (an axum server with graceful shutdown on `stop`), but once `stop` is set it gets
/// [`DRAIN`] to finish its open responses, not as long as its slowest client takes.
async fn drained(
    serve: impl std::future::Future<Output = std::io::Result<()>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    tokio::pin!(serve);
    tokio::select! {
        done = &mut serve => return done,
        _ = stop.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(DRAIN, serve).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!(
                after = ?DRAIN,
                "open HTTP responses cut short (a slow download?): the server is leaving"
            );
            Ok(())
        }
    }
}

/// Writes (and removes) 64 KiB in `dir`, so a successor on a full disk fails while its
/// predecessor still serves.
fn probe_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let written = std::fs::write(&probe, vec![0u8; 64 * 1024]);
    if let Err(e) = std::fs::remove_file(&probe)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %probe.display(), error = %e, "could not remove a write probe");
    }
    written.map_err(|e| anyhow::anyhow!("cannot write to the data dir {}: {e}", dir.display()))
}

/// Waits (bounded) for the data dir's lock: a predecessor handing over lets go of it once its
/// sessions are detached.
async fn lock_when_free(dir: &std::path::Path) -> anyhow::Result<DataDir> {
    let deadline = std::time::Instant::now() + crate::upgrade::HANDOVER_TIMEOUT;
    loop {
        match DataDir::open_exclusive(dir) {
            Ok(d) => return Ok(d),
            Err(crate::datadir::DataDirError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The signals a server answers ([`shutdown_signal`]), installed as it starts: they were
/// installed when its serving loop began, and a SIGTERM just before (a service manager
/// stopping it at once, a script right after `server.json` appeared) ended it by the default
/// action — 16 times in 40 — without stopping its sessions or removing `server.json`. One
/// that comes early is answered once the server serves (it then leaves at once, in order).
struct Signals(
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

impl Signals {
    /// SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM; None (said) when they cannot be.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (|| {
            Ok::<_, std::io::Error>(Signals(
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::hangup())?,
                signal(SignalKind::user_defined1())?,
                signal(SignalKind::user_defined2())?,
                signal(SignalKind::alarm())?,
            ))
        })();
        match handlers {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers; serving until killed");
                None
            }
        }
    }
}

/// How a signal asks the server to leave: SIGTERM and SIGINT (systemd's stop, Ctrl-C) stop
/// every session first; SIGHUP (the terminal `corral serve` ran in was closed) leaves them
/// running for the next server, as `corral shutdown --keep-sessions` does — it used to end the
/// server like a crash, with no goodbye to its clients and a stale `server.json`.
///
/// SIGUSR1, SIGUSR2 and SIGALRM mean nothing to corral: they are logged and ignored, as the
/// holders ignore them. Left at their default action, a stray `pkill -USR1 corral` ended the
/// server without a word. A handler (not `SIG_IGN`) so that the programs corral starts get
/// their default dispositions back at `exec`.
async fn shutdown_signal(signals: Option<Signals>) -> Leaving {
    let Some(Signals(mut term, mut int, mut hup, mut usr1, mut usr2, mut alrm)) = signals else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM");
                return Leaving::Stop;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT");
                return Leaving::Stop;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: leaving the sessions running");
                return Leaving::KeepSessions;
            }
            _ = usr1.recv() => tracing::warn!("SIGUSR1 ignored"),
            _ = usr2.recv() => tracing::warn!("SIGUSR2 ignored"),
            _ = alrm.recv() => tracing::warn!("SIGALRM ignored"),
        }
    }
}

/// The bytes free on the file system holding `dir` when it is (nearly) full — under a megabyte
/// — else None.
fn full_disk(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = st.blocks_available() * st.fragment_size();
    (free < 1 << 20).then_some(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_server_hears_when_its_connections_supervisor_stops() {
        let corral = Corral::start(CorralConfig::default()).await.expect("start");
        let (clients, task) = Supervisor::start(SupervisorSpec::new("gateway"))
            .await
            .expect("gateway supervisor");
        let failed = tree_failed(&corral, task);
        tokio::pin!(failed);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut failed)
                .await
                .is_err(),
            "nothing has stopped"
        );
        clients.cell().kill();
        let why = tokio::time::timeout(Duration::from_secs(5), failed)
            .await
            .expect("heard");
        assert_eq!(why, "the connections' supervisor stopped");
        corral.shutdown().await.expect("shutdown");
    }
}
