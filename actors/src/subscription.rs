//! Subscription: one viewer's merged view of a session — output bytes from an offset, explicit
//! lag ranges, and events — in one order: an event is delivered only once every byte written
//! before it has been, so "all output, then the exit" holds for every subscriber.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use corral_runtime::{Lagged, Read, RingReader};
use tokio::sync::broadcast;

use crate::event::SessionEvent;
use crate::shared::SessionShared;

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Output bytes starting at `offset`.
    Output {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
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
}

impl Subscription {
    pub(crate) fn new(shared: Arc<SessionShared>, reader: RingReader) -> Self {
        shared.viewers.fetch_add(1, Ordering::Relaxed);
        let events = shared.events();
        Self {
            shared,
            reader,
            events,
            pending: None,
        }
    }

    /// The next output offset this subscriber will receive.
    pub fn cursor(&self) -> u64 {
        self.reader.cursor()
    }

    /// Waits for the next item; at most `max` output bytes at a time. Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Item {
        loop {
            if let Some(ev) = &self.pending {
                if self.reader.cursor() >= ev.offset {
                    // invariant: checked Some just above.
                    return Item::Event(self.pending.take().expect("pending event"));
                }
                return read(&self.shared, &mut self.reader, max).await;
            }
            tokio::select! {
                biased;
                ev = self.events.recv() => match ev {
                    Ok(ev) => self.pending = Some(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => return Item::EventsLagged(n),
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                item = read(&self.shared, &mut self.reader, max) => return item,
            }
        }
    }
}

/// Output only (no waiting on events): the next bytes, a lag, or Closed.
async fn read(shared: &SessionShared, reader: &mut RingReader, max: usize) -> Item {
    let mut buf = Vec::new();
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
            bytes: Vec::new(),
        },
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}
