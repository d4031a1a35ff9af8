//! `vmrun check`: every precondition of a passthrough VM as PASS, WARN or
//! FAIL, each with its fix. The host part reads the machine; the VM part
//! is the plan's own findings (group viability, firmware, boot GPU, reset,
//! `vfio-pci.ids`), so `check NAME` and `start NAME` never disagree.

use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{ByteSize, FirmwareKind, VmConfig};
use crate::host::cpu::{self, CpuVendor};
use crate::host::qemu::{QemuInfo, QemuVersion};
use crate::host::{iommu, pci, HostRoot};
use crate::plan::firmware::{self, FirmwareSearch};
use crate::plan::{safety, Finding, Plan, Severity};

/// How one check came out; the order is the exit status's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One precondition and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub status: Status,
    /// Short key: `cpu`, `iommu`, `kvm`, a device address, ...
    pub name: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            name: name.into(),
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl From<&Finding> for Check {
    fn from(f: &Finding) -> Self {
        let status = match f.severity {
            Severity::Info => Status::Pass,
            Severity::Warning => Status::Warn,
            Severity::Error => Status::Fail,
        };
        Self {
            status,
            name: f.subject.clone(),
            message: f.message.clone(),
            fix: f.fix.clone(),
        }
    }
}

/// The facts a check needs that don't come from files under the root.
#[derive(Debug, Clone)]
pub struct CheckContext {
    pub root: HostRoot,
    /// The QEMU probe's answer (the VM's `[qemu] binary`, or the default).
    pub qemu: Result<QemuInfo, String>,
    /// Where `swtpm` was found in `PATH`.
    pub swtpm: Option<PathBuf>,
    /// vmrun runs as root (and so raises RLIMIT_MEMLOCK itself).
    pub is_root: bool,
    /// The hard RLIMIT_MEMLOCK in bytes; `None` for unlimited.
    pub memlock_hard: Option<u64>,
    /// `$XDG_CONFIG_HOME`: its `qemu/firmware` descriptors count too.
    pub user_config_dir: Option<PathBuf>,
}

/// The oldest QEMU whose command line vmrun builds without surprises.
const OLDEST_TESTED_QEMU: QemuVersion = QemuVersion::new(7, 2, 0);

/// Checks of the host itself, whatever the VM.
pub fn host_checks(ctx: &CheckContext) -> Vec<Check> {
    let root = &ctx.root;
    let mut out = Vec::new();
    let cpu = cpu::cpu_info(root);
    let args = cpu::cmdline(root);
    out.push(match &cpu {
        Some(c) if c.virtualization => Check::new(
            Status::Pass,
            "cpu",
            format!(
                "{} with hardware virtualization, {} logical CPUs",
                match c.vendor {
                    CpuVendor::Intel => "Intel (VT-x)",
                    CpuVendor::Amd => "AMD (AMD-V)",
                    CpuVendor::Other => "CPU",
                },
                c.logical
            ),
        ),
        Some(_) => Check::new(
            Status::Fail,
            "cpu",
            "no vmx/svm flag: hardware virtualization is off or missing",
        )
        .fix("enable VT-x (Intel) or SVM/AMD-V (AMD) in the firmware setup"),
        None => Check::new(Status::Warn, "cpu", "/proc/cpuinfo is unreadable"),
    });
    let groups = iommu::groups(root);
    let iommu_arg = cpu
        .as_ref()
        .and_then(|c| c.iommu_arg())
        .unwrap_or("intel_iommu=on or amd_iommu=on");
    out.push(if groups.is_empty() {
        Check::new(Status::Fail, "iommu", "no IOMMU groups: the IOMMU is off, so no device can be passed through")
            .fix(format!("enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup and boot with {iommu_arg} (`vmrun host kernel-args`)"))
    } else {
        Check::new(Status::Pass, "iommu", format!("active: {} IOMMU groups", groups.len()))
    });
    out.push(cmdline_check(
        cpu.as_ref().map(|c| c.vendor),
        &args,
        !groups.is_empty(),
    ));
    out.push(if root.dev().join("kvm").exists() {
        Check::new(Status::Pass, "kvm", "/dev/kvm exists")
    } else {
        Check::new(
            Status::Fail,
            "kvm",
            "/dev/kvm is missing: KVM is not available",
        )
        .fix("enable virtualization in the firmware setup and load kvm_intel or kvm_amd")
    });
    out.push(vfio_module_check(root));
    out.push(qemu_check(&ctx.qemu));
    out.push(ovmf_check(ctx));
    // swtpm matters only to VMs with [tpm]; `vm_checks` fails those.
    out.push(match &ctx.swtpm {
        Some(p) => Check::new(Status::Pass, "swtpm", format!("{} (for [tpm])", p.display())),
        None => Check::new(
            Status::Pass,
            "swtpm",
            "not installed: needed only by VMs with [tpm] enabled (Windows 11); `vmrun check NAME` says",
        ),
    });
    out.push(memlock_check(ctx, None));
    gpu_checks(root, &mut out);
    out
}

fn cmdline_check(vendor: Option<CpuVendor>, args: &[String], active: bool) -> Check {
    let (key, default_on) = match vendor {
        Some(CpuVendor::Amd) => ("amd_iommu", true),
        _ => ("intel_iommu", false),
    };
    let pt = match cpu::cmdline_value(args, "iommu") {
        Some("pt") => "; iommu=pt set",
        _ => "; iommu=pt not set (optional: host devices skip IOMMU translation with it)",
    };
    match cpu::cmdline_value(args, key) {
        Some(v) if v.split(',').any(|o| o == "off") => {
            Check::new(Status::Fail, "cmdline", format!("{key}=off on the kernel command line"))
                .fix(format!("replace it with {key}=on in the boot loader's config (`vmrun host kernel-args`)"))
        }
        Some(v) => Check::new(Status::Pass, "cmdline", format!("{key}={v}{pt}")),
        None if active => Check::new(
            Status::Pass,
            "cmdline",
            format!("no {key}= on the command line; the kernel turned the IOMMU on by default{pt}"),
        ),
        None if default_on => Check::new(
            Status::Pass,
            "cmdline",
            format!("no {key}= on the command line, which is fine: it is on by default for AMD{pt}"),
        ),
        None => Check::new(Status::Fail, "cmdline", format!("{key}=on is not on the kernel command line"))
            .fix(format!("add {key}=on iommu=pt to the boot loader's kernel arguments (`vmrun host kernel-args`)")),
    }
}

fn vfio_module_check(root: &HostRoot) -> Check {
    if root.path("/sys/module/vfio_pci").is_dir() {
        return Check::new(Status::Pass, "vfio", "vfio-pci is loaded");
    }
    let Some(release) = cpu::kernel_release(root) else {
        return Check::new(
            Status::Warn,
            "vfio",
            "vfio-pci is not loaded and the kernel release is unknown",
        );
    };
    let dir = root.path(format!("/lib/modules/{release}"));
    // modules.dep lists every loadable module, modules.builtin the built-in ones.
    let listed = ["modules.dep", "modules.builtin"].iter().any(|f| {
        fs::read_to_string(dir.join(f))
            .map(|t| {
                t.lines().any(|l| {
                    l.split(':').next().is_some_and(|m| {
                        m.ends_with("/vfio-pci.ko")
                            || m.ends_with("/vfio-pci.ko.xz")
                            || m.ends_with("/vfio-pci.ko.zst")
                    })
                })
            })
            .unwrap_or(false)
    });
    if listed {
        Check::new(
            Status::Pass,
            "vfio",
            format!("vfio-pci is loadable for kernel {release} (vmrun loads it)"),
        )
    } else {
        Check::new(Status::Fail, "vfio", format!("kernel {release} has no vfio-pci module"))
            .fix("install the kernel's extra modules (e.g. linux-modules-extra) or a kernel built with CONFIG_VFIO_PCI")
    }
}

fn qemu_check(qemu: &Result<QemuInfo, String>) -> Check {
    match qemu {
        Ok(info) if info.version < OLDEST_TESTED_QEMU => Check::new(
            Status::Warn,
            "qemu",
            format!(
                "{} is QEMU {}, older than {OLDEST_TESTED_QEMU}, the oldest vmrun is tested with",
                info.binary.display(),
                info.version
            ),
        )
        .fix("upgrade QEMU"),
        Ok(info) => Check::new(
            Status::Pass,
            "qemu",
            format!("{} is QEMU {}", info.binary.display(), info.version),
        ),
        Err(e) => Check::new(Status::Fail, "qemu", e.clone()),
    }
}

fn ovmf_check(ctx: &CheckContext) -> Check {
    let machine = ctx
        .qemu
        .as_ref()
        .map(|q| q.concrete_machine("q35"))
        .unwrap_or_else(|_| "q35".into());
    let fw = crate::config::Firmware {
        kind: FirmwareKind::Uefi,
        secure_boot: None,
        code: None,
        vars: None,
    };
    let search = FirmwareSearch {
        root: ctx.root.clone(),
        user_config_dir: ctx.user_config_dir.clone(),
    };
    match firmware::resolve(&fw, &machine, &search) {
        Ok(found) => Check::new(
            Status::Pass,
            "ovmf",
            format!("UEFI firmware {}", found.code.display()),
        ),
        Err(e) => Check::new(Status::Warn, "ovmf", e.to_string())
            .fix("needed by UEFI guests (Windows 11); BIOS guests run without it"),
    }
}

/// VFIO pins all guest RAM; QEMU needs RLIMIT_MEMLOCK above it (RAM + 1 GiB
/// for the IOMMU's own mappings, as vmrun raises it).
fn memlock_check(ctx: &CheckContext, memory: Option<ByteSize>) -> Check {
    let limit = match ctx.memlock_hard {
        None => "unlimited".to_string(),
        Some(b) => format!("{} MiB", b / ByteSize::MIB),
    };
    if ctx.is_root {
        return Check::new(
            Status::Pass,
            "memlock",
            format!("running as root: vmrun raises RLIMIT_MEMLOCK for QEMU (hard limit {limit})"),
        );
    }
    let Some(memory) = memory else {
        return Check::new(
            Status::Pass,
            "memlock",
            format!("hard RLIMIT_MEMLOCK {limit} (passthrough VMs are started as root)"),
        );
    };
    let wanted = memory.bytes() + ByteSize::GIB;
    match ctx.memlock_hard {
        Some(hard) if hard < wanted => Check::new(
            Status::Fail,
            "memlock",
            format!("hard RLIMIT_MEMLOCK is {limit}; VFIO pins the guest's {} MiB + 1 GiB", memory.mib()),
        )
        .fix("start passthrough VMs as root, or raise memlock in /etc/security/limits.conf (`@kvm hard memlock unlimited`)"),
        _ => Check::new(Status::Pass, "memlock", format!("hard RLIMIT_MEMLOCK {limit} covers the guest's RAM")),
    }
}

/// Each GPU: boot GPU or not, its group, reset, and `vfio-pci.ids=`.
fn gpu_checks(root: &HostRoot, out: &mut Vec<Check>) {
    let devices = pci::list_devices(root);
    let gpus: Vec<&pci::PciDevice> = devices.iter().filter(|d| d.is_display()).collect();
    let cmdline_ids = safety::vfio_pci_cmdline_ids(root);
    if gpus.is_empty() {
        out.push(Check::new(
            Status::Warn,
            "gpu",
            "no display controller found on the PCI bus",
        ));
    }
    for gpu in &gpus {
        let siblings: Vec<String> = gpu
            .iommu_group
            .map(|g| iommu::group_members(root, g))
            .unwrap_or_default()
            .into_iter()
            .filter(|a| *a != gpu.address)
            .filter_map(|a| pci::read_device(root, a))
            .filter(|d| !d.is_bridge())
            .map(|d| d.address.to_string())
            .collect();
        let group = match gpu.iommu_group {
            Some(g) if siblings.is_empty() => format!("IOMMU group {g}, alone"),
            Some(g) => format!("IOMMU group {g} with {}", siblings.join(", ")),
            None => "no IOMMU group".into(),
        };
        let role = if gpu.boot_vga == Some(true) {
            if gpus.len() == 1 {
                "the host's only GPU and its boot GPU: passing it needs [takeover] (`vmrun init --gpu auto` sets it)"
            } else {
                "the boot GPU (the host's console)"
            }
        } else {
            "a secondary GPU: can be passed without takeover"
        };
        out.push(Check::new(
            Status::Pass,
            gpu.address.to_string(),
            format!(
                "{:04x}:{:04x} {}, driver {}; {group}; {role}",
                gpu.vendor,
                gpu.device,
                pci::class_name(gpu.class),
                gpu.driver.as_deref().unwrap_or("none")
            ),
        ));
        let mut findings = Vec::new();
        safety::reset_warning(gpu, &mut findings);
        out.extend(findings.iter().map(Check::from));
        if cmdline_ids.contains(&(gpu.vendor, gpu.device)) {
            out.push(if gpu.boot_vga == Some(true) {
                Check::new(Status::Warn, gpu.address.to_string(), "vfio-pci.ids= on the command line takes the boot GPU at boot: the host has no console on it")
                    .fix("remove its ids from vfio-pci.ids= unless the host is meant to run headless")
            } else {
                Check::new(Status::Pass, gpu.address.to_string(), "vfio-pci.ids= on the command line binds it to vfio-pci at boot")
            });
        }
    }
}

/// Checks that depend on the VM: the plan's findings, huge pages, memlock,
/// swtpm for `[tpm]`.
pub fn vm_checks(plan: &Plan, ctx: &CheckContext) -> Vec<Check> {
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

/// Boot GPU vs passed GPU: `[takeover]` is what frees the host's boot GPU,
/// and only that; on a secondary GPU it would stop the desktop for nothing.
fn takeover_check(plan: &Plan) -> Option<Check> {
    let gpus: Vec<&pci::PciDevice> = plan
        .hostdevs
        .iter()
        .filter_map(|h| h.device.as_ref())
        .filter(|d| d.is_display())
        .collect();
    let boot = gpus.iter().any(|d| d.boot_vga == Some(true));
    match (boot, plan.vm.takeover.is_some()) {
        (true, true) => Some(Check::new(Status::Pass, "takeover", "the VM takes the boot GPU and [takeover] hands it over")),
        (false, true) if !gpus.is_empty() => Some(
            Check::new(Status::Warn, "takeover", "[takeover] is enabled but the passed GPU is not the boot GPU: the desktop would be stopped for nothing")
                .fix("remove [takeover] (or set enabled = false)"),
        ),
        _ => None,
    }
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

/// The worst status, which is the exit status (0 pass, 1 warn, 2 fail).
pub fn worst(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::fixtures::{self, Fixture};

    fn ctx(root: &std::path::Path) -> CheckContext {
        CheckContext {
            root: HostRoot::new(root),
            qemu: Ok(QemuInfo::assumed(
                "qemu-system-x86_64".into(),
                QemuVersion::new(8, 2, 0),
            )),
            swtpm: Some("/usr/bin/swtpm".into()),
            is_root: true,
            memlock_hard: Some(64 * ByteSize::MIB),
            user_config_dir: None,
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:#?}"))
    }

    #[test]
    fn the_laptop_passes_and_sees_the_nvidia_group() {
        let host = fixtures::build(Fixture::IntelNvidiaLaptop);
        let checks = host_checks(&ctx(host.path()));
        for name in [
            "cpu", "iommu", "cmdline", "kvm", "vfio", "qemu", "swtpm", "memlock",
        ] {
            assert_eq!(
                find(&checks, name).status,
                Status::Pass,
                "{name}: {checks:#?}"
            );
        }
        let gpu = find(&checks, "0000:01:00.0");
        assert!(
            gpu.message.contains("IOMMU group 2 with 0000:01:00.1"),
            "{gpu:?}"
        );
        assert!(gpu.message.contains("secondary GPU"), "{gpu:?}");
        assert!(find(&checks, "0000:00:02.0").message.contains("boot GPU"));
    }

    #[test]
    fn the_iommu_off_host_fails_with_the_intel_fix() {
        let host = fixtures::build(Fixture::IommuOff);
        let checks = host_checks(&ctx(host.path()));
        let iommu = find(&checks, "iommu");
        assert_eq!(iommu.status, Status::Fail);
        assert!(iommu.fix.as_deref().unwrap().contains("intel_iommu=on"));
        assert_eq!(find(&checks, "cmdline").status, Status::Fail);
        assert!(find(&checks, "0000:01:00.0")
            .message
            .contains("no IOMMU group"));
        assert_eq!(worst(&checks), Status::Fail);
    }

    #[test]
    fn the_amd_desktop_warns_about_the_polaris_reset_and_names_vendor_reset() {
        let host = fixtures::build(Fixture::AmdTwoGpus);
        let checks = host_checks(&ctx(host.path()));
        assert_eq!(
            find(&checks, "cmdline").status,
            Status::Pass,
            "amd_iommu is on by default"
        );
        let reset = checks
            .iter()
            .find(|c| c.name == "0000:0b:00.0" && c.status == Status::Warn)
            .unwrap_or_else(|| panic!("{checks:#?}"));
        assert!(reset.fix.as_deref().unwrap().contains("vendor-reset"));
        assert_eq!(worst(&checks), Status::Warn);
    }

    #[test]
    fn the_single_gpu_desktop_says_takeover_is_needed() {
        let host = fixtures::build(Fixture::SingleGpu);
        let checks = host_checks(&ctx(host.path()));
        let gpu = find(&checks, "0000:01:00.0");
        assert!(gpu.message.contains("[takeover]"), "{gpu:?}");
    }

    #[test]
    fn missing_kvm_qemu_and_vfio_fail_with_fixes() {
        let host = fixtures::build(Fixture::SingleGpu);
        fs::remove_file(host.path().join("dev/kvm")).unwrap();
        fs::remove_dir_all(host.path().join("lib/modules")).unwrap();
        let mut c = ctx(host.path());
        c.qemu = Err("QEMU binary `qemu-system-x86_64` could not be run".into());
        let checks = host_checks(&c);
        for name in ["kvm", "vfio", "qemu"] {
            assert_eq!(find(&checks, name).status, Status::Fail, "{name}");
        }
    }

    #[test]
    fn a_user_without_memlock_fails_for_a_passthrough_vm() {
        let host = fixtures::build(Fixture::IntelNvidiaLaptop);
        let mut c = ctx(host.path());
        c.is_root = false;
        let check = memlock_check(&c, Some(ByteSize::from_bytes(8 * ByteSize::GIB)));
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.unwrap().contains("limits.conf"));
    }

    fn plan_on(host: &std::path::Path, text: &str) -> Plan {
        let ctx = crate::plan::PlanContext {
            root: HostRoot::new(host),
            dirs: crate::plan::DirsEnv {
                is_root: true,
                uid: 0,
                xdg_runtime_dir: None,
                xdg_data_home: None,
                xdg_cache_home: None,
                xdg_config_home: None,
                home: None,
                run_base: Some(host.join("run/vmrun")),
                state_base: Some(host.join("state")),
            },
            qemu_version: Some(QemuVersion::new(8, 2, 0)),
        };
        crate::plan::plan(fixtures::vm(text), &ctx)
    }

    const GPU_PAIR: &str = "memory = \"4G\"\n[firmware]\ntype = \"bios\"\n[qemu]\nuser = \"root\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.1\"\n";

    #[test]
    fn takeover_is_confirmed_for_the_boot_gpu_and_questioned_for_a_secondary_one() {
        let single = fixtures::build(Fixture::SingleGpu);
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
        let laptop = fixtures::build(Fixture::IntelNvidiaLaptop);
        let plan = plan_on(
            laptop.path(),
            &format!("{GPU_PAIR}[takeover]\nenabled = true\n"),
        );
        assert_eq!(
            find(&vm_checks(&plan, &ctx(laptop.path())), "takeover").status,
            Status::Warn
        );
    }

    #[test]
    fn swtpm_missing_passes_for_the_host_and_fails_for_a_tpm_vm() {
        let host = fixtures::build(Fixture::SingleGpu);
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
        let laptop = fixtures::build(Fixture::IntelNvidiaLaptop);
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
        let host = fixtures::build(Fixture::AmdTwoGpus);
        let root = HostRoot::new(host.path());
        let vm = fixtures::vm("[memory]\nsize = \"8G\"\nhugepages = \"1G\"\n");
        let warn = hugepage_check(&root, &vm, ByteSize::from_bytes(ByteSize::GIB));
        assert_eq!(warn.status, Status::Warn, "{warn:?}");
        assert!(warn.fix.unwrap().contains("hugepagesz=1G hugepages=8"));
        fixtures::write(
            host.path(),
            "/proc/meminfo",
            "MemTotal: 4000000 kB\nMemAvailable: 1000000 kB\n",
        );
        let fail = hugepage_check(&root, &vm, ByteSize::from_bytes(ByteSize::GIB));
        assert_eq!(fail.status, Status::Fail, "{fail:?}");
    }
}
