//! `docs/vmrun@.service` is a unit systemd accepts: `systemd-analyze verify`
//! on an instance of it, with ExecStart pointing at the binary under test
//! (verify checks that the command exists). Settings systemd can't parse are
//! only warnings to it, so any output at all fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::process::Command;

#[test]
fn the_unit_template_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/vmrun@.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/vmrun start %i"));
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("vmrun@demo.service");
    std::fs::write(
        &instance,
        unit.replace("/usr/local/bin/vmrun", env!("CARGO_BIN_EXE_vmrun")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .output()
        .expect("systemd-analyze (package systemd) is needed for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "systemd warns: {stderr}");
}
