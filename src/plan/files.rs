//! Host files the VM uses that the config can't vouch for: disk images and
//! block devices, install media, evdev input devices. They are host state
//! (a disk may be created after the config is written), so a missing one is
//! a finding of the plan, not a config error.

use std::path::Path;

use super::finding::Finding;
use crate::config::{trust, DiskMedia, VmConfig};
use crate::host::HostRoot;

pub(crate) fn check_host_files(vm: &VmConfig, root: &HostRoot, findings: &mut Vec<Finding>) {
    for disk in &vm.disks {
        if exists(root, &disk.path) {
            check_control(&disk.path, root, findings);
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

/// As root, a disk is opened with the rights of the one user who could
/// replace it (`trust::who_controls`); a path that several could replace
/// has no one to answer for it.
fn check_control(path: &Path, root: &HostRoot, findings: &mut Vec<Finding>) {
    if !root.is_real() || !trust::running_as_root() {
        return;
    }
    match trust::who_controls(path) {
        Ok(None) => {}
        Ok(Some(uid)) => findings.push(Finding::info(
            path.display(),
            format!("opened with the rights of uid {uid}, who may replace it"),
        )),
        Err(why) => findings.push(Finding::error(path.display(), why.to_string()).fix(
            "keep disks where root alone or their one user can write, e.g. /var/lib/vmrun/NAME/",
        )),
    }
}

fn exists(root: &HostRoot, path: &Path) -> bool {
    root.path(path).exists()
}
