//! The embedding example runs as a test: host supervisor → corral → 3 sessions → host stops →
//! nothing left.

mod common;

#[path = "../examples/embed.rs"]
#[allow(dead_code)]
mod embed;

#[tokio::test]
async fn host_stops_and_every_session_is_gone() {
    let ids = embed::run().await.unwrap();
    assert_eq!(ids.len(), 3);
    for id in ids {
        assert!(common::marked(id).is_empty(), "session {id} left processes");
    }
}

/// Spawns racing a shutdown: each is refused once the shutdown began ("shutting down"), or
/// its session is stopped with the others — none is left running, and the shutdown takes
/// about one grace, not one per late session (60 late sessions took 38–45 s).
#[tokio::test]
async fn spawns_racing_a_shutdown_are_refused_or_stopped() {
    use corral_actors::{Corral, CorralConfig, SessionError, SessionSpec};
    let corral = Corral::start(CorralConfig::default()).await.unwrap();
    let spawner = corral.clone();
    let spawns = tokio::spawn(async move {
        let tries = (0..40).map(|i| {
            let c = spawner.clone();
            async move {
                c.sessions()
                    .spawn(
                        SessionSpec::new(["sh", "-c", "trap '' HUP; exec sleep 600"])
                            .name(format!("late-{i}"))
                            .grace(std::time::Duration::from_secs(1)),
                    )
                    .await
            }
        });
        futures::future::join_all(tries).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    let t = std::time::Instant::now();
    corral.shutdown().await.unwrap();
    let took = t.elapsed();
    let results = spawns.await.unwrap();
    assert!(
        took < std::time::Duration::from_secs(8),
        "shutdown took {took:?}"
    );
    for r in results {
        match r {
            Ok(h) => assert!(
                common::marked(h.id()).is_empty(),
                "session {} left running",
                h.name()
            ),
            Err(SessionError::Unavailable(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

/// What an embedder holds can go in its own `#[derive(Debug)]` state, and corral-runtime's
/// types come through corral-actors (one dependency, at the version it was built with).
#[tokio::test]
async fn the_handles_print_and_the_runtime_comes_along() {
    use corral_actors::corral_runtime::Backoff;
    use corral_actors::{Corral, CorralConfig, SessionSpec};
    #[derive(Debug)]
    #[allow(dead_code)] // its fields are read through Debug only
    struct HostState {
        corral: Corral,
        session: corral_actors::SessionHandle,
        sub: corral_actors::Subscription,
        backoff: Backoff,
    }
    let corral = Corral::start(CorralConfig::default()).await.unwrap();
    let mut spec = SessionSpec::new(["sleep", "60"]);
    spec.name = Some("shown".into());
    let session = corral.sessions().spawn(spec).await.unwrap();
    let sub = session.subscribe(Some(0)).unwrap();
    let state = HostState {
        corral: corral.clone(),
        session,
        sub,
        backoff: Backoff::default(),
    };
    let shown = format!("{state:?}");
    assert!(
        shown.contains("shown") && shown.contains("Sessions"),
        "{shown}"
    );
    drop(state);
    corral.shutdown().await.unwrap();
    // A second shutdown (a host's post_stop after its own explicit one) finds it done.
    corral.shutdown().await.unwrap();
}
