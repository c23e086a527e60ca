//! Resuming an agent's conversation: a restart runs `claude --resume <id>` only once the
//! conversation's transcript holds a message (before that `--resume` fails at once), and a
//! graceful stop right after a turn gives the agent a moment to write its last prompt down.

use super::*;

/// Whether the transcript Claude Code keeps at `path` holds a conversation it can resume: a user
/// or an assistant message. Before the first prompt there is no file; after only `/exit` or a
/// command that printed something, a file of metadata lines, and `--resume` of either fails
/// at once ("No conversation found"), every restart again. Read up to its first 1 MiB (a
/// conversation's first message comes within its first lines).
pub fn has_conversation(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if let Err(e) = file.take(1 << 20).read_to_end(&mut head) {
        tracing::warn!(path = %path.display(), error = %e, "the agent's transcript is unreadable: not resumed");
        return false;
    }
    String::from_utf8_lossy(&head)
        .lines()
        .any(|l| l.contains(r#""type":"user""#) || l.contains(r#""type":"assistant""#))
}

/// The longest a graceful stop waits for an agent to write down its last prompt
/// ([`until_written`]).
pub const WRITTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A stop this soon after the agent's state last changed may come before its transcript is
/// written; later ones do not wait.
pub const WRITTEN_RECENTLY: std::time::Duration = std::time::Duration::from_secs(10);

/// An agent stopped gracefully right after a turn (its state changed within
/// [`WRITTEN_RECENTLY`]) whose prompt its transcript does not hold yet gets up to
/// [`WRITTEN_WAIT`] to write it down first: Claude Code writes its transcript a moment
/// after the turn, and a restart 12 ms after a Stop hook found nothing to resume (the agent
/// started afresh, its conversation lost).
pub(crate) async fn until_written(shared: &SessionShared) {
    let recent = shared
        .attention_ms()
        .is_some_and(|ms| ms < WRITTEN_RECENTLY.as_millis() as u64);
    let path = {
        let s = shared.status.read();
        s.agent_transcript
            .clone()
            .filter(|_| s.agent_prompted && recent)
    };
    let Some(path) = path else {
        return;
    };
    let deadline = tokio::time::Instant::now() + WRITTEN_WAIT;
    loop {
        let p = path.clone();
        let written =
            tokio::task::spawn_blocking(move || has_conversation(std::path::Path::new(&p)))
                .await
                .unwrap_or(true);
        if written {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(session = %shared.id, "the agent did not write its conversation down in time; stopping it");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
