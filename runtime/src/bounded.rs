//! BoundedRef: an `ActorRef` with a capacity. ractor mailboxes are unbounded and have no depth
//! readout, so a fast sender can grow a slow actor's queue without limit. A `BoundedRef` counts
//! messages in flight (sent, not yet handled); at capacity `try_send` answers [`SendError::Full`]
//! at once and counts it, and the depth is readable for introspection.
//!
//! Every message sent this way carries a [`Permit`]; the receiving actor drops it when it is done
//! with the message, which is what lowers the depth. Dropping the message anywhere (a dead actor,
//! a handler that returns early) also releases it, so the count can never leak upwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ractor::{ActorRef, Message};

/// Shared counters of one bounded mailbox, readable without touching the actor.
#[derive(Debug)]
pub struct MailboxGauge {
    /// Messages allowed in flight at once.
    capacity: usize,
    /// Messages sent and not yet released by the receiver.
    depth: AtomicUsize,
    /// How many `try_send` calls were refused because the mailbox was full.
    full: AtomicU64,
}

impl MailboxGauge {
    /// Messages in flight now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Refused sends so far.
    pub fn full_count(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }
}

impl MailboxGauge {
    /// A gauge for `capacity` slots (at least 1).
    fn new(capacity: usize) -> Arc<MailboxGauge> {
        Arc::new(MailboxGauge {
            capacity: capacity.max(1),
            depth: AtomicUsize::new(0),
            full: AtomicU64::new(0),
        })
    }

    /// Claims `weight` slots (clamped to `1..=capacity`, so one oversize message still fits an
    /// empty mailbox), or counts a refusal and answers [`SendError::Full`].
    fn acquire(self: &Arc<Self>, weight: usize) -> Result<Permit, SendError> {
        let weight = weight.clamp(1, self.capacity);
        let mut depth = self.depth.load(Ordering::Acquire);
        loop {
            if depth + weight > self.capacity {
                self.full.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full {
                    capacity: self.capacity,
                });
            }
            match self.depth.compare_exchange_weak(
                depth,
                depth + weight,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => depth = now,
            }
        }
        Ok(Permit {
            gauge: self.clone(),
            weight,
        })
    }
}

/// One message's claim on slots of a bounded mailbox; dropping it frees them.
#[derive(Debug)]
#[must_use = "dropping a Permit frees its mailbox slots at once"]
pub struct Permit {
    /// The mailbox these slots belong to.
    gauge: Arc<MailboxGauge>,
    /// How many slots the message takes (1, or its weight, e.g. its byte length).
    weight: usize,
}

impl Permit {
    /// The slots it holds.
    pub fn weight(&self) -> usize {
        self.weight
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gauge.depth.fetch_sub(self.weight, Ordering::AcqRel);
    }
}

/// Why a bounded send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The actor already has `capacity` messages in flight.
    #[error("mailbox full ({capacity} messages in flight)")]
    Full {
        /// The mailbox capacity.
        capacity: usize,
    },
    /// The actor is gone.
    #[error("actor is no longer running")]
    Closed,
}

/// An `ActorRef<M>` that refuses to queue more than `capacity` messages.
pub struct BoundedRef<M: Message> {
    /// The actor messages go to.
    actor: ActorRef<M>,
    /// Counters shared with every clone and with introspection.
    gauge: Arc<MailboxGauge>,
}

impl<M: Message> Clone for BoundedRef<M> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            gauge: self.gauge.clone(),
        }
    }
}

impl<M: Message> BoundedRef<M> {
    /// Wraps `actor` with a mailbox bound of `capacity` (at least 1).
    pub fn new(actor: ActorRef<M>, capacity: usize) -> Self {
        Self {
            actor,
            gauge: MailboxGauge::new(capacity),
        }
    }

    /// Sends the message built by `make` around a fresh [`Permit`], or refuses at once with
    /// [`SendError::Full`] when `capacity` messages are already in flight.
    pub fn try_send(&self, make: impl FnOnce(Permit) -> M) -> Result<(), SendError> {
        self.try_send_weighted(1, make)
    }

    /// Like [`try_send`](Self::try_send) for a message that takes `weight` slots (e.g. bytes, so
    /// the bound is on bytes queued rather than on messages). A weight above the capacity is
    /// clamped to it, so one oversize message still fits into an empty mailbox.
    pub fn try_send_weighted(
        &self,
        weight: usize,
        make: impl FnOnce(Permit) -> M,
    ) -> Result<(), SendError> {
        let permit = self.gauge.acquire(weight)?;
        // On failure the unsent message (and its permit) comes back in the error and is dropped
        // here, which releases the slot.
        self.actor
            .send_message(make(permit))
            .map_err(|_| SendError::Closed)
    }

    /// Slots in use now (messages, or their summed weights).
    pub fn depth(&self) -> usize {
        self.gauge.depth()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.gauge.capacity
    }

    /// Refused sends so far.
    pub fn full_count(&self) -> u64 {
        self.gauge.full_count()
    }

    /// The shared counters, for introspection ([`crate::Probe`]).
    pub fn gauge(&self) -> Arc<MailboxGauge> {
        self.gauge.clone()
    }

    /// The wrapped actor.
    pub fn actor(&self) -> &ActorRef<M> {
        &self.actor
    }
}

/// The same bound on a plain tokio channel, for a queue served by a task the owner holds rather
/// than by an actor (an actor costs ~6.7 KB of mailboxes and task; a task and a channel ~2 KB,
/// which matters for something every session has, like its input queue). Refusal, permits and
/// the gauge work exactly as for [`BoundedRef`].
pub struct BoundedSender<T> {
    /// Where messages go.
    tx: tokio::sync::mpsc::UnboundedSender<T>,
    /// Counters shared with every clone and with introspection.
    gauge: Arc<MailboxGauge>,
}

impl<T> Clone for BoundedSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            gauge: self.gauge.clone(),
        }
    }
}

impl<T> BoundedSender<T> {
    /// A queue of `capacity` slots: the sender, and the receiver for the serving task.
    pub fn channel(capacity: usize) -> (Self, tokio::sync::mpsc::UnboundedReceiver<T>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Self {
                tx,
                gauge: MailboxGauge::new(capacity),
            },
            rx,
        )
    }

    /// Like [`BoundedRef::try_send_weighted`]: `SendError::Full` at once when `weight` more
    /// slots do not fit, `SendError::Closed` when the receiver is gone.
    pub fn try_send_weighted(
        &self,
        weight: usize,
        make: impl FnOnce(Permit) -> T,
    ) -> Result<(), SendError> {
        let permit = self.gauge.acquire(weight)?;
        self.send(permit, make)
    }

    /// Claims `weight` slots now, for a message [`send`](Self::send) takes later (built around
    /// the permit), or for work done without queueing anything (dropping the permit frees
    /// them). `SendError::Full` as for [`try_send_weighted`](Self::try_send_weighted).
    pub fn reserve(&self, weight: usize) -> Result<Permit, SendError> {
        self.gauge.acquire(weight)
    }

    /// Queues the message `make` builds around a [`reserve`](Self::reserve)d permit: nothing is
    /// queued without one, so the bound holds by construction, not by each caller's care.
    pub fn send(&self, permit: Permit, make: impl FnOnce(Permit) -> T) -> Result<(), SendError> {
        self.tx.send(make(permit)).map_err(|_| SendError::Closed)
    }

    /// Slots in use now.
    pub fn depth(&self) -> usize {
        self.gauge.depth()
    }

    /// The bound in slots.
    pub fn capacity(&self) -> usize {
        self.gauge.capacity()
    }

    /// The shared counters, for introspection.
    pub fn gauge(&self) -> Arc<MailboxGauge> {
        self.gauge.clone()
    }
}
