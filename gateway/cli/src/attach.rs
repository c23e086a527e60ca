//! `corral attach`: this terminal becomes a viewer of a session. Raw mode (restored on every
//! exit path, panics included), the current screen first, then live output; SIGWINCH resizes;
//! the detach key (Ctrl-\ by default) leaves the session running; a dropped connection is
//! retried with exact resume from the last offset while typed input waits in a bounded queue
//! (at its bound the terminal is no longer read, so the typist waits: nothing typed is dropped).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use corral_client::{Client, Conn, Incoming};

/// The detach key unless one is asked for: Ctrl-\ (as a letter of [`control_byte`]).
pub const DETACH_KEY: char = '\\';

/// Input typed while disconnected that is kept for after the resume; past it the terminal is
/// not read until the server is back (the queue holds at most one more read).
const PENDING_MAX: usize = 1024 * 1024;

/// The lines of a session on pipes shown when attaching (it has no screen to show).
const PIPE_LINES: u64 = 200;

/// Most input bytes in one frame: what one read of the terminal gives, far below any frame
/// limit a server can be configured with.
const INPUT_CHUNK: usize = 4096;

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        crossterm::terminal::enable_raw_mode().context("this command needs a terminal")?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Err(e) = crossterm::terminal::disable_raw_mode() {
                eprintln!("corral: could not restore the terminal: {e}");
            }
            previous(info);
        }));
        Ok(RawMode)
    }
}

/// Puts back the terminal modes a session's program may have set, as tmux does when a client
/// detaches: the primary screen, no mouse or focus reporting, no bracketed paste, normal cursor
/// and keypad keys, a visible cursor, autowrap, plain attributes — what a new process of a
/// session starts from. Without it, leaving a `vim` left this terminal in vim's alternate
/// screen, sending mouse reports as input.
/// `?47l` leaves the alternate screen if the terminal is on it and does nothing otherwise
/// (`?1049l` there would move the cursor: this client does not know which screen it is on).
const RESTORE_MODES: [&str; 2] = ["\x1b[?47l", corral_actors::terminal::NEW_PROCESS_MODES];

fn restore_modes() {
    let mut out = std::io::stdout().lock();
    // Best effort: the terminal is ours; a failure here is a closed terminal.
    if out.write_all(RESTORE_MODES.concat().as_bytes()).is_err() || out.flush().is_err() {}
}

/// The last line of an attach: the terminal's modes put back first (so the line shows on the
/// primary screen), then the line, below what the session's screen drew (`View::below`).
fn final_line(text: &str, shown: Option<&crate::view::View>) {
    restore_modes();
    if let Some(view) = shown {
        let mut out = std::io::stdout().lock();
        // Best effort, as `restore_modes`.
        if out.write_all(view.below().as_bytes()).is_err() || out.flush().is_err() {}
    }
    status_line(text);
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_modes();
        if let Err(e) = crossterm::terminal::disable_raw_mode() {
            eprintln!("corral: could not restore the terminal: {e}");
        }
    }
}

/// The control byte of a detach key: '\\' → 0x1c (Ctrl-\), a letter → its control code.
/// Refused: what has no control code (`1` became Ctrl-Q), and the keys a terminal sends by
/// themselves — `[` (ESC: every arrow key detached), `m` (Enter), `i` (Tab), `h` (Backspace
/// on some terminals).
fn control_byte(key: char) -> anyhow::Result<u8> {
    let key = key.to_ascii_uppercase();
    match key {
        '[' | 'M' | 'I' | 'H' => anyhow::bail!(
            "--detach-key {key} would be Ctrl-{key}, which the terminal sends for another key \
             (Escape and arrows, Enter, Tab, Backspace): choose another"
        ),
        '@' | 'A'..='Z' | '\\' | ']' | '^' | '_' => Ok((key as u8) & 0x1f),
        _ => anyhow::bail!(
            "--detach-key takes a letter or one of @ \\ ] ^ _ (Ctrl and that key), not {key:?}"
        ),
    }
}

fn status_line(text: &str) {
    let mut err = std::io::stderr().lock();
    // Best effort: the terminal is ours and in raw mode; \r\n keeps the line readable.
    if err
        .write_all(format!("\r\n\x1b[7m[corral: {text}]\x1b[0m\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    if err.flush().is_err() {}
}

/// Why the connection was lost, in a user's words: a server that went away without closing
/// it (killed, crashed) reads as such, not as the WebSocket library's error.
fn lost_because(reason: &str) -> String {
    if reason.contains("without closing handshake")
        || reason.contains("Connection reset")
        || reason.contains("eof")
    {
        "the server went away".to_string()
    } else {
        format!("the connection was lost ({reason})")
    }
}

/// How long a passing notice (`reconnected`) stays over the screen.
const NOTICE_FOR: Duration = Duration::from_secs(2);

/// Says `text` on the bottom row without moving the program's screen: the cursor saved and
/// restored, the row overwritten until the program redraws it (a status line's line feeds
/// scrolled the screen it warned about, and moved the cursor).
fn notice(text: &str) {
    let (cols, rows) = terminal_size();
    let text: String = format!("[corral: {text}]")
        .chars()
        .take(usize::from(cols.max(1)))
        .collect();
    let mut err = std::io::stderr().lock();
    // Best effort, as `status_line`.
    if err
        .write_all(format!("\x1b7\x1b[{rows};1H\x1b[2K\x1b[7m{text}\x1b[0m\x1b8").as_bytes())
        .is_err()
    {
        return;
    }
    if err.flush().is_err() {}
}

async fn connect(
    client: &Client,
    session: &str,
    from: Option<u64>,
    after: Option<u64>,
) -> anyhow::Result<Subscribed> {
    let mut ws = client.ws().await?;
    let mut req = json!({"type": "subscribe", "session": session});
    if let Some(f) = from {
        req["from"] = json!(f);
    }
    if let Some(a) = after {
        req["after"] = json!(a);
    }
    let r = ws.call(req).await?;
    let dim = |k: &str| r["size"][k].as_u64().and_then(|n| u16::try_from(n).ok());
    Ok(Subscribed {
        ws,
        channel: r["channel"].as_u64().unwrap_or(0) as u32,
        approximate: r["approximate"] == true,
        size: dim("rows").zip(dim("cols")),
        last_event: r["last_event"].as_u64(),
    })
}

/// A subscription: the connection, its channel, whether the screen it starts with is
/// approximate (output was lost before the server's screen could draw it), and the size its
/// first bytes are at (rows, columns; a server before `size` was said sends none), and the
/// session's last event before the live ones (none from a server before `after`, which
/// replays no missed event).
struct Subscribed {
    ws: Conn,
    channel: u32,
    approximate: bool,
    size: Option<(u16, u16)>,
    last_event: Option<u64>,
}

/// This terminal's columns and rows; 80×24 when it does not say, or says 0 in either (a pty
/// nobody sized: `script`, some CI runners, Python's `pty.fork`) — a 0×0 read as 1×1 shrank
/// the session to one cell for every other viewer, and `spawn -a` was refused.
pub fn terminal_size() -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => (cols, rows),
        _ => (80, 24),
    }
}

/// This terminal's rows and columns.
fn term_size() -> (u16, u16) {
    let (cols, rows) = terminal_size();
    (rows, cols)
}

/// Said under an approximate screen (the web page shows the same).
const APPROXIMATE: &str = "this screen may be incomplete: output was lost before the server drew it (exact after the program's next full redraw)";

/// Signals that end an attach from outside (`timeout`, `kill`, a closed terminal): the
/// terminal is put back first — their default action skipped that, and left it raw, on the
/// program's alternate screen, with mouse reporting on.
struct Endings {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Endings {
    fn new() -> anyhow::Result<Endings> {
        Ok(Endings {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next one: its name and the exit code it stands for (see [`Endings::said`]).
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.term.recv() => ("SIGTERM", 128 + 15),
            _ = self.hup.recv() => ("SIGHUP", 128 + 1),
            _ = self.int.recv() => ("SIGINT", 128 + 2),
            _ = self.quit.recv() => ("SIGQUIT", 128 + 3),
        }
    }

    /// Signal `name` said under the terminal put back; the exit code `code`.
    fn said((name, code): (&str, u8), shown: Option<&crate::view::View>) -> ExitCode {
        final_line(&format!("ended by {name}"), shown);
        ExitCode::from(code)
    }
}

async fn send_size(ws: &mut Conn, session: &str) -> anyhow::Result<()> {
    let (cols, rows) = terminal_size();
    ws.send(json!({"type": "resize", "session": session, "rows": rows, "cols": cols}))
        .await?;
    Ok(())
}

/// Runs attach until detach or the session ends.
/// Says how the session ended and gives the exit status a shell gives a command: its exit
/// code, 128 + the signal that ended it, 1 for a session that failed, 0 for a stop asked for
/// (`corral stop`, a shutdown: it ended as planned).
fn ended_with(
    state: &str,
    reason: Option<&str>,
    last: Option<corral_actors::process::status::ExitStatus>,
    shown: Option<&crate::view::View>,
) -> ExitCode {
    let asked = reason.is_some_and(|r| r.starts_with("stopped"));
    let code = match (state, last) {
        ("failed", _) => 1,
        _ if asked => 0,
        (_, last) => last.map_or(0, |e| e.shell_code()),
    };
    let how = last.map_or_else(String::new, |e| format!(" ({e})"));
    final_line(&format!("session {state}{how}"), shown);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

pub async fn attach(
    client: &Client,
    session: &str,
    read_only: bool,
    detach_key: char,
) -> anyhow::Result<ExitCode> {
    let detach = control_byte(detach_key)?;
    // Fail before touching the terminal if the session does not exist.
    let view = client.session(session).await?;
    // A program on pipes has no line discipline: this one's stands in (see `cooked`), and a
    // line goes as the program reads it — with its newline, or, to a structured agent, as a
    // prompt. It has no screen either: its last lines stand in for one (as `corral logs
    // --tail`).
    let prompts = view.info.mode == corral_actors::Mode::StreamJson;
    let lines = view.info.mode != corral_actors::Mode::Pty;
    let mut cooked = lines.then(crate::cooked::Cooked::default);
    let from = if !lines {
        None
    } else {
        Some(crate::follow::tail_start(client, session, PIPE_LINES, view.info.output_offset).await?)
    };
    let first = connect(client, session, from, None).await?;
    // The last event received (or the one before the subscription's live ones): a reconnection
    // that resumes the output at its next byte asks for the events after it, so a resize, a
    // restart or the end that came meanwhile is applied where it happened in the output.
    let mut seen = first.last_event.unwrap_or(0);
    let (mut ws, mut channel, mut approximate) = (first.ws, first.channel, first.approximate);
    // A terminal's own copy of the screen (not for lines: a program on pipes has none).
    // This terminal's size, read again only when it changes (SIGWINCH), not per output frame.
    let mut term = term_size();
    let mut shown = (!lines).then(|| crate::view::View::new(first.size.unwrap_or(term)));
    // Said on the bottom row over a screen, as a line of its own under lines.
    let say = |text: &str| {
        if lines {
            status_line(text)
        } else {
            notice(text)
        }
    };
    let mut endings = Endings::new()?;
    let _raw = RawMode::enable()?;
    // Said under its last screen (the snapshot starts with a reset that would clear it).
    let mut ended = matches!(
        view.info.state,
        corral_actors::SessionState::Stopped | corral_actors::SessionState::Failed
    )
    .then(|| {
        let exit = view
            .info
            .last_exit
            .map_or_else(String::new, |e| format!(" ({e})"));
        // What to do first: a notice is cut at the terminal's width.
        format!(
            "{} has ended{exit}: Ctrl-{} leaves, `corral restart {}` starts it again",
            view.info.name,
            detach_key.to_ascii_uppercase(),
            view.info.name,
        )
    });
    // Standard input is read on a dedicated thread (blocking reads never touch the runtime).
    // It is not joined: a read of the terminal cannot be interrupted, so it ends with the
    // process (or at the end of input, or when this loop is gone); a failed read is told to
    // the loop, which says it and ends.
    let (tx, mut keys) = mpsc::channel::<Result<Vec<u8>, String>>(64);
    std::thread::Builder::new()
        .name("corral-attach-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let read = match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e.to_string()),
                };
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    return;
                }
            }
        })?;
    let mut winch = signal(SignalKind::window_change())?;
    // A notice shown over the screen until then (a reconnection's).
    let mut notice_until: Option<tokio::time::Instant> = None;
    let mut next: Option<u64> = None;
    let mut said: Option<String> = None;
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut stdout = tokio::io::stdout();
    loop {
        // (Resized while disconnected: no SIGWINCH was heard then.)
        term = term_size();
        // A size or input that cannot be sent is left for the next connection: the read below
        // sees this one's close.
        if !read_only && send_size(&mut ws, session).await.is_ok() {
            // What was typed meanwhile, in order, in frames the server takes; a part that
            // could not be sent stays queued for the next connection (the read below sees the
            // close).
            while !pending.is_empty() {
                // A structured agent's lines go one prompt each.
                let n = if prompts {
                    pending
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(pending.len(), |i| i + 1)
                } else {
                    pending.len().min(INPUT_CHUNK)
                };
                let bytes: Vec<u8> = pending.range(..n).copied().collect();
                if send_typed(&mut ws, channel, session, prompts, &bytes)
                    .await
                    .is_err()
                {
                    break;
                }
                pending.drain(..n);
            }
        }
        let reason = loop {
            tokio::select! {
                incoming = ws.next() => { if let Incoming::Json(v) = &incoming
                    && v["type"] == "event"
                    && let Some(seq) = v["event"]["seq"].as_u64()
                {
                    seen = seen.max(seq);
                }
                match incoming {
                    Incoming::Bin(kind @ (1 | 2), ch, offset, bytes) if ch == channel => {
                        let out = match shown.as_mut() {
                            // The program's bytes, or a window when the sizes differ.
                            Some(view) => view.output(&bytes, term),
                            // Output of a program on pipes: its newlines return the carriage too
                            // (this terminal is raw; no line discipline adds the CR).
                            None => std::borrow::Cow::Owned(crlf(&bytes)),
                        };
                        show(&mut stdout, &out).await?;
                        // A screen snapshot (2) stands for the output up to its offset; its
                        // bytes are escape sequences, not output (counting them put the resume
                        // point past the end, and a reconnection redrew, saying output was lost).
                        next = Some(if kind == 2 { offset } else { offset + bytes.len() as u64 });
                        if let Some(text) = ended.take() {
                            say(&text);
                        }
                        if kind == 2 && std::mem::take(&mut approximate) {
                            notice(APPROXIMATE);
                        }
                    }
                    Incoming::Json(v) if v["type"] == "lagged" => {
                        say(&format!("{} bytes skipped: this terminal fell behind", v["to"].as_u64().unwrap_or(0) - v["from"].as_u64().unwrap_or(0)));
                        next = v["to"].as_u64();
                    }
                    Incoming::Json(v) if v["type"] == "event"
                        && v["event"]["kind"]["kind"] == "state"
                        && matches!(v["event"]["kind"]["state"].as_str(), Some("stopped" | "failed")) =>
                    {
                        let state = v["event"]["kind"]["state"].as_str().unwrap_or("ended");
                        let last = client.session(session).await.ok().and_then(|v| v.info.last_exit);
                        let reason = v["event"]["kind"]["reason"].as_str();
                        return Ok(ended_with(state, reason, last, shown.as_ref()));
                    }
                    // A new process of the session (a restart): the last one's modes (its
                    // alternate screen, mouse reporting, hidden cursor) are not the new one's.
                    Incoming::Json(v) if v["type"] == "event"
                        && v["event"]["kind"]["kind"] == "spawned" =>
                    {
                        restore_modes();
                    }
                    // The session's new size, where it took effect in the output.
                    Incoming::Json(v) if v["type"] == "event"
                        && v["event"]["kind"]["kind"] == "resized" =>
                    {
                        let dim = |k: &str| v["event"]["kind"][k].as_u64().and_then(|n| u16::try_from(n).ok());
                        if let (Some(view), Some(size)) = (shown.as_mut(), dim("rows").zip(dim("cols"))) {
                            show(&mut stdout, &view.resized(size, term)).await?;
                        }
                    }
                    Incoming::Json(v) if v["type"] == "closed" => {
                        final_line("session removed", shown.as_ref());
                        return Ok(ExitCode::SUCCESS);
                    }
                    Incoming::Json(v) if v["type"] == "error" => {
                        // Once per message in a row (a read-only token's refusals come one per
                        // batch of keys).
                        let message = v["message"].as_str().unwrap_or("error").to_string();
                        if said.as_deref() != Some(message.as_str()) {
                            say(&message);
                            said = Some(message);
                        }
                    }
                    // Taken back: no reconnection would be let in.
                    Incoming::Closed(r) if r == "token revoked" => {
                        final_line("this token was revoked: it may no longer watch the session", shown.as_ref());
                        return Ok(ExitCode::FAILURE);
                    }
                    Incoming::Closed(r) => break r,
                    // A server that took the connection and answers nothing (stopped, wedged):
                    // said, as a follower says it (the screen just froze).
                    Incoming::Silent => say("the server does not answer (is it stopped, or overloaded?); still waiting"),
                    Incoming::Answering => say("the server answers again"),
                    _ => {}
                }},
                keys_in = keys.recv() => {
                    let typed = match keys_read(keys_in, shown.as_ref()) {
                        Ok(typed) => typed,
                        Err(code) => return Ok(code),
                    };
                    let Some(bytes) = typed_input(cooked.as_mut(), typed, detach, &mut stdout).await? else { continue };
                    if let Some(i) = bytes.iter().position(|&b| b == detach) {
                        if !read_only && i > 0 && ws.send_binary(frame(channel, &bytes[..i])).await.is_err() {
                            final_line(&format!("{i} bytes typed before the detach key were not sent: the connection was lost"), shown.as_ref());
                        }
                        final_line("detached", shown.as_ref());
                        return Ok(ExitCode::SUCCESS);
                    }
                    if !read_only && send_typed(&mut ws, channel, session, prompts, &bytes).await.is_err() {
                        pending.extend(&bytes);
                        break "send failed".to_string();
                    }
                }
                () = corral_actors::time::sleep_until(notice_until) => {
                    notice_until = None;
                    if let Some(view) = shown.as_mut() {
                        show(&mut stdout, &view.erase_notice(term)).await?;
                    }
                }
                _ = winch.recv() => {
                    term = term_size();
                    if let Some(view) = shown.as_mut() {
                        show(&mut stdout, &view.terminal_resized(term)).await?;
                    }
                    // Sent again after a reconnection, like every size.
                    if !read_only && send_size(&mut ws, session).await.is_err() {
                        break "send failed".to_string();
                    }
                }
                ending = endings.next() => return Ok(Endings::said(ending, shown.as_ref())),
            }
        };
        // Reconnect and resume from the next offset; keep typing queued (bounded) meanwhile.
        // The terminal is read during the waits between attempts too (typing is queued, the
        // detach key is seen at once), and an attempt is not restarted by a key.
        // What matters first: a notice is cut at the terminal's width.
        say(&format!("reconnecting: {}", lost_because(&reason)));
        let mut delay = Duration::from_millis(200);
        let mut paused = false;
        let mut attempt = Box::pin(reconnect(client, session, next, seen, Duration::ZERO));
        loop {
            if !paused && pending.len() >= PENDING_MAX {
                // Push back instead of dropping: the terminal is not read until the server is
                // back (and the detach key with it), as when a connected server paces input.
                paused = true;
                say(&format!(
                    "input paused: {} KiB typed while disconnected wait for the server",
                    pending.len() / 1024
                ));
            }
            tokio::select! {
                r = &mut attempt => match r {
                    Ok(sub) => {
                        ws = sub.ws;
                        channel = sub.channel;
                        approximate = sub.approximate;
                        if next.is_none() {
                            seen = sub.last_event.unwrap_or(0);
                        }
                        match shown.as_mut() {
                            // At the size the session has now (a resize while the server was
                            // away was not heard) — unless the events missed come first, each
                            // at its offset (then only this terminal's own size is new); the
                            // notice goes in a moment, its row drawn again from this terminal's
                            // copy (a whole redraw put a copy of the screen into the terminal's
                            // scrollback at every reconnection).
                            Some(view) => {
                                term = term_size();
                                if next.is_some() && sub.last_event.is_some() {
                                    show(&mut stdout, &view.terminal_resized(term)).await?;
                                } else if let Some(size) = sub.size {
                                    show(&mut stdout, &view.resized(size, term)).await?;
                                }
                                notice("reconnected");
                                notice_until = Some(tokio::time::Instant::now() + NOTICE_FOR);
                            }
                            None => status_line("reconnected"),
                        }
                        // The session ended while the server was away (a shutdown stopped it):
                        // said, and attach ends, as when it ends while attached (it sat silent
                        // on a dead session).
                        if let Ok(v) = client.session(session).await
                            && matches!(
                                v.info.state,
                                corral_actors::SessionState::Stopped | corral_actors::SessionState::Failed
                            )
                        {
                            let state = if v.info.state == corral_actors::SessionState::Failed {
                                "failed"
                            } else {
                                "stopped"
                            };
                            return Ok(ended_with(state, v.info.reason.as_deref(), v.info.last_exit, shown.as_ref()));
                        }
                        break;
                    }
                    Err(e) if e.to_string().contains("no session") => {
                        final_line("session is gone", shown.as_ref());
                        return Ok(ExitCode::FAILURE);
                    }
                    Err(e) if refused(&e) => {
                        final_line(&format!("the server refuses this token: {e}"), shown.as_ref());
                        return Ok(ExitCode::FAILURE);
                    }
                    Err(e) if e.to_string().contains("beyond the session's output") => {
                        // A server that crashed had not yet written the last bytes we saw: they
                        // are not in its scrollback. Start over from the current screen.
                        say("the server lost its last output in a crash; redrawing");
                        next = None;
                        attempt = Box::pin(reconnect(client, session, next, seen, Duration::ZERO));
                    }
                    Err(_) => {
                        attempt = Box::pin(reconnect(client, session, next, seen, delay));
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                },
                keys_in = keys.recv(), if pending.len() < PENDING_MAX => {
                    let typed = match keys_read(keys_in, shown.as_ref()) {
                        Ok(typed) => typed,
                        Err(code) => return Ok(code),
                    };
                    let Some(bytes) = typed_input(cooked.as_mut(), typed, detach, &mut stdout).await? else { continue };
                    if bytes.contains(&detach) {
                        if pending.is_empty() {
                            final_line("detached", shown.as_ref());
                        } else {
                            final_line(&format!("detached: {} bytes typed while disconnected were not sent", pending.len()), shown.as_ref());
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    if !read_only {
                        pending.extend(&bytes);
                    }
                }
                ending = endings.next() => return Ok(Endings::said(ending, shown.as_ref())),
            }
        }
    }
}

/// One reconnection attempt after `wait`: a restarted server may listen elsewhere, so the data
/// dir is asked again each time. Resuming at an offset, the events after `seen` come first; a
/// fresh screen (no offset) is the session as it is now, so past events are not replayed over
/// it.
async fn reconnect(
    client: &Client,
    session: &str,
    from: Option<u64>,
    seen: u64,
    wait: Duration,
) -> anyhow::Result<Subscribed> {
    tokio::time::sleep(wait).await;
    let after = from.map(|_| seen);
    connect(&client.rediscover(), session, from, after).await
}

/// Writes `bytes` to this terminal and waits until it has taken them. The write runs on
/// tokio's blocking pool, so a terminal that stalls (Ctrl-S, a slow link) holds this loop, not
/// the runtime's thread; the server then lags this viewer with its explicit signal. Waiting
/// for each write keeps it in order with the notices written straight to standard error.
async fn show(stdout: &mut tokio::io::Stdout, bytes: &[u8]) -> std::io::Result<()> {
    stdout.write_all(bytes).await?;
    stdout.flush().await
}

/// `\n` as `\r\n` (see `lines` in [`attach`]).
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// What typed bytes send: as they are to a terminal; to a session on pipes, the lines the
/// line discipline completed (each with its newline), after echoing what was typed. The detach
/// key passes through so the caller sees it. None: nothing to send now.
async fn typed_input(
    cooked: Option<&mut crate::cooked::Cooked>,
    typed: Vec<u8>,
    detach: u8,
    stdout: &mut tokio::io::Stdout,
) -> std::io::Result<Option<Vec<u8>>> {
    let Some(cooked) = cooked else {
        return Ok(Some(typed));
    };
    if typed.contains(&detach) {
        return Ok(Some(vec![detach]));
    }
    let fed = cooked.feed(&typed);
    show(stdout, &fed.echo).await?;
    let mut out = Vec::new();
    for line in fed.lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Sends typed input: INPUT frames, or to a structured agent one prompt per line.
async fn send_typed(
    ws: &mut Conn,
    channel: u32,
    session: &str,
    prompts: bool,
    bytes: &[u8],
) -> anyhow::Result<()> {
    if !prompts {
        return Ok(ws.send_binary(frame(channel, bytes)).await?);
    }
    for line in String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        ws.send(json!({"type": "input", "session": session, "data": line, "paste": true}))
            .await?;
    }
    Ok(())
}

/// Whether a reconnection was refused for its token (revoked, or not valid here): trying
/// again would not change that.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<corral_client::ClientError>()
            .is_some_and(|c| matches!(c.status(), Some(401 | 403)))
    })
}

/// A binary INPUT frame.
fn frame(channel: u32, bytes: &[u8]) -> Vec<u8> {
    corral_server::protocol::encode_binary(
        corral_server::protocol::Header {
            kind: corral_server::protocol::kind::INPUT,
            channel,
            offset: 0,
        },
        bytes,
    )
}

/// What the terminal gave: keys, or how attach ends (the end of its input: 0; a failed read,
/// said: 1).
fn keys_read(
    keys_in: Option<Result<Vec<u8>, String>>,
    shown: Option<&crate::view::View>,
) -> Result<Vec<u8>, ExitCode> {
    match keys_in {
        Some(Ok(typed)) => Ok(typed),
        Some(Err(e)) => {
            final_line(&format!("reading this terminal failed: {e}"), shown);
            Err(ExitCode::FAILURE)
        }
        None => Err(ExitCode::SUCCESS),
    }
}
