//! Ttyd: the ttyd dialect of a connection (`/ttyd/{session}/ws`): its token arrives in the
//! first frame, input and resize come as prefixed frames, output goes out as '0'-prefixed ones.

use axum::extract::ws::Message;
use corral_actors::{Item, SessionHandle};

use super::*;

/// The ttyd dialect (https://github.com/tsl0922/ttyd protocol): first frame
/// `{"AuthToken","columns","rows"}`, then '0'+input, '1'+resize JSON, '2' pause, '3' resume;
/// server sends '0'+output, '1'+title, '2'+preferences.
impl ConnectionState {
    pub(super) async fn ttyd_frame(&mut self, data: &[u8]) -> bool {
        let Some(Ttyd::Session(session)) = self.ttyd.clone() else {
            // No such session: its first frame gets the answer, and the connection ends.
            return self.ttyd_unknown(data).await;
        };
        if self.grant.is_none() {
            return self.ttyd_auth(&session, data).await;
        }
        let Some(frame) = crate::ttyd::parse_frame(data) else {
            return true;
        };
        let can_write = self
            .grant
            .as_ref()
            .is_some_and(|g| g.can_write(session.id()));
        match frame {
            crate::ttyd::Frame::Input(keys) => {
                if !can_write {
                    self.app.metrics.reject("forbidden");
                    return true; // ttyd has no error channel: read-only viewers' keys are ignored
                }
                self.input(None, &session, keys.to_vec()).await
            }
            crate::ttyd::Frame::Resize(size) => {
                if can_write {
                    match session.resize(self.viewer, size) {
                        Ok(()) => self.touch(&session),
                        Err(e) => tracing::debug!(error = %e, "ttyd resize not applied"),
                    }
                }
                true
            }
            crate::ttyd::Frame::Pause => {
                // Its end is still told: watched while paused.
                if !self.paused {
                    self.pause_watch = Some(session.events());
                }
                self.paused = true;
                // Ended before the watch began: nothing would wake it.
                if session.shared().state().is_final() {
                    self.paused = false;
                    self.pause_watch = None;
                }
                true
            }
            crate::ttyd::Frame::Resume => {
                self.paused = false;
                self.pause_watch = None;
                true
            }
            crate::ttyd::Frame::Bad(why) => {
                tracing::debug!(why, "ttyd frame ignored");
                self.app.metrics.reject("bad_request");
                true
            }
        }
    }

    /// The first frame of a connection to a name no session has: a token that may see every
    /// session is told so; any other gets the answer a token that may not read an existing
    /// session gets, so the names cannot be probed.
    async fn ttyd_unknown(&mut self, data: &[u8]) -> bool {
        let (_, token) = match self.ttyd_first_frame(data).await {
            Ok(first) => first,
            Err(alive) => return alive,
        };
        match self.app.tokens.check(token.as_deref()) {
            Ok(g) if g.is_admin() => {
                self.app.metrics.reject("not_found");
                self.close(1008, "no such session").await
            }
            _ => {
                self.app.metrics.reject("unauthorized");
                self.close(1008, "invalid or missing AuthToken").await
            }
        }
    }

    /// The first frame, and the token it stands for: its AuthToken, else the upgrade's, if it
    /// carried one (a page logged in by cookie gets an empty one from `/ttyd/{session}/token`;
    /// a client may send a bearer header). Not the init: the connection is closed (`Err`
    /// holds what the close returned).
    async fn ttyd_first_frame(
        &mut self,
        data: &[u8],
    ) -> Result<(crate::ttyd::Init, Option<String>), bool> {
        let Ok(init) = crate::ttyd::parse_init(data) else {
            self.app.metrics.reject("bad_request");
            return Err(self
                .close(1008, "first frame must be the ttyd JSON init")
                .await);
        };
        let token = init
            .token
            .clone()
            .or_else(|| self.credential.as_ref().map(|(t, _)| t.clone()));
        Ok((init, token))
    }

    pub(super) async fn ttyd_auth(&mut self, session: &SessionHandle, data: &[u8]) -> bool {
        let (init, token) = match self.ttyd_first_frame(data).await {
            Ok(first) => first,
            Err(alive) => return alive,
        };
        let grant = match self.app.tokens.check(token.as_deref()) {
            Ok(g) if g.can_read(session.id()) => g,
            _ => {
                self.app.metrics.reject("unauthorized");
                return self.close(1008, "invalid or missing AuthToken").await;
            }
        };
        if let Some(size) = init.size
            && grant.can_write(session.id())
        {
            match session.resize(self.viewer, size) {
                Ok(()) => self.touch(session),
                Err(e) => tracing::debug!(error = %e, "ttyd initial size not applied"),
            }
        }
        self.grant = Some(grant);
        self.unauthenticated = None;
        // Let in by the login cookie: a logout closes it as it closes the page's own.
        self.stats.by_cookie.store(
            init.token.is_none() && self.credential.as_ref().is_some_and(|(_, cookie)| *cookie),
            std::sync::atomic::Ordering::Relaxed,
        );
        *self.stats.token.lock() = token
            .as_deref()
            .and_then(crate::auth::token_id)
            .map(str::to_string);
        self.stats.close_if_revoked(&self.app.tokens);
        let title = format!("1{} (corral)", session.name());
        let prefs = "2{}".to_string();
        if !self.send(Message::Binary(title.into_bytes().into())).await
            || !self.send(Message::Binary(prefs.into_bytes().into())).await
        {
            return false;
        }
        self.ttyd_draw(session, init.size.map(|s| s.rows)).await
    }

    /// The screen as it is now, then live output from the matching offset; a session that has
    /// ended gets its last screen and the close a live viewer gets (a ttyd page reconnecting
    /// to it stayed connected to nothing, taking keys).
    async fn ttyd_draw(&mut self, session: &SessionHandle, rows: Option<u16>) -> bool {
        // A ttyd page is a fresh terminal: the history first, to scroll back through (into a
        // terminal of the height it said, which the session may not have taken yet).
        let (start, snap) = match session.snapshot_with_history(rows).await {
            Ok(s) => (Some(s.offset), Some(s.bytes)),
            Err(_) => (None, None),
        };
        if let Some(bytes) = snap {
            let mut frame = Vec::with_capacity(bytes.len() + 1);
            frame.push(b'0');
            frame.extend_from_slice(&bytes);
            if !self.send(Message::Binary(frame.into())).await {
                return false;
            }
        }
        self.ttyd_follow(session, start).await
    }

    /// Live output of `session` from `start` on (a screen was just drawn up to it); a session
    /// that has ended gets the close a live viewer gets.
    async fn ttyd_follow(&mut self, session: &SessionHandle, start: Option<u64>) -> bool {
        if session.shared().state().is_final() {
            return self.close(1000, "session exited").await;
        }
        let sub = match session.subscribe(start) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ttyd subscribe failed");
                return self.close(1011, "cannot subscribe").await;
            }
        };
        self.add_subscription(session, sub, None);
        true
    }

    /// A refusal on a ttyd connection (its protocol has no error message): the connection
    /// ends with the reason.
    pub(super) async fn ttyd_refused(&mut self, code: ErrorCode) -> bool {
        // Only a connection let in to a session is refused input (an unknown name ends at its
        // first frame).
        let Some(Ttyd::Session(session)) = self.ttyd.clone() else {
            return self.close(1011, "input refused").await;
        };
        if session.shared().state().is_final() {
            return self.close(1000, "session exited").await;
        }
        match code {
            // Between two processes of a restarting session. Not 1012, on which ttyd's page
            // reconnects at once: a key, or a mouse move with reporting on, each reconnected
            // it (40 times in 15 s); it asks for Enter, and reconnecting finds the next process.
            ErrorCode::Conflict => {
                self.close(
                    1000,
                    "session restarting: reconnect to see its next process",
                )
                .await
            }
            _ => self.close(1011, "input refused").await,
        }
    }

    /// A ttyd viewer the session's output lapped (a slow client, or one paused): ttyd has no
    /// lag message, so it is said in the terminal, and a terminal's screen is drawn again as it
    /// is now, over what the viewer shows (kept in its scrollback with the note: see
    /// `Snapshot::over_scrollback`), then output goes on from there. With only the note, the
    /// skipped bytes' modes and colours were lost for good (an alternate screen never entered,
    /// a background never set). A session on pipes has lines, no screen: the note only.
    async fn ttyd_lagged(&mut self, channel: u32, skipped: u64) -> bool {
        self.app.metrics.lagged.inc();
        self.stats
            .lags
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(session) = self.channels.get(&channel).map(|c| c.session.clone()) else {
            return true;
        };
        let screen = match session.shared().mode {
            corral_actors::Mode::Pty => session.snapshot().await.ok(),
            _ => None,
        };
        let Some(screen) = screen else {
            let note = format!(
                "0\r\n\x1b[7m[corral: {skipped} bytes skipped, viewer too slow]\x1b[0m\r\n"
            );
            return self.send(Message::Binary(note.into_bytes().into())).await;
        };
        let note = format!(
            "\x1b[7m[corral: {skipped} bytes skipped, viewer too slow; the screen is redrawn]\x1b[0m"
        );
        if let Some(old) = self.channels.remove(&channel) {
            old.abort.abort();
        }
        let mut frame = vec![b'0'];
        frame.extend_from_slice(&screen.over_scrollback(&note));
        if !self.send(Message::Binary(frame.into())).await {
            return false;
        }
        self.ttyd_follow(&session, Some(screen.offset)).await
    }

    pub(super) async fn ttyd_outgoing(&mut self, channel: u32, item: Item) -> bool {
        match item {
            // One byte reserved in front for the command (see add_subscription).
            Item::Output {
                bytes: mut frame, ..
            } => {
                if frame.len() <= 1 {
                    return true;
                }
                self.app.metrics.bytes_out.inc_by((frame.len() - 1) as u64);
                self.stats.bytes_out.fetch_add(
                    (frame.len() - 1) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                frame[0] = b'0';
                self.send(Message::Binary(frame.into())).await
            }
            Item::Lagged(l) => self.ttyd_lagged(channel, l.to - l.from).await,
            // Every byte before the end was sent (events follow their output): close normally.
            // Closing on the final state, not on Exited, keeps viewers of restarting sessions.
            Item::Event(e) if matches!(e.kind, EventKind::State { state, .. } if state.is_final()) => {
                self.close(1000, "session exited").await
            }
            Item::Closed => self.close(1000, "session removed").await,
            _ => true,
        }
    }
}
