//! Lab scenarios proving the lab tells the truth about the kernel: a real
//! Linux guest (QEMU TCG, emulated intel-iommu) with an emulated GPU.
//!
//! One guest boot per test; each test checks a group of facts. They need
//! qemu-system-x86, ovmf, busybox-static and kmod, plus apt access to a
//! Debian 6.1 kernel package, and fail (never skip) without them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod lab_checks;

use lab_checks::run;
use vmrun_lab::serde_json::{json, Value};
use vmrun_lab::{Firmware, LabRun, Scenario, Topology};

/// Checks every expected value, then fails once listing all mismatches,
/// followed by the whole run (results, scenario output, serial log).
fn expect(run: &LabRun, expected: &[(&str, Value)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(key, value)| run.get(key) != value)
        .map(|(key, value)| format!("{key}: expected {value}, got {}", run.get(key)))
        .collect();
    assert!(wrong.is_empty(), "{}\n{run}", wrong.join("\n"));
}

/// Asserts with the whole run printed on failure.
fn check(run: &LabRun, ok: bool, what: &str) {
    assert!(ok, "{what}\n{run}");
}

#[test]
fn gpu_pair_moves_to_vfio_serves_nested_qemu_and_comes_back() {
    let run = run(Scenario::named("gpu_vfio.sh").topology(Topology::Gpu));

    expect(
        &run,
        &[
            ("id_0000_00_0a_0", json!("0x1234:0x1111")),
            ("id_0000_00_0a_1", json!("0x8086:0x2668")),
            ("class_0000_00_0a_0", json!("0x030000")),
            // No udev: nothing binds until the scenario loads the drivers.
            ("driver_boot_0000_00_0a_0", json!("none")),
            ("driver_boot_0000_00_0a_1", json!("none")),
            ("boot_vga", json!(1)),
            ("group_members", json!(["0000:00:0a.0", "0000:00:0a.1"])),
            ("vmrun_help_exit", json!(0)),
            ("vga_driver_host", json!("bochs-drm")),
            ("hda_driver_host", json!("snd_hda_intel")),
            ("dri_card0", json!(true)),
            ("vga_driver_vfio", json!("vfio-pci")),
            ("hda_driver_vfio", json!("vfio-pci")),
            ("vfio_group_node", json!(true)),
            ("nested_exit", json!(0)),
            ("vga_driver_restored", json!("bochs-drm")),
            ("hda_driver_restored", json!("snd_hda_intel")),
            ("driver_override_restored", json!("(null)")),
        ],
    );
    check(
        &run,
        run.get("vga_group").is_u64() && run.get("vga_group") == run.get("hda_group"),
        "VGA and HDA must share one IOMMU group",
    );

    let nested = run.get("nested");
    check(
        &run,
        nested.get("error").is_none(),
        "nested QEMU's QMP failed",
    );
    let has = |vendor: u64, device: u64| {
        nested["devices"].as_array().is_some_and(|ds| {
            ds.iter()
                .any(|d| d["vendor_id"] == vendor && d["device_id"] == device)
        })
    };
    check(
        &run,
        has(0x1234, 0x1111),
        "nested QEMU's query-pci lacks the VGA 1234:1111",
    );
    check(
        &run,
        has(0x8086, 0x2668),
        "nested QEMU's query-pci lacks the HDA 8086:2668",
    );
    eprintln!(
        "guest timings: to vfio-pci {} ms, nested QEMU QMP ready {} ms, restore {} ms",
        run.get("to_vfio_ms"),
        nested["ready_ms"],
        run.get("restore_ms")
    );
}

#[test]
fn gpu4_functions_share_a_group_and_bind_their_own_drivers() {
    let run = run(Scenario::named("gpu4_functions.sh").topology(Topology::Gpu4));

    expect(
        &run,
        &[
            (
                "group_members",
                json!([
                    "0000:00:0a.0",
                    "0000:00:0a.1",
                    "0000:00:0a.2",
                    "0000:00:0a.3"
                ]),
            ),
            ("serial_driver_boot", json!("serial")),
            ("xhci_driver_boot", json!("none")),
            ("xhci_driver_loaded", json!("xhci_hcd")),
            ("uinput", json!(true)),
        ],
    );
    let group = run.get("group_0a_0");
    check(
        &run,
        group.is_u64() && (1..4).all(|f| run.get(&format!("group_0a_{f}")) == group),
        "all four functions must be in one IOMMU group",
    );
}

#[test]
fn uefi_gpu_leaves_console_on_efi_framebuffer_until_bochs_loads() {
    let run = run(Scenario::named("uefi_efifb.sh")
        .topology(Topology::Gpu)
        .firmware(Firmware::Uefi));

    expect(
        &run,
        &[
            ("efi_firmware", json!(true)),
            ("efifb_bound", json!(["efi-framebuffer.0"])),
            ("boot_vga", json!(1)),
            ("efifb_bound_after_bochs", json!([])),
        ],
    );
    let vtcons = run
        .get("vtconsoles")
        .as_array()
        .cloned()
        .unwrap_or_default();
    check(
        &run,
        vtcons.iter().any(|n| {
            n.as_str()
                .is_some_and(|n| n.contains("frame buffer device"))
        }),
        "a vtconsole must be the frame buffer device",
    );
    check(
        &run,
        run.get("proc_fb")
            .as_str()
            .is_some_and(|fb| fb.contains("EFI VGA")),
        "/proc/fb must show the EFI framebuffer",
    );
}

#[test]
fn dual_second_display_has_its_own_group() {
    let run = run(Scenario::named("dual_groups.sh").topology(Topology::Dual));

    expect(
        &run,
        &[
            ("second_group_members", json!(["0000:00:0b.0"])),
            ("boot_vga", json!(1)),
            ("vga_driver", json!("bochs-drm")),
            ("second_driver", json!("bochs-drm")),
        ],
    );
    check(
        &run,
        run.get("second_group").is_u64() && run.get("second_group") != run.get("vga_group"),
        "the second display must be in another IOMMU group than the GPU",
    );
    check(
        &run,
        run.get("vga_group") == run.get("hda_group"),
        "VGA and HDA must share a group",
    );
}
