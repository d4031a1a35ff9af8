//! `vmrun input` with the real binary: the listing against a fake sysfs
//! and /dev tree (`VMRUN_HOST_ROOT`), and the switch verb's refusals.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An `eventN` whose sysfs capabilities say keyboard or mouse, as 6.1 prints them.
fn device(root: &Path, n: u32, name: &str, key: &str, rel: &str, by_id: &str) {
    let dev = root.join(format!("sys/devices/pci0000:00/usb1/input/input{n}"));
    fs::create_dir_all(dev.join("capabilities")).unwrap();
    fs::create_dir_all(dev.join("id")).unwrap();
    fs::write(dev.join("name"), format!("{name}\n")).unwrap();
    fs::write(dev.join("id/vendor"), "046d\n").unwrap();
    fs::write(dev.join("id/product"), "c077\n").unwrap();
    fs::write(dev.join("capabilities/key"), format!("{key}\n")).unwrap();
    fs::write(dev.join("capabilities/rel"), format!("{rel}\n")).unwrap();
    let class = root.join(format!("sys/class/input/event{n}"));
    fs::create_dir_all(&class).unwrap();
    symlink(&dev, class.join("device")).unwrap();
    fs::create_dir_all(root.join("dev/input/by-id")).unwrap();
    symlink(
        format!("../event{n}"),
        root.join("dev/input/by-id").join(by_id),
    )
    .unwrap();
}

fn fake_host() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let kbd = "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe";
    device(
        tmp.path(),
        2,
        "Logitech USB Keyboard",
        kbd,
        "0",
        "usb-Logitech_USB_Keyboard-event-kbd",
    );
    device(
        tmp.path(),
        5,
        "Logitech USB Optical Mouse",
        "70000 0 0 0 0",
        "903",
        "usb-Logitech_USB_Optical_Mouse-event-mouse",
    );
    tmp
}

#[test]
fn input_list_json_classifies_and_names_by_id() {
    let host = fake_host();
    let out = cargo_bin_cmd!("vmrun")
        .env("VMRUN_HOST_ROOT", host.path())
        .args(["input", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(&str, &str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["node"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["by_id"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "/dev/input/event2",
                "keyboard",
                "/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd"
            ),
            (
                "/dev/input/event5",
                "mouse",
                "/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse"
            ),
        ]
    );
}

#[test]
fn input_list_table_shows_kind_node_name_and_links() {
    let host = fake_host();
    let out = cargo_bin_cmd!("vmrun")
        .env("VMRUN_HOST_ROOT", host.path())
        .args(["input", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        "keyboard  /dev/input/event2    Logitech USB Keyboard [046d:c077]\n\
         \x20         /dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd\n\
         mouse     /dev/input/event5    Logitech USB Optical Mouse [046d:c077]\n\
         \x20         /dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse\n"
    );
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
