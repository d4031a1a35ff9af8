//! `[looking_glass] spice` as root: the SPICE socket QEMU bound is handed
//! to the client's user, and to no one else.
//!
//! connect(2) on a unix socket needs write permission on the socket file
//! and search permission on every dir above it (unix(7)). QEMU, running
//! as its own uid, binds the socket with its umask in its own 0700 dir
//! under the 0711 spice base. Once QMP answers, SPICE has bound it (QEMU
//! starts SPICE's server during its init, before its main loop serves
//! QMP), and vmrun as root makes the socket the client user's with QEMU's
//! group, mode 0660, and opens QEMU's dir to passing (0711): the one
//! entry there refuses every other uid. The dir goes with the run, so
//! nothing needs giving back.

use std::os::fd::AsFd;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fchmodat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

use crate::plan::Plan;
use crate::qemu::handoff::open_dir;

#[derive(Debug, thiserror::Error)]
pub(super) enum ShareError {
    #[error("{0}")]
    Dir(#[from] crate::qemu::handoff::HandoffError),
    #[error("{path}: {what}: {errno}")]
    Sys {
        path: String,
        what: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("{0} is not the socket QEMU bound")]
    NotSocket(String),
}

/// Hands the SPICE socket to the Looking Glass client's user, when there
/// is one to hand it to (vmrun root, `spice = true`); `Ok(None)` otherwise.
pub(super) fn share_with_client(plan: &Plan) -> Result<Option<u32>, ShareError> {
    let Some(lg) = plan.looking_glass.as_ref().filter(|lg| lg.spice) else {
        return Ok(None);
    };
    let Some(owner) = &lg.owner else {
        return Ok(None);
    };
    let socket = &plan.paths.spice_socket;
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Ok(None);
    };
    let shown = socket.display().to_string();
    let sys = |what| {
        let path = shown.clone();
        move |errno| ShareError::Sys { path, what, errno }
    };
    // The dir is QEMU's uid's: every step is relative to it and never
    // follows a link QEMU could have put in the socket's place.
    let dir = open_dir(dir)?;
    let stat = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(sys("stat"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(ShareError::NotSocket(shown));
    }
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys("chown"))?;
    fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(0o660),
        FchmodatFlags::NoFollowSymlink,
    )
    .map_err(sys("chmod"))?;
    fchmod(dir.as_fd(), Mode::from_bits_truncate(0o711)).map_err(sys("chmod its dir"))?;
    Ok(Some(owner.uid))
}
