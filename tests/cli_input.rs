//! `vmrun input` with the real binary: the listing of the fixture host's
//! input devices (sysfs capabilities and /dev/input links, through
//! `VMRUN_HOST_ROOT`), and the switch verb's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin_cmd;
use vmrun::testing::Machine;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn list(args: &[&str]) -> String {
    let host = Machine::FixtureDesktop.build();
    let out = cargo_bin_cmd!("vmrun")
        .env("VMRUN_HOST_ROOT", host.path())
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn input_list_json_classifies_and_names_by_id() {
    let text = list(&["input", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let kinds: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    // The G502's macro-key node (event6) is a keyboard of its own.
    assert_eq!(
        kinds,
        ["keyboard", "mouse", "keyboard", "mouse", "keyboard"]
    );
    insta::assert_snapshot!("input_list_json", text);
}

#[test]
fn input_list_table_shows_kind_node_name_and_links() {
    insta::assert_snapshot!("input_list_table", list(&["input", "list"]));
}

#[test]
fn input_switch_of_a_vm_that_is_not_running_exits_1() {
    let run = tempfile::tempdir().unwrap();
    let out = cargo_bin_cmd!("vmrun")
        .current_dir(repo())
        .env("VMRUN_RUN_DIR", run.path())
        .args(["input", "vms/demo.toml", "toggle"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo is not running"));
}

#[test]
fn input_list_takes_no_side() {
    let out = cargo_bin_cmd!("vmrun")
        .args(["input", "list", "host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
