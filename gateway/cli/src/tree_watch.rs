//! `corral tree --watch`: the live tree, drawn again on every change the server pushes (session
//! events, and figures that moved, compared every 2 s by the server; nothing is polled from
//! here). On a terminal it is drawn in place on the alternate screen, as `watch` and `top` do,
//! cut to the terminal's height and width (a 55-line tree on a 40-row terminal scrolled its top
//! away on every redraw, and the terminal's history filled with copies); the screen is given
//! back on Ctrl-C or SIGTERM, and drawn again when the terminal is resized. Elsewhere (a pipe, `--json`), each tree is printed after the last.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use corral_client::{Conn, Incoming};
use corral_server::protocol::{Op, Reply};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use crate::output::{print_tree, tree_lines};

/// The server's tree now, as JSON.
pub async fn tree(ws: &mut Conn) -> anyhow::Result<Value> {
    let Reply::Tree { tree, .. } = ws.request(Op::Tree).await? else {
        bail!("the server did not answer with a tree");
    };
    Ok(serde_json::to_value(&tree)?)
}

/// Watches until the connection ends (an error) or the user leaves (Ctrl-C, SIGTERM: success).
pub async fn run(ws: &mut Conn, json: bool) -> anyhow::Result<ExitCode> {
    ws.request(Op::Watch).await?;
    let in_place = !json && std::io::stdout().is_terminal();
    let _screen = in_place.then(AlternateScreen::enter).transpose()?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut winch = signal(SignalKind::window_change())?;
    loop {
        let tree = tree(ws).await?;
        if json {
            println!("{}", serde_json::to_string(&tree)?);
        } else if in_place {
            draw(&tree)?;
        } else {
            print_tree(&tree);
            println!();
        }
        loop {
            tokio::select! {
                incoming = ws.next() => match incoming {
                    Incoming::Json(v) if v["type"] == "session" || v["type"] == "removed" => break,
                    Incoming::Closed(r) => bail!("connection closed: {r}"),
                    _ => {}
                },
                // The terminal resized: the same tree fitted to it again.
                _ = winch.recv(), if in_place => draw(&tree)?,
                _ = int.recv() => return Ok(ExitCode::SUCCESS),
                _ = term.recv() => return Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// Draws `tree` from the top of the screen, each line cut to the terminal's width, as many as
/// fit with a last line saying how many more there are.
fn draw(tree: &Value) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    tree_lines(tree, "", true, true, &mut lines);
    let (cols, rows) = crate::attach::terminal_size();
    let out = frame(&lines, usize::from(rows.max(2)), usize::from(cols.max(10)));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The screenful for `lines` on a `rows`×`cols` terminal: home, each line then an erase of the
/// rest of its row, an erase of the rows below.
fn frame(lines: &[String], rows: usize, cols: usize) -> String {
    let fits = lines.len() <= rows;
    let shown = if fits { lines.len() } else { rows - 1 };
    let mut out = String::from("\x1b[H");
    for line in &lines[..shown] {
        out.extend(line.chars().take(cols));
        out.push_str("\x1b[K\r\n");
    }
    if !fits {
        let more = format!(
            "… {} more lines (a taller terminal shows them)",
            lines.len() - shown
        );
        out.extend(more.chars().take(cols));
        out.push_str("\x1b[K");
    }
    out.push_str("\x1b[J");
    out
}

/// The terminal's alternate screen with the cursor hidden, for as long as this lives.
struct AlternateScreen;

impl AlternateScreen {
    fn enter() -> anyhow::Result<AlternateScreen> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(b"\x1b[?1049h\x1b[?25l")?;
        stdout.flush()?;
        Ok(AlternateScreen)
    }
}

impl Drop for AlternateScreen {
    fn drop(&mut self) {
        let mut stdout = std::io::stdout().lock();
        // Best effort: a terminal that is gone needs nothing given back.
        if stdout.write_all(b"\x1b[?25h\x1b[?1049l").is_err() {
            return;
        }
        if stdout.flush().is_err() {}
    }
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn a_tree_taller_than_the_terminal_is_cut_with_a_count() {
        let lines: Vec<String> = (0..10)
            .map(|i| format!("node {i} {}", "x".repeat(40)))
            .collect();
        let out = frame(&lines, 5, 20);
        let rows: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(rows.len(), 5, "{out:?}");
        let first = rows[0]
            .strip_prefix("\x1b[H")
            .unwrap()
            .strip_suffix("\x1b[K")
            .unwrap();
        assert_eq!(
            first,
            format!("node 0 {}", "x".repeat(13)),
            "cut to 20: {out:?}"
        );
        assert!(rows[4].starts_with("… 6 more lines"), "{out:?}");
        assert!(out.ends_with("\x1b[J"));
        let all = frame(&lines[..3], 5, 80);
        assert_eq!(all.matches("\r\n").count(), 3, "{all:?}");
        assert!(!all.contains("more lines"));
    }
}
