//! The only writer of host state. Every change goes through the journal
//! first; a failure part way rolls back what was done, in reverse, before
//! the error is returned. `teardown` replays the same journal.

pub mod hugepages;
pub mod journal;
pub mod sysfs;
pub mod vfio;

#[cfg(test)]
pub(crate) mod fake_kernel;

use std::path::PathBuf;

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
    plan.paths.run_dir.join("devices")
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
    vfio::ensure_vfio_module(host)?;
    let mut groups = Vec::new();
    for hd in &plan.hostdevs {
        if let Some(group) = vfio::bind(host, journal, hd.address)? {
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
