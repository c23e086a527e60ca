//! The `corral` command line end to end: the real binary as a user runs it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corral_tests::{Server, binary, session_processes};
use serde_json::{Value, json};

fn corral(server: &Server, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(args)
        .output()
        .unwrap()
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = corral(server, args);
    assert!(
        out.status.success(),
        "corral {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether a process of session `id` runs `comm` (a script got past its `stty`).
fn runs(id: &str, comm: &str) -> bool {
    corral_tests::session_processes(id).into_iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

/// A tmpfs of its own (the full-disk tests; needs root), unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount (this test needs it)");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root): {out:?}"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Fills it to the last byte (a file `filler`).
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..512]).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = Command::new("umount").arg("-l").arg(self.path()).status() {
            eprintln!("umount: {e}");
        }
    }
}

/// `corral ARGS` started with `text` written to its standard input (then closed), its output
/// piped.
fn with_stdin(server: &Server, args: &[&str], text: &str) -> std::process::Child {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's process runs `bin`.
fn assert_serves_as(server: &Server, bin: &std::path::Path) {
    let pid = server.pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        bin.canonicalize().unwrap()
    );
}

/// The handshake's variable (`CORRAL_SERVE_AS`) is not left to the sessions.
fn assert_sessions_lack_the_handshake(server: &Server) {
    let script = "echo \"as=[$CORRAL_SERVE_AS]\"; exec sleep 100";
    ok(
        server,
        &["spawn", "--name", "env", "--", "sh", "-c", script],
    );
    eventually("its environment", || {
        ok(server, &["logs", "env"]).contains("as=[]")
    });
    ok(server, &["rm", "env"]);
}

/// `corral` is a fixed-address executable (a command starts without relocating its data) and
/// `corral serve` runs as `corrald` beside it, position independent (its address randomized);
/// an agent's hooks run `corral`, not the server's binary.
#[test]
fn serve_runs_as_the_position_independent_daemon_and_hooks_run_corral() {
    // The ELF header's e_type: 2 a fixed-address executable, 3 a position-independent one.
    let e_type = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        u16::from_le_bytes([b[16], b[17]])
    };
    let daemon = binary().with_file_name("corrald");
    assert_eq!(e_type(&binary()), 2, "corral is linked -no-pie");
    assert_eq!(e_type(&daemon), 3, "corrald is a PIE");
    let server = Server::start();
    assert_serves_as(&server, &daemon);
    let fake = install_fake_claude(
        &server,
        r#"#!/bin/sh
settings="$2"
grep -m1 '"command"' "$settings"
exec sleep 1000
"#,
    );
    spawn_fake_agent(&server, &fake, "never", &[]);
    let hook = format!("{} hook", binary().canonicalize().unwrap().display());
    eventually("its hook command", || {
        ok(&server, &["logs", "agent"]).contains(&hook)
    });
    ok(&server, &["rm", "agent"]);
    assert_sessions_lack_the_handshake(&server);
}

/// A `corrald` of another build than the `corral` that handed it a command (`cargo run --bin
/// corral` links `corral` only) would run other code: it refuses, saying how to build both, and
/// starts nothing.
#[test]
fn a_corrald_of_another_build_refuses_what_corral_handed_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary().with_file_name("corrald"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CORRAL_SERVE_AS", "another-build")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("of another build") && err.contains("cargo build -p corral-cli"),
        "{err}"
    );
    assert!(!dir.path().join("server.json").exists(), "it served");
}

/// `corral` links the command line and the client, not the server or the harness (a command
/// starts without paging them in): its daemon's commands run in the `corrald` beside it, and
/// a `corral` without one says so.
#[test]
fn corral_hands_the_daemons_commands_to_corrald_and_links_no_server() {
    // A function of the server library, by its mangled name's path.
    let server_fn = b"13corral_server5serve5serve";
    let has = |p: &std::path::Path| {
        std::fs::read(p)
            .unwrap()
            .windows(server_fn.len())
            .any(|w| w == server_fn)
    };
    assert!(has(&binary().with_file_name("corrald")), "corrald serves");
    assert!(!has(&binary()), "corral links the server");
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(binary(), alone.path().join("corral")).unwrap();
    for cmd in [
        &["serve"][..],
        &["bench", "echo"],
        &["chaos", "--secs", "1"],
    ] {
        let out = Command::new(alone.path().join("corral"))
            .args(cmd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?}: {err}");
        assert!(
            err.contains("runs in the corrald beside corral, and there is none"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn spawn_send_logs_stop_ps() {
    let server = Server::start();
    let id = ok(
        &server,
        &["spawn", "--name", "work", "--", "bash", "--norc", "-i"],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 36, "prints the id: {id}");
    ok(&server, &["send", "work", "echo hi-$((6*7))\\n"]);
    eventually("logs show the output", || {
        ok(&server, &["logs", "work"]).contains("hi-42")
    });
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "running");
    assert!(
        ps[0]["rss_kib"].as_u64().unwrap() > 0,
        "tree RSS from /proc"
    );
    assert!(
        ok(&server, &["tree"]).contains("work ("),
        "tree names sessions"
    );
    assert!(ok(&server, &["stop", "work"]).contains("stopped"));
    let ps = ok(&server, &["ps"]);
    assert!(ps.lines().nth(1).unwrap().contains("stopped"), "{ps}");
    // How it ended, worded as the events and `corral wait` word it (bash ends on SIGHUP).
    assert!(
        ps.lines().nth(1).unwrap().contains("signal 1 (SIGHUP)"),
        "{ps}"
    );
    // Columns line up under their headings.
    let (head, row) = (ps.lines().next().unwrap(), ps.lines().nth(1).unwrap());
    assert_eq!(head.find("STATE"), row.find("stopped"), "{ps}");
    assert_eq!(head.find("LAST EXIT"), row.find("signal 1"), "{ps}");
    assert_eq!(
        head.find("RST").map(|i| i + 2),
        row.find(" 0 signal").map(|i| i + 1),
        "{ps}"
    );
    assert!(session_processes(&id).is_empty());
    // No process, no figures: `-`, not 0.0 and 0K.
    let cpu_rss = row.split_whitespace().rev().take(2).collect::<Vec<_>>();
    assert_eq!(cpu_rss, ["-", "-"], "{ps}");
    let json: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert!(json[0].get("rss_kib").is_none(), "{json}");
    // Errors: one line on stderr, non-zero exit.
    let out = corral(&server, &["stop", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "corral: no session 'nope'");
    let out = corral(&server, &["send", "work", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("session work has no running process"),
        "{out:?}"
    );
}

/// Many sessions at once: `stop`, `kill`, `restart` and `rm` take several names, act on all
/// of them together (stops wait their graces side by side), say each outcome, and fail if
/// one failed — the others are done all the same.
#[test]
fn stop_kill_restart_and_rm_take_many_sessions() {
    let server = Server::start();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        // Each ignores its stop signal: a stop waits its whole grace, then SIGKILL.
        let script = "trap '' HUP TERM; while :; do sleep 0.1; done";
        ids.push(
            ok(
                &server,
                &[
                    "spawn", "--name", name, "--grace", "1", "--", "sh", "-c", script,
                ],
            )
            .trim()
            .to_string(),
        );
    }
    let t = std::time::Instant::now();
    let out = corral(&server, &["stop", "a", "nope", "b", "c"]);
    let took = t.elapsed();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "corral: no session 'nope'"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["a stopped", "b stopped", "c stopped"]
    );
    // Three graces of a second, side by side.
    assert!(took < std::time::Duration::from_millis(2500), "{took:?}");
    for id in &ids {
        assert!(session_processes(id).is_empty(), "{id}");
    }
    let said = ok(&server, &["restart", "a", "b"]);
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(said.lines().all(|l| l.ends_with("running")), "{said}");
    let said = ok(&server, &["kill", "a", "b"]);
    assert_eq!(said.lines().count(), 2, "{said}");
    // A name given twice is one session, removed once (the second said there was none).
    assert_eq!(
        ok(&server, &["rm", "a", "b", "a", "c", "c"])
            .lines()
            .collect::<Vec<_>>(),
        ["a removed", "b removed", "c removed"]
    );
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "{ps}");
    let out = corral(&server, &["rm"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn client_commands_without_a_server_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("ps")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no corral server is running"));
}

/// A server killed with SIGKILL leaves `server.json` and its socket behind: a client says no
/// server runs, as when none ever did (it said it could not reach the socket, "is it
/// running?").
#[test]
fn client_commands_after_a_killed_server_say_none_runs() {
    let mut server = Server::start();
    server.kill();
    assert!(server.dir.path().join("server.json").exists());
    let out = corral(&server, &["ps"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no corral server is running"), "{err}");
}

#[test]
fn a_busy_port_fails_the_start_naming_it_before_any_session_is_touched() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", &addr])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr}")),
        "the error names the address: {err}"
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "nothing opened before the port"
    );
}

/// A permission wait past what the hook command outlasts is refused at start, naming the key
/// (it used to be cut to 600 s without a word).
#[test]
fn a_permission_wait_too_long_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(&config, "[agents]\npermission_wait_secs = 1000\n").unwrap();
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agents.permission_wait_secs: at most 600"),
        "{err}"
    );
}

/// An `allowed_origins` entry no browser sends (a wildcard, a trailing slash, upper case) is
/// refused at start, saying what an origin looks like: compared as written it never matched,
/// and the pages it was for got 403 without a word.
#[test]
fn an_allowed_origin_no_browser_sends_is_refused_at_start() {
    for bad in [
        "*",
        "https://Proxy.Example.com",
        "https://proxy.example.com/",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("corral.toml");
        std::fs::write(&config, format!("allowed_origins = [\"{bad}\"]\n")).unwrap();
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is not an origin as browsers send it"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_session_starts_where_corral_spawn_was_run() {
    // As tmux does: `cd project && corral spawn -- claude` starts Claude in the project, and a
    // relative --cwd is taken from there (it used to be the server's directory).
    let server = Server::start();
    let here = tempfile::tempdir().unwrap();
    std::fs::create_dir(here.path().join("sub")).unwrap();
    let spawn = |args: &[&str]| {
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(server.dir.path())
            .arg("spawn")
            .args(args)
            .current_dir(here.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    spawn(&["--name", "here", "--", "sh", "-c", "pwd; exec sleep 100"]);
    spawn(&[
        "--name",
        "sub",
        "--cwd",
        "sub",
        "--",
        "sh",
        "-c",
        "pwd; exec sleep 100",
    ]);
    let real = here.path().canonicalize().unwrap();
    for (name, dir) in [("here", real.clone()), ("sub", real.join("sub"))] {
        eventually("pwd is printed", || {
            ok(&server, &["logs", name]).trim() == dir.display().to_string()
        });
    }
}

#[test]
fn hook_posts_events_for_its_session() {
    let server = Server::start();
    let id = ok(&server, &["spawn", "--name", "agent", "--", "cat"])
        .trim()
        .to_string();
    let info: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    let pid = info[0]["pid"].as_i64().unwrap();
    // The hook runs with the session's own environment, as Claude Code's hooks would.
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let var = |k: &str| {
        env.split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(format!("{k}=").as_bytes()))
            .map(|v| String::from_utf8_lossy(v).to_string())
            .unwrap()
    };
    // Follow the events while the hook posts (history first, then live).
    let events = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["events", "agent", "--json", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut hook = Command::new(binary())
        .arg("hook")
        .env_clear()
        .env("CORRAL_SESSION_ID", var("CORRAL_SESSION_ID"))
        .env("CORRAL_URL", var("CORRAL_URL"))
        .env("CORRAL_HOOK_TOKEN", var("CORRAL_HOOK_TOKEN"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = hook.stdin.take().unwrap();
        stdin
            .write_all(br#"{"hook_event_name":"SessionStart","session_id":"claude-abc","transcript_path":"/tmp/t","cwd":"/tmp"}"#)
            .unwrap();
    }
    assert!(hook.wait().unwrap().success());
    // The journal has it too.
    eventually("the hook is in the history", || {
        ok(&server, &["events", "agent", "--json"]).contains("\"SessionStart\"")
    });
    ok(&server, &["stop", "agent"]);
    let out = events.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"SessionStart\""), "{text}");
    assert!(
        text.contains("\"stopped\""),
        "follows until the end: {text}"
    );
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["agent_session_id"], "claude-abc");
    assert_eq!(ps[0]["state"], "stopped");
    assert_eq!(ps[0]["id"], id.as_str());
}

/// A tmux server on its own socket (the name derefs to it), ended when this is dropped — also
/// when its test fails half-way, which used to leave tmux and the `corral` in it running.
struct Tmux(String);

impl std::ops::Deref for Tmux {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Already gone when the test ended it itself: nothing to report.
        if let Err(e) = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status()
        {
            eprintln!("tmux -L {} kill-server: {e}", self.0);
        }
    }
}

/// Runs `corral attach work` in a detached 100×30 tmux session `t` on its own socket.
fn attach_in_tmux(server: &Server, prefix: &str) -> Tmux {
    corral_in_tmux(server, prefix, "attach work", (100, 30))
}

/// Runs `corral <args>` (a shell command line) against `server` in a detached tmux session
/// `t` of `size` (columns, rows) on its own socket.
fn corral_in_tmux(server: &Server, prefix: &str, args: &str, size: (u16, u16)) -> Tmux {
    let socket = format!("{prefix}-{}", std::process::id());
    let cmd = format!(
        "{} --data-dir {} {args}",
        binary().display(),
        server.dir.path().display()
    );
    let (cols, rows) = (size.0.to_string(), size.1.to_string());
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-x",
            &cols,
            "-y",
            &rows,
            "-s",
            "t",
            &cmd,
        ],
    );
    Tmux(socket)
}

/// A terminal that says it is 0×0 (a pty nobody sized: `script`, some CI runners) is taken
/// as 80×24: `attach` shrank the session to 1×1 for every other viewer, and `spawn -a` was
/// refused ("terminal size must be at least 1×1").
#[test]
fn a_terminal_of_no_size_counts_as_80_by_24() {
    require_tmux();
    let server = Server::start();
    let command = format!(
        "{} --data-dir {}",
        binary().display(),
        server.dir.path().display()
    );
    let socket = format!("zero-size-{}", std::process::id());
    let out = |args: &[&str]| String::from_utf8_lossy(&corral(&server, args).stdout).to_string();
    let in_zero = |what: &str| {
        tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                "-s",
                what,
                &format!("stty rows 0 cols 0; {command} {what}"),
            ],
        )
    };
    // spawn -a: started, at 80×24.
    in_zero("spawn -a --name zero -- sh -c 'stty size; exec sleep 600'");
    eventually("the program ran at 80x24", || {
        out(&["logs", "zero"]).contains("24 80")
    });
    // attach: the session takes 80×24, never 1×1.
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "work",
            "--",
            "sh",
            "-c",
            "echo ready; exec cat",
        ],
    );
    // First at 100×30 from a sized terminal, then from one of no size.
    let sized = corral_in_tmux(&server, "sized", "attach work", (100, 30));
    eventually("the sized attach resized the session", || {
        out(&["events", "work"]).contains("100x30")
    });
    tmux(&sized, &["kill-server"]);
    in_zero("attach work");
    eventually("the attach of no size resized the session", || {
        out(&["events", "work"]).contains("80x24")
    });
    let events = out(&["events", "work"]);
    assert!(!events.contains("1x1"), "{events}");
    tmux(&socket, &["kill-server"]);
}

/// Detaches the tmux session `t`'s attach (Ctrl-\\): the attach exits, the (only) session
/// keeps running; then ends the tmux server.
fn detach_leaves_it_running(server: &Server, socket: &str) {
    tmux(socket, &["send-keys", "-t", "t", "C-\\"]);
    eventually("attach exited", || {
        !tmux(socket, &["list-sessions"]).contains("t:")
    });
    let ps: Value = serde_json::from_str(&ok(server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "running");
    tmux(socket, &["kill-server"]);
}

/// The attach tests need a real terminal: tmux, which `scripts/setup` installs. Without it they
/// fail, naming it (a test never passes by skipping).
fn require_tmux() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is not installed: run scripts/setup"
    );
}

fn tmux(socket: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `tree --watch` on a terminal draws in place on the alternate screen, cut to the terminal's
/// height with a count of what is left out (it scrolled its top away on every redraw, and the
/// terminal's history filled with copies), redraws on a change, and leaves on Ctrl-C.
#[test]
fn tree_watch_draws_in_place_and_fits_the_terminal() {
    require_tmux();
    let server = Server::start();
    for i in 0..6 {
        ok(&server, &["spawn", "--name", &format!("w{i}"), "--", "cat"]);
    }
    let socket = corral_in_tmux(&server, "watch", "tree --watch", (80, 12));
    let screen = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("the tree is drawn", || screen().contains("more lines"));
    let first = screen();
    let rows: Vec<&str> = first.lines().collect();
    assert!(rows[0].starts_with("server"), "{first}");
    assert_eq!(rows.len(), 12, "{first}");
    assert!(rows[11].starts_with("… "), "{first}");
    ok(&server, &["spawn", "--name", "w6", "--", "cat"]);
    eventually("redrawn with one more session", || {
        screen().lines().last().is_some_and(|l| l != rows[11])
    });
    let history = tmux(&socket, &["display", "-p", "-t", "t", "#{history_size}"]);
    assert_eq!(history.trim(), "0", "nothing scrolled into the history");
    // The terminal resized, nothing else changed: fitted again at once (not at the next
    // change the server pushes, up to 2 s later).
    tmux(
        &socket,
        &["resize-window", "-t", "t", "-x", "60", "-y", "8"],
    );
    let resized = Instant::now();
    while !{
        let shown = screen();
        shown.lines().count() == 8
            && shown
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("server"))
            && shown.lines().last().is_some_and(|l| l.starts_with("… "))
    } {
        assert!(
            resized.elapsed() < Duration::from_millis(700),
            "not fitted to the new size: {}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tmux(&socket, &["send-keys", "-t", "t", "C-c"]);
    eventually("watch left on Ctrl-C", || {
        !tmux(&socket, &["list-sessions"]).contains("t:")
    });
}

/// A failed session's `ps` row says why (the exit alone, `exit 0` of a program restarted too
/// often, did not).
#[test]
fn ps_says_why_a_session_failed() {
    let server = Server::start();
    let spec = json!({
        "name": "flappy",
        "argv": ["sh", "-c", "exit 0"],
        "restart": "always",
        "backoff": {"initial": 0.01, "max": 0.01, "multiplier": 1.0, "jitter": 0.0, "reset_after": 30},
        "intensity": {"max_restarts": 2, "period": 60},
    });
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server.spawn(spec));
    eventually("failed", || ok(&server, &["ps"]).contains("failed"));
    let ps = ok(&server, &["ps"]);
    let row = ps.lines().find(|l| l.contains("flappy")).unwrap();
    assert!(row.contains("restart intensity exceeded"), "{ps}");
}

#[test]
fn attach_in_a_real_terminal() {
    require_tmux();
    let server = Server::start();
    ok(
        &server,
        &["spawn", "--name", "work", "--", "bash", "--norc", "-i"],
    );
    ok(&server, &["send", "work", "echo before-attach\\n"]);
    let socket = attach_in_tmux(&server, "corral-test");
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    // The screen snapshot shows what happened before attaching.
    eventually("snapshot in the pane", || pane().contains("before-attach"));
    // Typing in the terminal reaches the session.
    tmux(
        &socket,
        &["send-keys", "-t", "t", "echo typed-$((1+1))", "Enter"],
    );
    eventually("typed input echoed", || pane().contains("typed-2"));
    assert!(ok(&server, &["logs", "work"]).contains("typed-2"));
    // The viewer's size became the session's (resize policy: last typist wins).
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["size"]["cols"], 100);
    detach_leaves_it_running(&server, &socket);
}

/// An attach whose terminal is smaller than the session (another viewer typed last, so the
/// session has its size) shows a window onto the session's screen, cut at the terminal's
/// edge as tmux does — a line wider than the terminal was wrapped, and the screen below it
/// broken — and once a key typed there makes the session its size, the program's own bytes
/// again.
#[test]
fn attach_shows_a_window_onto_a_larger_session() {
    require_tmux();
    let server = Server::start();
    let program = "stty -echo; while read x; do printf '%0110d|END\\n' 0; done";
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", program],
    );
    let socket = corral_in_tmux(&server, "corral-test-window", "attach work", (80, 24));
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    let size = || {
        let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
        (ps[0]["size"]["rows"].clone(), ps[0]["size"]["cols"].clone())
    };
    eventually("attached at its size", || size() == (json!(24), json!(80)));
    // Another viewer takes its own, larger size (as a desktop page that types does).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut other = rt.block_on(server.ws());
    let r =
        rt.block_on(other.call(
            json!({"type": "resize", "session": "work", "rows": 30, "cols": 120, "take": true}),
        ));
    assert_eq!(r["type"], "ok", "{r}");
    eventually("the other viewer's size", || {
        size() == (json!(30), json!(120))
    });
    ok(&server, &["send", "work", "go\\n"]);
    eventually("the line drawn", || pane().contains('0'));
    let shown = pane();
    let rows: Vec<&str> = shown.lines().collect();
    let line = rows.iter().position(|r| r.starts_with('0')).unwrap();
    assert_eq!(rows[line], "0".repeat(80), "cut at the edge: {shown}");
    assert!(
        !rows.get(line + 1).is_some_and(|r| r.contains("END")),
        "not wrapped onto the next row: {shown}"
    );
    // A key typed here takes the size back: the program's bytes go through again.
    tmux(&socket, &["send-keys", "-t", "t", "Enter"]);
    eventually("this terminal's size", || size() == (json!(24), json!(80)));
    eventually("a whole line at this size", || {
        pane().lines().filter(|r| r.contains("|END")).count() >= 1
    });
    detach_leaves_it_running(&server, &socket);
}

/// Detaching puts back this terminal's modes that the session's program set (as tmux does): a
/// program in the alternate screen with mouse reporting and a hidden cursor (vim, htop) used to
/// leave the user's terminal that way after Ctrl-\\.
#[test]
fn detaching_puts_the_terminals_modes_back() {
    require_tmux();
    let server = Server::start();
    let program =
        "echo primary-line; printf '\\033[?1049h\\033[?1000h\\033[?25lin-alt'; exec sleep 600";
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", program],
    );
    // A shell keeps the pane after attach exits, so its modes can be read.
    let socket = corral_in_tmux(
        &server,
        "corral-test-modes",
        "attach work; exec sleep 600",
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    let modes = || {
        tmux(
            &socket,
            &[
                "display",
                "-p",
                "-t",
                "t",
                "#{alternate_on} #{mouse_any_flag} #{cursor_flag}",
            ],
        )
    };
    eventually("attached, in the program's alternate screen", || {
        pane().contains("in-alt") && modes().trim() == "1 1 0"
    });
    tmux(&socket, &["send-keys", "-t", "t", "C-\\"]);
    eventually("detached with the modes put back", || {
        pane().contains("detached") && modes().trim() == "0 0 1"
    });
}

/// An attach ended from outside (`timeout`, `kill`) puts the terminal back too — it was left
/// raw, in the program's alternate screen, with mouse reporting on — and so does a detach for
/// the scroll region and insert mode a program set (the user's shell then scrolled in rows
/// 5-10). A detach key that the terminal sends for another key is refused.
#[test]
fn an_attach_ended_by_a_signal_puts_the_terminal_back() {
    require_tmux();
    let server = Server::start();
    // The modes are set once the session has the attach's size (a scroll region set at
    // another size does not survive a resize, in vt100 as in xterm).
    let program = "read go; printf '\\033[?1049h\\033[?1000h\\033[?25l\\033[5;10r\\033[4hin-alt'; exec sleep 600";
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", program],
    );
    let socket = corral_in_tmux(
        &server,
        "corral-test-signal",
        "attach work; echo attach-exit-$?; exec sleep 600",
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("the attach's size", || {
        let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
        ps[0]["size"]["cols"] == 100
    });
    ok(&server, &["send", "work", "\\n"]);
    let modes = || {
        tmux(
            &socket,
            &[
                "display",
                "-p",
                "-t",
                "t",
                "#{alternate_on} #{mouse_any_flag} #{cursor_flag} #{scroll_region_upper}-#{scroll_region_lower} #{insert_flag}",
            ],
        )
    };
    eventually("attached, in the program's modes", || {
        pane().contains("in-alt") && modes().trim() == "1 1 0 4-9 1"
    });
    let shell: i32 = tmux(&socket, &["display", "-p", "-t", "t", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    let attach: i32 = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("the attach runs under the pane's shell")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(attach),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually("ended with the terminal put back", || {
        pane().contains("attach-exit-143") && modes().trim() == "0 0 1 0-29 0"
    });
    assert!(pane().contains("ended by SIGTERM"), "{}", pane());

    let refused = corral(&server, &["attach", "--detach-key", "[", "work"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("choose another"), "{err}");
}

/// An approximate screen (a flood lapped the server's screen) is said on the bottom row,
/// the cursor left where the program put it: the notice used to be a status line whose line
/// feeds scrolled the very screen it warned about and moved the cursor.
#[test]
fn an_approximate_screen_is_said_without_moving_it() {
    require_tmux();
    let server = Server::start();
    let program = "printf '\\033[?1049hHEADER'; head -c 3000000 /dev/zero | tr '\\0' x; printf '\\033[5;7H'; exec sleep 600";
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", program],
    );
    eventually("the flood is over", || {
        let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
        ps[0]["output_offset"].as_u64().unwrap() >= 3_000_000
    });
    std::thread::sleep(Duration::from_millis(300));
    let socket = corral_in_tmux(
        &server,
        "corral-test-approx",
        "attach --read-only work",
        (80, 24),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("the notice on the bottom row", || {
        pane()
            .lines()
            .last()
            .is_some_and(|l| l.contains("may be incomplete"))
    });
    let cursor = tmux(
        &socket,
        &["display", "-p", "-t", "t", "#{cursor_y} #{cursor_x}"],
    );
    assert_eq!(cursor.trim(), "4 6", "{}", pane());
}

/// A program on pipes reads lines: `send --paste` and Enter typed in `attach` arrive as a
/// newline (they arrived as a CR: the program never got its line, and the CR ended up inside
/// the next one). Attaching to a session that ended says so; an attach whose token is revoked
/// ends, saying why (it tried to reconnect for ever).
#[test]
fn attach_speaks_lines_to_pipes_says_when_a_session_ended_and_ends_when_revoked() {
    require_tmux();
    let server = Server::start();
    let program = "while IFS= read -r l; do echo \"got[$l]\"; done";
    ok(
        &server,
        &[
            "spawn", "--name", "lines", "--pipe", "--", "sh", "-c", program,
        ],
    );
    ok(&server, &["send", "--paste", "lines", "hello"]);
    eventually("the pasted line", || {
        ok(&server, &["logs", "lines"]).contains("got[hello]")
    });
    let socket = corral_in_tmux(
        &server,
        "corral-test-pipe",
        "attach lines; exec sleep 600",
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    // Its last lines stand in for a screen, each at the start of its line.
    eventually("the earlier output shown", || {
        pane().lines().any(|l| l == "got[hello]")
    });
    // Typed text is echoed and edited here, and the program gets the edited line.
    tmux(
        &socket,
        &["send-keys", "-t", "t", "typox", "BSpace", "BSpace", "ed"],
    );
    eventually("the echo", || pane().lines().any(|l| l == "typed"));
    tmux(&socket, &["send-keys", "-t", "t", "Enter"]);
    eventually("the typed line", || {
        ok(&server, &["logs", "lines"]).contains("got[typed]")
    });
    eventually("and its answer on a line of its own", || {
        pane().lines().any(|l| l == "got[typed]")
    });
    drop(socket);
    // A session that ends while attached: attach exits with its exit code, as a shell gives a
    // command's (it exited 0 whatever the session did).
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "three",
            "--",
            "sh",
            "-c",
            "read x; exit 3",
        ],
    );
    let socket = corral_in_tmux(
        &server,
        "corral-test-exit",
        "attach three; echo attach-exit-$?; exec sleep 600",
        (100, 30),
    );
    std::thread::sleep(Duration::from_millis(300));
    tmux(&socket, &["send-keys", "-t", "t", "Enter"]);
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]).replace('\n', "");
    eventually("attach ended with the session's code", || {
        pane().contains("attach-exit-3")
    });
    drop(socket);
    // An ended session.
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "done",
            "--",
            "sh",
            "-c",
            "echo bye; exit 4",
        ],
    );
    eventually("done ended", || ok(&server, &["ps"]).contains("exit 4"));
    let socket = corral_in_tmux(
        &server,
        "corral-test-ended",
        "attach done; exec sleep 600",
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]).replace('\n', "");
    eventually("attach says it ended", || {
        pane().contains("has ended (exit 4)")
    });
    drop(socket);
    // A revoked token.
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "watched",
            "--",
            "sh",
            "-c",
            "echo watching; exec sleep 600",
        ],
    );
    let token = ok(
        &server,
        &[
            "token",
            "create",
            "--session",
            "watched",
            "--scope",
            "write",
        ],
    );
    let token = token.trim();
    let socket = corral_in_tmux(
        &server,
        "corral-test-revoked",
        &format!("--token {token} attach watched; echo attach-exit-$?; exec sleep 600"),
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]).replace('\n', "");
    eventually("attached", || pane().contains("watching"));
    // Followers with the same token: they end, saying why, instead of reconnecting to be
    // refused ("connection lost (token revoked); reconnecting", then "invalid token").
    let mut followers: Vec<_> = [["logs", "watched", "-f"], ["events", "watched", "-f"]]
        .iter()
        .map(|args| {
            let mut all = vec!["--token", token];
            all.extend_from_slice(args);
            server.background(&all)
        })
        .collect();
    let id = token.split('_').nth(1).unwrap();
    eventually("the followers are connected", || {
        ok(&server, &["tree", "--json"])
            .matches(&format!("\"token\":\"{id}\""))
            .count()
            >= 3
    });
    ok(&server, &["token", "revoke", token]);
    eventually("attach ended, saying why", || {
        pane().contains("token was revoked") && pane().contains("attach-exit-1")
    });
    for follower in &mut followers {
        eventually("the follower ended", || {
            follower.try_wait().unwrap().is_some()
        });
    }
    for follower in followers {
        let out = follower.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("connection closed: token revoked"), "{err}");
        assert!(!err.contains("reconnecting"), "{err}");
    }
}

/// `corral spawn --attach` starts the session at the terminal's size (its program sees it from
/// the first line, not 80×24) and attaches to it; detaching leaves it running. Without a
/// terminal it refuses before anything starts.
#[test]
fn spawn_attach_starts_at_the_terminal_size() {
    require_tmux();
    let server = Server::start();
    // The program prints the size it was started with before anything could resize it.
    let socket = corral_in_tmux(
        &server,
        "corral-test-sa",
        "spawn --attach --name here -- bash --norc -c 'echo started-at $(stty size); exec bash --norc -i'",
        (97, 31),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("attached", || pane().contains("started-at"));
    assert!(pane().contains("started-at 31 97"), "{}", pane());
    tmux(
        &socket,
        &["send-keys", "-t", "t", "echo typed-$((2+2))", "Enter"],
    );
    eventually("typed input echoed", || pane().contains("typed-4"));
    detach_leaves_it_running(&server, &socket);
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["spawn", "--attach", "--name", "nope", "--", "cat"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was started"),
        "{out:?}"
    );
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 1, "{ps}");
}

/// A stand-in for Claude Code: prints its arguments, fires a SessionStart hook through the
/// command in its `--settings` file (as Claude Code does), crashes on its first run and reports
/// being resumed on the next.
/// Writes `script` as an executable `claude` in the server's data dir; returns its path.
fn install_fake_claude(server: &Server, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let fake = server.dir.path().join("claude");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake.display().to_string()
}

/// Spawns `fake` (see [`install_fake_claude`]) as a Claude agent named `agent` under restart
/// policy `restart`, with `args` after it.
fn spawn_fake_agent(server: &Server, fake: &str, restart: &str, args: &[&str]) {
    let mut argv = vec![
        "spawn",
        "--name",
        "agent",
        "--agent",
        "claude",
        "--restart",
        restart,
        "--",
        fake,
    ];
    argv.extend(args);
    ok(server, &argv);
}

const FAKE_CLAUDE: &str = r#"#!/bin/sh
echo "ARGS: $*"
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
echo '{"hook_event_name":"SessionStart","session_id":"claude-xyz","cwd":"/tmp"}' | $cmd
case "$*" in
  *"--resume claude-xyz"*) echo RESUMED; exec sleep 1000 ;;
  *) exit 1 ;;
esac
"#;

#[test]
fn claude_profile_passes_hook_settings_and_resumes_after_a_crash() {
    let server = Server::start();
    let fake = install_fake_claude(&server, FAKE_CLAUDE);
    spawn_fake_agent(&server, &fake, "on-failure", &["--model", "x"]);
    eventually("resumed", || {
        ok(&server, &["logs", "agent"]).contains("RESUMED")
    });
    let logs = ok(&server, &["logs", "agent"]);
    assert!(logs.contains("ARGS: --settings "), "{logs}");
    assert!(logs.contains("--model x"), "{logs}");
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["agent_session_id"], "claude-xyz");
    assert_eq!(ps[0]["restarts"], 1);
    assert_eq!(ps[0]["state"], "running");
    let id = ps[0]["id"].as_str().unwrap().to_string();
    ok(&server, &["stop", "agent"]);
    assert!(session_processes(&id).is_empty());
}

/// A prompt whose turn the agent's process did not write down before it ended (a restart
/// right after the turn): its transcript holds no conversation, and `--resume` of it would fail
/// at once, every restart (Claude Code: "No conversation found", exit 1). The next process
/// starts afresh.
#[test]
fn a_prompt_never_written_down_is_not_resumed() {
    let server = Server::start();
    let ran = server.dir.path().join("ran-once");
    let script = format!(
        r#"#!/bin/sh
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
case "$*" in *--resume*) echo RESUMED; exit 1 ;; esac
if [ -e {ran} ]; then echo AFRESH; exec sleep 1000; fi
touch {ran}
echo '{{"hook_event_name":"SessionStart","session_id":"lost","transcript_path":"{ran}.jsonl"}}' | $cmd
echo '{{"hook_event_name":"UserPromptSubmit","prompt":"go"}}' | $cmd
exit 1
"#,
        ran = ran.display()
    );
    let fake = install_fake_claude(&server, &script);
    spawn_fake_agent(&server, &fake, "on-failure", &[]);
    eventually("started again", || {
        ok(&server, &["logs", "agent"]).contains("AFRESH")
    });
    let logs = ok(&server, &["logs", "agent"]);
    assert!(!logs.contains("RESUMED"), "{logs}");
    ok(&server, &["rm", "agent"]);
}

/// An agent restarted right after a turn, before it wrote the turn down (Claude Code writes
/// its transcript a moment after its Stop hook): the restart waits for the transcript (up to
/// 2 s), so the next process resumes the conversation instead of starting afresh.
#[test]
fn a_restart_right_after_a_turn_waits_for_the_conversation_to_be_written() {
    let server = Server::start();
    let transcript = server.dir.path().join("talk.jsonl");
    let script = format!(
        r#"#!/bin/sh
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
case "$*" in *"--resume talk"*) echo RESUMED; exec sleep 1000 ;; esac
echo '{{"hook_event_name":"SessionStart","session_id":"talk","transcript_path":"{t}"}}' | $cmd
echo '{{"hook_event_name":"UserPromptSubmit","prompt":"go"}}' | $cmd
echo '{{"hook_event_name":"Stop"}}' | $cmd
echo TURN-DONE
sleep 1.5
echo '{{"type":"user","message":{{"content":"go"}}}}' > {t}
echo WRITTEN
exec sleep 1000
"#,
        t = transcript.display()
    );
    let fake = install_fake_claude(&server, &script);
    spawn_fake_agent(&server, &fake, "never", &[]);
    // Its turn's end (SessionStart alone makes it idle, at its prompt: not yet prompted).
    eventually("the turn ended", || {
        ok(&server, &["logs", "agent"]).contains("TURN-DONE")
    });
    // At once, while the turn is not written down yet (it is, 1.5 s after its Stop hook:
    // within the restart's 2 s wait).
    assert!(!ok(&server, &["logs", "agent"]).contains("WRITTEN"));
    ok(&server, &["restart", "agent"]);
    eventually("resumed", || {
        ok(&server, &["logs", "agent"]).contains("RESUMED")
    });
    ok(&server, &["rm", "agent"]);
}

/// A stopped agent restarted under a server that did not run it (it was stopped, then the
/// server restarted or was upgraded) resumes its conversation, as a restart under the same
/// server does: it started afresh, its conversation gone (`agent_fresh`, no `--resume`).
#[test]
fn a_stopped_agent_restarted_under_a_next_server_resumes_its_conversation() {
    let mut server = Server::start();
    let transcript = server.dir.path().join("kept.jsonl");
    let script = format!(
        r#"#!/bin/sh
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
case "$*" in *"--resume kept"*) echo RESUMED; exec sleep 1000 ;; esac
echo '{{"hook_event_name":"SessionStart","session_id":"kept","transcript_path":"{t}"}}' | $cmd
echo '{{"hook_event_name":"UserPromptSubmit","prompt":"remember PINEAPPLE"}}' | $cmd
echo '{{"type":"user","message":{{"content":"remember PINEAPPLE"}}}}' > {t}
echo '{{"hook_event_name":"Stop"}}' | $cmd
echo TURN-DONE
exec sleep 1000
"#,
        t = transcript.display()
    );
    let fake = install_fake_claude(&server, &script);
    spawn_fake_agent(&server, &fake, "never", &[]);
    // Its turn's end, not `wait --for idle`: SessionStart alone makes it idle (at its prompt),
    // and a stop before the prompt and the transcript (a loaded machine) left nothing to resume.
    eventually("the turn ended", || {
        ok(&server, &["logs", "agent"]).contains("TURN-DONE")
    });
    ok(&server, &["stop", "agent"]);
    server.kill();
    server.restart();
    ok(&server, &["restart", "agent"]);
    eventually("resumed", || {
        ok(&server, &["logs", "agent"]).contains("RESUMED")
    });
    ok(&server, &["rm", "agent"]);
}

#[test]
fn logs_events_and_export_survive_a_server_restart() {
    let mut server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "job",
            "--restart",
            "always",
            "--",
            "sh",
            "-c",
            "echo run-$$; exec sleep 1000",
        ],
    );
    eventually("first run's output", || {
        ok(&server, &["logs", "job"]).contains("run-")
    });
    let (code, _) = server.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    server.restart();
    // Both runs' output, the first one from disk.
    eventually("second run's output", || {
        ok(&server, &["logs", "job"]).matches("run-").count() == 2
    });
    // The event history spans both runs: the shutdown, the recovery decision, the new start.
    let events = ok(&server, &["events", "job"]);
    assert!(events.contains("stopped by server shutdown"), "{events}");
    assert!(events.contains("recovery"), "{events}");
    assert_eq!(events.matches(" spawned ").count(), 2, "{events}");
    let json: Vec<Value> = ok(&server, &["events", "job", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = json.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // `--after SEQ`: only what came after it (a script resuming where it stopped).
    let last = seqs.len() as u64;
    let after: Vec<u64> = ok(&server, &["events", "job", "--json", "--after", "2"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(after, (3..=last).collect::<Vec<_>>());
    let last = last.to_string();
    assert_eq!(ok(&server, &["events", "job", "--after", &last]), "");
    // asciicast v2: a JSON header line, then [time, "o", text] events.
    let cast = ok(&server, &["export", "job", "--format", "asciicast"]);
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let text: String = lines
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text.matches("run-").count(), 2, "{text:?}");
    let out = corral(&server, &["export", "nope"]);
    assert!(!out.status.success());
}

/// An exported recording plays the session's resizes where they happened (`r` events): the
/// output written at 80 columns, then at another viewer's 100 (it played all at the size the
/// session had when exported).
#[test]
fn export_plays_the_sessions_resizes() {
    let server = Server::start();
    let program = "echo small; read x; echo big; exec sleep 600";
    ok(
        &server,
        &["spawn", "--name", "sized", "--", "sh", "-c", program],
    );
    eventually("first output", || {
        ok(&server, &["logs", "sized"]).contains("small")
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ws = rt.block_on(server.ws());
    let r = rt.block_on(ws.call(
        json!({"type": "resize", "session": "sized", "rows": 30, "cols": 100, "take": true}),
    ));
    assert_eq!(r["type"], "ok", "{r}");
    ok(&server, &["send", "sized", "\\n"]);
    eventually("second output", || {
        ok(&server, &["logs", "sized"]).contains("big")
    });
    let cast = ok(&server, &["export", "sized", "--format", "asciicast"]);
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (json!(80), json!(24))
    );
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let at = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred).unwrap();
    let small = at(&|e| e[1] == "o" && e[2].as_str().unwrap().contains("small"));
    let resized = at(&|e| e[1] == "r");
    let big = at(&|e| e[1] == "o" && e[2].as_str().unwrap().contains("big"));
    assert_eq!(events[resized][2], "100x30", "{cast}");
    assert!(small < resized && resized < big, "{cast}");
}

const FAKE_CLAUDE_LONG: &str = r#"#!/bin/sh
echo "ARGS: $*"
case "$*" in
  *"--resume claude-srv"*) echo RESUMED-AFTER-CRASH; exec sleep 1000 ;;
esac
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
echo '{"hook_event_name":"SessionStart","session_id":"claude-srv","cwd":"/tmp"}' | $cmd
exec sleep 1000
"#;

#[test]
fn claude_session_survives_a_server_sigkill_and_resumes_its_conversation_when_lost() {
    let mut server = Server::start();
    let fake = install_fake_claude(&server, FAKE_CLAUDE_LONG);
    let id = ok(
        &server,
        &[
            "spawn",
            "--name",
            "agent",
            "--agent",
            "claude",
            "--restart",
            "on-failure",
            "--",
            &fake,
        ],
    )
    .trim()
    .to_string();
    // The SessionStart hook is in the journal (an events query commits what is queued).
    eventually("the hook is journaled", || {
        ok(&server, &["events", "agent"]).contains("SessionStart")
    });
    let old = session_processes(&id);
    assert!(!old.is_empty());
    // A server crash costs the agent nothing: same processes, same conversation, no resume.
    server.kill();
    server.restart();
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "running", "{ps}");
    assert_eq!(ps[0]["agent_session_id"], "claude-srv");
    let mut now = session_processes(&id);
    now.sort();
    let mut before = old.clone();
    before.sort();
    assert_eq!(now, before, "the agent's processes survived the server");
    assert!(!ok(&server, &["logs", "agent"]).contains("RESUMED-AFTER-CRASH"));
    // Its holder killed: the process is lost, and the restart resumes the conversation.
    let main = ps[0]["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{main}/stat")).unwrap();
    let holder: i32 = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("resumed with --resume", || {
        ok(&server, &["logs", "agent"]).contains("RESUMED-AFTER-CRASH")
    });
    for pid in old {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
        assert!(
            !alive || !session_processes(&id).contains(&pid),
            "old process {pid} survived its holder"
        );
    }
    let events = ok(&server, &["events", "agent"]);
    assert!(events.contains("lost: its holder"), "{events}");
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "running");
    assert_eq!(ps[0]["agent_session_id"], "claude-srv");
    ok(&server, &["stop", "agent"]);
    assert!(session_processes(&id).is_empty());
}

const FAKE_CLAUDE_HOOKS_ON_INPUT: &str = r#"#!/bin/sh
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
echo '{"hook_event_name":"SessionStart","session_id":"claude-late","cwd":"/tmp"}' | $cmd
while read line; do
  echo "{\"hook_event_name\":\"UserPromptSubmit\",\"session_id\":\"claude-late\",\"prompt\":\"$line\"}" | $cmd
done
"#;

#[test]
fn an_agents_hooks_reach_a_restarted_server_on_another_port() {
    let mut server = Server::start();
    let fake = install_fake_claude(&server, FAKE_CLAUDE_HOOKS_ON_INPUT);
    ok(
        &server,
        &["spawn", "--name", "agent", "--agent", "claude", "--", &fake],
    );
    eventually("the first hook is journaled", || {
        ok(&server, &["events", "agent"]).contains("SessionStart")
    });
    let old_url = server.url.clone();
    server.kill();
    server.restart();
    assert_ne!(
        server.url, old_url,
        "the new server listens elsewhere (port 0)"
    );
    ok(&server, &["send", "agent", "after-restart\n"]);
    eventually("a hook after the restart is journaled", || {
        ok(&server, &["events", "agent"]).contains("UserPromptSubmit")
    });
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["attention"], "working", "{ps}");
}

#[test]
fn send_paste_brackets_only_when_the_program_enabled_it() {
    let server = Server::start();
    // `cat -v` shows ESC as ^[ ; the first session turns bracketed paste on, the second not.
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "bp",
            "--",
            "sh",
            "-c",
            "printf '\\033[?2004h'; exec cat -v",
        ],
    );
    ok(
        &server,
        &["spawn", "--name", "plain", "--", "sh", "-c", "exec cat -v"],
    );
    // Pasted once the server has read that `bp` turned bracketed paste on.
    eventually("bp turned bracketed paste on", || {
        ok(&server, &["logs", "bp"]).contains("\x1b[?2004h")
    });
    ok(&server, &["send", "bp", "hello", "--paste"]);
    ok(&server, &["send", "plain", "hello", "--paste"]);
    eventually("both got the text", || {
        ok(&server, &["logs", "bp"]).matches("hello").count() >= 2
            && ok(&server, &["logs", "plain"]).matches("hello").count() >= 2
    });
    let bp = ok(&server, &["logs", "bp"]);
    assert!(bp.contains("^[[200~hello^[[201~"), "{bp:?}");
    let plain = ok(&server, &["logs", "plain"]);
    assert!(!plain.contains("200~"), "{plain:?}");
}

/// `corral send - ` takes its text from standard input as it is (no escapes), and a text larger
/// than a WebSocket frame goes whole: keystrokes in parts, a paste as one paste (bracketed
/// once, one Enter). Before, anything over the 64 KiB frame limit closed the connection
/// ("frame too large") and a prompt given as an argument had its backslashes rewritten.
#[test]
fn send_takes_stdin_verbatim_and_texts_larger_than_a_frame_whole() {
    let server = Server::start();
    let received = server.dir.path().join("received");
    ok(&server, &["spawn", "--name", "keys", "--pipe", "--", "cat"]);
    // A raw terminal that turns bracketed paste on and records what it reads.
    let record = format!(
        "printf '\\033[?2004h'; stty raw -echo; exec cat > {}",
        received.display()
    );
    let tui = ok(
        &server,
        &["spawn", "--name", "tui", "--", "sh", "-c", &record],
    )
    .trim()
    .to_string();
    // The terminal is raw once `stty` is done and `cat` reads.
    eventually("tui reads raw", || runs(&tui, "cat"));
    // 300 KB with every character JSON escapes, and backslash sequences that must stay as
    // they are.
    let unit = "a\\n\\t\"é😀\u{1}\tline\n";
    let text = unit.repeat(300_000 / unit.len());
    let send = |args: &[&str]| {
        let out = with_stdin(&server, args, &text).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "corral {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    send(&["send", "keys", "-"]);
    eventually("the keystrokes arrived", || {
        ok(&server, &["logs", "keys"]).len() >= text.len()
    });
    assert!(ok(&server, &["logs", "keys"]) == text, "keystrokes changed");
    send(&["send", "--paste", "tui", "-"]);
    let want = format!("\x1b[200~{text}\x1b[201~\r");
    eventually("the paste and its Enter arrived", || {
        std::fs::read(&received).is_ok_and(|b| b.len() >= want.len())
    });
    assert!(
        std::fs::read(&received).unwrap() == want.as_bytes(),
        "the paste is not one bracketed paste of the text and one Enter"
    );
    // Not UTF-8: refused, naming why.
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["send", "keys", "-"])
        .stdin(std::fs::File::open("/bin/true").unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not UTF-8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `logs -f` of a session that has already ended prints its output and exits (it used to wait
/// for ever for an end that had come), and a `corral restart` does not end the following: the
/// new process's output follows (a restart went through `stopped`, which followers took for
/// the end).
#[test]
fn logs_follow_ends_with_an_ended_session_and_follows_a_restart() {
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "short",
            "--",
            "sh",
            "-c",
            "echo s1; exit 4",
        ],
    );
    eventually("short ended", || ok(&server, &["ps"]).contains("exit 4"));
    let started = Instant::now();
    let out = corral(&server, &["logs", "short", "-f"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s1\r\n");
    assert!(started.elapsed() < Duration::from_secs(5));
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "again",
            "--",
            "sh",
            "-c",
            "echo run-$$; exec sleep 600",
        ],
    );
    eventually("first run", || {
        ok(&server, &["logs", "again"]).contains("run-")
    });
    let mut follower = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["logs", "again", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What the follower prints, as it prints it.
    let mut stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut text = Vec::new();
    let mut until = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while String::from_utf8_lossy(&text).matches("run-").count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => text.extend(chunk),
                Err(e) => panic!("{what}: {e} ({:?})", String::from_utf8_lossy(&text)),
            }
        }
    };
    // It follows the first run before the restart (a follower that came later would replay
    // both runs from the start, and prove nothing).
    until("the first run, followed", 1);
    ok(&server, &["restart", "again"]);
    until("the second run, followed across the restart", 2);
    assert!(
        follower.try_wait().unwrap().is_none(),
        "logs -f ended at the restart"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();
    text.extend(rx.try_iter().flatten());
    let text = String::from_utf8_lossy(&text);
    assert_eq!(text.matches("run-").count(), 2, "{text:?}");
}

/// `corral logs --tail N` prints the last N lines (a prompt without its newline is one), reading
/// back as far as needed: 20,000 lines are more than its first 64 KiB window.
#[test]
fn logs_tail_prints_the_last_lines() {
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "seq",
            "--",
            "sh",
            "-c",
            "seq 1 100000; printf 'end> '; exec sleep 1000",
        ],
    );
    eventually("all the output", || {
        ok(&server, &["logs", "seq", "-n", "1"]) == "end> "
    });
    assert_eq!(
        ok(&server, &["logs", "seq", "--tail", "3"]),
        "99999\r\n100000\r\nend> "
    );
    let many = ok(&server, &["logs", "seq", "--tail", "20000"]);
    let lines: Vec<&str> = many.split("\r\n").collect();
    assert_eq!(lines.len(), 20_000);
    assert_eq!((lines[0], lines[19_998]), ("80002", "100000"));
    assert_eq!(ok(&server, &["logs", "seq", "--tail", "0"]), "");
    // More lines than there are: everything.
    assert_eq!(
        ok(&server, &["logs", "seq", "--tail", "1000000"]),
        ok(&server, &["logs", "seq"])
    );
}

/// `corral wait --for idle` on a program without agent hooks: idle once its output has been
/// quiet for a second (agentapi's `stable`), not before; one that keeps printing never is.
#[test]
fn wait_for_idle_without_hooks_means_quiet_output() {
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "build",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo step-$i; sleep 0.25; done; echo done; exec sleep 1000",
        ],
    );
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "chatty",
            "--",
            "sh",
            "-c",
            "while :; do echo tick; sleep 0.3; done",
        ],
    );
    let t = Instant::now();
    ok(
        &server,
        &["wait", "build", "--for", "idle", "--timeout", "20"],
    );
    assert!(
        t.elapsed() > Duration::from_secs(2),
        "returned while it printed"
    );
    assert!(ok(&server, &["logs", "build"]).contains("done"));
    let out = corral(
        &server,
        &["wait", "chatty", "--for", "idle", "--timeout", "2.5"],
    );
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    // A usage error is not a timeout.
    let out = corral(&server, &["wait", "chatty", "--for", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = corral(
        &server,
        &["wait", "chatty", "--for", "idle", "--timeout", "nan"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A session no hook has spoken for asks nothing: said, on the wait and on its timeout.
    let out = corral(
        &server,
        &[
            "wait",
            "chatty",
            "--for",
            "needs_permission",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("it is no agent").count(), 2, "{err}");
}

/// An agent is idle when its hooks say so, never by quiet output: one whose first hook comes
/// after more than a second of silence (a slow start, a loaded machine) is starting until then,
/// and `wait --for idle` waits for its hooks (SessionStart: at its prompt), not for the quiet.
#[test]
fn wait_for_idle_of_an_agent_waits_for_its_hooks_not_for_quiet() {
    let server = Server::start();
    let fake = install_fake_claude(
        &server,
        r#"#!/bin/sh
settings="$2"
cmd=$(grep -m1 '"command"' "$settings" | sed 's/.*"command": "\(.*\)",*/\1/')
sleep 2.5
echo '{"hook_event_name":"SessionStart","session_id":"late"}' | $cmd
echo '{"hook_event_name":"UserPromptSubmit","prompt":"hi"}' | $cmd
echo '{"hook_event_name":"Stop"}' | $cmd
exec sleep 1000
"#,
    );
    spawn_fake_agent(&server, &fake, "never", &[]);
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["attention"], "starting", "before any hook: {ps}");
    let t = Instant::now();
    ok(
        &server,
        &["wait", "agent", "--for", "idle", "--timeout", "20"],
    );
    assert!(
        t.elapsed() > Duration::from_secs(2),
        "returned at the quiet"
    );
    let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["agent_session_id"], "late", "{ps}");
    ok(&server, &["rm", "agent"]);
}

/// `corral stop --grace S` overrides the session's grace for this stop: a program that ignores
/// its stop signal is SIGKILLed after S seconds, not the 5 s it was spawned with.
#[test]
fn stop_grace_overrides_the_sessions_own() {
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "stubborn",
            "--",
            "sh",
            "-c",
            "trap '' HUP TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    eventually("started", || {
        ok(&server, &["logs", "stubborn"]).contains("ready")
    });
    let t = Instant::now();
    ok(&server, &["stop", "stubborn", "--grace", "0.3"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let ps = ok(&server, &["ps"]);
    assert!(ps.contains("signal 9 (SIGKILL)"), "{ps}");
    assert!(
        !corral(&server, &["stop", "stubborn", "--grace", "9999"])
            .status
            .success()
    );
}

/// `corral logs work | head`: once the reader of its output is gone, the command ends quietly
/// with status 141 (as a tool SIGPIPE ends does), not with a panic and a backtrace.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let server = Server::start();
    ok(
        &server,
        &["spawn", "--name", "many", "--", "seq", "1", "300000"],
    );
    eventually("all the output", || {
        ok(&server, &["logs", "many", "--tail", "1"]).starts_with("300000")
    });
    for args in [&["logs", "many"][..], &["ps"][..]] {
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(server.dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read a little, then close the pipe, as `head -c 10` does.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        // `ps` may have written everything before the pipe closed.
        assert!(
            matches!(out.status.code(), Some(141) | Some(0)),
            "{args:?}: {:?}",
            out.status
        );
        if args[0] == "logs" {
            assert_eq!(out.status.code(), Some(141));
        }
    }
}

/// `wait --timeout 0` on a session that has not ended yet: timed out at once (124), after
/// looking once.
#[test]
fn wait_with_no_time_looks_once() {
    let server = Server::start();
    ok(&server, &["spawn", "--name", "on", "--", "sleep", "600"]);
    let started = Instant::now();
    let out = corral(&server, &["wait", "on", "--for", "exit", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not exited after 0 s"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Output that cannot be written for another reason (a full disk: `corral ps --json >
/// state.json`) is one line on stderr and status 1, as every other error — it was a panic
/// (status 101 and a backtrace) for every command but `logs` and `export`.
#[test]
fn output_that_cannot_be_written_is_a_clear_error() {
    let server = Server::start();
    ok(&server, &["spawn", "--name", "one", "--", "sleep", "600"]);
    for args in [
        &["ps", "--json"][..],
        &["ps"][..],
        &["events", "one"][..],
        &["tree", "--json"][..],
    ] {
        let out = Command::new(binary())
            .arg("--data-dir")
            .arg(server.dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim(),
            "corral: cannot write the output: No space left on device (os error 28)",
            "{args:?}"
        );
    }
}

#[test]
fn attach_reconnects_after_a_server_crash_and_sends_what_was_typed_meanwhile() {
    require_tmux();
    let mut server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "work",
            "--restart",
            "always",
            "--",
            "bash",
            "--norc",
            "-i",
        ],
    );
    ok(&server, &["send", "work", "echo before-crash\\n"]);
    let socket = attach_in_tmux(&server, "corral-test-re");
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("attached", || pane().contains("before-crash"));
    server.kill();
    // Status lines may wrap: look at the screen as one string.
    let screen = || pane().replace('\n', "");
    eventually("attach says it is reconnecting", || {
        screen().contains("reconnecting")
    });
    // Typed while the server is down: queued, sent after the resume.
    tmux(
        &socket,
        &["send-keys", "-t", "t", "echo queued-$((2+3))", "Enter"],
    );
    std::thread::sleep(Duration::from_millis(200));
    // The new server listens on another port: attach finds it through the data dir.
    server.restart();
    // (The "reconnected" line may be gone already: a resume that has to redraw the screen
    // starts with a reset.)
    eventually("the queued line ran in the restarted shell", || {
        ok(&server, &["logs", "work"]).contains("queued-5")
    });
    eventually("and shows in the terminal", || pane().contains("queued-5"));

    tmux(&socket, &["send-keys", "-t", "t", "C-\\"]);
    eventually("attach exited", || {
        !tmux(&socket, &["list-sessions"]).contains("t:")
    });
    tmux(&socket, &["kill-server"]);
}

/// A reconnecting attach gets the events it missed, each where it happened in the output: a
/// restart while attach was away puts the terminal back to a new process's modes at the new
/// process's first byte. The first process hid the cursor, the second does not: the cursor
/// shows again (it stayed hidden: the `spawned` event was not replayed).
#[test]
fn attach_applies_the_events_it_missed_while_away() {
    require_tmux();
    let mut server = Server::start();
    let once = server.dir.path().join("cursor-hidden-once");
    let script = format!(
        "[ -e {f} ] || {{ touch {f}; printf '\\033[?25l'; }}; echo run; exec cat",
        f = once.display()
    );
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", &script],
    );
    let socket = attach_in_tmux(&server, "corral-test-missed");
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    let cursor = || {
        tmux(&socket, &["display", "-p", "-t", "t", "#{cursor_flag}"])
            .trim()
            .to_string()
    };
    eventually("attached", || pane().contains("run"));
    eventually("the first process hid the cursor", || cursor() == "0");
    let pane_pid: i32 = tmux(&socket, &["display", "-p", "-t", "t", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    // The attach itself, or the one child of the pane's shell.
    let attach = if std::fs::read_to_string(format!("/proc/{pane_pid}/comm"))
        .unwrap()
        .trim()
        == "corral"
    {
        pane_pid
    } else {
        std::fs::read_to_string(format!("/proc/{pane_pid}/task/{pane_pid}/children"))
            .unwrap()
            .split_whitespace()
            .next()
            .expect("the attach runs under the pane's shell")
            .parse()
            .unwrap()
    };
    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(attach), sig).unwrap();
    // Away: stopped while its server dies and the next one restarts the session.
    signal(nix::sys::signal::Signal::SIGSTOP);
    server.kill();
    server.restart();
    ok(&server, &["restart", "work"]);
    eventually("the second process ran", || {
        ok(&server, &["logs", "work"]).matches("run").count() == 2
    });
    signal(nix::sys::signal::Signal::SIGCONT);
    eventually("attach shows the second run", || {
        pane().matches("run").count() >= 2
    });
    eventually("the cursor shows: the new process's modes", || {
        cursor() == "1"
    });
    tmux(&socket, &["send-keys", "-t", "t", "C-\\"]);
    eventually("attach exited", || {
        !tmux(&socket, &["list-sessions"]).contains("t:")
    });
    tmux(&socket, &["kill-server"]);
}

/// A spawn whose program or directory is missing says which and leaves nothing behind: no
/// record, and none of its holder's files (each failed spawn left a socket and a log).
#[test]
fn a_failed_spawn_says_why_and_leaves_nothing() {
    let server = Server::start();
    for (args, why) in [
        (
            vec!["spawn", "--", "/nonexistent/program"],
            "spawn /nonexistent/program",
        ),
        (
            vec!["spawn", "--cwd", "/nonexistent/dir", "--", "cat"],
            "working directory /nonexistent/dir",
        ),
        (
            vec!["spawn", "--cwd", "/etc/passwd", "--", "cat"],
            "working directory /etc/passwd: Not a directory",
        ),
    ] {
        let out = corral(&server, &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }
    // A session's private TMPDIR that cannot be made (its folder is a file): said once (it
    // read "could not start the process: could not start the process: private TMPDIR: …").
    let tmp = server.dir.path().join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"in the way").unwrap();
    let out = corral(&server, &["spawn", "--", "cat"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("private TMPDIR"), "{err}");
    assert_eq!(err.matches("could not start").count(), 1, "{err}");
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    assert_eq!(ok(&server, &["ps", "--json"]).trim(), "[]");
    // The failed spawns' holders go with their files (a dead holder's are removed off the
    // workers, after the answer).
    let left = || -> Vec<_> {
        std::fs::read_dir(server.dir.path().join("holders"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    eventually("the failed spawns' holders leave no file", || {
        left().is_empty()
    });
}

/// The data dir's admin token goes only to its own server: `--url` naming another server
/// without `--token` is refused before anything is sent (it went to whoever listened there).
#[test]
fn the_local_admin_token_is_never_sent_to_another_url() {
    let server = Server::start();
    // Someone else's "server": it must never see a connection, let alone the token.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_url = format!("http://{}", other.local_addr().unwrap());
    let out = corral(&server, &["--url", &other_url, "ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not this data dir's server"), "{err}");
    assert!(
        other.accept().is_err(),
        "a connection reached the other server"
    );
    // Its own server by URL: the local token is fine there, as `localhost` too (it was refused).
    let out = corral(&server, &["--url", &server.url, "ps"]);
    assert!(out.status.success(), "{out:?}");
    let by_name = server.url.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, server.url);
    let out = corral(&server, &["--url", &by_name, "ps"]);
    assert!(out.status.success(), "{out:?}");
    // The other server as `localhost`, on its port: still refused.
    let out = corral(
        &server,
        &["--url", &other_url.replace("127.0.0.1", "localhost"), "ps"],
    );
    assert!(!out.status.success());
    assert!(
        other.accept().is_err(),
        "a connection reached the other server"
    );
}

/// The short ids `corral ps` prints name their sessions in every command (they were refused).
#[test]
fn the_short_ids_ps_prints_name_sessions() {
    let server = Server::start();
    let id = ok(
        &server,
        &["spawn", "--name", "short-id", "--", "sleep", "600"],
    );
    let short = &id.trim()[..8];
    assert!(ok(&server, &["ps"]).contains(short));
    let out = ok(&server, &["stop", short]);
    assert!(out.contains("short-id"), "{out}");
    // An offset past the output is an error, as over the WebSocket (it printed nothing, 0).
    let out = corral(&server, &["logs", short, "--from", "999999999"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("beyond the session's output"),
        "{out:?}"
    );
    let out = corral(&server, &["logs", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session '0'"), "{err}");
    // A new session is not named like the start of another's id (that name would name
    // both: `rm <id from ps>` reached the session of that name and removed the wrong one).
    let out = corral(&server, &["spawn", "--name", short, "--", "sleep", "600"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the start of session"), "{err}");
    let listed = ok(&server, &["ps"]);
    assert!(listed.contains("short-id"), "{listed}");
    // A shorter name that another id happens to start with (a build number, a short hash) is
    // the name: it kept working only until such an id came along.
    let five = &id.trim()[..5];
    ok(&server, &["spawn", "--name", five, "--", "sleep", "600"]);
    let out = ok(&server, &["stop", five]);
    assert!(out.starts_with(&format!("{five} ")), "{out}");
    let listed = ok(&server, &["ps"]);
    assert!(listed.contains("short-id"), "{listed}");
    // Once that name is gone, the same command again names nothing: it does not fall through
    // to the id the name happens to start (a retried `rm` removed another session).
    ok(&server, &["rm", five]);
    for command in ["rm", "stop", "kill"] {
        let out = corral(&server, &[command, five]);
        assert!(!out.status.success(), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("no session '{five}'")), "{err}");
    }
    let listed = ok(&server, &["ps"]);
    assert!(listed.contains("short-id"), "{listed}");
}

/// A paste larger than the server's frame limit and than attach's queue, made into an attached
/// terminal while the server is down, arrives whole once it is back: nothing typed meanwhile is
/// dropped (at its 1 MiB bound the queue pushes back on the terminal, and says so) and it goes
/// in frames the server takes.
#[test]
fn attach_keeps_a_paste_larger_than_a_frame_made_while_the_server_is_down() {
    require_tmux();
    let mut server = Server::start();
    let out = server.dir.path().join("pasted");
    // Raw mode: no line discipline between the paste and the file (a line is 4 KiB at most).
    let program = format!(
        "stty raw -echo; echo ready; head -c 1500000 > '{}'; echo got-all",
        out.display()
    );
    ok(
        &server,
        &["spawn", "--name", "work", "--", "sh", "-c", &program],
    );
    let socket = attach_in_tmux(&server, "corral-test-paste");
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("attached", || pane().contains("ready"));
    server.kill();
    let screen = || pane().replace('\n', "");
    eventually("attach says it is reconnecting", || {
        screen().contains("reconnecting")
    });
    // 1.5 MB of printable text: past attach's queue, and many times a frame.
    let text: String = (0..1_500_000u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let buffer = server.dir.path().join("paste-buffer");
    std::fs::write(&buffer, &text).unwrap();
    tmux(&socket, &["load-buffer", &buffer.display().to_string()]);
    tmux(&socket, &["paste-buffer", "-t", "t"]);
    eventually("attach says input waits", || {
        screen().contains("input paused")
    });
    server.restart();
    eventually("the whole paste reached the program", || {
        ok(&server, &["logs", "work"]).contains("got-all")
    });
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got.len(), text.len());
    assert!(got == text, "the paste arrived altered");
    assert!(
        !screen().contains("dropped"),
        "attach says it dropped input: {}",
        screen()
    );
}

/// An attach resumes exactly where it was after a server restart even when nothing was printed
/// since it attached (a program quiet at its prompt): the screen it was first shown stands for
/// the output up to the snapshot's offset. Its length was once counted as output: the resume
/// point fell past the end, and every reconnection redrew, saying output was lost.
#[test]
fn attach_resumes_exactly_after_showing_only_a_snapshot() {
    require_tmux();
    let mut server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "work",
            "--",
            "sh",
            "-c",
            "printf 'prompt> '; exec sleep 600",
        ],
    );
    let socket = attach_in_tmux(&server, "corral-test-snap");
    let screen = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]).replace('\n', "");
    eventually("attached", || screen().contains("prompt>"));
    server.kill();
    eventually("reconnecting", || screen().contains("reconnecting"));
    server.restart();
    eventually("reconnected", || screen().contains("reconnected"));
    assert!(!screen().contains("lost its last output"), "{}", screen());
}

/// Like Jupyter: `corral serve` prints the page's address on stdout, with the admin token only
/// when stdout is a terminal (a stdout that is not one is kept: systemd's journal, a file, and
/// tokens are never logged); `corral web` prints a login link with a code, good once.
#[test]
fn serve_and_web_print_the_login_url() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, line) = serve_in(dir.path(), "127.0.0.1:0");
    let token = std::fs::read_to_string(dir.path().join("token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        !line.contains(&token),
        "the token went to a piped stdout: {line}"
    );
    let address = line
        .trim()
        .strip_prefix("corral: open ")
        .and_then(|l| l.split_once(' '))
        .expect(&line)
        .0
        .to_string();
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");
    assert!(line.contains("corral web"), "{line}");
    let web = Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("web")
        .output()
        .unwrap();
    // A login code, not the token: the link logs a browser in once.
    let link = String::from_utf8_lossy(&web.stdout).trim().to_string();
    let code = link
        .strip_prefix(&format!("{address}?code="))
        .expect(&link)
        .to_string();
    assert!(!link.contains(&token), "{link}");
    let login = |code: &str| {
        let client = corral_client::Client::tcp(&address, "unused").unwrap();
        let body = serde_json::json!({ "code": code }).to_string().into_bytes();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async {
                client
                    .send_with(
                        hyper::Method::POST,
                        "/v1/login",
                        None,
                        &[("content-type", "application/json")],
                        Some(body),
                    )
                    .await
            })
            .unwrap()
            .response
            .status()
            .as_u16()
    };
    assert_eq!(login(&code), 204);
    assert_eq!(login(&code), 401, "a code is good once");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// `corral serve --listen <listen>` on `dir` (stderr kept for the test, at level warn); returns
/// it once it printed its first line (the login URL), with that line.
fn serve_in(dir: &std::path::Path, listen: &str) -> (std::process::Child, String) {
    serve_logging(dir, listen, "warn")
}

/// [`serve_in`] with the server's log at `level`.
fn serve_logging(
    dir: &std::path::Path,
    listen: &str,
    level: &str,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", listen])
        .env("RUST_LOG", level)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// `--listen` beyond loopback is honoured, with a warning that plain HTTP carries the tokens
/// readable on the way; the default loopback start says nothing of the kind.
#[test]
fn listening_beyond_loopback_warns_that_http_is_plain() {
    for (listen, warned) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // The login line comes after the warning (both at start).
        let (child, line) = serve_in(dir.path(), listen);
        assert!(line.starts_with("corral: open "), "{line}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(log.contains("plain HTTP"), warned, "{listen}: {log}");
    }
}

/// Resident KiB of `pid` as the kernel counts it in `/proc/<pid>/stat` (field 24, pages).
fn stat_rss_kib(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    // Fields after the comm start at field 3: rss (field 24) is the 22nd.
    let pages: u64 = rest.split_whitespace().nth(21).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

#[test]
fn usage_covers_the_whole_tree_an_escapee_included_and_nothing_else() {
    // With a holder (escapees land on it) and without one (they land on the server).
    for server in [
        Server::start(),
        Server::start_configured("holders = false\n"),
    ] {
        let id = ok(
            &server,
            &[
                "spawn",
                "--name",
                "tree",
                "--",
                "sh",
                "-c",
                "(setsid sleep 1001 &); exec sleep 1002",
            ],
        )
        .trim()
        .to_string();
        // The escapee left the session and lost its parent (the subshell exited at once).
        // Both are `sleep` by then: before, the shell, the subshell or a process in the middle
        // of its exec can be counted (a CI run once measured in such a moment).
        let comm =
            |pid: &i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        eventually("the escapee and the main process run", || {
            let procs = session_processes(&id);
            procs.len() == 2 && procs.iter().all(|p| comm(p).trim() == "sleep")
        });
        let procs = session_processes(&id);
        let ps: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
        let expect: u64 = procs.iter().map(|p| stat_rss_kib(*p)).sum();
        assert_eq!(
            ps[0]["rss_kib"].as_u64().unwrap(),
            expect,
            "the two sleeps {procs:?}, not the holder, not the server: {}",
            ps[0]
        );
        assert_eq!(ok(&server, &["rm", "tree"]), "tree removed\n");
        assert!(session_processes(&id).is_empty());
    }
}

/// The terminal `corral serve` ran in goes away (a closed tmux pane, an ssh logout with the
/// server in the background): its log lines can no longer be written. The server must go on
/// serving (reporting the failed write on the same dead stderr panicked and aborted it).
/// Here its stderr is a pipe whose reading end is closed.
#[test]
fn a_server_whose_stderr_is_gone_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _line) = serve_logging(dir.path(), "127.0.0.1:0", "info");
    drop(child.stderr.take());
    let corral = |args: &[&str]| {
        Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    // Each of these logs a line on the server's side.
    for i in 0..5 {
        let out = corral(&["spawn", "--name", &format!("s{i}"), "--", "sleep", "100"]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = corral(&["ps"]);
    assert!(out.status.success(), "{out:?}");
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    let out = corral(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// One server per data dir, even when its `lock` file is deleted by hand: a second server took
/// over every session and the first, seeing them gone, killed them all. The directory itself
/// is locked too.
#[test]
fn a_second_server_is_refused_even_without_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _line) = serve_in(dir.path(), "127.0.0.1:0");
    std::fs::remove_file(dir.path().join("lock")).unwrap();
    let second = Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second server started");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another corral server is running"), "{said}");
    assert!(first.try_wait().unwrap().is_none(), "the first server died");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(first.wait().unwrap().success());
}

/// A data dir whose path leaves no room for its holders' socket paths (107 bytes at most)
/// is refused at start, saying why; it used to start a server on which every spawn failed
/// with "File name too long".
#[test]
fn a_data_dir_too_long_for_its_sockets_is_refused_at_start() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("d".repeat(80));
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("too long for its holders' sockets"), "{said}");
}

/// `logs --tail N` of a session that prints all the time prints N lines, as tail(1) does: the
/// output as of the request (it printed everything up to the moving end: thousands of lines).
#[test]
fn logs_tail_of_a_busy_session_prints_its_last_lines_only() {
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "busy",
            "--",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo \"L $i\"; done",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let out = ok(&server, &["logs", "busy", "--tail", "3"]);
        assert_eq!(out.lines().count(), 3, "{}", &out[..out.len().min(300)]);
    }
    ok(&server, &["rm", "busy"]);
}

/// A server that accepts connections but does not answer (stopped with SIGSTOP, wedged): a
/// command says so within seconds instead of hanging (for five minutes).
#[test]
fn a_command_against_a_stopped_server_says_it_did_not_answer() {
    let server = Server::start();
    let pid = nix::unistd::Pid::from_raw(server.pid());
    // The process's state letter (`T`: stopped).
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
    };
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    eventually("the server is stopped", || state() == 'T');
    let t = std::time::Instant::now();
    let out = corral(&server, &["ps"]);
    // Once, in a CI run, `ps` was answered here: the server had been continued meanwhile (by
    // whom, this says the next time).
    let after = state();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(
        after, 'T',
        "the server was continued during the test: {out:?}"
    );
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("did not answer in time"), "{said}");
    // What becomes of the request is said: over the local socket it carried its deadline.
    assert!(said.contains("refuses it unbegun"), "{said}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(corral(&server, &["ps"]).status.success());
}

/// `corral attach` across a full `corral shutdown` (which stops its session): it sees its
/// session end before the server closes its connection, says so and exits with its status
/// (it sat silent on the dead session until a key was pressed; then it reconnected and said so
/// only once a new server was there).
#[test]
fn attach_across_a_shutdown_says_the_session_ended() {
    require_tmux();
    let mut server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "work",
            "--",
            "sh",
            "-c",
            "echo here; exec sleep 600",
        ],
    );
    let socket = corral_in_tmux(
        &server,
        "corral-test-shutdown",
        "attach work; echo attach-exit=$?; exec sleep 600",
        (100, 30),
    );
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]).replace('\n', "");
    eventually("attached", || pane().contains("here"));
    // SIGTERM: the full stop `corral shutdown` asks for.
    server.terminate(Duration::from_secs(20));
    eventually("attach says the session ended and exits", || {
        pane().contains("attach-exit=")
    });
    let p = pane();
    assert!(!p.contains("reconnecting"), "{p}");
    assert!(
        p.contains("session stopped") && p.contains("attach-exit=0"),
        "{p}"
    );
}

/// A follower that reads slowly (a script piping `logs -f` through gzip) falls behind the live
/// output: what the server skipped for it is still in the log, and it reads it from there —
/// every byte, once, in order (it used to skip most of it, saying it was "no longer retained",
/// and exit 0). The same for `events -f`: events it missed are read again from the journal.
#[test]
fn slow_followers_lose_nothing() {
    use std::io::Read;
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "flood",
            "--pipe",
            "--",
            "sh",
            "-c",
            "sleep 0.5; seq 1 1500000; i=0; while [ $i -lt 3000 ]; do echo \"{\\\"i\\\":$i}\"; i=$((i+1)); done",
        ],
    );
    let follow = |args: &[&str]| server.background(args);
    let mut logs = follow(&["logs", "flood", "-f"]);
    let mut events = follow(&["events", "flood", "-f", "--json"]);
    // Neither is read for 2 s: the output (11 MB) laps the session's Ring meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let mut out = Vec::new();
    logs.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let logs = logs.wait_with_output().unwrap();
    assert!(logs.status.success(), "{logs:?}");
    let mut want: Vec<u8> = (1..=1_500_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    for i in 0..3000 {
        want.extend_from_slice(format!("{{\"i\":{i}}}\n").as_bytes());
    }
    assert!(
        out == want,
        "{} bytes of {}; {}",
        out.len(),
        want.len(),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        logs.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let mut text = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let events = events.wait_with_output().unwrap();
    assert!(events.status.success(), "{events:?}");
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "every event once, in order"
    );
    let lines = text
        .lines()
        .filter(|l| l.contains(r#""kind":"json""#))
        .count();
    assert_eq!(lines, 3000, "every JSON line's event");
}

/// `events -f` of a session that a full server shutdown stopped returns (its last event is the
/// next server's `recovery` note, not its final state: the follower waited for ever).
#[test]
fn events_follow_of_a_session_stopped_by_a_shutdown_returns() {
    let mut server = Server::start();
    ok(&server, &["spawn", "--name", "ev", "--", "sleep", "1000"]);
    ok(&server, &["shutdown"]);
    server.terminate(Duration::from_secs(10));
    server.restart();
    let started = Instant::now();
    let out = corral(&server, &["events", "ev", "-f"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A full `corral shutdown` ends the sessions while their followers are still connected:
/// `logs -f` gets the session's last output (what it printed on its way out) and `wait --for
/// exit` its end, and both return at once (the connections were closed first: followers
/// reconnected for a minute, then failed without that output).
#[test]
fn followers_see_their_sessions_end_at_a_shutdown() {
    let mut server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "job",
            "--pipe",
            "--",
            "sh",
            "-c",
            "trap 'echo cleanup-output; exit 0' HUP TERM; echo started; while :; do sleep 0.1; done",
        ],
    );
    eventually("started", || {
        ok(&server, &["logs", "job"]).contains("started")
    });
    let follow = |args: &[&str]| server.background(args);
    let logs = follow(&["logs", "job", "-f"]);
    let wait = follow(&["wait", "job", "--for", "exit"]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    ok(&server, &["shutdown"]);
    let logs = logs.wait_with_output().unwrap();
    let wait = wait.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(logs.status.success(), "{logs:?}");
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.starts_with("started\n") && text.contains("cleanup-output\n"),
        "{text:?}"
    );
    assert!(wait.status.success(), "{wait:?}");
    assert!(
        String::from_utf8_lossy(&wait.stdout).contains("exit 0"),
        "{wait:?}"
    );
    server.terminate(Duration::from_secs(10));
}

/// `ps` stays a table with a long name among the sessions: the name is cut with `…` (one
/// 150-character name made every row wrap); `ps --json` keeps it whole.
#[test]
fn ps_cuts_a_long_name_and_every_row_lines_up() {
    let server = Server::start();
    let long = format!("build-{}", "x".repeat(114));
    ok(&server, &["spawn", "--name", &long, "--", "cat"]);
    ok(&server, &["spawn", "--name", "short", "--", "cat"]);
    let ps = ok(&server, &["ps"]);
    let widths: Vec<usize> = ps.lines().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w < 140), "{ps}");
    // Columns by characters (`…` is one, three bytes).
    let at = |line: &str, word: &str| line.find(word).map(|b| line[..b].chars().count());
    let head = ps.lines().next().unwrap();
    for row in ps.lines().skip(1) {
        assert_eq!(at(head, "STATE"), at(row, "running"), "{ps}");
    }
    let cut = format!("build-{}…", "x".repeat(25));
    assert!(ps.contains(&cut), "{ps}");
    let json: Value = serde_json::from_str(&ok(&server, &["ps", "--json"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == long.as_str()),
        "{json}"
    );
    ok(&server, &["rm", &long, "short"]);
}

/// A server that cannot start because its disk is full says so (SQLite's own word was "disk
/// I/O error", which reads as failing hardware; under systemd a restart loop showed only that).
/// Needs root for the tmpfs, as the actors' full-disk tests do.
#[test]
fn a_server_on_a_full_disk_says_the_disk_is_full() {
    let mount = Tmpfs::mount("4m");
    let dir = mount.path().join("d");
    let serve = || {
        Command::new(binary())
            .arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A first start makes the data dir; then it stops.
    let mut first = serve();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("server.json").exists() {
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(&dir)
        .arg("shutdown")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    first.wait().unwrap();
    // The disk fills up.
    mount.fill();
    let out = serve().wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is full"), "{err}");
}

/// `corral send NAME -` reads at most 64 MiB of standard input: one byte more is refused with
/// the bound said, and nothing of it is sent.
#[test]
fn send_refuses_standard_input_past_its_bound_and_sends_nothing() {
    let server = Server::start();
    let out = server.dir.path().join("got");
    let script = format!("cat > {}", out.display());
    ok(
        &server,
        &[
            "spawn", "--name", "sink", "--pipe", "--", "sh", "-c", &script,
        ],
    );
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["send", "sink", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"a").unwrap();
    });
    let got = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(!got.status.success());
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        err.contains("standard input holds more than 67108864 bytes; nothing was sent"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(&out).map_or(0, |m| m.len()), 0);
}

/// A data dir this user may not read (mode 000; run without root's override) is said to be
/// unreadable, not to have no server: one runs there.
#[test]
fn an_unreadable_data_dir_is_said_so_not_taken_for_no_server() {
    let server = Server::start();
    let dir = server.dir.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(binary())
        .arg("--data-dir")
        .arg(dir)
        .arg("ps")
        .output()
        .expect("setpriv (util-linux)");
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!err.contains("no corral server"), "{err}");
}

/// A follower (`logs -f`) of a server stopped with SIGSTOP says, within ~15 s, that the server
/// does not answer, and once it is continued that it answers again — and goes on following (it
/// sat silent, and seemed to hang). A `wait --timeout 2` against the stopped server gives up
/// within 5 s (the least its first look is given; it took 15), saying the server did not
/// answer.
#[test]
fn a_follower_says_when_the_server_stops_answering_and_when_it_answers_again() {
    use std::io::BufRead;
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "quiet",
            "--",
            "sh",
            "-c",
            "echo first; exec cat",
        ],
    );
    let mut follower = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["logs", "-f", "quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = said.clone();
        let stderr = follower.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                said.lock().unwrap().push_str(&format!("{line}\n"));
            }
        })
    };
    let mut stdout = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("first"), "{first}");
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    let out = corral(
        &server,
        &["wait", "quiet", "--for", "exit", "--timeout", "2"],
    );
    let waited = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(25);
    while !said.lock().unwrap().contains("has not answered") {
        if Instant::now() > deadline {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            panic!("not said: {}", said.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{out:?}"
    );
    ok(&server, &["send", "quiet", "after\\n"]);
    let mut line = String::new();
    loop {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        if line.contains("after") {
            break;
        }
    }
    eventually("said it answers again", || {
        said.lock().unwrap().contains("answers again")
    });
    follower.kill().unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();
}

/// `corral upgrade` on a full disk: the successor cannot write to the data dir, says why, and
/// the old server keeps serving — and the command says the disk's error (it said the new binary
/// "exited before it was ready (signal 9)", killed by the old server itself, its log empty).
/// Needs root for the tmpfs.
#[test]
fn an_upgrade_on_a_full_disk_says_why_and_the_server_keeps_serving() {
    let mount = Tmpfs::mount("8m");
    let dir = mount.path().join("d");
    let cli = |args: &[&str]| {
        Command::new(binary())
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap()
    };
    // Killed if the test fails before its shutdown (it would outlive the test).
    struct Serving(std::process::Child);
    impl Drop for Serving {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait()
                && let Err(e) = self.0.kill()
            {
                eprintln!("kill: {e}");
            }
            if let Err(e) = self.0.wait() {
                eprintln!("wait: {e}");
            }
        }
    }
    let _server = Serving(
        Command::new(binary())
            .arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the server serves", || cli(&["ps"]).status.success());
    mount.fill();
    let out = cli(&["upgrade"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused to start") && err.contains("cannot write to the data dir"),
        "{err}"
    );
    assert!(err.contains("still serving"), "{err}");
    std::fs::remove_file(mount.path().join("filler")).unwrap();
    assert!(cli(&["ps"]).status.success());
    assert!(cli(&["shutdown"]).status.success());
}

/// `corral send --paste` succeeds once the program has the text, not once the server queued
/// it: into a program that starts reading 2 s later it returns after those 2 s, with every
/// byte there; and when the server is killed while the paste waits for a program that does
/// not read, it fails saying so (it had said nothing, exit 0, and the text was lost).
#[test]
fn a_paste_succeeds_once_written_and_fails_when_the_server_dies_first() {
    let mut server = Server::start();
    let got = server.dir.path().join("got");
    let script = format!("sleep 2; exec cat > {}", got.display());
    ok(
        &server,
        &[
            "spawn", "--name", "late", "--pipe", "--", "sh", "-c", &script,
        ],
    );
    let text = "x".repeat(300_000);
    let send = |name: &str| with_stdin(&server, &["send", "--paste", name, "-"], &text);
    let t = Instant::now();
    let out = send("late").wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "answered before the program read it: {:?}",
        t.elapsed()
    );
    eventually("every byte there", || {
        std::fs::metadata(&got).is_ok_and(|m| m.len() == 300_001)
    });
    ok(
        &server,
        &["spawn", "--name", "deaf", "--pipe", "--", "sleep", "1000"],
    );
    let waiting = send("deaf");
    std::thread::sleep(Duration::from_secs(1));
    server.kill();
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before the paste was written whole"), "{err}");
    server.restart();
}

/// `corral attach` to a server stopped with SIGSTOP says, on its bottom row, that the server
/// does not answer, and once it is continued that it answers again (the screen froze without
/// a word).
#[test]
fn attach_says_when_the_server_stops_answering() {
    require_tmux();
    let server = Server::start();
    ok(
        &server,
        &[
            "spawn",
            "--name",
            "work",
            "--",
            "sh",
            "-c",
            "echo here; exec cat",
        ],
    );
    let socket = attach_in_tmux(&server, "corral-test-silent");
    let pane = || tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
    eventually("attached", || pane().contains("here"));
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    while !pane().contains("the server does not answer") {
        if Instant::now() > deadline {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            panic!("not said: {}", pane());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    tmux(&socket, &["send-keys", "-t", "t", "typed-after", "Enter"]);
    eventually("it answers again", || {
        let p = pane();
        p.contains("answers again") || p.contains("typed-after")
    });
    eventually("typing goes on", || pane().contains("typed-after"));
}
