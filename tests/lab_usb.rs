//! `[[usb]]` on a real kernel: the lab host's own USB keyboard (QEMU's
//! usb-kbd on an emulated xHCI) taken by a nested VM, given back to usbhid
//! after a stop and after `kill -9` + `vmrun restore`, and `vmrun usb
//! attach/detach` at run time (`tests/lab/scenarios/usb_host.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use std::time::Duration;

use lab_checks::{fields, run, text, Checks};
use vmrun_lab::serde_json::json;
use vmrun_lab::{Scenario, Topology};

#[test]
fn a_nested_vm_takes_the_hosts_usb_keyboard_and_gives_it_back() {
    // Three nested runs and a replug, under TCG: past the default 300 s on
    // a loaded 2-core machine.
    let run = run(Scenario::named("usb_host.sh")
        .topology(Topology::Usb)
        .timeout(Duration::from_secs(900)));
    let mut c = Checks::new(&run);
    c.fields(&fields(&[
        ("host_ids", json!("0627:0001")),
        ("host_driver", json!("usbhid")),
        ("host_owner", json!("0")),
        // Start: usbhid lets go, QEMU's uid owns the node, the nested
        // guest's bus has the keyboard.
        ("u1_start_exit", json!(0)),
        ("u1_state", json!("running")),
        ("u1_taken", json!(true)),
        // Run time: detach gives it to usbhid, attach by port takes it again.
        ("u1_detach_exit", json!(0)),
        ("u1_detached_back", json!(true)),
        ("u1_list_detached", json!("[]")),
        ("u1_attach_exit", json!(0)),
        ("u1_attached_taken", json!(true)),
        (
            "u1_list_attached",
            json!(r#"[{"id":"usb-1-1","ids":null,"port":"1-1","attached":true}]"#),
        ),
        // Replug while it runs: a new node, handed to QEMU's uid, and the
        // nested guest's bus has the keyboard again.
        ("u1_udevd", json!(true)),
        ("u1_port_attr", json!("yes")),
        ("u1_unplugged", json!(true)),
        ("u1_guest_lost", json!(true)),
        ("u1_replugged", json!(true)),
        ("u1_new_node", json!(true)),
        ("u1_replug_owned", json!(true)),
        ("u1_replug_attached", json!(true)),
        ("u1_replug_taken", json!(true)),
        // Detached, it is not handed over when replugged; attached while
        // away, it is once it is plugged in.
        ("u1_detach2_exit", json!(0)),
        ("u1_detach2_back", json!(true)),
        ("u1_detached_replugged", json!(true)),
        ("u1_detached_replug_owner", json!("0")),
        ("u1_detached_replug_host", json!(true)),
        ("u1_attach_away_exit", json!(0)),
        ("u1_away_replugged", json!(true)),
        ("u1_away_owned", json!(true)),
        ("u1_away_attached", json!(true)),
        ("u1_away_taken", json!(true)),
        // Stop: back on usbhid and root's (the replugged node too).
        ("u1_stop_exit", json!(0)),
        ("u1_back", json!(true)),
        ("u1_after_owner", json!("0")),
        ("u1_run_dir_gone", json!(true)),
        // kill -9 of supervisor and QEMU: nothing rebinds usbhid until
        // restore replays the journal.
        ("u2_start_exit", json!(0)),
        ("u2_taken", json!(true)),
        ("u2_qemu_gone", json!(true)),
        ("u2_killed_driver", json!("")),
        ("u2_restore_exit", json!(0)),
        ("u2_back", json!(true)),
        ("u2_after_owner", json!("0")),
        ("u2_run_dir_gone", json!(true)),
    ]));
    let dry = text(&run, "u1_dry_out");
    c.that(
        dry.contains("usb-host,id=usb-0627-0001,bus=xhci.0,vendorid=0x0627,productid=0x0001"),
        "the dry-run lacks the usb-host",
    );
    c.that(
        dry.contains("(1-1 QEMU QEMU USB Keyboard /dev/bus/usb/001/002, handed to QEMU's user)"),
        "the dry-run does not name the device and its node",
    );
    for key in ["u1_info", "u2_info", "u1_info_attached"] {
        c.that(
            text(&run, key).contains("Product QEMU USB Keyboard"),
            &format!("{key}: the nested guest's bus lacks the keyboard"),
        );
    }
    c.that(
        text(&run, "u1_list")
            == r#"[{"id":"usb-0627-0001","ids":"0627:0001","port":null,"attached":true}]"#,
        "vmrun usb list does not show the attached keyboard",
    );
    c.that(
        text(&run, "u1_attach_away_out").contains("1-1 is not plugged in"),
        "attach of an unplugged device does not say it waits for it",
    );
    let uid = text(&run, "u1_qemu_uid");
    c.that(
        !uid.is_empty() && uid != "0" && text(&run, "u1_owner") == uid,
        "the usbfs node is not QEMU's uid's while the VM runs",
    );
    c.that(
        text(&run, "u1_journal").contains(r#"{"step":"usb-driver","port":"1-1"}"#),
        "the journal lacks the usb-driver step",
    );
    // The first hand-over, the attach's and the replug's: each journaled.
    c.that(
        text(&run, "u1_replug_journal").parse::<u32>().unwrap_or(0) >= 3,
        "the replugged node's hand-over is not journaled",
    );
    c.that(
        text(&run, "u1_replug_node") != "/dev/bus/usb/001/002",
        "the replugged keyboard kept its old node",
    );
    c.done();
}
