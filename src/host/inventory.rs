//! What `vmrun devices` shows: every PCI function by IOMMU group, named from
//! pci.ids, with its driver, reset support and the VM holding it. Plain data;
//! `cli::devices` renders it as a table or JSON (the field names are stable).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use super::pci::{self, PciDevice};
use super::pci_ids::PciIds;
use super::{held, iommu, HostRoot};
use crate::config::PciAddress;

/// The host's devices, grouped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Inventory {
    /// Whether the kernel made IOMMU groups; without them nothing can be
    /// passed through.
    pub iommu: bool,
    /// By group number; with the IOMMU off, one entry with `group: null`.
    pub groups: Vec<Group>,
    /// Devices left out because their groups hold only bridges and chipset
    /// functions (0 with `--all`).
    pub hidden_devices: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Group {
    pub group: Option<u32>,
    pub devices: Vec<Entry>,
}

/// How a device stands out in the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// A display controller (class 0x03).
    Gpu,
    /// Another function of a GPU's slot (its HDMI audio, USB-C, ...): goes
    /// to the VM with the GPU.
    GpuFunction,
    /// A bridge (class 0x06): never passed, never in the way.
    Bridge,
    Device,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Entry {
    pub address: PciAddress,
    /// `CCSSPP`, hex.
    pub class: String,
    pub class_name: &'static str,
    pub role: Role,
    /// `vvvv`, hex.
    pub vendor_id: String,
    /// `dddd`, hex.
    pub device_id: String,
    /// From pci.ids; `null` when it lacks them (or the host has none).
    pub vendor_name: Option<String>,
    pub device_name: Option<String>,
    /// `vvvv:dddd`, hex.
    pub subsystem_id: Option<String>,
    pub subsystem_name: Option<String>,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    /// `null` for devices that are not VGA-class.
    pub boot_vga: Option<bool>,
    /// `null` when the kernel has no `reset_method` file.
    pub reset_method: Option<Vec<String>>,
    pub can_reset: bool,
    /// The VM whose run dir names this device.
    pub held_by: Option<String>,
}

impl Entry {
    /// `Vendor Device` from pci.ids, with hex for what it lacks.
    pub(crate) fn name(&self) -> String {
        format!(
            "{} {}",
            self.vendor_name.as_deref().unwrap_or(&self.vendor_id),
            self.device_name
                .clone()
                .unwrap_or_else(|| format!("Device {}", self.device_id))
        )
    }
}

/// Whether a device could be worth giving a VM: not a bridge, SMBus,
/// memory controller, system peripheral (IOMMU, RTC), processor or signal
/// processing (thermal) function.
pub(crate) fn worth_passing(dev: &PciDevice) -> bool {
    let base = dev.class >> 16;
    !(matches!(base, 0x05 | 0x06 | 0x08 | 0x0b | 0x11) || dev.class >> 8 == 0x0c05)
}

/// Reads the host's devices. `run_base` is where VM run dirs live
/// (`DirsEnv::run_base`); without `all`, groups with nothing worth passing
/// are left out.
pub(crate) fn inventory(root: &HostRoot, run_base: &Path, all: bool) -> Inventory {
    let devices = pci::list_devices(root);
    let vendors: BTreeSet<u16> = devices.iter().map(|d| d.vendor).collect();
    let ids = PciIds::load(root, &vendors);
    let held = held::held_by(root, run_base);
    let gpu_slots: BTreeSet<(u16, u8, u8)> = devices
        .iter()
        .filter(|d| d.is_display())
        .map(|d| d.address.slot_key())
        .collect();
    let by_address: HashMap<PciAddress, &PciDevice> =
        devices.iter().map(|d| (d.address, d)).collect();

    let groups = iommu::groups(root);
    let iommu = !groups.is_empty();
    let raw: Vec<(Option<u32>, Vec<&PciDevice>)> = if iommu {
        groups
            .into_iter()
            .map(|(g, members)| {
                let devs = members.iter().filter_map(|a| by_address.get(a).copied());
                (Some(g), devs.collect())
            })
            .collect()
    } else {
        vec![(None, devices.iter().collect())]
    };

    let mut hidden_devices = 0;
    let mut out = Vec::new();
    for (group, mut devs) in raw {
        if !all {
            if iommu && !devs.iter().any(|d| worth_passing(d)) {
                hidden_devices += devs.len();
                continue;
            }
            if !iommu {
                let before = devs.len();
                devs.retain(|d| worth_passing(d));
                hidden_devices += before - devs.len();
            }
        }
        let devices = devs
            .into_iter()
            .map(|d| entry(d, &ids, &gpu_slots, &held))
            .collect();
        out.push(Group { group, devices });
    }
    Inventory {
        iommu,
        groups: out,
        hidden_devices,
    }
}

fn entry(
    d: &PciDevice,
    ids: &PciIds,
    gpu_slots: &BTreeSet<(u16, u8, u8)>,
    held: &HashMap<PciAddress, String>,
) -> Entry {
    let role = if d.is_display() {
        Role::Gpu
    } else if gpu_slots.contains(&d.address.slot_key()) {
        Role::GpuFunction
    } else if d.class >> 16 == 0x06 {
        Role::Bridge
    } else {
        Role::Device
    };
    Entry {
        address: d.address,
        class: format!("{:06x}", d.class),
        class_name: pci::class_name(d.class),
        role,
        vendor_id: format!("{:04x}", d.vendor),
        device_id: format!("{:04x}", d.device),
        vendor_name: ids.vendor(d.vendor).map(str::to_string),
        device_name: ids.device(d.vendor, d.device).map(str::to_string),
        subsystem_id: d.subsystem.map(|(v, s)| format!("{v:04x}:{s:04x}")),
        subsystem_name: d
            .subsystem
            .and_then(|s| ids.subsystem(d.vendor, d.device, s))
            .map(str::to_string),
        driver: d.driver.clone(),
        driver_override: d.driver_override.clone(),
        boot_vga: d.boot_vga,
        reset_method: d.reset_method.clone(),
        can_reset: d.can_reset(),
        held_by: held.get(&d.address).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Class, Machine, Pci, TestHost};

    /// The NVIDIA desktop with pci.ids naming the GPU only, its audio
    /// function held by VM win11.
    fn host() -> TestHost {
        Machine::NvidiaDesktop
            .build()
            .pci_ids("10de  NVIDIA Corporation\n\t2507  GA106 [GeForce RTX 3050]\n")
            .held_by("win11", &["01:00.1"])
    }

    #[test]
    fn chipset_only_groups_are_hidden_unless_all() {
        let host = host();
        let root = host.root();
        let inv = inventory(&root, Path::new("/run/vmrun"), false);
        assert!(inv.iommu);
        let groups: Vec<Option<u32>> = inv.groups.iter().map(|g| g.group).collect();
        assert_eq!(groups, [Some(12)]);
        assert_eq!(inv.hidden_devices, 2);
        let inv = inventory(&root, Path::new("/run/vmrun"), true);
        assert_eq!(inv.groups.len(), 2);
        assert_eq!(inv.hidden_devices, 0);
    }

    #[test]
    fn gpu_and_sibling_stand_out_with_names_and_holder() {
        let inv = inventory(&host().root(), Path::new("/run/vmrun"), false);
        let devs = &inv.groups[0].devices;
        let roles: Vec<Role> = devs.iter().map(|d| d.role).collect();
        assert_eq!(roles, [Role::Bridge, Role::Gpu, Role::GpuFunction]);
        assert_eq!(
            devs[1].name(),
            "NVIDIA Corporation GA106 [GeForce RTX 3050]"
        );
        assert_eq!(devs[2].name(), "NVIDIA Corporation Device 228e");
        assert_eq!(devs[2].held_by.as_deref(), Some("win11"));
        assert_eq!(devs[1].held_by, None);
    }

    #[test]
    fn iommu_off_lists_devices_without_groups() {
        let host = TestHost::new()
            .pci(Pci::vga("01:00.0", (1, 2)))
            .pci(Pci::new("00:00.0", (1, 3), Class::HostBridge));
        let inv = inventory(&host.root(), Path::new("/run/vmrun"), false);
        assert!(!inv.iommu);
        assert_eq!(inv.groups.len(), 1);
        assert_eq!(inv.groups[0].group, None);
        assert_eq!(inv.groups[0].devices.len(), 1);
        assert_eq!(inv.hidden_devices, 1);
    }
}
