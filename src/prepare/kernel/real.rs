//! The running kernel: sysfs writes in a thread bounded in time, and host
//! commands for takeover (`systemctl`, `modprobe -r`, a display manager's
//! own start/stop commands): no shell, bounded in time, output kept for the
//! error message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Kernel, Ran, WriteError, WRITE_TIMEOUT};

/// The running kernel.
#[derive(Debug, Clone)]
pub struct RealKernel {
    pub timeout: Duration,
}

impl Default for RealKernel {
    fn default() -> Self {
        Self {
            timeout: WRITE_TIMEOUT,
        }
    }
}

impl Kernel for RealKernel {
    fn write(&self, path: &Path, value: &str) -> Result<(), WriteError> {
        let (tx, rx) = mpsc::channel();
        let (p, v) = (path.to_path_buf(), value.to_string());
        // One write(2) of the whole value: sysfs store handlers see exactly
        // one call per write, and "\n" (not an empty write) clears
        // driver_override.
        std::thread::spawn(move || {
            let result = OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|mut f| f.write_all(v.as_bytes()));
            let _ = tx.send(result);
        });
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(WriteError::Io {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            }),
            Err(_) => Err(WriteError::Hung {
                path: path.to_path_buf(),
                value: value.to_string(),
                after: self.timeout,
            }),
        }
    }

    fn modprobe(&self, name: &str) -> io::Result<bool> {
        let status = std::process::Command::new("modprobe")
            .arg(name)
            .stdout(std::process::Stdio::null())
            .status()?;
        Ok(status.success())
    }

    fn run(&self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        run_command(argv, timeout)
    }

    fn signal(&self, pid: u32, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
    }
}

/// Runs `argv` until it exits or `timeout` passes (then it is killed).
/// Output goes to an unlinked file, not a pipe: a start command that
/// leaves a daemon behind keeps a pipe open forever, but exits.
fn run_command(argv: &[String], timeout: Duration) -> io::Result<Ran> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let mut out = scratch_file()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    out.rewind()?;
    let _ = out.take(4096).read_to_string(&mut text);
    match status {
        Some(s) => Ok(Ran {
            success: s.success(),
            output: text.trim().to_string(),
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("`{}` did not finish within {timeout:?}", argv.join(" ")),
        )),
    }
}

/// A file nobody else can open: created in the temp dir and unlinked.
fn scratch_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    for n in 0..100u32 {
        let path = dir.join(format!(".vmrun-cmd-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no scratch file for command output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_name_the_path() {
        let err = RealKernel::default()
            .write(Path::new("/nonexistent/driver_override"), "vfio-pci")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/driver_override"));
    }

    #[test]
    fn a_blocking_write_is_reported_as_hung() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("unbind");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let kernel = RealKernel {
            timeout: Duration::from_millis(100),
        };
        // Opening a FIFO for writing blocks until a reader comes: a stand-in
        // for an unbind stuck in a driver's remove().
        let err = kernel.write(&fifo, "0000:01:00.0").unwrap_err();
        assert!(matches!(err, WriteError::Hung { .. }), "{err}");
        // Unblock the writer thread so the test leaves nothing behind.
        let _ = std::fs::File::open(&fifo);
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_and_status_are_kept() {
        let r = run_command(
            &argv(&["sh", "-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!r.success);
        assert_eq!(r.output, "hi\nerr");
    }

    #[test]
    fn a_daemon_left_behind_does_not_block() {
        let start = Instant::now();
        let r = run_command(
            &argv(&["sh", "-c", "sleep 3 & echo started"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(r.success && r.output == "started");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let err = run_command(&argv(&["sleep", "5"]), Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
