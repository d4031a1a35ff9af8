//! The one way vmrun writes to sysfs and procfs. Every error names the
//! path; every write is bounded in time, because an unbind can block for
//! as long as a driver's remove() waits on its users (a compositor still
//! holding the GPU) and such a write cannot be cancelled.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How long a sysfs write may take before it counts as hung.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing {value:?} to {path}: {source}")]
    Io {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {value:?} to {path} did not return within {after:?}: the driver is stuck (something still uses the device?); the write is left blocked")]
    Hung {
        path: PathBuf,
        value: String,
        after: Duration,
    },
}

/// What the prepare and teardown steps write through. The kernel's
/// reactions to writes are what make sysfs special; tests put a fake kernel
/// behind this trait.
pub trait Kernel {
    fn write(&self, path: &Path, value: &str) -> Result<(), WriteError>;

    /// `modprobe NAME`; `Ok(false)` when the module does not exist.
    fn modprobe(&self, name: &str) -> io::Result<bool>;

    /// Runs `argv` (no shell) to its end or `timeout`: `systemctl`,
    /// `modprobe -r`, a configured display manager command. The default
    /// (for test kernels that never run commands) refuses.
    fn run(&self, argv: &[String], _timeout: Duration) -> io::Result<Ran> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this kernel runs no commands ({})", argv.join(" ")),
        ))
    }

    /// Sends `signal` to process `pid`. The default refuses, as `run`.
    fn signal(&self, pid: u32, _signal: nix::sys::signal::Signal) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this kernel signals no process ({pid})"),
        ))
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub success: bool,
    /// Its stdout and stderr, trimmed.
    pub output: String,
}

impl Ran {
    pub fn ok(output: &str) -> Self {
        Self {
            success: true,
            output: output.into(),
        }
    }

    pub fn failed(output: &str) -> Self {
        Self {
            success: false,
            output: output.into(),
        }
    }
}

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
        super::command::run(argv, timeout)
    }

    fn signal(&self, pid: u32, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
    }
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
}
