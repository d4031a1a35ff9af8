//! `vmrun host kernel-args`: the kernel command line that isolates a VM's
//! devices at boot, for GPUs that can't be unbound at runtime and for the
//! dual-mode setup (a second boot entry with these arguments, beside the
//! normal one where the GPU stays on its driver).

use std::collections::BTreeSet;

use crate::config::HugePageSize;
use crate::config::VmConfig;
use crate::host::cpu::{self, CpuVendor};
use crate::host::pci::{self, PciDevice};
use crate::host::HostRoot;

/// The arguments, and why each is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelArgs {
    pub args: Vec<String>,
    pub notes: Vec<String>,
}

impl KernelArgs {
    pub(crate) fn line(&self) -> String {
        self.args.join(" ")
    }

    fn push(&mut self, arg: String, note: impl Into<String>) {
        self.args.push(arg);
        self.notes.push(note.into());
    }
}

/// Host drivers of a vendor's GPUs, in the order they are blacklisted.
fn vendor_gpu_drivers(vendor: u16) -> &'static [&'static str] {
    match vendor {
        0x10de => &["nouveau", "nvidia", "nvidia_drm", "nvidia_modeset"],
        0x1002 => &["amdgpu", "radeon"],
        _ => &[],
    }
}

/// The module behind a PCI driver, for `modprobe.blacklist=` (which takes
/// module names: driver `bochs-drm` is module `bochs`): the driver's
/// `module` link in sysfs, else the driver name with `-` as `_`, as
/// modprobe treats them alike.
fn module_of(root: &HostRoot, driver: &str) -> String {
    std::fs::read_link(root.path(format!("/sys/bus/pci/drivers/{driver}/module")))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| driver.replace('-', "_"))
}

/// The arguments for `devices` (the VM's hostdevs, empty without a VM).
pub(crate) fn kernel_args(
    root: &HostRoot,
    devices: &[PciDevice],
    vm: Option<&VmConfig>,
) -> KernelArgs {
    let mut out = KernelArgs {
        args: Vec::new(),
        notes: Vec::new(),
    };
    match cpu::cpu_info(root).map(|c| c.vendor) {
        Some(CpuVendor::Amd) => out.push(
            "amd_iommu=on".into(),
            "amd_iommu=on: the AMD IOMMU (on by default; explicit is safer)",
        ),
        Some(CpuVendor::Intel) => out.push(
            "intel_iommu=on".into(),
            "intel_iommu=on: the Intel IOMMU (VT-d), off by default on many kernels",
        ),
        _ => out.push(
            "intel_iommu=on".into(),
            "intel_iommu=on: the CPU vendor is unknown; use amd_iommu=on on AMD",
        ),
    }
    out.push(
        "iommu=pt".into(),
        "iommu=pt: host devices skip IOMMU translation (faster host I/O)",
    );
    if devices.is_empty() {
        return out;
    }
    let ids: BTreeSet<(u16, u16)> = devices.iter().map(|d| (d.vendor, d.device)).collect();
    let list: Vec<String> = ids
        .iter()
        .map(|(v, d)| format!("{v:04x}:{d:04x}"))
        .collect();
    let passed: BTreeSet<_> = devices.iter().map(|d| d.address).collect();
    let others: Vec<PciDevice> = pci::list_devices(root)
        .into_iter()
        .filter(|d| !passed.contains(&d.address))
        .collect();
    out.push(
        format!("vfio-pci.ids={}", list.join(",")),
        "vfio-pci.ids=: vfio-pci claims these ids at boot, before any host driver",
    );
    for d in others
        .iter()
        .filter(|d| ids.contains(&(d.vendor, d.device)))
    {
        out.notes.push(format!(
            "warning: {} has the same ids {:04x}:{:04x} and will go to vfio-pci at boot too",
            d.address, d.vendor, d.device
        ));
    }
    out.push(
        "rd.driver.pre=vfio-pci".into(),
        "rd.driver.pre=vfio-pci: the initramfs loads vfio-pci first (dracut; `vmrun host initramfs` covers the others)",
    );
    // A driver is blacklisted only when no device the host keeps uses it,
    // and a vendor's GPU drivers only when the host keeps no GPU of that
    // vendor: amdgpu (or radeon) must stay for an AMD host GPU.
    let kept: BTreeSet<&str> = others.iter().filter_map(|d| d.driver.as_deref()).collect();
    let kept_gpu_vendors: BTreeSet<u16> = others
        .iter()
        .filter(|d| d.is_display())
        .map(|d| d.vendor)
        .collect();
    let mut blacklist: Vec<String> = Vec::new();
    for d in devices.iter().filter(|d| d.is_display()) {
        let bound = d.driver.as_deref().into_iter();
        let vendor = match kept_gpu_vendors.contains(&d.vendor) {
            true => &[][..],
            false => vendor_gpu_drivers(d.vendor),
        };
        for drv in bound.chain(vendor.iter().copied()) {
            let module = module_of(root, drv);
            if drv != "vfio-pci" && !kept.contains(drv) && !blacklist.contains(&module) {
                blacklist.push(module);
            }
        }
    }
    if !blacklist.is_empty() {
        let b = blacklist.join(",");
        out.push(
            format!("modprobe.blacklist={b}"),
            "modprobe.blacklist=: the GPU's host drivers never load",
        );
        out.push(
            format!("rd.driver.blacklist={b}"),
            "rd.driver.blacklist=: nor from the initramfs",
        );
    }
    if devices.iter().any(|d| d.boot_vga == Some(true)) {
        out.push(
            "video=efifb:off".into(),
            "video=efifb:off: the firmware framebuffer stays off the boot GPU the VM takes",
        );
    }
    if let Some(vm) = vm.filter(|vm| vm.hugepages == Some(HugePageSize::Size1G)) {
        let pages = vm
            .memory
            .bytes()
            .div_ceil(HugePageSize::Size1G.size().bytes());
        out.push(
            "hugepagesz=1G".into(),
            "hugepagesz=1G hugepages=N: 1 GiB pages reserved before memory fragments",
        );
        out.args.push(format!("hugepages={pages}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Machine, TestHost};

    /// The arguments for a VM that gets the functions at `addrs` of `host`.
    fn args_for(host: &TestHost, addrs: &[&str], vm: Option<&VmConfig>) -> KernelArgs {
        let root = host.root();
        let devices: Vec<PciDevice> = addrs
            .iter()
            .map(|a| pci::read_device(&root, a.parse().unwrap()).unwrap())
            .collect();
        kernel_args(&root, &devices, vm)
    }

    #[test]
    fn without_a_vm_only_the_iommu_is_turned_on() {
        let host = Machine::AmdTwoGpus.build();
        let args = args_for(&host, &[], None);
        assert_eq!(args.line(), "amd_iommu=on iommu=pt");
    }

    #[test]
    fn the_laptop_dgpu_gets_ids_and_nvidia_blacklists_but_keeps_the_efifb() {
        let host = Machine::IntelNvidiaLaptop.build();
        let args = args_for(&host, &["0000:01:00.0", "0000:01:00.1"], None);
        assert_eq!(
            args.args,
            [
                "intel_iommu=on",
                "iommu=pt",
                "vfio-pci.ids=10de:2291,10de:25a1",
                "rd.driver.pre=vfio-pci",
                "modprobe.blacklist=nvidia,nouveau,nvidia_drm,nvidia_modeset",
                "rd.driver.blacklist=nvidia,nouveau,nvidia_drm,nvidia_modeset",
            ]
        );
    }

    #[test]
    fn a_driver_is_blacklisted_by_its_module_name() {
        let host = Machine::IntelNvidiaLaptop
            .build()
            .module("bochs", &[])
            .driver_module("nvidia", "bochs");
        let args = args_for(&host, &["0000:01:00.0"], None);
        assert!(
            args.line().contains("modprobe.blacklist=bochs,nouveau,"),
            "{}",
            args.line()
        );
    }

    #[test]
    fn amdgpu_is_not_blacklisted_while_the_host_gpu_needs_it() {
        let host = Machine::AmdTwoGpus.build();
        let args = args_for(&host, &["0000:0b:00.0", "0000:0b:00.1"], None);
        assert!(!args.line().contains("blacklist"), "{}", args.line());
        assert!(args.line().contains("vfio-pci.ids=1002:67df,1002:aaf0"));
    }

    #[test]
    fn the_single_boot_gpu_gets_efifb_off_and_1g_pages() {
        let host = Machine::SingleGpu.build();
        let vm = testing::vm("[memory]\nsize = \"16G\"\nhugepages = \"1G\"\n");
        let args = args_for(&host, &["0000:01:00.0", "0000:01:00.1"], Some(&vm));
        let line = args.line();
        assert!(line.contains("video=efifb:off"), "{line}");
        assert!(line.ends_with("hugepagesz=1G hugepages=16"), "{line}");
    }
}
