//! The only writer of host state. Every change goes through the journal
//! first (`journal.rs`); each kind of change is one module under `change/`
//! with its undo beside it; `kernel/` is the seam every write goes through.
//! A failure part way returns the error with the journal as it stands: the
//! caller replays it (`teardown::replay`), as on every other way out.

pub mod change;
pub mod isolate;
pub mod journal;
pub mod kernel;
pub(crate) mod rom;

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::Flock;

use crate::plan::Plan;
use change::{
    device_owner, group_owner, hugepages, shared_memory, takeover, tap, usb_driver, vfio,
};
use journal::Journal;
pub use kernel::Host;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Vfio(#[from] vfio::VfioError),
    #[error(transparent)]
    Hugepages(#[from] hugepages::HugepageError),
    #[error("takeover: {0}")]
    Takeover(#[from] takeover::TakeoverError),
    #[error("{address} is held by VM {holder}: stop it first (`vmrun stop {holder}`)")]
    DeviceBusy { address: String, holder: String },
    #[error("device lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    GroupOwner(#[from] group_owner::GroupOwnerError),
    #[error(transparent)]
    DeviceOwner(#[from] device_owner::DeviceOwnerError),
    #[error(transparent)]
    SharedMemory(#[from] shared_memory::SharedMemoryError),
    #[error("isolate: {0}")]
    Isolate(#[from] isolate::IsolateError),
    #[error(transparent)]
    Tap(#[from] tap::TapError),
}

/// The journal of a VM's run dir.
pub fn journal_path(plan: &Plan) -> PathBuf {
    plan.paths.run_dir.join("journal")
}

/// The file naming the devices a VM holds (read by `vmrun devices` and by
/// other VMs' plans).
pub fn devices_path(plan: &Plan) -> PathBuf {
    plan.paths.run_dir.join(crate::host::held::DEVICES_FILE)
}

/// Exclusive claims on PCI devices, held for as long as the VM has them:
/// flock(2)s on `RUN_BASE/.devices/ADDRESS.lock`, which the kernel drops
/// when the holder dies.
#[derive(Debug, Default)]
pub struct DeviceLocks(Vec<Flock<File>>);

/// Claims every hostdev of `plan`, or names the VM that holds one.
pub fn lock_devices(plan: &Plan) -> Result<DeviceLocks, PrepareError> {
    let Some(base) = plan.paths.run_dir.parent() else {
        return Ok(DeviceLocks::default());
    };
    let dir = base.join(".devices");
    crate::fsutil::create_private_dir(&dir).map_err(|e| PrepareError::Lock {
        path: dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut locks = DeviceLocks::default();
    for hd in &plan.hostdevs {
        let path = dir.join(format!("{}.lock", hd.address));
        let lock =
            crate::fsutil::claim_file(&path, plan.vm.name.as_str()).map_err(|e| match e {
                crate::fsutil::ClaimError::Held(holder) => PrepareError::DeviceBusy {
                    address: hd.address.to_string(),
                    holder,
                },
                crate::fsutil::ClaimError::Io(source) => PrepareError::Lock { path, source },
            })?;
        locks.0.push(lock);
    }
    Ok(locks)
}

/// Prepares the host for `plan`, journaling each change before it is made.
/// On error the host may be part way changed: the journal says how far,
/// and replaying it puts everything back.
pub fn prepare(plan: &Plan, host: &Host) -> Result<(), PrepareError> {
    let mut journal = Journal::open(&journal_path(plan))?;
    apply(plan, host, &mut journal)
}

fn apply(plan: &Plan, host: &Host, journal: &mut Journal) -> Result<(), PrepareError> {
    if let Some(t) = &plan.bridge_tap {
        let owner = plan.qemu_identity.as_ref().map(|id| (id.uid, id.gid));
        tap::create(host, journal, t, owner)?;
    }
    if let Some(size) = plan.vm.hugepages {
        let pages = plan.vm.memory.bytes() / size.size().bytes();
        hugepages::reserve(host, journal, size, pages)?;
    }
    // QEMU mode's input-linux opens the real devices itself, unprivileged.
    let qemu_input = plan
        .vm
        .input
        .as_ref()
        .filter(|i| i.mode == crate::config::InputMode::Qemu);
    if let (Some(input), Some(id)) = (qemu_input, &plan.qemu_identity) {
        for path in [&input.keyboard, &input.mouse].into_iter().flatten() {
            device_owner::give(host, journal, path, id.into())?;
        }
    }
    for device in plan.usb.iter().filter_map(|u| u.found.as_ref()) {
        // QEMU takes the host's drivers off the device: given back by the
        // undo should QEMU die without doing it itself.
        usb_driver::record(journal, &device.port.to_string())?;
        // QEMU's libusb opens the device's usbfs node read-write.
        if let Some(id) = &plan.qemu_identity {
            device_owner::give(host, journal, &device.node(), id.into())?;
        }
    }
    if let Some(lg) = &plan.looking_glass {
        match (lg.device, &lg.owner) {
            (crate::config::LgDevice::Shm, owner) => {
                shared_memory::create_shm(host, journal, &lg.path, lg.size, owner.as_ref())?;
            }
            (crate::config::LgDevice::Kvmfr, Some(owner)) => {
                let to = device_owner::NewOwner {
                    uid: owner.uid,
                    gid: owner.gid,
                    mode: Some(shared_memory::MODE),
                };
                device_owner::give(host, journal, &lg.path, to)?;
            }
            // Not root: the node is as udev made it; the plan said so.
            (crate::config::LgDevice::Kvmfr, None) => {}
        }
    }
    if let Some(iso) = &plan.isolation {
        isolate::confine(iso, host, journal)?;
    }
    if plan.hostdevs.is_empty() {
        return Ok(());
    }
    let addresses: Vec<String> = plan
        .hostdevs
        .iter()
        .map(|h| h.address.to_string())
        .collect();
    // Not a host change: our own claim, read by other VMs' plans.
    let _ = std::fs::write(devices_path(plan), addresses.join("\n") + "\n");
    // vfio-pci first: a host that can't load it keeps its desktop.
    vfio::ensure_vfio_module(host)?;
    if let Some(t) = &plan.takeover {
        takeover::release(host, journal, t)?;
    }
    let mut groups = Vec::new();
    for hd in &plan.hostdevs {
        if let Some(group) = vfio::bind(host, journal, hd.address, hd.config.rescan_fallback)? {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        tracing::info!("{} bound to vfio-pci", hd.address);
    }
    if let Some(id) = &plan.qemu_identity {
        group_owner::give_groups(host, journal, &groups, id)?;
    }
    if let Some(t) = &plan.takeover {
        takeover::display_manager::restart_display_manager(host, journal, t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::prepare::journal::{read, undo_all};
    use crate::prepare::kernel::fake::FakeKernel;
    use crate::testing::Machine;

    /// A `[[usb]]` device's usbfs node goes to QEMU's user for the run,
    /// journaled, and back after.
    #[test]
    fn a_usb_devices_node_is_handed_to_qemus_user_and_back() {
        let host_tree = Machine::FixtureDesktop.build();
        let run = tempfile::tempdir().unwrap();
        let vm = crate::testing::vm(
            "memory = \"1G\"\n[qemu]\naccel = \"tcg\"\nuser = \"nobody\"\n[[usb]]\nids = \"046d:c52b\"\n",
        );
        let plan = crate::testing::plan_on(&host_tree, vm, true, run.path());
        let id = plan.qemu_identity.clone().expect("nobody");
        std::fs::create_dir_all(&plan.paths.run_dir).unwrap();
        let root = host_tree.root();
        let kernel = FakeKernel::new(host_tree.path());
        let host = Host::new(&root, &kernel);
        prepare(&plan, &host).unwrap();
        let node = host_tree.path().join("dev/bus/usb/001/009");
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (id.uid, id.gid));
        let journal = journal_path(&plan);
        assert!(matches!(
            read(&journal).unwrap().steps.as_slice(),
            [journal::Step::UsbDriver(u), journal::Step::ChownDevice(c)]
                if u.port == "1-7" && c.path == std::path::Path::new("/dev/bus/usb/001/009")
        ));
        assert!(undo_all(&journal, &host).complete());
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
}
