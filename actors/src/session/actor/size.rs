//! The size policy of a session's terminal (tmux `window-size latest`): the last viewer who
//! typed sets the size; before anyone typed, the latest resize wins; a viewer that leaves is
//! forgotten. The size goes to the PTY, the screen and the event stream; the viewer whose size
//! is in effect is the one whose terminal answers the program's queries ([`crate::reports`]).

use super::{KEPT, MAX_VIEWERS, SessionActorState};
use crate::event::EventKind;
use crate::screen::ScreenMsg;
use crate::session::msg::ViewerId;
use crate::spec::Size;

impl SessionActorState {
    /// Viewer `viewer`'s terminal is `size` (`SessionMsg::Resize`).
    pub(super) fn viewer_resized(&mut self, viewer: ViewerId, size: Size) {
        if self.viewers.len() < MAX_VIEWERS || self.viewers.contains_key(&viewer) {
            self.resizes += 1;
            self.viewers.insert(viewer, (size, self.resizes));
        }
        // Policy (tmux `window-size latest`): the last viewer who typed sets the size;
        // before anyone typed, the latest resize wins.
        if self.typist == 0 || self.typist == viewer {
            self.resize(size);
        }
        self.publish_answerer();
    }

    /// Viewer `viewer` typed (`SessionMsg::ViewerActive`).
    pub(super) fn viewer_typed(&mut self, viewer: ViewerId) {
        // Only a viewer with a size takes the size over: a script's `corral send`
        // (no terminal, no size) leaves it with whoever types at a terminal.
        if let Some((size, _)) = self.viewers.get(&viewer).copied() {
            self.typist = viewer;
            self.resize(size);
        }
        self.publish_answerer();
    }

    /// Viewer `viewer` left (`SessionMsg::ViewerLeft`).
    pub(super) fn viewer_left(&mut self, viewer: ViewerId) {
        let had = self.viewers.remove(&viewer).is_some();
        // The typist left: back to "the latest resize wins", starting from the viewer
        // that resized last (a desktop page that stays must not keep a phone's size
        // that left until someone types or resizes). So too when nobody typed and the
        // one that left had a size: its size may be the one in effect (a desktop that
        // looked in on a phone's session left it at 164 columns on a 52-column phone).
        if self.typist == viewer || (self.typist == 0 && had) {
            self.typist = 0;
            if let Some((size, _)) = self.viewers.values().max_by_key(|(_, seq)| *seq) {
                self.resize(*size);
            }
        }
        self.publish_answerer();
    }

    /// A session taken back from a previous server stops keeping the size it was left at
    /// (`KEPT_FOR` passed and nobody typed): the latest resize wins from now on, and a lone
    /// viewer's size is taken now — it is the only one asking (with several, the size stays
    /// until one of them types or resizes: none is more the session's than the others).
    pub(super) fn kept_over(&mut self) {
        if self.typist != KEPT {
            return;
        }
        self.typist = 0;
        if self.viewers.len() == 1
            && let Some((size, _)) = self.viewers.values().next().copied()
        {
            self.resize(size);
        }
        self.publish_answerer();
    }

    /// Publishes whose terminal answers the program's queries: the viewer whose size is in
    /// effect — the typist, else the one that resized last (see [`crate::reports`]).
    pub(super) fn publish_answerer(&self) {
        let answerer = if self.typist != 0 && self.typist != KEPT {
            self.typist
        } else {
            self.viewers
                .iter()
                .max_by_key(|(_, (_, seq))| *seq)
                .map_or(0, |(v, _)| *v)
        };
        self.shared
            .answerer
            .store(answerer, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies a terminal size to the PTY and the screen.
    pub(super) fn resize(&mut self, size: Size) {
        if self.shared.status.read().size == size {
            return;
        }
        if let Some(master) = self.running.as_ref().and_then(|r| r.master.as_ref())
            && let Err(e) = master.resize(size)
        {
            tracing::warn!(session = %self.shared.id, error = %e, "resize failed");
            return;
        }
        self.shared.status.write().size = size;
        // Only a terminal's size is news: a pipe session's has no program to tell.
        if self.running.as_ref().is_some_and(|r| r.master.is_some()) {
            self.shared.emit(EventKind::Resized {
                rows: size.rows,
                cols: size.cols,
            });
        }
        if let Some(screen) = &self.screen
            && let Err(e) = screen.send_message(ScreenMsg::ResizeAt {
                // Stamped now: output after this offset was produced at the new size.
                at: self.shared.ring.head(),
                rows: size.rows,
                cols: size.cols,
            })
        {
            tracing::debug!(error = %e, "screen gone; resize not forwarded");
        }
    }
}
