//! Opening a file for QEMU with the rights of the user who controls its
//! path. Root opens QEMU's files and hands them over, but a disk in a
//! user's directory is that user's to point anywhere (a link to
//! `/etc/shadow` swapped in after the config was written), so it is opened
//! by a child that became that user: the hidden verb `vmrun __open-as`
//! drops to the user (`exec_as::drop_to`), opens the path, prints the fd
//! number and holds the file until its stdin closes. Root then reopens that
//! very file through `/proc/PID/fd/N`: the magic link names the open file,
//! not a path, so what root gets is exactly what the user could open.
//! Passing the fd over a socket (SCM_RIGHTS) would need `unsafe` to adopt it.
//! The child can't be traced or have its fds swapped by the user: a change
//! of uid makes a process non-dumpable (prctl(2), PR_SET_DUMPABLE).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::{Uid, User};

use super::exec_as::{self, UserIds};
use crate::host::file_kind::{self, Wanted};

/// The hidden verb's name.
pub(crate) const VERB: &str = "__open-as";

/// Opens `path` (read-only, or read-write when `writable`) as `uid`, with
/// its primary and supplementary groups from the user database.
pub(crate) fn open_as(uid: u32, path: &Path, writable: bool) -> io::Result<File> {
    let user = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .ok_or_else(|| io::Error::other(format!("uid {uid} has no entry in the user database")))?;
    let name = std::ffi::CString::new(user.name.as_bytes()).map_err(io::Error::other)?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(io::Error::from)?
        .iter()
        .map(|g| g.as_raw())
        .collect();
    let ids = UserIds {
        uid,
        gid: user.gid.as_raw(),
        groups,
    };
    let mut child = Command::new("/proc/self/exe")
        .args(args(&ids, writable, path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let reopened = match line.trim().parse::<u32>() {
        Ok(fd) => open_nonblocking(
            Path::new(&format!("/proc/{}/fd/{fd}", child.id())),
            writable,
        ),
        Err(_) => {
            let mut why = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut why);
            }
            Err(io::Error::other(format!(
                "as {} (uid {uid}, who controls the path): {}",
                user.name,
                why.trim()
            )))
        }
    };
    // Its stdin closed, the child lets go and exits.
    drop(child.stdin.take());
    let _ = child.wait();
    reopened
}

/// The arguments that make `vmrun` open `path` as `ids` and hold it.
pub(crate) fn args(ids: &UserIds, writable: bool, path: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![VERB.into()];
    a.extend(ids.to_args());
    a.extend(writable.then(|| "--writable".into()));
    a.push("--".into());
    a.push(path.as_os_str().to_owned());
    a
}

/// Opens a disk, ISO or ROM without blocking and refuses any but a
/// regular file or a block device (`file_kind`): open(2) of a FIFO waits
/// for its other end unless O_NONBLOCK. The flag is cleared again, as
/// QEMU's file-posix expects blocking I/O on the fd it is handed (for a
/// regular file or a block device Linux ignores it anyway).
pub(crate) fn open_nonblocking(path: &Path, writable: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)?;
    file_kind::check_opened(&file, Wanted::Image)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(file)
}

/// The child's side: becomes `uid`, opens `path`, prints the fd, waits
/// for stdin to close. Returns the exit status.
pub(crate) fn hold_open(ids: &UserIds, writable: bool, path: &Path) -> i32 {
    if let Err(e) = exec_as::drop_to(ids) {
        eprintln!("{e}");
        return 1;
    }
    let file = match open_nonblocking(path, writable) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 1;
        }
    };
    println!("{}", file.as_raw_fd());
    // Held until root has reopened it.
    let _ = io::stdin().read_to_end(&mut Vec::new());
    0
}

#[cfg(test)]
mod tests {
    // The parent's side needs vmrun's own binary as `/proc/self/exe`: the
    // CLI tests (tests/hostile_image.rs) run it for real.
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_and_a_file_is_left_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("disk.img");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer ever comes: without O_NONBLOCK this open would hang.
        let err = open_nonblocking(&fifo, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");

        let file = tmp.path().join("ok.img");
        std::fs::write(&file, b"").unwrap();
        let opened = open_nonblocking(&file, true).unwrap();
        let flags = OFlag::from_bits_truncate(fcntl(&opened, FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK), "{flags:?}");
        assert!(flags.contains(OFlag::O_RDWR), "{flags:?}");
    }

    #[test]
    fn a_uid_without_a_user_is_refused_before_any_child() {
        let err = open_as(4_000_000_000, Path::new("/etc/hostname"), false).unwrap_err();
        assert!(err.to_string().contains("no entry"), "{err}");
    }
}
