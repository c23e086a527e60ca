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
    /// Held while the file is written: saves take turns, each writing the set as it is then,
    /// so the last save written holds the last change (two requests at once never leave the
    /// file with the older set).
    saving: Mutex<()>,
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
            saving: Mutex::new(()),
            path: Some(path),
        }
    }

    /// Mutes or unmutes `session`, keeping only sessions for which `exists` holds; whether
    /// something changed (then [`Mutes::save`] it).
    pub fn set(&self, session: Uuid, muted: bool, exists: impl Fn(Uuid) -> bool) -> bool {
        let mut m = self.muted.lock();
        let changed = if muted {
            m.insert(session)
        } else {
            m.remove(&session)
        };
        m.retain(|s| exists(*s));
        changed
    }

    /// Writes the mutes as they are now (blocking: call off the runtime's workers).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _turn = self.saving.lock();
        // invariant: a set of UUIDs always serializes.
        let bytes = serde_json::to_vec(&*self.muted.lock()).expect("a set of ids serializes");
        crate::atomic::write_atomic(path, &bytes, 0o600)
    }

    /// Whether `session` is muted.
    pub fn muted(&self, session: Uuid) -> bool {
        self.muted.lock().contains(&session)
    }
}
