//! Outbox: the notifications a server has queued and not yet delivered, appended to a file in
//! the data dir as they are queued and marked as each is delivered, so that a server SIGKILLed
//! before it delivered them (an `idle` waiting out its [`super::IDLE_SETTLE`], a webhook being
//! retried) leaves them to the next one, which sends them. A server that leaves on its own
//! hands its undelivered ones over instead ([`super::HANDED_OVER`]) and empties this file.
//!
//! Delivery is at least once: a server killed between a webhook's answer and the mark sends
//! that notification again, with the same id (`<session>:<seq>`), which a receiver can drop.
//! Bounded: the file is emptied whenever nothing is pending, and the queue to its writer holds
//! [`QUEUE`] entries (past it an entry is not written, counted and logged: that notification is
//! then lost or repeated only if the server also dies).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Notification, Undelivered};
use crate::app::App;

/// The outbox's file in the data dir (owner-only), one JSON line per entry.
pub const OUTBOX: &str = "notifications.outbox.jsonl";

/// Entries waiting for the writer, at most.
const QUEUE: usize = 4096;

/// One line of the outbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    /// Queued for a webhook (or waiting out the idle settle).
    Queued(Undelivered),
    /// Delivered (or given up, or no longer due) for that webhook.
    Done { webhook: String, id: String },
}

/// Where the notifier writes down what it queues and what it delivered.
#[derive(Debug, Clone)]
pub(super) struct Outbox {
    tx: tokio::sync::mpsc::Sender<Entry>,
}

impl Outbox {
    /// `n` is queued for (or settling towards) `webhook`.
    pub(super) fn queued(&self, app: &App, webhook: &str, n: &Notification) {
        self.send(
            app,
            Entry::Queued(Undelivered {
                webhook: webhook.to_string(),
                notification: n.clone(),
            }),
        );
    }

    /// Notification `id` needs no more sending to `webhook`.
    pub(super) fn done(&self, app: &App, webhook: &str, id: &str) {
        self.send(
            app,
            Entry::Done {
                webhook: webhook.to_string(),
                id: id.to_string(),
            },
        );
    }

    fn send(&self, app: &App, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            app.metrics.notify("outbox_full");
            tracing::warn!(
                "notify: the outbox's queue is full: an entry was not written (counted; a server crash now may lose or repeat that notification)"
            );
        }
    }
}

/// Opens `dir`'s outbox: what a server killed before it delivered them left there (the file is
/// taken), the outbox, and its writer, which runs until every clone of the outbox is dropped.
pub(super) async fn open(
    dir: &Path,
) -> (
    Vec<Undelivered>,
    Outbox,
    impl std::future::Future<Output = ()> + use<>,
) {
    let path = dir.join(OUTBOX);
    let left = take(&path).await;
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    (left, Outbox { tx }, write(path, rx))
}

/// Removes `dir`'s outbox (a server that leaves on its own: what it did not deliver is handed
/// over, or counted as undelivered at a full stop).
pub(super) async fn remove(dir: &Path) {
    let path = dir.join(OUTBOX);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "notify: outbox not removed (its notifications may be sent again)")
        }
    }
}

/// The entries of the outbox at `path` still pending, in the order they were queued; the file
/// goes. Lines that do not parse (a line cut by the kill) are skipped.
async fn take(path: &Path) -> Vec<Undelivered> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "notify: outbox unreadable");
            return Vec::new();
        }
    };
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(path = %path.display(), error = %e, "notify: outbox not removed (its notifications may be sent twice)");
    }
    let mut order = Vec::new();
    let mut pending: HashMap<(String, String), Undelivered> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(Entry::Queued(u)) => {
                let key = (u.webhook.clone(), u.notification.id.clone());
                if !pending.contains_key(&key) {
                    order.push(key.clone());
                }
                pending.insert(key, u);
            }
            Ok(Entry::Done { webhook, id }) => {
                pending.remove(&(webhook, id));
            }
            Err(e) => tracing::debug!(error = %e, "notify: an outbox line does not parse: skipped"),
        }
    }
    order
        .into_iter()
        .filter_map(|key| pending.remove(&key))
        .collect()
}

/// Appends the entries that come to the file at `path`, a batch at a time off the runtime's
/// workers; empties it whenever nothing is pending.
async fn write(path: PathBuf, mut rx: tokio::sync::mpsc::Receiver<Entry>) {
    let mut pending: HashSet<(String, String)> = HashSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256
            && let Ok(e) = rx.try_recv()
        {
            batch.push(e);
        }
        let mut text = String::new();
        for entry in &batch {
            match entry {
                Entry::Queued(u) => {
                    pending.insert((u.webhook.clone(), u.notification.id.clone()));
                }
                Entry::Done { webhook, id } => {
                    pending.remove(&(webhook.clone(), id.clone()));
                }
            }
            match serde_json::to_string(entry) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(e) => tracing::warn!(error = %e, "notify: an outbox entry not written"),
            }
        }
        let empty = pending.is_empty();
        let at = path.clone();
        let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&at)?;
            if empty {
                f.set_len(0)
            } else {
                f.write_all(text.as_bytes())
            }
        })
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "notify: outbox not written (a server crash now may lose these notifications)")
            }
            Err(e) => tracing::warn!(error = %e, "notify: outbox writer failed"),
        }
    }
}
