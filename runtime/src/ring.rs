//! Ring: a bounded byte log addressed by absolute offset, with many independent readers.
//!
//! It carries a terminal session's output bytes, the hot path, so it is deliberately simple: one
//! short mutex section per append or read (a memcpy, two at the wrap) and no per-reader state in
//! the ring. A slow reader therefore can never make the writer wait or make memory grow; when it
//! falls behind the retained window it is told exactly which bytes it lost ([`Lagged`]) and
//! resumes at the oldest retained byte, instead of losing them silently.
//!
//! Offsets count bytes since the ring was created (or since [`Ring::with_start`]'s offset), like a
//! Kafka offset per byte, so a client can reconnect and say "give me everything from N".
//!
//! Half of this file is its unit tests (the wrap, lag and batching cases, next to the code they
//! pin down); the code itself is ~450 lines.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// First allocation size, so a burst of tiny appends does not reallocate on every call.
const MIN_ALLOC: usize = 256;

/// Bytes `[from, to)` were overwritten before this reader got to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    /// First lost offset (the reader's cursor when it lagged).
    pub from: u64,
    /// Oldest retained offset at that moment; the reader continues from here.
    pub to: u64,
}

impl Lagged {
    /// How many bytes were lost.
    pub fn lost(&self) -> u64 {
        self.to - self.from
    }
}

/// Outcome of one read from a [`Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a Read says whether bytes were appended to `out`, lost, or the stream ended"]
pub enum Read {
    /// `len` bytes starting at `offset` were appended to `out`.
    Data {
        /// Offset of the first byte appended.
        offset: u64,
        /// Number of bytes appended (0 only when `max` was 0).
        len: usize,
    },
    /// Bytes were lost before they could be read; nothing was appended to `out`.
    Lagged(Lagged),
    /// No data yet at this offset and the ring is still open (only from non-waiting reads).
    Empty,
    /// Everything retained has been read and the writer closed the ring.
    Closed,
}

/// [`Ring::reader`] was asked to start past the head, at bytes that do not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reader offset {from} is beyond the ring head {head}")]
pub struct OffsetBeyondHead {
    /// The offset asked for.
    pub from: u64,
    /// The ring's head when asked.
    pub head: u64,
}

/// Mutable state, all behind one mutex: appends and reads are short memcpys, so a single lock is
/// both simplest and fast enough.
struct State {
    /// Physical storage. While `len < capacity` it holds offsets `[origin, head)` linearly (it
    /// has never wrapped); after that `len == capacity` and offset `o` lives at
    /// `(o - origin) % capacity`.
    buf: Vec<u8>,
    /// Offset of the next byte to be appended.
    head: u64,
    /// Oldest retained offset.
    tail: u64,
    /// The writer is gone.
    closed: bool,
    /// The lowest head an async reader is waiting for (`u64::MAX`: nobody waits): an append that
    /// reaches it notifies. This keeps `Notify`'s lock off the append path while nobody waits, and
    /// a reader waiting for a batch ([`RingReader::wait_for`]) is not woken by every small append.
    wake_at: u64,
    /// Bumped by [`Ring::end_batches`]: a batch wait that began before the bump is over.
    batch_epoch: u64,
}

/// What every clone of a [`Ring`] shares.
struct Shared {
    /// Most bytes retained at once.
    capacity: usize,
    /// Offset of the first byte ever stored, which lives at buffer index 0.
    origin: u64,
    /// The log itself.
    state: Mutex<State>,
    /// Wakes async readers on append and on close.
    notify: Notify,
    /// The writer has asked readers to batch ([`Ring::set_batching`]). Written only under
    /// `state`'s lock, so [`RingReader::wait_for`] sees it consistently with its cue; read without
    /// the lock by [`RingReader::batching`].
    batching: AtomicBool,
}

/// A bounded, byte-offset-addressed log with many independent readers (cheap to clone).
#[derive(Clone)]
pub struct Ring {
    /// The log shared by all clones and readers.
    shared: Arc<Shared>,
}

impl Ring {
    /// An empty ring retaining at most `capacity` bytes, numbering from offset 0.
    pub fn new(capacity: usize) -> Ring {
        Ring::with_start(capacity, 0)
    }

    /// An empty ring whose first byte will have offset `start` (to resume numbering after a
    /// restart).
    pub fn with_start(capacity: usize, start: u64) -> Ring {
        Ring {
            shared: Arc::new(Shared {
                capacity,
                origin: start,
                state: Mutex::new(State {
                    buf: Vec::new(),
                    head: start,
                    tail: start,
                    closed: false,
                    wake_at: u64::MAX,
                    batch_epoch: 0,
                }),
                notify: Notify::new(),
                batching: AtomicBool::new(false),
            }),
        }
    }

    /// Most bytes retained at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Total bytes ever appended (plus the start offset): the offset of the next byte.
    pub fn head(&self) -> u64 {
        self.shared.state.lock().head
    }

    /// Oldest retained offset; `[tail, head)` is readable.
    pub fn tail(&self) -> u64 {
        self.shared.state.lock().tail
    }

    /// Bytes of buffer allocated now (grows lazily, never beyond `capacity`).
    pub fn allocated(&self) -> usize {
        self.shared.state.lock().buf.capacity()
    }

    /// Whether [`Ring::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// Appends `bytes`, overwriting the oldest if full, wakes waiting readers, and returns the
    /// new head. Never waits for readers. Of an append longer than the capacity only its last
    /// `capacity` bytes are kept, but the head still advances by its full length.
    pub fn append(&self, bytes: &[u8]) -> u64 {
        let shared = &*self.shared;
        let cap = shared.capacity;
        let (head, wake) = {
            let mut st = shared.state.lock();
            let new_head = st.head + bytes.len() as u64;
            // Only the last `cap` bytes can survive this append; copying the rest is wasted.
            let keep = &bytes[bytes.len().saturating_sub(cap)..];
            if !keep.is_empty() {
                let written = new_head - shared.origin;
                if written <= cap as u64 {
                    // Never wrapped, so the buffer is exactly [origin, head) and `keep` (all of
                    // `bytes`) goes at its end.
                    st.grow(written as usize, cap);
                    st.buf.extend_from_slice(keep);
                } else {
                    if st.buf.len() < cap {
                        // First wrap: take the whole capacity. The zeroed gap is overwritten
                        // by `keep` below, since everything not in the old data is in `keep`.
                        st.grow(cap, cap);
                        st.buf.resize(cap, 0);
                    }
                    let at = shared.index(new_head - keep.len() as u64);
                    let first = keep.len().min(cap - at);
                    st.buf[at..at + first].copy_from_slice(&keep[..first]);
                    st.buf[..keep.len() - first].copy_from_slice(&keep[first..]);
                }
            }
            st.head = new_head;
            st.tail = st.tail.max(new_head.saturating_sub(cap as u64));
            let wake = new_head >= st.wake_at;
            if wake {
                st.wake_at = u64::MAX;
            }
            (new_head, wake)
        };
        if wake {
            shared.notify.notify_waiters();
        }
        head
    }

    /// Moves the head forward to `offset` with no bytes: `[head, offset)` exists nowhere (it was
    /// lost upstream), so every reader behind `offset` gets a [`Lagged`] naming the range, and
    /// the next append lands at `offset`. Nothing happens when `offset` is not past the head.
    pub fn skip_to(&self, offset: u64) {
        let shared = &*self.shared;
        let cap = shared.capacity;
        let wake = {
            let mut st = shared.state.lock();
            if offset <= st.head {
                return;
            }
            // Keep the layout `append` relies on: `min(head - origin, cap)` bytes, offset `o`
            // at `(o - origin) % cap`. The filler is never read (the tail moves to `offset`).
            let written = (offset - shared.origin).min(cap as u64) as usize;
            if st.buf.len() < written {
                st.grow(written, cap);
                st.buf.resize(written, 0);
            }
            st.head = offset;
            st.tail = offset;
            let wake = offset >= st.wake_at;
            if wake {
                st.wake_at = u64::MAX;
            }
            wake
        };
        if wake {
            shared.notify.notify_waiters();
        }
    }

    /// Ends every pending [`RingReader::wait_for`] now, whether or not its batch is complete: the
    /// writer's cue that what has arrived should go out (a tick of a flood). With the writer
    /// giving this cue, batching readers need no timer of their own. Cheap when nobody waits (one
    /// uncontended lock, no wake-up).
    pub fn end_batches(&self) {
        self.cue(None);
    }

    /// The writer's output floods (`true`: readers should batch, see
    /// [`RingReader::wait_for`]) or stopped flooding; either way pending batches end now. A
    /// reader that starts a batch wait after batching stopped returns at once, so no batch
    /// outlives the flood (the flag and the cue change under the same lock as the wait checks).
    pub fn set_batching(&self, on: bool) {
        self.cue(Some(on));
    }

    /// Ends pending batch waits, after setting the batching flag if given.
    fn cue(&self, batching: Option<bool>) {
        let waiting = {
            let mut st = self.shared.state.lock();
            if let Some(on) = batching {
                self.shared.batching.store(on, Ordering::Relaxed);
            }
            let waiting = st.wake_at != u64::MAX;
            if waiting {
                st.batch_epoch += 1;
                st.wake_at = u64::MAX;
            }
            waiting
        };
        if waiting {
            self.shared.notify.notify_waiters();
        }
    }

    /// Marks the end of the stream: readers drain what is retained, then get [`Read::Closed`].
    /// Bytes appended after closing are still stored.
    pub fn close(&self) {
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            st.wake_at = u64::MAX;
        }
        self.shared.notify.notify_waiters();
    }

    /// A reader whose first read is at `from`; `from` below the tail makes that read a
    /// [`Read::Lagged`], `from` above the head is an error.
    pub fn reader(&self, from: u64) -> Result<RingReader, OffsetBeyondHead> {
        let head = self.head();
        if from > head {
            return Err(OffsetBeyondHead { from, head });
        }
        Ok(RingReader {
            ring: self.clone(),
            cursor: from,
            lags: 0,
        })
    }

    /// A reader at the current head: it sees only bytes appended from now on.
    pub fn reader_at_head(&self) -> RingReader {
        RingReader {
            ring: self.clone(),
            cursor: self.head(),
            lags: 0,
        }
    }

    /// Stateless read of up to `max` bytes at `from` into `out`, with [`RingReader::try_read`]'s
    /// semantics. An offset at or past the head reads as [`Read::Empty`] (or [`Read::Closed`]).
    pub fn read_at(&self, from: u64, out: &mut Vec<u8>, max: usize) -> Read {
        let st = self.shared.state.lock();
        self.shared.read_locked(&st, from, out, max)
    }
}

impl Shared {
    /// Buffer index of a retained offset (only meaningful for offsets in `[tail, head]`, and
    /// only called with a non-zero capacity).
    fn index(&self, offset: u64) -> usize {
        ((offset - self.origin) % self.capacity as u64) as usize
    }

    /// The read shared by every path: lagged, data (at most two copies), empty or closed.
    fn read_locked(&self, st: &State, from: u64, out: &mut Vec<u8>, max: usize) -> Read {
        if from < st.tail {
            return Read::Lagged(Lagged { from, to: st.tail });
        }
        if from >= st.head {
            return if st.closed { Read::Closed } else { Read::Empty };
        }
        // Bounded by head - from <= capacity, so it fits in usize.
        let len = (st.head - from).min(max as u64) as usize;
        if len > 0 {
            // from < head with a retained byte implies capacity > 0, so index() is safe.
            let at = self.index(from);
            let first = len.min(self.capacity - at);
            out.reserve(len);
            out.extend_from_slice(&st.buf[at..at + first]);
            out.extend_from_slice(&st.buf[..len - first]);
        }
        Read::Data { offset: from, len }
    }
}

impl State {
    /// Makes room for `want` bytes (≤ `cap`), doubling so growth costs O(log cap) reallocations,
    /// but never allocating past `cap`.
    fn grow(&mut self, want: usize, cap: usize) {
        let have = self.buf.capacity();
        if want > have {
            let target = want.max(have.saturating_mul(2)).max(MIN_ALLOC).min(cap);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("Ring")
            .field("capacity", &self.shared.capacity)
            .field("head", &st.head)
            .field("tail", &st.tail)
            .field("closed", &st.closed)
            .field("allocated", &st.buf.capacity())
            .finish()
    }
}

/// One independent cursor over a [`Ring`]; the ring does not know it exists.
#[derive(Debug)]
pub struct RingReader {
    /// The ring read from.
    ring: Ring,
    /// Next offset to read.
    cursor: u64,
    /// How many `Lagged` this reader has returned.
    lags: u64,
}

impl RingReader {
    /// Next offset this reader will read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How many times this reader has returned [`Read::Lagged`].
    pub fn lag_count(&self) -> u64 {
        self.lags
    }

    /// The ring this reader reads.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Appends up to `max` bytes at the cursor to `out` and advances, without waiting.
    pub fn try_read(&mut self, out: &mut Vec<u8>, max: usize) -> Read {
        let read = self.ring.read_at(self.cursor, out, max);
        self.advance(read)
    }

    /// Like [`RingReader::try_read`], but waits for data or close instead of returning
    /// [`Read::Empty`]. Cancel-safe: the cursor and `out` change only when it returns.
    pub async fn read(&mut self, out: &mut Vec<u8>, max: usize) -> Read {
        loop {
            // Fast path: data is usually there, and this skips Notify's lock entirely.
            let read = self.try_read(out, max);
            if read != Read::Empty {
                return read;
            }
            // Own handle, so the pending `Notified` does not borrow `self` across `advance`.
            let shared = Arc::clone(&self.ring.shared);
            // Register interest *before* re-checking, so an append between the check and the
            // await still wakes us (the lost-wakeup race).
            let mut notified = pin!(shared.notify.notified());
            notified.as_mut().enable();
            let read = {
                let mut st = shared.state.lock();
                let read = shared.read_locked(&st, self.cursor, out, max);
                if read == Read::Empty {
                    st.wake_at = st.wake_at.min(self.cursor + 1);
                }
                read
            };
            if read != Read::Empty {
                return self.advance(read);
            }
            notified.await;
        }
    }

    /// Whether the writer asks readers to batch now ([`Ring::set_batching`]).
    pub fn batching(&self) -> bool {
        self.ring.shared.batching.load(Ordering::Relaxed)
    }

    /// While the writer batches: waits until at least `n` bytes past the cursor have been
    /// appended, the ring is closed, or the writer cues ([`Ring::end_batches`], or batching
    /// stops). Returns at once when the writer is not batching. Cancel-safe (it changes nothing).
    pub async fn wait_for(&self, n: usize) {
        let shared = &*self.ring.shared;
        let target = self.cursor.saturating_add(n as u64);
        let mut epoch = None;
        loop {
            let mut notified = pin!(shared.notify.notified());
            notified.as_mut().enable();
            {
                let mut st = shared.state.lock();
                let started = *epoch.get_or_insert(st.batch_epoch);
                if st.head >= target
                    || st.closed
                    || st.batch_epoch != started
                    || !shared.batching.load(Ordering::Relaxed)
                {
                    return;
                }
                st.wake_at = st.wake_at.min(target);
            }
            notified.await;
        }
    }

    /// Moves the cursor past what `read` reported.
    fn advance(&mut self, read: Read) -> Read {
        match read {
            Read::Data { len, .. } => self.cursor += len as u64,
            Read::Lagged(lagged) => {
                self.cursor = lagged.to;
                self.lags += 1;
            }
            Read::Empty | Read::Closed => {}
        }
        read
    }
}

#[cfg(test)]
mod tests;
