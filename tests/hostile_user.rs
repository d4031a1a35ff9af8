//! A local unprivileged user against a root vmrun (security review items
//! 1, 2 and 6): where the real binary keeps its files when the environment
//! names no private place (never a shared dir such as `/tmp`), and what
//! another uid can read of a running VM (nothing). Other uids are played
//! through `setpriv`, so the tests run as root (as CI does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{assert_ok, VmSpec, World};

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

/// `command` run as uid 65534 with no groups.
fn as_nobody(command: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(command)
        .output()
        .unwrap()
}

/// Item 6: a running TPM VM's state (VARS, TPM state, `console.log`, the
/// supervisor's log) and run dir are the owner's alone: another user,
/// even with every parent dir open to them, reads none of it.
#[test]
fn another_user_reads_nothing_of_a_running_vm() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test plays another uid through setpriv and needs root (CI runs as root)"
    );
    let w = World::new();
    w.make_world_readable();
    let name = w.vm(
        "private",
        &VmSpec {
            tpm: true,
            user: "auto",
            ..VmSpec::default()
        },
    );
    assert_ok(&w.start_detached(&name), "vmrun start --detach");
    let state = w.state_dir(&name);
    let run = w.run_dir(&name);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    for dir in [&w.state_base, &state, &w.run_base, &run] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for log in ["console.log", "vmrun.log"] {
        assert_eq!(mode(&state.join(log)), 0o600, "{log}");
    }
    for target in [
        state.join("console.log"),
        state.join("vmrun.log"),
        state.join("tpm"),
        run.join("journal"),
        run.join("control.sock"),
    ] {
        let target = target.to_str().unwrap();
        let out = as_nobody(&["cat", target]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "uid 65534 read {target}: {err}"
        );
    }
    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop --force");
}
