//! docs/security.md item 4: `sudo vmrun demo` in a directory another user can
//! write ran that user's `./vms/demo.toml`, and its `[qemu] binary`, as
//! root. Replayed as root (here and in CI) in a directory given to uid
//! 65534: the config is not used, its program never runs, and the message
//! says why.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn give_away(path: &Path) {
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
}

/// What uid 65534 leaves in a directory of theirs: `vms/demo.toml` whose
/// QEMU is a script that leaves a marker when run.
struct Planted {
    dir: tempfile::TempDir,
}

impl Planted {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let vms = dir.path().join("vms");
        fs::create_dir(&vms).unwrap();
        let qemu = dir.path().join("qemu");
        fs::write(
            &qemu,
            format!("#!/bin/sh\ntouch {}\n", dir.path().join("marker").display()),
        )
        .unwrap();
        fs::set_permissions(&qemu, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            vms.join("demo.toml"),
            format!(
                "memory = \"64M\"\n[qemu]\nbinary = \"{}\"\n[display]\nmode = \"none\"\n[network]\nmode = \"none\"\n",
                qemu.display()
            ),
        )
        .unwrap();
        for p in [dir.path(), &vms, &qemu, &vms.join("demo.toml")] {
            give_away(p);
        }
        Self { dir }
    }

    fn marker(&self) -> bool {
        self.dir.path().join("marker").exists()
    }

    /// Root's `vmrun ARGS` run from the planted directory, with no other
    /// place to find `demo` in.
    fn vmrun(&self, args: &[&str]) -> (Option<i32>, String) {
        let home = tempfile::tempdir().unwrap();
        let out: Output = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .current_dir(self.dir.path())
            .env_remove("VMRUN_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("VMRUN_HOST_ROOT")
            .env("HOME", home.path())
            .env("VMRUN_RUN_DIR", home.path().join("run"))
            .env("VMRUN_STATE_DIR", home.path().join("state"))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

#[test]
fn root_does_not_use_a_config_found_in_another_users_dir() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test replays root's run"
    );
    if Path::new("/etc/vmrun/vms/demo.toml").exists() {
        panic!("/etc/vmrun/vms/demo.toml exists: it would be found first");
    }
    let planted = Planted::new();
    for args in [&["demo", "--dry-run"][..], &["demo"], &["start", "demo"]] {
        let (code, text) = planted.vmrun(args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains("not using"), "{args:?}: {text}");
        assert!(text.contains("vms/demo.toml"), "{args:?}: {text}");
        // miette wraps the message at 80 columns.
        assert!(text.contains("belongs to uid"), "{args:?}: {text}");
        assert!(text.contains("65534"), "{args:?}: {text}");
        assert!(text.contains("Move it to"), "{args:?}: {text}");
        assert!(!planted.marker(), "{args:?} ran the planted QEMU: {text}");
    }
}

#[test]
fn root_refuses_a_qemu_binary_another_user_owns_even_by_path() {
    let planted = Planted::new();
    let (code, text) = planted.vmrun(&["./vms/demo.toml", "--dry-run"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("[qemu] binary"), "{text}");
    assert!(text.contains("qemu: not run as root"), "{text}");
    assert!(!planted.marker(), "{text}");
}
