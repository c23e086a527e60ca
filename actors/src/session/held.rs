//! Held: the output reader of a process under a holder — it copies what the holder published in
//! the shared ring (`crate::holder::ring`) into the session's Ring, woken by the holder's
//! eventfd, and writes back what the session's log holds so the holder may reuse the space.
//! A pipe session's output (stdout and stderr, merged by the holder in whole lines) is framed
//! on the way ([`super::lines`]): its JSON lines' events follow them.
//!
//! It does what [`super::output`] does for a terminal this server reads itself (output into the
//! Ring, the persister told, the output stamp, the screen nudged when output goes quiet, EOF
//! signalled once the terminal is closed and every byte is in), without a read(2) per chunk:
//! one copy from shared memory per batch the holder published.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::lines::Lines;
use super::shared::SessionShared;
use crate::holder::ring::SharedRing;
use crate::screen::{Follow, ScreenMsg};

/// Bytes copied per handler call before yielding to the mailbox.
const BURST: usize = 1 << 20;
/// Output is a flood when this much arrives within [`FLOOD_WINDOW`] (as in `super::output`):
/// the reader then stops waiting for wake-ups and copies on a [`TICK`], and subscribers batch
/// (each tick ends their batch), so a flood costs a wake-up per tick, not per PTY read.
const FLOOD_BYTES: usize = 256 * 1024;
/// See [`FLOOD_BYTES`].
const FLOOD_WINDOW: Duration = Duration::from_millis(100);
/// The copy period during a flood.
const TICK: Duration = Duration::from_millis(2);
/// Output quiet for this long lets the screen catch up.
const IDLE: Duration = Duration::from_millis(150);
/// While output is not yet logged (or held back for the log to catch up), how often its
/// progress is written back to the holder (which may be waiting for room: a full ring publishes
/// nothing, so no wake-up would come).
const ACK_EVERY: Duration = Duration::from_millis(2);

/// The reader actor.
pub struct HeldReader;

/// Its arguments.
pub struct HeldArgs {
    /// The holder's ring.
    pub ring: Arc<SharedRing>,
    /// The holder's eventfd, registered for reading.
    pub wake: AsyncFd<OwnedFd>,
    /// The session's shared half (its Ring, the persister's feed).
    pub shared: Arc<SessionShared>,
    /// Flipped to true once the terminal is closed and every byte is in the Ring.
    pub eof: watch::Sender<bool>,
    /// The screen to nudge when output goes idle.
    pub screen: Option<ActorRef<ScreenMsg>>,
    /// The framing: a terminal's output is [`Framing::Raw`]; a pipe session's is NDJSON, its
    /// first line perhaps begun in the log (an adopted session).
    pub lines: Lines,
}

/// Its only message: copy what is there, or wait for more.
#[derive(Debug)]
pub struct Pump;

/// Reader state.
pub struct HeldState {
    args: HeldArgs,
    /// Output offset copied up to (= the session Ring's head).
    cursor: u64,
    /// Output since the screen last caught up.
    dirty: bool,
    /// When the screen is told to catch up while output flows.
    follow: Follow,
    /// Copying on the tick (a flood).
    flowing: bool,
    /// Bytes since `since` (the flood detector).
    volume: usize,
    since: std::time::Instant,
}

impl Actor for HeldReader {
    type Msg = Pump;
    type State = HeldState;
    type Arguments = HeldArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Pump>,
        args: HeldArgs,
    ) -> Result<HeldState, ActorProcessingErr> {
        myself.send_message(Pump)?;
        let cursor = args.shared.ring.head();
        let follow = Follow::new(&args.shared.ring);
        Ok(HeldState {
            args,
            cursor,
            dirty: false,
            follow,
            flowing: false,
            volume: 0,
            since: std::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Pump>,
        _: Pump,
        st: &mut HeldState,
    ) -> Result<(), ActorProcessingErr> {
        let copied = st.copy();
        if copied > 0 {
            st.dirty = true;
            st.args.shared.mark_output();
            if st.follow.due(&st.args.shared.ring, st.flowing) {
                crate::screen::tell(st.args.screen.as_ref(), ScreenMsg::Follow);
            }
        }
        if st.args.ring.closed() && st.cursor == st.args.ring.end() {
            st.args.lines.finish(&st.args.shared);
            st.set_flowing(false);
            st.args.eof.send_replace(true);
            st.nudge_screen();
            myself.stop(Some("eof".into()));
            return Ok(());
        }
        let flooding = st.flooding(copied);
        if st.flowing && copied == 0 {
            // A whole tick without a byte: back to wake-ups (and look once more, see
            // `SharedRing::set_polling`).
            st.set_flowing(false);
            myself.send_message(Pump)?;
            return Ok(());
        }
        if st.flowing || flooding {
            // Counted with the server's own bulk reading (the `corral_bulk_reading` metric).
            super::bulk::record_flood(u64::from(!st.flowing), copied as u64);
            st.set_flowing(true);
            st.args.shared.ring.end_batches();
            // A whole burst: more is likely waiting (a pipe's flood outruns a tick's worth),
            // so only the mailbox goes first.
            if copied < BURST {
                tokio::time::sleep(TICK).await;
            }
            myself.send_message(Pump)?;
            return Ok(());
        }
        if copied > 0 {
            // More may be waiting: yield to the mailbox first.
            myself.send_message(Pump)?;
            return Ok(());
        }
        let wake = &st.args.wake;
        tokio::select! {
            ready = wake.readable() => {
                let mut guard = ready?;
                // Drain the counter; the ring is looked at again right after, so a batch
                // published between the two is never missed (it writes the eventfd again).
                let mut buf = [0u8; 8];
                match guard.try_io(|fd| crate::fd::read(fd.get_ref(), &mut buf)) {
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "holder wake-up unreadable"),
                }
            }
            // Unlogged output (the holder may wait for room), or output held back until the
            // log catches up: look again shortly.
            _ = tokio::time::sleep(ACK_EVERY),
                if st.args.ring.acked() < st.cursor || st.cursor < st.args.ring.end() => {}
            _ = tokio::time::sleep(IDLE), if st.dirty => {
                st.dirty = false;
                st.follow.told(&st.args.shared.ring);
                st.nudge_screen();
            }
        }
        myself.send_message(Pump)?;
        Ok(())
    }
}

impl HeldState {
    /// Copies up to [`BURST`] published bytes into the session's Ring; returns how many.
    fn copy(&mut self) -> usize {
        let ring = &self.args.ring;
        let capacity = self.args.shared.ring.capacity() as u64;
        // The session Ring never runs further ahead of the log than its capacity, so the
        // persister is never lapped (no gap); the rest waits in the holder's ring.
        let log_limit = self
            .args
            .shared
            .feed
            .persisted_offset()
            .map_or(u64::MAX, |p| p.saturating_add(capacity));
        // Nor further ahead of the slowest subscriber that keeps up, so no burst laps it.
        let now = std::time::Instant::now();
        let pacers = &self.args.shared.pacers;
        let view_limit = pacers.limit(now, capacity).unwrap_or(u64::MAX);
        let limit = log_limit.min(view_limit);
        let mut copied = 0;
        while copied < BURST && self.cursor < ring.end().min(limit) {
            let room = (limit - self.cursor).min((BURST - copied) as u64) as usize;
            let bytes = ring.read(self.cursor, room);
            if bytes.is_empty() {
                break;
            }
            // Lines take less while the journal is congested: the rest stays in the holder's
            // ring meanwhile (and the program blocks once that is full).
            let taken = self.args.lines.feed(bytes, &self.args.shared);
            self.cursor += taken as u64;
            copied += taken;
            if taken < bytes.len() {
                break;
            }
        }
        // Held back by subscribers while more is published: once the wait runs out, those
        // more than half a Ring behind are not waited for a while (they will be lapped).
        let held = view_limit < log_limit && self.cursor >= view_limit && self.cursor < ring.end();
        pacers.hold(now, held, self.cursor, capacity);
        // What the log holds is the holder's to reuse (everything, when nothing persists).
        let logged = self
            .args
            .shared
            .feed
            .persisted_offset()
            .unwrap_or(self.cursor);
        ring.set_acked(logged.min(self.cursor));
        copied
    }

    /// Whether `n` more bytes make a flood (a whole [`FLOOD_BYTES`] within [`FLOOD_WINDOW`]).
    fn flooding(&mut self, n: usize) -> bool {
        let now = std::time::Instant::now();
        if now.duration_since(self.since) > FLOOD_WINDOW {
            self.since = now;
            self.volume = 0;
        }
        self.volume += n;
        self.volume >= FLOOD_BYTES
    }

    /// Enters or leaves the flood mode: the holder stops or resumes waking us, subscribers
    /// batch or not.
    fn set_flowing(&mut self, on: bool) {
        if self.flowing != on {
            self.flowing = on;
            self.args.ring.set_polling(on);
            self.args.shared.ring.set_batching(on);
        }
    }

    /// Tells the screen to catch up: output went idle.
    fn nudge_screen(&self) {
        crate::screen::tell(self.args.screen.as_ref(), ScreenMsg::CatchUp);
    }
}
