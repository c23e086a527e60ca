//! Output: the actor reading a running process's output.
//!
//! [`OutputReader`] pumps a non-blocking fd (PTY master, or a pipe) into the session's Ring
//!   through tokio's AsyncFd: no OS thread per session. Its primary instance also watches the
//!   process's pidfd and tells the session when the process exits, then keeps reading until
//!   EOF/EIO so the last bytes a process writes reach every reader (the session waits for that
//!   drain before it announces the exit). Each handler call reads one burst and re-queues itself,
//!   so stop and kill get through between bursts.
//! The input side is [`super::input`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_runtime::Ring;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::bulk::{self, SliceEnd, with_read_buf};
use super::kept::Kept;
pub use super::lines::Framing;
use super::lines::Lines;
use super::msg::SessionMsg;
use super::shared::SessionShared;
use crate::fd;
use crate::process::{ExitWatch, PidFd};
use crate::screen::{Follow, ScreenMsg};

/// Bytes read per handler call before yielding to the mailbox. Well under the default Ring
/// capacity, so subscribers on the same worker get to run before the reader laps them.
const BURST: usize = 256 * 1024;
/// Output is a flood (read in bulk, see [`crate::bulk`]) when a whole [`BURST`] arrives within
/// this window, in one handler call or across several (≥ 2.5 MB/s).
const FLOOD_WINDOW: Duration = Duration::from_millis(100);
/// How long a reader held back by the persister or its subscribers sleeps before it looks again.
const PACE_TICK: Duration = Duration::from_millis(1);
/// Output quiet for this long lets the screen catch up (off the hot path).
const IDLE: Duration = Duration::from_millis(150);

/// Arguments of an [`OutputReader`].
pub struct ReaderArgs {
    /// The fd to read, registered for reading only (see [`fd::register`]).
    pub fd: AsyncFd<OwnedFd>,
    /// Where the bytes go.
    pub sink: Sink,
}

/// Where a reader's bytes go, and whom it tells.
pub struct Sink {
    /// The session's output log.
    pub ring: Ring,
    /// The session's shared half (events, counters).
    pub shared: Arc<SessionShared>,
    /// Framing of the stream.
    pub framing: Framing,
    /// Set when the primary reader should report the process's exit.
    pub exit: Option<(Arc<PidFd>, ActorRef<SessionMsg>, u64)>,
    /// Flipped to true at EOF/EIO: the session awaits it to know the output is drained.
    pub eof: watch::Sender<bool>,
    /// The screen to nudge when output goes idle.
    pub screen: Option<ActorRef<ScreenMsg>>,
    /// A held terminal: each read lands in its holder's ring first ([`super::kept`]).
    pub kept: Option<Arc<Kept>>,
}

/// The reader actor.
pub struct OutputReader;

/// Its only message: read the next burst.
#[derive(Debug)]
pub struct Pump;

/// Reader state.
pub struct ReaderState {
    /// The fd, registered with the reactor; `None` only while a bulk slice has it.
    fd: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Where the bytes go.
    args: Sink,
    /// The framing of NDJSON output (see [`super::lines`]).
    lines: Lines,
    /// Bytes read but not taken yet: their lines' events wait for the congested journal (no
    /// more is read meanwhile, so the process waits on its full pipe).
    held: Vec<u8>,
    /// The registered exit notification (primary reader), until the exit is reported.
    exit_watch: Option<ExitWatch>,
    /// Output since the screen last caught up.
    dirty: bool,
    /// When the screen is told to catch up while output flows.
    follow: Follow,
    /// Output volume over the last [`FLOOD_WINDOW`].
    volume: Volume,
    /// The last read ended with output still flowing (a whole burst, or a bulk slice's time up):
    /// the next one reads on a bulk thread if one is free (see [`crate::bulk`]).
    flowing: bool,
}

impl Actor for OutputReader {
    type Msg = Pump;
    type State = ReaderState;
    type Arguments = ReaderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Pump>,
        args: ReaderArgs,
    ) -> Result<ReaderState, ActorProcessingErr> {
        let ReaderArgs { fd, sink } = args;
        let exit_watch = match &sink.exit {
            Some((pidfd, _, _)) => Some(pidfd.watch()?),
            None => None,
        };
        myself.send_message(Pump)?;
        let follow = Follow::new(&sink.ring);
        Ok(ReaderState {
            fd: Some(Arc::new(fd)),
            lines: Lines::new(sink.framing),
            args: sink,
            held: Vec::new(),
            exit_watch,
            dirty: false,
            follow,
            volume: Volume::default(),
            flowing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Pump>,
        _: Pump,
        st: &mut ReaderState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.held.is_empty() {
            st.release_held().await;
            if !st.held.is_empty() {
                myself.send_message(Pump)?;
                return Ok(());
            }
        }
        // While output floods, the readiness branch below always wins the biased select: look
        // at the exit directly (one poll(2) per burst or slice), or a process whose background
        // child keeps writing would never be reported as exited. Likewise while the reader
        // waits for the persister or a viewer (the select is not reached then).
        let paced = st.paced();
        if (st.flowing || paced)
            && st.exit_watch.is_some()
            && st
                .args
                .exit
                .as_ref()
                .is_some_and(|(pidfd, _, _)| pidfd.is_exited())
        {
            report_exit(st);
        }
        if !paced
            && let Some(kept) = st.args.kept.clone()
            && kept.behind()
        {
            // Output the holder read while no server was attached goes first, a read's worth
            // at a time (what `paced` allowed for).
            let bytes = kept.catch_up(bulk::read_max(st.args.ring.capacity()));
            st.deliver(bytes);
            st.args.shared.mark_output();
            st.dirty = true;
            myself.send_message(Pump)?;
            return Ok(());
        }
        if paced {
            // A read could lap the persister or a viewer that keeps up (see `super::pace`):
            // what they gathered goes out now, and the program waits on its terminal (or
            // pipe) meanwhile.
            st.args.ring.end_batches();
            tokio::time::sleep(PACE_TICK).await;
            myself.send_message(Pump)?;
            return Ok(());
        }
        if st.flowing
            && st.args.framing == Framing::Raw
            && let Some(permit) = bulk::try_permit()
        {
            return st.bulk_slice(&myself, permit).await;
        }
        let fd = st.fd.clone().expect("reader fd"); // invariant: a bulk slice puts it back or ends the reader
        let max = bulk::read_max(st.args.ring.capacity());
        loop {
            tokio::select! {
                biased;
                ready = fd.readable() => {
                    let mut guard = ready?;
                    let mut total = 0;
                    loop {
                        // Read into this worker's buffer and hand the bytes on before any await,
                        // so no session holds a read buffer of its own.
                        let step = match st.args.kept.clone() {
                            // Into the holder's ring, and on from there.
                            Some(kept) => guard.try_io(|inner| {
                                let bytes = kept.read(inner.get_ref().as_raw_fd(), max, false)?;
                                st.deliver(bytes);
                                Ok(bytes.len())
                            }),
                            None => with_read_buf(|buf| {
                                let r = guard.try_io(|inner| fd::read(inner.get_ref(), &mut buf[..max]));
                                if let Ok(Ok(n)) = r
                                    && n > 0
                                {
                                    st.deliver(&buf[..n]);
                                }
                                r
                            }),
                        };
                        match step {
                            Ok(Ok(0)) => return finish(&myself, st, None).await,
                            Ok(Ok(n)) => {
                                total += n;
                                if total >= BURST || !st.held.is_empty() {
                                    // A whole burst and the PTY never ran dry: bulk output.
                                    st.set_flowing(total >= BURST);
                                    break;
                                }
                                if st.paced() {
                                    // The rest waits for the log or the viewers (the
                                    // next call).
                                    break;
                                }
                            }
                            // EIO: every holder of the PTY's child side has closed it.
                            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                                return finish(&myself, st, None).await;
                            }
                            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Ok(Err(e)) => return finish(&myself, st, Some(e)).await,
                            Err(_would_block) => {
                                // Ran dry. Still a flood if a whole burst came within the
                                // window: a reader slowed by the sends on its worker (many
                                // viewers) never reads a whole burst in one call.
                                let flooding = st.volume.flooding(total);
                                st.set_flowing(flooding);
                                break;
                            }
                        }
                    }
                    if total > 0 {
                        st.args.shared.mark_output();
                    }
                    st.dirty = true;
                    if st.follow.due(&st.args.ring, st.flowing) {
                        crate::screen::tell(st.args.screen.as_ref(), ScreenMsg::Follow);
                    }
                    break;
                }
                _ = exited(st.exit_watch.as_ref()) => report_exit(st),
                _ = tokio::time::sleep(IDLE), if st.dirty => {
                    st.dirty = false;
                    if let Some(kept) = &st.args.kept {
                        kept.quiet();
                    }
                    st.follow.told(&st.args.ring);
                    st.nudge_screen();
                }
            }
        }
        myself.send_message(Pump)?;
        Ok(())
    }
}

/// Bytes read since a point in time, to tell a flood from a burst.
struct Volume {
    since: Instant,
    bytes: usize,
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            since: Instant::now(),
            bytes: 0,
        }
    }
}

impl Volume {
    /// Counts `n` bytes just read; true when a whole [`BURST`] came within [`FLOOD_WINDOW`].
    fn flooding(&mut self, n: usize) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) > FLOOD_WINDOW {
            *self = Volume {
                since: now,
                bytes: 0,
            };
        }
        self.bytes += n;
        if self.bytes < BURST {
            return false;
        }
        self.bytes = 0;
        self.since = now;
        true
    }
}

/// Longest a pipe-mode reader holds its lines back for a congested journal (then they go through
/// and whatever the journal cannot take is counted and recorded as lost).
const JOURNAL_WAIT: Duration = Duration::from_secs(30);

/// Completes when the process exits; never, when there is nothing (more) to watch.
async fn exited(watch: Option<&ExitWatch>) {
    match watch {
        Some(w) => {
            if let Err(e) = w.exited().await {
                tracing::warn!(error = %e, "exit watch failed; reporting the exit now");
            }
        }
        None => std::future::pending().await,
    }
}

impl Drop for ReaderState {
    fn drop(&mut self) {
        // A killed reader must not leave subscribers batching.
        self.args.ring.set_batching(false);
    }
}

impl ReaderState {
    /// Tells the screen to catch up: output went idle.
    fn nudge_screen(&self) {
        crate::screen::tell(self.args.screen.as_ref(), ScreenMsg::CatchUp);
    }

    /// Whether the next read waits for the persister or the subscribers ([`super::pace`]).
    fn paced(&self) -> bool {
        let ring = &self.args.ring;
        super::pace::reader_waits(
            &self.args.shared.pacers,
            self.args.kept.as_ref().is_some_and(|k| k.full()),
            self.args.shared.feed.persisted_offset(),
            ring.head(),
            bulk::read_max(ring.capacity()) as u64,
            ring.capacity() as u64,
        )
    }

    /// Output flows (or stopped flowing): subscribers batch their reads while it does. Called
    /// after every inline burst and every bulk slice, it also ends the subscribers' current batch
    /// waits: what came so far goes out.
    fn set_flowing(&mut self, flowing: bool) {
        self.flowing = flowing;
        self.args.ring.set_batching(flowing);
    }

    /// Reads one [`bulk`] slice on a blocking-pool thread. The fd leaves the reactor meanwhile:
    /// registered, every byte the PTY received would wake a runtime worker for nothing (and
    /// its poll waits for the PTY's line discipline).
    async fn bulk_slice(
        &mut self,
        myself: &ActorRef<Pump>,
        permit: bulk::Permit,
    ) -> Result<(), ActorProcessingErr> {
        let registered = self.fd.take().expect("reader fd"); // invariant: taken only here, put back below
        let fd = match Arc::try_unwrap(registered) {
            Ok(fd) => fd.into_inner(),
            Err(shared) => {
                // Not expected; read inline this time.
                self.fd = Some(shared);
                self.set_flowing(false);
                myself.send_message(Pump)?;
                return Ok(());
            }
        };
        let source = bulk::Source {
            fd,
            ring: self.args.ring.clone(),
            shared: self.args.shared.clone(),
            kept: self.args.kept.clone(),
        };
        self.dirty = true;
        // `flowing` is set (subscribers batch meanwhile); if the reader is killed during the
        // slice, dropping its state clears it.
        let (end, fd) = bulk::slice(source, permit).await;
        self.args.shared.mark_output();
        self.set_flowing(matches!(end, SliceEnd::Flowing));
        match (end, fd) {
            (SliceEnd::Eof, _) => finish(myself, self, None).await,
            (SliceEnd::Failed(e), _) => finish(myself, self, Some(e)).await,
            (_, None) => {
                let e = io::Error::other("bulk reader lost its fd");
                finish(myself, self, Some(e)).await
            }
            (SliceEnd::Flowing | SliceEnd::Quiet, Some(fd)) => {
                match fd::register(fd, tokio::io::Interest::READABLE) {
                    Ok(fd) => self.fd = Some(Arc::new(fd)),
                    Err(e) => return finish(myself, self, Some(e)).await,
                }
                myself.send_message(Pump)?;
                Ok(())
            }
        }
    }

    /// Hands freshly read bytes to the Ring (through the NDJSON framing).
    fn deliver(&mut self, bytes: &[u8]) {
        if !self.held.is_empty() {
            self.held.extend_from_slice(bytes);
            return;
        }
        let taken = self.lines.feed(bytes, &self.args.shared);
        self.held.extend_from_slice(&bytes[taken..]);
    }

    /// Waits (bounded) for the journal to have room, then hands on the held bytes: those it
    /// takes, or all of them once the wait ran out.
    async fn release_held(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        if self.wait_for_journal().await {
            let taken = self.lines.feed(&held, &self.args.shared);
            held.drain(..taken);
            self.held = held;
        } else {
            self.lines.feed_forced(&held, &self.args.shared);
        }
    }

    /// Waits until the journal has room, at most [`JOURNAL_WAIT`]; false if it timed out.
    async fn wait_for_journal(&self) -> bool {
        let Some(journal) = self.args.shared.journal() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + JOURNAL_WAIT;
        while journal.congested() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

/// Tells the session its process exited (once).
fn report_exit(st: &mut ReaderState) {
    st.exit_watch = None;
    if let Some((_, session, generation)) = &st.args.exit
        && let Err(e) = session.send_message(SessionMsg::ProcessExited {
            generation: *generation,
        })
    {
        tracing::warn!(error = %e, "session gone before the exit could be reported");
    }
}

/// EOF: flush a trailing partial line, signal the drain; the primary reader then waits for the
/// process to exit (the terminal can close first) and reports it; stop.
async fn finish(
    myself: &ActorRef<Pump>,
    st: &mut ReaderState,
    error: Option<io::Error>,
) -> Result<(), ActorProcessingErr> {
    // Every held line, each batch after the journal has room (bounded), then a last line
    // without its newline.
    while !st.held.is_empty() {
        st.release_held().await;
    }
    st.lines.finish(&st.args.shared);
    if let Some(e) = error {
        tracing::warn!(session = %st.args.shared.id, error = %e, "output read failed; treating as end of output");
    }
    st.args.eof.send_replace(true);
    if st.exit_watch.is_some() {
        exited(st.exit_watch.as_ref()).await;
        report_exit(st);
    }
    st.nudge_screen();
    myself.stop(Some("eof".into()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_a_whole_burst_within_the_window() {
        let mut v = Volume::default();
        // 7 reads of 32 KiB: 224 KiB, not yet a burst; the 8th makes 256 KiB.
        for _ in 0..7 {
            assert!(!v.flooding(32 * 1024));
        }
        assert!(v.flooding(32 * 1024));
        // The count starts over after a flood...
        assert!(!v.flooding(32 * 1024));
        // ...and after a quiet window: the same bytes spread out are no flood.
        let mut v = Volume::default();
        for _ in 0..3 {
            assert!(!v.flooding(128 * 1024 - 1));
            v.since -= FLOOD_WINDOW + Duration::from_millis(1);
        }
    }
}
