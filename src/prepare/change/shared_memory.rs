//! Looking Glass's shared memory: the `/dev/shm` file vmrun makes before
//! QEMU starts and removes after (`CreateShm`). (The kvmfr module's
//! `/dev/kvmfr0` is handed over by `device_owner`.) Either way the client's
//! user owns it with QEMU's group, mode 0660: QEMU (exec'd as its own uid)
//! opens it through the group bits, the client as its owner.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::config::ByteSize;
use crate::plan::looking_glass::LgOwner;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

/// Owner and group may read and write; nobody else.
pub(crate) const MODE: u32 = 0o660;

/// The journal step: the shm file at `path` was made by vmrun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateShm {
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path} already exists: an earlier run left it, or another program uses the name; run `vmrun restore` for this VM, or remove it once no Looking Glass client or VM uses it")]
    Exists { path: PathBuf },
    #[error("making Looking Glass's shared memory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Makes the shm file `path` of `size` bytes, owned by `owner` (as is when
/// `None`: vmrun is not root), journaled first.
///
/// O_EXCL|O_NOFOLLOW: /dev/shm is world-writable, so a name another user
/// made first (a symlink to a root file, say) is refused, never followed
/// or reused.
pub fn create_shm(
    host: &Host,
    journal: &mut Journal,
    path: &Path,
    size: ByteSize,
    owner: Option<&LgOwner>,
) -> Result<(), SharedMemoryError> {
    let real = host.root.path(path);
    if real.symlink_metadata().is_ok() {
        return Err(SharedMemoryError::Exists {
            path: path.to_path_buf(),
        });
    }
    journal.record(&Step::CreateShm(CreateShm {
        path: path.to_path_buf(),
    }))?;
    let err = |source| SharedMemoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&real)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => SharedMemoryError::Exists {
                path: path.to_path_buf(),
            },
            _ => err(e),
        })?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid)).map_err(err)?;
    }
    file.set_permissions(Permissions::from_mode(MODE))
        .map_err(err)?;
    // QEMU would grow it too, but the client may be started first.
    file.set_len(size.bytes()).map_err(err)
}

impl Undo for CreateShm {
    fn undo(&self, host: &Host) -> StepReport {
        let real = host.root.path(&self.path);
        // Its owner may have replaced the file while the VM ran (the name is
        // in their reach): a directory there is theirs, not vmrun's, and a
        // journal that could never be replayed would block the VM's restore.
        if real.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return StepReport {
                what: format!("{} is a directory now: left as is", self.path.display()),
                problem: None,
            };
        }
        // unlink(2) removes a name, never what a symlink put there points at.
        let problem = match std::fs::remove_file(&real) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{}: {e}", real.display())),
        };
        StepReport {
            what: format!("{} removed", self.path.display()),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::journal::undo_all;
    use crate::prepare::kernel::fake::FakeKernel;
    use std::os::unix::fs::MetadataExt;

    fn owner() -> LgOwner {
        LgOwner {
            uid: 65534,
            gid: 60600,
            user: "nobody".into(),
        }
    }

    #[test]
    fn shm_file_is_made_owned_and_sized_then_removed_by_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::host::HostRoot::new(tmp.path());
        let kernel = FakeKernel::new(tmp.path());
        let host = Host::new(&root, &kernel);
        std::fs::create_dir_all(tmp.path().join("dev/shm")).unwrap();
        let journal_path = tmp.path().join("journal");
        let mut journal = Journal::open(&journal_path).unwrap();
        let path = Path::new("/dev/shm/looking-glass-w");
        let size = ByteSize::from_bytes(32 * ByteSize::MIB);
        let who = nix::unistd::geteuid().is_root().then(owner);
        create_shm(&host, &mut journal, path, size, who.as_ref()).unwrap();
        let meta = std::fs::metadata(root.path(path)).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.len()), (0o660, size.bytes()));
        if who.is_some() {
            assert_eq!((meta.uid(), meta.gid()), (65534, 60600));
        }
        let undone = undo_all(&journal_path, &host);
        assert!(undone.complete());
        assert!(!root.path(path).exists());
    }

    #[test]
    fn a_directory_put_in_the_files_place_is_left_and_does_not_block_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::host::HostRoot::new(tmp.path());
        let kernel = FakeKernel::new(tmp.path());
        let host = Host::new(&root, &kernel);
        std::fs::create_dir_all(tmp.path().join("dev/shm/looking-glass-w")).unwrap();
        let step = CreateShm {
            path: "/dev/shm/looking-glass-w".into(),
        };
        assert_eq!(step.undo(&host).problem, None);
        assert!(tmp.path().join("dev/shm/looking-glass-w").is_dir());
    }

    #[test]
    fn an_existing_name_is_refused_and_not_journaled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::host::HostRoot::new(tmp.path());
        let kernel = FakeKernel::new(tmp.path());
        let host = Host::new(&root, &kernel);
        std::fs::create_dir_all(tmp.path().join("dev/shm")).unwrap();
        let target = tmp.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("dev/shm/looking-glass-w")).unwrap();
        let journal_path = tmp.path().join("journal");
        let mut journal = Journal::open(&journal_path).unwrap();
        let path = Path::new("/dev/shm/looking-glass-w");
        let r = create_shm(
            &host,
            &mut journal,
            path,
            ByteSize::from_bytes(1 << 20),
            None,
        );
        assert!(matches!(r, Err(SharedMemoryError::Exists { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::read_to_string(&journal_path).unwrap().is_empty());
    }
}
