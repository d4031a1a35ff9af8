//! The checks of `vmrun check NAME` that depend on the VM: the plan's own
//! findings (group viability, firmware, boot GPU, reset, `vfio-pci.ids`),
//! whether `[takeover]` fits the GPU, huge pages, memlock and swtpm.

use std::fs;

use super::check::{memlock_check, Check, CheckContext, Status};
use crate::config::{ByteSize, VmConfig};
use crate::host::cpu;
use crate::host::{pci, procs, HostRoot};
use crate::plan::{Plan, Severity};

/// Checks that depend on the VM: the plan's findings, huge pages, memlock,
/// swtpm for `[tpm]`.
pub(crate) fn vm_checks(plan: &Plan, ctx: &CheckContext) -> Vec<Check> {
    let vm = &plan.vm;
    let mut out: Vec<Check> = plan.findings.iter().map(Check::from).collect();
    if !plan.hostdevs.is_empty() && !plan.findings.iter().any(|f| f.severity == Severity::Error) {
        let list: Vec<String> = plan
            .hostdevs
            .iter()
            .map(|h| h.address.to_string())
            .collect();
        out.push(Check::new(
            Status::Pass,
            "devices",
            format!(
                "{} present, their IOMMU groups complete and viable",
                list.join(", ")
            ),
        ));
    }
    out.extend(takeover_check(plan));
    out.extend(live_check(plan, &ctx.root));
    out.extend(looking_glass_check(plan));
    if let Some(size) = vm.hugepages {
        out.push(hugepage_check(&ctx.root, vm, size.size()));
    }
    if !vm.hostdevs.is_empty() {
        out.push(memlock_check(ctx, Some(vm.memory)));
    }
    if vm.tpm && ctx.swtpm.is_none() {
        out.push(
            Check::new(
                Status::Fail,
                "swtpm",
                format!("{} has [tpm] enabled but swtpm is not installed", vm.name),
            )
            .fix("install swtpm (apt install swtpm / dnf install swtpm / pacman -S swtpm)"),
        );
    }
    out
}

/// `[looking_glass]`: the shared memory against the frame it must hold
/// (a `size` below what `resolution` needs is already a config error;
/// this says what a `size` alone is enough for), and kvmfr's presence and
/// size (the plan's finding when it fails).
fn looking_glass_check(plan: &Plan) -> Option<Check> {
    let lg = plan.vm.looking_glass.as_ref()?;
    let fits = match lg.resolution {
        Some(r) => format!("{r} needs {}", r.shm_size()),
        None => "no `resolution` to check it against".into(),
    };
    let kvmfr = lg.device == crate::config::LgDevice::Kvmfr;
    if kvmfr && plan.findings.iter().any(|f| f.subject == "looking_glass") {
        return None;
    }
    let what = if kvmfr {
        format!("/dev/kvmfr0 (kvmfr loaded, big enough) holds {}", lg.size)
    } else {
        format!("{} of /dev/shm", lg.size)
    };
    Some(Check::new(
        Status::Pass,
        "looking glass",
        format!("{what}; {fits}"),
    ))
}

/// Host lines that don't apply to this VM: a TCG guest needs no /dev/kvm.
pub(crate) fn relax_host_checks(vm: &VmConfig, host: &mut [Check]) {
    if vm.qemu.accel != crate::config::Accel::Tcg {
        return;
    }
    for c in host
        .iter_mut()
        .filter(|c| c.name == "kvm" && c.status == Status::Fail)
    {
        *c = Check::new(
            Status::Pass,
            "kvm",
            format!("/dev/kvm is missing; {} runs under TCG without it", vm.name),
        );
    }
}

/// The display functions among the VM's hostdevs.
fn passed_gpus(plan: &Plan) -> Vec<&pci::PciDevice> {
    plan.hostdevs
        .iter()
        .filter_map(|h| h.device.as_ref())
        .filter(|d| d.is_display())
        .collect()
}

/// Boot GPU vs passed GPU: `[takeover]` frees the host's boot GPU; a
/// secondary GPU is held only by a desktop that opened it, and then
/// `desktop = "restart"` gives the desktop back at once.
fn takeover_check(plan: &Plan) -> Option<Check> {
    let gpus = passed_gpus(plan);
    let boot = gpus.iter().any(|d| d.boot_vga == Some(true));
    match (boot, plan.vm.takeover.is_some()) {
        (true, true) => Some(Check::new(Status::Pass, "takeover", "the VM takes the boot GPU and [takeover] hands it over")),
        (false, true) if !gpus.is_empty() => Some(
            match plan.vm.takeover.as_ref().map(|t| t.desktop) {
                Some(crate::config::Desktop::Restart) => Check::new(Status::Pass, "takeover", "the VM takes a secondary GPU and [takeover] desktop = \"restart\" starts the desktop again at once on the GPU the host keeps"),
                _ => Check::new(Status::Warn, "takeover", "[takeover] is enabled but the passed GPU is not the boot GPU: the desktop would be down for the whole VM")
                    .fix(format!("set [takeover] desktop = \"restart\" (the desktop starts again at once on the GPU the host keeps), or `vmrun host hide-gpu {}` and remove [takeover]", plan.vm.name)),
            },
        ),
        _ => None,
    }
}

/// Whether the VM's secondary GPUs can be taken while the desktop runs, and
/// by what: hidden from the compositors (`vmrun host hide-gpu`) with
/// nothing holding them, `[takeover] desktop = "restart"`, or only a full
/// takeover. The desktop's own GPU is `takeover_check`'s.
fn live_check(plan: &Plan, root: &HostRoot) -> Option<Check> {
    let gpus = passed_gpus(plan);
    // The GPU the desktop shows on (or the only one) is no candidate: the
    // same refusal as hide-gpu's, and takeover_check's subject.
    let addresses: Vec<_> = gpus.iter().map(|d| d.address).collect();
    if gpus.is_empty() || crate::setup::hide_gpu::plan(root, &addresses).is_err() {
        return None;
    }
    let names = gpus
        .iter()
        .map(|d| d.address.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let hidden_now = crate::setup::hide_gpu::hidden_addresses(root);
    let hidden = gpus.iter().all(|d| hidden_now.contains(&d.address));
    let nodes: Vec<procs::GpuNodes> = gpus.iter().map(|d| procs::GpuNodes::of(root, d)).collect();
    let scan = procs::holders(root, |p| nodes.iter().any(|n| n.matches(p)));
    let holders = procs::by_process(&scan.holders).join("; ");
    let restart = plan
        .vm
        .takeover
        .as_ref()
        .is_some_and(|t| t.desktop == crate::config::Desktop::Restart);
    let hide = format!(
        "vmrun host hide-gpu {} --apply, then restart the display manager once",
        plan.vm.name
    );
    let check = match (hidden, holders.is_empty()) {
        (true, true) => Check::new(Status::Pass, "live handover", format!("{names} is hidden from the desktop and nothing holds it: vmrun start takes it without stopping anything")),
        (true, false) => Check::new(Status::Warn, "live handover", format!("{names} is hidden from the desktop but still held by {holders}: the desktop opened it before the rule"))
            .fix("restart the display manager once (or log out and in), and stop the other holders; [takeover] stop_processes names those vmrun may stop"),
        (false, _) if restart => Check::new(Status::Pass, "live handover", format!("{names} is taken live by [takeover] desktop = \"restart\" (the desktop is gone for a moment); hidden, the desktop would not stop at all"))
            .fix(hide),
        (false, true) => Check::new(Status::Warn, "live handover", format!("nothing holds {names} now, but a desktop that starts opens it (compositors open every GPU)"))
            .fix(hide),
        (false, false) => Check::new(Status::Warn, "live handover", format!("{names} is held by {holders}: only a full [takeover] frees it"))
            .fix(format!("{hide}; or set [takeover] desktop = \"restart\"")),
    };
    Some(check)
}

fn hugepage_check(root: &HostRoot, vm: &VmConfig, page: ByteSize) -> Check {
    let kb = page.bytes() / 1024;
    let needed = vm.memory.bytes().div_ceil(page.bytes());
    let dir = root.path(format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB"));
    let read = |f: &str| {
        fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let boot = format!(
        "reserve them at boot: hugepagesz={} hugepages={needed}",
        if kb == 1048576 { "1G" } else { "2M" }
    );
    let Some(free) = read("free_hugepages") else {
        return Check::new(
            Status::Fail,
            "hugepages",
            format!("the kernel has no {kb} kB huge pages"),
        )
        .fix(if kb == 1048576 {
            "1 GiB pages need the pdpe1gb CPU flag; use hugepages = \"2M\""
        } else {
            "use a kernel with CONFIG_HUGETLBFS"
        });
    };
    if free >= needed {
        return Check::new(
            Status::Pass,
            "hugepages",
            format!("{free} free {kb} kB pages, {needed} needed"),
        );
    }
    let missing = needed - free;
    let available = cpu::meminfo_kb(root, "MemAvailable").unwrap_or(0);
    if available < missing * kb {
        return Check::new(Status::Fail, "hugepages", format!("{needed} pages of {kb} kB needed, {free} free, and only {} MiB of memory available to reserve more", available / 1024))
            .fix(format!("free memory, lower `memory`, or {boot}"));
    }
    Check::new(Status::Warn, "hugepages", format!("{free} of {needed} {kb} kB pages free: vmrun reserves the other {missing} at start, which fails once memory is fragmented"))
        .fix(boot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::qemu::QemuVersion;
    use crate::setup::check::tests::{ctx, find};
    use crate::setup::check::{host_checks, worst};
    use crate::testing::{self, Machine};

    fn plan_on(host: &std::path::Path, text: &str) -> Plan {
        let ctx = crate::plan::PlanContext {
            root: HostRoot::new(host),
            dirs: crate::plan::DirsEnv {
                is_root: true,
                uid: 0,
                run_base: Some(host.join("run/vmrun")),
                state_base: Some(host.join("state")),
                ..Default::default()
            },
            qemu_version: Some(QemuVersion::new(8, 2, 0)),
        };
        crate::plan::plan(testing::vm(text), &ctx)
    }

    const GPU_PAIR: &str = "memory = \"4G\"\n[firmware]\ntype = \"bios\"\n[qemu]\nuser = \"root\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.1\"\n";

    #[test]
    fn takeover_is_confirmed_for_the_boot_gpu_and_questioned_for_a_secondary_one() {
        let single = Machine::SingleGpu.build();
        let plan = plan_on(
            single.path(),
            &format!("{GPU_PAIR}[takeover]\nenabled = true\n"),
        );
        let checks = vm_checks(&plan, &ctx(single.path()));
        assert_eq!(find(&checks, "takeover").status, Status::Pass);
        assert!(
            checks
                .iter()
                .any(|c| c.name == "devices" && c.status == Status::Pass),
            "{checks:#?}"
        );
        let laptop = Machine::IntelNvidiaLaptop.build();
        let plan = plan_on(
            laptop.path(),
            &format!("{GPU_PAIR}[takeover]\nenabled = true\n"),
        );
        let checks = vm_checks(&plan, &ctx(laptop.path()));
        let takeover = find(&checks, "takeover");
        assert_eq!(takeover.status, Status::Warn);
        assert!(takeover
            .fix
            .as_deref()
            .unwrap()
            .contains("desktop = \"restart\""));
        let plan = plan_on(
            laptop.path(),
            &format!("{GPU_PAIR}[takeover]\nenabled = true\ndesktop = \"restart\"\n"),
        );
        // Beside the plan's own warning (no display manager on this
        // machine to start again).
        let checks = vm_checks(&plan, &ctx(laptop.path()));
        assert!(
            checks.iter().any(|c| c.name == "takeover"
                && c.status == Status::Pass
                && c.message.contains("secondary GPU")),
            "{checks:#?}"
        );
    }

    #[test]
    fn a_secondary_gpu_is_live_once_hidden_and_unheld() {
        let laptop = Machine::IntelNvidiaLaptop.build();
        let root = laptop.root();
        let live = |host: &std::path::Path| {
            let plan = plan_on(host, GPU_PAIR);
            find(&vm_checks(&plan, &ctx(host)), "live handover").clone()
        };
        let open = live(laptop.path());
        assert_eq!(open.status, Status::Warn, "{open:?}");
        assert!(open.fix.unwrap().contains("vmrun host hide-gpu"));
        let gpu: crate::config::PciAddress = "0000:01:00.0".parse().unwrap();
        let hide = crate::setup::hide_gpu::plan(&root, &[gpu]).unwrap();
        let (rule, text) = &hide.files[0];
        crate::testing::sysfs::write(laptop.path(), &rule.to_string_lossy(), text);
        let hidden = live(laptop.path());
        assert_eq!(hidden.status, Status::Pass, "{hidden:?}");
        assert!(hidden.message.contains("without stopping anything"));
        let dev = pci::read_device(&root, gpu).unwrap();
        // The fixture's NVIDIA card has no DRM node: its /dev/nvidiaN.
        let nodes = procs::GpuNodes::of(&root, &dev);
        let node = nodes
            .exact
            .first()
            .map_or("/dev/nvidia0".into(), |p| p.to_string_lossy().into_owned());
        assert!(nodes.matches(std::path::Path::new(&node)));
        let laptop = laptop.process(700, "gnome-shell", &[&node]);
        let held = live(laptop.path());
        assert_eq!(held.status, Status::Warn, "{held:?}");
        assert!(held.message.contains("gnome-shell (pid 700"), "{held:?}");
    }

    #[test]
    fn a_tcg_vm_does_not_fail_on_a_missing_kvm() {
        let host = Machine::SingleGpu.build().remove("/dev/kvm");
        let mut checks = host_checks(&ctx(host.path()));
        assert_eq!(find(&checks, "kvm").status, Status::Fail);
        relax_host_checks(
            &testing::vm("memory = \"1G\"\n[qemu]\naccel = \"kvm\"\n"),
            &mut checks,
        );
        assert_eq!(find(&checks, "kvm").status, Status::Fail);
        relax_host_checks(
            &testing::vm("memory = \"1G\"\n[qemu]\naccel = \"tcg\"\n"),
            &mut checks,
        );
        assert_eq!(find(&checks, "kvm").status, Status::Pass);
    }

    #[test]
    fn swtpm_missing_passes_for_the_host_and_fails_for_a_tpm_vm() {
        let host = Machine::SingleGpu.build();
        let mut c = ctx(host.path());
        c.swtpm = None;
        assert_eq!(find(&host_checks(&c), "swtpm").status, Status::Pass);
        let plan = plan_on(host.path(), "memory = \"4G\"\n[tpm]\nenabled = true\n");
        let tpm = find(&vm_checks(&plan, &c), "swtpm").clone();
        assert_eq!(tpm.status, Status::Fail);
        assert!(tpm.fix.unwrap().contains("install swtpm"));
    }

    #[test]
    fn a_vm_missing_a_group_member_fails_with_the_plans_fix() {
        let laptop = Machine::IntelNvidiaLaptop.build();
        let plan = plan_on(
            laptop.path(),
            "memory = \"4G\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n",
        );
        let checks = vm_checks(&plan, &ctx(laptop.path()));
        let c = checks
            .iter()
            .find(|c| c.message.contains("not viable"))
            .unwrap_or_else(|| panic!("{checks:#?}"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_deref().unwrap().contains("0000:01:00.1"));
        assert_eq!(worst(&checks), Status::Fail);
    }

    #[test]
    fn hugepages_short_of_free_warn_and_without_memory_fail() {
        let host = Machine::AmdTwoGpus.build();
        let root = host.root();
        let vm = testing::vm("[memory]\nsize = \"8G\"\nhugepages = \"1G\"\n");
        let warn = hugepage_check(&root, &vm, ByteSize::from_bytes(ByteSize::GIB));
        assert_eq!(warn.status, Status::Warn, "{warn:?}");
        assert!(warn.fix.unwrap().contains("hugepagesz=1G hugepages=8"));
        let _host = host.file(
            "/proc/meminfo",
            "MemTotal: 4000000 kB\nMemAvailable: 1000000 kB\n",
        );
        let fail = hugepage_check(&root, &vm, ByteSize::from_bytes(ByteSize::GIB));
        assert_eq!(fail.status, Status::Fail, "{fail:?}");
    }

    #[test]
    fn looking_glass_size_is_shown_against_the_resolution_and_kvmfr_must_be_loaded() {
        let host = Machine::FixtureDesktop.build();
        let shm =
            "memory = \"1G\"\n[looking_glass]\nresolution = \"2560x1440\"\nuser = \"nobody\"\n";
        let checks = vm_checks(&plan_on(host.path(), shm), &ctx(host.path()));
        let lg = find(&checks, "looking glass");
        assert_eq!(lg.status, Status::Pass);
        assert!(lg.message.contains("2560x1440 needs 64M"), "{}", lg.message);
        let kvmfr = format!("{shm}device = \"kvmfr\"\n");
        let checks = vm_checks(&plan_on(host.path(), &kvmfr), &ctx(host.path()));
        let missing = find(&checks, "looking_glass");
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.message.contains("kvmfr module is not loaded"));
    }
}
