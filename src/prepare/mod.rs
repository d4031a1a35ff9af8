//! The only writer of host state. Every change goes through the journal
//! first; a failure part way rolls back what was done, in reverse, before
//! the error is returned. `teardown` replays the same journal.

pub mod command;
pub mod hugepages;
pub mod journal;
pub mod rom;
pub mod sysfs;
pub mod takeover;
pub mod vfio;

#[cfg(test)]
pub(crate) mod fake_kernel;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, Gid, Uid, User};

use crate::plan::Plan;
use journal::{Journal, Step};
pub use vfio::Host;

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
    #[error("giving {path} to user {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        #[source]
        source: nix::Error,
    },
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
        let io = |source| PrepareError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(PrepareError::DeviceBusy {
                    address: hd.address.to_string(),
                    holder: holder.trim().to_string(),
                });
            }
            Err((_, e)) => return Err(io(e.into())),
        };
        let _ = lock.set_len(0);
        let _ = writeln!(*lock, "{}", plan.vm.name);
        locks.0.push(lock);
    }
    Ok(locks)
}

/// Prepares the host for `plan`. On error, everything already changed has
/// been undone, and the report of that undo is returned with the error.
pub fn prepare(plan: &Plan, host: &Host) -> Result<(), (PrepareError, crate::teardown::Report)> {
    let path = journal_path(plan);
    let result = Journal::open(&path)
        .map_err(PrepareError::from)
        .and_then(|mut journal| apply(plan, host, &mut journal));
    result.map_err(|e| {
        tracing::error!("preparing the host failed: {e}; undoing what was done");
        (e, crate::teardown::replay(&path, host))
    })
}

fn apply(plan: &Plan, host: &Host, journal: &mut Journal) -> Result<(), PrepareError> {
    if let Some(size) = plan.vm.hugepages {
        let pages = plan.vm.memory.bytes() / size.size().bytes();
        hugepages::reserve(host, journal, size, pages)?;
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
    if let Some(name) = &plan.qemu_user {
        give_groups(host, journal, &groups, name)?;
    }
    Ok(())
}

/// `/dev/vfio/N` is created root-only (0600); a QEMU that dropped root
/// needs it for hotplug and reset paths after start.
fn give_groups(
    host: &Host,
    journal: &mut Journal,
    groups: &[u32],
    name: &str,
) -> Result<(), PrepareError> {
    let Ok(Some(user)) = User::from_name(name) else {
        return Ok(());
    };
    for &group in groups {
        let path = host.root.path(format!("/dev/vfio/{group}"));
        journal.record(&Step::ChownVfioGroup {
            group,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })?;
        chown(&path, Some(user.uid), Some(user.gid)).map_err(|source| PrepareError::Chown {
            path,
            user: name.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Gives a `/dev/vfio/N` node back to root (the node vanishes anyway once
/// the group leaves vfio-pci).
pub(crate) fn return_group(host: &Host, group: u32) -> Result<(), String> {
    let path = host.root.path(format!("/dev/vfio/{group}"));
    match chown(&path, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
