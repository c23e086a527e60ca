//! Under a `Type=notify` systemd unit (`NotifyAccess=all`): the server says `READY=1` once it
//! serves, a successor of `corral upgrade` claims `MAINPID=` before its predecessor exits (so
//! the unit follows the handover), a full stop says `STOPPING=1`, and a notification socket
//! that is not there changes nothing. A real datagram socket stands in for systemd's end.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use corral_tests::Server;

/// The next notification (blocking, bounded: the server is another process).
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn main_pid(msg: &str) -> i32 {
    msg.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID in {msg:?}"))
}

#[tokio::test]
async fn the_unit_follows_readiness_an_upgrade_and_a_stop() {
    let manager = tempfile::tempdir().unwrap();
    let path = manager.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut server = Server::start_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let first = server.pid();

    let ready = next(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert_eq!(main_pid(&ready), first);
    assert!(
        ready.contains(&format!("STATUS=serving on {}", server.url)),
        "{ready:?}"
    );

    server.cli_ok(&["upgrade"]).await;
    // The successor's claim comes first and alone: it is sent before the successor tells its
    // predecessor it is ready, so before the old main process can exit.
    let claim = next(&sock);
    let successor = main_pid(&claim);
    assert_ne!(successor, first);
    assert!(!claim.contains("READY=1"), "{claim:?}");
    server.follow_successor();
    assert_eq!(server.pid(), successor);
    // Then its readiness; the predecessor, which handed over, said nothing (no STOPPING=1).
    let ready = next(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert_eq!(main_pid(&ready), successor);

    server.cli_ok(&["shutdown"]).await;
    assert_eq!(next(&sock), "STOPPING=1");
    let (code, _) = server.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_notification_socket_that_is_not_there_changes_nothing() {
    let manager = tempfile::tempdir().unwrap();
    let missing = manager.path().join("gone.sock");
    let server = Server::start_env(&[("NOTIFY_SOCKET", missing.to_str().unwrap())]);
    let (status, _) = server.http("GET", "/v1/health", None, None).await;
    assert_eq!(status, 200);
    server.cli_ok(&["ps"]).await;
}

/// The unit docs/operations.md gives has no comment after a value: systemd takes `#` only at
/// a line's start, and a setting with a trailing comment is invalid and ignored (the unit ran
/// as `Type=simple` with `KillMode=control-group`, which ends every session at a crash).
#[test]
fn the_documented_unit_has_no_trailing_comments() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let unit = doc
        .split("```ini\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a unit in operations.md");
    assert!(unit.contains("KillMode=process"), "{unit}");
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('#') || !line.contains('=') {
            continue;
        }
        assert!(!line.contains('#'), "a comment after a value: {line:?}");
    }
}
