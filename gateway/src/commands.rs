//! Client commands: spawn, ps, tree, stop/kill/restart/rm, send, logs, events, token, attach.
//! Each is a thin use of the native protocol or the REST API; output is for humans unless
//! `--json`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::remote::{Incoming, Remote};

/// Commands that talk to a running server.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Start a session; prints its id.
    ///
    /// Example: corral spawn --name work --restart on-failure -- bash -i
    Spawn {
        /// Unique name.
        #[arg(long)]
        name: Option<String>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Restart policy.
        #[arg(long, default_value = "never", value_parser = ["never", "on-failure", "always"])]
        restart: String,
        /// Stop signal.
        #[arg(long, default_value = "SIGHUP")]
        stop_signal: String,
        /// Grace period in seconds before SIGKILL.
        #[arg(long, default_value_t = 5.0)]
        grace: f64,
        /// Pipe mode (stdin/stdout/stderr instead of a terminal).
        #[arg(long)]
        pipe: bool,
        /// Agent profile: `claude` passes per-session hook settings and resumes after a crash.
        #[arg(long, value_parser = ["claude"])]
        agent: Option<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// List sessions.
    ///
    /// Example: corral ps --json
    Ps {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the supervision tree.
    Tree {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stop a session gracefully (stop signal, grace, then SIGKILL of its process tree).
    Stop {
        /// Name or id.
        session: String,
    },
    /// SIGKILL a session's process tree.
    Kill {
        /// Name or id.
        session: String,
    },
    /// Restart a session's process.
    Restart {
        /// Name or id.
        session: String,
    },
    /// Stop and remove a session.
    Rm {
        /// Name or id.
        session: String,
    },
    /// Send text as input (for scripts). With --paste, the text is a paste followed by Enter:
    /// wrapped in bracketed-paste markers when the program enabled that mode (as Claude Code's
    /// TUI does), plain otherwise. That is how a prompt is given to an agent's TUI.
    ///
    /// Example: corral send work 'echo hi\n'
    Send {
        /// Name or id.
        session: String,
        /// The text; `\n`, `\r`, `\t` and `\e` escapes are honoured.
        text: String,
        /// A paste + Enter (bracketed when the program asked for it).
        #[arg(long)]
        paste: bool,
    },
    /// Print a session's output (what is retained), and with -f follow it.
    Logs {
        /// Name or id.
        session: String,
        /// Follow until the session ends.
        #[arg(short, long)]
        follow: bool,
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Print a session's events: its history from the journal, and with -f the new ones as they
    /// happen, until it ends.
    Events {
        /// Name or id.
        session: String,
        /// Follow until the session ends.
        #[arg(short, long)]
        follow: bool,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write a session's retained scrollback as an asciicast v2 recording (play it with
    /// `asciinema play`).
    ///
    /// Example: corral export work --format asciicast > work.cast
    Export {
        /// Name or id.
        session: String,
        /// Recording format.
        #[arg(long, default_value = "asciicast", value_parser = ["asciicast"])]
        format: String,
    },
    /// Create a session-scoped token.
    ///
    /// Example: corral token create --session work --scope read
    Token {
        /// Only `create` exists.
        #[arg(value_parser = ["create"])]
        action: String,
        /// Name or id.
        #[arg(long)]
        session: String,
        /// read (watch) or write (watch and type).
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
    },
    /// Attach this terminal to a session (detach with Ctrl-\\).
    Attach {
        /// Name or id.
        session: String,
        /// Watch only.
        #[arg(long)]
        read_only: bool,
        /// Detach key as a control character letter (default '\\' = Ctrl-\\).
        #[arg(long, default_value = "\\")]
        detach_key: char,
    },
}

/// Runs a client command.
pub async fn run(
    cmd: ClientCommand,
    url: Option<String>,
    token: Option<String>,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let remote = Remote::find(url, token, data_dir)?;
    match cmd {
        ClientCommand::Spawn {
            name,
            cwd,
            env,
            restart,
            stop_signal,
            grace,
            pipe,
            agent,
            argv,
        } => {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--env {kv}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            if !(0.0..=3600.0).contains(&grace) {
                bail!("--grace must be between 0 and 3600 seconds");
            }
            let spec = json!({
                "name": name, "cwd": cwd, "env": env,
                "restart": restart.replace('-', "_"),
                "stop_signal": stop_signal,
                "grace": {"secs": grace.trunc() as u64, "nanos": (grace.fract() * 1e9) as u32},
                "mode": if pipe { "pipe" } else { "pty" },
                "agent": agent,
                "argv": argv,
            });
            let info = remote.json("POST", "/v1/sessions", Some(&spec)).await?;
            println!("{}", info["id"].as_str().unwrap_or_default());
        }
        ClientCommand::Ps { json } => {
            let list = remote.json("GET", "/v1/sessions", None).await?;
            let mut list = list.as_array().cloned().unwrap_or_default();
            list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            for s in &mut list {
                if let Some(id) = s["id"].as_str() {
                    let (cpu, rss) = crate::proctree::usage(id);
                    s["cpu_percent"] = json!(cpu);
                    s["rss_kib"] = json!(rss);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_ps(&list);
            }
        }
        ClientCommand::Tree { json } => {
            let mut ws = remote.ws().await?;
            let tree = ws.call(json!({"type": "tree"})).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tree["tree"])?);
            } else {
                // Session children are named by id in the supervisor; show their names too.
                let list = ws.call(json!({"type": "list"})).await?;
                let names: std::collections::HashMap<String, String> = list["sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        Some((
                            s["id"].as_str()?.to_string(),
                            s["name"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                print_tree(&tree["tree"], "", true, true, &names);
            }
        }
        ClientCommand::Stop { session } => op(&remote, "stop", &session).await?,
        ClientCommand::Kill { session } => op(&remote, "kill", &session).await?,
        ClientCommand::Restart { session } => op(&remote, "restart", &session).await?,
        ClientCommand::Rm { session } => op(&remote, "remove", &session).await?,
        ClientCommand::Send {
            session,
            text,
            paste,
        } => {
            let data = unescape(&text);
            let mut ws = remote.ws().await?;
            let input = ws
                .send(json!({"type": "input", "session": session, "data": data, "paste": paste}))
                .await?;
            // Input has no reply on success; a ping round trip proves it was taken, and an error
            // reply to the input, if any, arrives before the pong.
            let ping = ws.send(json!({"type": "ping"})).await?;
            loop {
                match ws.next().await {
                    Incoming::Json(v) if v["id"] == json!(input) && v["type"] == "error" => {
                        bail!("{}", v["message"].as_str().unwrap_or("input refused"))
                    }
                    Incoming::Json(v) if v["id"] == json!(ping) => break,
                    Incoming::Closed(r) => bail!("connection closed: {r}"),
                    _ => {}
                }
            }
        }
        ClientCommand::Logs {
            session,
            follow,
            from,
        } => {
            let mut ws = remote.ws().await?;
            let info = remote
                .json("GET", &format!("/v1/sessions/{session}"), None)
                .await?;
            let head = info["output_offset"].as_u64().unwrap_or(0);
            let r = ws
                .call(json!({"type": "subscribe", "session": session, "from": from}))
                .await?;
            let channel = r["channel"].as_u64().unwrap_or(0) as u32;
            let mut stdout = std::io::stdout().lock();
            let mut next = from;
            if !follow && next >= head {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                match ws.next().await {
                    Incoming::Bin(1, ch, offset, bytes) if ch == channel => {
                        stdout.write_all(&bytes)?;
                        next = offset + bytes.len() as u64;
                        if !follow && next >= head {
                            break;
                        }
                    }
                    Incoming::Json(v) if v["type"] == "lagged" => {
                        stdout.flush()?;
                        eprintln!(
                            "corral: bytes {}..{} are no longer retained",
                            v["from"], v["to"]
                        );
                        next = v["to"].as_u64().unwrap_or(next);
                    }
                    Incoming::Json(v) if v["type"] == "event" && is_final(&v["event"]) => break,
                    Incoming::Json(v) if v["type"] == "closed" => break,
                    Incoming::Closed(r) => bail!("connection closed: {r}"),
                    _ => {}
                }
            }
            stdout.flush()?;
        }
        ClientCommand::Events {
            session,
            follow,
            json,
        } => {
            let mut ws = remote.ws().await?;
            // Subscribe first (when following), so no event falls between history and live.
            if follow {
                ws.call(json!({"type": "subscribe", "session": session}))
                    .await?;
            }
            let print = |e: &Value| {
                if json {
                    println!("{e}");
                } else {
                    println!(
                        "{:>5} {} {} {}",
                        e["seq"],
                        fmt_time(&e["time"]),
                        e["kind"]["kind"].as_str().unwrap_or("?"),
                        describe(&e["kind"])
                    );
                }
            };
            // History from the journal, page by page.
            let mut last = 0u64;
            let mut ended = false;
            loop {
                let r = ws
                    .call(json!({"type": "events", "session": session, "after": last}))
                    .await?;
                let page = r["events"].as_array().cloned().unwrap_or_default();
                for e in &page {
                    print(e);
                    last = e["seq"].as_u64().unwrap_or(last);
                    ended = is_final(e);
                }
                if page.len() < 1000 {
                    break;
                }
            }
            let state = remote
                .json("GET", &format!("/v1/sessions/{session}"), None)
                .await?;
            let over = matches!(state["state"].as_str(), Some("stopped" | "failed"));
            if follow && !(ended && over) {
                loop {
                    match ws.next().await {
                        Incoming::Json(v) if v["type"] == "event" => {
                            let e = &v["event"];
                            if e["seq"].as_u64().is_some_and(|s| s <= last) {
                                continue;
                            }
                            print(e);
                            last = e["seq"].as_u64().unwrap_or(last);
                            if is_final(e) {
                                break;
                            }
                        }
                        Incoming::Json(v) if v["type"] == "closed" => break,
                        Incoming::Closed(r) => bail!("connection closed: {r}"),
                        _ => {}
                    }
                }
            }
        }
        ClientCommand::Export { session, format } => {
            let (status, body) = remote
                .http(
                    "GET",
                    &format!("/v1/sessions/{session}/export?format={format}"),
                    None,
                )
                .await?;
            if status != 200 {
                let msg = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                bail!("{msg}");
            }
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(body.as_bytes())?;
            stdout.flush()?;
        }
        ClientCommand::Token { session, scope, .. } => {
            let r = remote
                .json(
                    "POST",
                    "/v1/tokens",
                    Some(&json!({"session": session, "scope": scope})),
                )
                .await?;
            println!("{}", r["token"].as_str().unwrap_or_default());
        }
        ClientCommand::Attach {
            session,
            read_only,
            detach_key,
        } => {
            return crate::attach::attach(&remote, &session, read_only, detach_key).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn op(remote: &Remote, what: &str, session: &str) -> anyhow::Result<()> {
    let mut ws = remote.ws().await?;
    let r = ws.call(json!({"type": what, "session": session})).await?;
    let s = &r["session"];
    println!(
        "{} {}",
        s["name"].as_str().unwrap_or(session),
        s["state"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn is_final(event: &Value) -> bool {
    event["kind"]["kind"] == "state"
        && matches!(event["kind"]["state"].as_str(), Some("stopped" | "failed"))
}

fn describe(kind: &Value) -> String {
    match kind["kind"].as_str() {
        Some("state") => format!(
            "{} {}",
            kind["state"].as_str().unwrap_or(""),
            kind["reason"].as_str().unwrap_or("")
        ),
        Some("spawned") => format!("pid {}", kind["pid"]),
        Some("exited") => kind["status"].to_string(),
        Some("hook") => kind["name"].as_str().unwrap_or("").to_string(),
        _ => kind.to_string(),
    }
}

/// `\n`, `\r`, `\t`, `\e`, `\\` escapes.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('e') => out.push('\x1b'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn print_ps(list: &[Value]) {
    println!(
        "{:<8}  {:<16} {:<10} {:>7} {:>8} {:>4} {:<18} {:>3} {:>6} {:>8}  ATTENTION",
        "ID", "NAME", "STATE", "PID", "UPTIME", "RST", "LAST EXIT", "VWR", "CPU%", "RSS"
    );
    let now = SystemTime::now();
    for s in list {
        let uptime = s["started_at"]["secs_since_epoch"]
            .as_u64()
            .filter(|_| s["pid"].is_number())
            .and_then(|t| {
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|n| n.as_secs().saturating_sub(t))
            })
            .map(fmt_secs)
            .unwrap_or_else(|| "-".into());
        let exit = match &s["last_exit"] {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{} {v}", k.to_lowercase()))
                .collect(),
            _ => "-".to_string(),
        };
        println!(
            "{:<8}  {:<16} {:<10} {:>7} {:>8} {:>4} {:<18} {:>3} {:>6} {:>8}  {}",
            &s["id"].as_str().unwrap_or("")[..8.min(s["id"].as_str().unwrap_or("").len())],
            s["name"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["pid"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            uptime,
            s["restarts"],
            exit,
            s["viewers"],
            s["cpu_percent"]
                .as_f64()
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            s["rss_kib"]
                .as_u64()
                .map(|k| format!("{}K", k))
                .unwrap_or_else(|| "-".into()),
            s["attention"].as_str().unwrap_or(""),
        );
    }
    // Persistence trouble is loud: one line per affected session.
    for s in list {
        if let Some(e) = s["persist_error"].as_str() {
            println!("PERSIST  {}: {e}", s["name"].as_str().unwrap_or(""));
        }
    }
}

/// An event time (serde's SystemTime form) as UTC `HH:MM:SS.mmm`.
fn fmt_time(t: &Value) -> String {
    let secs = t["secs_since_epoch"].as_u64().unwrap_or(0);
    let ms = t["nanos_since_epoch"].as_u64().unwrap_or(0) / 1_000_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        day / 3600,
        (day % 3600) / 60,
        day % 60
    )
}

fn fmt_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn print_tree(
    node: &Value,
    prefix: &str,
    last: bool,
    root: bool,
    names: &std::collections::HashMap<String, String>,
) {
    let branch = if root {
        ""
    } else if last {
        "└── "
    } else {
        "├── "
    };
    let mut extra = Vec::new();
    if let Some(r) = node["restarts_total"].as_u64().filter(|r| *r > 0) {
        extra.push(format!(
            "restarts {r} ({} in window)",
            node["restarts_in_window"]
        ));
    }
    if let Some(d) = node["mailbox_depth"].as_u64() {
        extra.push(format!("mailbox {d}"));
    }
    if let Some(l) = node["lag_count"].as_u64() {
        extra.push(format!("lag {l}"));
    }
    if let Some(e) = node["last_exit"].as_str() {
        extra.push(format!("last exit: {e}"));
    }
    let id = node["id"].as_str().unwrap_or("?");
    let label = match names.get(id) {
        Some(name) => format!("{name} ({})", &id[..8.min(id.len())]),
        None => id.to_string(),
    };
    println!(
        "{prefix}{branch}{label} [{}] {}",
        node["status"].as_str().unwrap_or("?"),
        extra.join(", ")
    );
    let children = node["children"].as_array().cloned().unwrap_or_default();
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (i, c) in children.iter().enumerate() {
        print_tree(c, &child_prefix, i + 1 == children.len(), false, names);
    }
}
