//! BoundedRef against a real actor: `Full` at capacity (counted), depth back to 0 once the actor
//! catches up, `Closed` once it is gone.

use std::sync::Arc;
use std::time::Duration;

use corral_runtime::{BoundedRef, Permit, SendError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;

/// Handles one message per permit released on its gate.
struct Gated {
    gate: Arc<Semaphore>,
}

enum GatedMsg {
    Work(#[allow(dead_code)] u32, Permit),
}

impl Actor for Gated {
    type Msg = GatedMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<GatedMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<GatedMsg>,
        msg: GatedMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let GatedMsg::Work(_, _permit) = msg;
        self.gate.acquire().await?.forget();
        Ok(())
    }
}

#[tokio::test]
async fn full_at_capacity_then_drains_to_zero_then_closed() {
    let gate = Arc::new(Semaphore::new(0));
    let (actor, handle) = Actor::spawn(None, Gated { gate: gate.clone() }, ())
        .await
        .unwrap();
    let bounded = BoundedRef::new(actor.clone(), 8);
    for i in 0..8 {
        bounded.try_send(|p| GatedMsg::Work(i, p)).unwrap();
    }
    assert_eq!(bounded.depth(), 8);
    // Drive well past the bound: every extra send is refused at once and counted.
    for i in 0..1000 {
        assert_eq!(
            bounded.try_send(|p| GatedMsg::Work(i, p)),
            Err(SendError::Full { capacity: 8 })
        );
    }
    assert_eq!(bounded.full_count(), 1000);
    assert_eq!(bounded.depth(), 8);

    gate.add_permits(8);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bounded.depth() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "depth stuck at {}",
            bounded.depth()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Room again after catching up.
    gate.add_permits(1);
    bounded.try_send(|p| GatedMsg::Work(0, p)).unwrap();

    actor.stop(None);
    handle.await.unwrap();
    assert_eq!(
        bounded.try_send(|p| GatedMsg::Work(0, p)),
        Err(SendError::Closed)
    );
    assert_eq!(bounded.depth(), 0, "a refused message releases its slot");
}

#[tokio::test]
async fn weighted_sends_bound_the_summed_weight() {
    let gate = Arc::new(Semaphore::new(0));
    let (actor, handle) = Actor::spawn(None, Gated { gate: gate.clone() }, ())
        .await
        .unwrap();
    let bytes = BoundedRef::new(actor.clone(), 100);
    bytes
        .try_send_weighted(60, |p| GatedMsg::Work(0, p))
        .unwrap();
    bytes
        .try_send_weighted(40, |p| GatedMsg::Work(1, p))
        .unwrap();
    assert_eq!(bytes.depth(), 100);
    assert_eq!(
        bytes.try_send_weighted(1, |p| GatedMsg::Work(2, p)),
        Err(SendError::Full { capacity: 100 })
    );
    gate.add_permits(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bytes.depth() != 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // An oversize message is clamped to the capacity: it fits an empty mailbox, alone.
    bytes
        .try_send_weighted(1_000, |p| GatedMsg::Work(3, p))
        .unwrap();
    assert_eq!(bytes.depth(), 100);
    actor.kill();
    handle.await.unwrap();
    assert_eq!(bytes.depth(), 0);
}

/// The same bound on a plain channel served by a task: full at capacity (by weight), slots back
/// once the task drops the permits, `Closed` once the receiver is gone.
#[tokio::test]
async fn bounded_sender_refuses_past_capacity_and_frees_on_release() {
    use corral_runtime::BoundedSender;
    let (tx, mut rx) = BoundedSender::<(Vec<u8>, Permit)>::channel(100);
    for _ in 0..4 {
        tx.try_send_weighted(25, |p| (vec![0; 25], p)).unwrap();
    }
    assert_eq!(tx.depth(), 100);
    assert_eq!(
        tx.try_send_weighted(1, |p| (vec![0], p)),
        Err(SendError::Full { capacity: 100 })
    );
    assert_eq!(tx.gauge().full_count(), 1);
    // An oversize message is clamped, so it still fits once the queue is empty.
    for _ in 0..4 {
        let (bytes, permit) = rx.recv().await.unwrap();
        assert_eq!(bytes.len(), 25);
        drop(permit);
    }
    assert_eq!(tx.depth(), 0);
    tx.try_send_weighted(1000, |p| (vec![0; 1000], p)).unwrap();
    assert_eq!(tx.depth(), 100);
    drop(rx);
    assert_eq!(tx.depth(), 0, "dropping the queue releases its permits");
    assert_eq!(
        tx.try_send_weighted(1, |p| (vec![0], p)),
        Err(SendError::Closed)
    );
}
