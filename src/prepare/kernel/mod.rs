//! The seam between vmrun and the kernel it changes: the `Kernel` trait
//! (sysfs and procfs writes, `modprobe`, host commands, signals), the real
//! kernel behind it (`real.rs`) and, for unit tests, a fake one over a fake
//! sysfs tree (`fake.rs`). `Host` is what every change step works on.
//!
//! Every write error names the path; every write is bounded in time,
//! because an unbind can block for as long as a driver's remove() waits on
//! its users (a compositor still holding the GPU) and such a write cannot
//! be cancelled.

mod real;

#[cfg(test)]
pub(crate) mod fake;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::PciAddress;
use crate::host::HostRoot;

pub use real::RealKernel;

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

    /// `mkdir` in a pseudo filesystem: in cgroupfs it creates a cgroup.
    /// The real and the fake kernel both make a directory.
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))
    }

    /// `rmdir`: in cgroupfs it removes an empty cgroup (EBUSY while it
    /// holds processes or children).
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("rmdir {}: {e}", path.display())))
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

/// How long vmrun waits on the kernel and on the host's own processes.
/// The real values are the defaults; unit tests, whose fake kernel acts
/// at once, wait for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a probe may take to show in the `driver` link (some
    /// drivers probe asynchronously), and a vfio group node to appear.
    pub probe_wait: Duration,
    /// Between a restore's probes of a device that did not come back.
    pub probe_retry_pause: Duration,
    /// How long a removed device may take to come back after a rescan.
    pub rescan_wait: Duration,
    /// How long the GPU's holders get to exit after the display manager
    /// and units stopped (compositors and Xwayland go after the session).
    pub settle: Duration,
    /// SIGTERM to SIGKILL for a holder named in `stop_processes`.
    pub term_grace: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            probe_wait: Duration::from_secs(3),
            probe_retry_pause: Duration::from_millis(300),
            rescan_wait: Duration::from_secs(5),
            settle: Duration::from_secs(10),
            term_grace: Duration::from_secs(5),
        }
    }
}

impl Timings {
    /// No waiting: a fake kernel's devices and processes are where they
    /// are told to go the moment they are told.
    pub const NONE: Self = Self {
        probe_wait: Duration::ZERO,
        probe_retry_pause: Duration::ZERO,
        rescan_wait: Duration::ZERO,
        settle: Duration::ZERO,
        term_grace: Duration::ZERO,
    };
}

/// The host as prepare and teardown see it: where it is, how to write to
/// it, how long to wait on it.
pub struct Host<'a> {
    pub root: &'a HostRoot,
    pub kernel: &'a dyn Kernel,
    pub timings: Timings,
}

impl<'a> Host<'a> {
    /// The host under `root`, changed through `kernel`, with the real
    /// waits.
    pub fn new(root: &'a HostRoot, kernel: &'a dyn Kernel) -> Self {
        Self {
            root,
            kernel,
            timings: Timings::default(),
        }
    }

    pub fn with_timings(self, timings: Timings) -> Self {
        Self { timings, ..self }
    }

    pub(crate) fn sys(&self, rel: &str) -> PathBuf {
        self.root.path(format!("/sys/bus/pci/{rel}"))
    }

    /// One readlink, not `read_device`'s seven sysfs reads: this runs in
    /// the verify loops, and each sysfs read costs (the lab's bench).
    pub(crate) fn driver_of(&self, address: PciAddress) -> Option<String> {
        link_name(&self.root.pci_device(&address).join("driver"))
    }

    /// Polls the `driver` link until `want` holds or the probe wait passes.
    pub(crate) fn wait_driver(
        &self,
        address: PciAddress,
        want: impl Fn(Option<&str>) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + self.timings.probe_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let driver = self.driver_of(address);
            if want(driver.as_deref()) || Instant::now() >= deadline {
                return driver;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// The last component of the symlink at `path` (a driver's or a group's
/// name).
pub(crate) fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}
