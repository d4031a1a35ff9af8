//! Vendor and device names from the system's `pci.ids` (the pciutils
//! database). The file is over a megabyte; only the vendors asked for are
//! kept, and parsing stops where the class section begins.
//!
//! Format (pci.ids header): `vvvv  vendor`, then `\tdddd  device`, then
//! `\t\tsvsv sdsd  subsystem`; `#` starts a comment; `C cc  class` lines
//! follow every vendor.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use super::HostRoot;

/// Where distributions install pci.ids: Debian's pciutils, then hwdata
/// (Fedora, Arch).
pub(crate) const PATHS: [&str; 2] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Vendor {
    name: String,
    devices: HashMap<u16, Device>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Device {
    name: String,
    subsystems: HashMap<(u16, u16), String>,
}

/// The names of some vendors; empty when the host has no pci.ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PciIds {
    vendors: HashMap<u16, Vendor>,
}

impl PciIds {
    /// Reads the first pci.ids found under `root`, keeping only `vendors`.
    pub(crate) fn load(root: &HostRoot, vendors: &BTreeSet<u16>) -> Self {
        if vendors.is_empty() {
            return Self::default();
        }
        PATHS
            .iter()
            .find_map(|p| fs::read(root.path(p)).ok())
            .map(|bytes| Self::parse(&String::from_utf8_lossy(&bytes), vendors))
            .unwrap_or_default()
    }

    /// Parses pci.ids text, keeping only `vendors`. Malformed lines are
    /// skipped: a name is a nicety, never a reason to fail.
    pub(crate) fn parse(text: &str, vendors: &BTreeSet<u16>) -> Self {
        let mut out = Self::default();
        let mut vendor: Option<u16> = None;
        let mut device: Option<u16> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("\t\t") {
                let (Some(v), Some(d)) = (vendor, device) else {
                    continue;
                };
                let mut parts = rest.splitn(2, ' ');
                let sv = parts.next().and_then(hex4);
                let Some((sd, name)) = parts.next().and_then(id_and_name) else {
                    continue;
                };
                if let (Some(sv), Some(dev)) = (
                    sv,
                    out.vendors
                        .get_mut(&v)
                        .and_then(|ven| ven.devices.get_mut(&d)),
                ) {
                    dev.subsystems.insert((sv, sd), name.to_string());
                }
            } else if let Some(rest) = line.strip_prefix('\t') {
                device = None;
                let Some(v) = vendor else { continue };
                if let Some((d, name)) = id_and_name(rest) {
                    device = Some(d);
                    if let Some(ven) = out.vendors.get_mut(&v) {
                        ven.devices.insert(
                            d,
                            Device {
                                name: name.to_string(),
                                ..Device::default()
                            },
                        );
                    }
                }
            } else if line.starts_with("C ") {
                // The class section follows the last vendor.
                break;
            } else {
                vendor = None;
                device = None;
                if let Some((v, name)) = id_and_name(line) {
                    if vendors.contains(&v) {
                        vendor = Some(v);
                        out.vendors.insert(
                            v,
                            Vendor {
                                name: name.to_string(),
                                ..Vendor::default()
                            },
                        );
                    }
                }
                if out.vendors.len() == vendors.len() && vendor.is_none() {
                    break;
                }
            }
        }
        out
    }

    pub(crate) fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|v| v.name.as_str())
    }

    pub(crate) fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)
            .map(|d| d.name.as_str())
    }

    /// The board's name when pci.ids lists it under the chip.
    pub(crate) fn subsystem(
        &self,
        vendor: u16,
        device: u16,
        subsystem: (u16, u16),
    ) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)?
            .subsystems
            .get(&subsystem)
            .map(String::as_str)
    }

    /// `Vendor Device`, falling back to hex ids for what pci.ids lacks.
    pub(crate) fn describe(&self, vendor: u16, device: u16) -> String {
        let v = self
            .vendor(vendor)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{vendor:04x}"));
        let d = self
            .device(vendor, device)
            .map(str::to_string)
            .unwrap_or_else(|| format!("Device {device:04x}"));
        format!("{v} {d}")
    }
}

fn hex4(s: &str) -> Option<u16> {
    if s.len() == 4 {
        u16::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// `1234  Name` -> (0x1234, "Name").
fn id_and_name(s: &str) -> Option<(u16, &str)> {
    let (id, name) = s.split_once(' ')?;
    Some((hex4(id)?, name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    const TINY: &str = "\
# a comment
0001  SafeNet (wrong ID)
10de  NVIDIA Corporation
\t2507  GA106 [GeForce RTX 3050]
\t\t1043 8870  Dual RTX 3050 OC
\t228e  GA106 High Definition Audio Controller
1002  Advanced Micro Devices, Inc. [AMD/ATI]
\t73bf  Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]
C 03  Display controller
\t00  VGA compatible controller
";

    fn wanted(ids: &[u16]) -> BTreeSet<u16> {
        ids.iter().copied().collect()
    }

    #[test]
    fn parses_vendor_device_and_subsystem_names() {
        let ids = PciIds::parse(TINY, &wanted(&[0x10de, 0x1002]));
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(ids.device(0x10de, 0x2507), Some("GA106 [GeForce RTX 3050]"));
        assert_eq!(
            ids.subsystem(0x10de, 0x2507, (0x1043, 0x8870)),
            Some("Dual RTX 3050 OC")
        );
        assert_eq!(
            ids.device(0x1002, 0x73bf),
            Some("Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]")
        );
    }

    #[test]
    fn keeps_only_the_vendors_asked_for() {
        let ids = PciIds::parse(TINY, &wanted(&[0x1002]));
        assert_eq!(ids.vendor(0x10de), None);
        assert_eq!(ids.device(0x10de, 0x2507), None);
        assert!(ids.vendor(0x1002).is_some());
    }

    #[test]
    fn unknown_ids_fall_back_to_hex() {
        let ids = PciIds::parse(TINY, &wanted(&[0x10de, 0x8086]));
        assert_eq!(
            ids.describe(0x10de, 0x1234),
            "NVIDIA Corporation Device 1234"
        );
        assert_eq!(ids.describe(0x8086, 0x4c43), "8086 Device 4c43");
    }

    #[test]
    fn class_lines_are_not_devices() {
        // `\t00  VGA compatible controller` under `C 03` must not land
        // under the last vendor.
        let ids = PciIds::parse(TINY, &wanted(&[0x1002]));
        assert_eq!(ids.device(0x1002, 0x0000), None);
    }

    #[test]
    fn load_reads_the_hwdata_copy_when_misc_is_absent() {
        let dir = TestHost::new().file("/usr/share/hwdata/pci.ids", TINY);
        let ids = PciIds::load(&HostRoot::new(dir.path()), &wanted(&[0x10de]));
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        let none = PciIds::load(
            &HostRoot::new(dir.path().join("nowhere")),
            &wanted(&[0x10de]),
        );
        assert_eq!(none, PciIds::default());
    }
}
