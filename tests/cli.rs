//! The real binary's command line: dry-run, exit statuses, generated docs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use vmrun::testing::{Machine, TestHost};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vmrun() -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("vmrun");
    cmd.current_dir(repo()).env_remove("VMRUN_HOST_ROOT");
    cmd
}

#[test]
fn the_win11_example_asks_for_its_romfile() {
    // The repository ships no VBIOS: the example must say where to put one.
    let host = Machine::FixtureDesktop.build();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", host.path())
        .args(["start", "vms/win11.toml", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("firmware/rtx3050.rom"), "{err}");
}

#[test]
fn dry_run_against_the_fixture_host_exits_0_and_shows_the_plan() {
    let host = Machine::FixtureDesktop.build();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", host.path())
        .args([
            "tests/fixtures/bundle/vms/gpu4.toml",
            "--dry-run",
            "--qemu-version",
            "9.2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("# devices to bind to vfio-pci:"));
    assert!(text.contains("0000:0b:00.3"));
    assert!(
        text.contains("# firmware: /usr/share/OVMF/OVMF_CODE_4M.ms.fd"),
        "{text}"
    );
    assert!(text.contains("romfile="), "{text}");
}

#[test]
fn dry_run_on_a_host_without_the_devices_exits_1_but_prints_the_command() {
    let empty = tempfile::tempdir().unwrap();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", empty.path())
        .args([
            "tests/fixtures/bundle/vms/gpu4.toml",
            "--dry-run",
            "--qemu-version",
            "7.2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no such PCI device"), "{text}");
    assert!(text.contains("vfio-pci,host=0000:0b:00.0"), "{text}");
}

#[test]
fn dry_run_json_is_json_with_the_argv() {
    let host = Machine::FixtureDesktop.build();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", host.path())
        .args([
            "start",
            "vms/demo.toml",
            "--dry-run",
            "--json",
            "--qemu-version",
            "7.2",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["argv"][0], "qemu-system-x86_64");
    assert_eq!(v["plan"]["machine"], "pc-q35-7.2");
    assert_eq!(v["plan"]["vm"]["name"], "demo");
}

#[test]
fn an_invalid_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "memory = \"4G\"\n[cpu]\ncores = 2\npin = [1]\n").unwrap();
    let out = vmrun().arg(&file).arg("--dry-run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml:4"), "{err}");
    assert!(err.contains("cpu.pin"), "{err}");
}

#[test]
fn an_unknown_vm_name_lists_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let out = vmrun()
        .env("VMRUN_HOME", home.path())
        .args(["no-such-vm", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains(&home.path().join("vms").display().to_string()),
        "{err}"
    );
}

/// Verbs other than `start` find a VM by its run or state dir, with no
/// config anywhere; a name that left nothing behind still needs one.
#[test]
fn a_vm_is_found_by_its_dirs_without_a_config() {
    let dirs = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        vmrun()
            .env("VMRUN_HOME", home.path())
            .env("VMRUN_RUN_DIR", dirs.path().join("run"))
            .env("VMRUN_STATE_DIR", dirs.path().join("state"))
            .args(args)
            .output()
            .unwrap()
    };
    let ghost_run_dir = dirs.path().join("run/ghost");
    std::fs::create_dir_all(&ghost_run_dir).unwrap();

    let out = run(&["status", "ghost"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("ghost: stopped"), "{said}");
    let out = run(&["restore", "ghost"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("ghost: nothing to restore"), "{said}");
    assert!(!ghost_run_dir.exists());

    let out = run(&["status", "nobody"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no config for VM `nobody`"), "{err}");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = vmrun().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("vmrun"));
    }
    let out = vmrun().arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH vmrun"));
}

/// The dry-run's text, pasted into a shell, starts the QEMU vmrun would:
/// run it and ask the QEMU that comes up for its status over QMP.
#[test]
fn the_printed_command_pasted_into_a_shell_starts_qemu() {
    let dirs = tempfile::tempdir().unwrap();
    let out = vmrun()
        .env("VMRUN_RUN_DIR", dirs.path().join("run"))
        .env("VMRUN_STATE_DIR", dirs.path().join("state"))
        .args(["vms/demo.toml", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let script = dirs.path().join("paste.sh");
    std::fs::write(&script, &out.stdout).unwrap();
    let mut shell = Command::new("bash")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let qmp = dirs.path().join("run/demo/qmp.sock");
    let status = query_status(&qmp, Instant::now() + Duration::from_secs(30));
    let _ = shell.kill();
    let _ = Command::new("pkill")
        .arg("-f")
        .arg(qmp.to_str().unwrap())
        .status();
    let _ = shell.wait();
    assert_eq!(
        status.as_deref(),
        Some("running"),
        "QEMU from the pasted command did not answer"
    );
}

/// A description is free text: whatever it holds, the dry-run prints it as
/// comments, and the rest is vmrun's own lines of quoted words.
#[test]
fn a_description_cannot_add_a_line_to_the_pasteable_dry_run() {
    let dirs = tempfile::tempdir().unwrap();
    let file = dirs.path().join("evil.toml");
    std::fs::write(
        &file,
        "memory = \"64M\"\n\
         description = \"fine\\n; touch pwned\\n$(touch pwned)\\t`touch pwned` '\"\n\
         [display]\nmode = \"none\"\n[network]\nmode = \"none\"\n",
    )
    .unwrap();
    let host = Machine::FixtureDesktop.build();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", host.path())
        .env("VMRUN_RUN_DIR", dirs.path().join("run"))
        .env("VMRUN_STATE_DIR", dirs.path().join("state"))
        .arg(&file)
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("#   fine\n#     ; touch pwned\n"), "{text}");
    // Outside comments: vmrun's mkdir, the VARS copy, and QEMU's argv, one
    // option per continuation line; none of the description.
    let mut continued = false;
    for line in text.lines() {
        let ours = line.starts_with('#')
            || line.starts_with("mkdir -p -m 0700 ")
            || line.starts_with("[ -e ")
            || (continued && line.starts_with("  -"))
            || line.ends_with(" \\") && !continued;
        assert!(ours, "a line vmrun did not write: {line:?}\n{text}");
        assert!(line.starts_with('#') || !line.contains("pwned"), "{line}");
        continued = line.ends_with(" \\");
    }
    let script = dirs.path().join("paste.sh");
    std::fs::write(&script, &text).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n refused:\n{text}");
}

fn query_status(socket: &Path, deadline: Instant) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let (qmp, _events) = vmrun::qmp::connect_with_retry(socket, deadline.into())
            .await
            .ok()?;
        let v = qmp.execute_raw("query-status", None).await.ok()?;
        let _ = qmp.quit().await;
        v["status"].as_str().map(str::to_owned)
    })
}

/// Runs vmrun with a stdout whose reader is already gone (`| head -0`).
fn with_closed_stdout(host: &TestHost, args: &[&str]) -> std::process::Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .current_dir(repo())
        .env("VMRUN_HOST_ROOT", host.path())
        .env("VMRUN_RUN_DIR", "/run/vmrun")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_every_verb_quietly_with_exit_0() {
    let host = Machine::FixtureDesktop.build();
    for args in [
        &["devices"][..],
        &["devices", "--json"],
        &["list"],
        &["list", "--json"],
        &["--help"],
        &["start", "--help"],
        &["completions", "bash"],
        &["man"],
        &["start", "vms/demo.toml", "--dry-run"],
        &["status", "vms/demo.toml"],
    ] {
        let out = with_closed_stdout(&host, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_real_start_with_a_fake_host_root_is_refused_exit_2() {
    // docs/security.md item 11: the plan would read the fake tree while the start
    // changes this machine. --dry-run only reads: it keeps working.
    let host = Machine::FixtureDesktop.build();
    let dirs = tempfile::tempdir().unwrap();
    for args in [
        &["start", "vms/demo.toml"][..],
        &["start", "vms/demo.toml", "--detach"],
    ] {
        let out = vmrun()
            .env("VMRUN_HOST_ROOT", host.path())
            .env_remove("VMRUN_TEST_FAKE_HOST_CHANGES")
            .env("VMRUN_RUN_DIR", dirs.path().join("run"))
            .env("VMRUN_STATE_DIR", dirs.path().join("state"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("VMRUN_HOST_ROOT is set"), "{args:?}: {err}");
        assert!(!dirs.path().join("run").exists(), "{args:?}: {err}");
    }
}

#[test]
fn a_huge_page_guest_larger_than_the_host_is_a_finding_before_any_change() {
    // docs/security.md item 13: `size = "1T"` with 2M pages planned with exit 0.
    let host = Machine::IntelNvidiaLaptop.build();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.toml");
    std::fs::write(
        &file,
        "[memory]\nsize = \"1T\"\nhugepages = \"2M\"\n[display]\nmode = \"none\"\n[network]\nmode = \"none\"\n",
    )
    .unwrap();
    let out = vmrun()
        .env("VMRUN_HOST_ROOT", host.path())
        .arg(&file)
        .args(["--dry-run", "--qemu-version", "7.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("needs 524288 pages"), "{text}");
    assert!(text.contains("MemTotal 16384 MiB"), "{text}");
}

/// `[[usb]]` on the fixture desktop: the dry-run shows each device found
/// and its node; a missing device refuses (exit 1) unless optional, and the
/// command line is printed either way; the JSON plan carries the devices.
#[test]
fn usb_devices_are_found_on_the_fixture_host_and_a_missing_one_refuses() {
    let host = Machine::FixtureDesktop.build();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pads.toml");
    let base = "memory = \"1G\"\n[network]\nmode = \"none\"\n[qemu]\naccel = \"tcg\"\n\
                [[usb]]\nids = \"045e:028e\"\nindex = 1\n[[usb]]\nport = \"1-7\"\n";
    let dry_run = |text: &str, json: bool| {
        std::fs::write(&file, text).unwrap();
        let mut cmd = vmrun();
        cmd.env("VMRUN_HOST_ROOT", host.path()).arg(&file).args([
            "--dry-run",
            "--qemu-version",
            "7.2",
        ]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = dry_run(base, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "#   usb-045e-028e-1 by ids 045e:028e + port 1-1.4 (1-1.4 /dev/bus/usb/001/008, "
        ),
        "{text}"
    );
    assert!(
        text.contains("-device usb-host,id=usb-1-7,bus=xhci.0,hostbus=1,hostport=7"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&dry_run(base, true).stdout).unwrap();
    assert_eq!(v["plan"]["usb"][1]["found"]["ids"], "046d:c52b");
    assert_eq!(v["plan"]["usb"][0]["matcher"]["port"], "1-1.4");

    let missing = format!("{base}[[usb]]\nids = \"dead:beef\"\n");
    let out = dry_run(&missing, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("usb dead:beef: no such USB device"), "{text}");
    assert!(text.contains("vendorid=0xdead,productid=0xbeef"), "{text}");
    let out = dry_run(&format!("{missing}optional = true\n"), false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn usb_verbs_need_a_running_vm_and_a_selector_they_can_read() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("vms")).unwrap();
    std::fs::write(home.path().join("vms/idle.toml"), "memory = \"1G\"\n").unwrap();
    let run = |args: &[&str]| {
        vmrun()
            .env("VMRUN_HOME", home.path())
            .env("VMRUN_RUN_DIR", home.path().join("run"))
            .env("VMRUN_STATE_DIR", home.path().join("state"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["usb", "idle", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("idle is not running"));
    let out = run(&["usb", "idle", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
