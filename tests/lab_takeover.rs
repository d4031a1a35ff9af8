//! Issue 6's lab scenarios: single-GPU takeover on a real kernel (UEFI
//! guest, so the emulated VGA is the boot GPU with the firmware's
//! framebuffer), with the nested QEMU taking the GPU. One guest boot per
//! scenario (see `tests/lab/scenarios/takeover_*.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use lab_checks::{devices, fields, run, text, Checks};
use vmrun_lab::serde_json::json;
use vmrun_lab::{Firmware, LabRun, Scenario, Topology};

const NULL: &str = "(null)";
const VFIO: (&str, &str) = ("vfio-pci", "vfio-pci");
const HDA_HOST: (&str, &str) = ("snd_hda_intel", NULL);
const BOCHS_MODULES: [&str; 6] = [
    "bochs",
    "drm_vram_helper",
    "drm_ttm_helper",
    "ttm",
    "drm_kms_helper",
    "drm",
];

fn uefi(script: &str) -> LabRun {
    run(Scenario::named(script)
        .topology(Topology::Gpu)
        .firmware(Firmware::Uefi))
}

/// The display stack recorded by `rec_display` under `prefix`.
fn display(c: &mut Checks, prefix: &str, vtcon: &str, efifb: bool, bochs: bool) {
    let modules: Vec<&str> = if bochs {
        BOCHS_MODULES.to_vec()
    } else {
        vec![]
    };
    c.fields(&fields(&[
        (&format!("{prefix}_vtcon1"), json!(vtcon)),
        (&format!("{prefix}_efifb"), json!(efifb)),
        (&format!("{prefix}_card0"), json!(bochs)),
        (&format!("{prefix}_modules"), json!(modules)),
    ]));
}

fn nested_sees_the_gpu(c: &mut Checks, run: &LabRun, key: &str) {
    let ids = text(run, key);
    for (id, what) in [("1234:1111", "VGA"), ("8086:2668", "HDA")] {
        c.that(
            ids.contains(id),
            &format!("{key}: the nested QEMU's query-pci lacks the {what} {id}"),
        );
    }
}

#[test]
fn takeover_of_efifb_and_fbcon_and_back() {
    let run = uefi("takeover_efifb.sh");
    let mut c = Checks::new(&run);
    let vga_none = ("none", NULL);
    c.fields(&devices("host", &[vga_none, HDA_HOST]));
    display(&mut c, "host", "1", true, false);

    let dry = text(&run, "a_dry_out");
    for step in [
        "no display manager to stop",
        "unbind vtcon1 ((M) frame buffer device)",
        "unbind efi-framebuffer.0 from efi-framebuffer (efifb: its memory at 0xc0000000 is in 0000:00:0a.0's BAR 0)",
        "no module to unload",
    ] {
        c.that(dry.contains(step), &format!("the dry-run lacks {step:?}"));
    }
    c.fields(&fields(&[
        ("a_dry_exit", json!(0)),
        ("a_start_exit", json!(0)),
        ("a_stop_exit", json!(0)),
        ("a_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("a_running", &[VFIO, VFIO]));
    c.fields(&fields(&[("a_running_efifb", json!(false))]));
    c.that(
        text(&run, "a_running_vtcon1") != "1",
        "fbcon must not be bound while the VM has the GPU",
    );
    nested_sees_the_gpu(&mut c, &run, "a_pci_ids");
    // Since Linux 6.0 vfio-pci removes the firmware framebuffer of a VGA it
    // takes (aperture_remove_conflicting_pci_devices -> sysfb_disable): the
    // platform device is gone until reboot, so fbcon has nothing to come
    // back to. vmrun says so, as a note, and the rest is restored.
    c.fields(&fields(&[("a_running_efifb_device", json!(false))]));
    c.fields(&devices("a_after", &[vga_none, HDA_HOST]));
    display(&mut c, "a_after", "", false, false);
    let log = text(&run, "a_log");
    for note in [
        "efi-framebuffer.0 not bound again: the kernel removed it",
        "left unbound: no framebuffer is registered",
        "vmrun exit status 5",
    ] {
        c.that(log.contains(note), &format!("the VM's log lacks {note:?}"));
    }
    c.done();
}

const VGA_BOCHS: (&str, &str) = ("bochs-drm", NULL);

/// The bochs host as it was before each sub-scenario: bochs and its
/// helpers loaded, card0, fbcon bound, the stand-in display manager on.
fn bochs_desktop(c: &mut Checks, prefix: &str) {
    c.fields(&devices(prefix, &[VGA_BOCHS, HDA_HOST]));
    display(c, prefix, "1", false, true);
    c.fields(&fields(&[(&format!("{prefix}_dm"), json!(true))]));
}

#[test]
fn takeover_of_bochs_with_a_display_manager_and_holders_rollback_and_restore() {
    let run = uefi("takeover_bochs.sh");
    let mut c = Checks::new(&run);
    bochs_desktop(&mut c, "host");
    c.fields(&fields(&[("host_holder", json!(true))]));

    // (b) both holders stopped, bochs and its helpers unloaded, bound;
    // after stop all of it back, the display manager included.
    let dry = text(&run, "b_dry_out");
    for step in [
        "stop the display manager with `/tmp/dm-stop` (started again with `/tmp/dm-start`)",
        "standin-dm (pid ",
        "gpuhold (pid ",
        "stop those still holding it named gpuhold",
        "unbind vtcon1 ((M) frame buffer device)",
        "modprobe -r bochs",
        "now-unused",
    ] {
        c.that(dry.contains(step), &format!("the dry-run lacks {step:?}"));
    }
    c.fields(&fields(&[
        ("b_dry_exit", json!(0)),
        ("b_start_exit", json!(0)),
        ("b_running_dm", json!(false)),
        ("b_running_holder_gone", json!(true)),
        ("b_stop_exit", json!(0)),
        ("b_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("b_running", &[VFIO, VFIO]));
    display(&mut c, "b_running", "", false, false);
    nested_sees_the_gpu(&mut c, &run, "b_pci_ids");
    c.that(
        text(&run, "b_journal").contains(r#""step":"stop-process""#),
        "the holder's stop must be journaled",
    );
    bochs_desktop(&mut c, "b_after");

    // (c) a module that won't unload: the start fails naming it, and
    // everything is undone at once.
    c.fields(&fields(&[
        ("c_start_exit", json!(1)),
        ("c_run_dir_gone", json!(true)),
    ]));
    let out = text(&run, "c_start_out");
    c.that(
        out.contains("modprobe -r 9p") && out.contains("everything already changed was undone"),
        "the failed start must name the module and say all was undone",
    );
    bochs_desktop(&mut c, "c_after");

    // (d) kill -9 of the supervisor while the VM runs, then restore.
    c.fields(&fields(&[
        ("d_start_exit", json!(0)),
        ("d_supervisor_ended", json!(true)),
        ("d_state", json!("needs-restore")),
        ("d_restore_exit", json!(0)),
        ("d_qemu_stopped", json!(true)),
        ("d_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("d_running", &[VFIO, VFIO]));
    display(&mut c, "d_running", "", false, false);
    bochs_desktop(&mut c, "d_restored");

    // An abort after journal step 4 (bochs's unload recorded, not made):
    // the display manager and the holder are stopped, fbcon unbound.
    c.fields(&fields(&[
        ("d2_start_exit", json!(134)),
        ("d2_state", json!("needs-restore")),
        ("d2_crashed_dm", json!(false)),
        ("d2_restore_exit", json!(0)),
        ("d2_run_dir_gone", json!(true)),
    ]));
    display(&mut c, "d2_crashed", "0", false, true);
    bochs_desktop(&mut c, "d2_restored");
    c.done();
}

/// The dual topology: bochs drives the VM's GPU (0a.0) and the host's own
/// display (the bochs-display at 0b.0). The takeover unbinds 0a.0 alone and
/// leaves bochs loaded; 0b.0 keeps bochs-drm and its DRM node throughout.
#[test]
fn takeover_leaves_the_driver_of_the_hosts_other_gpu_loaded() {
    let run = run(Scenario::named("takeover_dual.sh").topology(Topology::Dual));
    let mut c = Checks::new(&run);
    let second = json!("bochs-drm node");
    let watched = json!(["bochs-drm_node"]);
    c.fields(&fields(&[
        ("host_second", second.clone()),
        ("host_bochs", json!(true)),
    ]));

    // (a) auto: bochs stays, 0a.0 goes to vfio-pci and comes back.
    let dry = text(&run, "a_dry_out");
    for step in [
        "leave bochs loaded: bochs also drives 0000:00:0b.0 (bochs-drm), which the host keeps; 0000:00:0a.0 alone is unbound from it",
        "no module to unload",
    ] {
        c.that(dry.contains(step), &format!("the dry-run lacks {step:?}"));
    }
    c.that(
        !dry.contains("modprobe -r"),
        "the dry-run must not unload a module",
    );
    c.fields(&fields(&[
        ("a_dry_exit", json!(0)),
        ("a_start_exit", json!(0)),
        ("a_running_second", second.clone()),
        ("a_running_bochs", json!(true)),
        ("a_stop_exit", json!(0)),
        ("a_watch", watched.clone()),
        ("a_after_second", second.clone()),
        ("a_after_bochs", json!(true)),
        ("a_after_vga_card", json!(true)),
        ("a_after_dm", json!(true)),
    ]));
    c.fields(&devices("a_running", &[VFIO, VFIO]));
    nested_sees_the_gpu(&mut c, &run, "a_pci_ids");
    c.fields(&devices("a_after", &[VGA_BOCHS, HDA_HOST]));

    // (b) an explicit list naming bochs is refused before any change.
    c.fields(&fields(&[
        ("b_start_exit", json!(1)),
        ("b_after_second", second.clone()),
        ("b_dm", json!(true)),
    ]));
    c.fields(&devices("b_after", &[VGA_BOCHS, HDA_HOST]));
    let out = text(&run, "b_start_out");
    c.that(
        out.contains(
            "unload_modules would unload bochs, which also drives 0000:00:0b.0 (bochs-drm)",
        ) && out.contains("nothing on the host was changed"),
        "the refusal must name 0b.0 and change nothing",
    );

    // (c) kill -9 of the supervisor, then restore.
    c.fields(&fields(&[
        ("c_start_exit", json!(0)),
        ("c_supervisor_ended", json!(true)),
        ("c_restore_exit", json!(0)),
        ("c_watch", watched),
        ("c_restored_second", second),
        ("c_restored_bochs", json!(true)),
        ("c_restored_dm", json!(true)),
    ]));
    c.fields(&devices("c_running", &[VFIO, VFIO]));
    c.fields(&devices("c_restored", &[VGA_BOCHS, HDA_HOST]));

    // (d) desktop = "restart": the display manager runs again during the
    // VM on 0b.0 alone, and is left running after.
    c.that(
        text(&run, "d_dry_out")
            .contains("start the display manager again at once (desktop = \"restart\"), on 0000:00:0b.0 (bochs-drm)"),
        "the dry-run must say the display manager starts again on 0b.0",
    );
    c.fields(&fields(&[
        ("d_before_dm_holds", json!(["0000:00:0a.0", "0000:00:0b.0"])),
        ("d_dry_exit", json!(0)),
        ("d_start_exit", json!(0)),
        ("d_running_second", json!("bochs-drm node")),
        ("d_running_bochs", json!(true)),
        ("d_running_dm", json!(true)),
        ("d_running_dm_holds", json!(["0000:00:0b.0"])),
        ("d_stop_exit", json!(0)),
        ("d_after_second", json!("bochs-drm node")),
        ("d_after_dm", json!(true)),
        ("d_after_dm_same", json!(true)),
    ]));
    c.fields(&devices("d_running", &[VFIO, VFIO]));
    c.fields(&devices("d_after", &[VGA_BOCHS, HDA_HOST]));
    let journal = text(&run, "d_journal");
    let at = |step: &str| journal.find(step);
    c.that(
        matches!((at("stop-command"), at("bind-vfio"), at("restart-desktop")), (Some(a), Some(b), Some(r)) if a < b && b < r),
        "the journal must hold the stop, the binds, then the restart",
    );
    c.that(
        run.get("d_down_ms").as_u64().is_some(),
        "the time the desktop was down must be measured",
    );
    c.done();
}
