//! Handing a host device node over for the VM's life: an input device to
//! the identity QEMU runs as, for `[input] mode = "qemu"` (QEMU's
//! `input-linux` opens its `evdev` path itself with plain open(2), and
//! udev makes the nodes `root:input` 0660), or Looking Glass's
//! `/dev/kvmfr0` to the client's user with QEMU's group, mode 0660. The
//! step keeps the owner (and mode) it replaces, under the configured name:
//! its undo gives back whatever node the name leads to then, a replugged
//! one included (the supervisor hands a replugged node over too,
//! `Readd::owner`).

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};
use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::plan::QemuIdentity;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

/// The journal step: the device node at `path` given away; `uid` and
/// `gid` are its owner before, `mode` its mode when that was changed too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownDevice {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Who gets a node, and the mode it gets (`None`: left as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOwner {
    pub uid: u32,
    pub gid: u32,
    pub mode: Option<u32>,
}

impl From<&QemuIdentity> for NewOwner {
    fn from(id: &QemuIdentity) -> Self {
        Self {
            uid: id.uid,
            gid: id.gid,
            mode: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceOwnerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("giving device {path} to uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Gives the node `path` leads to to `to`, journaling what it had first.
pub fn give(
    host: &Host,
    journal: &mut Journal,
    path: &Path,
    to: NewOwner,
) -> Result<(), DeviceOwnerError> {
    let node = host.root.path(path);
    let err = |source| DeviceOwnerError::Chown {
        path: path.to_path_buf(),
        uid: to.uid,
        source,
    };
    let meta = std::fs::metadata(&node).map_err(err)?;
    journal.record(&Step::ChownDevice(ChownDevice {
        path: path.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: to.mode.map(|_| meta.mode() & 0o7777),
    }))?;
    chown(
        &node,
        Some(Uid::from_raw(to.uid)),
        Some(Gid::from_raw(to.gid)),
    )
    .map_err(|e| err(e.into()))?;
    match to.mode {
        Some(mode) => std::fs::set_permissions(&node, Permissions::from_mode(mode)).map_err(err),
        None => Ok(()),
    }
}

impl Undo for ChownDevice {
    fn undo(&self, host: &Host) -> StepReport {
        let node = host.root.path(&self.path);
        let back = chown(
            &node,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(std::io::Error::from)
        .and_then(|()| match self.mode {
            Some(mode) => std::fs::set_permissions(&node, Permissions::from_mode(mode)),
            None => Ok(()),
        });
        let problem = match back {
            // Unplugged, or the module unloaded: its next node is made by
            // udev, as udev makes it.
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{}: {e}", node.display())),
        };
        let mode = self
            .mode
            .map(|m| format!(" mode {m:o}"))
            .unwrap_or_default();
        StepReport {
            what: format!(
                "{} back to uid {} gid {}{mode}",
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
        give(
            &host,
            &mut journal,
            Path::new("/dev/input/by-id/kbd"),
            (&id).into(),
        )
        .unwrap();
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

    #[test]
    fn a_device_node_with_a_new_mode_gets_its_old_mode_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::host::HostRoot::new(tmp.path());
        let kernel = FakeKernel::new(tmp.path());
        let host = Host::new(&root, &kernel);
        std::fs::create_dir_all(tmp.path().join("dev")).unwrap();
        let node = tmp.path().join("dev/kvmfr0");
        std::fs::write(&node, "").unwrap();
        std::fs::set_permissions(&node, Permissions::from_mode(0o600)).unwrap();
        let before = std::fs::metadata(&node).unwrap();
        let journal_path = tmp.path().join("journal");
        let mut journal = Journal::open(&journal_path).unwrap();
        // As root the node goes to another uid; otherwise only the mode
        // can change.
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (65534, 60600)
        } else {
            (before.uid(), before.gid())
        };
        let to = NewOwner {
            uid,
            gid,
            mode: Some(0o660),
        };
        give(&host, &mut journal, Path::new("/dev/kvmfr0"), to).unwrap();
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (uid, gid, 0o660)
        );
        assert!(undo_all(&journal_path, &host).complete());
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (before.uid(), before.gid(), 0o600)
        );
    }
}
