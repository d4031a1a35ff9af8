//! QEMU's threads on the host CPUs the config names, for real (TCG): each
//! vCPU thread on its `[cpu] pin` CPU, every other thread of QEMU (main
//! loop, RCU, the thread pool's workers) on `emulator_pin`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::collections::BTreeMap;

use support::*;

/// Each thread of `pid` and the CPUs it may run on.
fn affinities(pid: i32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((tid, proc_status_field(tid, "Cpus_allowed_list")?))
        })
        .collect()
}

#[test]
fn vcpus_go_on_pin_and_every_other_qemu_thread_on_emulator_pin() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_ne!(online.trim(), "0", "this test needs two host CPUs");
    let w = World::new();
    let name = w.vm(
        "pinned",
        &VmSpec {
            cpu: "cores = 1\npin = [1]\nemulator_pin = [0]",
            ..VmSpec::default()
        },
    );
    let out = w.start_detached(&name);
    assert_ok(&out, "vmrun start --detach");
    let (_, st) = w.status(&name);
    let qemu = st["qemu_pid"].as_i64().unwrap() as i32;
    let q = w.run(&["qmp", &name, "query-cpus-fast"]);
    assert_ok(&q, "query-cpus-fast");
    let cpus: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let vcpu = cpus[0]["thread-id"].as_i64().unwrap() as i32;
    let threads = affinities(qemu);
    assert!(threads.len() >= 3, "{threads:?}");
    for (tid, allowed) in &threads {
        let want = if *tid == vcpu { "1" } else { "0" };
        assert_eq!(allowed, want, "thread {tid} of QEMU {qemu}: {threads:?}");
    }
    assert_ok(&w.run(&["stop", "--force", &name]), "vmrun stop");
}
