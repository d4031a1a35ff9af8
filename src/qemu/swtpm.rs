//! The TPM 2.0 emulator. QEMU's `tpm-emulator` backend talks to a running
//! `swtpm socket`; vmrun binds its control socket, connects to it and hands
//! QEMU that connection, and `--terminate` makes swtpm exit when QEMU
//! closes it.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Gid, Pid, Uid};

use crate::plan::{QemuIdentity, VmPaths};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SwtpmError {
    #[error("could not start swtpm: {source}. Install it: apt install swtpm / dnf install swtpm / pacman -S swtpm")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory of vmrun's (a link or another file): remove it")]
    NotDir { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running swtpm for one VM, and QEMU's end of its control socket.
#[derive(Debug)]
pub(crate) struct Swtpm {
    child: Child,
    log: PathBuf,
    /// Handed to QEMU (`-chardev socket,fd=`); taken once.
    pub(crate) ctrl: Option<UnixStream>,
}

/// Starts swtpm with the VM's persistent TPM state, as `id` when vmrun is
/// root (std's `Command::uid`/`gid`: swtpm needs no supplementary group).
///
/// swtpm opens nothing of vmrun's by path: the control socket and the log
/// are passed as fds (`type=unixio,fd=`, `--log fd=`), and the state dir
/// as `dir=/proc/self/fd/N` of a dir fd opened here. The magic link
/// resolves to the dir without searching the dirs above it, so the state
/// dir and `/var/lib/vmrun` stay 0700. `tpm/` is the VM's identity's
/// (0700, its files 0600), set again at each start: a uid is the VM's for
/// its life, and another VM may have had it before.
pub(crate) fn start(paths: &VmPaths, id: Option<&QemuIdentity>) -> Result<Swtpm, SwtpmError> {
    let state = &paths.tpm_state_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| SwtpmError::Io { path, source }
    };
    let state_fd = own_state(state, id)?;
    let log_path = paths.state_dir.join("swtpm.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let _ = fs::remove_file(&paths.swtpm_socket);
    // Listening before swtpm even runs: our connect waits in the backlog.
    let listener = UnixListener::bind(&paths.swtpm_socket).map_err(io(&paths.swtpm_socket))?;
    fs::set_permissions(&paths.swtpm_socket, fs::Permissions::from_mode(0o600))
        .map_err(io(&paths.swtpm_socket))?;
    let ctrl = UnixStream::connect(&paths.swtpm_socket).map_err(io(&paths.swtpm_socket))?;
    for fd in [listener.as_fd(), log.as_fd(), state_fd.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| io(&paths.swtpm_socket)(e.into()))?;
    }
    let mut cmd = Command::new("swtpm");
    cmd.arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!(
            "dir=/proc/self/fd/{},mode=0600",
            state_fd.as_raw_fd()
        ))
        .arg("--ctrl")
        .arg(format!("type=unixio,fd={}", listener.as_raw_fd()))
        .arg("--terminate")
        .arg("--log")
        .arg(format!("fd={},level=1", log.as_raw_fd()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    // swtpm reports startup failures on stderr, not in its log; the
    // supervisor's stderr is a pipe that a detached start closes, and a
    // write to it would kill swtpm with SIGPIPE.
    if let Ok(copy) = log.try_clone() {
        cmd.stderr(Stdio::from(copy));
    }
    if let Some(id) = id {
        // std's uid()/gid() call setgroups([]) as root before setgid/setuid.
        cmd.uid(id.uid).gid(id.gid);
    }
    let spawned = cmd.spawn();
    // Our copies: swtpm has its own now, and QEMU must not inherit them.
    drop((listener, log, state_fd));
    let child = spawned.map_err(|source| SwtpmError::Spawn { source })?;
    Ok(Swtpm {
        child,
        log: log_path,
        ctrl: Some(ctrl),
    })
}

/// Makes `tpm/` (0700) and opens it, without following a link planted in
/// its place; gives it and its files to `id` (0600).
fn own_state(state: &Path, id: Option<&QemuIdentity>) -> Result<OwnedFd, SwtpmError> {
    let io = |source| SwtpmError::Io {
        path: state.to_path_buf(),
        source,
    };
    match fs::DirBuilder::new().mode(0o700).create(state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = fs::symlink_metadata(state).map_err(io)?;
    if !meta.is_dir() {
        return Err(SwtpmError::NotDir {
            path: state.to_path_buf(),
        });
    }
    let dir = super::handoff::open_dir(state).map_err(|e| io(e.source))?;
    let (uid, gid) = id.map_or((meta.uid(), meta.gid()), |id| (id.uid, id.gid));
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    // Through the open dir: a name swapped after the check is not followed.
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    chown(&fd_path, owner.0, owner.1).map_err(|e| io(e.into()))?;
    fs::set_permissions(&fd_path, fs::Permissions::from_mode(0o700)).map_err(io)?;
    // swtpm would make its lock file 0640; made here first, it is 0600
    // like the rest (open(2)'s mode applies only to a file it creates).
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(fd_path.join(".lock"))
        .map_err(io)?;
    for entry in fs::read_dir(&fd_path).map_err(io)?.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            nix::unistd::fchownat(
                &dir,
                entry.file_name().as_os_str(),
                owner.0,
                owner.1,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io(e.into()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(dir)
}

impl Swtpm {
    /// Stops swtpm (normally it has exited with QEMU already).
    /// A swtpm that failed on its own (bad state, no access) is reported
    /// with its log: QEMU only says "TPM result for CMD_INIT".
    pub(crate) fn stop(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {
                let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            }
            Ok(Some(status)) if !status.success() => {
                tracing::warn!("swtpm failed ({status}); see {}", self.log.display());
            }
            _ => {}
        }
        let _ = self.child.wait();
    }
}
