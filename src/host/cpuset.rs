//! CPU lists and the cgroup v2 tree as the kernel shows them, for host CPU
//! isolation: the kernel's list format (`0-3,8`: `cpuset.cpus`,
//! `smp_affinity_list`, `/sys/devices/system/cpu/online`), its hex mask
//! format (`ff,ffffffff`: the workqueue `cpumask`), which cgroup a process
//! is in (`/proc/PID/cgroup`, the `0::` line on cgroup v2), and which
//! top-level cgroups hold processes (`cgroup.events`: `populated 1`).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::PathBuf;

use super::HostRoot;

/// Where the cgroup v2 hierarchy is mounted (systemd's and every distro's
/// place for the unified hierarchy).
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A set of host CPUs, printed in the kernel's list format.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuSet(pub BTreeSet<u32>);

impl CpuSet {
    /// Parses the kernel's list format (`0-3,8`; empty is the empty set).
    pub fn parse(text: &str) -> Option<Self> {
        let mut set = BTreeSet::new();
        for part in text.trim().split(',').filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                    if a > b {
                        return None;
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(part.trim().parse().ok()?);
                }
            }
        }
        Some(Self(set))
    }

    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        Self(cpus.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// The CPUs of `self` not in `other`.
    pub fn without(&self, other: &Self) -> Self {
        Self(self.0.difference(&other.0).copied().collect())
    }

    /// The kernel's cpumask format (`%*pb`): hex, most significant first,
    /// in comma-separated groups of 32 bits, as `cpumask_parse` reads it.
    pub fn hex_mask(&self) -> String {
        let words = self.0.last().map_or(1, |max| *max as usize / 32 + 1);
        let mut groups = vec![0u32; words];
        for cpu in &self.0 {
            groups[*cpu as usize / 32] |= 1 << (cpu % 32);
        }
        let mut out: Vec<String> = Vec::new();
        for (i, g) in groups.iter().enumerate().rev() {
            if i + 1 == words {
                out.push(format!("{g:x}"));
            } else {
                out.push(format!("{g:08x}"));
            }
        }
        out.join(",")
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus: Vec<u32> = self.0.iter().copied().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < cpus.len() {
            let start = cpus[i];
            let mut end = start;
            while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
                i += 1;
                end = cpus[i];
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
            i += 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// The CPUs the kernel has online.
pub(crate) fn online(root: &HostRoot) -> Option<CpuSet> {
    CpuSet::parse(&fs::read_to_string(root.path("/sys/devices/system/cpu/online")).ok()?)
}

/// The SMT siblings of `cpu` (itself included), from its topology.
pub(crate) fn siblings(root: &HostRoot, cpu: u32) -> Option<CpuSet> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    CpuSet::parse(&fs::read_to_string(root.path(path)).ok()?)
}

/// `cpuN/cpufreq/NAME` (admin-guide/pm/cpufreq.rst).
pub(crate) fn cpufreq_file(root: &HostRoot, cpu: u32, name: &str) -> PathBuf {
    root.path(format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}"))
}

/// A CPU's cpufreq governor now and the ones it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Governors {
    /// `scaling_governor`.
    pub current: String,
    /// `scaling_available_governors`; empty when the file is missing.
    pub offered: Vec<String>,
}

impl Governors {
    /// Whether `governor` can be set on this CPU: it is set already, or
    /// the CPU offers it (the kernel refuses any other write with EINVAL).
    pub(crate) fn allows(&self, governor: &str) -> bool {
        self.current == governor || self.offered.iter().any(|g| g == governor)
    }
}

/// `cpu`'s governors; `None` without cpufreq for it (a VM, some
/// intel_pstate setups).
pub(crate) fn governors(root: &HostRoot, cpu: u32) -> Option<Governors> {
    let current = fs::read_to_string(cpufreq_file(root, cpu, "scaling_governor")).ok()?;
    let offered = fs::read_to_string(cpufreq_file(root, cpu, "scaling_available_governors"))
        .unwrap_or_default();
    Some(Governors {
        current: current.trim().to_string(),
        offered: offered.split_whitespace().map(String::from).collect(),
    })
}

/// Whether the unified (v2) hierarchy is mounted at `CGROUP_ROOT`
/// (its root has `cgroup.controllers`) with the cpuset controller.
pub(crate) fn has_v2_cpuset(root: &HostRoot) -> bool {
    fs::read_to_string(cgroup_dir(root, "").join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpuset"))
}

/// The directory of cgroup `rel` (`""`: the root, `user.slice`...).
pub(crate) fn cgroup_dir(root: &HostRoot, rel: &str) -> PathBuf {
    root.path(CGROUP_ROOT).join(rel.trim_start_matches('/'))
}

/// The cgroup v2 path of process `pid` (`self` for this one), relative to
/// the root, without the leading `/`: `user.slice/user-1000.slice/...`.
pub(crate) fn cgroup_of(root: &HostRoot, pid: &str) -> Option<String> {
    let text = fs::read_to_string(root.path(format!("/proc/{pid}/cgroup"))).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_string())
}

/// The top-level cgroups (directories under the root) that hold processes
/// now, by name, sorted.
pub(crate) fn populated_top_level(root: &HostRoot) -> Vec<String> {
    let Ok(entries) = fs::read_dir(cgroup_dir(root, "")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            fs::read_to_string(e.path().join("cgroup.events"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The top-level cgroups the host's own tasks are in: all that hold
/// processes but the VMs' (`machine.slice`, systemd's place for VMs and
/// containers; `vmrun.slice`, vmrun's own without systemd).
pub(crate) fn host_top_level(root: &HostRoot) -> Vec<String> {
    populated_top_level(root)
        .into_iter()
        .filter(|c| !matches!(c.as_str(), "machine.slice" | "vmrun.slice"))
        .collect()
}

/// Whether systemd is the init system (`sd_booted(3)`: the directory
/// `/run/systemd/system` exists).
pub(crate) fn systemd_booted(root: &HostRoot) -> bool {
    root.path("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_and_print_as_the_kernel_writes_them() {
        for (text, cpus) in [
            ("0-3,8", vec![0, 1, 2, 3, 8]),
            ("1", vec![1]),
            ("", vec![]),
            ("0,2-3\n", vec![0, 2, 3]),
        ] {
            let set = CpuSet::parse(text).unwrap();
            assert_eq!(set, CpuSet::from_cpus(cpus));
            assert_eq!(set.to_string(), text.trim());
        }
        assert!(CpuSet::parse("3-1").is_none());
        assert!(CpuSet::parse("x").is_none());
    }

    #[test]
    fn masks_are_hex_in_32_bit_groups() {
        assert_eq!(CpuSet::from_cpus([0]).hex_mask(), "1");
        assert_eq!(CpuSet::from_cpus([0, 1, 2, 3]).hex_mask(), "f");
        assert_eq!(CpuSet::from_cpus([0, 33]).hex_mask(), "2,00000001");
        assert_eq!(CpuSet::default().hex_mask(), "0");
    }

    #[test]
    fn without_takes_the_pinned_cpus_away() {
        let online = CpuSet::parse("0-7").unwrap();
        let pin = CpuSet::from_cpus([2, 3, 4, 5, 6, 7]);
        assert_eq!(online.without(&pin).to_string(), "0-1");
    }
}
