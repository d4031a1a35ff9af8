//! Handing `/dev/vfio/N` to the identity QEMU runs as. The kernel creates
//! the node root-only (0600); QEMU, exec'd unprivileged, opens it itself
//! (`vfio_get_group`). The undo gives it back to root (the node vanishes
//! anyway once the group leaves vfio-pci).

use std::path::PathBuf;

use nix::unistd::{chown, Gid, Uid};
use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::plan::QemuIdentity;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

/// The journal step: `/dev/vfio/GROUP` handed to the QEMU user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownVfioGroup {
    pub group: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupOwnerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("giving {path} to user {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        #[source]
        source: nix::Error,
    },
}

/// Gives the nodes of `groups` to `id`, journaling each first.
pub fn give_groups(
    host: &Host,
    journal: &mut Journal,
    groups: &[u32],
    id: &QemuIdentity,
) -> Result<(), GroupOwnerError> {
    for &group in groups {
        let path = host.root.path(format!("/dev/vfio/{group}"));
        journal.record(&Step::ChownVfioGroup(ChownVfioGroup {
            group,
            uid: id.uid,
            gid: id.gid,
        }))?;
        chown(
            &path,
            Some(Uid::from_raw(id.uid)),
            Some(Gid::from_raw(id.gid)),
        )
        .map_err(|source| GroupOwnerError::Chown {
            path,
            user: id.label.clone(),
            source,
        })?;
    }
    Ok(())
}

impl Undo for ChownVfioGroup {
    fn undo(&self, host: &Host) -> StepReport {
        StepReport {
            what: format!("/dev/vfio/{} back to root", self.group),
            problem: return_group(host, self.group).err(),
        }
    }
}

fn return_group(host: &Host, group: u32) -> Result<(), String> {
    let path = host.root.path(format!("/dev/vfio/{group}"));
    match chown(&path, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
