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
mod tests {
    use std::time::Duration;

    use super::*;

    /// Guard so a broken wakeup fails the test instead of hanging it.
    const GUARD: Duration = Duration::from_secs(5);

    fn bytes(range: std::ops::Range<u32>) -> Vec<u8> {
        range.map(|i| (i % 251) as u8).collect()
    }

    /// Waits until an async reader has found nothing and parked, so a test exercises the wakeup
    /// path rather than the fast path.
    async fn until_parked(ring: &Ring) {
        tokio::time::timeout(GUARD, async {
            while ring.shared.state.lock().wake_at == u64::MAX {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    fn read_all(reader: &mut RingReader) -> (Vec<u8>, Vec<Read>) {
        let mut out = Vec::new();
        let mut reads = Vec::new();
        loop {
            match reader.try_read(&mut out, usize::MAX) {
                Read::Empty | Read::Closed => return (out, reads),
                read => reads.push(read),
            }
        }
    }

    #[test]
    fn allocates_lazily_and_never_beyond_capacity() {
        let ring = Ring::new(10_000);
        assert_eq!(ring.allocated(), 0);
        ring.append(&[]);
        assert_eq!(ring.allocated(), 0, "an empty append allocates nothing");
        ring.append(b"hello");
        let first = ring.allocated();
        assert!((5..=MIN_ALLOC).contains(&first), "first allocation {first}");
        let mut seen = vec![first];
        for _ in 0..100 {
            ring.append(&[7; 333]);
            assert!(ring.allocated() <= 10_000);
            if seen.last() != Some(&ring.allocated()) {
                seen.push(ring.allocated());
            }
        }
        assert_eq!(ring.allocated(), 10_000);
        assert!(seen.len() >= 3, "grew in steps: {seen:?}");
        // Doubling: each step at most twice the previous (except the capped last one).
        for pair in seen.windows(2) {
            assert!(pair[1] <= (pair[0] * 2).max(MIN_ALLOC), "{seen:?}");
        }
    }

    #[test]
    fn small_capacity_allocates_exactly_capacity() {
        let ring = Ring::new(3);
        ring.append(b"a");
        assert_eq!(ring.allocated(), 3);
        ring.append(b"bcdefg");
        assert_eq!(ring.allocated(), 3);
    }

    #[test]
    fn wraps_around_correctly() {
        let ring = Ring::new(8);
        let data = bytes(0..100);
        let mut at = 0;
        for chunk in [3, 5, 1, 7, 2, 6, 8, 4] {
            ring.append(&data[at..at + chunk]);
            at += chunk;
            let head = ring.head();
            assert_eq!(head, at as u64);
            assert_eq!(ring.tail(), head.saturating_sub(8));
            // Every retained byte, from every start offset, reads back correctly.
            for from in ring.tail()..head {
                let mut out = Vec::new();
                let read = ring.read_at(from, &mut out, usize::MAX);
                let len = (head - from) as usize;
                assert_eq!(read, Read::Data { offset: from, len });
                assert_eq!(out, &data[from as usize..at]);
            }
        }
        // Partial reads across the wrap point.
        let mut reader = ring.reader(ring.tail()).unwrap();
        let mut out = Vec::new();
        while let Read::Data { .. } = reader.try_read(&mut out, 3) {}
        assert_eq!(out, &data[at - 8..at]);
    }

    #[test]
    fn oversize_append_keeps_last_capacity_bytes() {
        let ring = Ring::new(10);
        ring.append(b"xyz");
        let big = bytes(0..25);
        assert_eq!(ring.append(&big), 28);
        assert_eq!((ring.tail(), ring.head()), (18, 28));
        let mut out = Vec::new();
        assert_eq!(
            ring.read_at(18, &mut out, 100),
            Read::Data {
                offset: 18,
                len: 10
            }
        );
        assert_eq!(out, &big[15..]);
        assert_eq!(ring.allocated(), 10);
        // And once full, again.
        let big2 = bytes(100..137);
        ring.append(&big2);
        out.clear();
        assert_eq!(
            ring.read_at(ring.tail(), &mut out, 100),
            Read::Data {
                offset: 55,
                len: 10
            }
        );
        assert_eq!(out, &big2[27..]);
    }

    #[test]
    fn reader_behind_tail_gets_exact_lagged_then_data() {
        let ring = Ring::new(4);
        ring.append(b"abcdefghij");
        let mut reader = ring.reader(2).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            reader.try_read(&mut out, 100),
            Read::Lagged(Lagged { from: 2, to: 6 })
        );
        assert!(out.is_empty(), "a Lagged appends nothing");
        assert_eq!((reader.cursor(), reader.lag_count()), (6, 1));
        assert_eq!(
            reader.try_read(&mut out, 100),
            Read::Data { offset: 6, len: 4 }
        );
        assert_eq!(out, b"ghij");
        assert_eq!(reader.try_read(&mut out, 100), Read::Empty);

        // A live reader overtaken by the writer lags too.
        ring.append(b"0123456");
        assert_eq!(
            reader.try_read(&mut out, 100),
            Read::Lagged(Lagged { from: 10, to: 13 })
        );
        assert_eq!(reader.lag_count(), 2);
        assert_eq!(Lagged { from: 10, to: 13 }.lost(), 3);
    }

    #[test]
    fn reader_beyond_head_is_an_error() {
        let ring = Ring::new(16);
        ring.append(b"abc");
        let err = ring.reader(4).unwrap_err();
        assert_eq!(err, OffsetBeyondHead { from: 4, head: 3 });
        let message = err.to_string();
        assert!(message.contains('4') && message.contains('3'), "{message}");
        let mut at_head = ring.reader(3).unwrap();
        assert_eq!(at_head.try_read(&mut Vec::new(), 10), Read::Empty);
        assert_eq!(ring.reader_at_head().cursor(), 3);
    }

    #[test]
    fn close_drains_then_reports_closed() {
        let ring = Ring::new(16);
        let mut reader = ring.reader(0).unwrap();
        ring.append(b"bye");
        assert!(!ring.is_closed());
        ring.close();
        assert!(ring.is_closed());
        let mut out = Vec::new();
        assert_eq!(
            reader.try_read(&mut out, 2),
            Read::Data { offset: 0, len: 2 }
        );
        assert_eq!(
            reader.try_read(&mut out, 2),
            Read::Data { offset: 2, len: 1 }
        );
        assert_eq!(reader.try_read(&mut out, 2), Read::Closed);
        assert_eq!(reader.try_read(&mut out, 2), Read::Closed);
        assert_eq!(out, b"bye");
        assert_eq!(ring.read_at(3, &mut out, 2), Read::Closed);
        // A lagging reader still learns of its loss before Closed.
        let small = Ring::new(2);
        small.append(b"abcd");
        small.close();
        let (out, reads) = read_all(&mut small.reader(0).unwrap());
        assert_eq!(
            reads,
            vec![
                Read::Lagged(Lagged { from: 0, to: 2 }),
                Read::Data { offset: 2, len: 2 }
            ]
        );
        assert_eq!(out, b"cd");
    }

    #[test]
    fn zero_capacity_retains_nothing() {
        let ring = Ring::new(0);
        assert_eq!(ring.append(b"abc"), 3);
        assert_eq!((ring.tail(), ring.head(), ring.allocated()), (3, 3, 0));
        let mut reader = ring.reader(0).unwrap();
        assert_eq!(
            reader.try_read(&mut Vec::new(), 10),
            Read::Lagged(Lagged { from: 0, to: 3 })
        );
        assert_eq!(reader.try_read(&mut Vec::new(), 10), Read::Empty);
    }

    #[test]
    fn with_start_resumes_numbering() {
        let ring = Ring::with_start(4, 1_000);
        assert_eq!((ring.tail(), ring.head()), (1_000, 1_000));
        assert!(ring.reader(999).is_ok(), "below tail is allowed (it lags)");
        assert!(ring.reader(1_001).is_err());
        let mut reader = ring.reader(1_000).unwrap();
        assert_eq!(ring.append(b"abcdef"), 1_006);
        assert_eq!(ring.tail(), 1_002);
        let mut out = Vec::new();
        assert_eq!(
            reader.try_read(&mut out, 10),
            Read::Lagged(Lagged {
                from: 1_000,
                to: 1_002
            })
        );
        assert_eq!(
            reader.try_read(&mut out, 10),
            Read::Data {
                offset: 1_002,
                len: 4
            }
        );
        assert_eq!(out, b"cdef");
        let mut early = ring.reader(500).unwrap();
        assert_eq!(
            early.try_read(&mut out, 10),
            Read::Lagged(Lagged {
                from: 500,
                to: 1_002
            })
        );
    }

    #[test]
    fn max_zero_reads_nothing() {
        let ring = Ring::new(4);
        ring.append(b"ab");
        let mut reader = ring.reader(0).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            reader.try_read(&mut out, 0),
            Read::Data { offset: 0, len: 0 }
        );
        assert_eq!(reader.cursor(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn lagged_serializes() {
        let lagged = Lagged { from: 3, to: 9 };
        let json = serde_json::to_string(&lagged).unwrap();
        assert_eq!(json, r#"{"from":3,"to":9}"#);
        assert_eq!(serde_json::from_str::<Lagged>(&json).unwrap(), lagged);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_read_wakes_on_append() {
        let ring = Ring::new(64);
        let mut reader = ring.reader(0).unwrap();
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let read = reader.read(&mut out, 64).await;
            (read, out)
        });
        until_parked(&ring).await;
        ring.append(b"hi");
        let (read, out) = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        assert_eq!(read, Read::Data { offset: 0, len: 2 });
        assert_eq!(out, b"hi");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_a_batch_wakes_once_it_is_there_not_on_every_append() {
        let ring = Ring::new(1024);
        ring.set_batching(true);
        let reader = ring.reader(0).unwrap();
        let task = tokio::spawn(async move { reader.wait_for(100).await });
        until_parked(&ring).await;
        for _ in 0..9 {
            ring.append(&[7; 10]);
            // Below the batch: the waiter's mark stays, so no append has notified anyone.
            assert_eq!(ring.shared.state.lock().wake_at, 100);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "woke with 90 of 100 bytes");
        ring.append(&[7; 10]);
        tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        assert_eq!(ring.shared.state.lock().wake_at, u64::MAX);
        // A closed ring ends the wait too.
        let reader = ring.reader(100).unwrap();
        let task = tokio::spawn(async move { reader.wait_for(1 << 20).await });
        until_parked(&ring).await;
        ring.close();
        tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_batches_ends_a_pending_batch_wait_but_not_later_ones() {
        let ring = Ring::new(1024);
        // Nobody waits: a no-op (no epoch bump a later wait could mistake for its own).
        ring.set_batching(true);
        ring.end_batches();
        assert_eq!(ring.shared.state.lock().batch_epoch, 0);
        let reader = ring.reader(0).unwrap();
        let task = tokio::spawn(async move {
            reader.wait_for(100).await;
            reader
        });
        until_parked(&ring).await;
        ring.append(&[7; 10]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "woke with 10 of 100 bytes");
        ring.end_batches();
        let reader = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        // A wait that starts after the cue waits for its own batch (or the next cue).
        let task = tokio::spawn(async move { reader.wait_for(100).await });
        until_parked(&ring).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "an old cue ended a new wait");
        ring.end_batches();
        tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_batch_wait_outlives_the_flood() {
        let ring = Ring::new(1024);
        let reader = ring.reader(0).unwrap();
        // Not batching: no wait at all.
        assert!(!reader.batching());
        tokio::time::timeout(GUARD, reader.wait_for(100))
            .await
            .unwrap();
        ring.set_batching(true);
        assert!(reader.batching());
        let task = tokio::spawn(async move {
            reader.wait_for(100).await;
            reader
        });
        until_parked(&ring).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "woke with nothing while batching");
        // The flood ends: the pending wait ends, and a wait begun afterwards returns at once.
        ring.set_batching(false);
        let reader = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        tokio::time::timeout(GUARD, reader.wait_for(100))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_read_wakes_on_close() {
        let ring = Ring::new(64);
        let mut reader = ring.reader(0).unwrap();
        let task = tokio::spawn(async move { reader.read(&mut Vec::new(), 64).await });
        until_parked(&ring).await;
        ring.close();
        let read = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        assert_eq!(read, Read::Closed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_streams_everything_to_many_readers() {
        let ring = Ring::new(1 << 20);
        let data = bytes(0..200_000);
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let mut reader = ring.reader(0).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    match reader.read(&mut out, 1000).await {
                        Read::Data { .. } => {}
                        Read::Closed => return out,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }));
        }
        let writer_ring = ring.clone();
        let writer_data = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in writer_data.chunks(777) {
                writer_ring.append(chunk);
                tokio::task::yield_now().await;
            }
            writer_ring.close();
        });
        tokio::time::timeout(GUARD, writer).await.unwrap().unwrap();
        for task in tasks {
            let out = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
            assert!(out == data, "a reader's stream differs");
        }
    }

    #[tokio::test]
    async fn dropping_a_read_future_loses_nothing() {
        let ring = Ring::new(64);
        let mut reader = ring.reader(0).unwrap();
        let mut out = Vec::new();
        // Cancelled while waiting: no state change.
        let timed_out = tokio::time::timeout(Duration::from_millis(5), reader.read(&mut out, 8))
            .await
            .is_err();
        assert!(timed_out);
        assert_eq!(reader.cursor(), 0);
        ring.append(b"kept");
        // The next read starts exactly where the cancelled one would have.
        let read = tokio::time::timeout(GUARD, reader.read(&mut out, 8))
            .await
            .unwrap();
        assert_eq!(read, Read::Data { offset: 0, len: 4 });
        assert_eq!(out, b"kept");
    }

    #[test]
    fn ring_is_send_and_sync_and_read_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_sync<T: Sync>() {}
        assert_sync::<Ring>();
        assert_sync::<RingReader>();
        let ring = Ring::new(4);
        let mut reader = ring.reader(0).unwrap();
        let mut out = Vec::new();
        let future = reader.read(&mut out, 4);
        assert_send(&future);
    }

    #[test]
    fn a_skip_is_a_lag_for_every_reader_behind_it_and_appends_land_after_it() {
        for (cap, before, skip) in [(16, 5, 9), (16, 5, 40), (16, 30, 50), (0, 3, 7)] {
            let ring = Ring::with_start(cap, 100);
            ring.append(&vec![1; before]);
            let mut reader = ring.reader(100).unwrap();
            let head = 100 + before as u64;
            ring.skip_to(head - 1);
            assert_eq!(ring.head(), head, "never backwards");
            ring.skip_to(head + skip);
            assert_eq!((ring.head(), ring.tail()), (head + skip, head + skip));
            let mut out = Vec::new();
            assert_eq!(
                reader.try_read(&mut out, 64),
                Read::Lagged(Lagged {
                    from: 100,
                    to: head + skip
                })
            );
            ring.append(b"abc");
            if cap > 0 {
                assert_eq!(
                    reader.try_read(&mut out, 64),
                    Read::Data {
                        offset: head + skip,
                        len: 3
                    }
                );
                assert_eq!(out, b"abc");
                // Past the wrap, every byte still lands where it is read back.
                let more: Vec<u8> = (0..40u8).collect();
                ring.append(&more);
                out.clear();
                let mut at = ring.tail();
                while let Read::Data { len, .. } = ring.read_at(at, &mut out, 64) {
                    at += len as u64;
                }
                assert_eq!(out, more[40 - cap..]);
            }
        }
    }
}
