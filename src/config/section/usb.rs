//! `[[usb]]`: a host USB device given to the guest through QEMU's
//! `usb-host`, selected by its ids or by the host port it is plugged into.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::types::PciIds;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireUsb {
    ids: S<String>,
    index: S<u32>,
    port: S<String>,
    #[serde(default)]
    optional: bool,
}

/// A `vendor:product` pair, as `lsusb` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsbIds {
    pub vendor: u16,
    pub product: u16,
}

/// Why a USB selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbSelectorError {
    #[error("expected VVVV:PPPP in hex (e.g. 046d:c52b, see `lsusb`)")]
    Ids,
    #[error("expected BUS-PORT[.PORT...] (e.g. 1-4.2), numbers from 1 to 255")]
    Port,
}

impl FromStr for UsbIds {
    type Err = UsbSelectorError;

    // The same shape as a PCI id pair: four hex digits on each side.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p: PciIds = s.parse().map_err(|_| UsbSelectorError::Ids)?;
        Ok(Self {
            vendor: p.vendor,
            product: p.device,
        })
    }
}

impl fmt::Display for UsbIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

/// Where a device is plugged: its bus and the port path from the root hub,
/// as the kernel names the device in `/sys/bus/usb/devices` (`1-4.2`: bus 1,
/// root port 4, port 2 of the hub there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsbPort {
    pub bus: u8,
    pub ports: Vec<u8>,
}

/// USB allows five hubs between the root hub and a device: at most six
/// port numbers in a path (the kernel's devpath has room for seven).
const MAX_DEPTH: usize = 7;

impl UsbPort {
    /// The port path without the bus (`4.2`): sysfs's `devpath` and
    /// QEMU's `hostport`.
    pub fn path(&self) -> String {
        let p: Vec<String> = self.ports.iter().map(u8::to_string).collect();
        p.join(".")
    }
}

impl FromStr for UsbPort {
    type Err = UsbSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u8, UsbSelectorError> {
            let ok = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
            match t.parse::<u8>() {
                Ok(n) if ok && n > 0 => Ok(n),
                _ => Err(UsbSelectorError::Port),
            }
        };
        let (bus, path) = s.split_once('-').ok_or(UsbSelectorError::Port)?;
        let ports = path.split('.').map(num).collect::<Result<Vec<_>, _>>()?;
        if ports.len() > MAX_DEPTH {
            return Err(UsbSelectorError::Port);
        }
        Ok(Self {
            bus: num(bus)?,
            ports,
        })
    }
}

impl fmt::Display for UsbPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.bus, self.path())
    }
}

/// How a `[[usb]]` names its device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsbSelector {
    /// The `index`th device (in bus, then port order) with these ids.
    Ids {
        ids: UsbIds,
        index: u32,
    },
    Port(UsbPort),
}

impl FromStr for UsbSelector {
    type Err = UsbSelectorError;

    /// `vvvv:pppp` or `BUS-PORT[.PORT...]`, as the config writes them
    /// (`vmrun usb NAME attach SEL`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            let ids = s.parse()?;
            Ok(Self::Ids { ids, index: 0 })
        } else {
            s.parse().map(Self::Port)
        }
    }
}

impl fmt::Display for UsbSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ids { ids, index: 0 } => write!(f, "{ids}"),
            Self::Ids { ids, index } => write!(f, "{ids} index {index}"),
            Self::Port(p) => write!(f, "port {p}"),
        }
    }
}

impl Serialize for UsbSelector {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_str(self)
    }
}

/// `[[usb]]` as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usb {
    pub selector: UsbSelector,
    /// Absent at start: a warning, not a refusal (QEMU takes it when it
    /// appears, or `vmrun usb NAME attach` later).
    pub optional: bool,
}

pub(crate) fn check(list: Vec<Spanned<WireUsb>>, v: &mut Checker<'_>) -> Vec<Usb> {
    let mut out: Vec<Usb> = Vec::new();
    for (i, u) in list.into_iter().enumerate() {
        let key = |k: &str| format!("usb[{i}].{k}");
        let (span, u) = parts(u);
        if let (Some(index), None) = (&u.index, &u.ids) {
            v.err(key("index"), index.span(), K::IndexWithoutIds);
        }
        let parsed = match (u.ids.map(parts), u.port.map(parts)) {
            (Some((s, text)), None) => Some((
                "ids",
                s,
                text.parse::<UsbIds>().map(|ids| UsbSelector::Ids {
                    ids,
                    index: u.index.as_ref().map_or(0, |i| *i.get_ref()),
                }),
            )),
            (None, Some((s, text))) => Some(("port", s, text.parse().map(UsbSelector::Port))),
            (Some(_), Some((s, _))) => {
                v.err(key("port"), s, K::UsbBothSelectors);
                None
            }
            (None, None) => {
                v.err(format!("usb[{i}]"), span, K::UsbNoSelector);
                None
            }
        };
        let Some((k, s, selector)) = parsed else {
            continue;
        };
        let selector = match selector {
            Ok(sel) => sel,
            Err(e) => {
                v.err(key(k), s, K::Invalid(e.to_string()));
                continue;
            }
        };
        if out.iter().any(|o| o.selector == selector) {
            v.err(key(k), s, K::DuplicateUsb(selector.to_string()));
        }
        out.push(Usb {
            selector,
            optional: u.optional,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check as check_file};

    fn usbs(text: &str) -> Vec<Usb> {
        check_file(text).expect("valid").usb
    }

    #[test]
    fn ids_and_port_parse_with_their_defaults() {
        let u = usbs("[[usb]]\nids = \"046D:c52b\"\n[[usb]]\nport = \"3-4.2\"\noptional = true\n[[usb]]\nids = \"046d:c52b\"\nindex = 1\n");
        let ids = UsbIds {
            vendor: 0x046d,
            product: 0xc52b,
        };
        assert_eq!(u[0].selector, UsbSelector::Ids { ids, index: 0 });
        assert!(!u[0].optional);
        let port = UsbPort {
            bus: 3,
            ports: vec![4, 2],
        };
        assert_eq!(
            (port.to_string(), port.path()),
            ("3-4.2".into(), "4.2".into())
        );
        assert_eq!(u[1].selector, UsbSelector::Port(port));
        assert!(u[1].optional);
        assert_eq!(u[2].selector, UsbSelector::Ids { ids, index: 1 });
        assert!(check_file("").unwrap().usb.is_empty());
    }

    #[test]
    fn a_selector_from_the_command_line_reads_either_form() {
        assert_eq!(
            "1-2".parse::<UsbSelector>().unwrap(),
            UsbSelector::Port(UsbPort {
                bus: 1,
                ports: vec![2]
            })
        );
        assert!(matches!(
            "1d6b:0002".parse::<UsbSelector>().unwrap(),
            UsbSelector::Ids { index: 0, .. }
        ));
        for bad in [
            "",
            "1",
            "1-",
            "1-0",
            "0-1",
            "1-2..3",
            "1-256",
            "x-1",
            "1-+2",
            "1-1.1.1.1.1.1.1.1",
            "46d:c52b",
        ] {
            assert!(bad.parse::<UsbSelector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        let t = "[[usb]]\n";
        assert_problems(&[
            (&format!("{t}optional = true\n"), &[K::UsbNoSelector]),
            (
                &format!("{t}ids = \"046d:c52b\"\nport = \"1-2\"\n"),
                &[K::UsbBothSelectors],
            ),
            (
                &format!("{t}port = \"1-2\"\nindex = 1\n"),
                &[K::IndexWithoutIds],
            ),
            (
                &format!("{t}ids = \"046d-c52b\"\n"),
                &[K::Invalid(UsbSelectorError::Ids.to_string())],
            ),
            (
                &format!("{t}port = \"1.2\"\n"),
                &[K::Invalid(UsbSelectorError::Port.to_string())],
            ),
            (
                &format!("{t}port = \"1-2\"\n{t}port = \"1-2\"\n"),
                &[K::DuplicateUsb("port 1-2".into())],
            ),
            (
                &format!("{t}ids = \"046d:c52b\"\n{t}ids = \"046d:C52B\"\nindex = 0\n"),
                &[K::DuplicateUsb("046d:c52b".into())],
            ),
        ]);
    }
}
