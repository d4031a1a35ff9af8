//! Issue 7's lab scenarios: vmrun's input router and QEMU-mode re-add on a
//! real kernel, with virtual keyboards and mice made on /dev/uinput by the
//! scenario (`tests/lab/scenarios/input_*.py`). One guest boot per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use vmrun_lab::serde_json::{json, Value};
use vmrun_lab::{Lab, LabRun, Scenario, Topology};

fn run(script: &str) -> LabRun {
    let lab = Lab::new().unwrap_or_else(|e| panic!("{e}"));
    let scenario = Scenario::named(script)
        .topology(Topology::Gpu)
        .vmrun(env!("CARGO_BIN_EXE_vmrun"));
    lab.run(&scenario).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks `expected` against the scenario's `group` object and fails once
/// with every mismatch and the whole run (results and serial log).
fn check(run: &LabRun, group: &str, expected: &[(&str, Value)]) {
    let facts = run.get(group);
    let mut wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| &facts[*k] != v)
        .map(|(k, v)| format!("{group}.{k}: expected {v}, got {}", facts[*k]))
        .collect();
    if let Some(e) = facts.get("error") {
        wrong.push(format!("the scenario failed: {e}"));
    }
    assert!(wrong.is_empty(), "{}\n{run}", wrong.join("\n"));
}

const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const KEY_C: u16 = 46;
const KEY_D: u16 = 32;
const KEY_G: u16 = 34;
const LCTRL: u16 = 29;
const RCTRL: u16 = 97;
const BTN_SIDE: u16 = 0x113;
const EV_KEY: u16 = 1;
const EV_REL: u16 = 2;
const REL_HWHEEL: u16 = 6;

#[test]
fn router_routes_switches_releases_and_survives_replug() {
    let run = run("input_router.sh");
    assert_eq!(run.get("uinput"), &json!(true), "{run}");
    check(
        &run,
        "router",
        &[
            // `vmrun input list` on the real kernel's sysfs.
            ("list_exit", json!(0)),
            ("list_kbd_kind", json!("keyboard")),
            ("list_mouse_kind", json!("mouse")),
            (
                "list_kbd_by_id",
                json!(["/dev/input/by-id/usb-lab_Keyboard-event-kbd"]),
            ),
            // Proxies carry the extra buttons and the horizontal wheel.
            ("r1_start_exit", json!(0)),
            ("proxy_kbd_name", json!("vmrun r1 keyboard")),
            ("proxy_mouse_extra_buttons", json!(true)),
            ("proxy_mouse_hwheel", json!(true)),
            // Guest focus: the sources are grabbed, events reach the proxies.
            ("focus_at_start", json!("guest")),
            ("kbd_grabbed_by_router", json!(true)),
            ("guest_a", json!([[KEY_A, 1], [KEY_A, 0]])),
            (
                "guest_mouse",
                json!([
                    [EV_REL, REL_HWHEEL, -1],
                    [EV_KEY, BTN_SIDE, 1],
                    [EV_KEY, BTN_SIDE, 0]
                ]),
            ),
            // A key held across a switch is released on the guest's side.
            ("held_d_down", json!([[KEY_D, 1]])),
            ("to_host_exit", json!(0)),
            (
                "to_host_out",
                json!("r1: the host has the keyboard and mouse\n"),
            ),
            ("held_d_released", json!([[KEY_D, 0]])),
            // Host focus: nothing reaches the proxy; the host reads the device.
            ("host_proxy", json!([])),
            ("host_reader", json!([[KEY_D, 0], [KEY_B, 1], [KEY_B, 0]])),
            ("kbd_free_on_host", json!(true)),
            // The hotkey on the host: the guest gets none of it, the host
            // sees both keys go up (the grab waited for them), then the
            // guest has the keyboard.
            ("hotkey_host_focus", json!("guest")),
            ("hotkey_host_proxy", json!([])),
            (
                "hotkey_host_reader",
                json!([[LCTRL, 1], [RCTRL, 1], [RCTRL, 0], [LCTRL, 0]]),
            ),
            ("after_hotkey_proxy", json!([[KEY_C, 1], [KEY_C, 0]])),
            ("after_hotkey_host_reader", json!([])),
            // The hotkey in the guest: the first Ctrl is released there,
            // the second never reaches it.
            ("hotkey_guest_proxy", json!([[LCTRL, 1], [LCTRL, 0]])),
            ("hotkey_guest_focus", json!("host")),
            ("hotkey_guest_proxy_after", json!([])),
            (
                "toggle_out",
                json!("r1: the guest has the keyboard and mouse\n"),
            ),
            // on_switch ran with each new side, as its user, with that
            // user's supplementary group.
            (
                "switches",
                json!([
                    "host 4242 4242 4343",
                    "guest 4242 4242 4343",
                    "host 4242 4242 4343",
                    "guest 4242 4242 4343"
                ]),
            ),
            // Replug: the held key is released, the new device is grabbed
            // behind the same proxy, and routing goes on.
            ("replug_g_down", json!([[KEY_G, 1]])),
            ("replug_g_released", json!([[KEY_G, 0]])),
            ("replug_routes", json!(true)),
            ("replug_same_proxy", json!(true)),
            ("replug_grabbed", json!(true)),
            // Stop and kill -9: the kernel removes the proxies and the grabs.
            ("r1_stop_exit", json!(0)),
            ("r1_proxies_after_stop", json!([])),
            ("r1_kbd_free_after_stop", json!(true)),
            ("r2_start_exit", json!(0)),
            ("r2_proxies_running", json!(1)),
            ("r2_grabbed_running", json!(true)),
            ("r2_proxies_after_kill", json!([])),
            ("r2_kbd_free_after_kill", json!(true)),
            ("r2_mouse_free_after_kill", json!(true)),
            // The real QEMU holds both proxies (another EVIOCGRAB fails),
            // whatever the focus.
            ("r3_start_exit", json!(0)),
            // QEMU, unprivileged (docs/security.md item 3), opens the proxies' own
            // nodes, given to its uid.
            ("r3_virtio_input_host_is_the_proxy_node", json!(true)),
            ("r3_qemu_uid_not_root", json!(true)),
            ("r3_proxies_owned_by_qemu", json!(true)),
            ("r3_proxy_grabbed_by_qemu", json!(true)),
            ("r3_mouse_proxy_grabbed_by_qemu", json!(true)),
            ("r3_proxy_grabbed_on_host_focus", json!(true)),
            ("r3_stop_exit", json!(0)),
        ],
    );
}

#[test]
fn qemu_mode_readds_a_replugged_device_over_qmp() {
    let run = run("input_qemu.sh");
    check(
        &run,
        "qemu",
        &[
            ("start_exit", json!(0)),
            ("objects", json!(["kbd0", "mouse0"])),
            ("kbd_grabbed_by_qemu", json!(true)),
            ("mouse_grabbed_by_qemu", json!(true)),
            // Unplugged: vmrun notices; plugged back: object-del + object-add.
            ("gone_logged", json!(true)),
            ("readd_logged", json!(true)),
            ("objects_after", json!(["kbd0", "mouse0"])),
            (
                "kbd_evdev_after",
                json!("/dev/input/by-id/usb-lab_Keyboard-event-kbd"),
            ),
            // QEMU holds the new node, and the mouse was left alone.
            ("new_kbd_grabbed_by_qemu", json!(true)),
            ("mouse_still_grabbed", json!(true)),
            ("stop_exit", json!(0)),
            ("kbd_free_after_stop", json!(true)),
            // docs/security.md item 3: given to QEMU's uid for the run, then back.
            ("kbd_owned_by_qemu_uid", json!(true)),
            ("kbd_root_after_stop", json!(true)),
            ("mouse_root_after_stop", json!(true)),
        ],
    );
}
