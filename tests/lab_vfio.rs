//! Issue 5's lab scenarios: vmrun's own VFIO prepare and teardown on a real
//! kernel (QEMU TCG guest, emulated intel-iommu, emulated GPU), with the
//! nested QEMU taking the devices. One guest boot per test; each checks a
//! group of facts (see `tests/lab/scenarios/vfio_*.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use std::sync::OnceLock;

use lab_checks::{devices, fields, has_word, run, text, Checks};
use vmrun_lab::serde_json::json;
use vmrun_lab::{LabRun, Scenario, Topology};

const NULL: &str = "(null)";
const VFIO: (&str, &str) = ("vfio-pci", "vfio-pci");
const VGA_HOST: (&str, &str) = ("bochs-drm", NULL);
const HDA_HOST: (&str, &str) = ("snd_hda_intel", NULL);

/// vfio_gpu.sh's one boot, shared by the tests that check parts of it.
fn gpu_run() -> &'static LabRun {
    static RUN: OnceLock<LabRun> = OnceLock::new();
    RUN.get_or_init(|| run(Scenario::named("vfio_gpu.sh").topology(Topology::Gpu)))
}

#[test]
fn vfio_gpu_start_stop_busy_device_and_qemu_crash() {
    let run = gpu_run();
    let mut c = Checks::new(run);

    // The starting point, and vmrun loading vfio-pci itself.
    c.fields(&devices("host", &[VGA_HOST, HDA_HOST]));
    c.fields(&fields(&[
        ("vfio_loaded_before", json!(false)),
        ("vfio_loaded", json!(true)),
    ]));

    // (a) start: both on vfio-pci, the nested QEMU sees both; stop: back.
    c.fields(&fields(&[
        ("a_start_exit", json!(0)),
        ("a_state", json!("running")),
        // The guest ignores ACPI powerdown: stop escalates (the supervisor
        // exits 5), `vmrun stop` itself succeeds once it is gone.
        ("a_stop_exit", json!(0)),
        ("a_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("a_running", &[VFIO, VFIO]));
    c.fields(&devices("a_after", &[VGA_HOST, HDA_HOST]));
    let ids = text(run, "a_pci_ids");
    c.that(
        ids.contains("1234:1111"),
        "the nested QEMU's query-pci lacks the VGA 1234:1111",
    );
    c.that(
        ids.contains("8086:2668"),
        "the nested QEMU's query-pci lacks the HDA 8086:2668",
    );
    // docs/security.md items 3 and 7: the nested QEMU runs as its VM's own uid
    // from the start, and opened the VFIO group that vmrun gave that uid.
    let uid = text(run, "a_qemu_uid");
    c.that(
        !uid.is_empty() && uid != "0",
        &format!("the nested QEMU runs as uid {uid:?}, not an unprivileged one"),
    );
    c.that(
        text(run, "a_group_owner") == uid,
        &format!(
            "/dev/vfio/N belongs to uid {:?}, not QEMU's {uid:?}",
            text(run, "a_group_owner")
        ),
    );

    // (e) a second VM wanting the same device is refused; the first runs on.
    c.fields(&fields(&[
        ("e_first_running", json!(true)),
        ("e_second_exit", json!(1)),
        ("e_first_state", json!("running")),
        ("e_second_run_dir_gone", json!(true)),
        ("e_first_journal", json!(true)),
    ]));
    c.fields(&devices("e_first", &[VFIO, VFIO]));
    let refusal = text(run, "e_second_out");
    c.that(
        has_word(refusal, "e1"),
        "the refusal must name the VM holding the device (e1)",
    );

    // (d) kill -9 of QEMU: the supervisor restores the host and exits 3.
    c.fields(&fields(&[
        ("d_supervisor_ended", json!(true)),
        ("d_exit", json!(3)),
        ("d_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("d_after", &[VGA_HOST, HDA_HOST]));

    eprintln!(
        "guest timings: vmrun start --detach {} ms, vmrun stop {} ms",
        run.get("a_start_ms"),
        run.get("a_stop_ms")
    );
    c.done();
}

/// (b) the VGA without its HDA sibling: refused before any change. Needs
/// the plan's IOMMU group viability check (branch `devices`): without it,
/// vmrun binds the VGA and QEMU refuses the non-viable group (exit 3).
#[test]
fn vfio_gpu_config_missing_the_hda_sibling_is_refused_before_any_change() {
    let run = gpu_run();
    let mut c = Checks::new(run);
    c.fields(&fields(&[
        ("b_start_exit", json!(1)),
        ("b_vga_rebinds", json!(0)),
        ("b_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("b_after", &[VGA_HOST, HDA_HOST]));
    c.that(
        text(run, "b_start_out").contains("0000:00:0a.1"),
        "the refusal must name the missing sibling 0000:00:0a.1",
    );
    c.done();
}

#[test]
fn vfio_crash_of_vmrun_in_prepare_and_while_running_is_restored() {
    let run = run(Scenario::named("vfio_crash.sh").topology(Topology::Gpu));
    let mut c = Checks::new(&run);
    c.fields(&devices("host", &[VGA_HOST, HDA_HOST]));
    // SIGABRT from the fault injection: the shell reports 128 + 6.
    for k in ["c1", "c2"] {
        c.fields(&fields(&[
            (format!("{k}_start_exit").as_str(), json!(134)),
            (format!("{k}_state").as_str(), json!("needs-restore")),
            (format!("{k}_restore_exit").as_str(), json!(0)),
            (format!("{k}_run_dir_gone").as_str(), json!(true)),
        ]));
        c.that(
            !text(&run, &format!("{k}_journal")).is_empty(),
            &format!("{k}: the aborted start must leave its journal"),
        );
    }
    // Aborted after step 1: the VGA's bind recorded, nothing changed yet.
    c.fields(&devices("c1_crashed", &[VGA_HOST, HDA_HOST]));
    c.fields(&devices("c1_restored", &[VGA_HOST, HDA_HOST]));
    // Aborted after step 2: the VGA moved, the HDA (with an override of its
    // own) not yet; both come back exactly, the HDA's override included.
    let hda_overridden = ("snd_hda_intel", "snd_hda_intel");
    c.fields(&devices("c2_crashed", &[VFIO, hda_overridden]));
    c.fields(&devices("c2_restored", &[VGA_HOST, hda_overridden]));

    // kill -9 of a running VM's supervisor: QEMU is left holding the
    // devices; restore stops it and gives both back with their overrides.
    c.fields(&fields(&[
        ("c3_start_exit", json!(0)),
        ("c3_supervisor_ended", json!(true)),
        ("c3_qemu_left_running", json!(true)),
        ("c3_state", json!("needs-restore")),
        ("c3_restore_exit", json!(0)),
        ("c3_qemu_stopped", json!(true)),
        ("c3_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("c3_running", &[VFIO, VFIO]));
    c.fields(&devices(
        "c3_restored",
        &[("bochs-drm", "bochs-drm"), hda_overridden],
    ));
    c.that(
        text(&run, "c3_restore_out").contains("stopped the QEMU"),
        "restore must say it stopped the leftover QEMU",
    );
    // (c) with `rescan_fallback`: a function that fell off the bus after
    // the crash is found again by a rescan and gets its driver back.
    c.fields(&fields(&[
        ("c4_start_exit", json!(0)),
        ("c4_both_dead", json!(true)),
        ("c4_hda_gone", json!(true)),
        ("c4_restore_exit", json!(0)),
        ("c4_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("c4_restored", &[VGA_HOST, HDA_HOST]));
    c.that(
        text(&run, "c4_journal").contains("\"rescan_fallback\":true"),
        "the journal must carry rescan_fallback for `vmrun restore`",
    );
    c.that(
        text(&run, "c4_restore_out")
            .contains("0000:00:0a.1 back to snd_hda_intel (after remove + rescan): ok"),
        "restore must say the HDA came back through a rescan",
    );
    // A damaged journal line (the VGA's bind, its first `{` cut off) is
    // named, the HDA's bind still undone, the journal kept, exit 4; with
    // the line repaired, the VGA goes back too.
    c.fields(&fields(&[
        ("c5_start_exit", json!(0)),
        ("c5_both_dead", json!(true)),
        ("c5_state", json!("needs-restore")),
        ("c5_restore_exit", json!(4)),
        ("c5_journal_kept", json!(true)),
        ("c5_restore_again_exit", json!(0)),
        ("c5_run_dir_gone", json!(true)),
    ]));
    c.that(
        text(&run, "c5_journal")
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"address\":\"0000:00:0a.0\"")),
        "the journal's first line must be the VGA's bind",
    );
    c.fields(&devices("c5_partly", &[VFIO, HDA_HOST]));
    c.fields(&devices("c5_restored", &[VGA_HOST, HDA_HOST]));
    let refusal = text(&run, "c5_restore_out");
    eprintln!("vmrun restore c5 with a damaged line 1:\n{refusal}");
    c.that(
        refusal.contains(
            "/run/vmrun/c5/journal, line 1: not a journal step: \"\\\"step\\\":\\\"bind-vfio\\\"",
        ),
        "restore must name the damaged line 1 and show its text",
    );
    c.that(
        refusal.contains("fix the line") && refusal.contains("`vmrun restore c5`"),
        "restore must say what to do: fix the line, then `vmrun restore c5`",
    );
    c.done();
}

#[test]
fn vfio_gpu4_binds_all_four_functions_and_each_gets_its_driver_back() {
    let run = run(Scenario::named("vfio_gpu4.sh").topology(Topology::Gpu4));
    let mut c = Checks::new(&run);
    let host = [
        VGA_HOST,
        HDA_HOST,
        ("xhci_hcd", NULL),
        // Built into the kernel, like the 7900 XTX's serial function's.
        ("serial", NULL),
    ];
    c.fields(&devices("host", &host));
    c.fields(&fields(&[
        ("f_start_exit", json!(0)),
        ("f_stop_exit", json!(0)),
        ("f_back", json!(true)),
        ("f_run_dir_gone", json!(true)),
    ]));
    c.fields(&devices("f_running", &[VFIO, VFIO, VFIO, VFIO]));
    c.fields(&devices("f_after", &host));
    let ids = text(&run, "f_pci_ids");
    for (id, what) in [
        ("1234:1111", "VGA"),
        ("8086:2668", "HDA"),
        ("1b36:000d", "xHCI"),
        ("1b36:0002", "serial"),
    ] {
        c.that(
            ids.contains(id),
            &format!("the nested QEMU's query-pci lacks the {what} {id}"),
        );
    }
    c.done();
}
