//! QEMU's threads on the host CPUs the config names, for real (TCG): each
//! vCPU thread on its `[cpu] pin` CPU, every other thread of QEMU (main
//! loop, RCU, the thread pool's workers, a disk's I/O thread) on
//! `emulator_pin`.
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
    let disk = w.home.join("data.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // The [cpu] table is the file's last: a [[disk]] may follow it.
    let cpu = format!(
        "cores = 1\npin = [1]\nemulator_pin = [0]\n[[disk]]\npath = \"{}\"\niothread = true",
        disk.display()
    );
    let name = w.vm(
        "pinned",
        &VmSpec {
            cpu: Box::leak(cpu.into_boxed_str()),
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
    let names: Vec<String> = threads
        .keys()
        .map(|t| std::fs::read_to_string(format!("/proc/{qemu}/task/{t}/comm")).unwrap())
        .collect();
    // debug-threads=on names QEMU's threads: the disk's I/O thread is one.
    assert!(names.iter().any(|n| n.trim() == "IO disk0-io"), "{names:?}");
    assert!(threads.len() >= 3, "{threads:?}");
    for (tid, allowed) in &threads {
        let want = if *tid == vcpu { "1" } else { "0" };
        assert_eq!(allowed, want, "thread {tid} of QEMU {qemu}: {threads:?}");
    }
    assert_ok(&w.run(&["stop", "--force", &name]), "vmrun stop");
}
