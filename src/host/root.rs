//! Where host reads come from. Every sysfs, /dev, /proc and /etc path goes
//! through a `HostRoot`, so tests and `VMRUN_HOST_ROOT` can point vmrun at a
//! tree that is not this machine's (after Firecracker's jailer taking
//! `/proc/mounts` as a parameter).

use std::path::{Path, PathBuf};

/// The root under which absolute host paths are looked up (`/` normally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

/// A verb that changes the host, asked to run with `VMRUN_HOST_ROOT` set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{env} is set ({}): it moves what vmrun reads, not what it changes: `{verb}` would check a tree that is not this machine and then run systemctl and modprobe, write to sysfs and send signals on this one. Unset it; it is for the verbs that only read: --dry-run, check, devices, input list, status, list", root.display(), env = HostRoot::ENV)]
pub struct FakeRootRefused {
    pub root: PathBuf,
    pub verb: &'static str,
}

/// Test builds only (the `testing` feature): lets the CLI tests run a
/// changing verb against a fake tree whose every change stays inside it
/// (a journal of huge page steps, a grubby stand-in). Release builds have
/// no such variable.
#[cfg(feature = "testing")]
pub const TEST_FAKE_CHANGES_ENV: &str = "VMRUN_TEST_FAKE_HOST_CHANGES";

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

    /// The root for `verb`, which changes the host: `/`. With
    /// `VMRUN_HOST_ROOT` set it is refused (exit 2 at the edge): checks
    /// would read the fake tree while the changes hit the real host.
    pub fn for_changes(verb: &'static str) -> Result<Self, FakeRootRefused> {
        Self::from_env().refused_for_changes(verb, test_fake_changes())
    }

    fn refused_for_changes(
        self,
        verb: &'static str,
        test_seam: bool,
    ) -> Result<Self, FakeRootRefused> {
        if self.is_real() || test_seam {
            Ok(self)
        } else {
            Err(FakeRootRefused { root: self.0, verb })
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

#[cfg(feature = "testing")]
fn test_fake_changes() -> bool {
    std::env::var_os(TEST_FAKE_CHANGES_ENV).is_some_and(|v| v == "1")
}

#[cfg(not(feature = "testing"))]
fn test_fake_changes() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_root_is_refused_for_changes_unless_a_test_build_asks() {
        let fake = HostRoot::new("/tmp/fake");
        let err = fake
            .clone()
            .refused_for_changes("restore", false)
            .unwrap_err();
        assert_eq!(err.verb, "restore");
        assert!(
            err.to_string()
                .contains("VMRUN_HOST_ROOT is set (/tmp/fake)"),
            "{err}"
        );
        assert_eq!(fake.clone().refused_for_changes("restore", true), Ok(fake));
        let real = HostRoot::new("/");
        assert_eq!(real.clone().refused_for_changes("start", false), Ok(real));
    }

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
