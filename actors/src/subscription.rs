//! Subscription: one viewer's merged view of a session — output bytes from an offset, explicit
//! lag ranges, and events — in one order: an event is delivered once every byte written before
//! it has been and before any byte written after it, so "all output, then the exit" holds for
//! every subscriber.
//!
//! A subscription that starts at an offset the Ring no longer holds is first served from the
//! session's scrollback on disk (when the tree persists), up to where the Ring takes over: an
//! exact resume, with no gap while the bytes are retained on disk. What neither holds is an
//! explicit `Lagged`. Only the start is served from disk: a live subscriber that falls behind
//! later is told it lagged (a slow viewer must not turn into disk reads for ever).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use corral_runtime::{Lagged, Read, RingReader};
use tokio::sync::broadcast;

use crate::event::SessionEvent;
use crate::persist::{Chunk, LogReader};
use crate::session::SessionShared;
use crate::session::pace::Pacer;

/// While a session's output flows in bulk, a subscriber waits for this many bytes before it
/// reads (fewer, larger frames for the same bytes), or for the reader's cue
/// ([`corral_runtime::Ring::end_batches`]: every 2 ms tick of a bulk slice that read something,
/// every inline burst, the end of the flow).
const BATCH: usize = 64 * 1024;
/// Longest a subscriber waits for a batch should no cue come; the cues are the usual bound. It
/// is re-armed on every wait, thousands of times a second in a flood: the old 1 ms (a 2 ms
/// `epoll_wait` timeout) expired before the next 4 ms scheduler tick, so every wait reprogrammed
/// the CPU's timer (a VM exit here); 10 ms lies past the tick.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Output bytes starting at `offset`.
    Output {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes, after [`Subscription::set_headroom`] zeroed bytes reserved at the front
        /// (so a gateway can write its frame header in place instead of copying the payload).
        bytes: Vec<u8>,
    },
    /// Bytes `[from, to)` were lost to this subscriber (it fell behind the retained window).
    Lagged(Lagged),
    /// A session event; every byte before `event.offset` was delivered before it.
    Event(SessionEvent),
    /// This subscriber fell so far behind on events that `n` were dropped for it.
    EventsLagged(u64),
    /// The session was removed: nothing more will come.
    Closed,
}

/// A live subscription; counts as a viewer until dropped.
pub struct Subscription {
    /// The session.
    shared: Arc<SessionShared>,
    /// Cursor into the output.
    reader: RingReader,
    /// Future events.
    events: broadcast::Receiver<SessionEvent>,
    /// An event waiting for the output before it to be delivered.
    pending: Option<SessionEvent>,
    /// Past events from the journal to deliver first, each where it happened in the output
    /// (a resumed subscription's `after`; see [`Subscription::replay`]).
    replay: std::collections::VecDeque<SessionEvent>,
    /// Past events that could not be replayed (past the bound, or missing from the journal):
    /// said as `EventsLagged` before anything else.
    replay_missed: u64,
    /// Live events up to this sequence number were replayed already (or skipped): not again.
    live_after: u64,
    /// While catching up from disk: the next offset to read there (the Ring reader waits).
    backfill: Option<Backfill>,
    /// Zeroed bytes reserved at the front of every `Item::Output`.
    headroom: usize,
    /// Where it reads, for the session's output to wait for (`crate::session::pace`).
    pacer: Arc<Pacer>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("session", &self.shared.id)
            .field("cursor", &self.cursor())
            .finish_non_exhaustive()
    }
}

/// Catching up from the scrollback log.
struct Backfill {
    /// Next offset to deliver.
    cursor: u64,
    /// The log as of the last look (refreshed when the cursor reaches its end).
    log: Option<LogReader>,
}

impl Subscription {
    pub(crate) fn new(shared: Arc<SessionShared>, reader: RingReader) -> Self {
        let (events, through) = shared.events_after();
        Self::with_events(shared, reader, events, through)
    }

    /// A subscription whose future events come from `events`, the first of them after
    /// sequence number `through` (see [`SessionShared::events_after`]).
    pub(crate) fn with_events(
        shared: Arc<SessionShared>,
        reader: RingReader,
        events: broadcast::Receiver<SessionEvent>,
        through: u64,
    ) -> Self {
        shared.viewers.fetch_add(1, Ordering::Relaxed);
        let backfill =
            (shared.journal().is_some() && reader.cursor() < shared.ring.tail()).then(|| {
                Backfill {
                    cursor: reader.cursor(),
                    log: None,
                }
            });
        let pacer = shared.pacers.join();
        if backfill.is_none() {
            pacer.at(reader.cursor());
        }
        Self {
            shared,
            reader,
            events,
            pending: None,
            replay: Default::default(),
            replay_missed: 0,
            live_after: through,
            backfill,
            headroom: 0,
            pacer,
        }
    }

    /// Past events to deliver before the live ones: `events` (oldest first, from the
    /// journal, none after [`last_event`](Self::last_event): those come live), each once every
    /// byte before its offset was delivered — one from before where the output starts comes at
    /// once —, after an `EventsLagged` of `missed` if some could not be read.
    pub(crate) fn replay(&mut self, events: Vec<SessionEvent>, missed: u64) {
        self.replay = events.into();
        self.replay_missed = missed;
    }

    /// The sequence number of the session's last event before this subscription's live ones
    /// (what a client that saw no event resumes `after`).
    pub fn last_event(&self) -> u64 {
        self.live_after
    }

    /// Reserves `n` zeroed bytes at the front of every later `Item::Output`'s `bytes`: the
    /// output itself is `bytes[n..]`, and `offset` is that of `bytes[n]`. For a frame header
    /// written in place: the payload is then copied once (Ring → frame), not twice.
    pub fn set_headroom(&mut self, n: usize) {
        self.headroom = n;
    }

    /// The next output offset this subscriber will receive.
    pub fn cursor(&self) -> u64 {
        match &self.backfill {
            Some(b) => b.cursor,
            None => self.reader.cursor(),
        }
    }

    /// Waits for the next item; at most `max` output bytes at a time (a `max` of 0 is taken as
    /// 1: an item of no bytes would come at once, and a loop around it would spin). Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Item {
        let item = self.next_item(max.max(1)).await;
        // Taken: the session's output may go a Ring beyond this (see `session::pace`).
        match &self.backfill {
            Some(_) => self.pacer.idle(),
            None => self.pacer.at(self.reader.cursor()),
        }
        item
    }

    async fn next_item(&mut self, max: usize) -> Item {
        if self.replay_missed > 0 {
            return Item::EventsLagged(std::mem::take(&mut self.replay_missed));
        }
        loop {
            if let Some(ev) = self.replay.front() {
                let cursor = self.cursor();
                if cursor >= ev.offset {
                    // invariant: checked Some just above.
                    return Item::Event(self.replay.pop_front().expect("replayed event"));
                }
                // Up to the event's offset (its bytes exist: it was emitted after them).
                let upto = usize::try_from(ev.offset - cursor).map_or(max, |n| n.min(max));
                if self.backfill.is_some() {
                    if let Some(item) = self.read_disk(upto).await {
                        return item;
                    }
                    continue;
                }
                return read(&self.shared, &mut self.reader, upto, self.headroom).await;
            }
            if self.backfill.is_some() {
                if let Some(item) = self.read_disk(max).await {
                    return item;
                }
                continue;
            }
            if let Some(ev) = &self.pending {
                let cursor = self.reader.cursor();
                if cursor >= ev.offset {
                    // invariant: checked Some just above.
                    return Item::Event(self.pending.take().expect("pending event"));
                }
                // Up to the event's offset, not past it: a viewer acts on an event where it
                // happened in the output (a new process's modes start after its `spawned`).
                let upto = usize::try_from(ev.offset - cursor).map_or(max, |n| n.min(max));
                return read(&self.shared, &mut self.reader, upto, self.headroom).await;
            }
            tokio::select! {
                biased;
                ev = self.events.recv() => match ev {
                    Ok(ev) if ev.seq <= self.live_after => {}
                    Ok(ev) => self.pending = Some(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => return Item::EventsLagged(n),
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                item = read(&self.shared, &mut self.reader, max, self.headroom) => return item,
            }
        }
    }
}

impl Subscription {
    /// One step of the catch-up from disk: an item, or None once the Ring takes over.
    async fn read_disk(&mut self, max: usize) -> Option<Item> {
        // invariant: called only while backfilling.
        let b = self.backfill.as_mut().expect("backfilling");
        let ring = &self.shared.ring;
        if b.cursor >= ring.tail() {
            // The Ring holds it from here (or it was never dropped): switch over.
            match ring.reader(b.cursor) {
                Ok(r) => self.reader = r,
                Err(e) => tracing::warn!(error = %e, "backfill ended past the head"),
            }
            self.backfill = None;
            return None;
        }
        if b.log.as_ref().is_none_or(|l| l.next_offset() <= b.cursor) {
            // invariant: the subscription was made with a journal.
            let journal = self.shared.journal().expect("journal");
            match journal.reader(self.shared.id).await {
                Ok(log) if log.next_offset() > b.cursor => b.log = Some(log),
                Ok(_) | Err(_) => {
                    // Neither the disk nor the Ring has these bytes: say so, then go on.
                    let to = ring.tail();
                    let lag = Lagged { from: b.cursor, to };
                    b.cursor = to;
                    self.shared.lag_events.fetch_add(1, Ordering::Relaxed);
                    return Some(Item::Lagged(lag));
                }
            }
        }
        // invariant: set just above when missing.
        let log = b.log.clone().expect("log reader");
        let from = b.cursor;
        let chunks = tokio::task::spawn_blocking(move || log.read_range(from, max)).await;
        let first = match chunks {
            Ok(Ok(chunks)) => chunks.into_iter().next(),
            Ok(Err(e)) => {
                tracing::warn!(session = %self.shared.id, error = %e, "scrollback read failed");
                None
            }
            Err(e) => {
                tracing::warn!(session = %self.shared.id, error = %e, "scrollback read task failed");
                None
            }
        };
        let item = match first {
            Some(Chunk::Data { offset, bytes }) if offset <= from => {
                let payload = &bytes[(from - offset) as usize..];
                b.cursor = from + payload.len() as u64;
                let mut out = Vec::with_capacity(self.headroom + payload.len());
                out.resize(self.headroom, 0);
                out.extend_from_slice(payload);
                Item::Output {
                    offset: from,
                    bytes: out,
                }
            }
            Some(Chunk::Gap { to, .. }) => {
                b.cursor = to.max(from + 1);
                Item::Lagged(Lagged { from, to: b.cursor })
            }
            _ => {
                let to = ring.tail().max(from);
                b.cursor = to;
                Item::Lagged(Lagged { from, to })
            }
        };
        if matches!(item, Item::Lagged(_)) {
            self.shared.lag_events.fetch_add(1, Ordering::Relaxed);
        }
        Some(item)
    }
}

/// Output only (no waiting on events): the next bytes (after `headroom` zeroes), a lag, or
/// Closed.
async fn read(
    shared: &SessionShared,
    reader: &mut RingReader,
    max: usize,
    headroom: usize,
) -> Item {
    if reader.batching() {
        // Bulk output: wait (briefly) for a batch, so the client gets fewer, larger frames.
        let batch = max.min(BATCH);
        if tokio::time::timeout(BATCH_WAIT, reader.wait_for(batch))
            .await
            .is_err()
        {
            tracing::trace!(session = %shared.id, "batch wait timed out");
        }
    }
    let mut buf = vec![0; headroom];
    match reader.read(&mut buf, max).await {
        Read::Data { offset, .. } => Item::Output { offset, bytes: buf },
        Read::Lagged(l) => {
            shared.lag_events.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session = %shared.id, from = l.from, to = l.to, "subscriber lagged");
            Item::Lagged(l)
        }
        Read::Closed => Item::Closed,
        // invariant: the async read waits instead of answering Empty.
        Read::Empty => Item::Output {
            offset: reader.cursor(),
            bytes: vec![0; headroom],
        },
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}
