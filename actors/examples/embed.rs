//! Embedding corral in a host ractor application: the host supervisor starts corral's tree
//! linked under it with one call, gets its supervision events, and stopping the host stops
//! every session gracefully (a corral-runtime Supervisor stops its children in order; the
//! corral child's `post_stop` equivalent is `Corral::shutdown`, wired in below).
//!
//! Run: `cargo run -p corral-actors --example embed`

use std::sync::Arc;
use std::time::Duration;

use corral_actors::{Corral, CorralConfig, SessionSpec};
use std::sync::Mutex;

use corral_actors::corral_runtime::{ChildSpec, Shutdown, Supervisor, SupervisorSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The host's own child that owns corral: started by the host's supervisor, it starts corral
/// linked under itself and shuts it down gracefully when stopped.
struct CorralHost {
    /// Where the started tree is published for the example's caller.
    slot: Arc<Mutex<Option<Corral>>>,
}

impl Actor for CorralHost {
    type Msg = ();
    type State = Corral;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<()>, _: ()) -> Result<Corral, ActorProcessingErr> {
        let corral = Corral::start_linked(CorralConfig::default(), myself.get_cell()).await?;
        // invariant: nothing panics while holding this lock.
        *self.slot.lock().expect("slot lock") = Some(corral.clone());
        Ok(corral)
    }

    async fn post_stop(
        &self,
        _: ActorRef<()>,
        corral: &mut Corral,
    ) -> Result<(), ActorProcessingErr> {
        corral.shutdown().await?;
        Ok(())
    }
}

/// Starts a host supervisor → corral → 3 sessions, then stops the host. Returns the session
/// ids so a test can check nothing is left.
pub async fn run()
-> Result<Vec<corral_actors::uuid::Uuid>, Box<dyn std::error::Error + Send + Sync>> {
    let slot: Arc<Mutex<Option<Corral>>> = Arc::default();
    let s = slot.clone();
    let host_spec = SupervisorSpec::new("host").child(
        ChildSpec::actor("corral", move || (CorralHost { slot: s.clone() }, ()))
            .shutdown(Shutdown::Timeout(Duration::from_secs(30))),
    );
    let (host, _) = Supervisor::start(host_spec).await?;
    // invariant: nothing panics while holding this lock.
    let corral = slot
        .lock()
        .expect("slot lock")
        .clone()
        .ok_or("corral not started")?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let h = corral
            .sessions()
            .spawn(SessionSpec::new(["bash", "--norc", "-i"]).name(format!("agent-{i}")))
            .await?;
        ids.push(h.id());
    }
    // The host's tree shows corral as one child of its own; corral's tree, its sessions.
    println!("{:#?}", host.tree().await?);
    println!("{:#?}", corral.tree().await?);
    host.stop(Some(Duration::from_secs(30))).await?;
    Ok(ids)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ids = run().await?;
    println!("stopped {} sessions", ids.len());
    Ok(())
}
