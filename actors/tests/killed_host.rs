//! A host actor that owns corral is killed with sessions running: nothing is left, not even a
//! zombie. Its own test binary (its own process): another test's reaper in the same process
//! would reap the children and hide the bug this pins down.

mod common;

/// A host actor that owns corral and is killed (or panics) with sessions running: the sessions'
/// actors go down with it, killing their trees in `Drop`, and the main processes are reaped —
/// they used to stay zombies for the rest of the host's life (the reaper went down in the same
/// teardown, before any pass saw them exit).
#[tokio::test]
async fn a_killed_host_leaves_no_zombie() {
    use corral_actors::{Corral, CorralConfig, SessionSpec};
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    struct Host;
    impl Actor for Host {
        type Msg = ();
        type State = Option<Corral>;
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ActorRef<()>,
            _: (),
        ) -> Result<Option<Corral>, ActorProcessingErr> {
            Ok(None)
        }
    }
    let (host, join) = Actor::spawn(None, Host, ()).await.unwrap();
    let corral = Corral::start_linked(CorralConfig::default(), host.get_cell())
        .await
        .unwrap();
    let mut pids = Vec::new();
    for i in 0..3 {
        let h = corral
            .sessions()
            .spawn(SessionSpec::new(["sleep", "600"]).name(format!("z{i}")))
            .await
            .unwrap();
        pids.push(h.info().pid.unwrap() as i32);
    }
    host.kill();
    join.await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|&p| common::exists(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "left (zombies?): {:?}",
            pids.iter()
                .filter(|&&p| common::exists(p))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
