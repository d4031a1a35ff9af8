//! `vmrun rom dump ADDRESS`: the device's option ROM, read through sysfs
//! (`prepare::rom`), validated against the device (`setup::rom`) and
//! written where a bare `romfile` name finds it.

use super::out::outln;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::PciAddress;
use crate::exit::Exit;
use crate::host::{pci, HostRoot};
use crate::prepare::kernel::RealKernel;
use crate::prepare::rom::read_rom;
use crate::setup::rom::validate;

/// `firmware/` beside the first `vms/` directory: where a bare romfile
/// name is looked up.
fn default_output(vendor: u16, device: u16) -> PathBuf {
    let vms = super::init::config_dir();
    let base = vms.parent().map(Path::to_path_buf).unwrap_or_default();
    base.join("firmware")
        .join(format!("{vendor:04x}-{device:04x}.rom"))
}

pub(super) fn dump(address: PciAddress, output: Option<&Path>, patch: bool) -> Exit {
    let root = HostRoot::from_env();
    let Some(dev) = pci::read_device(&root, address) else {
        eprintln!("vmrun: {address} is not on this host (`vmrun devices` lists what is)");
        return Exit::HostProblems;
    };
    let bytes = match read_rom(&root, &RealKernel::default(), address) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::HostProblems;
        }
    };
    let (image, rom) = match validate(&bytes, dev.vendor, dev.device, patch) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vmrun: {address}: {e}");
            return Exit::HostProblems;
        }
    };
    let path = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_output(dev.vendor, dev.device));
    let written = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            // A ROM that is there already may be the only good copy.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(rom)
        });
    if let Err(e) = written {
        eprintln!(
            "vmrun: writing {}: {e} (an existing file is never replaced; use -o)",
            path.display()
        );
        return Exit::HostProblems;
    }
    outln!(
        "wrote {} ({} bytes): ROM for {:04x}:{:04x}, signature 55 AA, PCIR valid, code type {}",
        path.display(),
        rom.len(),
        image.vendor,
        image.device,
        match image.code_type {
            0 => "x86 (legacy BIOS)",
            3 => "EFI",
            _ => "other",
        }
    );
    if image.stripped > 0 {
        outln!(
            "stripped a {}-byte header before the signature (--patch)",
            image.stripped
        );
    }
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        outln!("use it: romfile = \"{name}\" in the GPU's [[hostdev]]");
    }
    Exit::Ok
}
