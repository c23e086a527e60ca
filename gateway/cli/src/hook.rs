//! Hook: `corral hook`, run by Claude Code for every hook event of a session. It reads the
//! event JSON on stdin and posts it to the session's server (over the data dir's socket when
//! it knows the data dir, else to `CORRAL_URL`) with the session's hook token,
//! bounded in time, and always exits 0: a hook must never block or fail the agent. An event
//! that finds no server (it is down: crashed, or stopped keeping its sessions) waits in the
//! data dir's hook spool for the next one (`corral_server::spool`).

use std::time::Duration;

use corral_client::{Client, ClientError};
use corral_server::spool;

/// The whole hook call may take this long (but a PermissionRequest, see below).
const TIMEOUT: Duration = Duration::from_secs(2);

/// `corral hook`: best effort, bounded in time, silent on the agent's terminal.
pub fn hook() {
    use std::io::Read;
    // When the agent ran the hook (a previous process's late SessionEnd is told by it).
    let ran_at = std::time::SystemTime::now();
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().take(1 << 20).read_to_end(&mut body) {
        eprintln!("corral hook: cannot read stdin: {e}");
        return;
    }
    let (Ok(session), Ok(token)) = (
        std::env::var("CORRAL_SESSION_ID"),
        std::env::var("CORRAL_HOOK_TOKEN"),
    ) else {
        eprintln!(
            "corral hook: not inside a corral session (CORRAL_SESSION_ID or CORRAL_HOOK_TOKEN missing)"
        );
        return;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral hook: cannot start a runtime: {e}");
            return;
        }
    };
    // A PermissionRequest waits for an answer from the API (bounded by the server); its
    // decision, if any, is the hook's output, which Claude Code reads on stdout.
    let asks_permission = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v["hook_event_name"] == "PermissionRequest");
    // Larger than the server takes (a prompt of 500 KB): its long strings are cut so the event
    // (its name is what moves the agent's state) still arrives; it was refused and lost. Not a
    // permission question, whose input is what the user approves: that one goes to the
    // agent's own dialog whole.
    let body = if body.len() > MAX_EVENT && !asks_permission {
        shrink(body)
    } else {
        body
    };
    let timeout = if asks_permission {
        corral_actors::agent::PERMISSION_WAIT_MAX + Duration::from_secs(5)
    } else {
        TIMEOUT
    };
    // Whether the last try found no server at all (then the event is spooled).
    let mut absent = false;
    let post = async {
        tokio::time::timeout(timeout, async {
            // A server that is not there this instant (restarting after a crash: the data
            // dir's socket is refused, or `server.json` is not written yet) is tried again
            // within the same time limit: a lost hook leaves an agent shown `working` for
            // good, or its question never shown.
            loop {
                // Reset first: a try cut off by the time limit may have reached a server.
                absent = false;
                let tried = match client(&token) {
                    Ok(client) => client.post_hook(&session, body.clone(), ran_at).await,
                    Err(e) => Err(e),
                };
                absent = is_absent(&tried);
                match tried {
                    Err(ClientError::Connect { .. } | ClientError::NoServer(_)) => {
                        tokio::time::sleep(RETRY).await;
                    }
                    // Cut off by a server on its way out: sent again (an event twice is
                    // better than none), but not a permission question, which would be
                    // asked twice.
                    Err(ClientError::Http(_)) if !asks_permission => {
                        tokio::time::sleep(RETRY).await;
                    }
                    other => return other,
                }
            }
        })
        .await
    };
    let posted = rt.block_on(post);
    let spool = |why: &dyn std::fmt::Display| {
        if asks_permission {
            // No one would be there to answer it: Claude asks in its own dialog.
            eprintln!("corral hook: {why}; this permission question goes to the agent's dialog");
        } else {
            rt.block_on(keep_for_later(&session, &token, body.clone(), ran_at, why));
        }
    };
    match posted {
        Ok(Ok(accepted)) => {
            if let Some(output) = accepted.output {
                println!("{output}");
            }
        }
        Ok(Err(e)) => eprintln!("corral hook: {e}; this event is lost"),
        Err(_) if absent => spool(&format_args!("no server answered within {timeout:?}")),
        Err(_) => eprintln!(
            "corral hook: the server did not answer within {timeout:?}; this event is lost"
        ),
    }
}

/// Whether a try found no server at all (as opposed to one that answered, or failed).
fn is_absent<T>(tried: &Result<T, ClientError>) -> bool {
    matches!(
        tried,
        Err(ClientError::Connect { .. } | ClientError::NoServer(_))
    )
}

/// Writes an event that found no server into the data dir's hook spool, where the next server
/// finds it; then, if a server has come up meanwhile (it may have replayed the spool just before
/// the write), takes the event back and posts it to that server itself.
async fn keep_for_later(
    session: &str,
    token: &str,
    body: Vec<u8>,
    ran_at: std::time::SystemTime,
    why: &dyn std::fmt::Display,
) {
    let Some(data) = std::env::var_os("CORRAL_DATA_DIR") else {
        eprintln!("corral hook: {why}; this event is lost (no data dir to keep it in)");
        return;
    };
    let data = std::path::PathBuf::from(data);
    let record = match (session.parse(), serde_json::from_slice(&body)) {
        (Ok(session), Ok(payload)) => spool::Spooled {
            session,
            token: token.to_string(),
            at: ran_at,
            payload,
        },
        _ => {
            eprintln!("corral hook: {why}; this event is lost (not a session's JSON event)");
            return;
        }
    };
    let path = match spool::write(&data, &record) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("corral hook: {why}; this event is lost ({e})");
            return;
        }
    };
    let Ok(client) = client(token) else {
        return; // Still no server: the next one replays the spool.
    };
    match spool::take_back(&path) {
        Ok(true) => {}
        Ok(false) => return, // A server has it.
        Err(e) => {
            eprintln!(
                "corral hook: cannot take a spooled event back ({e}); a server will replay it"
            );
            return;
        }
    }
    let posted = tokio::time::timeout(TIMEOUT, client.post_hook(session, body, ran_at)).await;
    match posted {
        Ok(Ok(_)) => {}
        Ok(tried @ Err(_)) if is_absent(&tried) => {
            if let Err(e) = spool::write(&data, &record) {
                eprintln!("corral hook: {why}; this event is lost ({e})");
            }
        }
        Ok(Err(e)) => eprintln!("corral hook: {e}; this event is lost"),
        Err(_) => eprintln!(
            "corral hook: the server did not answer within {TIMEOUT:?}; this event is lost"
        ),
    }
}

/// How soon a server that could not be reached is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// The client for the session's server: the data dir's socket reaches whichever server runs
/// now (the one that spawned the agent may have been restarted on another port, or
/// upgraded); the URL is the fallback.
fn client(token: &str) -> Result<Client, ClientError> {
    if let Some(dir) = std::env::var_os("CORRAL_DATA_DIR") {
        match Client::find(None, Some(token.to_string()), dir.as_ref()) {
            Ok(c) => return Ok(c),
            Err(e) if std::env::var_os("CORRAL_URL").is_none() => return Err(e),
            Err(_) => {}
        }
    }
    match std::env::var("CORRAL_URL") {
        Ok(url) => Client::tcp(&url, token.to_string()),
        Err(_) => Err(ClientError::Request(
            "no server to reach (neither CORRAL_DATA_DIR's socket nor CORRAL_URL)".into(),
        )),
    }
}

/// The largest event posted whole (the server's request bound, less room for the envelope).
const MAX_EVENT: usize = corral_server::access::MAX_BODY - 4096;

/// An event's JSON with its longest strings cut (each to half, longest first, marked) until it
/// fits [`MAX_EVENT`]; what is not JSON is left as it is (the server says why it refuses it).
fn shrink(body: Vec<u8>) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    fn longest(v: &mut serde_json::Value) -> Option<&mut String> {
        match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Array(a) => a.iter_mut().filter_map(longest).max_by_key(|s| s.len()),
            serde_json::Value::Object(o) => {
                o.values_mut().filter_map(longest).max_by_key(|s| s.len())
            }
            _ => None,
        }
    }
    let mut size = body.len();
    while size > MAX_EVENT {
        let Some(s) = longest(&mut v) else { break };
        if s.len() < 1024 {
            break;
        }
        let cut = s.floor_char_boundary(s.len() / 2);
        let gone = s.len() - cut;
        s.truncate(cut);
        s.push_str(&format!("…[{gone} bytes cut by corral hook]"));
        size = serde_json::to_vec(&v).map_or(0, |b| b.len());
    }
    serde_json::to_vec(&v).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_large_event_is_cut_to_fit_and_keeps_its_name() {
        let prompt = "x".repeat(600 * 1024);
        let body = serde_json::json!({"hook_event_name": "UserPromptSubmit", "prompt": prompt});
        let out = super::shrink(serde_json::to_vec(&body).unwrap());
        assert!(out.len() <= super::MAX_EVENT, "{}", out.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["hook_event_name"], "UserPromptSubmit");
        assert!(
            v["prompt"]
                .as_str()
                .unwrap()
                .contains("bytes cut by corral hook")
        );
    }
}
