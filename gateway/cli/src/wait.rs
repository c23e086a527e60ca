//! Wait: `corral wait SESSION --for idle|needs_permission|exit`, for scripts. It follows the
//! session's events over the WebSocket (no polling): after each event it reads the session once
//! and checks the condition. An agent is idle when its hooks say so; a session whose program
//! has no hooks (attention null) is idle once its output has been quiet for [`QUIET`], as
//! agentapi's `stable` says it. Exit status: 0 reached, 3 the session ended before (for idle
//! and needs_permission), 124 after `--timeout` (as timeout(1)). Waiting for needs_permission
//! of a session no hook has spoken for yet (a plain program: it would wait forever) says so at
//! once, and waits on (its hooks may still come). `--for exit` prints how the process ended
//! (`exit 3`, `signal 9 (SIGKILL)`; the state when it never ran).

use std::process::ExitCode;
use std::time::Duration;

use corral_actors::SessionState;
use corral_actors::attention::Attention;
use corral_client::{Client, Incoming};
use corral_server::protocol::{Op, SessionView};

/// What the session is now, for `until`: reached, ended first, or not yet.
fn check(view: &SessionView, until: &str) -> Option<ExitCode> {
    let exited = matches!(
        view.info.state,
        SessionState::Stopped | SessionState::Failed | SessionState::Exited
    );
    // An agent that said it ends (SessionEnd) will not be idle again; its process, though, may
    // still run a moment: `--for exit` waits for that (it printed "running").
    let ended = exited || view.info.attention == Some(Attention::Exited);
    let reached = match until {
        "exit" => exited,
        "idle" => view.info.attention == Some(Attention::Idle),
        _ => view.info.attention == Some(Attention::NeedsPermission),
    };
    if reached {
        // How it ended, for a script to read (as `docker wait` prints the code).
        if until == "exit" {
            match view.info.last_exit {
                Some(status) => println!("{status}"),
                None => println!("{}", view.info.state.as_str()),
            }
        }
        Some(ExitCode::SUCCESS)
    } else if ended && until != "exit" {
        eprintln!("corral: {} ended before it was {until}", view.info.name);
        Some(ExitCode::from(3))
    } else {
        None
    }
}

/// How long a session without hooks must print nothing to be idle (agentapi's `stable`).
pub const QUIET: Duration = Duration::from_secs(1);

/// Whether `until` is met by quiet output: waiting for idle, on a session without hooks.
fn by_quiet(view: &SessionView, until: &str) -> bool {
    until == "idle" && view.info.attention.is_none()
}

/// Said of a session no hook has spoken for, waited for to ask a permission.
const NO_AGENT: &str = ": it is no agent — no hook has said anything (spawn it with --agent)";

/// What keeps `session` from being `until`, if its user must act: an agent that never
/// started because its start screen asks something (Claude Code's folder trust), or one that
/// asks a permission when it was waited for to be idle. Said after a timeout.
async fn blocked(client: &Client, session: &str, until: &str) -> String {
    let Ok(view) = client.session(session).await else {
        return String::new();
    };
    let info = &view.info;
    if let Some(line) = &info.agent_asks_at_start {
        return format!(
            ": it has not started, its screen asks \"{line}\" (answer it: `corral send \
             {session} '\\r'` takes the highlighted choice, or at its terminal: `corral attach \
             {session}`)"
        );
    }
    match (&info.permission, until) {
        (_, "needs_permission") if info.attention.is_none() => NO_AGENT.to_string(),
        (Some(ask), "idle") => format!(
            ": it asks a permission for {} (`corral answer {session} allow|deny`)",
            ask.tool
        ),
        _ => String::new(),
    }
}

/// The least a wait gives the server to answer its first look, whatever its `--timeout` (a
/// healthy one answers in milliseconds; `--timeout 0` asks whether it holds now).
const LOOK_AT_LEAST: Duration = Duration::from_secs(5);

/// How long a wait that timed out asks the server what keeps the session (said with the
/// timeout) before it leaves without saying.
const BLOCKED_LOOK: Duration = Duration::from_secs(1);

/// Waits until `session` is `until` (or ended); across a server restart or upgrade too (it
/// reconnects as `corral logs -f` does, and looks again).
/// With `limit`, it gives up after that long (status 124, as timeout(1)); the condition is
/// checked once first however short the limit (`--timeout 0`: is it so now?).
pub async fn wait(
    client: &Client,
    session: &str,
    until: &str,
    limit: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let timed_out = |why: &str| {
        let state = match until {
            "exit" => "has not exited",
            "idle" => "is not idle",
            _ => "asks no permission",
        };
        let secs = limit.unwrap_or_default().as_secs_f64();
        eprintln!("corral: {session} {state} after {secs} s{why}");
        // As timeout(1): not 2, which is every command's usage error.
        Ok(ExitCode::from(124))
    };
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut client = client.clone();
    let mut said_no_agent = false;
    loop {
        // Subscribe first, then look: no event falls between the look and the follow. Within
        // the limit: a server that takes the connection and answers nothing (stopped with
        // SIGSTOP) does not make a 5 s wait one of 15.
        let look = async {
            let mut ws = client.ws().await?;
            ws.request(Op::Subscribe {
                session: session.to_string(),
                from: None,
                history: false,
                rows: None,
                after: None,
            })
            .await?;
            let view = client.session(session).await?;
            Ok::<_, corral_client::ClientError>((ws, view))
        };
        // (At least LOOK_AT_LEAST: `--timeout 0` still looks once.)
        let bound = deadline.map(|d| d.max(tokio::time::Instant::now() + LOOK_AT_LEAST));
        let (mut ws, view) = match tokio::time::timeout_at(bound.unwrap_or(far), look).await {
            Ok(looked) => looked?,
            Err(_) => {
                return timed_out(
                    ": the server did not answer in time (is it stopped, or overloaded?)",
                );
            }
        };
        if let Some(code) = check(&view, until) {
            return Ok(code);
        }
        if until == "needs_permission" && view.info.attention.is_none() && !said_no_agent {
            said_no_agent = true;
            eprintln!("corral: waiting for {session} to ask a permission{NO_AGENT}");
        }
        let mut quiet = by_quiet(&view, until);
        let mut since = tokio::time::Instant::now();
        let reason = loop {
            let incoming = tokio::select! {
                i = ws.next() => i,
                _ = tokio::time::sleep_until(since + QUIET), if quiet => {
                    return Ok(ExitCode::SUCCESS);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    // What keeps it, if the server says so at once (not another wait).
                    let why = tokio::time::timeout(BLOCKED_LOOK, blocked(&client, session, until));
                    return timed_out(&why.await.unwrap_or_default());
                }
            };
            match incoming {
                Incoming::Bin(..) => since = tokio::time::Instant::now(),
                // Its process ended: said by the event itself (a server stopping its sessions
                // at a shutdown takes no more requests by then).
                Incoming::Json(v)
                    if v["type"] == "event" && v["event"]["kind"]["kind"] == "exited" =>
                {
                    let status = serde_json::from_value::<corral_actors::process::ExitStatus>(
                        v["event"]["kind"]["status"].clone(),
                    );
                    if until == "exit" {
                        match status {
                            Ok(status) => println!("{status}"),
                            Err(_) => println!("exited"),
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    // A process ended: the session too, unless another process takes over (a
                    // restart asked for, whose last process's exit can come after the restart
                    // answered; a policy's): the session now says which.
                    match client.session(session).await {
                        Ok(now) => {
                            if let Some(code) = check(&now, until) {
                                return Ok(code);
                            }
                            quiet = by_quiet(&now, until);
                        }
                        Err(e) if e.is_unreachable() => {
                            eprintln!("corral: {} ended before it was {until}", view.info.name);
                            return Ok(ExitCode::from(3));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Incoming::Json(v) if v["type"] == "event" || v["type"] == "closed" => {
                    match client.session(session).await {
                        Ok(view) => {
                            if let Some(code) = check(&view, until) {
                                return Ok(code);
                            }
                            quiet = by_quiet(&view, until);
                        }
                        // A server stopping its sessions at a shutdown takes no requests any
                        // more, but still sends what they do (the events already on their
                        // way say how they end); a gone server closes the connection.
                        Err(e) if e.is_unreachable() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Incoming::Closed(reason) => break reason,
                i @ (Incoming::Silent | Incoming::Answering) => crate::follow::say_silence(&i),
                _ => {}
            }
        };
        let reconnected = crate::follow::reconnect(&client, &reason);
        client = match tokio::time::timeout_at(deadline.unwrap_or(far), reconnected).await {
            Ok(c) => c?,
            Err(_) => return timed_out(&format!(": no server answered since ({reason})")),
        };
    }
}
