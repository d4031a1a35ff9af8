//! Spawning QEMU. It runs in the foreground as our child (so its exit is
//! `wait()`, not a pidfile poll) but in its own process group: QEMU treats
//! SIGINT as "quit now" (SHUTDOWN reason host-signal), and a terminal Ctrl-C
//! must reach only vmrun, which shuts the guest down properly.

use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::process::{Child, Command};

use crate::host::qemu::find_in_path;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not set up QEMU's QMP socket {path}: {source}")]
    QmpSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not hand QEMU its files: an fd number is given twice")]
    FdCollision,
    #[error(transparent)]
    Handoff(#[from] super::handoff::HandoffError),
    #[error(transparent)]
    Claim(#[from] crate::plan::identity::ClaimError),
    #[error("could not raise RLIMIT_MEMLOCK to {wanted} bytes for VFIO (guest RAM + 1 GiB): {source}. Run vmrun as root, or raise the limit (ulimit -l, /etc/security/limits.conf)")]
    Memlock {
        wanted: u64,
        #[source]
        source: nix::Error,
    },
}

/// VFIO type1 pins all guest RAM and charges it to the QEMU process's
/// RLIMIT_MEMLOCK (Documentation/driver-api/vfio.rst); a QEMU that dropped
/// root has no CAP_IPC_LOCK to bypass it. The limit is inherited across
/// exec and survives QEMU's own privilege drop, so it is raised here.
pub(crate) fn raise_memlock_for_vfio(plan: &Plan) -> Result<(), SpawnError> {
    if plan.hostdevs.is_empty() {
        return Ok(());
    }
    let wanted = plan.vm.memory.bytes() + crate::config::ByteSize::GIB;
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((0, 0));
    if soft >= wanted {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_MEMLOCK, wanted, hard.max(wanted))
        .map_err(|source| SpawnError::Memlock { wanted, source })
}

/// Binds the supervisor's QMP socket (mode 0600) and connects to it at
/// once: the connection waits in the listen backlog until QEMU, handed the
/// listener as its stdin (`QmpListener::Stdin`), accepts it. If QEMU dies
/// first, the last listener closes and the read sees the end.
pub(crate) fn qmp_listen(path: &Path) -> Result<(UnixListener, UnixStream), SpawnError> {
    let err = |source| SpawnError::QmpSocket {
        path: path.to_owned(),
        source,
    };
    // A dead run's socket file would make bind fail with EADDRINUSE.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let stream = UnixStream::connect(path).map_err(err)?;
    // The supervisor reads it from its tokio runtime.
    stream.set_nonblocking(true).map_err(err)?;
    Ok((listener, stream))
}

/// Starts QEMU with `argv`, paused (`-S`): the supervisor pins the vCPU
/// threads before the guest runs a single instruction, then sends `cont`.
/// `-S` belongs to this start protocol rather than to the VM, so it is
/// added here. Its stderr is returned piped for the supervisor's log.
/// `qmp_listener` becomes QEMU's stdin: the monitor of
/// `QmpListener::Stdin` (QEMU reads nothing else from stdin: no `stdio`
/// chardev is ever configured). `handed` are the files of the run form's
/// `FdPlan`, placed at their fd numbers in QEMU (`command-fds` dup2s
/// them in the child, which clears FD_CLOEXEC on the copies only).
///
/// With an identity, QEMU is exec'd through `vmrun __exec-as` (vmrun's
/// own executable, `/proc/self/exe`), which drops to it first; the fds
/// and RLIMIT_MEMLOCK survive both execs.
pub(crate) fn spawn(
    plan: &Plan,
    argv: &[OsString],
    qmp_listener: UnixListener,
    handed: Vec<(RawFd, OwnedFd)>,
) -> Result<Child, SpawnError> {
    raise_memlock_for_vfio(plan)?;
    // A few stat calls here instead of posix_spawnp's failed execve in
    // every PATH directory before QEMU's.
    let binary = find_in_path(&plan.qemu.binary).unwrap_or_else(|| plan.qemu.binary.clone());
    let mut cmd = match &plan.qemu_identity {
        Some(id) => {
            // The magic link, not the path it shows: exec(2) of it runs
            // this very executable even if its file was replaced or
            // removed since (an upgrade while VMs run).
            let mut cmd = Command::new("/proc/self/exe");
            cmd.args(super::exec_as::args(id, &binary));
            cmd
        }
        None => Command::new(binary),
    };
    let mappings = handed
        .into_iter()
        .map(|(child_fd, parent_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect();
    for (var, value) in plan.audio.iter().flat_map(|a| a.env()) {
        cmd.env(var, value);
    }
    cmd.fd_mappings(mappings)
        .map_err(|_| SpawnError::FdCollision)?;
    cmd.arg("-S")
        .args(argv)
        .process_group(0)
        .stdin(OwnedFd::from(qmp_listener))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SpawnError::Spawn {
            binary: plan.qemu.binary.clone(),
            source,
        })
}
