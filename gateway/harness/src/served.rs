//! A real `corral serve` (this very binary) in a temp data dir, for `corral bench` and
//! `corral chaos`: started with the per-connection rate limits lifted (they measure speed and
//! faults, not limits), crashed with SIGKILL, started again on the same dir, stopped with SIGTERM
//! on drop.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use corral_client::Client;

/// A `corral serve` child.
pub struct Served {
    /// The server process.
    child: std::process::Child,
    /// False once reaped (Drop must not signal a pid that may be reused).
    alive: bool,
    /// Its data dir (removed on drop).
    _dir: tempfile::TempDir,
    /// A client of it.
    pub remote: Client,
}

impl Served {
    /// A server in a fresh temp data dir.
    pub async fn start() -> anyhow::Result<Served> {
        Self::start_in(tempfile::tempdir()?).await
    }

    /// Starts a server on an existing data dir (a restart), waiting until `server.json` names
    /// the new process.
    pub async fn start_in(dir: tempfile::TempDir) -> anyhow::Result<Served> {
        Self::start_with(dir, None).await
    }

    /// Like [`Served::start_in`], with `workers` async worker threads (None: the default).
    pub async fn start_with(
        dir: tempfile::TempDir,
        workers: Option<usize>,
    ) -> anyhow::Result<Served> {
        Self::start_configured(dir, workers, "").await
    }

    /// Like [`Served::start_with`], with more top-level settings (TOML lines, e.g.
    /// `holders = false`).
    pub async fn start_configured(
        dir: tempfile::TempDir,
        workers: Option<usize>,
        extra: &str,
    ) -> anyhow::Result<Served> {
        // Owner-only, as a data dir should be (a temp dir is 0755: the server would warn).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let exe = std::env::current_exe()?;
        // The bench measures speed, not the limits: lift the per-connection rate limits (an
        // echo loop sends thousands of keystrokes per second) and the connection bound.
        let config = dir.path().join("bench.toml");
        let workers = workers
            .map(|n| format!("workers = {n}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "{workers}{extra}[limits]\nmessages_per_sec = 1000000\ninput_bytes_per_sec = 1000000000\nmax_connections = 4096\n"
            ),
        )?;
        let child = std::process::Command::new(exe)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            // Its stdout carries only the login URL (with the admin token): not for the table.
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start corral serve")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = child.id() as u64;
        loop {
            let current = std::fs::read_to_string(dir.path().join("server.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["pid"].as_u64() == Some(pid));
            if current && let Ok(remote) = tcp_client(dir.path()) {
                return Ok(Served {
                    child,
                    alive: true,
                    _dir: dir,
                    remote,
                });
            }
            if Instant::now() > deadline {
                bail!("corral serve did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its data dir.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILLs the server (a crash) and hands back its data dir.
    pub fn crash(mut self) -> anyhow::Result<tempfile::TempDir> {
        self.child.kill()?;
        self.child.wait()?;
        self.alive = false;
        let dir = tempfile::TempDir::new()?;
        // Swap the real dir out so Drop (which signals and waits) has nothing left to do.
        Ok(std::mem::replace(&mut self._dir, dir))
    }

    /// CPU seconds (user + system) the server used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// The server's (read syscalls, bytes read) so far, from `/proc/<pid>/io` (all fds).
    pub fn reads(&self) -> (u64, u64) {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("syscr:"), field("rchar:"))
    }
}

/// A TCP client of the server of data dir `dir` (the bench measures what a remote viewer gets,
/// as ttyd's clients do; the local CLI's Unix socket is measured by the CLI scenarios).
fn tcp_client(dir: &std::path::Path) -> anyhow::Result<Client> {
    let local = Client::find(None, None, dir)?;
    let info = corral_server::datadir::read_server_json(dir)?;
    Ok(Client::tcp(&info.url, local.token)?)
}

impl Drop for Served {
    fn drop(&mut self) {
        if !self.alive {
            return;
        }
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            eprintln!("bench: cannot stop the server: {e}");
        }
        // Waited for off the runtime's workers where it can be (a drop cannot await): an
        // orderly stop can take seconds (its open requests drained, its sessions stopped).
        let child = &mut self.child;
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| reap_within(child, STOP_WAIT))
            }
            _ => reap_within(child, STOP_WAIT),
        }
    }
}

/// How long a server dropped by the harness gets to stop in order before it is killed.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reaps `child`, killing it if it has not ended within `within` (a server that hangs on its
/// way out must not hang the bench or the chaos run with it).
fn reap_within(child: &mut std::process::Child, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                eprintln!("bench: the server did not stop within {within:?}: killed");
                if let Err(e) = child.kill() {
                    eprintln!("bench: cannot kill the server: {e}");
                }
                if let Err(e) = child.wait() {
                    eprintln!("bench: server not reaped: {e}");
                }
                return;
            }
            Err(e) => {
                eprintln!("bench: server not reaped: {e}");
                return;
            }
        }
    }
}
