//! `[[usb]]` devices unplugged and plugged in again while the VM runs.
//!
//! QEMU's `usb-host` with a vendor/product or port filter (never a bus
//! address) looks for its device every 2 s (`usb_host_auto_check` in
//! `hw/usb/host-libusb.c`) and opens it when it is back; three failed
//! opens and it gives up until the device goes away again. A replugged
//! device is a new `/dev/bus/usb/BBB/DDD` node, made root's by devtmpfs
//! and udev, which QEMU's uid cannot open. The supervisor looks every
//! `PERIOD` for nodes of the configured devices that are not QEMU's and
//! hands each over, journaled like the first hand-over (a `ChownDevice`
//! and a `UsbDriver` step: teardown and `vmrun restore` give it back).
//! Where udevd runs, a node is handed over only once udev has processed
//! it (its database entry `/run/udev/data/c189:MINOR` exists: udev writes
//! it after applying the node's owner and mode), so udev does not reset
//! it afterwards.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::host::usb::HostUsb;
use crate::plan::usb::UsbMatch;
use crate::plan::Plan;
use crate::prepare::change::device_owner::{self, NewOwner};
use crate::prepare::change::usb_driver;
use crate::prepare::journal::Journal;
use crate::prepare::kernel::RealKernel;
use crate::prepare::Host;

/// Well inside QEMU's three tries 2 s apart.
pub(super) const PERIOD: Duration = Duration::from_millis(500);

/// udevd's control socket: it runs.
const UDEV_CONTROL: &str = "/run/udev/control";

/// usbfs nodes are character devices of major 189; minor
/// `(bus - 1) * 128 + (devnum - 1)` (the kernel's `usb_devnode` numbering).
fn udev_db_entry(d: &HostUsb) -> String {
    let minor = (u32::from(d.port.bus) - 1) * 128 + (u32::from(d.devnum) - 1);
    format!("/run/udev/data/c189:{minor}")
}

/// Whether there is anything to look for: the VM has `[[usb]]` and QEMU
/// runs as an identity of its own (vmrun root; otherwise QEMU is the
/// caller, whose access to the nodes is the system's business).
pub(super) fn watches(plan: &Plan) -> bool {
    !plan.usb.is_empty() && plan.qemu_identity.is_some()
}

/// Whether QEMU's `usb-host` with `m`'s properties opens `d`: the
/// vendor and product, the port, or both (ids pinned to a port when
/// several devices share them), as its filter compares them.
fn qemu_would_take(m: &UsbMatch, d: &HostUsb) -> bool {
    m.ids.as_ref().is_none_or(|ids| *ids == d.ids)
        && m.port.as_ref().is_none_or(|port| *port == d.port)
}

/// Hands the plugged-in devices of `plan`'s `[[usb]]` whose nodes are not
/// QEMU's to QEMU's uid.
pub(super) fn hand_over_replugged(plan: &Plan) {
    let Some(identity) = &plan.qemu_identity else {
        return;
    };
    let to = NewOwner::from(identity);
    let udev = plan.root.path(UDEV_CONTROL).exists();
    for d in crate::host::usb::list(&plan.root) {
        if d.hub || !plan.usb.iter().any(|u| qemu_would_take(&u.matcher, &d)) {
            continue;
        }
        let node = d.node();
        let Ok(meta) = std::fs::metadata(plan.root.path(&node)) else {
            continue;
        };
        if meta.uid() == to.uid {
            continue;
        }
        if udev && !plan.root.path(udev_db_entry(&d)).exists() {
            continue;
        }
        match give(plan, &d, to) {
            Ok(()) => tracing::info!(
                "usb: {} ({}) is back as {}; handed to QEMU's uid {}",
                d.ids,
                d.port,
                node.display(),
                to.uid
            ),
            Err(e) => tracing::warn!("usb: {}: {e}", node.display()),
        }
    }
}

fn give(plan: &Plan, d: &HostUsb, to: NewOwner) -> Result<(), String> {
    let kernel = RealKernel::default();
    let host = Host::new(&plan.root, &kernel);
    let mut journal =
        Journal::open(&crate::prepare::journal_path(plan)).map_err(|e| e.to_string())?;
    usb_driver::record(&mut journal, &d.port.to_string()).map_err(|e| e.to_string())?;
    device_owner::give(&host, &mut journal, &d.node(), to).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyboard() -> HostUsb {
        HostUsb {
            port: "3-1.2".parse().unwrap(),
            ids: "0627:0001".parse().unwrap(),
            devnum: 5,
            name: String::new(),
            hub: false,
            keyboard: true,
            sysfs: "/sys/devices/x".into(),
        }
    }

    #[test]
    fn a_device_is_taken_by_the_filter_qemu_has() {
        let d = keyboard();
        let ids = Some("0627:0001".parse().unwrap());
        let m = |ids, port: Option<&str>| UsbMatch {
            ids,
            port: port.map(|p| p.parse().unwrap()),
        };
        assert!(qemu_would_take(&m(ids, None), &d));
        assert!(qemu_would_take(&m(None, Some("3-1.2")), &d));
        assert!(qemu_would_take(&m(ids, Some("3-1.2")), &d));
        // The same ids pinned to another port: the other device's.
        assert!(!qemu_would_take(&m(ids, Some("3-1.3")), &d));
        assert!(!qemu_would_take(
            &m(Some("046d:c52b".parse().unwrap()), None),
            &d
        ));
    }

    #[test]
    fn the_udev_entry_is_the_usbfs_nodes_char_device() {
        let d = keyboard();
        // Bus 3, address 5: 2 * 128 + 4.
        assert_eq!(udev_db_entry(&d), "/run/udev/data/c189:260");
    }
}
