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
