//! Handing a host input device to the identity QEMU runs as, for
//! `[input] mode = "qemu"`: QEMU's `input-linux` opens its `evdev` path
//! itself with plain open(2), as that identity, and udev makes the nodes
//! `root:input` 0660. The step keeps the owner it replaces, under the
//! configured (stable, `/dev/input/by-id`) name: its undo gives back
//! whatever node the name leads to then, a replugged one included (the
//! supervisor hands a replugged node over too, `Readd::owner`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};
use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::plan::QemuIdentity;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

/// The journal step: the device node at `path` given away; `uid` and
/// `gid` are its owner before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownDevice {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceOwnerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("giving input device {path} to QEMU's uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Gives the node `path` leads to to `id`, journaling its owner first.
pub fn give(
    host: &Host,
    journal: &mut Journal,
    path: &Path,
    id: &QemuIdentity,
) -> Result<(), DeviceOwnerError> {
    let node = host.root.path(path);
    let err = |source| DeviceOwnerError::Chown {
        path: path.to_path_buf(),
        uid: id.uid,
        source,
    };
    let meta = std::fs::metadata(&node).map_err(err)?;
    journal.record(&Step::ChownDevice(ChownDevice {
        path: path.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
    }))?;
    chown(
        &node,
        Some(Uid::from_raw(id.uid)),
        Some(Gid::from_raw(id.gid)),
    )
    .map_err(|e| err(e.into()))
}

impl Undo for ChownDevice {
    fn undo(&self, host: &Host) -> StepReport {
        let node = host.root.path(&self.path);
        let problem = match chown(
            &node,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        ) {
            // Unplugged: its next node is made by udev, root's again.
            Ok(()) | Err(nix::Error::ENOENT) => None,
            Err(e) => Some(format!("{}: {e}", node.display())),
        };
        StepReport {
            what: format!(
                "{} back to uid {} gid {}",
                self.path.display(),
                self.uid,
                self.gid
            ),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::journal::undo_all;
    use crate::prepare::kernel::fake::FakeKernel;

    #[test]
    fn an_input_device_goes_to_qemus_uid_and_back_through_its_stable_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::host::HostRoot::new(tmp.path());
        let kernel = FakeKernel::new(tmp.path());
        let host = Host::new(&root, &kernel);
        std::fs::create_dir_all(tmp.path().join("dev/input/by-id")).unwrap();
        std::fs::write(tmp.path().join("dev/input/event3"), "").unwrap();
        std::os::unix::fs::symlink("../event3", tmp.path().join("dev/input/by-id/kbd")).unwrap();
        let journal_path = tmp.path().join("journal");
        let mut journal = Journal::open(&journal_path).unwrap();
        let id = QemuIdentity {
            uid: 60600,
            gid: 60600,
            groups: vec![],
            label: "vmrun-60600".into(),
            dynamic: true,
        };
        give(&host, &mut journal, Path::new("/dev/input/by-id/kbd"), &id).unwrap();
        let node = tmp.path().join("dev/input/event3");
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (60600, 60600));
        let undone = undo_all(&journal_path, &host);
        assert!(
            undone.complete(),
            "{:?}",
            undone.problems().collect::<Vec<_>>()
        );
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
}
