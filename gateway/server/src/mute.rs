//! Mute: the sessions whose webhook notifications are muted (`POST /v1/sessions/{id}/notify`).
//! Its own module so the shared server state holds it without depending on the notifier. Kept
//! in the data dir (`mutes.json`, replaced atomically) so a mute outlives a restart and an
//! upgrade, as the session does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use uuid::Uuid;

/// The file in the data dir.
pub const FILE: &str = "mutes.json";

/// Sessions whose notifications are muted.
#[derive(Debug, Default)]
pub struct Mutes {
    muted: Mutex<BTreeSet<Uuid>>,
    /// Where they are kept (None: in memory only, an embedding without a data dir).
    path: Option<PathBuf>,
}

impl Mutes {
    /// The mutes kept in `dir` (none if the file is missing; an unreadable file is reported
    /// and taken as none: a mute lost is a notification too many, never one too few).
    pub fn load(dir: &Path) -> Mutes {
        let path = dir.join(FILE);
        let muted = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "mutes unreadable: none kept");
                BTreeSet::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "mutes unreadable: none kept");
                BTreeSet::new()
            }
        };
        Mutes {
            muted: Mutex::new(muted),
            path: Some(path),
        }
    }

    /// Mutes or unmutes `session`, keeping only sessions for which `exists` holds; returns
    /// what to write (see [`Mutes::save`]) when something changed.
    pub fn set(
        &self,
        session: Uuid,
        muted: bool,
        exists: impl Fn(Uuid) -> bool,
    ) -> Option<Vec<u8>> {
        let mut m = self.muted.lock();
        let changed = if muted {
            m.insert(session)
        } else {
            m.remove(&session)
        };
        m.retain(|s| exists(*s));
        // invariant: a set of UUIDs always serializes.
        changed.then(|| serde_json::to_vec(&*m).expect("a set of ids serializes"))
    }

    /// Writes `bytes` from [`Mutes::set`] (blocking: call off the runtime's workers).
    pub fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
        match &self.path {
            Some(path) => crate::atomic::write_atomic(path, bytes, 0o600),
            None => Ok(()),
        }
    }

    /// Whether `session` is muted.
    pub fn muted(&self, session: Uuid) -> bool {
        self.muted.lock().contains(&session)
    }
}
