//! `vmrun input list`: the host's evdev devices with their stable names,
//! classified from the capability bitmaps the kernel exports in sysfs
//! (`/sys/class/input/eventN/device/capabilities/*`). Sysfs needs no open
//! of the device node, so listing works without root and without grabbing
//! anything; every path goes through `HostRoot` so tests use a fake tree.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::host::HostRoot;

// Codes from include/uapi/linux/input-event-codes.h.
const KEY_ENTER: usize = 28;
const KEY_A: usize = 30;
const KEY_SPACE: usize = 57;
const BTN_LEFT: usize = 0x110;
const BTN_TOOL_PEN: usize = 0x140;
const BTN_TOUCH: usize = 0x14a;
const REL_X: usize = 0;
const REL_Y: usize = 1;
const ABS_X: usize = 0;
const ABS_Y: usize = 1;

/// What a device is, judged from what it can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Keyboard,
    Mouse,
    Tablet,
    Other,
}

/// One `/dev/input/eventN` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InputDevice {
    /// `/dev/input/eventN`.
    pub node: String,
    pub name: String,
    pub kind: Kind,
    /// `/dev/input/by-id/...` links to this node (what `[input]` should name).
    pub by_id: Vec<String>,
    /// `/dev/input/by-path/...` links (stable per port, not per device).
    pub by_path: Vec<String>,
    /// `vendor:product` as four hex digits each.
    pub ids: String,
    pub phys: String,
}

/// A capability bitmap as sysfs prints it: `unsigned long` words in hex,
/// most significant first, separated by spaces (`input_print_bitmap`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn parse(text: &str) -> Self {
        let words = text
            .split_whitespace()
            .rev()
            .map(|w| u64::from_str_radix(w, 16).unwrap_or(0))
            .collect();
        Self(words)
    }

    pub(crate) fn has(&self, bit: usize) -> bool {
        self.0
            .get(bit / 64)
            .is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
    }
}

/// The capability bitmaps that decide the kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Caps {
    pub key: Bits,
    pub rel: Bits,
    pub abs: Bits,
}

impl Caps {
    /// Keys before pointers: a gaming mouse's macro-key node is a keyboard
    /// to the host, and it is listed as its own entry.
    pub(crate) fn kind(&self) -> Kind {
        let key = |k| self.key.has(k);
        if key(KEY_A) && (key(KEY_ENTER) || key(KEY_SPACE)) {
            Kind::Keyboard
        } else if self.rel.has(REL_X) && self.rel.has(REL_Y) && key(BTN_LEFT) {
            Kind::Mouse
        } else if self.abs.has(ABS_X)
            && self.abs.has(ABS_Y)
            && (key(BTN_TOUCH) || key(BTN_LEFT) || key(BTN_TOOL_PEN))
        {
            Kind::Tablet
        } else {
            Kind::Other
        }
    }
}

/// Every evdev node under `root`, sorted by node number.
pub(crate) fn list(root: &HostRoot) -> Vec<InputDevice> {
    let links = |dir: &str| stable_links(&root.path(format!("/dev/input/{dir}")), dir);
    let by_id = links("by-id");
    let by_path = links("by-path");
    let Ok(entries) = std::fs::read_dir(root.path("/sys/class/input")) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("event")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .map(|(_, event)| {
            let dev = root.path(format!("/sys/class/input/{event}/device"));
            let read = |f: &str| {
                std::fs::read_to_string(dev.join(f))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let caps = Caps {
                key: Bits::parse(&read("capabilities/key")),
                rel: Bits::parse(&read("capabilities/rel")),
                abs: Bits::parse(&read("capabilities/abs")),
            };
            InputDevice {
                node: format!("/dev/input/{event}"),
                name: read("name"),
                kind: caps.kind(),
                by_id: by_id.get(&event).cloned().unwrap_or_default(),
                by_path: by_path.get(&event).cloned().unwrap_or_default(),
                ids: format!("{}:{}", read("id/vendor"), read("id/product")),
                phys: read("phys"),
            }
        })
        .collect()
}

/// `eventN` -> the host paths of the links in `/dev/input/DIR` pointing
/// at it (udev makes them relative: `../event3`).
fn stable_links(dir: &Path, dir_name: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return map;
    };
    let mut links: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let event = target.file_name()?.to_string_lossy().into_owned();
            let link = format!("/dev/input/{dir_name}/{}", e.file_name().to_string_lossy());
            Some((event, link))
        })
        .collect();
    links.sort();
    for (event, link) in links {
        map.entry(event).or_default().push(link);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake `eventN` with sysfs capability bitmaps as the kernel prints them.
    fn device(root: &Path, n: u32, name: &str, key: &str, rel: &str, abs: &str) {
        let dev = root.join(format!("sys/devices/virtual/input/input{n}"));
        fs::create_dir_all(dev.join("capabilities")).unwrap();
        fs::create_dir_all(dev.join("id")).unwrap();
        fs::write(dev.join("name"), format!("{name}\n")).unwrap();
        fs::write(dev.join("phys"), "usb-0000:00:14.0-1/input0\n").unwrap();
        fs::write(dev.join("id/vendor"), "046d\n").unwrap();
        fs::write(dev.join("id/product"), "c31c\n").unwrap();
        for (f, v) in [("key", key), ("rel", rel), ("abs", abs)] {
            fs::write(dev.join("capabilities").join(f), format!("{v}\n")).unwrap();
        }
        let class = root.join("sys/class/input").join(format!("event{n}"));
        fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&dev, class.join("device")).unwrap();
    }

    fn link(root: &Path, dir: &str, name: &str, n: u32) {
        let d = root.join("dev/input").join(dir);
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(format!("../event{n}"), d.join(name)).unwrap();
    }

    // A real USB keyboard's key bitmap (6.1, `cat capabilities/key`): words
    // for codes 448.., 384.., 320.., 256.., 192.., 128.., 64.., 0..
    const KBD_KEYS: &str = "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe";
    // A gaming mouse: BTN_LEFT..BTN_TASK in the 0x100 word.
    const MOUSE_KEYS: &str = "ff0000 0 0 0 0";
    const MOUSE_REL: &str = "1943"; // X Y HWHEEL WHEEL WHEEL_HI_RES HWHEEL_HI_RES
    const TABLET_KEYS: &str = "400 0 0 0 0 0"; // BTN_TOUCH (0x14a)

    #[test]
    fn bitmaps_read_most_significant_word_first() {
        let b = Bits::parse("ff0000 0 0 0 0");
        assert!(b.has(BTN_LEFT) && b.has(0x117) && !b.has(0x118) && !b.has(KEY_A));
        assert!(!Bits::parse("").has(0));
    }

    #[test]
    fn devices_are_classified_and_named_by_id_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        device(r, 3, "Logitech USB Keyboard", KBD_KEYS, "0", "0");
        device(r, 4, "Logitech G502", MOUSE_KEYS, MOUSE_REL, "0");
        device(r, 5, "Logitech G502 Keyboard", KBD_KEYS, "0", "0");
        device(r, 6, "Wacom Pen", TABLET_KEYS, "0", "3");
        device(r, 7, "Power Button", "10000000000000 0", "0", "0");
        link(r, "by-id", "usb-Logitech_USB_Keyboard-event-kbd", 3);
        link(r, "by-id", "usb-Logitech_G502-event-mouse", 4);
        link(r, "by-id", "usb-Logitech_G502-if01-event-kbd", 5);
        link(r, "by-path", "pci-0000:00:14.0-usb-0:1:1.0-event-kbd", 3);

        let list = list(&HostRoot::new(r));

        let kinds: Vec<(&str, Kind)> = list.iter().map(|d| (d.node.as_str(), d.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("/dev/input/event3", Kind::Keyboard),
                ("/dev/input/event4", Kind::Mouse),
                ("/dev/input/event5", Kind::Keyboard),
                ("/dev/input/event6", Kind::Tablet),
                ("/dev/input/event7", Kind::Other),
            ]
        );
        assert_eq!(
            list[0].by_id,
            ["/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd"]
        );
        assert_eq!(
            list[0].by_path,
            ["/dev/input/by-path/pci-0000:00:14.0-usb-0:1:1.0-event-kbd"]
        );
        assert_eq!(
            list[2].by_id,
            ["/dev/input/by-id/usb-Logitech_G502-if01-event-kbd"]
        );
        assert_eq!(
            (list[1].name.as_str(), list[1].ids.as_str()),
            ("Logitech G502", "046d:c31c")
        );
        assert!(list[4].by_id.is_empty());
    }

    #[test]
    fn a_host_without_input_devices_lists_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list(&HostRoot::new(tmp.path())).is_empty());
    }
}
