//! Which processes hold a device node open (`/proc/PID/fd/*` symlinks), so
//! that "the GPU is in use" can name Xorg or nvidia-persistenced instead of
//! letting an unbind hang.

use std::fs;
use std::path::{Path, PathBuf};

use super::HostRoot;

/// A process holding one of the wanted paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`: the name `ps` shows.
    pub comm: String,
    /// The host path it holds, e.g. `/dev/dri/card1`.
    pub path: PathBuf,
}

/// The result of one scan of `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub holders: Vec<Holder>,
    /// Processes whose fds could not be read (another user's, when not
    /// root): the answer may be incomplete.
    pub unreadable: usize,
}

/// Scans every process's open files for paths `wanted` accepts. Each
/// process appears once per distinct path.
pub fn holders(root: &HostRoot, wanted: impl Fn(&Path) -> bool) -> Scan {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pci::fake::add_process;

    #[test]
    fn names_the_processes_holding_a_node() {
        let dir = tempfile::tempdir().unwrap();
        add_process(dir.path(), 4321, "Xorg", &["/dev/dri/card1", "/dev/null"]);
        add_process(dir.path(), 77, "bash", &["/dev/pts/0"]);
        add_process(
            dir.path(),
            99,
            "kwin",
            &["/dev/dri/renderD129", "/dev/dri/card1"],
        );
        let scan = holders(&HostRoot::new(dir.path()), |p| {
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
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            holders(&HostRoot::new(dir.path()), |_| true),
            Scan::default()
        );
    }
}
