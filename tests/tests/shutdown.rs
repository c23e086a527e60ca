//! Graceful shutdown of the real server, alone in its own test binary so its timing bound
//! (grace + 1 s) is not measured while other tests stream hundreds of megabytes.

use std::time::Duration;

use corral_tests::{Frame, Server, session_processes};
use serde_json::json;

#[tokio::test]
async fn sigterm_with_twenty_sessions_exits_0_within_grace_and_leaves_nothing() {
    let mut server = Server::start();
    let mut ids = Vec::new();
    for i in 0..20 {
        let spec = if i % 4 == 0 {
            json!({"argv": ["sh", "-c", "trap '' HUP; sleep 1000"], "grace": {"secs": 1, "nanos": 0}})
        } else {
            json!({"argv": ["bash", "--norc", "-i"], "grace": {"secs": 1, "nanos": 0}})
        };
        ids.push(server.spawn(spec).await["id"].as_str().unwrap().to_string());
    }
    let mut ws = server.ws().await;
    assert_eq!(ws.call(json!({"type": "ping"})).await["type"], "pong");
    let (code, took) = server.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "took {took:?}"
    );
    for id in &ids {
        assert!(
            session_processes(id).is_empty(),
            "session {id} left processes"
        );
    }
    // The client got a close frame saying why.
    match ws.next().await {
        Frame::Close(1001, reason) => assert_eq!(reason, "server shutting down"),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    assert!(!server.dir.path().join("server.json").exists());
}
