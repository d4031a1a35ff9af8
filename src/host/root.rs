//! Where host reads come from. Every sysfs, /dev, /proc and /etc path goes
//! through a `HostRoot`, so tests and `VMRUN_HOST_ROOT` can point vmrun at a
//! tree that is not this machine's (after Firecracker's jailer taking
//! `/proc/mounts` as a parameter).

use std::path::{Path, PathBuf};

/// The root under which absolute host paths are looked up (`/` normally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    /// The environment variable that moves every host read under a directory.
    pub const ENV: &'static str = "VMRUN_HOST_ROOT";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// `/`, or `$VMRUN_HOST_ROOT` when set and not empty.
    pub fn from_env() -> Self {
        match std::env::var_os(Self::ENV) {
            Some(dir) if !dir.is_empty() => Self::new(dir),
            _ => Self::new("/"),
        }
    }

    /// Whether this is the real machine's `/`.
    pub fn is_real(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `abs` (an absolute host path such as `/sys/bus/pci`) under this root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.0.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    pub fn sys(&self) -> PathBuf {
        self.path("/sys")
    }

    pub fn dev(&self) -> PathBuf {
        self.path("/dev")
    }

    pub fn proc(&self) -> PathBuf {
        self.path("/proc")
    }

    /// `/sys/bus/pci/devices/ADDR`.
    pub fn pci_device(&self, address: &crate::config::PciAddress) -> PathBuf {
        self.path(format!("/sys/bus/pci/devices/{address}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_land_under_the_root() {
        let root = HostRoot::new("/tmp/fake");
        assert_eq!(
            root.path("/sys/bus/pci"),
            Path::new("/tmp/fake/sys/bus/pci")
        );
        assert_eq!(root.dev(), Path::new("/tmp/fake/dev"));
        assert!(!root.is_real());
        assert!(HostRoot::new("/").is_real());
    }
}
