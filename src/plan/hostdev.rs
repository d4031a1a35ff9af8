//! Which host PCI function each `[[hostdev]]` means, and what this host says
//! about it. Group viability and safety refusals build on this.

use serde::Serialize;

use super::finding::Finding;
use crate::config::{Hostdev, HostdevSelector, PciAddress};
use crate::host::pci::{self, PciDevice};
use crate::host::HostRoot;

/// A hostdev resolved to an address on this host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedHostdev {
    pub address: PciAddress,
    pub config: Hostdev,
    /// `multifunction=on` for the guest: the first passed function of a
    /// device whose other functions are passed too.
    pub multifunction: bool,
    /// What sysfs says now; `None` when the device is not on this host.
    pub device: Option<PciDevice>,
}

/// Resolves every hostdev; problems become findings, never errors, so that a
/// dry-run for another machine still prints a command line.
pub(crate) fn plan_hostdevs(
    hostdevs: &[Hostdev],
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Vec<PlannedHostdev> {
    if hostdevs.is_empty() {
        return Vec::new();
    }
    let all = pci::list_devices(root);
    let mut planned: Vec<PlannedHostdev> = hostdevs
        .iter()
        .map(|hd| {
            let address = resolve_address(&hd.selector, &all, findings);
            let device = all.iter().find(|d| d.address == address).cloned();
            if device.is_none() && matches!(hd.selector, HostdevSelector::Address(_)) {
                findings.push(
                    Finding::error(address, "no such PCI device on this host").fix(
                        "`vmrun devices` lists the host's devices; correct [[hostdev]] address",
                    ),
                );
            }
            if let Some(dev) = &device {
                if hd.x_vga && !dev.is_vga() {
                    findings.push(Finding::error(
                        address,
                        format!(
                            "x_vga needs a VGA-class device, this is class {:06x}",
                            dev.class
                        ),
                    ));
                }
            }
            PlannedHostdev {
                address,
                config: hd.clone(),
                multifunction: false,
                device,
            }
        })
        .collect();
    let addresses: Vec<PciAddress> = planned.iter().map(|p| p.address).collect();
    for p in &mut planned {
        let has_siblings = addresses
            .iter()
            .any(|a| a.slot_key() == p.address.slot_key() && *a != p.address);
        p.multifunction = p
            .config
            .multifunction
            .unwrap_or(guest_function(&addresses, p.address) == 0 && has_siblings);
    }
    if !planned.is_empty() && root_has_pci(root) && !pci::iommu_enabled(root) {
        findings.push(
            Finding::error("iommu", "the IOMMU is off: this host has no IOMMU groups")
                .fix("enable VT-d/AMD-Vi in the firmware setup and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD)"),
        );
    }
    planned
}

/// The function a passed host function gets in the guest: the passed
/// functions of one host device are numbered from 0 in host order. A guest
/// scans a device's other functions only when function 0 exists (PCI: a
/// device without function 0 is absent), so a lone `0e:00.3` (an AMD CPU's
/// USB controller, whose functions 0-2 stay on the host) must become
/// function 0.
pub(crate) fn guest_function(passed: &[PciAddress], address: PciAddress) -> u8 {
    let below = passed
        .iter()
        .filter(|a| a.slot_key() == address.slot_key() && a.function < address.function)
        .count();
    // At most 8 functions per device: the count fits.
    below as u8
}

fn root_has_pci(root: &HostRoot) -> bool {
    root.path("/sys/bus/pci/devices").is_dir()
}

fn resolve_address(
    selector: &HostdevSelector,
    all: &[PciDevice],
    findings: &mut Vec<Finding>,
) -> PciAddress {
    match *selector {
        HostdevSelector::Address(a) => a,
        HostdevSelector::Ids { ids, index } => {
            let matches: Vec<&PciDevice> = all
                .iter()
                .filter(|d| d.vendor == ids.vendor && d.device == ids.device)
                .collect();
            match matches.get(index as usize) {
                Some(d) => d.address,
                None => {
                    findings.push(
                        Finding::error(
                            format!("{ids}#{index}"),
                            format!(
                                "{} device(s) with ids {ids} on this host, index {index} wanted",
                                matches.len()
                            ),
                        )
                        .fix("`vmrun devices` lists the host's devices"),
                    );
                    // A placeholder so the dry-run can still print a command line.
                    PciAddress {
                        domain: 0xffff,
                        bus: 0xff,
                        slot: 0x1f,
                        function: 7,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// A hostdev planned by address against a fake tree.
    pub(crate) fn planned(root: &HostRoot, addr: &str, x_vga: bool) -> PlannedHostdev {
        let address: PciAddress = addr.parse().unwrap();
        PlannedHostdev {
            address,
            config: Hostdev {
                x_vga,
                ..Hostdev::at(address)
            },
            multifunction: false,
            device: crate::host::pci::read_device(root, address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::ids::RTX_3050;
    use crate::testing::{Machine, Pci, TestHost};

    fn hostdev(selector: HostdevSelector) -> Hostdev {
        Hostdev {
            selector,
            ..Hostdev::at("0000:00:00.0".parse().unwrap())
        }
    }

    /// The NVIDIA desktop with a second, unbound RTX 3050 in group 13.
    fn gpu_host() -> TestHost {
        Machine::NvidiaDesktop
            .build()
            .pci(Pci::vga("02:00.0", RTX_3050).group(13))
    }

    #[test]
    fn function_zero_with_sibling_is_multifunction() {
        let mut findings = vec![];
        let planned = plan_hostdevs(
            &[
                hostdev(HostdevSelector::Address("01:00.0".parse().unwrap())),
                hostdev(HostdevSelector::Address("01:00.1".parse().unwrap())),
            ],
            &gpu_host().root(),
            &mut findings,
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert!(planned[0].multifunction && !planned[1].multifunction);
    }

    #[test]
    fn ids_and_index_pick_the_nth_match_in_address_order() {
        let host = gpu_host();
        let root = host.root();
        let mut findings = vec![];
        let ids = "10de:2507".parse().unwrap();
        let planned = plan_hostdevs(
            &[hostdev(HostdevSelector::Ids { ids, index: 1 })],
            &root,
            &mut findings,
        );
        assert_eq!(planned[0].address.to_string(), "0000:02:00.0");
        let planned = plan_hostdevs(
            &[hostdev(HostdevSelector::Ids { ids, index: 2 })],
            &root,
            &mut findings,
        );
        assert_eq!(planned[0].device, None);
        assert_eq!(findings.len(), 1);
    }

    #[test]
    fn missing_device_and_iommu_off_are_findings() {
        let host = TestHost::new().pci(Pci::vga("01:00.0", (1, 2)));
        let mut findings = vec![];
        plan_hostdevs(
            &[hostdev(HostdevSelector::Address(
                "05:00.0".parse().unwrap(),
            ))],
            &host.root(),
            &mut findings,
        );
        let subjects: Vec<&str> = findings.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["0000:05:00.0", "iommu"]);
    }
}
