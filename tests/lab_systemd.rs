//! Issue 17's systemd lab: single-GPU takeover on a guest whose PID 1 is
//! the host root's systemd (`Init::Systemd`, `tests/lab/guest/systemd.sh`),
//! with a real display server: Xorg (modesetting on bochs-drm) as
//! `display-manager.service`, a system unit for `stop_units` and a
//! lingering user's unit for `user_units`. One UEFI guest boot runs
//! `tests/lab/scenarios/takeover_systemd.sh`; every field it records is
//! checked here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use std::collections::BTreeSet;
use std::time::Duration;

use lab_checks::{devices, fields, run, Checks};
use vmrun_lab::serde_json::{json, Value};
use vmrun_lab::{Firmware, Init, LabRun, Scenario, Topology};

const NULL: &str = "(null)";
const BOCHS_MODULES: [&str; 6] = [
    "bochs",
    "drm_vram_helper",
    "drm_ttm_helper",
    "ttm",
    "drm_kms_helper",
    "drm",
];
/// The scenario waits this long for the desktop to come back.
const BACK_WITHIN_MS: u64 = 120_000;

/// [`Checks`] that also remember which fields were looked at, so that a
/// field the scenario records but nobody checks fails the test.
struct Fields<'a> {
    run: &'a LabRun,
    checks: Checks<'a>,
    seen: BTreeSet<String>,
}

impl<'a> Fields<'a> {
    fn new(run: &'a LabRun) -> Self {
        Self {
            run,
            checks: Checks::new(run),
            seen: BTreeSet::new(),
        }
    }

    fn eq(&mut self, expected: &[(String, Value)]) {
        self.seen.extend(expected.iter().map(|(k, _)| k.clone()));
        self.checks.fields(expected);
    }

    fn text(&mut self, key: &str) -> &'a str {
        self.seen.insert(key.to_string());
        let run: &'a LabRun = self.run;
        run.get(key).as_str().unwrap_or_default()
    }

    /// `key` holds each of `parts`, in this order.
    fn has_in_order(&mut self, key: &str, parts: &[&str]) {
        let hay = self.text(key);
        let mut at = 0;
        for part in parts {
            match hay[at..].find(part) {
                Some(i) => at += i + part.len(),
                None => {
                    self.checks
                        .that(false, &format!("{key} lacks {part:?} (or not in order)"));
                    return;
                }
            }
        }
    }

    /// A millisecond count in `0..=max`.
    fn ms(&mut self, key: &str, max: u64) -> u64 {
        self.seen.insert(key.to_string());
        let v = self.run.get(key).as_u64();
        self.checks.that(
            v.is_some_and(|v| v <= max),
            &format!(
                "{key}: expected milliseconds up to {max}, got {}",
                self.run.get(key)
            ),
        );
        v.unwrap_or_default()
    }

    fn that(&mut self, ok: bool, what: &str) {
        self.checks.that(ok, what);
    }

    fn done(mut self) {
        let unchecked: Vec<&String> = self
            .run
            .results
            .as_object()
            .map(|o| o.keys().filter(|k| !self.seen.contains(*k)).collect())
            .unwrap_or_default();
        self.checks.that(
            unchecked.is_empty(),
            &format!("recorded but not checked: {unchecked:?}"),
        );
        self.checks.done();
    }
}

/// What `rec_units` records: the display manager, the `stop_units` and
/// `user_units` units, and whether Xorg holds card0 and answers.
fn units(f: &mut Fields, prefix: &str, up: bool) {
    let state = if up { "active" } else { "inactive" };
    f.eq(&fields(&[
        (&format!("{prefix}_dm"), json!(state)),
        (&format!("{prefix}_monitor"), json!(state)),
        (&format!("{prefix}_user_unit"), json!(state)),
        (&format!("{prefix}_user_unit_procs"), json!(up)),
        (&format!("{prefix}_x_card0"), json!(up)),
        (&format!("{prefix}_x_answers"), json!(up)),
    ]));
}

/// The desktop as booted (`rec_desktop`): bochs and its helpers loaded,
/// fbcon bound, every unit active, Xorg the only holder of card0.
fn desktop(f: &mut Fields, prefix: &str) {
    f.eq(&devices(
        prefix,
        &[("bochs-drm", NULL), ("snd_hda_intel", NULL)],
    ));
    f.eq(&fields(&[
        (&format!("{prefix}_desktop_up"), json!(true)),
        (&format!("{prefix}_vtcon1"), json!("1")),
        (&format!("{prefix}_efifb"), json!(false)),
        (&format!("{prefix}_card0"), json!(true)),
        (&format!("{prefix}_modules"), json!(BOCHS_MODULES)),
        (&format!("{prefix}_card0_holders"), json!(["Xorg"])),
    ]));
    units(f, prefix, true);
}

/// Both functions on vfio-pci.
fn on_vfio(f: &mut Fields, prefix: &str) {
    f.eq(&devices(
        prefix,
        &[("vfio-pci", "vfio-pci"), ("vfio-pci", "vfio-pci")],
    ));
}

/// The VM has the GPU (`rec_running`): no display stack, every unit
/// stopped, the nested QEMU's query-pci lists the VGA and the HDA.
fn running(f: &mut Fields, prefix: &str) {
    on_vfio(f, prefix);
    f.eq(&fields(&[
        (&format!("{prefix}_vtcon1"), json!("")),
        (&format!("{prefix}_efifb"), json!(false)),
        (&format!("{prefix}_card0"), json!(false)),
        (&format!("{prefix}_modules"), json!([])),
    ]));
    units(f, prefix, false);
    let key = format!("{prefix}_pci_ids");
    let ids = f.text(&key);
    for (id, what) in [("1234:1111", "VGA"), ("8086:2668", "HDA")] {
        f.that(
            ids.contains(id),
            &format!("{key}: the nested QEMU's query-pci lacks the {what} {id}"),
        );
    }
}

/// The desktop came back: Xorg held card0 `PREFIX_card0_ms` after the
/// stop request (or QEMU's end) and answered `PREFIX_answers_ms` after it.
fn back(f: &mut Fields, prefix: &str) {
    let card0 = f.ms(&format!("{prefix}_card0_ms"), BACK_WITHIN_MS);
    let answers = f.ms(&format!("{prefix}_answers_ms"), BACK_WITHIN_MS);
    f.that(
        card0 <= answers,
        &format!("{prefix}: Xorg answered ({answers} ms) before it held card0 ({card0} ms)"),
    );
}

fn no_error(f: &mut Fields, key: &str) {
    let out = f.text(key);
    f.that(
        !out.contains("error"),
        &format!("{key} reports an error: {out}"),
    );
}

#[test]
fn takeover_of_an_xorg_desktop_under_systemd_and_back() {
    let run = run(Scenario::named("takeover_systemd.sh")
        .topology(Topology::Gpu)
        .firmware(Firmware::Uefi)
        .init(Init::Systemd)
        .timeout(Duration::from_secs(900)));
    let mut f = Fields::new(&run);

    // The guest as booted: systemd, udev-loaded bochs-drm, Xorg as the
    // display manager holding card0, the units up, nothing failed.
    f.eq(&fields(&[
        ("host_pid1", json!("systemd")),
        (
            "host_dm_link",
            json!("/etc/systemd/system/lab-xorg.service"),
        ),
        ("host_failed_units", json!("")),
    ]));
    desktop(&mut f, "host");

    // (b) display_manager = "auto" finds lab-xorg.service behind the
    // alias; stop_units and user_units are stopped too, journaled in order.
    f.eq(&fields(&[
        ("b_dry_exit", json!(0)),
        ("b_start_exit", json!(0)),
        ("b_stop_exit", json!(0)),
        ("b_run_dir_gone", json!(true)),
        ("b_after_x_restarted", json!(true)),
    ]));
    f.has_in_order(
        "b_dry_out",
        &[
            "stop the display manager lab-xorg.service (/etc/systemd/system/display-manager.service points to it)",
            "stop unit lab-gpu-monitor.service if active",
            "stop the active user units matching lab-user-*.service",
            "holding now: Xorg (pid ",
            "unbind vtcon1 ((M) frame buffer device)",
            "modprobe -r bochs",
        ],
    );
    no_error(&mut f, "b_start_out");
    running(&mut f, "b_running");
    f.has_in_order(
        "b_journal",
        &[
            r#"{"step":"stop-unit","unit":"lab-xorg.service","user":null}"#,
            r#"{"step":"stop-unit","unit":"lab-gpu-monitor.service","user":null}"#,
            r#"{"step":"stop-unit","unit":"lab-user-audio.service","user":"labuser"}"#,
            r#""step":"unbind-vtcon""#,
            r#""step":"unload-module""#,
        ],
    );
    f.has_in_order("b_stop_out", &["tb stopped"]);
    f.ms("b_stop_ms", BACK_WITHIN_MS);
    back(&mut f, "b");
    desktop(&mut f, "b_after");
    f.has_in_order(
        "b_log",
        &[
            "lab-user-audio.service (user labuser) started again",
            "lab-gpu-monitor.service started again",
            "lab-xorg.service started again",
            "tb: host restored",
            "vmrun exit status 5",
        ],
    );

    // (g) QEMU ends by itself (QMP quit): the supervisor gives the
    // desktop back; its log has the restore's timeline.
    f.eq(&fields(&[
        ("g_start_exit", json!(0)),
        ("g_state", json!("running")),
        ("g_qemu_ended", json!(true)),
        ("g_run_dir_gone", json!(true)),
    ]));
    no_error(&mut f, "g_start_out");
    on_vfio(&mut f, "g_running");
    f.ms("g_qemu_end_ms", 30_000);
    back(&mut f, "g");
    desktop(&mut f, "g_after");
    f.has_in_order(
        "g_log",
        &[
            "reason=host_qmp_quit",
            "0000:00:0a.0 back to no driver",
            "bochs loaded again, 0000:00:0a.0 on bochs-drm",
            "vtcon1 ((M) frame buffer device) bound again",
            "lab-xorg.service started again",
            "host restored",
        ],
    );

    // (d) kill -9 of the supervisor: the desktop stays down until
    // `vmrun restore`, which stops the QEMU and brings it all back.
    f.eq(&fields(&[
        ("d_start_exit", json!(0)),
        ("d_supervisor_ended", json!(true)),
        ("d_state", json!("needs-restore")),
        ("d_crashed_dm", json!("inactive")),
        ("d_restore_exit", json!(0)),
        ("d_qemu_stopped", json!(true)),
        ("d_run_dir_gone", json!(true)),
    ]));
    no_error(&mut f, "d_start_out");
    on_vfio(&mut f, "d_running");
    units(&mut f, "d_running", false);
    f.has_in_order(
        "d_restore_out",
        &[
            "stopped the QEMU (pid ",
            "lab-user-audio.service (user labuser) started again: ok",
            "lab-gpu-monitor.service started again: ok",
            "lab-xorg.service started again: ok",
            "td: host restored",
        ],
    );
    back(&mut f, "d");
    desktop(&mut f, "d_restored");

    // (e) vmrun@te.service from docs/vmrun@.service: the supervisor is the
    // unit's main process and QEMU sits in its cgroup; `systemctl stop`
    // returns with the QEMU gone and the host restored.
    f.eq(&fields(&[
        ("e_unit_execstart", json!(true)),
        ("e_start_exit", json!(0)),
        ("e_became_running", json!(true)),
        ("e_unit_state", json!("active")),
        ("e_supervisor_is_main_pid", json!(true)),
        ("e_qemu_in_unit", json!(true)),
        ("e_stop_exit", json!(0)),
        ("e_qemu_stopped", json!(true)),
        ("e_unit_after", json!("inactive")),
        ("e_run_dir_gone", json!(true)),
    ]));
    running(&mut f, "e_running");
    f.ms("e_stop_ms", BACK_WITHIN_MS);
    back(&mut f, "e");
    desktop(&mut f, "e_after");
    // SIGTERM, the guest ignores the powerdown, quit: exit 5, which the
    // unit's SuccessExitStatus=5 counts as a clean stop.
    f.has_in_order(
        "e_journal",
        &[
            "SIGTERM: stopping the VM",
            "lab-xorg.service started again",
            "te: host restored",
            "te: vmrun exit status 5",
            "vmrun@te.service: Deactivated successfully.",
        ],
    );

    // (f) from inside a logind session of type x11: refused before any
    // change.
    f.eq(&fields(&[
        ("f_start_exit", json!(1)),
        ("f_session_type", json!("Type=x11")),
        ("f_run_dir_absent", json!(true)),
    ]));
    let cgroup = f.text("f_cgroup");
    f.that(
        cgroup.contains("/session-") && cgroup.trim_end().ends_with(".scope"),
        &format!("the refused start must run in a session scope: {cgroup}"),
    );
    f.has_in_order(
        "f_start_out",
        &[
            "vmrun runs inside graphical session ",
            " (x11): stopping the display manager ends that session",
            "systemctl start vmrun@NAME",
            "tf not started, nothing on the host was changed",
        ],
    );
    f.eq(&devices(
        "f_after",
        &[("bochs-drm", NULL), ("snd_hda_intel", NULL)],
    ));
    units(&mut f, "f_after", true);

    // The sections ran in order; their start times give the wall time of
    // each (printed for BENCHMARKS.md and CI time budgets).
    let marks = [
        "b_at_ms",
        "g_at_ms",
        "d_at_ms",
        "e_at_ms",
        "f_at_ms",
        "end_at_ms",
    ];
    let at: Vec<u64> = marks.iter().map(|k| f.ms(k, 3_600_000)).collect();
    f.that(
        at.windows(2).all(|w| w[0] < w[1]),
        &format!("section start times out of order: {at:?}"),
    );
    eprintln!(
        "systemd lab: desktop up at {} ms after boot; sections (s): b {:.1}, g {:.1}, d {:.1}, e {:.1}, f {:.1}; back after stop: b card0 {} ms, g card0 {} ms (from QEMU's quit), d {} ms, e {} ms",
        at[0],
        (at[1] - at[0]) as f64 / 1e3,
        (at[2] - at[1]) as f64 / 1e3,
        (at[3] - at[2]) as f64 / 1e3,
        (at[4] - at[3]) as f64 / 1e3,
        (at[5] - at[4]) as f64 / 1e3,
        run.get("b_card0_ms"),
        run.get("g_card0_ms"),
        run.get("d_card0_ms"),
        run.get("e_card0_ms"),
    );
    f.done();
}

const SECOND: &str = "0000:00:0b.0";

/// `rec_desktop` of the dual scenario: Xorg as the display manager, the
/// devices it holds, 0b.0's driver.
fn dual_desktop(f: &mut Fields, prefix: &str, x_devices: &[&str]) {
    f.eq(&fields(&[
        (&format!("{prefix}_dm"), json!("active")),
        (&format!("{prefix}_x_devices"), json!(x_devices)),
        (&format!("{prefix}_x_answers"), json!(true)),
        (&format!("{prefix}_second"), json!("bochs-drm")),
        (&format!("{prefix}_bochs"), json!(true)),
    ]));
}

/// The dual topology with `desktop = "restart"`: Xorg (screen on the
/// bochs-display at 0b.0, the VM's VGA as a GPU screen) stops, the VGA +
/// HDA go to vfio-pci while bochs stays loaded for 0b.0, Xorg runs again at
/// once holding 0b.0 only; after `vmrun stop`, and after `kill -9` +
/// `vmrun restore`, the VGA is back on bochs-drm and the same Xorg still
/// runs (and has taken the VGA back as a GPU screen).
#[test]
fn dual_gpu_takeover_restarts_xorg_on_the_gpu_the_host_keeps() {
    let run = run(Scenario::named("takeover_systemd_dual.sh")
        .topology(Topology::Dual)
        .init(Init::Systemd)
        .timeout(Duration::from_secs(900)));
    let mut f = Fields::new(&run);
    let both = ["0000:00:0a.0", SECOND];
    let bochs = [("bochs-drm", NULL), ("snd_hda_intel", NULL)];
    f.text("host_xorg_conf");
    f.text("host_xorg_log");
    dual_desktop(&mut f, "host", &both);

    f.eq(&fields(&[
        ("a_dry_exit", json!(0)),
        ("a_start_exit", json!(0)),
        ("a_start_second", json!(["bochs-drm"])),
        ("a_running_x_new", json!(true)),
        ("a_stop_exit", json!(0)),
        ("a_after_x_same", json!(true)),
        ("a_run_dir_gone", json!(true)),
    ]));
    f.has_in_order(
        "a_dry_out",
        &[
            "stop the display manager lab-xorg.service",
            "leave bochs loaded: bochs also drives 0000:00:0b.0 (bochs-drm), which the host keeps",
            "then bind to vfio-pci",
            "start the display manager again at once (desktop = \"restart\"), on 0000:00:0b.0 (bochs-drm)",
        ],
    );
    no_error(&mut f, "a_start_out");
    let down = f.ms("a_start_down_ms", BACK_WITHIN_MS);
    f.eq(&devices(
        "a_running",
        &[("vfio-pci", "vfio-pci"), ("vfio-pci", "vfio-pci")],
    ));
    dual_desktop(&mut f, "a_running", &[SECOND]);
    f.text("a_running_xorg_log");
    f.text("a_running_dm_journal");
    f.has_in_order(
        "a_journal",
        &[
            r#"{"step":"stop-unit","unit":"lab-xorg.service","user":null}"#,
            r#""step":"bind-vfio""#,
            r#"{"step":"restart-desktop","start":["systemctl","start","lab-xorg.service"]}"#,
        ],
    );
    let ids = f.text("a_pci_ids");
    f.that(
        ids.contains("1234:1111") && ids.contains("8086:2668"),
        &format!("the nested QEMU's query-pci lacks the VGA or the HDA: {ids}"),
    );
    // The same Xorg, which added the VGA back as a GPU screen when its
    // DRM device reappeared (udev hotplug, AutoAddGPU).
    f.has_in_order("a_stop_out", &["ta stopped"]);
    f.eq(&devices("a_after", &bochs));
    dual_desktop(&mut f, "a_after", &both);
    f.has_in_order(
        "a_log",
        &[
            "is left running",
            "0000:00:0a.0 back to bochs-drm",
            "lab-xorg.service started again",
        ],
    );

    f.eq(&fields(&[
        ("b_start_exit", json!(0)),
        ("b_supervisor_ended", json!(true)),
        ("b_restore_exit", json!(0)),
        ("b_qemu_stopped", json!(true)),
        ("b_run_dir_gone", json!(true)),
    ]));
    f.eq(&devices(
        "b_running",
        &[("vfio-pci", "vfio-pci"), ("vfio-pci", "vfio-pci")],
    ));
    no_error(&mut f, "b_start_out");
    dual_desktop(&mut f, "b_running", &[SECOND]);
    f.has_in_order(
        "b_restore_out",
        &["is left running", "0000:00:0a.0 back to bochs-drm"],
    );
    f.eq(&devices("b_restored", &bochs));
    dual_desktop(&mut f, "b_restored", &both);
    eprintln!("systemd dual lab: the desktop was gone {down} ms during the handover");
    f.done();
}

/// The dual topology with the VM's VGA hidden (`vmrun host hide-gpu`):
/// after one restart of the display manager, Xorg holds 0b.0 only and never
/// opens the VGA's card; a VM without `[takeover]` takes the VGA + HDA with
/// the same Xorg running and no unit stopped; after `vmrun stop` the VGA is
/// back on bochs-drm, Xorg (the same) still leaves it alone; `--undo
/// --apply` removes the rule and the card is on seat0 again.
#[test]
fn a_hidden_gpu_is_taken_without_stopping_the_desktop() {
    let run = run(Scenario::named("hidegpu_systemd_dual.sh")
        .topology(Topology::Dual)
        .init(Init::Systemd)
        .timeout(Duration::from_secs(900)));
    let mut f = Fields::new(&run);
    let vga = "0000:00:0a.0";
    f.text("host_xorg_conf");
    dual_desktop(&mut f, "host", &[vga, SECOND]);
    f.eq(&fields(&[("host_x_added_vga", json!(true))]));
    let card = f.text("host_vga_card");
    f.that(
        card.starts_with("card"),
        &format!("the VGA's card node: {card:?}"),
    );

    f.eq(&fields(&[
        ("h_dry_exit", json!(0)),
        ("h_dry_no_rule", json!(true)),
        ("h_apply_exit", json!(0)),
        ("h_seat", json!("ID_SEAT=seat-vmrun-hidden")),
        ("h_keep_link", json!(true)),
        ("hidden_x_added_vga", json!(false)),
        ("s_start_exit", json!(0)),
        ("s_x_same", json!(true)),
        ("s_services_gone", json!("")),
        ("s_stop_exit", json!(0)),
        ("s_after_x_same", json!(true)),
        ("s_after_x_added_vga", json!(false)),
        ("u_undo_exit", json!(0)),
        ("u_rule_gone", json!(true)),
        ("u_seat", json!("")),
    ]));
    f.has_in_order(
        "h_dry_out",
        &[
            "hide 0000:00:0a.0 from desktop compositors; they keep 0000:00:0b.0",
            "/etc/udev/rules.d/72-vmrun-hide-gpu.rules becomes:",
            "KERNELS==\"0000:00:0a.0\", ENV{ID_SEAT}=\"seat-vmrun-hidden\"",
            "WLR_DRM_DEVICES=/dev/dri/vmrun-keep-0000-00-0b.0",
            "(dry run",
        ],
    );
    f.has_in_order(
        "h_apply_out",
        &[
            "wrote",
            "ran: udevadm control --reload",
            "ran: udevadm settle",
            "restart the display manager once",
        ],
    );
    f.has_in_order("h_rule", &["KERNELS==\"0000:00:0a.0\", ENV{ID_SEAT}"]);
    // Before the restart Xorg still holds the VGA it opened at start.
    f.text("h_check_before_exit");
    f.has_in_order(
        "h_check_before_out",
        &["0000:00:0a.0 is hidden from the desktop but still held by Xorg"],
    );
    dual_desktop(&mut f, "hidden", &[SECOND]);
    f.text("hidden_xorg_log");
    f.text("h_check_exit");
    f.has_in_order(
        "h_check_out",
        &["0000:00:0a.0 is hidden from the desktop and nothing holds it"],
    );

    no_error(&mut f, "s_start_out");
    f.eq(&devices(
        "s_running",
        &[("vfio-pci", "vfio-pci"), ("vfio-pci", "vfio-pci")],
    ));
    dual_desktop(&mut f, "s_running", &[SECOND]);
    // Only the HDA's device unit and what binds to it.
    let gone = f.text("s_units_gone");
    f.that(
        gone.split_whitespace()
            .all(|u| u.ends_with(".device") || u == "sound.target"),
        &format!("units gone while the VM runs: {gone}"),
    );
    let journal = f.text("s_journal");
    f.that(
        journal.contains("bind-vfio") && !journal.contains("stop-unit"),
        &format!("the start binds vfio-pci and stops no unit: {journal}"),
    );
    let ids = f.text("s_pci_ids");
    f.that(
        ids.contains("1234:1111") && ids.contains("8086:2668"),
        &format!("the nested QEMU's query-pci lacks the VGA or the HDA: {ids}"),
    );
    f.has_in_order("s_stop_out", &["hv stopped"]);
    f.eq(&devices(
        "s_after",
        &[("bochs-drm", NULL), ("snd_hda_intel", NULL)],
    ));
    dual_desktop(&mut f, "s_after", &[SECOND]);
    f.text("s_after_xorg_log");
    f.has_in_order(
        "u_undo_out",
        &[
            "ran: rm '/etc/udev/rules.d/72-vmrun-hide-gpu.rules'",
            "ran: udevadm control --reload",
        ],
    );
    f.done();
}
