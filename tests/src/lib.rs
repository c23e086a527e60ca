//! corral-tests: harness for end-to-end tests that run the real `corral` binary on 127.0.0.1
//! against real processes: start a server in a temp data dir, talk to it over HTTP and
//! WebSockets, stop it with SIGTERM.

pub mod claude_stub;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use corral_client::Client;
use corral_client::ws::Socket;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Writes an executable script at `path` (a stand-in program for a session).
pub fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The corral binary built by `cargo test --workspace` (or `cargo build`).
pub fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("corral");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "corral binary not found under {}: run `cargo test --workspace` or `cargo build -p corral-cli`",
        target.display()
    );
}

/// Claude Code (`@anthropic-ai/claude-code`) from the cache dir (`$CORRAL_CLAUDE_CACHE`, else
/// `target/claude-cache`, where `scripts/setup` installs it), installed there with npm on first
/// use; None when that fails (the caller fails naming the missing prerequisite: the Claude Code
/// tests never pass by skipping).
pub fn claude_code() -> Option<PathBuf> {
    let cache = std::env::var_os("CORRAL_CLAUDE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/claude-cache"));
    let bin = cache.join("node_modules/.bin/claude");
    if bin.exists() {
        return Some(bin);
    }
    std::fs::create_dir_all(&cache).ok()?;
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "@anthropic-ai/claude-code",
        ])
        .current_dir(&cache)
        .status()
        .ok()?;
    (status.success() && bin.exists()).then_some(bin)
}

/// A running `corral serve`.
pub struct Server {
    /// The process.
    child: Option<Child>,
    /// The server that took over from `child` after `corral upgrade` (not our child).
    successor: Option<i32>,
    /// The binary it runs (default: [`binary`]).
    exe: PathBuf,
    /// Extra environment of every server started here (a restart too).
    env: Vec<(String, String)>,
    /// Its config file, given to a restart too (`--config`).
    config: Option<String>,
    /// Its data dir.
    pub dir: tempfile::TempDir,
    /// Base URL.
    pub url: String,
    /// host:port.
    pub addr: String,
    /// Admin token.
    pub token: String,
}

impl Server {
    /// Starts a server on 127.0.0.1:0 in a fresh data dir and waits until it serves.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Same, with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Server {
        Self::spawn_server(args, None)
    }

    /// Same, with `toml` as its config file (written into its data dir as `config.toml`).
    pub fn start_configured(toml: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).unwrap();
        let config = config.to_str().unwrap().to_string();
        let mut server =
            Self::spawn_server_in(dir, &binary(), &["--config", &config], None, Vec::new());
        server.config = Some(config);
        server
    }

    /// Same, with these variables in its environment (and in every restart's).
    pub fn start_env(env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn_server_in(tempfile::tempdir().unwrap(), &binary(), &[], None, env)
    }

    /// A server logging everything (`RUST_LOG=trace`) to `log`.
    pub fn start_logging_to(log: &Path) -> Server {
        Self::spawn_server(&[], Some(log))
    }

    fn spawn_server(args: &[&str], log: Option<&Path>) -> Server {
        Self::spawn_server_from(&binary(), args, log)
    }

    /// A server running the binary at `exe` (a copy, say, that a test replaces on disk).
    pub fn start_from(exe: &Path) -> Server {
        Self::spawn_server_from(exe, &[], None)
    }

    /// Same, from `exe`, with these variables in its environment.
    pub fn start_from_env(exe: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn_server_in(tempfile::tempdir().unwrap(), exe, &[], None, env)
    }

    fn spawn_server_from(exe: &Path, args: &[&str], log: Option<&Path>) -> Server {
        Self::spawn_server_in(tempfile::tempdir().unwrap(), exe, args, log, Vec::new())
    }

    fn spawn_server_in(
        dir: tempfile::TempDir,
        exe: &Path,
        args: &[&str],
        log: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Server {
        // Owner-only, as a data dir should be (a temp dir is 0755: the server would warn).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let child = Self::launch_exe(exe, dir.path(), args, log, &env);
        let (url, token) = Self::wait_ready(dir.path(), child.id());
        let addr = url.trim_start_matches("http://").to_string();
        Server {
            child: Some(child),
            successor: None,
            exe: exe.to_path_buf(),
            env,
            config: None,
            dir,
            url,
            addr,
            token,
        }
    }

    /// SIGKILLs the server (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        if let Some(pid) = self.successor.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            wait_gone(pid, Duration::from_secs(10));
        }
    }

    /// After `corral upgrade`: the old server exited (reaped here); the one `server.json`
    /// names now is this server.
    pub fn follow_successor(&mut self) {
        let old = self.child.take().map(|mut c| {
            let id = c.id() as i32;
            c.wait().unwrap();
            id
        });
        let previous = self.successor.or(old);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join("server.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(pid) = v["pid"].as_i64()
                && Some(pid as i32) != previous
            {
                self.successor = Some(pid as i32);
                return;
            }
            assert!(Instant::now() < deadline, "no successor published");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a server again in the same data dir (after [`kill`](Self::kill) or
    /// [`terminate`](Self::terminate)) and waits until it serves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let child = Self::launch_exe(
            &self.exe,
            self.dir.path(),
            &self.config_args(),
            None,
            &self.env,
        );
        let (url, token) = Self::wait_ready(self.dir.path(), child.id());
        self.addr = url.trim_start_matches("http://").to_string();
        self.url = url;
        self.token = token;
        self.child = Some(child);
    }

    /// Starts a server in the same data dir without waiting for it (to kill it mid-boot).
    pub fn restart_nowait(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.child = Some(Self::launch_exe(
            &self.exe,
            self.dir.path(),
            &self.config_args(),
            None,
            &self.env,
        ));
    }

    /// `--config <file>` for a server started with one.
    fn config_args(&self) -> Vec<&str> {
        match &self.config {
            Some(c) => vec!["--config", c.as_str()],
            None => Vec::new(),
        }
    }

    fn launch_exe(
        exe: &Path,
        dir: &Path,
        args: &[&str],
        log: Option<&Path>,
        env: &[(String, String)],
    ) -> Child {
        let mut cmd = Command::new(exe);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            // Its stdout carries only the login URL (with the admin token): not for test logs.
            .stdout(Stdio::null());
        if let Some(log) = log {
            cmd.env("RUST_LOG", "trace")
                .stderr(std::fs::File::create(log).unwrap());
        }
        cmd.spawn().unwrap()
    }

    /// Waits until `server.json` names process `pid`; returns (url, admin token).
    fn wait_ready(dir: &Path, pid: u32) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("server.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(pid as u64)
            {
                break v;
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let url = info["url"].as_str().unwrap().to_string();
        let token = std::fs::read_to_string(dir.join("token"))
            .unwrap()
            .trim()
            .to_string();
        (url, token)
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.successor
            .unwrap_or_else(|| self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends SIGTERM and waits for the exit code (bounded; a successor, not our child, reports
    /// 0 once gone).
    pub fn terminate(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        if let Some(pid) = self.successor.take() {
            let t = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let gone = wait_gone(pid, timeout);
            return (gone.then_some(0), t.elapsed());
        }
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), t.elapsed());
            }
            if t.elapsed() > timeout {
                child.kill().unwrap();
                child.wait().unwrap();
                return (None, t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client of this server over TCP with the admin token.
    pub fn client(&self) -> Client {
        // invariant: the URL comes from server.json and is always http://host:port.
        Client::tcp(&self.url, self.token.clone()).expect("server URL")
    }

    /// `corral --data-dir <this server's> ARGS`, run without blocking the test's runtime (a
    /// stub the test serves keeps answering meanwhile).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(binary())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .await
            .unwrap()
    }

    /// [`cli`](Self::cli), which must succeed; its stdout.
    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "corral {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `kind` of every journaled event of session `key` whose kind is `kind` (`corral
    /// events KEY --json`), oldest first.
    pub async fn events_of(&self, key: &str, kind: &str) -> Vec<Value> {
        self.cli_ok(&["events", key, "--json"])
            .await
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["kind"]["kind"] == kind)
            .map(|e| e["kind"].clone())
            .collect()
    }

    /// `GET /v1/sessions/{key}` with the admin token, which must answer 200.
    pub async fn session(&self, key: &str) -> Value {
        let (status, body) = self
            .http(
                "GET",
                &format!("/v1/sessions/{key}"),
                Some(&self.token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// An HTTP request with an optional bearer token; returns (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, bytes) = self
            .client()
            .request_as(method, path, token, body)
            .await
            .unwrap();
        (
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// A token for one session (`read`, `write` or `hook`), issued with the admin token.
    pub async fn scoped_token(&self, session: &str, scope: &str) -> String {
        let (status, body) = self
            .http(
                "POST",
                "/v1/tokens",
                Some(&self.token),
                Some(&serde_json::json!({"session": session, "scope": scope})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let created: Value = serde_json::from_str(&body).unwrap();
        // invariant: a 201 from /v1/tokens carries the token.
        created["token"].as_str().unwrap().to_string()
    }

    /// Spawns a session through REST with the admin token; returns its info.
    pub async fn spawn(&self, spec: Value) -> Value {
        let (status, body) = self
            .http("POST", "/v1/sessions", Some(&self.token), Some(&spec))
            .await;
        assert_eq!(status, 201, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Opens a native WebSocket with the admin token.
    pub async fn ws(&self) -> Ws {
        self.ws_with(Some(&self.token.clone()), &[]).await.unwrap()
    }

    /// Opens a native WebSocket with a token and extra headers.
    pub async fn ws_with(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Ws, corral_client::ClientError> {
        let ws = self.client().socket("/v1/ws", token, headers).await?;
        Ok(Ws { ws, next_id: 0 })
    }

    /// A ttyd connection to `session` that has sent its init (the admin token, 80×24).
    pub async fn ttyd_open(&self, session: &str) -> Socket {
        use futures::SinkExt;
        let mut ttyd = self.ttyd(session).await;
        let init = serde_json::json!({"AuthToken": self.token, "columns": 80, "rows": 24});
        ttyd.send(Message::Text(init.to_string().into()))
            .await
            .unwrap();
        ttyd
    }

    /// `corral ARGS` against this server, started in the background with its output piped (a
    /// follower to read later).
    pub fn background(&self, args: &[&str]) -> Child {
        Command::new(binary())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Opens a ttyd WebSocket on a session (subprotocol `tty`).
    pub async fn ttyd(&self, session: &str) -> Socket {
        self.client()
            .socket(
                &format!("/ttyd/{session}/ws"),
                None,
                &[("sec-websocket-protocol", "tty")],
            )
            .await
            .unwrap()
    }
}

impl Server {
    /// Releases every holder still in the data dir (sessions of a server that was killed and
    /// not restarted): each kills its program and exits, as at a stop. Returns how many.
    pub fn release_holders(&self) -> usize {
        use corral_actors::holder::wire::{self, ToHolder};
        use std::os::fd::AsFd;
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("holders")) else {
            return 0;
        };
        let mut released = 0;
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "sock")
                && let Ok(conn) = wire::connect(&path)
                && wire::send(conn.as_fd(), &ToHolder::Release, &[]).is_ok()
            {
                // The holder hangs up once it has reaped its program.
                let mut buf = [0u8; 64];
                if let Err(e) = nix::sys::socket::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&conn),
                    &mut buf,
                    nix::sys::socket::MsgFlags::empty(),
                ) {
                    eprintln!("holder {}: no hangup after release: {e}", path.display());
                }
                released += 1;
            }
        }
        released
    }
}

/// Waits until `pid` is gone (or a zombie nobody reaps); false after `timeout`.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie leader is not enough: the other threads of a SIGKILLed server may still be
        // exiting (one in a disk write, say) and hold its files — the data dir's lock among
        // them — until the last one is gone.
        let one_thread = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Threads:"))
                        .is_none_or(|n| n.trim() == "1")
                })
                .unwrap_or(true)
        };
        if stat.is_empty()
            || (stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
                && one_thread())
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() || self.successor.is_some() {
            let (code, _) = self.terminate(Duration::from_secs(20));
            if code != Some(0) && !std::thread::panicking() {
                panic!("server exited with {code:?}");
            }
        }
        // A test that ended with its server killed leaves no session behind either.
        self.release_holders();
    }
}

/// What a native client receives.
#[derive(Debug)]
pub enum Frame {
    /// A JSON message.
    Json(Value),
    /// A binary frame: kind, channel, offset, payload.
    Bin(u8, u32, u64, Vec<u8>),
    /// The server closed: code and reason.
    Close(u16, String),
}

/// A native protocol client.
pub struct Ws {
    /// The socket.
    pub ws: Socket,
    next_id: u64,
}

impl Ws {
    /// Sends a request with a fresh id; returns the id.
    pub async fn send(&mut self, mut msg: Value) -> u64 {
        self.next_id += 1;
        msg["id"] = json!(self.next_id);
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        self.next_id
    }

    /// Sends a raw frame.
    pub async fn raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Next frame (30 s bound).
    pub async fn next(&mut self) -> Frame {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("a frame within 30 s");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Json(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(Message::Binary(b))) => {
                    let channel = u32::from_be_bytes(b[1..5].try_into().unwrap());
                    let offset = u64::from_be_bytes(b[5..13].try_into().unwrap());
                    return Frame::Bin(b[0], channel, offset, b[13..].to_vec());
                }
                Some(Ok(Message::Close(c))) => {
                    let (code, reason) = c
                        .map(|c| (u16::from(c.code), c.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Frame::Close(code, reason);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Frame::Close(0, e.to_string()),
                None => return Frame::Close(1006, "eof".into()),
            }
        }
    }

    /// Sends a request and returns the JSON reply with its id (skipping other frames).
    pub async fn call(&mut self, msg: Value) -> Value {
        let id = self.send(msg).await;
        loop {
            match self.next().await {
                Frame::Json(v) if v["id"] == json!(id) => return v,
                Frame::Close(c, r) => panic!("closed {c} {r} while waiting for reply {id}"),
                _ => {}
            }
        }
    }
}

/// Every byte of session `id`'s log in data dir `dir`, read from its files (empty without a
/// log); panics on a gap.
pub fn log_bytes(dir: &Path, id: &str) -> Vec<u8> {
    use corral_actors::persist::{Chunk, LogReader};
    let logs = dir.join("logs").join(id);
    if !logs.exists() {
        return Vec::new();
    }
    let (reader, _) = LogReader::open(&logs).unwrap();
    let Some(first) = reader.first_offset() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in reader.read_range(first, usize::MAX).unwrap() {
        match c {
            Chunk::Data { bytes, .. } => out.extend_from_slice(&bytes),
            Chunk::Gap { from, to } => panic!("session {id}: gap {from}..{to} in its log"),
        }
    }
    out
}

/// Waits (bounded) until no live process carries session `id`'s CORRAL_SESSION_ID; panics
/// naming what is left behind.
pub async fn until_no_processes(id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !session_processes(id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            session_processes(id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live processes carrying a session's CORRAL_SESSION_ID.
pub fn session_processes(id: &str) -> Vec<i32> {
    let mut out = Vec::new();
    // Not looking is no answer: "nothing left" must come from a /proc that was read.
    let dir = std::fs::read_dir("/proc").expect("/proc cannot be read");
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let needle = format!("CORRAL_SESSION_ID={id}");
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            // Skip zombies (they hold no resources but keep /proc entries until reaped).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits (bounded) until a process of the session runs `comm` — e.g. until a script got past
/// `stty raw -echo` and blocks in `head` waiting for its go byte, so that byte is not echoed.
pub async fn wait_for_comm(id: &str, comm: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = session_processes(id).into_iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no {comm} in session {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request as a test stub server (the Messages API stub) reads it.
#[derive(Debug)]
pub struct StubRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// The JSON body; a body that is not JSON as a string (a text webhook's line); `Null`
    /// when there is none.
    pub body: Value,
}

/// Reads one HTTP/1.1 request (head, then `content-length` bytes of body) for a test stub;
/// None if the peer closed first. Stubs answer one request per connection.
pub async fn read_stub_request(s: &mut tokio::net::TcpStream) -> Option<StubRequest> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    Some(StubRequest {
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        body: match &buf[head_end..] {
            [] => Value::Null,
            bytes => serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        },
    })
}

/// Writes a stub's whole answer (`200`, the content type, the body) and closes the connection.
pub async fn write_stub_response(s: &mut tokio::net::TcpStream, content_type: &str, body: &str) {
    use tokio::io::AsyncWriteExt;
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(resp.as_bytes()).await.is_ok() && s.shutdown().await.is_err() {
        eprintln!("stub: the client closed first");
    }
}

/// A local webhook receiver on 127.0.0.1: every request's (path, JSON body), in arrival order.
/// Its task (and every connection it serves) ends when it is dropped.
pub struct Webhooks {
    /// Its port.
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    /// Starts listening.
    pub async fn start() -> Webhooks {
        Self::start_slow(Duration::ZERO).await
    }

    /// Starts listening; each request is recorded when it comes and answered `delay` later (a
    /// slow receiver).
    pub async fn start_slow(delay: Duration) -> Webhooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>> = Default::default();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborted with it.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                conns.spawn(async move {
                    if let Some(req) = read_stub_request(&mut s).await {
                        sink.lock().unwrap().push((req.path, req.body));
                        tokio::time::sleep(delay).await;
                        write_stub_response(&mut s, "application/json", "{}").await;
                    }
                });
            }
        });
        Webhooks { port, got, task }
    }

    /// A server's configuration that tells this receiver (a JSON webhook at `/json`).
    pub fn config(&self) -> String {
        format!(
            "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{}/json\"\n",
            self.port
        )
    }

    /// What came so far.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` requests came, then a moment more for any extra one to show;
    /// returns them all.
    pub async fn until(&self, n: usize, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        while self.received().len() < n {
            assert!(Instant::now() < deadline, "{:?}", self.received());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        self.received()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}
