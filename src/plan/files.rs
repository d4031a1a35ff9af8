//! Host files the VM uses that the config can't vouch for: disk images and
//! block devices, install media, evdev input devices. They are host state
//! (a disk may be created after the config is written), so a missing one is
//! a finding of the plan, not a config error.

use std::path::Path;

use super::finding::Finding;
use crate::config::{DiskMedia, VmConfig};
use crate::host::HostRoot;

pub(crate) fn check_host_files(vm: &VmConfig, root: &HostRoot, findings: &mut Vec<Finding>) {
    for disk in &vm.disks {
        if exists(root, &disk.path) {
            continue;
        }
        let finding = Finding::error(disk.path.display(), "disk image or device does not exist");
        findings.push(match disk.media {
            DiskMedia::Cdrom => finding.fix("download the ISO there or correct [[disk]] path"),
            DiskMedia::Disk => finding.fix(format!(
                "create it: qemu-img create -f qcow2 {} 64G (or correct [[disk]] path)",
                disk.path.display()
            )),
        });
    }
    if let Some(input) = &vm.input {
        for path in [&input.keyboard, &input.mouse].into_iter().flatten() {
            if !exists(root, path) {
                findings.push(
                    Finding::error(path.display(), "input device does not exist (unplugged?)")
                        .fix("`ls /dev/input/by-id/` lists the connected devices; correct [input]"),
                );
            }
        }
    }
}

fn exists(root: &HostRoot, path: &Path) -> bool {
    root.path(path).exists()
}
