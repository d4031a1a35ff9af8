//! Refusals before any change: handing these devices to a VM would take
//! something from under the running host (a mounted disk, the desktop's
//! GPU, another VM's device) or hang an unbind on a busy driver. Each is an
//! error finding with the reason and the way out. Two warnings ride along:
//! no reset mechanism, and `vfio-pci.ids=` recapturing a device on restore.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::finding::Finding;
use super::hostdev::PlannedHostdev;

use crate::host::pci::PciDevice;
use crate::host::{block, held, procs, HostRoot};

/// Host GPU drivers whose open device nodes make an unbind block (or fail)
/// until the holder lets go.
const GPU_DRIVERS: [&str; 5] = ["nvidia", "amdgpu", "nouveau", "i915", "radeon"];

/// AMD GPUs that cannot reset themselves but vendor-reset can
/// (gnif/vendor-reset `device-db.h`): Polaris 10/11/12, Vega 10/20,
/// Navi 10/12/14, Arcturus.
const VENDOR_RESET_IDS: &[u16] = &[
    0x67c0, 0x67c1, 0x67c2, 0x67c4, 0x67c7, 0x67c8, 0x67c9, 0x67ca, 0x67cc, 0x67cf, 0x67d0, 0x67df,
    0x6fdf, // Polaris 10
    0x67e0, 0x67e1, 0x67e3, 0x67e7, 0x67e8, 0x67e9, 0x67eb, 0x67ef, 0x67ff, // Polaris 11
    0x6980, 0x6981, 0x6985, 0x6986, 0x6987, 0x6995, 0x6997, 0x699f, // Polaris 12
    0x6860, 0x6861, 0x6862, 0x6863, 0x6864, 0x6867, 0x6868, 0x6869, 0x686a, 0x686b, 0x686c, 0x686d,
    0x686e, 0x686f, 0x687f, // Vega 10
    0x66a0, 0x66a1, 0x66a2, 0x66a3, 0x66a4, 0x66a7, 0x66af, 0x738c, // Vega 20, Arcturus
    0x7310, 0x7312, 0x7318, 0x7319, 0x731a, 0x731b, 0x731e, 0x731f, 0x1681, // Navi 10
    0x7340, 0x7341, 0x7347, 0x734f, // Navi 14
    0x7360, 0x7362, // Navi 12
];

const AMD: u16 = 0x1002;

/// What the safety rules need beyond the devices.
#[derive(Debug, Clone)]
pub(crate) struct SafetyContext<'a> {
    pub root: &'a HostRoot,
    /// Where VM run dirs (and their `devices` files) live.
    pub run_base: &'a Path,
    /// This VM: its own `devices` file is no conflict.
    pub vm_name: &'a str,
    /// `[takeover]` is enabled: the host display is stopped and its GPU
    /// drivers unloaded before binding, so the desktop GPU may be taken.
    pub takeover: bool,
}

/// Checks every planned hostdev that exists on this host.
pub(crate) fn check(
    hostdevs: &[PlannedHostdev],
    ctx: &SafetyContext<'_>,
    findings: &mut Vec<Finding>,
) {
    let devices: Vec<&PciDevice> = hostdevs.iter().filter_map(|h| h.device.as_ref()).collect();
    let held = held::held_by(ctx.root, ctx.run_base);
    let cmdline_ids = vfio_pci_cmdline_ids(ctx.root);
    for dev in &devices {
        storage_in_use(ctx.root, dev, findings);
        // The boot GPU alone is no reason to refuse (a headless host's only
        // GPU is one): a desktop on it is, and shows as processes holding
        // its DRM nodes, which `gpus_in_use` refuses.
        if dev.boot_vga == Some(true) && !ctx.takeover {
            findings.push(
                Finding::warning(
                    dev.address,
                    "is the boot VGA: the host's console on it goes dark while the VM runs",
                )
                .fix("if a desktop runs on it, enable [takeover] to stop it for the VM's lifetime and bring it back after"),
            );
        }
        if let Some(vm) = held.get(&dev.address).filter(|vm| *vm != ctx.vm_name) {
            findings.push(
                Finding::error(dev.address, format!("is held by VM {vm}"))
                    .fix(format!("stop {vm} first (`vmrun stop {vm}`; `vmrun restore {vm}` if it is not running)")),
            );
        }
        reset_warning(dev, findings);
        if cmdline_ids.contains(&(dev.vendor, dev.device)) {
            findings.push(
                Finding::warning(
                    dev.address,
                    format!(
                        "the kernel command line has vfio-pci.ids={:04x}:{:04x}: after the VM stops, the restore's reprobe binds it to vfio-pci again, not to its host driver",
                        dev.vendor, dev.device
                    ),
                )
                .fix("remove it from vfio-pci.ids= (in the boot loader's config) to have the host driver back after the VM"),
            );
        }
    }
    if !ctx.takeover {
        gpus_in_use(ctx.root, &devices, findings);
    }
}

fn storage_in_use(root: &HostRoot, dev: &PciDevice, findings: &mut Vec<Finding>) {
    let uses = block::uses(root, &block::block_devices_under(root, dev.address));
    if uses.is_empty() {
        return;
    }
    let list: Vec<String> = uses
        .iter()
        .map(|u| match u.what.as_str() {
            "swap" => format!("/dev/{} is active swap", u.device),
            at => format!("/dev/{} is mounted at {at}", u.device),
        })
        .collect();
    findings.push(
        Finding::error(
            dev.address,
            format!(
                "carries disks the host is using ({}): the VM would take them from under the host",
                list.join(", ")
            ),
        )
        .fix("unmount them (`umount`, `swapoff`) and remove them from /etc/fstab, or pass another device"),
    );
}

pub(crate) fn reset_warning(dev: &PciDevice, findings: &mut Vec<Finding>) {
    if dev.can_reset() {
        return;
    }
    let why = match &dev.reset_method {
        Some(_) => "its reset_method is empty",
        None => "the kernel offers no reset for it",
    };
    let finding = Finding::warning(
        dev.address,
        format!("has no reset mechanism ({why}): it may come back in the guest's state, and a second VM start may fail"),
    );
    findings.push(if dev.vendor == AMD && VENDOR_RESET_IDS.contains(&dev.device) {
        finding.fix(format!(
            "load the vendor-reset module (github.com/gnif/vendor-reset), which supports this GPU, and write `device_specific` to /sys/bus/pci/devices/{}/reset_method",
            dev.address
        ))
    } else {
        finding.fix("if a second start fails, a host reboot (or suspend and resume) resets the device")
    });
}

/// `(vendor, device)` pairs of `vfio-pci.ids=` (or `vfio_pci.ids=`) in
/// `/proc/cmdline`: `vendor:device[:subvendor[:subdevice[:class[:mask]]]]`, comma separated.
pub(crate) fn vfio_pci_cmdline_ids(root: &HostRoot) -> Vec<(u16, u16)> {
    let cmdline = fs::read_to_string(root.path("/proc/cmdline")).unwrap_or_default();
    cmdline
        .split_whitespace()
        .filter_map(|t| {
            t.strip_prefix("vfio-pci.ids=")
                .or_else(|| t.strip_prefix("vfio_pci.ids="))
        })
        .flat_map(|v| v.split(','))
        .filter_map(|id| {
            let mut parts = id.split(':');
            let v = u16::from_str_radix(parts.next()?, 16).ok()?;
            let d = u16::from_str_radix(parts.next()?, 16).ok()?;
            Some((v, d))
        })
        .collect()
}

fn gpus_in_use(root: &HostRoot, devices: &[&PciDevice], findings: &mut Vec<Finding>) {
    let gpus: Vec<(&PciDevice, procs::GpuNodes)> = devices
        .iter()
        .filter(|d| {
            d.driver.is_some()
                && (d.is_display()
                    || d.driver
                        .as_deref()
                        .is_some_and(|drv| GPU_DRIVERS.contains(&drv)))
        })
        .map(|d| (*d, procs::GpuNodes::of(root, d)))
        .collect();
    if gpus.is_empty() {
        return;
    }
    let scan = procs::holders(root, |p| gpus.iter().any(|(_, n)| n.matches(p)));
    let mut any_in_use = false;
    for (dev, nodes) in &gpus {
        let mut by_process: HashMap<(u32, &str), Vec<String>> = HashMap::new();
        for h in scan.holders.iter().filter(|h| nodes.matches(&h.path)) {
            by_process
                .entry((h.pid, h.comm.as_str()))
                .or_default()
                .push(h.path.display().to_string());
        }
        if by_process.is_empty() {
            continue;
        }
        any_in_use = true;
        let mut list: Vec<((u32, &str), Vec<String>)> = by_process.into_iter().collect();
        list.sort();
        let names: Vec<String> = list
            .iter()
            .map(|((pid, comm), paths)| format!("{comm} (pid {pid}, {})", paths.join(", ")))
            .collect();
        let driver = dev.driver.as_deref().unwrap_or_default();
        findings.push(
            Finding::error(
                dev.address,
                format!(
                    "is bound to {driver} and in use by {}: unbinding it would hang or fail",
                    names.join(", ")
                ),
            )
            .fix("stop those programs (the display manager, nvidia-persistenced, ...) or enable [takeover], which stops the host display for the VM"),
        );
    }
    if !any_in_use && scan.unreadable > 0 {
        findings.push(Finding::info(
            "gpu",
            format!(
                "could not read the open files of {} processes: whether the GPU is in use was checked only partly (run as root for a full check)",
                scan.unreadable
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Severity;
    use crate::testing::machines::{ids::BOCHS_VGA, NVIDIA_GPU as GPU, NVME};
    use crate::testing::{Machine, Pci, TestHost};

    /// The NVIDIA desktop: the RTX 3050 (`nvidia`, not the boot GPU, FLR)
    /// and a Samsung NVMe (FLR) with two partitions.
    fn host() -> TestHost {
        Machine::NvidiaDesktopWithNvme.build()
    }

    /// The desktop plus `gpu` with a bus reset and a DRM node `card0`.
    fn with_display_gpu(gpu: Pci) -> TestHost {
        let addr = gpu.address().to_string();
        host().pci(gpu.reset_method("bus")).drm(&addr, &["card0"])
    }

    fn planned(root: &HostRoot, addr: &str) -> PlannedHostdev {
        super::super::hostdev::fake::planned(root, addr, false)
    }

    fn run_as(host: &TestHost, addrs: &[&str], vm: &str, takeover: bool) -> Vec<Finding> {
        let root = host.root();
        let hostdevs: Vec<PlannedHostdev> = addrs.iter().map(|a| planned(&root, a)).collect();
        let ctx = SafetyContext {
            root: &root,
            run_base: Path::new("/run/vmrun"),
            vm_name: vm,
            takeover,
        };
        let mut findings = vec![];
        check(&hostdevs, &ctx, &mut findings);
        findings
    }

    fn run(host: &TestHost, addrs: &[&str], takeover: bool) -> Vec<Finding> {
        run_as(host, addrs, "win11", takeover)
    }

    fn errors(findings: &[Finding]) -> Vec<&Finding> {
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect()
    }

    #[test]
    fn idle_devices_pass() {
        assert_eq!(run(&host(), &[GPU, NVME], false), []);
    }

    #[test]
    fn mounted_nvme_is_refused() {
        let host = host().file("/proc/self/mounts", "/dev/nvme0n1p2 /home ext4 rw 0 0\n");
        let findings = run(&host, &[NVME], false);
        let errs = errors(&findings);
        assert_eq!(errs.len(), 1, "{findings:?}");
        assert_eq!(errs[0].subject, NVME);
        assert!(
            errs[0]
                .message
                .contains("/dev/nvme0n1p2 is mounted at /home"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn swap_on_nvme_is_refused() {
        let host = host().file(
            "/proc/swaps",
            "Filename Type Size Used Priority\n/dev/nvme0n1p1 partition 100 0 -2\n",
        );
        let errs = run(&host, &[NVME], false);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("/dev/nvme0n1p1 is active swap"));
    }

    #[test]
    fn an_idle_boot_vga_is_a_warning_without_takeover_and_silent_with_it() {
        let host = host().attr(GPU, "boot_vga", "1");
        let findings = run(&host, &[GPU], false);
        assert_eq!(errors(&findings).len(), 0);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(findings[0].message.contains("boot VGA"));
        assert!(findings[0].fix.as_deref().unwrap().contains("[takeover]"));
        assert_eq!(run(&host, &[GPU], true), []);
    }

    #[test]
    fn device_held_by_another_vm_is_refused() {
        let host = host().held_by("games", &[GPU]);
        let findings = run(&host, &[GPU], false);
        assert_eq!(errors(&findings).len(), 1);
        assert_eq!(findings[0].message, "is held by VM games");
        // Its own devices file (a restart of the same VM) is no conflict.
        assert_eq!(run_as(&host, &[GPU], "games", false), []);
    }

    #[test]
    fn nvidia_in_use_names_the_process() {
        let host = host()
            .drm(GPU, &["card1", "renderD129"])
            .file(
                &format!("/proc/driver/nvidia/gpus/{GPU}/information"),
                "Model: \t\t NVIDIA GeForce RTX 3050\nDevice Minor: \t 0\n",
            )
            .process(1234, "Xorg", &["/dev/nvidia0", "/dev/nvidiactl"])
            .process(777, "nvidia-persistenced", &["/dev/nvidia0"])
            .process(555, "kwin_wayland", &["/dev/dri/renderD129"])
            .process(9, "other", &["/dev/nvidia1", "/dev/dri/card0"]);
        let findings = run(&host, &[GPU], false);
        let errs = errors(&findings);
        assert_eq!(errs.len(), 1, "{findings:?}");
        let msg = &errs[0].message;
        assert!(
            msg.starts_with("is bound to nvidia and in use by "),
            "{msg}"
        );
        assert!(msg.contains("Xorg (pid 1234, /dev/nvidia0)"), "{msg}");
        assert!(msg.contains("nvidia-persistenced (pid 777"), "{msg}");
        assert!(
            msg.contains("kwin_wayland (pid 555, /dev/dri/renderD129)"),
            "{msg}"
        );
        assert!(!msg.contains("other"), "{msg}");
        // Takeover stops the holders itself.
        assert_eq!(run(&host, &[GPU], true), []);
    }

    #[test]
    fn nvidia_without_proc_info_matches_any_nvidia_node() {
        let host =
            host()
                .process(1234, "Xorg", &["/dev/nvidia3"])
                .process(5, "x", &["/dev/nvidiactl"]);
        let errs = run(&host, &[GPU], false);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("Xorg (pid 1234"));
        assert!(!errs[0].message.contains("(pid 5"));
    }

    #[test]
    fn any_display_driver_in_use_names_the_holder() {
        let host = with_display_gpu(Pci::vga("00:0a.0", BOCHS_VGA).driver("bochs-drm").group(3))
            .process(77, "sddm", &["/dev/dri/card0"]);
        let findings = run(&host, &["0000:00:0a.0"], false);
        let errs = errors(&findings);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .message
            .contains("bochs-drm and in use by sddm (pid 77"));
    }

    #[test]
    fn bound_but_idle_amdgpu_passes() {
        let rx_6800 = Pci::vga("03:00.0", (AMD, 0x73bf))
            .driver("amdgpu")
            .group(14);
        let host = with_display_gpu(rx_6800).process(1, "systemd", &["/dev/null"]);
        assert_eq!(run(&host, &["0000:03:00.0"], false), []);
    }

    #[test]
    fn no_reset_method_warns_and_suggests_vendor_reset_for_polaris() {
        let polaris = Pci::vga("03:00.0", (AMD, 0x67df))
            .group(14)
            .reset_method("");
        let findings = run(&host().pci(polaris), &["0000:03:00.0"], false);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(findings[0].message.contains("no reset mechanism"));
        assert!(findings[0].fix.as_deref().unwrap().contains("vendor-reset"));
    }

    #[test]
    fn no_reset_on_other_devices_warns_without_vendor_reset() {
        // No reset_method file and no reset file: an old kernel with nothing.
        let gtx_1080 = Pci::vga("04:00.0", (0x10de, 0x1b80)).group(16);
        let findings = run(&host().pci(gtx_1080), &["0000:04:00.0"], false);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(!findings[0].fix.as_deref().unwrap().contains("vendor-reset"));
    }

    #[test]
    fn vfio_pci_ids_on_the_command_line_warns() {
        let host = host().file(
            "/proc/cmdline",
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on vfio-pci.ids=10de:2507,10de:228e quiet\n",
        );
        let findings = run(&host, &[GPU, NVME], false);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].subject, GPU);
        assert!(findings[0].message.contains("vfio-pci.ids=10de:2507"));
    }
}
