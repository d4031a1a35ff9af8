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
pub fn read_device(root: &HostRoot, address: PciAddress) -> Option<PciDevice> {
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
    })
}

/// Every PCI device of the host, in address order.
pub fn list_devices(root: &HostRoot) -> Vec<PciDevice> {
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
pub fn iommu_enabled(root: &HostRoot) -> bool {
    fs::read_dir(root.path("/sys/kernel/iommu_groups"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A minimal fake sysfs for read-side unit tests.
    use super::*;
    use std::os::unix::fs::symlink;

    pub fn add_device(
        root: &Path,
        addr: &str,
        ids: (u16, u16),
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
    ) {
        let dev = root.join("sys/bus/pci/devices").join(addr);
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), format!("0x{:04x}\n", ids.0)).unwrap();
        fs::write(dev.join("device"), format!("0x{:04x}\n", ids.1)).unwrap();
        fs::write(dev.join("class"), format!("0x{class:06x}\n")).unwrap();
        fs::write(dev.join("driver_override"), "(null)\n").unwrap();
        if let Some(drv) = driver {
            let d = root.join("sys/bus/pci/drivers").join(drv);
            fs::create_dir_all(&d).unwrap();
            symlink(&d, dev.join("driver")).unwrap();
        }
        if let Some(g) = group {
            let gdir = root.join("sys/kernel/iommu_groups").join(g.to_string());
            fs::create_dir_all(gdir.join("devices")).unwrap();
            symlink(&gdir, dev.join("iommu_group")).unwrap();
            symlink(&dev, gdir.join("devices").join(addr)).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bound_gpu() {
        let dir = tempfile::tempdir().unwrap();
        fake::add_device(
            dir.path(),
            "0000:01:00.0",
            (0x10de, 0x25a1),
            0x030000,
            Some("nvidia"),
            Some(12),
        );
        let root = HostRoot::new(dir.path());
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
        let dir = tempfile::tempdir().unwrap();
        fake::add_device(dir.path(), "0000:02:00.0", (1, 2), 0x010802, None, None);
        fake::add_device(dir.path(), "0000:01:00.0", (1, 3), 0x010802, None, None);
        let root = HostRoot::new(dir.path());
        assert!(read_device(&root, "03:00.0".parse().unwrap()).is_none());
        let list = list_devices(&root);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].address.to_string(), "0000:01:00.0");
        assert!(!iommu_enabled(&root));
    }
}
