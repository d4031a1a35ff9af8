//! `[cpu] isolate` on a real kernel's cgroup v2 (no systemd): one lab boot
//! of `tests/lab/scenarios/isolate.sh`. A nested VM pinned to CPU 1 keeps
//! the host's slices on CPU 0 while it runs, sits in its own cgroup, and
//! everything is as before after `vmrun stop` and after `kill -9` +
//! `vmrun restore`; then the benchmark's two runs, isolate off and on
//! under load, of which only the confinement is asserted here: its timing
//! figures are BENCHMARKS.md's (the `vmrun-lab` command there prints them).
//! And the systemd path on the systemd lab (`isolate_systemd.sh`): a
//! transient scope, `AllowedCPUs` at runtime, logind's sleep inhibitor.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use std::time::Duration;

use lab_checks::{fields, run, text, Checks};
use vmrun_lab::serde_json::json;
use vmrun_lab::{Firmware, Init, Scenario, Topology};

#[test]
fn isolate_confines_the_host_moves_vmrun_out_and_everything_comes_back() {
    let run = run(Scenario::named("isolate.sh")
        .topology(Topology::Gpu)
        .timeout(Duration::from_secs(900)));
    let mut c = Checks::new(&run);
    c.fields(&fields(&[
        ("cpus_online", json!("0-1")),
        (
            "shell_cgroup",
            json!("0::/user.slice/user-0.slice/session-1.scope"),
        ),
        // While it runs: the slices and their tasks on CPU 0, vmrun and
        // QEMU in their own cgroup with both CPUs, the vCPU on CPU 1 and
        // QEMU's other threads on CPU 0, unbound workqueues on CPU 0.
        ("a_start_exit", json!(0)),
        ("a_state", json!("running")),
        ("a_init_cpus", json!("0")),
        ("a_system_cpus", json!("0")),
        ("a_user_cpus", json!("0")),
        ("a_init_effective", json!("0")),
        ("a_system_effective", json!("0")),
        ("a_user_effective", json!("0")),
        ("a_load_user_allowed", json!("0")),
        ("a_load_sys_allowed", json!("0")),
        ("a_supervisor_cgroup", json!("0::/vmrun.slice/iso")),
        ("a_qemu_cgroup", json!("0::/vmrun.slice/iso")),
        // vmrun.slice, where QEMU is, keeps every CPU.
        ("a_slice_effective", json!("0-1")),
        ("a_vcpu_allowed", json!("1")),
        ("a_qemu_other_threads", json!("0 ")),
        ("a_wq", json!("1")),
        // After stop: as before, to the last IRQ.
        ("a_stop_exit", json!(0)),
        ("a_run_dir_gone", json!(true)),
        ("a_after_diff", json!("")),
        // kill -9 of the supervisor: the host stays confined until restore.
        ("b_start_exit", json!(0)),
        ("b_user_cpus", json!("0")),
        ("b_supervisor_ended", json!(true)),
        ("b_state", json!("needs-restore")),
        ("b_restore_exit", json!(0)),
        ("b_qemu_stopped", json!(true)),
        ("b_run_dir_gone", json!(true)),
        ("b_after_diff", json!("")),
        ("off_start_exit", json!(0)),
        ("on_start_exit", json!(0)),
        ("off_vcpu_allowed", json!("1")),
        ("on_vcpu_allowed", json!("1")),
        ("bench_after_diff", json!("")),
    ]));
    let status = text(&run, "a_status_isolation");
    c.that(
        status.contains("\"host_cpus\": \"0\"") && status.contains("user.slice"),
        &format!("status --json shows no isolation in force: {status}"),
    );
    let journal = text(&run, "a_journal");
    for step in ["vm-cgroup", "cgroup-cpus", "workqueue-mask", "irq-affinity"] {
        c.that(
            journal.contains(&format!("\"step\":\"{step}\"")),
            &format!("the journal lacks a {step} step: {journal}"),
        );
    }
    c.done();
}

#[test]
fn under_systemd_units_get_allowed_cpus_vmrun_a_scope_and_logind_a_sleep_lock() {
    let run = run(Scenario::named("isolate_systemd.sh")
        .topology(Topology::Gpu)
        .firmware(Firmware::Uefi)
        .init(Init::Systemd)
        .timeout(Duration::from_secs(900)));
    let unset = "init.scope= system.slice= user.slice= ";
    // No unit used a cpuset before: systemd had the controller off for
    // them (no cpuset files), and turns it off again after.
    let no_cpuset = unset;
    let mut c = Checks::new(&run);
    c.fields(&fields(&[
        ("before_allowed", json!(unset)),
        ("a_start_exit", json!(0)),
        (
            "a_allowed",
            json!("init.scope=0 system.slice=0 user.slice=0 "),
        ),
        (
            "a_effective",
            json!("init.scope=0 system.slice=0 user.slice=0 "),
        ),
        (
            "a_supervisor_cgroup",
            json!("0::/machine.slice/vmrun-sy.scope"),
        ),
        ("a_qemu_cgroup", json!("0::/machine.slice/vmrun-sy.scope")),
        ("a_vcpu_allowed", json!("1")),
        ("a_inhibitors", json!(1)),
        ("a_stop_exit", json!(0)),
        ("a_run_dir_gone", json!(true)),
        ("a_after_allowed", json!(unset)),
        ("before_effective", json!(no_cpuset)),
        ("a_after_effective", json!(no_cpuset)),
        ("a_scope_gone", json!(true)),
        ("a_after_inhibitors", json!(0)),
        ("b_start_exit", json!(0)),
        ("b_inhibitors", json!(1)),
        ("b_supervisor_ended", json!(true)),
        // The lock went with the supervisor; the host's confinement waits
        // for the restore.
        ("b_lock_gone", json!(true)),
        (
            "b_killed_allowed",
            json!("init.scope=0 system.slice=0 user.slice=0 "),
        ),
        ("b_restore_exit", json!(0)),
        ("b_qemu_stopped", json!(true)),
        ("b_after_allowed", json!(unset)),
        ("b_after_effective", json!(no_cpuset)),
        ("b_scope_gone", json!(true)),
    ]));
    let journal = text(&run, "a_journal");
    c.that(
        journal.contains("\"step\":\"vm-scope\"") && journal.contains("\"step\":\"allowed-cpus\""),
        &format!("the journal lacks the systemd steps: {journal}"),
    );
    c.done();
}
