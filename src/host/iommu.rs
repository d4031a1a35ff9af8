//! IOMMU groups (`/sys/kernel/iommu_groups/N/devices/`): the unit the kernel
//! hands to a VM, all of it or nothing (Documentation/driver-api/vfio.rst).

use std::collections::BTreeMap;
use std::fs;

use super::HostRoot;
use crate::config::PciAddress;

/// The devices of group `group`, in address order.
pub(crate) fn group_members(root: &HostRoot, group: u32) -> Vec<PciAddress> {
    let dir = root.path(format!("/sys/kernel/iommu_groups/{group}/devices"));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut members: Vec<PciAddress> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    members.sort();
    members
}

/// Every group and its devices; empty when the IOMMU is off.
pub(crate) fn groups(root: &HostRoot) -> BTreeMap<u32, Vec<PciAddress>> {
    let Ok(entries) = fs::read_dir(root.path("/sys/kernel/iommu_groups")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(|g| (g, group_members(root, g)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Class, Pci, TestHost};

    #[test]
    fn groups_list_their_members_in_order() {
        let host = TestHost::new()
            .pci(Pci::audio("01:00.1", (1, 2)).group(12))
            .pci(Pci::vga("01:00.0", (1, 3)).group(12))
            .pci(Pci::new("00:01.0", (1, 4), Class::RootPort).group(1));
        let root = host.root();
        let groups = groups(&root);
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), [1, 12]);
        assert_eq!(
            groups[&12]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["0000:01:00.0", "0000:01:00.1"]
        );
        assert!(group_members(&root, 99).is_empty());
    }
}
