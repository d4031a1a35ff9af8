//! `[power] inhibit_sleep`: a logind sleep inhibitor held while the VM
//! runs. `systemd-inhibit --what=sleep --mode=block` takes the lock
//! (logind's `Inhibit()` hands it a file descriptor; the lock lasts while
//! that fd is open, org.freedesktop.login1(5)) and runs `cat`, whose stdin
//! is a pipe only the supervisor writes to. When the supervisor ends, by
//! any way including `kill -9`, the kernel closes its end, `cat` reads
//! EOF, `systemd-inhibit` exits and logind drops the lock: nothing to undo.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::HostRoot;

/// The lock, held until dropped (or the supervisor dies).
#[derive(Debug)]
pub(super) struct SleepInhibitor {
    child: Child,
    /// Our end of `cat`'s stdin: closing it ends the inhibitor.
    pipe: Option<OwnedFd>,
}

impl Drop for SleepInhibitor {
    fn drop(&mut self) {
        self.pipe.take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes a sleep inhibitor for VM `vm`; `None` with a note when the host
/// has no logind (it keeps `/run/systemd/seats`) or the lock can't be had.
pub(super) fn hold(root: &HostRoot, vm: &str) -> Option<SleepInhibitor> {
    if !root.path("/run/systemd/seats").is_dir() {
        tracing::info!("no logind on this host: nothing keeps it from suspending while {vm} runs");
        return None;
    }
    let argv = [
        "systemd-inhibit".to_string(),
        "--what=sleep".into(),
        "--who=vmrun".into(),
        format!("--why=VM {vm} has passed-through devices a suspend would wedge"),
        "--mode=block".into(),
        "cat".into(),
    ];
    match spawn(&argv) {
        Ok(lock) => {
            tracing::info!("host sleep inhibited while {vm} runs");
            Some(lock)
        }
        Err(e) => {
            tracing::warn!(
                "no sleep inhibitor (systemd-inhibit: {e}): the host may suspend while {vm} runs"
            );
            None
        }
    }
}

/// Runs `argv` with its stdin on a pipe whose write end only we hold.
fn spawn(argv: &[String]) -> io::Result<SleepInhibitor> {
    // O_CLOEXEC: QEMU and swtpm, forked later, must not hold the write end.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(SleepInhibitor {
        child,
        pipe: Some(write),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_holder_ends_when_our_end_of_the_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("released");
        let script = format!("cat >/dev/null; touch {}", done.display());
        let lock = spawn(&argv(&["sh", "-c", &script])).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!done.exists(), "held while the pipe is open");
        let pid = lock.child.id();
        // Dropping closes the pipe, as the kernel does when we die: the
        // holder ends by itself, not by a kill.
        drop(lock);
        assert!(done.exists());
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_host_without_logind_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(hold(&HostRoot::new(dir.path()), "t").is_none());
    }
}
