//! Output: how client commands print for humans (the `ps` table, the tree, times); `--json`
//! output is the protocol's own types, printed as they are.

use std::time::SystemTime;

use corral_server::protocol::SessionView;
use serde_json::Value;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The `ps` table.
pub fn print_ps(views: &[SessionView]) {
    let list: Vec<(&SessionView, Value)> = views
        .iter()
        .filter_map(|v| Some((v, serde_json::to_value(v).ok()?)))
        .collect();
    // The NAME column fits the longest name up to NAME_MAX (a longer one is cut with `…`: one
    // 150-character name wrapped every row), so every row lines up.
    let width = views
        .iter()
        .map(|v| v.info.name.width())
        .max()
        .unwrap_or(0)
        .clamp(16, NAME_MAX);
    println!(
        "{:<8}  {:<width$} {:<10} {:>7} {:>8} {:>4} {:<20} {:>3} {:>6} {:>8}  ATTENTION",
        "ID", "NAME", "STATE", "PID", "UPTIME", "RST", "LAST EXIT", "VWR", "CPU%", "RSS"
    );
    let now = SystemTime::now();
    for (view, s) in &list {
        let uptime = corral_actors::time::from_json(&s["started_at"])
            .filter(|_| s["pid"].is_number())
            .and_then(|t| now.duration_since(t).ok().map(|d| d.as_secs()))
            .map(fmt_secs)
            .unwrap_or_else(|| "-".into());
        // As the events and `corral wait` say it: `exit 3`, `signal 9 (SIGKILL)`.
        let exit = view
            .info
            .last_exit
            .map_or_else(|| "-".to_string(), |e| e.to_string());
        // Without trailing blanks when the last column is empty (a diff or `grep 'x$'` saw them).
        let row = format!(
            "{:<8}  {} {:<10} {:>7} {:>8} {:>4} {:<20} {:>3} {:>6} {:>8}  {}",
            &s["id"].as_str().unwrap_or("")[..8.min(s["id"].as_str().unwrap_or("").len())],
            pad(&cut(s["name"].as_str().unwrap_or(""), NAME_MAX), width),
            s["state"].as_str().unwrap_or(""),
            s["pid"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            uptime,
            s["restarts"].as_u64().unwrap_or(0),
            exit,
            s["viewers"].as_u64().unwrap_or(0),
            s["cpu_percent"]
                .as_f64()
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            s["rss_kib"]
                .as_u64()
                .map(|k| format!("{}K", k))
                .unwrap_or_else(|| "-".into()),
            match (s["attention"].as_str(), &view.info.permission) {
                (Some(a), Some(ask)) if !ask.tool.is_empty() => {
                    // What it asks, in a few words; questions waiting behind it.
                    let asks = cut(&question_summary(ask), ASKS_MAX);
                    match view.info.permission_queue.len() {
                        0 => format!("{a} ({asks})"),
                        n => format!("{a} ({asks}, then {n} more)"),
                    }
                }
                (Some(a), _) => match s["agent_asks_at_start"].as_str() {
                    // Nothing runs until someone answers its screen.
                    Some(line) => format!("{a} (its screen asks: {})", cut(line, ASKS_MAX)),
                    // Its question went to its own dialog: answered there only.
                    None if a == "needs_permission" => format!("{a} (in its terminal)"),
                    // Before its first prompt: nobody is awaited (as the page says it).
                    None if a == "idle" && view.info.agent_fresh => "ready".to_string(),
                    None => a.to_string(),
                },
                // Why it failed (the restart policy gave up, it could not start): the exit
                // alone (`exit 0` of a program restarted too often) did not say. Why it was
                // lost (its holder died): its SIGKILL was no `corral kill`.
                _ if view.info.state == corral_actors::SessionState::Failed
                    || (view.info.state == corral_actors::SessionState::Stopped
                        && view
                            .info
                            .reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("lost"))) =>
                {
                    view.info
                        .reason
                        .as_deref()
                        .map(|r| cut(r, REASON_MAX))
                        .unwrap_or_default()
                }
                _ => String::new(),
            },
        );
        println!("{}", row.trim_end());
    }
    // Persistence trouble is loud: one line per affected session.
    for (_, s) in list {
        if let Some(e) = s["persist_error"].as_str() {
            println!("PERSIST  {}: {e}", s["name"].as_str().unwrap_or(""));
        }
    }
}

/// Where `ps` puts a session (as the page's list does): a question first (a permission, a
/// start screen's), then a finished turn or a session its restart policy gave up on, then an
/// agent at work, then whatever else runs, then what ended.
pub fn attention_rank(info: &corral_actors::SessionInfo) -> u8 {
    use corral_actors::SessionState;
    use corral_actors::attention::Attention;
    let alive = matches!(
        info.state,
        SessionState::Starting | SessionState::Running | SessionState::Stopping
    );
    match info.attention {
        Some(Attention::NeedsPermission) if alive => 0,
        Some(Attention::Starting) if alive && info.agent_asks_at_start.is_some() => 0,
        Some(Attention::Idle) if alive && !info.agent_fresh => 1,
        _ if info.state == SessionState::Failed => 1,
        Some(Attention::Working) if alive => 2,
        _ if alive => 3,
        _ => 4,
    }
}

/// Longest name `ps` prints whole (`ps --json` has it all; the ID column names it too).
const NAME_MAX: usize = 32;

/// Most characters of a question `ps` prints (`corral answer` shows it all).
const ASKS_MAX: usize = 48;
/// Most columns of a failed session's reason in `ps`.
const REASON_MAX: usize = 72;

/// `text` in at most `max` terminal columns, cut with `…` (a wide character, CJK or emoji,
/// takes two).
fn cut(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// `text` padded with spaces to `width` terminal columns (`{:<width$}` counts characters: a
/// wide name pushed every column after it right).
fn pad(text: &str, width: usize) -> String {
    format!("{text}{}", " ".repeat(width.saturating_sub(text.width())))
}

/// One line saying what a permission question asks: the tool and its command, file or input
/// (control characters shown escaped, long input cut with `…`).
pub fn question_summary(q: &corral_actors::agent::PermissionAsk) -> String {
    const MAX: usize = 200;
    let detail = ["command", "file_path", "path", "url", "pattern"]
        .iter()
        .find_map(|k| q.input.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_else(|| match &q.input {
            Value::Null => String::new(),
            other => other.to_string(),
        });
    // Control characters shown as escapes (a newline in a command is a second command, and
    // must be seen as such); quotes as they are, so JSON input reads as JSON.
    let detail: String = detail
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let cut: String = detail.chars().take(MAX).collect();
    let ellipsis = if cut.len() < detail.len() { "…" } else { "" };
    if cut.is_empty() {
        q.tool.clone()
    } else {
        format!("{}: {cut}{ellipsis}", q.tool)
    }
}

/// Names in the order people count: `s2` before `s10` (runs of digits compare as numbers).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (m, n) = (run(x), run(y));
                let trim = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
                let (dx, dy) = (&x[trim(&x[..m]).min(m)..m], &y[trim(&y[..n]).min(n)..n]);
                let by_value = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (&x[m..], &y[n..]);
            }
            (Some(c), Some(d)) if c != d => return c.cmp(d),
            _ => (x, y) = (&x[1..], &y[1..]),
        }
    }
}

/// An event time (RFC 3339) as UTC `HH:MM:SS.mmm`.
pub fn fmt_time(t: &Value) -> String {
    let Some(at) = corral_actors::time::from_json(t) else {
        return "?".into();
    };
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (since.as_secs(), since.subsec_millis());
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

/// The tree, one node per line (the `corral tree` text).
pub fn print_tree(node: &Value) {
    let mut lines = Vec::new();
    tree_lines(node, "", true, true, &mut lines);
    for line in lines {
        println!("{line}");
    }
}

/// The tree as lines of text, one per node.
pub fn tree_lines(node: &Value, prefix: &str, last: bool, root: bool, out: &mut Vec<String>) {
    let branch = if root {
        ""
    } else if last {
        "└── "
    } else {
        "├── "
    };
    let d = &node["detail"];
    let mut extra = Vec::new();
    for key in [
        "pid",
        "os_state",
        "endpoint",
        "peer",
        "token",
        "address",
        "attention",
        "viewers",
    ] {
        // A process named by its pid says it once.
        let named = key == "pid"
            && d.get(key).map(Value::to_string) == node["id"].as_str().map(str::to_string);
        if let Some(v) = d.get(key).filter(|v| !v.is_null() && !named) {
            extra.push(format!(
                "{key} {}",
                v.as_str().map_or(v.to_string(), str::to_string)
            ));
        }
    }
    if let Some(s) = d["sessions"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<&str> = s.iter().filter_map(|v| v.as_str()).collect();
        extra.push(format!("sessions {}", names.join(",")));
    }
    if let (Some(i), Some(o)) = (d["bytes_in"].as_u64(), d["bytes_out"].as_u64()) {
        extra.push(format!("in {i} B, out {o} B"));
    }
    if let (Some(p), Some(h)) = (d["persisted_offset"].as_u64(), d["output_offset"].as_u64()) {
        extra.push(format!("persisted {p}/{h}"));
    }
    if let Some(r) = node["restarts_total"].as_u64().filter(|r| *r > 0) {
        extra.push(format!(
            "restarts {r} ({} in window)",
            node["restarts_in_window"]
        ));
    }
    if let Some(depth) = node["mailbox_depth"].as_u64() {
        match node["mailbox_bound"].as_u64() {
            Some(bound) => extra.push(format!("queue {depth}/{bound}")),
            None => extra.push(format!("mailbox {depth}")),
        }
    }
    if let Some(l) = node["lag_count"].as_u64() {
        extra.push(format!("lag {l}"));
    }
    if let Some(ms) = node["uptime_ms"].as_u64() {
        extra.push(format!("up {}", fmt_secs(ms / 1000)));
    }
    if let Some(e) = node["last_exit"].as_str() {
        extra.push(format!("last exit: {e}"));
    }
    let id = node["id"].as_str().unwrap_or("?");
    let label = match d["name"].as_str() {
        Some(name) => format!("{name} ({})", &id[..8.min(id.len())]),
        None => id.to_string(),
    };
    // A session shows its own state (stopped, failed...), not its actor's, which lives on.
    let status = d["state"]
        .as_str()
        .or(node["status"].as_str())
        .unwrap_or("?");
    let kind = match node["kind"].as_str() {
        Some("supervisor") | Some("worker") | None => String::new(),
        Some(k) => format!("{k} "),
    };
    let extra = match extra.is_empty() {
        true => String::new(),
        false => format!(" {}", extra.join(", ")),
    };
    out.push(format!("{prefix}{branch}{kind}{label} [{status}]{extra}"));
    let children = node["children"].as_array().cloned().unwrap_or_default();
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (i, c) in children.iter().enumerate() {
        tree_lines(c, &child_prefix, i + 1 == children.len(), false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, natural_cmp, pad, question_summary, tree_lines};
    use unicode_width::UnicodeWidthStr;

    /// A process named by its pid says it once; its holder, named `holder`, says its pid.
    #[test]
    fn a_process_in_the_tree_says_its_pid_once() {
        let node = serde_json::json!({
            "id": "s", "kind": "worker", "status": "running", "detail": {"name": "build"},
            "children": [
                {"id": "7201", "kind": "process", "status": "running",
                 "detail": {"pid": 7201, "os_state": "sleeping"}},
                {"id": "holder", "kind": "process", "status": "running",
                 "detail": {"pid": 7200, "os_state": "sleeping"}},
            ],
        });
        let mut lines = Vec::new();
        tree_lines(&node, "", true, true, &mut lines);
        assert_eq!(lines[1], "├── process 7201 [running] os_state sleeping");
        assert_eq!(
            lines[2],
            "└── process holder [running] pid 7200, os_state sleeping"
        );
    }

    #[test]
    fn a_question_shows_newlines_as_escapes_and_json_as_json() {
        let ask = |tool: &str, input| corral_actors::agent::PermissionAsk {
            id: None,
            tool: tool.into(),
            input,
            request_id: None,
        };
        assert_eq!(
            question_summary(&ask(
                "Bash",
                serde_json::json!({"command": "echo a\nrm -rf ~"})
            )),
            "Bash: echo a\\nrm -rf ~"
        );
        assert_eq!(
            question_summary(&ask("Edit", serde_json::json!({"file": "two"}))),
            r#"Edit: {"file":"two"}"#
        );
    }

    /// Names are measured in terminal columns: a wide one is cut and padded so the columns
    /// after it line up.
    #[test]
    fn wide_names_are_cut_and_padded_by_their_width() {
        assert_eq!(pad("é日本", 8), "é日本   ");
        assert_eq!(pad("abc", 8).width(), 8);
        let cut_wide = cut(&"日".repeat(20), 9);
        assert_eq!(cut_wide, format!("{}…", "日".repeat(4)));
        assert!(cut_wide.width() <= 9);
        assert_eq!(cut("short", 9), "short");
    }

    #[test]
    fn names_sort_as_people_count() {
        let mut names = vec![
            "s10", "s2", "s1", "a", "s02", "s1b", "s1a", "B", "agent-10", "agent-9",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "B", "a", "agent-9", "agent-10", "s1", "s1a", "s1b", "s02", "s2", "s10"
            ]
        );
    }
}
