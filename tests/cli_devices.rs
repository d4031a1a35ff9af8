//! `vmrun devices` against the fixture host: the JSON shape scripts rely
//! on, the table, and the IOMMU-off advice.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin_cmd;
use vmrun::testing::machines::ids::RTX_3050;
use vmrun::testing::{Machine, Pci, TestHost};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// vmrun on the fixture host, with VM run dirs under its `/run/vmrun`.
fn vmrun_on(host: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("vmrun");
    cmd.current_dir(repo())
        .env("VMRUN_HOST_ROOT", host)
        .env("VMRUN_RUN_DIR", "/run/vmrun");
    cmd
}

fn fixture() -> TestHost {
    Machine::FixtureDesktop.build()
}

#[test]
fn json_lists_the_fixture_groups_with_stable_fields() {
    let out = vmrun_on(fixture().path())
        .args(["devices", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let _: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    insta::assert_snapshot!("devices_json", text);
}

#[test]
fn all_shows_the_bridge_only_groups_too() {
    let count = |args: &[&str]| {
        let out = vmrun_on(fixture().path()).args(args).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["groups"].as_array().unwrap().len()
    };
    assert_eq!(count(&["devices", "--json"]), 5);
    assert_eq!(count(&["devices", "--json", "--all"]), 8);
}

#[test]
fn table_marks_gpus_their_functions_and_the_holding_vm() {
    let out = vmrun_on(fixture().path()).arg("devices").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("devices_table", text);
}

#[test]
fn without_iommu_groups_it_says_how_to_turn_the_iommu_on() {
    let host = TestHost::new().pci(Pci::vga("01:00.0", RTX_3050));
    let out = vmrun_on(host.path()).arg("devices").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("The IOMMU is off"), "{text}");
    assert!(
        text.contains("intel_iommu=on") && text.contains("amd_iommu=on"),
        "{text}"
    );
    assert!(text.contains("0000:01:00.0"), "{text}");
    let out = vmrun_on(host.path())
        .args(["devices", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["iommu"], false);
    assert_eq!(json["groups"][0]["group"], serde_json::Value::Null);
}

#[test]
fn a_dry_run_missing_the_audio_function_or_taking_a_held_device_exits_1_naming_them() {
    // The plan runs viability and safety: the GPU without its HDMI audio
    // and the USB controller VM `nas` holds are both refused, before any change.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("partial.toml");
    std::fs::write(
        &config,
        "memory = \"4G\"\n\n[[hostdev]]\naddress = \"0000:01:00.0\"\n\n\
         [[hostdev]]\naddress = \"0000:05:00.0\"\n\n\
         [[disk]]\npath = \"/var/lib/vmrun/win11/disk.qcow2\"\n\n[qemu]\nuser = \"root\"\n",
    )
    .unwrap();
    let out = vmrun_on(fixture().path())
        .args(["start", "--dry-run", "--qemu-version", "9.2"])
        .arg(&config)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("IOMMU group 12 is not viable"), "{all}");
    assert!(all.contains("address = \"0000:01:00.1\""), "{all}");
    assert!(all.contains("0000:05:00.0: is held by VM nas"), "{all}");
}
