//! IOMMU group viability, the kernel's rule (Documentation/driver-api/
//! vfio.rst): a group is usable by a VM only when every device in it is
//! bound to a VFIO driver, or unbound ("it's also sufficient to only unbind
//! the device from host drivers"). Bridges are exempt: vfio-pci does not
//! take them, and since 5.19 `pcieport` and `pci-stub` set
//! `driver_managed_dma`, so they coexist with a VFIO user. Checked before
//! anything changes, so a forgotten HDMI audio function is a refusal with
//! the config lines to add, not QEMU's "group N is not viable".

use std::collections::{BTreeMap, BTreeSet};

use super::finding::Finding;
use super::hostdev::PlannedHostdev;
use crate::config::PciAddress;
use crate::host::pci::{self, PciDevice};
use crate::host::pci_ids::PciIds;
use crate::host::{iommu, HostRoot};

/// Drivers whose devices don't stand in a VFIO group's way.
const STUB_DRIVERS: [&str; 2] = ["vfio-pci", "pci-stub"];

/// Whether `dev`, not given to the VM, leaves its group viable.
fn leaves_group_viable(dev: &PciDevice) -> bool {
    match dev.driver.as_deref() {
        None => true,
        Some(d) if STUB_DRIVERS.contains(&d) || d == "pcieport" => true,
        Some(_) => dev.is_bridge(),
    }
}

/// One finding per group whose other members would block the VM.
pub(crate) fn check(hostdevs: &[PlannedHostdev], root: &HostRoot, findings: &mut Vec<Finding>) {
    let passed: BTreeSet<PciAddress> = hostdevs.iter().map(|h| h.address).collect();
    // Group -> the first hostdev in it (the finding's subject).
    let mut groups: BTreeMap<u32, PciAddress> = BTreeMap::new();
    for h in hostdevs {
        if let Some(g) = h.device.as_ref().and_then(|d| d.iommu_group) {
            groups.entry(g).or_insert(h.address);
        }
    }
    for (group, subject) in groups {
        let blocking: Vec<PciDevice> = iommu::group_members(root, group)
            .into_iter()
            .filter(|a| !passed.contains(a))
            .filter_map(|a| pci::read_device(root, a))
            .filter(|d| !leaves_group_viable(d))
            .collect();
        if !blocking.is_empty() {
            findings.push(not_viable(root, group, subject, &blocking));
        }
    }
}

fn not_viable(root: &HostRoot, group: u32, subject: PciAddress, blocking: &[PciDevice]) -> Finding {
    let ids = PciIds::load(root, &blocking.iter().map(|d| d.vendor).collect());
    let describe = |d: &PciDevice| {
        format!(
            "{} [{:04x}:{:04x}]: {} {}",
            d.address,
            d.vendor,
            d.device,
            pci::class_name(d.class),
            ids.describe(d.vendor, d.device)
        )
    };
    let list: Vec<String> = blocking
        .iter()
        .map(|d| {
            format!(
                "{}, bound to {}",
                describe(d),
                d.driver.as_deref().unwrap_or("nothing")
            )
        })
        .collect();
    let lines: Vec<String> = blocking
        .iter()
        .map(|d| {
            format!(
                "[[hostdev]]\naddress = \"{}\"   # {}: {}",
                d.address,
                pci::class_name(d.class),
                ids.describe(d.vendor, d.device)
            )
        })
        .collect();
    Finding::error(
        subject,
        format!(
            "IOMMU group {group} is not viable: a VM gets whole groups, and {} still on a host driver:\n    {}",
            if blocking.len() == 1 { "this other member is" } else { "these other members are" },
            list.join("\n    ")
        ),
    )
    .fix(format!(
        "pass {} too; add to the VM's config:\n{}",
        if blocking.len() == 1 { "it" } else { "them" },
        lines.join("\n\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Severity;
    use crate::testing::machines::NVIDIA_AUDIO;
    use crate::testing::{Class, Machine, Pci, TestHost};

    fn planned(root: &HostRoot, addr: &str) -> PlannedHostdev {
        crate::plan::hostdev::fake::planned(root, addr, false)
    }

    /// The NVIDIA desktop: GPU + HDMI audio in group 12, behind a root port
    /// in the same group (as on boards without ACS on the root port).
    fn gpu_host() -> TestHost {
        Machine::NvidiaDesktop
            .build()
            .pci_ids("10de  NVIDIA Corporation\n\t228e  GA106 High Definition Audio Controller\n")
    }

    fn run(host: &TestHost, addrs: &[&str]) -> Vec<Finding> {
        let root = host.root();
        let hostdevs: Vec<PlannedHostdev> = addrs.iter().map(|a| planned(&root, a)).collect();
        let mut findings = vec![];
        check(&hostdevs, &root, &mut findings);
        findings
    }

    #[test]
    fn missing_audio_sibling_is_refused_naming_it() {
        let findings = run(&gpu_host(), &["01:00.0"]);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.subject, "0000:01:00.0");
        assert!(f.message.contains("IOMMU group 12"));
        assert!(
            f.message.contains("0000:01:00.1 [10de:228e]"),
            "{}",
            f.message
        );
        assert!(f.message.contains("snd_hda_intel"));
        assert!(
            !f.message.contains("0000:00:01.0"),
            "the bridge is no blocker"
        );
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("[[hostdev]]\naddress = \"0000:01:00.1\"   # Audio device: NVIDIA Corporation GA106 High Definition Audio Controller"),
            "{fix}"
        );
    }

    #[test]
    fn whole_group_with_bridge_is_viable() {
        assert!(run(&gpu_host(), &["01:00.0", "01:00.1"]).is_empty());
    }

    #[test]
    fn bridge_on_another_driver_is_viable() {
        // A PCI bridge bound to some other driver is still exempt by class.
        let host = gpu_host().unbind(NVIDIA_AUDIO).pci(
            Pci::new("00:01.1", (0x8086, 1), Class::RootPort)
                .driver("shpchp")
                .group(12),
        );
        assert!(run(&host, &["01:00.0"]).is_empty());
    }

    #[test]
    fn sibling_already_on_vfio_pci_is_viable() {
        let host = gpu_host().bind(NVIDIA_AUDIO, "vfio-pci");
        assert!(run(&host, &["01:00.0"]).is_empty());
        let host = gpu_host().bind(NVIDIA_AUDIO, "pci-stub");
        assert!(run(&host, &["01:00.0"]).is_empty());
    }

    #[test]
    fn unbound_sibling_is_viable() {
        let host = gpu_host().unbind(NVIDIA_AUDIO);
        assert!(run(&host, &["01:00.0"]).is_empty());
    }

    #[test]
    fn one_finding_per_group_even_with_two_hostdevs_in_it() {
        let host = gpu_host().pci(
            Pci::new("01:00.2", (0x10de, 0x1ada), Class::Usb)
                .driver("xhci_hcd")
                .group(12),
        );
        let findings = run(&host, &["01:00.0", "01:00.2"]);
        assert_eq!(findings.len(), 1);
    }
}
