//! Changing a host file for `--apply`: the old file is copied to a backup
//! first, the new one is written beside it and renamed over (so a crash
//! leaves either the old or the new file, never half of one), and the
//! caller is told how to undo.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    #[error("backing up {path} to {backup}: {source}")]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one change did, and how to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub path: PathBuf,
    /// `None` when the file did not exist before.
    pub backup: Option<PathBuf>,
}

impl Change {
    /// The shell command that undoes this change.
    pub(crate) fn undo(&self) -> String {
        match &self.backup {
            Some(b) => format!("cp -p '{}' '{}'", b.display(), self.path.display()),
            None => format!("rm '{}'", self.path.display()),
        }
    }
}

impl Change {
    /// Takes the change back now (what `undo` tells a person to do): the
    /// backup is copied over the file, or a file that was new is removed.
    /// The backup itself stays.
    pub(crate) fn revert(&self) -> io::Result<()> {
        match &self.backup {
            Some(b) => fs::copy(b, &self.path).map(drop),
            None => fs::remove_file(&self.path),
        }
    }
}

/// `path.vmrun-backup`, or `path.vmrun-backup.N` when that is taken: an
/// earlier backup is the user's real original and is never overwritten.
fn backup_path(path: &Path) -> PathBuf {
    let base = format!("{}.vmrun-backup", path.display());
    (1..)
        .map(|n| match n {
            1 => PathBuf::from(&base),
            n => PathBuf::from(format!("{base}.{n}")),
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from(base))
}

/// Copies `path` to a backup if it exists, then replaces it with `contents`.
pub(crate) fn write_with_backup(path: &Path, contents: &str) -> Result<Change, BackupError> {
    let backup = if path.exists() {
        let backup = backup_path(path);
        fs::copy(path, &backup).map_err(|source| BackupError::Backup {
            path: path.to_path_buf(),
            backup: backup.clone(),
            source,
        })?;
        Some(backup)
    } else {
        None
    };
    let write_err = |source| BackupError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = PathBuf::from(format!("{}.vmrun-new", path.display()));
    fs::write(&tmp, contents).map_err(write_err)?;
    if let Ok(meta) = fs::metadata(path) {
        let _ = fs::set_permissions(&tmp, meta.permissions());
    }
    fs::rename(&tmp, path).map_err(write_err)?;
    Ok(Change {
        path: path.to_path_buf(),
        backup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_backed_up_and_the_first_backup_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("modules");
        fs::write(&file, "original\n").unwrap();
        let first = write_with_backup(&file, "one\n").unwrap();
        let second = write_with_backup(&file, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "two\n");
        assert_eq!(
            fs::read_to_string(first.backup.as_ref().unwrap()).unwrap(),
            "original\n"
        );
        assert_eq!(
            fs::read_to_string(second.backup.as_ref().unwrap()).unwrap(),
            "one\n"
        );
        assert!(first.undo().starts_with("cp -p "));
        second.revert().unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "one\n");
    }

    #[test]
    fn a_new_file_has_no_backup_and_is_undone_by_removal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf.d/vfio.conf");
        let change = write_with_backup(&file, "x\n").unwrap();
        assert_eq!(change.backup, None);
        assert_eq!(change.undo(), format!("rm '{}'", file.display()));
        change.revert().unwrap();
        assert!(!file.exists());
    }
}
