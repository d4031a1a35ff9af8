//! Which VM holds which PCI device, and which confines the host's CPUs.
//! Prepare writes a `devices` file (one address per line) into each VM's
//! run dir once its devices are bound, and an `isolating` file before
//! `[cpu] isolate` changes anything; both go with the run dir, which stays
//! while the journal does (a dead run's confinement lasts until `vmrun
//! restore`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::HostRoot;
use crate::config::PciAddress;

/// The file in a run dir that names the VM's devices.
pub(crate) const DEVICES_FILE: &str = "devices";

/// The file in a run dir that says the VM confines the host's CPUs.
pub(crate) const ISOLATING_FILE: &str = "isolating";

/// The VMs (run dir names) under `run_base` whose run dir holds
/// `ISOLATING_FILE`, sorted.
pub(crate) fn isolating(root: &HostRoot, run_base: &Path) -> Vec<String> {
    let Ok(vms) = fs::read_dir(root.path(run_base)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = vms
        .flatten()
        .filter(|vm| vm.path().join(ISOLATING_FILE).exists())
        .map(|vm| vm.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every device named by a `devices` file under `run_base` (the parent of
/// the VM run dirs), mapped to the VM (run dir name) holding it. Lines that
/// are not addresses are ignored; an unreadable run base holds nothing.
pub(crate) fn held_by(root: &HostRoot, run_base: &Path) -> HashMap<PciAddress, String> {
    let mut held = HashMap::new();
    let Ok(vms) = fs::read_dir(root.path(run_base)) else {
        return held;
    };
    for vm in vms.flatten() {
        let Ok(text) = fs::read_to_string(vm.path().join(DEVICES_FILE)) else {
            continue;
        };
        let name = vm.file_name().to_string_lossy().into_owned();
        for line in text.lines() {
            if let Ok(address) = line.trim().parse::<PciAddress>() {
                held.insert(address, name.clone());
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn devices_files_name_their_vm() {
        let host = TestHost::new()
            .file("/run/vmrun/win11/devices", "0000:01:00.0\n0000:01:00.1\n\n")
            .file("/run/vmrun/other/qemu.pid", "123\n");
        let held = held_by(&host.root(), Path::new("/run/vmrun"));
        assert_eq!(held.len(), 2);
        assert_eq!(held[&"01:00.1".parse().unwrap()], "win11");
        assert!(held_by(&host.root(), Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn isolating_files_name_their_vm() {
        let host = TestHost::new()
            .file("/run/vmrun/b/isolating", "")
            .file("/run/vmrun/a/isolating", "")
            .file("/run/vmrun/c/devices", "0000:01:00.0\n");
        assert_eq!(isolating(&host.root(), Path::new("/run/vmrun")), ["a", "b"]);
        assert!(isolating(&host.root(), Path::new("/nowhere")).is_empty());
    }
}
