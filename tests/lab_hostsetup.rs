//! Issue 8's lab scenario (`tests/lab/scenarios/hostsetup.sh`): `vmrun
//! check`, `rom dump`, `init` and `host kernel-args` against a real kernel
//! with an emulated IOMMU and GPU (bochs VGA 1234:1111 + intel-hda in one
//! group), the dumped ROM then used as a nested QEMU's `romfile`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use vmrun_lab::{Lab, Scenario, Topology};

#[test]
fn check_rom_dump_and_init_on_the_lab_gpu() {
    let lab = Lab::new().unwrap_or_else(|e| panic!("{e}"));
    let scenario = Scenario::named("hostsetup.sh")
        .topology(Topology::Gpu)
        .vmrun(env!("CARGO_BIN_EXE_vmrun"));
    let run = lab.run(&scenario).unwrap_or_else(|e| panic!("{e}"));
    let text = |k: &str| run.get(k).as_str().unwrap_or_default().to_string();
    let num = |k: &str| run.get(k).as_i64();
    let mut wrong: Vec<String> = Vec::new();
    let mut that = |ok: bool, what: &str| {
        if !ok {
            wrong.push(what.to_string());
        }
    };

    // check sees the groups and the VGA's sibling.
    that(
        text("check_iommu").starts_with("PASS active: "),
        "check: IOMMU groups seen",
    );
    that(
        text("check_gpu").contains("IOMMU group")
            && text("check_gpu").contains("with 0000:00:0a.1"),
        "check: the VGA's group names its HDA sibling",
    );
    that(
        text("check_gpu").contains("1234:1111"),
        "check: the VGA's ids",
    );
    that(text("check_vfio") == "PASS", "check: vfio-pci loadable");
    let worst = match text("check_status").as_str() {
        "PASS" => Some(0),
        "WARN" => Some(1),
        "FAIL" => Some(2),
        _ => None,
    };
    that(
        worst.is_some() && num("check_exit") == worst,
        "check: exit status = worst result",
    );
    that(
        text("check_whole_out").contains("PASS  devices"),
        "check whole: the full group passes",
    );
    that(num("check_half_exit") == Some(2), "check half: exit 2");
    that(
        text("check_half_out").contains("is not viable"),
        "check half: the group is not viable",
    );

    // rom dump: a valid image for 1234:1111, the attribute left disabled.
    that(
        !run.get("rom_readable_before").as_bool().unwrap_or(true),
        "rom disabled before",
    );
    that(num("dump_exit") == Some(0), "rom dump -o: exit 0");
    let facts = text("dump_facts");
    that(
        facts.starts_with("55aa PCIR 1234:1111 "),
        "rom dump: 55 AA + PCIR for 1234:1111",
    );
    that(
        !run.get("rom_readable_after").as_bool().unwrap_or(true),
        "rom disabled again after the dump",
    );
    that(
        num("dump_default_exit") == Some(0),
        "rom dump to firmware/: exit 0",
    );
    that(
        text("dump_default_facts") == facts,
        "the default output is the same ROM",
    );
    that(
        num("dump_again_exit") == Some(1),
        "an existing ROM file is not replaced",
    );
    that(
        num("dump_hda_exit") == Some(1),
        "a device without a ROM is refused",
    );

    // The ROM as romfile for a nested QEMU.
    that(
        num("romvm_start_exit") == Some(0),
        "romvm: started with the dumped romfile",
    );
    that(
        text("romvm_cmdline").contains("romfile="),
        "romvm: QEMU got romfile=",
    );
    that(
        text("romvm_pci_ids").contains("1234:1111"),
        "romvm: the guest sees the VGA",
    );
    that(
        text("after_romvm_driver_0") == "bochs-drm",
        "romvm: VGA back on bochs-drm",
    );

    // init writes a config for this host that the validator accepts.
    that(num("init_exit") == Some(0), "init: exit 0");
    let init = text("init_file");
    that(
        init.contains("address = \"0000:00:0a.0\"") && init.contains("address = \"0000:00:0a.1\""),
        "init: the VGA and its group sibling",
    );
    that(
        init.contains("[takeover]"),
        "init: the only (boot) GPU gets takeover",
    );
    that(
        num("init_dry_exit").is_some_and(|c| c != 2),
        "init: start --dry-run validates it",
    );
    that(
        text("kargs_out").contains("vfio-pci.ids=1234:1111,8086:2668")
            && text("kargs_out").contains("video=efifb:off"),
        "kernel-args: the group's ids and efifb off for the boot GPU",
    );
    that(
        text("kargs_out").contains("modprobe.blacklist=bochs "),
        "kernel-args: bochs-drm blacklisted by its module's name, bochs",
    );
    assert!(wrong.is_empty(), "failed: {wrong:#?}\n{run}");
}
