//! Killing a Session *actor* (not its process) still leaves no process and no fd behind: the
//! actor's State releases everything in Drop. Alone in its own test binary so the fd count of
//! this process is not disturbed by other tests. This binary runs corral in the embedded default
//! (no subreaper), so the sweeps here take the full `/proc` scan; the other binaries run as
//! `corral serve` does (subreaper, sweeps walk corral's own subtree).

mod common;

use std::time::Duration;

use common::*;
use corral_actors::{SessionSpec, SessionState};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn killing_the_session_actor_leaves_no_process_and_no_fd() {
    let corral = corral_with(false).await;
    // Warm up the runtime, the reaper and the registry so their own fds are counted.
    let warm = corral
        .sessions()
        .spawn(SessionSpec::new(["cat"]))
        .await
        .unwrap();
    corral
        .sessions()
        .remove(&warm.id().to_string())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = open_fds();

    let h = corral
        .sessions()
        .spawn(SessionSpec::new([
            "sh",
            "-c",
            "sleep 1000 & setsid sleep 1000 & sleep 1000",
        ]))
        .await
        .unwrap();
    let main = h.info().pid.unwrap();
    eventually("tree up", Duration::from_secs(5), || {
        marked(h.id()).len() >= 3
    })
    .await;
    assert!(open_fds() > before);

    h.actor().kill();
    assert_nothing_left(&h, Some(main)).await;
    eventually("fds released", Duration::from_secs(5), || {
        open_fds() <= before
    })
    .await;
    // Said, not left `running`: the session failed, and why.
    let info = h.info();
    assert_eq!(info.state, SessionState::Failed, "{info:?}");
    assert_eq!(
        info.reason.as_deref(),
        Some("session actor stopped unexpectedly"),
        "{info:?}"
    );
    corral.shutdown().await.unwrap();
}
