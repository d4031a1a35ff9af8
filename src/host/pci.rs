//! PCI devices as sysfs shows them (Documentation/ABI/testing/sysfs-bus-pci).
//! Read-only: binding lives in `prepare`.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::HostRoot;
use crate::config::PciAddress;

/// One PCI function's identity and current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor: u16,
    pub device: u16,
    /// `0xCCSSPP`: base class, subclass, programming interface.
    pub class: u32,
    /// The bound driver's name (`driver` symlink), `None` when unbound.
    pub driver: Option<String>,
    /// `driver_override`, `None` when the kernel reports `(null)`.
    pub driver_override: Option<String>,
    /// `None` when the IOMMU is off (no `iommu_group` link).
    pub iommu_group: Option<u32>,
    /// `boot_vga` exists only for VGA-class devices.
    pub boot_vga: Option<bool>,
    /// `subsystem_vendor`, `subsystem_device`: the board maker's ids.
    pub subsystem: Option<(u16, u16)>,
    /// `reset_method` (Linux 5.15+): the enabled methods in order, e.g.
    /// `["flr", "bus"]`; empty when reset is disabled; `None` when the file
    /// is absent (older kernel, or no method at all).
    pub reset_method: Option<Vec<String>>,
    /// Whether the `reset` file exists: "only if some reset method is
    /// available" (sysfs-bus-pci), the answer kernels before 5.15 give.
    pub has_reset: bool,
}

impl PciDevice {
    /// VGA-compatible controller (class 0x0300): what `x-vga=on` needs.
    pub fn is_vga(&self) -> bool {
        self.class >> 8 == 0x0300
    }

    /// Any display controller (base class 0x03).
    pub fn is_display(&self) -> bool {
        self.class >> 16 == 0x03
    }

    /// PCI-to-PCI bridge (0x0604): may share a group with vfio devices.
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }

    /// Whether the kernel can reset this function between two VM starts.
    pub fn can_reset(&self) -> bool {
        match &self.reset_method {
            Some(methods) => !methods.is_empty(),
            None => self.has_reset,
        }
    }
}

/// A readable name for common classes (pci.ids' `C` section, abridged).
pub(crate) fn class_name(class: u32) -> &'static str {
    match class >> 8 {
        0x0100 => "SCSI storage controller",
        0x0101 => "IDE interface",
        0x0104 => "RAID bus controller",
        0x0106 => "SATA controller",
        0x0107 => "Serial Attached SCSI controller",
        0x0108 => "Non-Volatile memory controller",
        0x0200 => "Ethernet controller",
        0x0280 => "Network controller",
        0x0300 => "VGA compatible controller",
        0x0302 => "3D controller",
        0x0380 => "Display controller",
        0x0401 => "Multimedia audio controller",
        0x0403 => "Audio device",
        0x0500 => "RAM memory",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0700 => "Serial controller",
        0x0806 => "IOMMU",
        0x0880 => "System peripheral",
        0x0c00 => "FireWire (IEEE 1394)",
        0x0c03 => "USB controller",
        0x0c05 => "SMBus",
        0x0c80 => "Serial bus controller",
        0x0d11 => "Bluetooth",
        0x0d80 => "Wireless controller",
        0x1180 => "Signal processing controller",
        _ => match class >> 16 {
            0x01 => "Mass storage controller",
            0x02 => "Network controller",
            0x03 => "Display controller",
            0x04 => "Multimedia controller",
            0x05 => "Memory controller",
            0x06 => "Bridge",
            0x07 => "Communication controller",
            0x08 => "Generic system peripheral",
            0x09 => "Input device controller",
            0x0b => "Processor",
            0x0c => "Serial bus controller",
            0x0d => "Wireless controller",
            0x10 => "Encryption controller",
            0x11 => "Signal processing controller",
            0x12 => "Processing accelerators",
            _ => "Unclassified device",
        },
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_hex(path: &Path) -> Option<u32> {
    let text = read_trimmed(path)?;
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Reads one device; `None` when the host has no such device.
pub(crate) fn read_device(root: &HostRoot, address: PciAddress) -> Option<PciDevice> {
    let dir = root.pci_device(&address);
    Some(PciDevice {
        address,
        vendor: read_hex(&dir.join("vendor"))? as u16,
        device: read_hex(&dir.join("device"))? as u16,
        class: read_hex(&dir.join("class")).unwrap_or(0),
        driver: link_name(&dir.join("driver")),
        driver_override: read_trimmed(&dir.join("driver_override"))
            .filter(|s| s != "(null)" && !s.is_empty()),
        iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        boot_vga: read_trimmed(&dir.join("boot_vga")).map(|s| s == "1"),
        subsystem: read_hex(&dir.join("subsystem_vendor"))
            .zip(read_hex(&dir.join("subsystem_device")))
            .map(|(v, d)| (v as u16, d as u16)),
        reset_method: read_trimmed(&dir.join("reset_method"))
            .map(|s| s.split_whitespace().map(str::to_string).collect()),
        has_reset: dir.join("reset").exists(),
    })
}

/// Every PCI device of the host, in address order.
pub(crate) fn list_devices(root: &HostRoot) -> Vec<PciDevice> {
    let Ok(entries) = fs::read_dir(root.path("/sys/bus/pci/devices")) else {
        return Vec::new();
    };
    let mut devices: Vec<PciDevice> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|addr| read_device(root, addr))
        .collect();
    devices.sort_by_key(|d| d.address);
    devices
}

/// Whether the kernel has IOMMU groups (the IOMMU is on).
pub(crate) fn iommu_enabled(root: &HostRoot) -> bool {
    fs::read_dir(root.path("/sys/kernel/iommu_groups"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::ids::RTX_3050_MOBILE;
    use crate::testing::{Class, Pci, TestHost};

    #[test]
    fn reads_a_bound_gpu() {
        let host = TestHost::new().pci(
            Pci::vga("01:00.0", RTX_3050_MOBILE)
                .driver("nvidia")
                .group(12),
        );
        let root = host.root();
        let dev = read_device(&root, "01:00.0".parse().unwrap()).unwrap();
        assert_eq!((dev.vendor, dev.device), (0x10de, 0x25a1));
        assert!(dev.is_vga() && dev.is_display() && !dev.is_bridge());
        assert_eq!(dev.driver.as_deref(), Some("nvidia"));
        assert_eq!(dev.driver_override, None);
        assert_eq!(dev.iommu_group, Some(12));
        assert!(iommu_enabled(&root));
    }

    #[test]
    fn missing_device_is_none_and_listing_is_sorted() {
        let host = TestHost::new()
            .pci(Pci::new("02:00.0", (1, 2), Class::Nvme))
            .pci(Pci::new("01:00.0", (1, 3), Class::Nvme));
        let root = host.root();
        assert!(read_device(&root, "03:00.0".parse().unwrap()).is_none());
        let list = list_devices(&root);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].address.to_string(), "0000:01:00.0");
        assert!(!iommu_enabled(&root));
    }
}
