//! Block devices behind a PCI device, and whether the host is using them:
//! handing an NVMe or SATA controller to a VM while a filesystem on it is
//! mounted (or swap is on it) takes the disk away from a running kernel.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::HostRoot;
use crate::config::PciAddress;

/// One block device: a disk, a partition, or a dm/md device stacked on one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BlockDev {
    /// The kernel name: `nvme0n1`, `nvme0n1p2`, `dm-0`.
    pub name: String,
    /// A device-mapper device's name (`/dev/mapper/NAME`).
    pub dm_name: Option<String>,
}

impl BlockDev {
    /// Whether `/dev/SOURCE` (relative to `/dev`) names this device.
    fn is_named(&self, source: &str) -> bool {
        source == self.name
            || self
                .dm_name
                .as_deref()
                .is_some_and(|n| source.strip_prefix("mapper/") == Some(n))
    }
}

/// A mounted filesystem or active swap using a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Use {
    pub device: String,
    /// The mount point, or `swap`.
    pub what: String,
}

/// The block devices a PCI device carries: each `/sys/block/X` whose
/// `device` link resolves under the PCI device's sysfs directory, its
/// partitions (`/sys/block/X/X1`), and what is stacked on them (`holders/`).
pub(crate) fn block_devices_under(root: &HostRoot, address: PciAddress) -> Vec<BlockDev> {
    let Ok(pci_dir) = fs::canonicalize(root.pci_device(&address)) else {
        return Vec::new();
    };
    let Ok(disks) = fs::read_dir(root.path("/sys/block")) else {
        return Vec::new();
    };
    let mut found = BTreeSet::new();
    for disk in disks.flatten() {
        let dir = disk.path();
        let under = fs::canonicalize(dir.join("device")).is_ok_and(|d| d.starts_with(&pci_dir));
        if !under {
            continue;
        }
        let name = disk.file_name().to_string_lossy().into_owned();
        let mut dirs = vec![dir.clone()];
        for part in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let is_partition = part.file_name().to_string_lossy().starts_with(&name)
                && part.path().join("partition").exists();
            if is_partition {
                dirs.push(part.path());
            }
        }
        for d in dirs {
            collect_with_holders(root, &d, &mut found, 0);
        }
    }
    found.into_iter().collect()
}

fn collect_with_holders(root: &HostRoot, dir: &Path, found: &mut BTreeSet<BlockDev>, depth: u32) {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    // dm and md stacks are a few levels deep at most; the bound only guards
    // against a cycle in a broken tree.
    if depth > 8 {
        return;
    }
    let sys_block = root.path(format!("/sys/block/{name}"));
    let dm_name = fs::read_to_string(sys_block.join("dm/name"))
        .ok()
        .map(|s| s.trim().to_string());
    found.insert(BlockDev { name, dm_name });
    for holder in fs::read_dir(dir.join("holders"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = holder.file_name().to_string_lossy().into_owned();
        collect_with_holders(
            root,
            &root.path(format!("/sys/block/{name}")),
            found,
            depth + 1,
        );
    }
}

/// What of `devices` is mounted (`/proc/self/mounts`) or used as swap
/// (`/proc/swaps`). Unreadable files count as "nothing in use".
pub(crate) fn uses(root: &HostRoot, devices: &[BlockDev]) -> Vec<Use> {
    if devices.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mounts = fs::read_to_string(root.path("/proc/self/mounts")).unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Some(dev) = matching(root, devices, source) {
            out.push(Use {
                device: dev.name.clone(),
                what: unescape(target),
            });
        }
    }
    let swaps = fs::read_to_string(root.path("/proc/swaps")).unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(source) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(dev) = matching(root, devices, source) {
            out.push(Use {
                device: dev.name.clone(),
                what: "swap".into(),
            });
        }
    }
    out
}

/// The device a mount source names, directly (`/dev/nvme0n1p2`,
/// `/dev/mapper/vg-root`) or through a `/dev` symlink (`/dev/disk/by-uuid/..`).
fn matching<'a>(root: &HostRoot, devices: &'a [BlockDev], source: &str) -> Option<&'a BlockDev> {
    let rel = source.strip_prefix("/dev/")?;
    let resolved: Option<PathBuf> = fs::canonicalize(root.path(source))
        .ok()
        .and_then(|p| Some(p.strip_prefix(root.dev()).ok()?.to_path_buf()));
    devices.iter().find(|d| {
        d.is_named(rel)
            || resolved
                .as_deref()
                .and_then(Path::to_str)
                .is_some_and(|r| d.is_named(r))
    })
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::NVME;
    use crate::testing::{Machine, TestHost};

    fn nvme_host() -> TestHost {
        Machine::NvidiaDesktopWithNvme.build()
    }

    /// The uses `host` makes of the block devices behind the NVMe controller.
    fn nvme_uses(host: &TestHost) -> Vec<Use> {
        let root = host.root();
        uses(&root, &block_devices_under(&root, NVME.parse().unwrap()))
    }

    fn names(devs: &[BlockDev]) -> Vec<&str> {
        devs.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn finds_the_disk_and_its_partitions_under_the_controller() {
        let host = nvme_host();
        let root = host.root();
        let devs = block_devices_under(&root, NVME.parse().unwrap());
        assert_eq!(names(&devs), ["nvme0n1", "nvme0n1p1", "nvme0n1p2"]);
        assert!(block_devices_under(&root, "01:00.0".parse().unwrap()).is_empty());
    }

    #[test]
    fn mounted_partition_is_in_use() {
        let host = nvme_host().file(
            "/proc/self/mounts",
            "proc /proc proc rw 0 0\n/dev/nvme0n1p2 /mnt/my\\040data ext4 rw 0 0\n",
        );
        assert_eq!(
            nvme_uses(&host),
            [Use {
                device: "nvme0n1p2".into(),
                what: "/mnt/my data".into()
            }]
        );
    }

    #[test]
    fn swap_partition_is_in_use() {
        let host = nvme_host().file(
            "/proc/swaps",
            "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p1 partition 8388604 0 -2\n",
        );
        assert_eq!(nvme_uses(&host)[0].what, "swap");
    }

    #[test]
    fn lvm_on_a_partition_is_followed_through_holders() {
        let host = nvme_host()
            .device_mapper("dm-0", "vg-root", "nvme0n1/nvme0n1p2")
            .file("/proc/self/mounts", "/dev/mapper/vg-root / ext4 rw 0 0\n");
        let root = host.root();
        let devs = block_devices_under(&root, NVME.parse().unwrap());
        assert!(names(&devs).contains(&"dm-0"));
        assert_eq!(uses(&root, &devs)[0].device, "dm-0");
    }

    #[test]
    fn other_disks_mounts_do_not_count() {
        let host = nvme_host().file("/proc/self/mounts", "/dev/sda1 / ext4 rw 0 0\n");
        assert!(nvme_uses(&host).is_empty());
    }
}
