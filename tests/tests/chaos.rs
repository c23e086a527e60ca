//! The chaos suite, briefly: `corral chaos` injects every kind of fault into a real server for
//! 20 s and checks its invariants after each one. The long run is
//! `corral chaos --secs 600` (docs/performance.md); a failing seed replays with `--seed`.

use std::process::Command;

use corral_tests::binary;
use serde_json::Value;

#[test]
fn every_fault_kind_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("chaos.json");
    let out = Command::new(binary())
        .args(["chaos", "--secs", "20", "--json"])
        .arg(&json)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 7, "{report}");
    for f in faults {
        assert!(f["injected"].as_u64().unwrap() >= 1, "{stdout}");
        assert_eq!(f["injected"], f["survived"], "{stdout}");
    }
    assert_eq!(
        report["violations"].as_array().unwrap().len(),
        0,
        "{stdout}"
    );
}
