//! Supervisor restart latency: time from a child's crash (its handler returns Err) to the
//! replacement child's `pre_start`, with no backoff. Goal (issue #2): ≤ 1 ms.
//!
//! Run: `cargo bench -p corral-runtime --bench restart`

use std::time::{Duration, Instant};

use corral_runtime::{ChildSpec, Supervisor, SupervisorSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

struct Crashy {
    started: mpsc::UnboundedSender<(Instant, ActorRef<Instant>)>,
}

impl Actor for Crashy {
    type Msg = Instant;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<Instant>, _: ()) -> Result<(), ActorProcessingErr> {
        self.started
            .send((Instant::now(), myself))
            .map_err(|_| "bench gone")?;
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Instant>,
        _: Instant,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("crash on purpose".into())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spec = SupervisorSpec::new("bench")
            .intensity(u32::MAX, Duration::from_secs(1))
            .child(ChildSpec::actor("crashy", move || (Crashy { started: tx.clone() }, ())));
        let (sup, _) = Supervisor::start(spec).await.expect("start");
        let (_, mut child) = rx.recv().await.expect("first start");
        let n = 5000;
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            child.send_message(t0).expect("send");
            let (t1, next) = rx.recv().await.expect("restart");
            lat.push(t1 - t0);
            child = next;
        }
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "supervisor restart latency over {n} crashes: p50 {:?}  p99 {:?}  max {:?}  (goal ≤ 1 ms)",
            pct(0.50),
            pct(0.99),
            lat[lat.len() - 1]
        );
        sup.stop(None).await.expect("stop");
    });
}
