//! A QEMU that dies while starting (before its QMP monitor answers) is a
//! failed start, exit 3, not a forced stop of a guest that "did not power
//! off" (exit 5). Needs qemu-system-x86_64, like tests/qmp_real_qemu.rs.

use std::time::{Duration, Instant};

#[test]
fn qemu_dying_during_start_is_a_failed_start_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dies.toml");
    std::fs::write(
        &config,
        r#"memory = "64M"
[firmware]
type = "bios"
[network]
mode = "none"
[display]
mode = "none"
[shutdown]
timeout = "30s"
[qemu]
accel = "tcg"
# QEMU creates its QMP socket, then fails on this device.
extra_args = ["-device", "no-such-device-vmrun-test"]
"#,
    )
    .unwrap();
    let started = Instant::now();
    let out = assert_cmd::Command::cargo_bin("vmrun")
        .unwrap()
        .env("VMRUN_RUN_DIR", dir.path().join("run"))
        .env("VMRUN_STATE_DIR", dir.path().join("state"))
        .arg("start")
        .arg(&config)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("failed to start"), "{text}");
    assert!(!text.contains("did not power off by itself"), "{text}");
    // Not the 30 s shutdown timeout: nothing waited for a guest.
    assert!(started.elapsed() < Duration::from_secs(25), "{text}");
    assert!(!dir.path().join("run/dies").exists(), "{text}");
}
