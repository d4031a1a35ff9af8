//! docs/security.md item 16: a supervisor was recognised only by its process name
//! (`vmrun`); installed under another name, `vmrun stop` said "not
//! running" while the VM ran. It is now recognised by its run dir's lock
//! and pidfile. Real QEMU (TCG), started by a renamed copy of vmrun.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::process::Command;

use support::*;

#[test]
fn stop_reaches_a_vm_started_by_a_renamed_vmrun() {
    let w = World::new();
    let name = w.vm("renamed", &VmSpec::default());
    let bin = tempfile::tempdir().unwrap();
    let renamed = bin.path().join("vmrun-renamed");
    std::fs::copy(env!("CARGO_BIN_EXE_vmrun"), &renamed).unwrap();
    // The same world as `w.cmd`, another binary.
    let template = w.cmd(&[]);
    let mut cmd = Command::new(&renamed);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd
        .args(["start", &name, "--detach"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out, "vmrun-renamed start --detach");
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{supervisor}/comm")).unwrap();
    assert_eq!(comm.trim(), "vmrun-renamed");

    let (code, st) = w.status(&name);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["state"], "running", "{st}");
    let stop = w.run(&["stop", &name, "--force"]);
    assert_ok(&stop, "vmrun stop --force");
    wait_for("the renamed supervisor to exit", WAIT, || {
        (!alive(supervisor)).then_some(())
    });
    assert!(!w.run_dir(&name).exists(), "teardown left the run dir");
}
