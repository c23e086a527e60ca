//! Client commands: spawn, ps, tree, stop/kill/restart/rm, send, logs, events, token, attach.
//! Each is a thin use of the native protocol or the REST API; output is for humans unless
//! `--json`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use corral_actors::{Mode, RestartPolicy, SessionSpec};
use corral_client::{Client, Incoming};
use corral_server::protocol::{Op, Reply, SessionView};
use serde_json::json;

use crate::output::{print_ps, print_tree};
use crate::send_text::{read_stdin, unescape};
use crate::token::{TokenAction, token_command};

/// How long `corral send` waits for its input to be taken: a paste until the program has it
/// (written to its terminal, the Enter too), other input until the server has queued it.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Commands that talk to a running server.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Start a session; prints its id (with --attach, attaches this terminal to it instead).
    ///
    /// Example: corral spawn --name work --restart on-failure -- bash -i
    Spawn {
        /// Unique name.
        #[arg(long)]
        name: Option<String>,
        /// Attach this terminal to the new session at once (as `tmux new-session` does); it
        /// starts at this terminal's size. Detach with Ctrl-\.
        #[arg(short, long)]
        attach: bool,
        /// Working directory (default: this command's own, with a server on this machine; a
        /// relative one is taken from here too). With --url, the server's default.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Restart policy (`on_failure`, as the API and `ps --json` spell it, is taken too).
        #[arg(long, default_value = "never", value_parser = ["never", "on-failure", "on_failure", "always"])]
        restart: String,
        /// Stop signal.
        #[arg(long, default_value = "SIGHUP")]
        stop_signal: String,
        /// Grace period in seconds before SIGKILL.
        #[arg(long, default_value_t = 5.0)]
        grace: f64,
        /// How the program is attached: `pty` (a terminal), `pipe` (stdin/stdout/stderr; JSON
        /// lines of stdout become events) or `stream-json` (a structured agent: needs --agent;
        /// for claude it adds `-p --input-format stream-json --output-format stream-json
        /// --verbose --permission-prompt-tool stdio`).
        #[arg(long, default_value = "pty", value_parser = ["pty", "pipe", "stream-json"])]
        mode: String,
        /// Pipe mode: the same as `--mode pipe`.
        #[arg(long, conflicts_with = "mode")]
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
    /// Show the whole live tree: server, gateway (listeners, connections), sessions with their
    /// process (OS state), actors, input queue, log writer and subscribers.
    ///
    /// Example: corral tree --watch
    Tree {
        /// JSON output (schema in docs/protocol.md).
        #[arg(long)]
        json: bool,
        /// Redraw on every change the server pushes.
        #[arg(long)]
        watch: bool,
    },
    /// Stop sessions gracefully (stop signal, grace, then SIGKILL of each process tree), all at
    /// once.
    ///
    /// Example: corral stop work --grace 30; corral stop alpha bravo
    Stop {
        /// Names or ids.
        #[arg(required = true)]
        sessions: Vec<String>,
        /// Seconds between the stop signal and SIGKILL, for this stop (default: the session's
        /// own, set at spawn).
        #[arg(long)]
        grace: Option<f64>,
    },
    /// SIGKILL sessions' process trees.
    Kill {
        /// Names or ids.
        #[arg(required = true)]
        sessions: Vec<String>,
    },
    /// Restart sessions' processes.
    Restart {
        /// Names or ids.
        #[arg(required = true)]
        sessions: Vec<String>,
    },
    /// Stop and remove sessions.
    ///
    /// Example: corral rm alpha bravo
    Rm {
        /// Names or ids.
        #[arg(required = true)]
        sessions: Vec<String>,
    },
    /// Send text as input (for scripts). With --paste, the text is a paste followed by Enter:
    /// wrapped in bracketed-paste markers when the program enabled that mode (as Claude Code's
    /// TUI does), plain otherwise. That is how a prompt is given to an agent's TUI.
    ///
    /// Example: corral send work 'echo hi\n'; corral send --paste agent - < prompt.md
    Send {
        /// Name or id.
        session: String,
        /// The text; `\n`, `\r`, `\t`, `\e`, `\\` and `\xHH` (a control character, e.g.
        /// `\x03` for Ctrl-C, `\x04` for Ctrl-D) escapes are honoured; any other backslash is
        /// an error. `-` reads it from standard input instead, as it is (no escapes; UTF-8, up
        /// to 64 MiB).
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
        #[arg(long, default_value_t = 0, conflicts_with = "tail")]
        from: u64,
        /// Print only the last N lines (then follow, with -f).
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<u64>,
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
        /// Only the events after this sequence number (the first column; a script resuming
        /// where it stopped).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
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
    /// Session-scoped tokens: create one (a phone's read-only page, a script's driver), list
    /// the valid ones, revoke one.
    ///
    /// Example: corral token create --session work --scope read; corral token revoke 3bf72f4cd665
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a login link to the web page (the server's URL with a one-time code, good for one
    /// login within 10 minutes; the token itself never goes in a URL): open it in a browser.
    ///
    /// Example: corral web
    Web,
    /// Answer the permission prompt an agent session waits for (its PermissionRequest hook
    /// returns the decision to Claude Code; nothing is typed into the terminal). Answers the
    /// question shown now and prints it; if another answer got there first, nothing is answered.
    ///
    /// Example: corral answer agent deny --message "not on main"
    Answer {
        /// Name or id.
        session: String,
        /// The decision.
        #[arg(value_parser = ["allow", "deny"])]
        decision: String,
        /// Why (told to the agent with a deny).
        #[arg(long)]
        message: Option<String>,
        /// The question to answer (its id in `ps --json`'s `permission.id`), when several are
        /// open; refused if it is no longer open.
        #[arg(long)]
        id: Option<String>,
        /// For an AskUserQuestion (the agent asks you to choose): the answer to its questions,
        /// one per question in their order (repeatable; several choices joined with ", "),
        /// given with allow.
        #[arg(long = "choose", value_name = "ANSWER")]
        choose: Vec<String>,
    },
    /// Wait until an agent session is idle, needs a permission, or its process exited. A
    /// session without agent hooks is idle once its output was quiet for 1 s. Exit status: 0
    /// reached, 124 timed out (as timeout(1)), 3 the session ended first, 1 error, 2 a usage
    /// error.
    ///
    /// Example: corral wait agent --for needs_permission --timeout 600
    Wait {
        /// Name or id.
        session: String,
        /// What to wait for.
        #[arg(long = "for", value_parser = ["idle", "needs_permission", "exit"])]
        until: String,
        /// Give up after this many seconds (default: wait forever).
        #[arg(long, value_parser = seconds)]
        timeout: Option<f64>,
    },
    /// Hand the running server over to the `corral` binary now on disk: sessions keep running
    /// (their holders keep them), viewers reconnect and resume where they were. Returns when
    /// the new server answers; a new binary that fails at start leaves the old one serving.
    ///
    /// Example: corral upgrade
    Upgrade,
    /// Stop the server: every session is stopped first, or with --keep-sessions left running
    /// under its holder for the next `corral serve` to reattach. Returns once it is gone.
    ///
    /// Example: corral shutdown --keep-sessions
    Shutdown {
        /// Leave every session running under its holder for the next `corral serve` (PTY and
        /// pipe sessions alike).
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Attach this terminal to a session (detach with Ctrl-\). Exit status: 0 when detached;
    /// when the session ends while attached, its exit code (128 + a signal's number; 1 if it
    /// failed; 0 after a stop asked for).
    Attach {
        /// Name or id.
        session: String,
        /// Watch only.
        #[arg(long)]
        read_only: bool,
        /// Detach key as a control character letter (default '\' = Ctrl-\). The key is never
        /// sent to the program: to type Ctrl-\ into it (SIGQUIT), attach with another
        /// (`--detach-key ]`), or `corral send NAME '\x1c'`.
        #[arg(long, default_value_t = crate::attach::DETACH_KEY)]
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
    let client = Client::find(url, token, data_dir)?;
    match cmd {
        ClientCommand::Spawn {
            name,
            attach,
            cwd,
            env,
            restart,
            stop_signal,
            grace,
            mode,
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
            check_grace(grace)?;
            let mut spec = SessionSpec::new(argv);
            spec.name = name;
            spec.cwd = session_cwd(&client, cwd)?;
            spec.env = env;
            spec.restart = match restart.as_str() {
                "on-failure" | "on_failure" => RestartPolicy::OnFailure,
                "always" => RestartPolicy::Always,
                _ => RestartPolicy::Never,
            };
            spec.stop_signal = stop_signal;
            spec.grace = std::time::Duration::from_secs_f64(grace);
            spec.mode = match (pipe, mode.as_str()) {
                (true, _) | (_, "pipe") => Mode::Pipe,
                (_, "stream-json") => Mode::StreamJson,
                _ => Mode::Pty,
            };
            spec.agent = agent;
            if attach {
                // Checked before anything starts: a refused attach must not leave a session.
                use std::io::IsTerminal;
                if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
                    bail!(
                        "--attach needs a terminal (standard input and output); nothing was started"
                    );
                }
                // Drawn at this terminal's size from its first frame, not 80×24 then redrawn.
                let (cols, rows) = crate::attach::terminal_size();
                spec.size = corral_actors::Size { rows, cols };
            }
            let info = client.spawn(&spec).await?;
            if attach {
                let key = info.id.to_string();
                return crate::attach::attach(&client, &key, false, crate::attach::DETACH_KEY)
                    .await;
            }
            println!("{}", info.id);
            // Started, but not safe yet (a full disk): said, as `ps` would.
            if let Some(e) = &info.persist_error {
                eprintln!("corral: warning: {} {e}", info.name);
            }
        }
        ClientCommand::Ps { json } => {
            // CPU and RSS come from the server, which reads them where the processes run.
            let mut list: Vec<SessionView> = client.sessions().await?;
            list.sort_by(|a, b| crate::output::natural_cmp(&a.info.name, &b.info.name));
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                // For a person: what asks first, as on the page (sorted by name within).
                list.sort_by_key(|v| crate::output::attention_rank(&v.info));
                print_ps(&list);
            }
        }
        ClientCommand::Tree { json, watch } => {
            let mut ws = client.ws().await?;
            if watch {
                return crate::tree_watch::run(&mut ws, json).await;
            }
            let tree = crate::tree_watch::tree(&mut ws).await?;
            if json {
                println!("{}", serde_json::to_string(&tree)?);
            } else {
                print_tree(&tree);
            }
        }
        ClientCommand::Stop { sessions, grace } => {
            if let Some(g) = grace {
                check_grace(g)?;
            }
            let client = &client;
            return Ok(each(&sessions, |session| async move {
                Ok(shown(&session, client.stop(&session, grace).await?))
            })
            .await);
        }
        ClientCommand::Kill { sessions } => {
            return Ok(each(&sessions, |session| op(&client, Op::Kill { session })).await);
        }
        ClientCommand::Restart { sessions } => {
            return Ok(each(&sessions, |session| op(&client, Op::Restart { session })).await);
        }
        ClientCommand::Rm { sessions } => {
            let client = &client;
            return Ok(each(&sessions, |session| async move {
                let s = client.remove(&session).await?;
                let name = if s.name.is_empty() { &session } else { &s.name };
                warn_unsafe(name, &s);
                Ok(format!("{name} removed"))
            })
            .await);
        }
        ClientCommand::Send {
            session,
            text,
            paste,
        } => {
            let data = if text == "-" {
                read_stdin().await?
            } else {
                unescape(&text).map_err(|e| anyhow::anyhow!("{e}; nothing was sent"))?
            };
            let mut ws = client.ws().await?;
            let sent = ws.input(&session, &data, paste).await?;
            // Input has no reply on success; a ping round trip proves it was taken, and an error
            // reply to the input, if any, arrives before the pong. A paste is answered once the
            // program has it (its last part's reply): a success means it was written, not only
            // queued (a server killed meanwhile had taken it, and said nothing).
            let ping = match (paste, sent.last()) {
                (true, Some(last)) => *last,
                _ => ws.send(json!({"type": "ping"})).await?,
            };
            let deadline = tokio::time::Instant::now() + SEND_WAIT;
            loop {
                let next = tokio::time::timeout_at(deadline, ws.next());
                let Ok(next) = next.await else {
                    let secs = SEND_WAIT.as_secs();
                    if paste {
                        bail!(
                            "the program has not taken the paste in {secs} s (is it reading its \
                             input?): it stays queued, and is written as the program reads"
                        );
                    }
                    bail!("the server did not answer in {secs} s");
                };
                match next {
                    Incoming::Json(v)
                        if v["type"] == "error"
                            && v["id"].as_u64().is_some_and(|id| sent.contains(&id)) =>
                    {
                        bail!("{}", v["message"].as_str().unwrap_or("input refused"))
                    }
                    Incoming::Json(v) if v["id"] == json!(ping) => break,
                    // Said before a close (input not taken in time: how much was).
                    Incoming::Json(v) if v["type"] == "error" && v["id"].is_null() => {
                        bail!("{}", v["message"].as_str().unwrap_or("input refused"))
                    }
                    Incoming::Closed(r) => bail!(
                        "connection closed: {r}{}",
                        if paste {
                            " (before the paste was written whole: send it again)"
                        } else {
                            ""
                        }
                    ),
                    _ => {}
                }
            }
        }
        ClientCommand::Logs {
            session,
            follow,
            from,
            tail,
        } => {
            let (from, until) = match tail {
                Some(lines) => {
                    let head = client.session(&session).await?.info.output_offset;
                    let start = crate::follow::tail_start(&client, &session, lines, head).await?;
                    (start, Some(head))
                }
                None => (from, None),
            };
            crate::follow::logs(&client, &session, follow, from, until).await?
        }
        ClientCommand::Events {
            session,
            follow,
            json,
            after,
        } => crate::follow::events(&client, &session, follow, json, after.unwrap_or(0)).await?,
        ClientCommand::Export { session, format } => {
            let mut recording = client.export(&session, &format).await?;
            let mut stdout = std::io::stdout().lock();
            while let Some(data) = recording.chunk().await? {
                stdout.write_all(&data)?;
            }
            stdout.flush()?;
        }
        ClientCommand::Token { action } => token_command(&client, action).await?,
        ClientCommand::Answer {
            session,
            decision,
            message,
            id,
            choose,
        } => {
            let behavior = if decision == "allow" {
                corral_server::permission::Behavior::Allow
            } else {
                corral_server::permission::Behavior::Deny
            };
            // The question this answers is the one printed: named by its id, so an answer that
            // got there first makes this one a refusal, never an answer to the next question.
            let view = client.session(&session).await?;
            let asked = view
                .info
                .permission
                .iter()
                .chain(&view.info.permission_queue);
            let question = match &id {
                Some(id) => asked.clone().find(|q| q.id.as_deref() == Some(id)),
                None => view.info.permission.as_ref(),
            }
            .cloned();
            let id = id.or_else(|| question.as_ref().and_then(|q| q.id.clone()));
            let answers = (!choose.is_empty())
                .then(|| choices(question.as_ref(), choose))
                .transpose()?;
            let done = client
                .answer_permission(
                    &session,
                    &corral_server::permission::Answer {
                        behavior,
                        message,
                        id,
                        answers,
                        updated_input: None,
                    },
                )
                .await?;
            let verb = if decision == "allow" {
                "allowed"
            } else {
                "denied"
            };
            match question {
                Some(q) => println!(
                    "{}: {verb} {}",
                    done.info.name,
                    crate::output::question_summary(&q)
                ),
                None => println!("{}: {verb}", done.info.name),
            }
        }
        ClientCommand::Wait {
            session,
            until,
            timeout,
        } => {
            let limit = timeout
                .map(std::time::Duration::try_from_secs_f64)
                .transpose()
                .context("--timeout must be a number of seconds")?;
            return crate::wait::wait(&client, &session, &until, limit).await;
        }
        ClientCommand::Upgrade => crate::handover::upgrade(&client).await?,
        ClientCommand::Shutdown { keep_sessions } => {
            crate::handover::shutdown(&client, keep_sessions).await?
        }
        ClientCommand::Web => {
            let url = match &client.endpoint {
                corral_client::Endpoint::Tcp(addr) => format!("http://{addr}"),
                corral_client::Endpoint::Unix(_) => {
                    corral_server::datadir::read_server_json(data_dir)?.url
                }
            };
            let code = client.login_code().await?.code;
            println!("{}", corral_server::web::login_url(&url, &code));
            // A server listening on every address prints the unspecified one, which no
            // browser can open: said, on stderr (stdout stays the URL alone).
            if url.contains("//0.0.0.0") || url.contains("//[::]") {
                eprintln!(
                    "corral: the server listens on every address: open this URL with this \
                     machine's address (as the phone reaches it) in place of {}",
                    if url.contains("//0.0.0.0") {
                        "0.0.0.0"
                    } else {
                        "[::]"
                    }
                );
            }
        }
        ClientCommand::Attach {
            session,
            read_only,
            detach_key,
        } => {
            return crate::attach::attach(&client, &session, read_only, detach_key).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `name state` of a session an operation answered with.
fn shown(key: &str, s: corral_actors::SessionInfo) -> String {
    let name = if s.name.is_empty() { key } else { &s.name };
    warn_unsafe(name, &s);
    format!("{name} {}", s.state.as_str())
}

/// Done, but not safe yet (the registry refused it: a full disk): said, as a spawn's is.
fn warn_unsafe(name: &str, s: &corral_actors::SessionInfo) {
    if let Some(e) = &s.persist_error {
        eprintln!("corral: warning: {name} {e}");
    }
}

/// Does `act` to every session named, all at once (a stop of each waits its grace: eight
/// agents stopped one after the other took eight graces); then says each one's outcome in
/// the order named, a failure as `corral: …` on stderr; the status is a failure if any failed.
/// A key named twice is acted on once (`rm dup dup` said "dup removed" and then that there
/// was no `dup`).
async fn each<F, Fut>(sessions: &[String], act: F) -> ExitCode
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut seen = std::collections::HashSet::new();
    let keys = sessions.iter().filter(|k| seen.insert(k.as_str())).cloned();
    let outcomes = futures::future::join_all(keys.map(act)).await;
    let mut code = ExitCode::SUCCESS;
    for outcome in outcomes {
        match outcome {
            Ok(line) => println!("{line}"),
            Err(e) => code = crate::pipe::failed("corral", &e),
        }
    }
    code
}

/// A session operation over the WebSocket (kill, restart): the session as it answered.
async fn op(client: &Client, op: Op) -> anyhow::Result<String> {
    let mut ws = client.ws().await?;
    match ws.request(op).await? {
        Reply::Session { session, .. } => Ok(shown("", session.info)),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Where a spawned session starts: as tmux does, where the command was run — with a server on
/// this machine (its data dir's socket), the CLI's own directory by default, and a relative
/// `--cwd` taken from it. A remote server (`--url`) gets `--cwd` as given, which must then be
/// absolute (relative to what?); without it the server's default applies.
fn session_cwd(client: &Client, cwd: Option<String>) -> anyhow::Result<Option<std::path::PathBuf>> {
    let local = matches!(client.endpoint, corral_client::Endpoint::Unix(_));
    let here = || std::env::current_dir().context("the current directory");
    Ok(match (cwd.map(std::path::PathBuf::from), local) {
        (Some(p), _) if p.is_absolute() => Some(p),
        (Some(p), true) => Some(here()?.join(p)),
        (Some(p), false) => bail!(
            "--cwd {} is relative: with --url, give the directory on the server's machine in full",
            p.display()
        ),
        (None, true) => Some(here()?),
        (None, false) => None,
    })
}

/// `--grace` of `spawn` and `stop`: seconds between the stop signal and SIGKILL.
fn check_grace(secs: f64) -> anyhow::Result<()> {
    if !(0.0..=3600.0).contains(&secs) {
        bail!("--grace must be between 0 and 3600 seconds");
    }
    Ok(())
}

/// A number of seconds: finite, not negative, at most a year (a usage error otherwise).
fn seconds(text: &str) -> Result<f64, String> {
    const YEAR: f64 = 365.0 * 86_400.0;
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=YEAR).contains(&s) => Ok(s),
        Ok(_) => Err(format!(
            "{text} is not a number of seconds from 0 to a year"
        )),
        Err(e) => Err(format!("{text} is not a number of seconds: {e}")),
    }
}

/// `--choose` answers, one per question of the AskUserQuestion `question`, in its order, as the
/// API takes them (the question's text → the answer).
fn choices(
    question: Option<&corral_actors::agent::PermissionAsk>,
    choose: Vec<String>,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let texts: Vec<String> = question
        .filter(|q| q.tool == corral_server::permission::ASK_USER_QUESTION)
        .and_then(|q| q.input.get("questions"))
        .and_then(|qs| qs.as_array())
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q.get("question").and_then(|t| t.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        match question {
            None => anyhow::bail!("it asks nothing now: --choose answers an AskUserQuestion"),
            Some(q) => anyhow::bail!(
                "--choose answers an AskUserQuestion, and the question open is not one (it asks for {})",
                q.tool
            ),
        }
    }
    if texts.len() != choose.len() {
        anyhow::bail!(
            "it asks {} question(s), {:?}: give one --choose for each, in order",
            texts.len(),
            texts
        );
    }
    Ok(texts
        .into_iter()
        .zip(choose)
        .map(|(q, a)| (q, serde_json::Value::String(a)))
        .collect())
}

#[cfg(test)]
mod tests {
    /// `--choose` with nothing asked says so (it said the open question was not one).
    #[test]
    fn choose_with_nothing_asked_says_so() {
        let err = super::choices(None, vec!["Red".into()]).unwrap_err();
        assert!(err.to_string().contains("it asks nothing now"), "{err}");
        let bash = corral_actors::agent::PermissionAsk {
            id: Some("q".into()),
            tool: "Bash".into(),
            input: serde_json::json!({"command": "ls"}),
            request_id: None,
        };
        let err = super::choices(Some(&bash), vec!["Red".into()]).unwrap_err();
        assert!(err.to_string().contains("it asks for Bash"), "{err}");
    }
}
