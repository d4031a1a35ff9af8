//! Whether root may use a file or directory that a config search found, or
//! a program a config names: only if no other user could have written it,
//! nor swapped it for another, i.e. it and every directory above it belong
//! to root and nobody else may write to them.
//!
//! A directory with the sticky bit (`/tmp`, mode 1777) may sit *above* the
//! path: the kernel lets only an entry's owner (or root) rename or remove it
//! there (`unlink(2)`, EPERM "the directory containing pathname has the
//! sticky bit set"), so a root-owned entry in it cannot be replaced.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why root must not use a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("{path} belongs to uid {owner}, not root")]
    Owner { path: PathBuf, owner: u32 },
    #[error("{path} has mode {mode:04o}: users other than root may write to it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotFile { path: PathBuf },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} has mode {mode:04o}: users other than its owner may replace what is in it")]
    SharedDir { path: PathBuf, mode: u32 },
    #[error(
        "uids {first} and {second} own directories on the way to {path}: either could replace it"
    )]
    TwoOwners {
        path: PathBuf,
        first: u32,
        second: u32,
    },
}

/// Whether the process runs as root, the only case these checks apply to:
/// another user's files can't give a user more than they already have.
pub(crate) fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `dir` and every directory above it belong to root and no one else may
/// write to them (through symbolic links too: see `chain`).
pub(crate) fn root_may_use_dir(dir: &Path) -> Result<(), Untrusted> {
    chain(dir, Last::Dir)
}

/// `file` is a regular file that belongs to root, no one else may write to
/// it, and the same holds for every directory above it.
pub(crate) fn root_may_use_file(file: &Path) -> Result<(), Untrusted> {
    chain(file, Last::File)
}

#[derive(Clone, Copy, PartialEq)]
enum Last {
    Dir,
    File,
}

/// Checks each prefix of `path` as written (a symbolic link must be root's,
/// made in a directory already checked), then the same for the path the
/// links lead to: a link root made can still point into another user's dir.
fn chain(path: &Path, last: Last) -> Result<(), Untrusted> {
    let absolute = absolute(path)?;
    walk(&absolute, last)?;
    let real = std::fs::canonicalize(&absolute).map_err(|e| unreadable(&absolute, &e))?;
    if real != absolute {
        walk(&real, last)?;
    }
    Ok(())
}

fn walk(path: &Path, last: Last) -> Result<(), Untrusted> {
    let mut prefix = PathBuf::new();
    let count = path.components().count();
    for (i, component) in path.components().enumerate() {
        prefix.push(component);
        if matches!(component, Component::CurDir | Component::ParentDir) {
            continue;
        }
        let is_last = i + 1 == count;
        let meta = std::fs::symlink_metadata(&prefix).map_err(|e| unreadable(&prefix, &e))?;
        let owner = meta.uid();
        if owner != 0 {
            return Err(Untrusted::Owner {
                path: prefix,
                owner,
            });
        }
        if meta.file_type().is_symlink() {
            // A link's own mode means nothing; where it leads is checked
            // by the second walk.
            continue;
        }
        if is_last && last == Last::File && !meta.is_file() {
            return Err(Untrusted::NotFile { path: prefix });
        }
        let mode = meta.mode() & 0o7777;
        let sticky_above = !is_last && meta.is_dir() && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_above {
            return Err(Untrusted::Writable { path: prefix, mode });
        }
    }
    Ok(())
}

/// Who besides root could replace what `path` leads to: the owner of a
/// directory on the way (as written and after its links) may rename or
/// remove its entries, and in a sticky one the owner of the entry may
/// (`unlink(2)`). `None`: root alone. A group- or world-writable directory
/// without the sticky bit, or two such users, leave no one to answer for
/// the path: refused. Who owns the file itself doesn't matter: its owner
/// can change its bytes, not which file the path names.
pub(crate) fn who_controls(path: &Path) -> Result<Option<u32>, Untrusted> {
    let absolute = absolute(path)?;
    let real = std::fs::canonicalize(&absolute).map_err(|e| unreadable(&absolute, &e))?;
    let mut controller = None;
    for p in [&absolute, &real] {
        let mut prefix = PathBuf::new();
        // The owner of the entry a sticky dir holds next, if not root.
        let mut sticky = false;
        for component in p.components() {
            prefix.push(component);
            if matches!(component, Component::CurDir | Component::ParentDir) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&prefix).map_err(|e| unreadable(&prefix, &e))?;
            let mut claim = |uid: u32| match controller {
                _ if uid == 0 => Ok(()),
                Some(first) if first != uid => Err(Untrusted::TwoOwners {
                    path: absolute.clone(),
                    first,
                    second: uid,
                }),
                _ => {
                    controller = Some(uid);
                    Ok(())
                }
            };
            if sticky {
                claim(meta.uid())?;
            }
            sticky = false;
            if !meta.is_dir() {
                continue;
            }
            claim(meta.uid())?;
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                if mode & 0o1000 == 0 {
                    return Err(Untrusted::SharedDir { path: prefix, mode });
                }
                sticky = true;
            }
        }
    }
    Ok(controller)
}

fn absolute(path: &Path) -> Result<PathBuf, Untrusted> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(path))
        .map_err(|e| unreadable(path, &e))
}

fn unreadable(path: &Path, e: &std::io::Error) -> Untrusted {
    Untrusted::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    // The tests run as root (here and in CI): they make files root owns
    // and give some away to uid 65534.

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn give_away(path: &Path) {
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(nobody),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// A root-owned tree under the (sticky) temp dir: `d/vms/x.toml`.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let vms = tmp.path().join("d/vms");
        fs::create_dir_all(&vms).unwrap();
        let file = vms.join("x.toml");
        fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        (tmp, vms, file)
    }

    #[test]
    fn a_root_tree_under_the_sticky_tmp_is_trusted() {
        let (_tmp, vms, file) = tree();
        assert_eq!(root_may_use_dir(&vms), Ok(()));
        assert_eq!(root_may_use_file(&file), Ok(()));
    }

    #[test]
    fn a_dir_another_user_owns_above_the_file_is_refused() {
        let (tmp, vms, file) = tree();
        let d = tmp.path().join("d");
        give_away(&d);
        assert!(
            matches!(root_may_use_dir(&vms), Err(Untrusted::Owner { path, owner: 65534 }) if path == d)
        );
        assert!(matches!(
            root_may_use_file(&file),
            Err(Untrusted::Owner { .. })
        ));
    }

    #[test]
    fn a_group_writable_dir_or_file_is_refused() {
        let (_tmp, vms, file) = tree();
        chmod(&file, 0o664);
        assert!(matches!(
            root_may_use_file(&file),
            Err(Untrusted::Writable { mode: 0o664, .. })
        ));
        chmod(&file, 0o644);
        chmod(&vms, 0o777);
        assert!(matches!(
            root_may_use_dir(&vms),
            Err(Untrusted::Writable { .. })
        ));
        // Sticky helps only above: in a 1777 dir anyone may add files.
        chmod(&vms, 0o1777);
        assert!(matches!(
            root_may_use_dir(&vms),
            Err(Untrusted::Writable { .. })
        ));
    }

    #[test]
    fn a_file_another_user_owns_is_refused() {
        let (_tmp, _vms, file) = tree();
        give_away(&file);
        assert!(matches!(
            root_may_use_file(&file),
            Err(Untrusted::Owner { owner: 65534, .. })
        ));
    }

    #[test]
    fn a_link_leading_into_another_users_dir_is_refused() {
        let (tmp, _vms, _file) = tree();
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        give_away(&theirs);
        let link = tmp.path().join("d/link");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        assert!(matches!(
            root_may_use_dir(&link),
            Err(Untrusted::Owner { path, .. }) if path == theirs
        ));
    }

    #[test]
    fn a_link_another_user_made_is_refused_even_to_roots_dir() {
        let (tmp, vms, _file) = tree();
        let link = tmp.path().join("d/link");
        std::os::unix::fs::symlink(&vms, &link).unwrap();
        assert_eq!(root_may_use_dir(&link), Ok(()));
        give_away(&link);
        assert!(matches!(
            root_may_use_dir(&link),
            Err(Untrusted::Owner { path, .. }) if path == link
        ));
    }

    #[test]
    fn a_missing_path_is_unreadable() {
        let (tmp, _vms, _file) = tree();
        assert!(matches!(
            root_may_use_dir(&tmp.path().join("nope")),
            Err(Untrusted::Unreadable { .. })
        ));
    }

    #[test]
    fn a_path_through_one_users_dir_is_that_users() {
        let (tmp, vms, file) = tree();
        assert_eq!(who_controls(&file), Ok(None), "root's alone");
        give_away(&vms);
        assert_eq!(who_controls(&file), Ok(Some(65534)));
        // A link in root's dir that leads there: the same user.
        let link = tmp.path().join("d/link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(who_controls(&link), Ok(Some(65534)));
    }

    #[test]
    fn the_owner_of_the_file_alone_controls_nothing() {
        let (_tmp, _vms, file) = tree();
        give_away(&file);
        assert_eq!(who_controls(&file), Ok(None));
    }

    #[test]
    fn in_a_sticky_dir_the_entrys_owner_controls_it() {
        let (tmp, vms, file) = tree();
        chmod(&vms, 0o1777);
        assert_eq!(who_controls(&file), Ok(None));
        give_away(&file);
        assert_eq!(who_controls(&file), Ok(Some(65534)));
        // /tmp itself, sticky above a root dir, gives no one anything.
        let d = tmp.path().join("d");
        assert_eq!(who_controls(&d), Ok(None));
    }

    #[test]
    fn a_shared_dir_or_two_users_on_the_way_are_refused() {
        let (tmp, vms, file) = tree();
        chmod(&vms, 0o775);
        assert!(matches!(
            who_controls(&file),
            Err(Untrusted::SharedDir { mode: 0o775, .. })
        ));
        chmod(&vms, 0o755);
        give_away(&vms);
        let d = tmp.path().join("d");
        nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(65533)), None).unwrap();
        assert!(matches!(
            who_controls(&file),
            Err(Untrusted::TwoOwners {
                first: 65533,
                second: 65534,
                ..
            })
        ));
    }
}
