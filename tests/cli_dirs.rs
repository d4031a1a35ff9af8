//! Where the real binary keeps its files when the environment names no
//! private place: never a shared dir such as `/tmp`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// vmrun with none of the variables that name its dirs, as a systemd unit
/// without `User=` or a `su` without a login session runs it.
fn bare(cmd: &mut Command) -> &mut Command {
    for var in [
        "HOME",
        "XDG_RUNTIME_DIR",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "VMRUN_RUN_DIR",
        "VMRUN_STATE_DIR",
        "VMRUN_HOME",
        "VMRUN_HOST_ROOT",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(repo())
}

#[test]
fn a_user_without_a_runtime_dir_is_refused_instead_of_using_tmp() {
    // Runs as root (here and in CI) to become uid 65534 for the command.
    let fallback = Path::new("/tmp/vmrun-65534");
    // The checkout may sit where uid 65534 can't reach (under /root): run
    // a copy from a dir anyone can enter.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    let vmrun = dir.path().join("vmrun");
    std::fs::copy(env!("CARGO_BIN_EXE_vmrun"), &vmrun).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&vmrun)
        .arg("list");
    let out = bare(&mut cmd).current_dir(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    assert!(err.contains("VMRUN_RUN_DIR"), "{err}");
    assert!(!fallback.exists());
}

#[test]
fn root_without_home_keeps_nothing_under_tmp() {
    let fallback = Path::new("/tmp/vmrun-0");
    // A leftover of an older vmrun would hide what this run does.
    let _ = std::fs::remove_dir_all(fallback);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.args(["start", "vms/demo.toml", "--dry-run"]);
    let out = bare(&mut cmd).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{err}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!fallback.exists(), "{} was created", fallback.display());
}
