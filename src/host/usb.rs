//! The host's USB devices, from `/sys/bus/usb/devices`: one entry per
//! device (`BUS-PORT[.PORT...]`, the kernel's name for it), not its
//! interfaces (`1-4:1.0`) nor the root hubs (`usb1`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::root::HostRoot;
use crate::config::{UsbIds, UsbPort, UsbSelector};

/// `bDeviceClass`/`bInterfaceClass` of a hub (USB 2.0 spec, 11.23.1).
const CLASS_HUB: u8 = 0x09;
/// HID (class 3) with the boot keyboard protocol (HID 1.11, 4.3): what a
/// BIOS, and so every real keyboard, speaks.
const CLASS_HID: u8 = 0x03;
const PROTOCOL_KEYBOARD: u8 = 0x01;

/// One USB device plugged into the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostUsb {
    /// Its place: bus and port path (`1-4.2`).
    #[serde(serialize_with = "as_string")]
    pub port: UsbPort,
    #[serde(serialize_with = "as_string")]
    pub ids: UsbIds,
    /// `devnum`: the address the bus gave it, new at every plug.
    pub devnum: u16,
    /// `manufacturer` and `product` strings, when the device has them.
    pub name: String,
    pub hub: bool,
    /// An interface speaks the boot keyboard protocol.
    pub keyboard: bool,
    /// `/sys/devices/...`: its sysfs directory, resolved.
    #[serde(skip)]
    pub sysfs: PathBuf,
}

fn as_string<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl HostUsb {
    /// `/dev/bus/usb/BBB/DDD`: the node libusb opens (usbfs, made by
    /// devtmpfs for every device).
    pub fn node(&self) -> PathBuf {
        PathBuf::from(format!(
            "/dev/bus/usb/{:03}/{:03}",
            self.port.bus, self.devnum
        ))
    }

    /// QEMU's usb-kbd at `port`, address `devnum`, for unit tests.
    #[cfg(test)]
    pub(crate) fn test_keyboard(port: &str, devnum: u16) -> Self {
        Self {
            port: port.parse().unwrap_or_else(|e| panic!("{port}: {e}")),
            ids: UsbIds {
                vendor: 0x0627,
                product: 0x0001,
            },
            devnum,
            name: String::new(),
            hub: false,
            keyboard: true,
            sysfs: PathBuf::from("/sys/devices/x"),
        }
    }

    /// Whether `sel` names this device, ignoring `index`.
    pub fn matches(&self, sel: &UsbSelector) -> bool {
        match sel {
            UsbSelector::Ids { ids, .. } => self.ids == *ids,
            UsbSelector::Port(p) => self.port == *p,
        }
    }
}

/// Every device under `root`, in bus then port order (so `index` counts
/// the same way on every run while nothing is replugged).
pub fn list(root: &HostRoot) -> Vec<HostUsb> {
    let dir = root.path("/sys/bus/usb/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<HostUsb> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Interfaces have a `:`, root hubs are `usbN`.
            let port: UsbPort = name.parse().ok()?;
            read(&e.path(), port)
        })
        .collect();
    out.sort_by(|a, b| (a.port.bus, &a.port.ports).cmp(&(b.port.bus, &b.port.ports)));
    out
}

/// The devices `sel` names, `index` ignored, in `list` order.
pub fn find<'a>(all: &'a [HostUsb], sel: &UsbSelector) -> Vec<&'a HostUsb> {
    all.iter().filter(|d| d.matches(sel)).collect()
}

fn read(dir: &Path, port: UsbPort) -> Option<HostUsb> {
    let attr = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let hex = |f: &str| attr(f).and_then(|s| u16::from_str_radix(&s, 16).ok());
    let ids = UsbIds {
        vendor: hex("idVendor")?,
        product: hex("idProduct")?,
    };
    let devnum = attr("devnum")?.parse().ok()?;
    let name = [attr("manufacturer"), attr("product")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let class = |d: &Path, f: &str| {
        std::fs::read_to_string(d.join(f))
            .ok()
            .and_then(|s| u8::from_str_radix(s.trim(), 16).ok())
    };
    let mut hub = class(dir, "bDeviceClass") == Some(CLASS_HUB);
    let mut keyboard = false;
    // The interfaces are subdirectories `BUS-PORT:CONFIG.IFACE`.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().contains(':') {
            continue;
        }
        let p = e.path();
        let iclass = class(&p, "bInterfaceClass");
        hub |= iclass == Some(CLASS_HUB);
        keyboard |=
            iclass == Some(CLASS_HID) && class(&p, "bInterfaceProtocol") == Some(PROTOCOL_KEYBOARD);
    }
    Some(HostUsb {
        port,
        ids,
        devnum,
        name,
        hub,
        keyboard,
        sysfs: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestHost, Usb};

    #[test]
    fn devices_are_listed_in_port_order_with_hubs_and_keyboards_told_apart() {
        let host = TestHost::new()
            .usb(Usb::new("1-10", (0x046d, 0xc52b), 5).product("Logitech", "USB Receiver"))
            .usb(Usb::hub("1-4", (0x05e3, 0x0610), 2))
            .usb(Usb::keyboard("1-4.2", (0x046d, 0xc31c), 3));
        let all = list(&host.root());
        let ports: Vec<String> = all.iter().map(|d| d.port.to_string()).collect();
        assert_eq!(ports, ["1-4", "1-4.2", "1-10"]);
        assert!(all[0].hub && !all[0].keyboard);
        assert!(all[1].keyboard && !all[1].hub);
        assert_eq!(all[2].name, "Logitech USB Receiver");
        assert_eq!(all[2].node(), Path::new("/dev/bus/usb/001/005"));
        let sel: UsbSelector = "046d:c31c".parse().unwrap();
        assert_eq!(find(&all, &sel)[0].port.to_string(), "1-4.2");
    }

    #[test]
    fn no_usb_in_sysfs_is_an_empty_list() {
        assert!(list(&TestHost::new().root()).is_empty());
    }
}
