//! USB devices of the VM unplugged and plugged in again while it runs.
//!
//! QEMU's `usb-host` with a vendor/product or port filter (never a bus
//! address) looks for its device every 2 s (`usb_host_auto_check` in
//! `hw/usb/host-libusb.c`) and opens it when it is back; three failed
//! opens and it gives up until the device goes away again. A replugged
//! device is a new `/dev/bus/usb/BBB/DDD` node, made root's by devtmpfs
//! and udev, which QEMU's uid cannot open. So is a device `vmrun usb
//! attach` added while it was not plugged in. The supervisor looks every
//! `PERIOD` for nodes that are not QEMU's, asks QEMU which `usb-host`
//! devices it has now (`[[usb]]`, attached, less the detached), and hands
//! over the root-owned nodes one of them takes, journaled like the first hand-over
//! (a `ChownDevice` and a `UsbDriver` step: teardown and `vmrun restore`
//! give them back). Where udevd runs, a node is looked at only once udev
//! has processed it (its database entry `/run/udev/data/c189:MINOR`
//! exists: udev writes it after applying the node's owner and mode), so
//! udev does not reset it afterwards.

use std::collections::HashSet;
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
use crate::qmp::QmpClient;

/// Well inside QEMU's three tries 2 s apart.
pub(super) const PERIOD: Duration = Duration::from_millis(500);

/// QEMU answers `qom-get` from its main loop, in well under this.
const ASK_QEMU: Duration = Duration::from_secs(1);

/// udevd's control socket: it runs.
const UDEV_CONTROL: &str = "/run/udev/control";

/// usbfs nodes are character devices of major 189; minor
/// `(bus - 1) * 128 + (devnum - 1)` (the kernel's `usb_devnode` numbering).
/// `None` while the device has no address yet (sysfs shows `devnum` 0
/// between its enumeration and its address, and as it goes away).
fn udev_db_entry(d: &HostUsb) -> Option<String> {
    let bus = u32::from(d.port.bus).checked_sub(1)?;
    let devnum = u32::from(d.devnum).checked_sub(1)?;
    Some(format!("/run/udev/data/c189:{}", bus * 128 + devnum))
}

/// A node by its bus and address: a plug gets an address of its own.
type Node = (u8, u16);

fn node_of(d: &HostUsb) -> Node {
    (d.port.bus, d.devnum)
}

/// The nodes not to hand over: no `usb-host` of QEMU's takes them, or
/// handing them over failed (said once). Each is decided when it appears.
#[derive(Default)]
pub(super) struct UsbWatch {
    decided: HashSet<Node>,
}

/// Whether there is anything to look for: the VM has a USB controller for
/// `usb-host` devices and QEMU runs as an identity of its own (vmrun root;
/// otherwise QEMU is the caller, whose access to the nodes is the
/// system's business).
pub(super) fn watches(plan: &Plan) -> bool {
    crate::qemu::devices::needs_usb_controller(plan) && plan.qemu_identity.is_some()
}

impl UsbWatch {
    /// Hands the new nodes that one of QEMU's `usb-host` devices takes to
    /// QEMU's uid. QEMU is asked only when a node is new.
    pub(super) async fn look(&mut self, plan: &Plan, qmp: Option<&QmpClient>) {
        let (Some(identity), Some(qmp)) = (&plan.qemu_identity, qmp) else {
            return;
        };
        let to = NewOwner::from(identity);
        let udev = plan.root.path(UDEV_CONTROL).exists();
        let present: Vec<HostUsb> = crate::host::usb::list(&plan.root)
            .into_iter()
            .filter(|d| !d.hub)
            .collect();
        self.decided
            .retain(|n| present.iter().any(|d| node_of(d) == *n));
        // Each with its node's owner.
        let new: Vec<(&HostUsb, u32)> = present
            .iter()
            .filter(|d| !self.decided.contains(&node_of(d)))
            .filter(|d| d.devnum > 0)
            .filter(|d| !udev || udev_db_entry(d).is_some_and(|e| plan.root.path(e).exists()))
            .filter_map(|d| Some((d, std::fs::metadata(plan.root.path(d.node())).ok()?.uid())))
            .filter(|(_, owner)| *owner != to.uid)
            .collect();
        if new.is_empty() {
            return;
        }
        // The loop waits meanwhile: a QEMU that does not answer at once
        // is asked again at the next look.
        let hosts = tokio::time::timeout(ASK_QEMU, qmp.usb_hosts()).await;
        let wanted: Vec<UsbMatch> = match hosts {
            Ok(Ok(hosts)) => hosts.iter().filter_map(UsbMatch::of_qemu).collect(),
            Ok(Err(e)) => {
                tracing::warn!("usb: asking QEMU for its usb-host devices: {e}");
                return;
            }
            Err(_) => return,
        };
        // A node handed over stays undecided: should udev give it back to
        // root (`udevadm trigger`), the next look hands it over again.
        for (d, owner) in new {
            if !wanted.iter().any(|m| m.takes(d)) {
                self.decided.insert(node_of(d));
                continue;
            }
            let node = d.node();
            // A fresh node is root's. Another owner is another VM's QEMU,
            // which has the device open, or a udev rule's choice: neither
            // is this VM's to take.
            if owner != 0 {
                tracing::warn!(
                    "usb: {} ({}) at {} belongs to uid {owner} (another VM's QEMU, or a \
                     udev rule's user): not handed to this VM's QEMU",
                    d.ids,
                    d.port,
                    node.display()
                );
                self.decided.insert(node_of(d));
                continue;
            }
            match give(plan, d, to) {
                Ok(()) => tracing::info!(
                    "usb: {} ({}) is plugged in as {}; handed to QEMU's uid {}",
                    d.ids,
                    d.port,
                    node.display(),
                    to.uid
                ),
                Err(e) => {
                    tracing::warn!("usb: {}: {e}", node.display());
                    self.decided.insert(node_of(d));
                }
            }
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

    #[test]
    fn the_udev_entry_is_the_usbfs_nodes_char_device() {
        let d = HostUsb::test_keyboard("3-1.2", 5);
        // Bus 3, address 5: 2 * 128 + 4.
        assert_eq!(udev_db_entry(&d).unwrap(), "/run/udev/data/c189:260");
        // Not addressed yet: no node, no entry.
        assert_eq!(udev_db_entry(&HostUsb::test_keyboard("3-1.2", 0)), None);
    }
}
