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

/// `vmrun CONFIG --dry-run` against the fixture desktop, with `input` as
/// the config's `[input]` section.
fn dry_run_with_input(input: &str) -> (Option<i32>, String) {
    let host = Machine::FixtureDesktop.build();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kbd.toml");
    std::fs::write(
        &file,
        format!("memory = \"1G\"\n[display]\nmode = \"none\"\n[network]\nmode = \"none\"\n[input]\n{input}"),
    )
    .unwrap();
    let out = cargo_bin_cmd!("vmrun")
        .current_dir(repo())
        .env("VMRUN_HOST_ROOT", host.path())
        .arg(&file)
        .args(["--dry-run", "--qemu-version", "7.2"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hotkey_the_keyboard_cannot_press_is_refused_exit_2() {
    // docs/security.md item 18: a mouse named as the keyboard has no Ctrl keys.
    let (code, err) = dry_run_with_input(
        "keyboard = \"/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse\"\ntoggle = \"ctrl-ctrl\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot produce KEY_LEFTCTRL"), "{err}");
    assert!(err.contains("Optical_Mouse-event-mouse"), "{err}");
    let (code, err) = dry_run_with_input(
        "keyboard = \"/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd\"\ntoggle = \"ctrl-ctrl\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_router_without_a_keyboard_is_refused_exit_2() {
    // docs/security.md item 18: router mode grabs the mouse, no key could free it.
    let (code, err) = dry_run_with_input(
        "mouse = \"/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing can press the switch"), "{err}");
}

/// Root's `vmrun CONFIG --dry-run` of a router VM with an `on_switch`
/// command, `extra` more `[input]` lines, and `sudo_uid` as SUDO_UID.
fn dry_run_on_switch(extra: &str, sudo_uid: Option<&str>) -> (Option<i32>, String) {
    let host = Machine::FixtureDesktop.build();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sw.toml");
    std::fs::write(
        &file,
        format!(
            "memory = \"1G\"\n[display]\nmode = \"none\"\n[network]\nmode = \"none\"\n[input]\n\
             keyboard = \"/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd\"\n\
             on_switch = [\"/bin/true\"]\n{extra}"
        ),
    )
    .unwrap();
    let mut cmd = cargo_bin_cmd!("vmrun");
    cmd.current_dir(repo())
        .env("VMRUN_HOST_ROOT", host.path())
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID");
    if let Some(uid) = sudo_uid {
        cmd.env("SUDO_UID", uid);
    }
    let out = cmd
        .arg(&file)
        .args(["--dry-run", "--qemu-version", "7.2"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn on_switch_never_runs_as_root_by_accident() {
    // docs/security.md item 20. Runs as root (here and in CI), where no desktop
    // session owns seat0.
    assert!(nix::unistd::geteuid().is_root());
    let seat = std::fs::read_to_string("/run/systemd/seats/seat0").unwrap_or_default();
    assert!(
        !seat
            .lines()
            .any(|l| l.starts_with("ACTIVE_UID=") && l != "ACTIVE_UID=0"),
        "a desktop session is active on seat0: this test needs a machine without one"
    );
    let (code, err) = dry_run_on_switch("", None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("on_switch would run as root"), "{err}");
    // Behind sudo: the invoking user's.
    let (code, err) = dry_run_on_switch("", Some("65534"));
    assert_eq!(code, Some(0), "{err}");
    // Root on purpose.
    let (code, err) = dry_run_on_switch("on_switch_user = \"root\"\n", None);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = dry_run_on_switch("on_switch_user = \"no-such-user-x\"\n", None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no such user"), "{err}");
}
