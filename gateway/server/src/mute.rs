//! Mute: the sessions whose webhook notifications are muted (`POST /v1/sessions/{id}/notify`).
//! Its own module so the shared server state holds it without depending on the notifier.

use std::collections::HashSet;

use parking_lot::Mutex;
use uuid::Uuid;

/// Sessions whose notifications are muted.
#[derive(Debug, Default)]
pub struct Mutes(Mutex<HashSet<Uuid>>);

impl Mutes {
    /// Mutes or unmutes `session`.
    pub fn set(&self, session: Uuid, muted: bool) {
        let mut m = self.0.lock();
        if muted {
            m.insert(session);
        } else {
            m.remove(&session);
        }
    }

    /// Whether `session` is muted.
    pub fn muted(&self, session: Uuid) -> bool {
        self.0.lock().contains(&session)
    }
}
