//! The TPM 2.0 emulator. QEMU's `tpm-emulator` backend talks to a running
//! `swtpm socket`; swtpm must be listening before QEMU starts, and
//! `--terminate` makes it exit when QEMU closes the connection.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

use crate::plan::VmPaths;

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("could not start swtpm: {source}. Install it: apt install swtpm / dnf install swtpm / pacman -S swtpm")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm did not open {socket} within 5 s; its log: {log}")]
    NoSocket { socket: PathBuf, log: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running swtpm for one VM.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
}

/// Starts swtpm with the VM's persistent TPM state. When QEMU runs as
/// `user`, swtpm runs as that user too (`--runas`), owning the state.
pub fn start(paths: &VmPaths, user: Option<&str>) -> Result<Swtpm, SwtpmError> {
    let state = &paths.tpm_state_dir;
    crate::supervisor::rundir::create_private_dir(state).map_err(|e| SwtpmError::Io {
        path: state.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if let Some(user) = user {
        if let Ok(Some(u)) = User::from_name(user) {
            chown(state, Some(u.uid), Some(u.gid)).map_err(|e| SwtpmError::Io {
                path: state.clone(),
                source: e.into(),
            })?;
        }
    }
    let log = paths.state_dir.join("swtpm.log");
    let _ = std::fs::remove_file(&paths.swtpm_socket);
    let mut cmd = Command::new("swtpm");
    cmd.arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={},mode=0600", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", paths.swtpm_socket.display()))
        .arg("--terminate")
        .arg("--log")
        .arg(format!("file={},level=1", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    if let Some(user) = user {
        cmd.arg("--runas").arg(user);
    }
    let child = cmd.spawn().map_err(|source| SwtpmError::Spawn { source })?;
    let mut tpm = Swtpm { child };
    if !wait_for_socket(&paths.swtpm_socket, &mut tpm.child) {
        tpm.stop();
        return Err(SwtpmError::NoSocket {
            socket: paths.swtpm_socket.clone(),
            log,
        });
    }
    Ok(tpm)
}

fn wait_for_socket(socket: &Path, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if socket.exists() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

impl Swtpm {
    /// Stops swtpm (normally it has exited with QEMU already).
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
