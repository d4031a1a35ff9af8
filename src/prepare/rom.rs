//! Reading a device's option ROM through sysfs `rom` (sysfs-bus-pci: "to
//! read it, echo 1 > rom first, then cat it; echo 0 > rom disables it
//! again"). In pci-sysfs.c the store handler disables only for a write of
//! exactly "0\n" (`off == 0 && *buf == '0' && count == 2`); any other
//! write enables, and a read while disabled fails with EINVAL. The kernel
//! has no way to ask the current state, so it is learnt by trying a read,
//! and put back after the dump on every path.
//!
//! Not journaled: a leftover enable only lets root read the ROM through
//! sysfs, and a crash mid-dump leaves nothing a VM start depends on.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::kernel::{Kernel, WriteError};
use crate::config::PciAddress;
use crate::host::HostRoot;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RomReadError {
    #[error("{address} has no `rom` file: the device has no option ROM BAR")]
    NoRom { address: PciAddress },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("reading {path}: {source} (a driver may hold the ROM disabled; try with the device unbound)")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the ROM was read, but restoring {path} failed: {source}; run `echo 0 > {path}` as root"
    )]
    Restore {
        path: PathBuf,
        #[source]
        source: WriteError,
    },
}

/// The ROM bytes of `address`; the `rom` attribute ends as it started.
pub(crate) fn read_rom(
    root: &HostRoot,
    kernel: &dyn Kernel,
    address: PciAddress,
) -> Result<Vec<u8>, RomReadError> {
    let path = root.pci_device(&address).join("rom");
    if !path.exists() {
        return Err(RomReadError::NoRom { address });
    }
    if let Ok(bytes) = fs::read(&path) {
        // Already enabled (someone echoed 1 before us): leave it so.
        return Ok(bytes);
    }
    kernel.write(&path, "1\n")?;
    let read = fs::read(&path).map_err(|source| RomReadError::Read {
        path: path.clone(),
        source,
    });
    let restore = kernel.write(&path, "0\n");
    let bytes = read?;
    restore.map_err(|source| RomReadError::Restore { path, source })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::ids::BOCHS_VGA;
    use crate::testing::{Pci, TestHost};
    use std::cell::RefCell;
    use std::path::Path;

    /// The kernel's `rom` attribute: unreadable (a directory here, EISDIR
    /// standing in for EINVAL) until "1\n" is written, again after "0\n".
    struct RomKernel {
        image: Vec<u8>,
        fail_read: bool,
        writes: RefCell<Vec<String>>,
    }

    impl Kernel for RomKernel {
        fn write(&self, path: &Path, value: &str) -> Result<(), WriteError> {
            self.writes.borrow_mut().push(value.to_string());
            let _ = fs::remove_dir(path).or_else(|_| fs::remove_file(path));
            if value == "0\n" || self.fail_read {
                fs::create_dir(path).unwrap();
            } else {
                fs::write(path, &self.image).unwrap();
            }
            Ok(())
        }

        fn modprobe(&self, _: &str) -> io::Result<bool> {
            Ok(true)
        }
    }

    fn setup(fail_read: bool) -> (TestHost, HostRoot, RomKernel, PathBuf) {
        // `rom` is a directory: reading it fails until the fake kernel's
        // enable write turns it into the image.
        let dir = TestHost::new()
            .pci(Pci::vga("00:0a.0", BOCHS_VGA))
            .dir("/sys/bus/pci/devices/0000:00:0a.0/rom");
        let rom = dir.path().join("sys/bus/pci/devices/0000:00:0a.0/rom");
        let root = dir.root();
        let kernel = RomKernel {
            image: vec![0x55, 0xAA, 1, 2],
            fail_read,
            writes: RefCell::new(Vec::new()),
        };
        (dir, root, kernel, rom)
    }

    #[test]
    fn a_disabled_rom_is_enabled_read_and_disabled_again() {
        let (_dir, root, kernel, rom) = setup(false);
        let bytes = read_rom(&root, &kernel, "00:0a.0".parse().unwrap()).unwrap();
        assert_eq!(bytes, [0x55, 0xAA, 1, 2]);
        assert_eq!(*kernel.writes.borrow(), ["1\n", "0\n"]);
        assert!(fs::read(&rom).is_err(), "rom left enabled");
    }

    #[test]
    fn an_enabled_rom_is_read_and_left_enabled() {
        let (_dir, root, kernel, rom) = setup(false);
        fs::remove_dir(&rom).unwrap();
        fs::write(&rom, [0x55, 0xAA]).unwrap();
        let bytes = read_rom(&root, &kernel, "00:0a.0".parse().unwrap()).unwrap();
        assert_eq!(bytes, [0x55, 0xAA]);
        assert!(kernel.writes.borrow().is_empty());
    }

    #[test]
    fn a_failed_read_still_disables_the_rom() {
        let (_dir, root, kernel, rom) = setup(true);
        let err = read_rom(&root, &kernel, "00:0a.0".parse().unwrap()).unwrap_err();
        assert!(matches!(err, RomReadError::Read { .. }), "{err}");
        assert_eq!(
            kernel.writes.borrow().last().map(String::as_str),
            Some("0\n")
        );
        assert!(rom.is_dir());
    }

    #[test]
    fn a_device_without_rom_is_named() {
        let (_dir, root, kernel, rom) = setup(false);
        fs::remove_dir(&rom).unwrap();
        let err = read_rom(&root, &kernel, "00:0a.0".parse().unwrap()).unwrap_err();
        assert!(matches!(err, RomReadError::NoRom { .. }));
    }
}
