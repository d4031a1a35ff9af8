//! The TPM 2.0 emulator. QEMU's `tpm-emulator` backend talks to a running
//! `swtpm socket`; its control socket must be listening before QEMU starts
//! (vmrun binds it itself), and `--terminate` makes swtpm exit when QEMU
//! closes the connection.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

use crate::plan::VmPaths;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SwtpmError {
    #[error("could not start swtpm: {source}. Install it: apt install swtpm / dnf install swtpm / pacman -S swtpm")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm runs as `{user}` and can't reach its state through {dir}: give it search permission (chmod o+x {dir}), or set [qemu] user = \"root\"")]
    Unreachable { dir: PathBuf, user: String },
    #[error("user `{0}` for swtpm does not exist")]
    NoUser(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running swtpm for one VM.
#[derive(Debug)]
pub(crate) struct Swtpm {
    child: Child,
    log: PathBuf,
}

/// Starts swtpm with the VM's persistent TPM state. When QEMU runs as
/// `user`, swtpm runs as that user too (`--runas`), owning the state.
///
/// swtpm drops to `--runas` before it opens anything by path, so the
/// socket and the log, which live in root's 0700 dirs, are opened here and
/// passed as file descriptors (`type=unixio,fd=`, `--log fd=`). Only the
/// state must be reached by path: the user owns `tpm/`, and the state dir
/// gets search permission (0711) so the user can reach `tpm/` by name
/// without being able to list or read anything else there.
pub(crate) fn start(paths: &VmPaths, user: Option<&str>) -> Result<Swtpm, SwtpmError> {
    let state = &paths.tpm_state_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| SwtpmError::Io { path, source }
    };
    crate::fsutil::create_handed_dir(state).map_err(|e| SwtpmError::Io {
        path: state.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let user = match user {
        Some(name) => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| SwtpmError::NoUser(name.to_string()))?,
        ),
        None => None,
    };
    if let Some(u) = &user {
        chown(state, Some(u.uid), Some(u.gid)).map_err(|e| io(state)(e.into()))?;
        make_reachable(&paths.state_dir, u)?;
    }
    let log_path = paths.state_dir.join("swtpm.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let _ = std::fs::remove_file(&paths.swtpm_socket);
    // Listening before swtpm even runs: QEMU's connect can't come too early.
    let listener = UnixListener::bind(&paths.swtpm_socket).map_err(io(&paths.swtpm_socket))?;
    for fd in [listener.as_fd(), log.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| io(&paths.swtpm_socket)(e.into()))?;
    }
    let mut cmd = Command::new("swtpm");
    cmd.arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={},mode=0600", state.display()))
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
    if let Some(u) = &user {
        cmd.arg("--runas").arg(&u.name);
    }
    let spawned = cmd.spawn();
    // Our copies: swtpm has its own now, and QEMU must not inherit them.
    drop(listener);
    drop(log);
    let child = spawned.map_err(|source| SwtpmError::Spawn { source })?;
    Ok(Swtpm {
        child,
        log: log_path,
    })
}

/// swtpm, once it is `user`, opens its state by path, so every dir above
/// `tpm/` needs search permission for that user. vmrun's own dirs (the
/// VM's state dir and the dir holding every VM's state dir, both made 0700)
/// get it for everyone (0711: a name can be reached, nothing listed; the
/// files inside are 0600). Any other dir without it is reported, not changed.
fn make_reachable(state_dir: &Path, user: &User) -> Result<(), SwtpmError> {
    let own = [Some(state_dir), state_dir.parent()];
    for dir in state_dir.ancestors() {
        let meta = std::fs::metadata(dir).map_err(|source| SwtpmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid.as_raw() {
            0o100
        } else if meta.gid() == user.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if mode & bit != 0 {
            continue;
        }
        if !own.contains(&Some(dir)) {
            return Err(SwtpmError::Unreachable {
                dir: dir.to_path_buf(),
                user: user.name.clone(),
            });
        }
        let searchable = std::fs::Permissions::from_mode((mode & 0o7777) | 0o011);
        std::fs::set_permissions(dir, searchable).map_err(|source| SwtpmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
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
