//! Which processes hold a device node open (`/proc/PID/fd/*` symlinks), so
//! that "the GPU is in use" can name Xorg or nvidia-persistenced instead of
//! letting an unbind hang.

use std::fs;
use std::path::{Path, PathBuf};

use super::pci::PciDevice;
use super::HostRoot;
use crate::config::PciAddress;

/// A process holding one of the wanted paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`: the name `ps` shows.
    pub comm: String,
    /// The host path it holds, e.g. `/dev/dri/card1`.
    pub path: PathBuf,
}

/// Each holding process once, by pid: `comm (pid N, /dev/dri/card1,
/// /dev/dri/renderD129)`, the paths in the order held.
pub(crate) fn by_process(holders: &[Holder]) -> Vec<String> {
    let mut procs: Vec<(u32, &str, Vec<String>)> = Vec::new();
    for h in holders {
        let path = h.path.display().to_string();
        match procs.iter_mut().find(|(pid, _, _)| *pid == h.pid) {
            Some((_, _, paths)) if !paths.contains(&path) => paths.push(path),
            Some(_) => {}
            None => procs.push((h.pid, &h.comm, vec![path])),
        }
    }
    procs.sort_by_key(|(pid, _, _)| *pid);
    procs
        .into_iter()
        .map(|(pid, comm, paths)| format!("{comm} (pid {pid}, {})", paths.join(", ")))
        .collect()
}

/// The result of one scan of `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub holders: Vec<Holder>,
    /// Processes whose fds could not be read (another user's, when not
    /// root): the answer may be incomplete.
    pub unreadable: usize,
}

/// Scans every process's open files for paths `wanted` accepts. Each
/// process appears once per distinct path.
pub(crate) fn holders(root: &HostRoot, wanted: impl Fn(&Path) -> bool) -> Scan {
    let mut scan = Scan::default();
    let Ok(procs) = fs::read_dir(root.proc()) else {
        return scan;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            // EACCES for other users' processes, ENOENT when it just exited.
            if entry.path().exists() {
                scan.unreadable += 1;
            }
            continue;
        };
        let mut seen: Vec<PathBuf> = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if wanted(&target) && !seen.contains(&target) {
                seen.push(target);
            }
        }
        if seen.is_empty() {
            continue;
        }
        let comm = fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        for path in seen {
            scan.holders.push(Holder {
                pid,
                comm: comm.clone(),
                path,
            });
        }
    }
    scan.holders.sort_by_key(|h| h.pid);
    scan
}

/// The device nodes through which a process uses a GPU.
#[derive(Debug, Default)]
pub(crate) struct GpuNodes {
    pub exact: Vec<PathBuf>,
    /// The NVIDIA minor is unknown: any `/dev/nvidiaN` may be this GPU.
    pub any_nvidia: bool,
}

impl GpuNodes {
    /// The DRM nodes of `dev`, and its `/dev/nvidiaN` when NVIDIA drives it.
    pub(crate) fn of(root: &HostRoot, dev: &PciDevice) -> Self {
        let mut nodes = Self::default();
        // `/sys/bus/pci/devices/ADDR/drm/{cardN,renderDN}` are the DRM nodes
        // `/dev/dri/cardN`, `/dev/dri/renderDN` of this device.
        let drm = root.pci_device(&dev.address).join("drm");
        for entry in fs::read_dir(drm).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("card") || name.starts_with("renderD") {
                nodes.exact.push(PathBuf::from("/dev/dri").join(name));
            }
        }
        if dev.driver.as_deref() == Some("nvidia") {
            match nvidia_minor(root, dev.address) {
                Some(minor) => nodes.exact.push(format!("/dev/nvidia{minor}").into()),
                None => nodes.any_nvidia = true,
            }
        }
        nodes
    }

    /// Whether `path` is one of these nodes.
    pub(crate) fn matches(&self, path: &Path) -> bool {
        self.exact.iter().any(|p| p == path)
            || (self.any_nvidia
                && path
                    .to_str()
                    .and_then(|p| p.strip_prefix("/dev/nvidia"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
    }
}

/// `Device Minor:` of `/proc/driver/nvidia/gpus/ADDR/information`: the N
/// of `/dev/nvidiaN`.
fn nvidia_minor(root: &HostRoot, address: PciAddress) -> Option<u32> {
    let info =
        fs::read_to_string(root.path(format!("/proc/driver/nvidia/gpus/{address}/information")))
            .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Device Minor:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn names_the_processes_holding_a_node() {
        let host = TestHost::new()
            .process(4321, "Xorg", &["/dev/dri/card1", "/dev/null"])
            .process(77, "bash", &["/dev/pts/0"])
            .process(99, "kwin", &["/dev/dri/renderD129", "/dev/dri/card1"]);
        let scan = holders(&host.root(), |p| {
            p.starts_with("/dev/dri/card1") || p.starts_with("/dev/dri/renderD129")
        });
        let found: Vec<(u32, &str)> = scan
            .holders
            .iter()
            .map(|h| (h.pid, h.comm.as_str()))
            .collect();
        assert_eq!(found, [(99, "kwin"), (99, "kwin"), (4321, "Xorg")]);
        assert_eq!(scan.unreadable, 0);
    }

    #[test]
    fn no_proc_means_no_holders() {
        assert_eq!(holders(&TestHost::new().root(), |_| true), Scan::default());
    }
}
