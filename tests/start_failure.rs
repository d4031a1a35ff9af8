//! A QEMU that dies while starting (before its QMP monitor answers) is a
//! failed start, exit 3, not a forced stop of a guest that "did not power
//! off" (exit 5). Needs qemu-system-x86_64, like tests/qmp_real_qemu.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

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

/// A QEMU that never answers QMP (here: a stand-in that only sleeps after
/// answering vmrun's version probe) does not hold a start for the whole
/// QMP timeout: SIGTERM stops it at once and the run dir is cleaned up.
/// (As root: the stand-in lives in a 0700 tempdir that QEMU's per-VM uid
/// could not reach.)
#[test]
fn a_signal_while_qemu_has_not_answered_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let qemu = dir.path().join("silent-qemu");
    std::fs::write(
        &qemu,
        "#!/bin/sh\n\
         case \"$*\" in\n\
         --version) echo 'QEMU emulator version 7.2.0'; exit 0 ;;\n\
         '-machine help') echo 'q35 Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)'; exit 0 ;;\n\
         esac\n\
         echo $$ > \"$(dirname \"$0\")/silent.pid\"\n\
         exec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("silent.toml");
    std::fs::write(
        &config,
        format!(
            "memory = \"64M\"\n[firmware]\ntype = \"bios\"\n[network]\nmode = \"none\"\n\
             [display]\nmode = \"none\"\n[qemu]\naccel = \"tcg\"\nbinary = \"{}\"\n\
             user = \"root\"\n",
            qemu.display()
        ),
    )
    .unwrap();
    let vmrun = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmrun"))
        .env("VMRUN_RUN_DIR", dir.path().join("run"))
        .env("VMRUN_STATE_DIR", dir.path().join("state"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .arg("start")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("silent.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    // The shell's `>` makes the file before `echo` writes the pid.
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    };
    while read_pid().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let qemu_pid = read_pid().expect("the stand-in QEMU never started");
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmrun.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = vmrun.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "took {:?}: {text}",
        signalled.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("SIGTERM before QEMU answered"), "{text}");
    // The stand-in is gone (killed with its process group), and so is the run dir.
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu_pid), None).is_err(),
        "{text}"
    );
    assert!(!dir.path().join("run/silent").exists(), "{text}");
}
