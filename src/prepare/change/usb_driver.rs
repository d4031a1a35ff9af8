//! A `[[usb]]` device's host drivers, which QEMU takes off its interfaces.
//! QEMU's libusb detaches the kernel driver of each interface it claims
//! (`USBDEVFS_DISCONNECT_CLAIM`) and attaches it again when it lets go
//! (`USBDEVFS_CONNECT`); a QEMU killed with SIGKILL never does, and the
//! kernel does not rebind a released interface by itself. The step is
//! journaled before QEMU starts; its undo asks the USB bus to probe every
//! interface of the device left without a driver (`drivers_probe`, which
//! any bus has), so a `kill -9` and `vmrun restore` give the device back to
//! the host's drivers as a clean stop does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

/// The journal step: the USB device at `port` (`1-4.2`) goes to QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsbDriver {
    pub port: String,
}

/// Journals that the device at `port` is QEMU's for the run.
pub fn record(journal: &mut Journal, port: &str) -> Result<(), JournalError> {
    journal.record(&Step::UsbDriver(UsbDriver {
        port: port.to_string(),
    }))
}

impl Undo for UsbDriver {
    fn undo(&self, host: &Host) -> StepReport {
        let dir = host
            .root
            .path(format!("/sys/bus/usb/devices/{}", self.port));
        let what = format!("USB device {} back to the host's drivers", self.port);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            // Unplugged: when it comes back, the kernel probes it anew.
            return StepReport::logged(format!("{what} (unplugged)"), None);
        };
        let prefix = format!("{}:", self.port);
        let mut unbound: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix) && !has_driver(&dir.join(n)))
            .collect();
        unbound.sort();
        let probe = host.root.path("/sys/bus/usb/drivers_probe");
        // An interface no driver wants stays unbound: that is how it was
        // before too, so a probe that binds nothing is no failure.
        let failed: Vec<String> = unbound
            .iter()
            .filter_map(|i| {
                host.kernel
                    .write(&probe, i)
                    .err()
                    .map(|e| format!("{i}: {e}"))
            })
            .collect();
        let problem = (!failed.is_empty()).then(|| failed.join("; "));
        StepReport::logged(what, problem)
    }
}

fn has_driver(interface: &Path) -> bool {
    interface.join("driver").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::journal::undo_all;
    use crate::prepare::kernel::fake::FakeKernel;
    use crate::testing::{sysfs, TestHost, Usb};

    #[test]
    fn the_undo_probes_each_interface_left_without_a_driver() {
        let t = TestHost::new().usb(Usb::new("1-4.2", (0x046d, 0xc52b), 5).interfaces(&[
            (3, 1, 1),
            (3, 1, 2),
            (3, 0, 0),
        ]));
        // Interface 1.1 kept its driver; 1.0 and 1.2 were QEMU's.
        let iface = "sys/bus/usb/devices/1-4.2/1-4.2:1.1";
        sysfs::add_symlink(
            t.path(),
            &format!("/{iface}/driver"),
            t.path()
                .join("sys/bus/usb/drivers/usbhid")
                .to_str()
                .unwrap(),
        );
        std::fs::create_dir_all(t.path().join("sys/bus/usb/drivers/usbhid")).unwrap();
        let root = t.root();
        let kernel = FakeKernel::new(t.path());
        let host = Host::new(&root, &kernel);
        let journal_path = t.path().join("journal");
        let mut journal = Journal::open(&journal_path).unwrap();
        record(&mut journal, "1-4.2").unwrap();
        record(&mut journal, "2-1").unwrap();
        let undone = undo_all(&journal_path, &host);
        assert!(undone.complete());
        let writes = kernel.writes.borrow().clone();
        assert_eq!(
            writes,
            [
                (
                    "sys/bus/usb/drivers_probe".to_string(),
                    "1-4.2:1.0".to_string()
                ),
                (
                    "sys/bus/usb/drivers_probe".to_string(),
                    "1-4.2:1.2".to_string()
                ),
            ]
        );
    }
}
