//! `vmrun check`: every precondition of a passthrough VM as PASS, WARN or
//! FAIL, each with its fix. The host part reads the machine; the VM part
//! is the plan's own findings (group viability, firmware, boot GPU, reset,
//! `vfio-pci.ids`), so `check NAME` and `start NAME` never disagree.

use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{ByteSize, FirmwareKind};
use crate::host::cpu::{self, CpuVendor};
use crate::host::qemu::{QemuInfo, QemuVersion};
use crate::host::{iommu, pci, HostRoot};
use crate::plan::firmware::{self, FirmwareSearch};
use crate::plan::{safety, Finding, Severity};

/// How one check came out; the order is the exit status's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Pass,
    Warn,
    Fail,
}

/// One precondition and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    pub status: Status,
    /// Short key: `cpu`, `iommu`, `kvm`, a device address, ...
    pub name: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn new(status: Status, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            name: name.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
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
pub(crate) struct CheckContext {
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
pub(crate) fn host_checks(ctx: &CheckContext) -> Vec<Check> {
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
        files: None,
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
pub(crate) fn memlock_check(ctx: &CheckContext, memory: Option<ByteSize>) -> Check {
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

/// The worst status, which is the exit status (0 pass, 1 warn, 2 fail).
pub(crate) fn worst(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::Machine;

    pub(crate) fn ctx(root: &std::path::Path) -> CheckContext {
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

    pub(crate) fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:#?}"))
    }

    #[test]
    fn the_laptop_passes_and_sees_the_nvidia_group() {
        let host = Machine::IntelNvidiaLaptop.build();
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
        let host = Machine::IommuOff.build();
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
        let host = Machine::AmdTwoGpus.build();
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
        let host = Machine::SingleGpu.build();
        let checks = host_checks(&ctx(host.path()));
        let gpu = find(&checks, "0000:01:00.0");
        assert!(gpu.message.contains("[takeover]"), "{gpu:?}");
    }

    #[test]
    fn missing_kvm_qemu_and_vfio_fail_with_fixes() {
        let host = Machine::SingleGpu
            .build()
            .remove("/dev/kvm")
            .remove("/lib/modules");
        let mut c = ctx(host.path());
        c.qemu = Err("QEMU binary `qemu-system-x86_64` could not be run".into());
        let checks = host_checks(&c);
        for name in ["kvm", "vfio", "qemu"] {
            assert_eq!(find(&checks, name).status, Status::Fail, "{name}");
        }
    }

    #[test]
    fn a_user_without_memlock_fails_for_a_passthrough_vm() {
        let host = Machine::IntelNvidiaLaptop.build();
        let mut c = ctx(host.path());
        c.is_root = false;
        let check = memlock_check(&c, Some(ByteSize::from_bytes(8 * ByteSize::GIB)));
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.unwrap().contains("limits.conf"));
    }
}
