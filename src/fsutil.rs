//! Small filesystem helpers shared by the stages that make vmrun's own
//! directories (prepare's device locks, the uid locks, the supervisor's
//! run dir). Below all of them, so none imports another for it.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A directory of vmrun's that could not be made, or that exists but
/// another user could have made or could change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a symbolic link, not a directory: vmrun does not follow links for its own dirs; remove it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory: remove it")]
    NotDir { path: PathBuf },
    #[error("{path} belongs to uid {owner}, not to uid {euid} running vmrun: another user made it; remove it")]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "{path} has mode {mode:03o}: other users may write to it; `chmod go-w` it or remove it"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Creates `dir` and its missing parents, mode 0700: vmrun's run and state
/// dirs hold sockets and journals that only their owner may reach. A `dir`
/// that already exists is used only if `verify_private_dir` accepts it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), DirError> {
    create(dir)?;
    verify_private_dir(dir)
}

/// Whether `dir` is safe to keep vmrun's files in and to trust what it
/// holds (a journal, a pidfile): a real directory, not a symbolic link
/// (checked with lstat(2), which does not follow one), owned by the
/// effective uid, with no group or other write permission.
pub(crate) fn verify_private_dir(dir: &Path) -> Result<(), DirError> {
    let euid = nix::unistd::geteuid().as_raw();
    check(dir, &lstat(dir)?, Some(euid))
}

fn create(dir: &Path) -> Result<(), DirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DirError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn lstat(dir: &Path) -> Result<Metadata, DirError> {
    std::fs::symlink_metadata(dir).map_err(|source| DirError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn check(dir: &Path, meta: &Metadata, owner: Option<u32>) -> Result<(), DirError> {
    let path = dir.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(DirError::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(DirError::NotDir { path });
    }
    if let Some(euid) = owner {
        if meta.uid() != euid {
            return Err(DirError::ForeignOwner {
                path,
                owner: meta.uid(),
                euid,
            });
        }
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::Writable { path, mode });
    }
    Ok(())
}

/// Why [`claim_file`] got no lock.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// A live process holds it; what it wrote there (its VM's name).
    Held(String),
    Io(io::Error),
}

/// An exclusive flock(2) on `path` (made if missing), taken without waiting,
/// with `holder` written into it for whoever finds it taken. The kernel
/// drops the lock when the holding process dies, so a `kill -9` leaves no
/// stale claim behind.
pub(crate) fn claim_file(path: &Path, holder: &str) -> Result<Flock<File>, ClaimError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(ClaimError::Io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            return Err(ClaimError::Held(text.trim().to_string()));
        }
        Err((_, e)) => return Err(ClaimError::Io(e.into())),
    };
    lock.set_len(0).map_err(ClaimError::Io)?;
    writeln!(*lock, "{holder}").map_err(ClaimError::Io)?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn give_away(path: &Path) {
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(path, Some(nobody), None).unwrap();
    }

    #[test]
    fn create_private_dir_makes_missing_dirs_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        for d in [tmp.path().join("a"), dir] {
            assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        }
    }

    #[test]
    fn create_private_dir_accepts_its_own_0755_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        create_private_dir(&dir).unwrap();
    }

    #[test]
    fn create_private_dir_refuses_a_world_writable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o777);
        let err = create_private_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, DirError::Writable { path, mode: 0o777 } if *path == dir),
            "{err}"
        );
    }

    #[test]
    fn create_private_dir_refuses_a_group_writable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o770);
        let err = create_private_dir(&dir).unwrap_err();
        assert!(matches!(err, DirError::Writable { .. }), "{err}");
    }

    #[test]
    fn create_private_dir_refuses_a_symlink_to_a_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let link = tmp.path().join("d");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create_private_dir(&link).unwrap_err();
        assert!(matches!(err, DirError::Symlink { .. }), "{err}");
    }

    #[test]
    fn create_private_dir_refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("d");
        fs::write(&file, "").unwrap();
        let err = create_private_dir(&file).unwrap_err();
        assert!(matches!(err, DirError::Io { .. }), "{err}");
        let err = verify_private_dir(&file).unwrap_err();
        assert!(matches!(err, DirError::NotDir { .. }), "{err}");
    }

    #[test]
    fn create_private_dir_refuses_another_users_dir() {
        // Runs as root (here and in CI): chown(2) to another uid needs it.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        give_away(&dir);
        let err = create_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, DirError::ForeignOwner { owner: 65534, .. }),
            "{err}"
        );
    }
}
