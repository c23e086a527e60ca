//! The binary's own surface: `--help` works and errors are one clear line with a non-zero exit.
//! (Having an integration test here also makes `cargo test --workspace` build `target/*/corral`,
//! which the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve") && text.contains("hook"), "{text}");
}

#[test]
fn a_bad_config_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "listne = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `listne`"), "{err}");
}

#[test]
fn hook_without_a_server_exits_0_quickly() {
    let t = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("hook")
        .env("CORRAL_SESSION_ID", "00000000-0000-0000-0000-000000000000")
        .env("CORRAL_URL", "http://127.0.0.1:9")
        .env(
            "CORRAL_HOOK_TOKEN",
            "corral_x_0123456789abcdef0123456789abcdef",
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"hook_event_name":"Stop"}"#).unwrap();
    }
    assert!(child.wait().unwrap().success());
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
}
