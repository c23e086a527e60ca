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

/// A download that does not move (a stalled phone fetching an export) holds a leaving server
/// for `serve::DRAIN` (5 s) at most: a SIGTERM (so `corral shutdown`, and an upgrade) used to
/// wait for it as long as the client took — `corral shutdown` gave up after 60 s with the
/// server still running.
#[tokio::test]
async fn a_stalled_download_does_not_hold_up_a_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut server = Server::start();
    let info = server
        .spawn(json!({"argv": ["sh", "-c", "head -c 6000000 /dev/zero | tr '\\0' x; exec sleep 1000"]}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.session(&id).await["output_offset"].as_u64().unwrap() < 6_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the output did not come"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Asks for the export and never reads the answer.
    let mut stalled = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let request = format!(
        "GET /v1/sessions/{id}/export?format=asciicast HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, took) = server.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5 + 5), "took {took:?}");
    drop(stalled);
}

/// A SIGTERM the moment the server is up (`server.json` just written: a service manager
/// stopping it at once, a script that started it to ask one thing) is a graceful stop, exit 0
/// and `server.json` gone: its handlers were installed only when its serving loop began, and
/// such a signal ended it by the default action (exit by signal 15, `server.json` left
/// behind) 16 times in 40.
#[test]
fn a_sigterm_right_after_start_is_a_graceful_stop() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut child = std::process::Command::new(corral_tests::binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CORRAL_DATA_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let json = dir.path().join("server.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::metadata(&json).is_ok_and(|m| m.len() > 0) {
            assert!(std::time::Instant::now() < deadline, "never served");
            std::thread::sleep(Duration::from_millis(1));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            (status.code(), status.signal()),
            (Some(0), None),
            "round {round}: {status:?}"
        );
        assert!(!json.exists(), "round {round}: server.json left behind");
    }
}
