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

/// One message's claim on slots of a bounded mailbox; dropping it frees them.
#[derive(Debug)]
#[must_use = "dropping a Permit frees its mailbox slots at once"]
pub struct Permit {
    /// The mailbox these slots belong to.
    gauge: Arc<MailboxGauge>,
    /// How many slots the message takes (1, or its weight, e.g. its byte length).
    weight: usize,
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
            gauge: Arc::new(MailboxGauge {
                capacity: capacity.max(1),
                depth: AtomicUsize::new(0),
                full: AtomicU64::new(0),
            }),
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
        let g = &self.gauge;
        let weight = weight.clamp(1, g.capacity);
        let mut depth = g.depth.load(Ordering::Acquire);
        loop {
            if depth + weight > g.capacity {
                g.full.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full {
                    capacity: g.capacity,
                });
            }
            match g.depth.compare_exchange_weak(
                depth,
                depth + weight,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => depth = now,
            }
        }
        let permit = Permit {
            gauge: self.gauge.clone(),
            weight,
        };
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
