//! Running VMs for real: the `vmrun` binary against QEMU (TCG) with OVMF,
//! SeaBIOS and swtpm, each test in its own run/state/config dirs. These are
//! issue 3's "done means": detach, status, raw QMP, every way a VM ends
//! (guest power-off, escalation to quit, crash, signals), the run-dir lock,
//! stale run dirs, TPM and QEMU's privilege drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::io::Read;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::*;

/// `quit` after the timeout, then QEMU gets GRACE before SIGTERM: a stop
/// that takes longer than timeout + GRACE did not end by `quit`.
const GRACE: Duration = Duration::from_secs(3);

fn qmp(world: &World, name: &str, command: &str) -> Value {
    let out = world.run(&["qmp", name, command]);
    assert_ok(&out, &format!("vmrun qmp {name} {command}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{command}: {e}: {}", text(&out)))
}

fn qmp_with(world: &World, name: &str, command: &str, arguments: &str) -> Value {
    let out = world.run(&["qmp", name, command, arguments]);
    assert_ok(&out, &format!("vmrun qmp {name} {command} {arguments}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{command}: {e}: {}", text(&out)))
}

fn qemu_pid(world: &World, name: &str) -> i32 {
    let (_, st) = world.status(name);
    st["qemu_pid"]
        .as_i64()
        .expect("a running VM has a QEMU pid") as i32
}

/// Waits for `child` to exit and returns its exit code and its stderr.
fn wait_exit(child: &mut Child, within: Duration) -> (Option<i32>, String) {
    let code = wait_for("vmrun to exit", within, || child.try_wait().unwrap()).code();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    (code, stderr)
}

/// Waits until the supervisor and QEMU are gone and the run dir removed.
fn assert_torn_down(world: &World, name: &str, supervisor: i32, qemu: i32) {
    wait_for("the supervisor to exit", WAIT, || {
        (!alive(supervisor)).then_some(())
    });
    assert!(!alive(qemu), "QEMU {qemu} outlived its supervisor");
    assert!(
        !world.run_dir(name).exists(),
        "teardown left the run dir {}",
        world.run_dir(name).display()
    );
    let (code, st) = world.status(name);
    assert_eq!(code, Some(1), "status of a stopped VM exits 1");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["stale_run_dir"], false);
}

#[test]
fn detached_vm_answers_status_qmp_list_logs_and_stop_escalates_past_ignored_acpi() {
    let w = World::new();
    let name = w.vm(
        "esc",
        &VmSpec {
            firmware: Firmware::Uefi,
            ..VmSpec::default()
        },
    );
    let out = w.start_detached(&name);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("esc is running"),
        "{}",
        text(&out)
    );

    let (code, st) = w.status(&name);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["state"], "running");
    assert_eq!(st["qmp_status"], "running");
    let supervisor = st["supervisor_pid"].as_i64().unwrap() as i32;
    let qemu = st["qemu_pid"].as_i64().unwrap() as i32;
    assert!(alive(supervisor) && alive(qemu));
    // Spawned paused, so vCPUs are pinned before the guest runs; then `cont`.
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    assert!(
        cmdline.split(|b| *b == 0).any(|a| a == b"-S"),
        "QEMU not started with -S"
    );

    let reply = qmp(&w, &name, "query-status");
    assert_eq!(reply["status"], "running", "{reply}");
    assert_eq!(reply["running"], true);

    let entry = w
        .list_entry("esc")
        .unwrap_or_else(|| panic!("esc missing from vmrun list"));
    assert_eq!(entry["running"], true);
    assert_eq!(entry["supervisor_pid"], supervisor);

    let logs = w.run(&["logs", &name]);
    assert_ok(&logs, "vmrun logs");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("esc is running"));

    // OVMF without an OS ignores the powerdown: after the 2 s timeout the
    // supervisor sends `quit`, and QEMU exits at once.
    let began = Instant::now();
    let stop = w.run(&["stop", &name]);
    let took = began.elapsed();
    assert_ok(&stop, "vmrun stop");
    assert!(String::from_utf8_lossy(&stop.stderr).contains("stopping (Powerdown)"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2) + GRACE,
        "stop took {took:?}: expected the 2 s timeout, then quit"
    );
    assert_torn_down(&w, &name, supervisor, qemu);
    let log = w.log(&name);
    assert!(log.contains("ACPI powerdown sent"), "{log}");
    assert!(log.contains("did not power off in time; QMP quit"), "{log}");
    assert!(log.contains("stopped by Quit"), "{log}");
    assert!(log.contains("exit status 5"), "{log}");
    assert!(!log.contains("SIGTERM"), "{log}");
}

#[test]
fn stop_of_a_guest_that_honours_acpi_is_a_clean_power_off() {
    let w = World::new();
    let name = w.vm(
        "acpi",
        &VmSpec {
            firmware: Firmware::BiosPowerButton,
            timeout: "60s",
            ..VmSpec::default()
        },
    );
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    let began = Instant::now();
    let stop = w.run(&["stop", &name]);
    assert_ok(&stop, "vmrun stop");
    // Powerdown is re-sent every 5 s for guests that miss the first one
    // while they boot; far below the 60 s timeout either way.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    assert_torn_down(&w, &name, supervisor, qemu);
    let log = w.log(&name);
    assert!(log.contains("guest=true"), "{log}");
    assert!(log.contains("acpi powered off"), "{log}");
    assert!(log.contains("exit status 0"), "{log}");
    assert!(!log.contains("QMP quit"), "{log}");
}

#[test]
fn a_guest_that_powers_off_by_itself_ends_the_run_with_exit_0() {
    let w = World::new();
    let name = w.vm(
        "self-off",
        &VmSpec {
            firmware: Firmware::BiosPowerButton,
            timeout: "60s",
            ..VmSpec::default()
        },
    );
    let mut child = w.spawn_foreground(&name);
    let supervisor = child.id() as i32;
    wait_for("the VM to run", WAIT, || {
        (w.status(&name).1["state"] == "running").then_some(())
    });
    let qemu = qemu_pid(&w, &name);
    // Pressed behind the supervisor's back: from its side the guest simply
    // powers off. Pressed until the guest has armed its power button.
    wait_for("the guest to power off", WAIT, || {
        let out = w.run(&["qmp", &name, "system_powerdown"]);
        (!out.status.success() || child.try_wait().unwrap().is_some()).then_some(())
    });
    let (code, stderr) = wait_exit(&mut child, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("self-off powered off"), "{stderr}");
    assert_torn_down(&w, &name, supervisor, qemu);
    // The guest's console and the supervisor's log are its owner's alone.
    for log in ["console.log", "vmrun.log"] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(w.state_dir(&name).join(log)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{log}");
    }
}

#[test]
fn a_qemu_that_fails_at_start_is_a_failed_start_not_a_stop() {
    let w = World::new();
    // virtio-blk without a drive: QEMU fails while creating devices, after
    // its QMP socket exists.
    let name = w.vm(
        "broken",
        &VmSpec {
            extra_args: r#"["-device", "virtio-blk-pci"]"#,
            ..VmSpec::default()
        },
    );
    let out = w.run(&["start", &name, "--detach"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken did not start"), "{stderr}");
    let log = w.log(&name);
    assert!(log.contains("broken failed to start"), "{log}");
    assert!(log.contains("exit status 3"), "{log}");
    assert!(!w.run_dir(&name).exists());
}

#[test]
fn sigterm_to_a_foreground_supervisor_shuts_the_guest_down_and_exits_0() {
    let w = World::new();
    let name = w.vm(
        "term",
        &VmSpec {
            firmware: Firmware::BiosPowerButton,
            timeout: "60s",
            ..VmSpec::default()
        },
    );
    let mut child = w.spawn_foreground(&name);
    let supervisor = child.id() as i32;
    wait_for("the VM to run", WAIT, || {
        (w.status(&name).1["state"] == "running").then_some(())
    });
    let qemu = qemu_pid(&w, &name);
    kill(Pid::from_raw(supervisor), Signal::SIGTERM).unwrap();
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM: stopping the VM"), "{stderr}");
    assert!(stderr.contains("term powered off"), "{stderr}");
    assert_torn_down(&w, &name, supervisor, qemu);
}

#[test]
fn foreground_run_shows_the_firmware_console_and_sigint_stops_it() {
    let w = World::new();
    let name = w.vm(
        "fg",
        &VmSpec {
            firmware: Firmware::Uefi,
            timeout: "1s",
            ..VmSpec::default()
        },
    );
    let mut child = w.spawn_foreground(&name);
    let supervisor = child.id() as i32;
    let console = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = console.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    // OVMF's boot manager prints on the serial console.
    wait_for("OVMF output on stdout", Duration::from_secs(60), || {
        String::from_utf8_lossy(&console.lock().unwrap())
            .contains("BdsDxe")
            .then_some(())
    });
    let qemu = qemu_pid(&w, &name);
    kill(Pid::from_raw(supervisor), Signal::SIGINT).unwrap();
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(15));
    reader.join().unwrap();
    // OVMF ignores the powerdown: quit after the 1 s timeout, exit 5.
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("SIGINT: stopping the VM"), "{stderr}");
    assert!(stderr.contains("stopped by Quit"), "{stderr}");
    assert_torn_down(&w, &name, supervisor, qemu);
}

#[test]
fn stop_force_quits_without_waiting_for_the_guest() {
    let w = World::new();
    let name = w.vm(
        "force",
        &VmSpec {
            firmware: Firmware::Uefi,
            timeout: "60s",
            ..VmSpec::default()
        },
    );
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    let began = Instant::now();
    let stop = w.run(&["stop", &name, "--force"]);
    assert_ok(&stop, "vmrun stop --force");
    assert!(String::from_utf8_lossy(&stop.stderr).contains("stopping (Quit)"));
    assert!(began.elapsed() < GRACE, "{:?}", began.elapsed());
    assert_torn_down(&w, &name, supervisor, qemu);
    let log = w.log(&name);
    assert!(log.contains("stopped by Quit"), "{log}");
    assert!(!log.contains("SIGTERM"), "{log}");
}

#[test]
fn qemu_killed_by_sigkill_is_reported_as_a_crash_and_torn_down() {
    let w = World::new();
    let name = w.vm("crash", &VmSpec::default());
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    kill(Pid::from_raw(qemu), Signal::SIGKILL).unwrap();
    assert_torn_down(&w, &name, supervisor, qemu);
    let log = w.log(&name);
    assert!(log.contains("QEMU crashed (killed by signal 9)"), "{log}");
    assert!(log.contains("exit status 3"), "{log}");
}

#[test]
fn a_second_start_is_refused_and_the_first_vm_is_untouched() {
    let w = World::new();
    let name = w.vm("twice", &VmSpec::default());
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);

    for args in [&["start", "twice"][..], &["start", "twice", "--detach"]] {
        let out = w.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "twice is already running (supervisor pid {supervisor})"
            )),
            "{args:?}: {}",
            text(&out)
        );
    }
    let (code, st) = w.status(&name);
    assert_eq!(code, Some(0));
    assert_eq!(st["state"], "running");
    assert_eq!(st["qemu_pid"], qemu);
    assert_eq!(st["supervisor_pid"], supervisor);
    assert!(w.run_dir(&name).join("qmp.sock").exists());
    assert_eq!(qmp(&w, &name, "query-status")["status"], "running");

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop --force");
    assert_torn_down(&w, &name, supervisor, qemu);
}

#[test]
fn a_killed_supervisor_leaves_a_stale_run_dir_that_the_next_start_recovers() {
    let w = World::new();
    let name = w.vm("stale", &VmSpec::default());
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let old_qemu = qemu_pid(&w, &name);
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    wait_for("the supervisor to die", WAIT, || {
        (!alive(supervisor)).then_some(())
    });
    assert!(alive(old_qemu), "QEMU runs on without its supervisor");

    let (code, st) = w.status(&name);
    assert_eq!(code, Some(1), "{st}");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["stale_run_dir"], true);

    w.start_detached(&name);
    wait_for("the old QEMU to be stopped", WAIT, || {
        (!alive(old_qemu)).then_some(())
    });
    let (code, st) = w.status(&name);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["state"], "running");
    let new_qemu = st["qemu_pid"].as_i64().unwrap() as i32;
    assert_ne!(new_qemu, old_qemu);
    assert!(
        w.log(&name)
            .contains(&format!("a QEMU (pid {old_qemu}) was still running")),
        "{}",
        w.log(&name)
    );
    let new_supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop --force");
    assert_torn_down(&w, &name, new_supervisor, new_qemu);
}

/// Every verb that reaches a running VM takes its name, whatever file it
/// was started from: a config given by path is in no searched directory.
#[test]
fn a_vm_started_by_path_is_reached_by_name_by_every_verb() {
    let w = World::new();
    let config = w.vm_elsewhere("bypath", &VmSpec::default());
    let out = w.start_detached(config.to_str().unwrap());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("`vmrun status bypath`"),
        "{}",
        text(&out)
    );

    let (code, st) = w.status("bypath");
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["state"], "running");
    let supervisor = st["supervisor_pid"].as_i64().unwrap() as i32;
    let qemu = st["qemu_pid"].as_i64().unwrap() as i32;

    let entry = w
        .list_entry("bypath")
        .unwrap_or_else(|| panic!("bypath missing from vmrun list"));
    assert_eq!(entry["running"], true);
    assert_eq!(entry["supervisor_pid"], supervisor);
    assert_eq!(entry["config"], config.to_str().unwrap());
    let table = w.run(&["list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bypath ") && l.contains("running")),
        "{table}"
    );

    let reply = qmp(&w, "bypath", "query-status");
    assert_eq!(reply["status"], "running", "{reply}");
    let logs = w.run(&["logs", "bypath"]);
    assert_ok(&logs, "vmrun logs bypath");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("bypath is running"));
    // stdin is /dev/null: the console connects, reads EOF and leaves.
    let console = w.run(&["console", "bypath"]);
    assert_ok(&console, "vmrun console bypath");
    assert!(
        String::from_utf8_lossy(&console.stderr).contains("connected to bypath's serial console"),
        "{}",
        text(&console)
    );
    // No [input]: the supervisor itself answers, so the name was found.
    let input = w.run(&["input", "bypath", "toggle"]);
    assert!(
        String::from_utf8_lossy(&input.stderr).contains("no [input]"),
        "{}",
        text(&input)
    );

    assert_ok(&w.run(&["stop", "bypath", "--force"]), "vmrun stop bypath");
    // A stopped VM is found by what it left in its state dir.
    assert_torn_down(&w, "bypath", supervisor, qemu);
    let logs = w.run(&["logs", "bypath"]);
    assert_ok(&logs, "vmrun logs bypath after the stop");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("stopped by Quit"));
    let list = w.run(&["list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("bypath"),
        "{}",
        text(&list)
    );
}

#[test]
fn restore_by_name_after_kill_9_of_a_vm_started_by_path() {
    let w = World::new();
    let config = w.vm_elsewhere("killed", &VmSpec::default());
    w.start_detached(config.to_str().unwrap());
    let supervisor = w.pid_in("killed", "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, "killed");
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    wait_for("the supervisor to die", WAIT, || {
        (!alive(supervisor)).then_some(())
    });
    assert!(alive(qemu), "QEMU runs on without its supervisor");
    let (code, st) = w.status("killed");
    assert_eq!(code, Some(1), "{st}");
    assert_eq!(st["stale_run_dir"], true);

    let out = w.run(&["restore", "killed"]);
    assert_ok(&out, "vmrun restore killed");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("stopped the QEMU (pid {qemu})")),
        "{}",
        text(&out)
    );
    // No hostdev: the journal holds nothing to give back.
    assert!(
        said.contains("killed: nothing to restore"),
        "{}",
        text(&out)
    );
    assert!(!alive(qemu), "restore left QEMU {qemu} running");
    assert!(!w.run_dir("killed").exists());
    let (code, st) = w.status("killed");
    assert_eq!(code, Some(1), "{st}");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["stale_run_dir"], false);
}

/// The swtpm the VM's supervisor started: its child named `swtpm` (swtpm
/// reaches its state through a dir fd, so its command line names no path).
fn swtpm_pid(w: &World, name: &str) -> Option<i32> {
    let supervisor = w.pid_in(name, "supervisor.pid")?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm.ends_with("(swtpm") && ppid == supervisor).then_some(pid)
    })
}

#[test]
fn tpm_vm_runs_swtpm_and_qemu_has_the_tpm() {
    let w = World::new();
    let name = w.vm(
        "tpm",
        &VmSpec {
            tpm: true,
            ..VmSpec::default()
        },
    );
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    let swtpm = swtpm_pid(&w, &name).expect("swtpm runs beside QEMU");
    let tpms = qmp(&w, &name, "query-tpm");
    assert_eq!(tpms[0]["model"], "tpm-crb", "{tpms}");
    assert_eq!(tpms[0]["options"]["type"], "emulator", "{tpms}");
    assert!(w.state_dir(&name).join("tpm").is_dir());

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop --force");
    assert_torn_down(&w, &name, supervisor, qemu);
    assert!(!alive(swtpm), "swtpm outlived the VM");
}

/// The firmware files named by the QEMU firmware descriptors on this host
/// that offer Secure Boot (`features` has `secure-boot`).
fn secure_boot_firmware() -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/usr/share/qemu/firmware").unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let desc: Value = serde_json::from_str(&text).unwrap();
        let features = desc["features"].as_array().cloned().unwrap_or_default();
        if features.iter().any(|f| f == "secure-boot") {
            found.push(
                desc["mapping"]["executable"]["filename"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    found
}

#[test]
fn secure_boot_tpm_vm_runs_the_firmware_a_descriptor_offers_for_secure_boot() {
    let w = World::new();
    let name = w.vm(
        "sb",
        &VmSpec {
            firmware: Firmware::UefiSecureBoot,
            tpm: true,
            ..VmSpec::default()
        },
    );
    // Debian 12 names OVMF_CODE_4M.ms.fd, Debian 13 OVMF_CODE_4M.secboot.fd:
    // whatever this host's descriptors offer, vmrun must pick one of them.
    let dry = w.run(&[&name, "--dry-run"]);
    assert_ok(&dry, "vmrun --dry-run");
    let dry = text(&dry);
    let code = dry
        .lines()
        .find_map(|l| l.strip_prefix("# firmware: "))
        .unwrap_or_else(|| panic!("no firmware line: {dry}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let offered = secure_boot_firmware();
    assert!(offered.contains(&code), "{code} is not among {offered:?}");

    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    // Secure Boot firmware needs SMM and a flash that only SMM code writes.
    let smm = qmp_with(
        &w,
        &name,
        "qom-get",
        r#"{"path": "/machine", "property": "smm"}"#,
    );
    assert_eq!(smm, "on", "{smm}");
    let secure = qmp_with(
        &w,
        &name,
        "qom-get",
        r#"{"path": "/machine/system.flash0", "property": "secure"}"#,
    );
    assert_eq!(secure, true, "{secure}");
    let tpms = qmp(&w, &name, "query-tpm");
    assert_eq!(tpms[0]["options"]["type"], "emulator", "{tpms}");
    assert!(w.state_dir(&name).join(format!("{name}_VARS.fd")).is_file());

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop --force");
    assert_torn_down(&w, &name, supervisor, qemu);
}

/// The real uid from a `/proc/PID/status` `Uid:` line (real, effective,
/// saved, fs).
fn uids(pid: i32) -> Vec<u32> {
    proc_status_field(pid, "Uid")
        .unwrap_or_default()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

/// The real gid from a `/proc/PID/status` `Gid:` line.
fn real_gid(pid: i32) -> u32 {
    proc_status_field(pid, "Gid")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// As root with `user = "auto"`, QEMU and swtpm are exec'd as the VM's own
/// unprivileged uid, and get their files (sockets, pflash images, console
/// log, TPM state dir) from vmrun as descriptors.
#[test]
fn as_root_qemu_runs_as_an_unprivileged_user_and_stays_controllable() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks QEMU's privilege drop and needs root (CI runs as root)"
    );
    let w = World::new();
    // The world's root plays /var/lib and /run (0755); vmrun's own dirs
    // below it are its business.
    w.make_world_readable();
    let name = w.vm(
        "drop",
        &VmSpec {
            firmware: Firmware::Uefi,
            tpm: true,
            timeout: "1s",
            user: "auto",
            ..VmSpec::default()
        },
    );
    w.start_detached(&name);
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);
    let uid = uids(qemu)[0];
    assert!(
        vmrun::plan::identity::DYNAMIC_UIDS.contains(&uid),
        "QEMU runs as a per-VM uid, not {uid}"
    );
    assert_eq!(uids(qemu), vec![uid; 4], "QEMU's uids");
    let swtpm = swtpm_pid(&w, &name).expect("swtpm runs");
    assert_eq!(uids(swtpm), vec![uid; 4], "swtpm's uids");

    assert_eq!(qmp(&w, &name, "query-status")["status"], "running");
    assert_eq!(qmp(&w, &name, "query-tpm")[0]["model"], "tpm-crb");
    let (_, st) = w.status(&name);
    assert_eq!(st["state"], "running");

    let stop = w.run(&["stop", &name]);
    assert_ok(&stop, "vmrun stop");
    assert_torn_down(&w, &name, supervisor, qemu);
    assert!(!alive(swtpm), "swtpm outlived the VM");
    let log = w.log(&name);
    assert!(log.contains("stopped by Quit"), "{log}");
}

/// QEMU 7.2's SPICE binds its unix socket by path: the unprivileged QEMU
/// binds it in a 0700 dir of its uid's under the spice base (vmrun's,
/// 0711), reached through the dir fd vmrun hands it (the run dir stays
/// root's 0700), and the dir goes with the run.
#[test]
fn as_root_spice_binds_its_socket_in_a_dir_of_qemus_uid() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks what an unprivileged QEMU binds and needs root (CI runs as root)"
    );
    let w = World::new();
    std::fs::write(
        w.home.join("vms/spice.toml"),
        "memory = \"128M\"\n[firmware]\ntype = \"bios\"\n[network]\nmode = \"none\"\n\
         [display]\nmode = \"spice\"\n[shutdown]\ntimeout = \"1s\"\n\
         [qemu]\naccel = \"tcg\"\nuser = \"auto\"\n",
    )
    .unwrap();
    w.start_detached("spice");
    let qemu = qemu_pid(&w, "spice");
    let uid = uids(qemu)[0];
    assert_ne!(uid, 0);
    let socket = w.spice_socket("spice");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.uid(), uid, "bound by QEMU itself");
    let dir = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (uid, 0o700));
    let base = std::fs::metadata(socket.parent().unwrap().parent().unwrap()).unwrap();
    assert_eq!((base.uid(), base.mode() & 0o777), (0, 0o711));
    let run = std::fs::metadata(w.run_dir("spice")).unwrap();
    assert_eq!((run.uid(), run.mode() & 0o777), (0, 0o700));
    assert_eq!(qmp(&w, "spice", "query-spice")["enabled"], true);
    assert_ok(&w.run(&["stop", "spice", "--force"]), "vmrun stop --force");
    assert!(!w.run_dir("spice").exists(), "the run dir is gone");
    assert!(
        !socket.parent().unwrap().exists(),
        "QEMU's SPICE dir is gone"
    );
}

/// Reads what is in `pipe` now, without waiting for more.
fn read_available(pipe: &std::fs::File) -> Vec<u8> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(pipe, FcntlArg::F_GETFL).unwrap());
    fcntl(pipe, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader = pipe;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the pipe: {e}"),
        }
    }
    fcntl(pipe, FcntlArg::F_SETFL(flags)).unwrap();
    got
}

#[test]
fn a_detached_supervisor_writes_nothing_to_its_callers_terminal_after_start_returned() {
    let w = World::new();
    let name = w.vm("quiet", &VmSpec::default());
    // One pipe as both stdout and stderr, as a terminal would be.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    let reader = std::fs::File::from(reader);
    let mut cmd = w.cmd(&["start", &name, "--detach"]);
    cmd.stdout(writer.try_clone().unwrap()).stderr(writer);
    let mut start = cmd.spawn().unwrap();
    drop(cmd);
    assert_eq!(wait_exit(&mut start, WAIT).0, Some(0));
    let before = String::from_utf8_lossy(&read_available(&reader)).into_owned();
    assert!(before.contains("quiet is running"), "{before}");
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    let qemu = qemu_pid(&w, &name);

    // `vmrun qmp NAME query-version | head -0`: a closed stdout is no error.
    let (gone, closed) = nix::unistd::pipe().unwrap();
    drop(gone);
    let out = w
        .cmd(&["qmp", &name, "query-version"])
        .stdout(closed)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    assert_ok(&w.run(&["stop", &name]), "vmrun stop");
    assert_torn_down(&w, &name, supervisor, qemu);
    // Every writer has exited: the read ends at EOF.
    let after = std::thread::spawn(move || {
        let mut rest = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut rest).map(|_| rest)
    });
    wait_for("the pipe's end", WAIT, || after.is_finished().then_some(()));
    let after = after.join().unwrap().unwrap();
    assert_eq!(after, "", "written after `start --detach` returned");
}

/// Issue 15's Looking Glass memory for real: the shm file vmrun makes is
/// QEMU's `ivshmem-plain` (1af4:1110) with a BAR2 of the file's size, owned
/// by the client's user with QEMU's group, 0660, while the VM runs; gone
/// after a stop, and after a `kill -9` of the supervisor + `vmrun restore`.
#[test]
fn looking_glass_shm_is_ivshmem_bar2_owned_0660_and_removed_on_stop_and_restore() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let root = nix::unistd::geteuid().is_root();
    // As root, QEMU gets a per-VM uid and the file goes to `nobody`: the
    // group bits are all QEMU has. Not root: both are the caller.
    let spec = VmSpec {
        user: if root { "auto" } else { "root" },
        ..VmSpec::default()
    };
    // /dev/shm is the host's: a name of this process's own.
    let name = format!("lg{}", std::process::id());
    let shm = std::path::PathBuf::from(format!("/dev/shm/looking-glass-{name}"));
    let lg_user = if root { "user = \"nobody\"\n" } else { "" };
    for round in ["stop", "kill"] {
        w.vm(&name, &spec);
        let config = w.home.join("vms").join(format!("{name}.toml"));
        let mut toml = std::fs::read_to_string(&config).unwrap();
        toml.push_str(&format!("\n[looking_glass]\nsize = \"32M\"\n{lg_user}"));
        std::fs::write(&config, toml).unwrap();
        w.start_detached(&name);
        let qemu = qemu_pid(&w, &name);
        let meta = std::fs::metadata(&shm).unwrap_or_else(|e| panic!("{}: {e}", shm.display()));
        assert_eq!(meta.mode() & 0o7777, 0o660, "{round}");
        assert_eq!(meta.len(), 32 << 20);
        let qemu_gid = real_gid(qemu);
        if root {
            assert_eq!(meta.uid(), 65534, "owned by the client's user");
            assert_ne!(qemu_gid, 0, "QEMU runs unprivileged");
        } else {
            assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        }
        assert_eq!(meta.gid(), qemu_gid, "QEMU's group");

        let pci = qmp(&w, &name, "query-pci");
        let devices: Vec<&Value> = pci
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|bus| bus["devices"].as_array().unwrap())
            .collect();
        let ivshmem = devices
            .iter()
            .find(|d| d["id"]["vendor"] == 0x1af4 && d["id"]["device"] == 0x1110)
            .unwrap_or_else(|| panic!("no ivshmem 1af4:1110 in {pci}"));
        let bar2 = ivshmem["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["bar"] == 2)
            .unwrap_or_else(|| panic!("no BAR2 in {ivshmem}"));
        assert_eq!(bar2["size"], 32u64 << 20, "{bar2}");

        let (_, st) = w.status(&name);
        assert_eq!(
            st["looking_glass_client"],
            serde_json::json!(["looking-glass-client", "-f", shm, "-s"]),
            "{st}"
        );

        let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
        if round == "stop" {
            assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop");
            assert_torn_down(&w, &name, supervisor, qemu);
        } else {
            kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
            wait_for("the supervisor to die", WAIT, || {
                (!alive(supervisor)).then_some(())
            });
            assert!(
                shm.exists(),
                "the file outlives a killed supervisor until restore"
            );
            let out = w.run(&["restore", &name]);
            assert_ok(&out, "vmrun restore");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("removed"),
                "{}",
                text(&out)
            );
            assert!(!alive(qemu));
        }
        assert!(!shm.exists(), "{} left after {round}", shm.display());
    }
}

/// Speaks SPICE's link message (`RedLinkHeader`: "REDQ", protocol 2.2, the
/// size of a `RedLinkMess` for the main channel with no capabilities) on
/// `socket` as `uid`, and prints the first 4 bytes of the answer: "REDQ"
/// from a SPICE server. Exits non-zero when connect(2) is refused.
fn spice_link_as(uid: u32, socket: &std::path::Path) -> std::process::Output {
    const LINK: &str = "import socket,struct,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        body=struct.pack('<IBBIII',0,1,0,0,0,18)\n\
        s.sendall(b'REDQ'+struct.pack('<III',2,2,len(body))+body)\n\
        sys.stdout.write(s.recv(4).decode())\n";
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            // Debian's, which every uid may run (not a user's shim on PATH).
            "/usr/bin/python3",
            "-c",
            LINK,
        ])
        .arg(socket)
        .output()
        .expect("setpriv (util-linux) and /usr/bin/python3 run")
}

/// `[looking_glass] spice = true` as root: the SPICE socket QEMU (its own
/// uid) bound is the client user's (`nobody`) with QEMU's group, 0660, in
/// a dir that user can pass through; that user's SPICE link gets the
/// server's "REDQ" answer, another uid's connect is refused. `vmrun
/// status` (JSON and text) shows the client's command line the dry-run
/// shows.
#[test]
fn as_root_looking_glass_spice_socket_admits_the_client_user_only() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test hands a socket to another uid and needs root (CI runs as root)"
    );
    let w = World::new();
    // The world's root plays /run (0755): the client's user must pass it.
    w.make_world_readable();
    let name = format!("lgs{}", std::process::id());
    w.vm(
        &name,
        &VmSpec {
            user: "auto",
            ..VmSpec::default()
        },
    );
    let config = w.home.join("vms").join(format!("{name}.toml"));
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[looking_glass]\nsize = \"32M\"\nuser = \"nobody\"\nspice = true\n");
    std::fs::write(&config, toml).unwrap();
    let dry = w.run(&["start", &name, "--dry-run"]);
    assert_ok(&dry, "vmrun start --dry-run");
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    let client_line = dry
        .lines()
        .find_map(|l| l.strip_prefix("#   client: "))
        .unwrap_or_else(|| panic!("no client line in {dry}"))
        .to_string();

    w.start_detached(&name);
    let qemu = qemu_pid(&w, &name);
    let socket = w.spice_socket(&name);
    let shm = format!("/dev/shm/looking-glass-{name}");
    let (_, st) = w.status(&name);
    assert_eq!(
        st["looking_glass_client"],
        serde_json::json!(["looking-glass-client", "-f", shm, "-c", socket, "-p", "0"]),
        "{st}"
    );
    let status = w.run(&["status", &name]);
    assert!(
        text(&status).contains(&format!("Looking Glass client: {client_line}")),
        "status shows the dry-run's client line {client_line:?}: {}",
        text(&status)
    );

    let meta = std::fs::symlink_metadata(&socket).unwrap();
    let qemu_gid = real_gid(qemu);
    assert_ne!(uids(qemu)[0], 65534, "QEMU runs as its own uid");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, qemu_gid, 0o660),
        "the client's user's, with QEMU's group"
    );
    let dir = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o711, "passable, not listable");

    let client = spice_link_as(65534, &socket);
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "REDQ",
        "the client's user reaches SPICE: {}",
        text(&client)
    );
    let other = spice_link_as(65533, &socket);
    assert!(
        !other.status.success(),
        "uid 65533 got in: {}",
        text(&other)
    );
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("Permission denied"),
        "{}",
        text(&other)
    );

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop");
    assert!(!socket.exists(), "the socket goes with the run");
    assert!(!std::path::Path::new(&shm).exists());
}

/// `[smbios] host = true` on the real host: QEMU is given the host's
/// strings as `-smbios type=1,...` (QMP has no query for SMBIOS tables, so
/// the running QEMU's own command line is checked), and the explicit UUID
/// is the one QEMU reports (`query-uuid`).
#[test]
fn smbios_host_strings_and_explicit_uuid_reach_qemu() {
    let w = World::new();
    let name = w.vm("smbios", &VmSpec::default());
    let config = w.home.join("vms").join(format!("{name}.toml"));
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[smbios]\nuuid = \"3F2504E0-4F89-41D3-9A0C-0305E82C3301\"\nhost = true\n");
    std::fs::write(&config, toml).unwrap();
    w.start_detached(&name);
    let qemu = qemu_pid(&w, &name);
    let uuid = qmp(&w, &name, "query-uuid");
    assert_eq!(
        uuid["UUID"], "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "{uuid}"
    );
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let dmi = std::path::Path::new("/sys/class/dmi/id");
    let vendor = std::fs::read_to_string(dmi.join("sys_vendor")).unwrap_or_default();
    let vendor = vendor.trim();
    if vendor.is_empty() {
        // A host without DMI (some VMs, ARM boards): nothing to copy.
        assert!(!args.iter().any(|a| a.starts_with("type=1")), "{args:?}");
    } else {
        let want = format!("manufacturer={}", vendor.replace(',', ",,"));
        assert!(
            args.iter()
                .any(|a| a.starts_with("type=1,") && a.contains(&want)),
            "no -smbios type=1 with {want} in {args:?}"
        );
    }
    let supervisor = w.pid_in(&name, "supervisor.pid").unwrap();
    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop");
    assert_torn_down(&w, &name, supervisor, qemu);
}

/// /dev/shm is everyone's: a name another user made first (here a symlink
/// to a file vmrun must not touch) refuses the start, and the start leaves
/// both the link and its target as they were.
#[test]
fn looking_glass_refuses_a_shm_name_that_already_exists() {
    let w = World::new();
    let name = format!("lgx{}", std::process::id());
    w.vm(&name, &VmSpec::default());
    let config = w.home.join("vms").join(format!("{name}.toml"));
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[looking_glass]\nsize = \"32M\"\nuser = \"nobody\"\n");
    std::fs::write(&config, toml).unwrap();
    let target = w.home.join("precious");
    std::fs::write(&target, "keep").unwrap();
    let shm = std::path::PathBuf::from(format!("/dev/shm/looking-glass-{name}"));
    std::os::unix::fs::symlink(&target, &shm).unwrap();
    let out = w.run(&["start", &name, "--detach"]);
    let link = std::fs::symlink_metadata(&shm).map(|m| m.file_type().is_symlink());
    let _ = std::fs::remove_file(&shm);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{} already exists", shm.display())),
        "{}",
        text(&out)
    );
    assert!(
        matches!(link, Ok(true)),
        "the start removed or replaced the link"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

/// `vmrun usb NAME list --json`, parsed.
fn usb_list(w: &World, name: &str) -> Vec<Value> {
    let out = w.run(&["usb", name, "list", "--json"]);
    assert_ok(&out, "vmrun usb list");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
        .as_array()
        .cloned()
        .unwrap()
}

/// `[[usb]]` and `vmrun usb` against a real QEMU. This host has no USB
/// devices, which is what a device unplugged at start looks like: QEMU
/// adds a `usb-host` that matches nothing yet and takes the device when it
/// appears, so the VM starts (the plan only warns for `optional`) and
/// attach and detach work on the devices QEMU holds.
#[test]
fn usb_devices_are_listed_attached_and_detached_at_run_time() {
    let w = World::new();
    let name = w.vm("usb", &VmSpec::default());
    let path = w.home.join("vms/usb.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("\n[[usb]]\nids = \"046d:c52b\"\noptional = true\n");
    std::fs::write(&path, config).unwrap();
    w.start_detached(&name);

    let list = usb_list(&w, &name);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], "usb-046d-c52b");
    assert_eq!(list[0]["ids"], "046d:c52b");
    assert_eq!(list[0]["port"], Value::Null);
    assert_eq!(list[0]["attached"], false, "no such device on this host");
    let tree = qmp_with(
        &w,
        &name,
        "human-monitor-command",
        r#"{"command-line": "info usb"}"#,
    );
    assert!(
        tree.as_str().unwrap().contains("ID: usb-046d-c52b"),
        "{tree}"
    );

    let out = w.run(&["usb", &name, "attach", "3-1.2"]);
    assert_ok(&out, "vmrun usb attach 3-1.2");
    assert!(text(&out).contains("not plugged in"), "{}", text(&out));
    let list = usb_list(&w, &name);
    let port = list
        .iter()
        .find(|u| u["id"] == "usb-3-1.2")
        .expect("attached");
    assert_eq!(port["port"], "3-1.2");
    assert_eq!(port["ids"], Value::Null);

    // The same device twice: QEMU refuses the id.
    let again = w.run(&["usb", &name, "attach", "3-1.2"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let bad = w.run(&["usb", &name, "attach", "3:1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));

    for sel in ["3-1.2", "usb-046d-c52b"] {
        let out = w.run(&["usb", &name, "detach", sel]);
        assert_ok(&out, &format!("vmrun usb detach {sel}"));
    }
    wait_for("the devices to go", WAIT, || {
        usb_list(&w, &name).is_empty().then_some(())
    });
    let out = w.run(&["usb", &name, "list"]);
    assert!(text(&out).contains("no USB host devices"), "{}", text(&out));

    assert_ok(&w.run(&["stop", &name, "--force"]), "vmrun stop");
    // A VM that does not run has no devices to show: exit 1.
    wait_for("the VM to stop", WAIT, || {
        (w.run(&["usb", &name, "list"]).status.code() == Some(1)).then_some(())
    });
}
