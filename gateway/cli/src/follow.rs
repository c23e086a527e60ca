//! Follow: `corral logs` and `corral events`, with `-f` surviving the server. A restart, a crash
//! or `corral upgrade` closes the connection; a follower then reconnects (the data dir says
//! where the server is now) and resumes exactly where it was — output from the next byte
//! offset, events after the last sequence number printed — as `corral attach` and the web page
//! do. It gives up after [`RECONNECT_FOR`] without a server, so a script is not left hanging.

use std::time::{Duration, Instant};

use anyhow::bail;
use corral_client::{Client, Incoming};
use corral_server::protocol::{Op, Reply};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::output::fmt_time;

/// How long a follower waits for a server to answer again.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Whether an event says the session is over.
fn is_final(event: &Value) -> bool {
    event["kind"]["kind"] == "state"
        && matches!(event["kind"]["state"].as_str(), Some("stopped" | "failed"))
}

/// An event's kind in a few words.
fn describe(kind: &Value) -> String {
    match kind["kind"].as_str() {
        Some("state") => format!(
            "{} {}",
            kind["state"].as_str().unwrap_or(""),
            kind["reason"].as_str().unwrap_or("")
        ),
        Some("spawned") => format!("pid {}", kind["pid"]),
        Some("resized") => format!("{}x{}", kind["cols"], kind["rows"]),
        // As `ps` and `wait` say it: `exit 3`, `signal 9 (SIGKILL)`.
        Some("exited") => {
            serde_json::from_value::<corral_actors::process::ExitStatus>(kind["status"].clone())
                .map_or_else(|_| kind["status"].to_string(), |s| s.to_string())
        }
        Some("hook") => kind["name"].as_str().unwrap_or("").to_string(),
        // A pipe session's JSON line: the line, not its envelope.
        Some("json") => kind["value"].to_string(),
        // An agent's event: its type, then what it says (`permission_cancelled
        // request_id=c6439fabe8b4`), not its JSON.
        Some("agent") => fields(kind, &["kind", "type"], kind["type"].as_str().unwrap_or("")),
        // The delay as a person reads it (it was `restarting delay=1.477933162 restarts=4`).
        Some("restarting") => format!(
            "in {:.1} s (restart {})",
            kind["delay"].as_f64().unwrap_or(0.0),
            kind["restarts"]
        ),
        // Its fields: the kind is printed before this already (`recovery recovery …` was).
        Some(_) => fields(kind, &["kind"], "").trim_start().to_string(),
        None => kind.to_string(),
    }
}

/// ` ran=TIME` for a hook recorded a second or more after it ran (one that retried, or was
/// spooled while no server was there); else nothing.
fn ran_late(event: &Value) -> String {
    let (Some(ran), Some(time)) = (
        corral_actors::time::from_json(&event["kind"]["ran_at"]),
        corral_actors::time::from_json(&event["time"]),
    ) else {
        return String::new();
    };
    match time.duration_since(ran) {
        Ok(late) if late >= Duration::from_secs(1) => {
            format!(" ran={}", fmt_time(&event["kind"]["ran_at"]))
        }
        _ => String::new(),
    }
}

/// `head`, then `key=value` for each field of `kind` but `skip`: a text as it is (cut at 100
/// characters, control characters escaped), anything else as JSON.
fn fields(kind: &Value, skip: &[&str], head: &str) -> String {
    const MAX: usize = 100;
    let mut out = head.to_string();
    for (key, value) in kind.as_object().into_iter().flatten() {
        if skip.contains(&key.as_str()) || value.is_null() {
            continue;
        }
        let text = match value.as_str() {
            Some(t) => t.escape_debug().to_string(),
            None => value.to_string(),
        };
        let mut cut: String = text.chars().take(MAX).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        out.push_str(&format!(" {key}={cut}"));
    }
    out
}

/// After a lost connection: waits until a server answers again (asking the data dir each time
/// where it is), for [`RECONNECT_FOR`] at the most.
pub(crate) async fn reconnect(client: &Client, reason: &str) -> anyhow::Result<Client> {
    // Closed for its token: another connection with it would be refused (it said
    // "reconnecting", then "invalid token").
    use corral_server::connections::{LOGGED_OUT, TOKEN_REVOKED};
    if [TOKEN_REVOKED, LOGGED_OUT].contains(&reason) {
        bail!("connection closed: {reason}");
    }
    eprintln!("corral: connection lost ({reason}); reconnecting");
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let current = client.rediscover();
        if current.health().await.is_ok() {
            // Said, as `attach` says it: a follower that only said "reconnecting" looked stuck.
            eprintln!("corral: reconnected; going on from where it was");
            return Ok(current);
        }
        if started.elapsed() > RECONNECT_FOR {
            bail!("no server answered within {RECONNECT_FOR:?} (connection lost: {reason})");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Where the last `lines` lines of a session's output before `head` start (`corral logs
/// --tail`): read back from the end in growing windows (64 KiB, then four times larger each
/// time, at most [`MAX_TAIL_WINDOW`]) until they hold that many lines or the retained start.
pub async fn tail_start(
    client: &Client,
    session: &str,
    lines: u64,
    head: u64,
) -> anyhow::Result<u64> {
    if lines == 0 {
        return Ok(head);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let from = head.saturating_sub(window);
        let (start, bytes) = read_range(client, session, from, head).await?;
        if let Some(at) = last_lines(&bytes, lines) {
            return Ok(start + at as u64);
        }
        if start > from || from == 0 || window >= MAX_TAIL_WINDOW {
            // All that is retained (or as far back as a tail reads): print it all.
            return Ok(start);
        }
        window = (window * 4).min(MAX_TAIL_WINDOW);
    }
}

/// The furthest back `corral logs --tail` reads to find its lines.
const MAX_TAIL_WINDOW: u64 = 64 << 20;

/// The index in `bytes` where its last `n` lines start (a last line without its newline
/// counts, as in tail(1)); None if it holds fewer than `n` line ends before them.
fn last_lines(bytes: &[u8], n: u64) -> Option<usize> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Says on stderr that the server stopped answering ([`Incoming::Silent`]: stopped with
/// SIGSTOP, wedged), or answers again; a follower said nothing and seemed to hang.
pub fn say_silence(i: &Incoming) {
    match i {
        Incoming::Silent => eprintln!(
            "corral: the server has not answered for {} s (is it stopped, or overloaded?); still waiting",
            (corral_client::ws::PING_AFTER_QUIET + corral_client::ws::SILENT_AFTER_PING).as_secs()
        ),
        Incoming::Answering => eprintln!("corral: the server answers again"),
        _ => {}
    }
}

/// A session's retained output in `[from, to)`: where it starts (later than `from` when the
/// start is no longer retained) and the bytes.
async fn read_range(
    client: &Client,
    session: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<(u64, Vec<u8>)> {
    let (mut ws, channel) = subscribe(client, session, from).await?;
    let (mut start, mut out) = (from, Vec::new());
    while start + (out.len() as u64) < to {
        match ws.next().await {
            Incoming::Bin(1, ch, offset, bytes) if ch == channel => {
                if out.is_empty() {
                    start = offset;
                }
                let room = to.saturating_sub(offset) as usize;
                out.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Incoming::Json(v) if v["type"] == "lagged" && out.is_empty() => {
                start = v["to"].as_u64().unwrap_or(start);
            }
            Incoming::Json(v) if v["type"] == "closed" => break,
            Incoming::Closed(r) => bail!("connection closed: {r}"),
            _ => {}
        }
    }
    Ok((start, out))
}

/// A connection subscribed to `session`'s output from `from`, and the subscription's channel.
async fn subscribe(
    client: &Client,
    session: &str,
    from: u64,
) -> anyhow::Result<(corral_client::Conn, u32)> {
    let mut ws = client.ws().await?;
    let Reply::Subscribed { channel, .. } = ws
        .request(Op::Subscribe {
            session: session.to_string(),
            from: Some(from),
            history: false,
            rows: None,
            after: None,
        })
        .await?
    else {
        bail!("the server did not answer the subscription");
    };
    Ok((ws, channel))
}

/// `corral logs SESSION [-f] [--from OFFSET]`.
pub async fn logs(
    client: &Client,
    session: &str,
    follow: bool,
    from: u64,
    until: Option<u64>,
) -> anyhow::Result<()> {
    let mut client = client.clone();
    // Written through tokio's blocking pool: a slow reader of the pipe holds this loop, not the
    // runtime's thread (the server then skips this follower, which reads the rest from the log).
    let mut stdout = tokio::io::stdout();
    let mut next = from;
    // Without -f, the output as of the request: `until` when the caller fixed it (a `--tail`
    // counted back from there), else the end when first asked.
    let mut until = until.filter(|_| !follow);
    loop {
        // Where the output ends if nothing more will come: now without -f, and with -f for a
        // session that has ended (no final event will come to end the following: it did).
        let view = client.session(session).await?;
        let ended = matches!(
            view.info.state,
            corral_actors::SessionState::Stopped | corral_actors::SessionState::Failed
        );
        if next == from && from > view.info.output_offset {
            // Asked for (not a server that lost its last output in a crash, met on a
            // reconnect): said as the WebSocket says it (it printed nothing and succeeded).
            anyhow::bail!(
                "offset {next} is beyond the session's output (it ends at {})",
                view.info.output_offset
            );
        }
        let end = if follow {
            ended.then_some(view.info.output_offset)
        } else {
            Some(*until.get_or_insert(view.info.output_offset))
        };
        if end.is_some_and(|end| next >= end) {
            return Ok(stdout.flush().await?);
        }
        let (mut ws, channel) = subscribe(&client, session, next).await?;
        // Nothing was delivered on this subscription yet: a lag now is the log's own start
        // (retention deleted it), not a follower that fell behind.
        let mut fresh = true;
        let lost = loop {
            match ws.next().await {
                Incoming::Bin(1, ch, offset, bytes) if ch == channel => {
                    fresh = false;
                    // Nothing past the end (a busy session's next chunk runs on).
                    let keep = end.map_or(bytes.len(), |end| {
                        usize::try_from(end.saturating_sub(offset))
                            .unwrap_or(usize::MAX)
                            .min(bytes.len())
                    });
                    stdout.write_all(&bytes[..keep]).await?;
                    next = offset + keep as u64;
                    if end.is_some_and(|end| next >= end) {
                        return Ok(stdout.flush().await?);
                    }
                }
                Incoming::Json(v) if v["type"] == "lagged" && fresh => {
                    stdout.flush().await?;
                    eprintln!(
                        "corral: bytes {}..{} are no longer retained",
                        v["from"], v["to"]
                    );
                    next = v["to"].as_u64().unwrap_or(next);
                }
                // Fell behind the live output (a slow reader: the server skips a viewer that
                // does not keep up): what it skipped is in the log, read from the next byte.
                Incoming::Json(v) if v["type"] == "lagged" => break None,
                Incoming::Json(v) if v["type"] == "event" && is_final(&v["event"]) => {
                    return Ok(stdout.flush().await?);
                }
                Incoming::Json(v) if v["type"] == "closed" => return Ok(stdout.flush().await?),
                Incoming::Closed(r) => break Some(r),
                i @ (Incoming::Silent | Incoming::Answering) => {
                    stdout.flush().await?;
                    say_silence(&i);
                }
                _ => {}
            }
        };
        stdout.flush().await?;
        if let Some(reason) = lost {
            client = reconnect(&client, &reason).await?;
        }
    }
}

/// `corral events SESSION [-f] [--json]`.
pub async fn events(
    client: &Client,
    session: &str,
    follow: bool,
    json: bool,
    after: u64,
) -> anyhow::Result<()> {
    let print = |e: &Value| {
        if json {
            println!("{e}");
        } else {
            println!(
                "{:>5} {} {} {}",
                e["seq"],
                fmt_time(&e["time"]),
                e["kind"]["kind"].as_str().unwrap_or("?"),
                describe(&e["kind"]) + &ran_late(e)
            );
        }
    };
    let mut client = client.clone();
    let mut last = after;
    loop {
        let mut ws = client.ws().await?;
        // Subscribe first (when following), so no event falls between history and live.
        if follow {
            ws.request(Op::Subscribe {
                session: session.to_string(),
                from: None,
                history: false,
                rows: None,
                after: None,
            })
            .await?;
        }
        // Over before its history is read: that history is all there is (a session stopped
        // by a server's shutdown ends with that server's `recovery` note, not its final state).
        let over = follow
            && matches!(
                client.session(session).await?.info.state,
                corral_actors::SessionState::Stopped | corral_actors::SessionState::Failed
            );
        // History from the journal (after a reconnect: what came while away), page by page.
        loop {
            let r = ws
                .call(serde_json::to_value(Op::Events {
                    session: session.to_string(),
                    after: Some(last),
                    limit: None,
                })?)
                .await?;
            let page = r["events"].as_array().cloned().unwrap_or_default();
            for e in &page {
                print(e);
                last = e["seq"].as_u64().unwrap_or(last);
            }
            if page.len() < 1000 {
                break;
            }
        }
        if !follow || over {
            return Ok(());
        }
        let lost = loop {
            match ws.next().await {
                Incoming::Json(v) if v["type"] == "event" => {
                    let e = &v["event"];
                    if e["seq"].as_u64().is_some_and(|s| s <= last) {
                        continue;
                    }
                    print(e);
                    last = e["seq"].as_u64().unwrap_or(last);
                    if is_final(e) {
                        return Ok(());
                    }
                }
                // Events came faster than this follower read them: the ones it missed are in
                // the journal, read again after the last one printed.
                Incoming::Json(v) if v["type"] == "events_lagged" => break None,
                Incoming::Json(v) if v["type"] == "closed" => return Ok(()),
                Incoming::Closed(r) => break Some(r),
                i @ (Incoming::Silent | Incoming::Answering) => say_silence(&i),
                _ => {}
            }
        };
        if let Some(reason) = lost {
            client = reconnect(&client, &reason).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn an_agent_s_event_reads_as_words_not_json() {
        let said = |v: serde_json::Value| super::describe(&v);
        assert_eq!(
            said(
                serde_json::json!({"kind": "agent", "type": "permission_cancelled", "request_id": "c64"})
            ),
            "permission_cancelled request_id=c64"
        );
        assert_eq!(
            said(serde_json::json!({"kind": "agent", "type": "interrupted"})),
            "interrupted"
        );
        let long = said(
            serde_json::json!({"kind": "agent", "type": "message", "role": "agent", "text": "a\n".repeat(100)}),
        );
        assert!(
            long.starts_with("message role=agent text=a\\na\\n"),
            "{long}"
        );
        assert!(long.ends_with('…') && long.chars().count() < 140, "{long}");
        assert_eq!(
            said(serde_json::json!({"kind": "recovery", "what": "held", "from": 3})),
            "from=3 what=held"
        );
        assert_eq!(
            said(serde_json::json!({"kind": "restarting", "delay": 1.477933162, "restarts": 4})),
            "in 1.5 s (restart 4)"
        );
    }

    #[test]
    fn a_hook_recorded_late_says_when_it_ran() {
        let hook = |time: &str, ran: &str| {
            super::ran_late(&serde_json::json!({
                "time": time,
                "kind": {"kind": "hook", "name": "Stop", "payload": {}, "ran_at": ran}
            }))
        };
        assert_eq!(
            hook("2026-12-06T10:05:00.000Z", "2026-12-06T09:40:12.250Z"),
            " ran=09:40:12.250"
        );
        assert_eq!(
            hook("2026-12-06T10:05:00.000Z", "2026-12-06T10:04:59.900Z"),
            ""
        );
        assert_eq!(
            super::ran_late(&serde_json::json!({
                "time": "2026-12-06T10:05:00.000Z",
                "kind": {"kind": "hook", "name": "Stop", "payload": {}}
            })),
            ""
        );
    }

    #[test]
    fn the_last_lines_start_after_the_newline_before_them() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), Some(2));
        assert_eq!(last_lines(b"a\nb\nc\n", 3), None);
        assert_eq!(
            last_lines(b"a\r\nb\r\n$ ", 1),
            Some(6),
            "a prompt is a line"
        );
        assert_eq!(last_lines(b"a\r\nb\r\n$ ", 2), Some(3));
        assert_eq!(last_lines(b"", 1), None);
    }
}
