//! Golden QEMU command lines: every `vms/*.toml` (and the fixture configs in
//! `tests/fixtures/bundle/vms/`) built against the fixture desktop of the
//! test-machine catalogue (`Machine::FixtureDesktop`), for the QEMU versions users run. Any change to the
//! builder shows up as a snapshot diff (`cargo insta review`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::{Path, PathBuf};

use vmrun::config;
use vmrun::host::qemu::QemuVersion;
use vmrun::plan::{self, DirsEnv, PlanContext};
use vmrun::testing::{Machine, TestHost};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// vmrun running as root on the fixture desktop `host`, with fixed dirs.
fn context(host: &TestHost, version: QemuVersion) -> PlanContext {
    PlanContext {
        root: host.root(),
        dirs: DirsEnv {
            is_root: true,
            uid: 0,
            xdg_runtime_dir: None,
            xdg_data_home: None,
            xdg_cache_home: None,
            xdg_config_home: Some("/nonexistent-config".into()),
            home: Some("/root".into()),
            run_base: None,
            state_base: None,
        },
        qemu_version: Some(version),
    }
}

/// The config's text, read as if it sat in `tests/fixtures/bundle/vms/`,
/// whose `firmware/` sibling holds the romfiles the examples name.
fn golden(file: &Path, version: QemuVersion) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let name = file.file_stem().unwrap().to_str().unwrap();
    let source = repo()
        .join("tests/fixtures/bundle/vms")
        .join(file.file_name().unwrap());
    let vm =
        config::load_str(name, &source, &text).unwrap_or_else(|e| panic!("{}", config::render(&e)));
    let host = Machine::FixtureDesktop.build();
    let plan = plan::plan(vm, &context(&host, version));
    let mut out = String::new();
    for f in &plan.findings {
        out.push_str(&format!("# {f}\n"));
    }
    out.push_str(&plan.qemu.binary.to_string_lossy());
    for arg in vmrun::qemu::build_argv(&plan) {
        let arg = arg.to_string_lossy();
        if arg.starts_with('-') {
            out.push('\n');
        } else {
            out.push(' ');
        }
        out.push_str(&arg);
    }
    out.push('\n');
    out.replace(repo().to_str().unwrap(), "[REPO]")
}

fn snapshot(dir: &str, file: &str, version: &str) {
    let path = repo().join(dir).join(file);
    let argv = golden(&path, version.parse().unwrap());
    let name = format!("{}@qemu-{version}", file.trim_end_matches(".toml"));
    insta::with_settings!({ snapshot_path => "golden", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, argv);
    });
}

#[test]
fn every_example_vm_has_a_golden_command_line() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("vms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "vms/ lost its examples: {files:?}");
    for file in &files {
        snapshot("vms", file, "7.2");
    }
}

#[test]
fn newer_qemu_changes_only_what_it_must() {
    for file in ["win11.toml", "demo.toml"] {
        snapshot("vms", file, "10.0");
    }
}

#[test]
fn four_function_gpu_with_romfile() {
    snapshot("tests/fixtures/bundle/vms", "gpu4.toml", "9.2");
}

/// What the supervisor spawns differs from the dry run in one place: its
/// own monitor is the listening socket vmrun hands QEMU as stdin.
#[test]
fn spawned_qemu_differs_only_in_the_supervisor_monitor() {
    use vmrun::qemu::{build_argv, build_argv_with, QmpListener};
    let text = std::fs::read_to_string(repo().join("vms/demo.toml")).unwrap();
    let vm = config::load_str("demo", &repo().join("vms/demo.toml"), &text).unwrap();
    let host = Machine::FixtureDesktop.build();
    let plan = plan::plan(vm, &context(&host, "7.2.0".parse().unwrap()));
    let shown = build_argv(&plan);
    let spawned = build_argv_with(&plan, QmpListener::Stdin);
    assert_eq!(shown.len(), spawned.len());
    let differing: Vec<_> = shown.iter().zip(&spawned).filter(|(a, b)| a != b).collect();
    assert_eq!(differing.len(), 1, "{differing:?}");
    let (path_form, fd_form) = differing[0];
    assert_eq!(
        path_form.to_str().unwrap(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            plan.paths.qmp_socket.display()
        )
    );
    assert_eq!(fd_form, "socket,id=qmp,fd=0,server=on,wait=off");
}

#[test]
fn qemu_mode_input_reads_the_devices_with_input_linux() {
    snapshot("tests/fixtures/bundle/vms", "input-qemu.toml", "7.2");
}

/// Looking Glass over /dev/shm with its SPICE agent, a virtio-vga beside
/// the x_vga GPU, and the host's SMBIOS strings (commas doubled).
#[test]
fn gaming_vm_with_looking_glass_secondary_display_and_smbios() {
    for version in ["7.2", "10.0"] {
        snapshot("tests/fixtures/bundle/vms", "gaming.toml", version);
    }
}

#[test]
fn a_lone_function_3_is_placed_at_function_0() {
    snapshot("tests/fixtures/bundle/vms", "usb-fn3.toml", "7.2");
}

/// A forwarded port listens on the host's loopback unless the rule names
/// another address.
#[test]
fn port_forwards_listen_on_localhost_unless_an_address_is_given() {
    let text = "memory = \"1G\"\n[network]\nforward = [\"tcp:2222:22\", \"udp:0.0.0.0:5000:53\"]\n";
    let vm = config::load_str("fw", &repo().join("vms/fw.toml"), text)
        .unwrap_or_else(|e| panic!("{}", config::render(&e)));
    let host = Machine::FixtureDesktop.build();
    let plan = plan::plan(vm, &context(&host, "7.2.0".parse().unwrap()));
    let argv: Vec<String> = vmrun::qemu::build_argv(&plan)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let netdev = argv
        .iter()
        .find(|a| a.starts_with("user,"))
        .expect("a user-mode netdev");
    assert_eq!(
        netdev,
        "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5000-:53"
    );
}

/// `[cpu] isolate` changes the host, not the command line; `iothread` gives
/// the virtio-blk disk its own I/O thread and the SCSI controller one.
#[test]
fn isolated_vm_with_iothreads() {
    snapshot("tests/fixtures/bundle/vms", "isolated.toml", "7.2");
}
