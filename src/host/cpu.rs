//! The processor, memory and boot command line as procfs shows them
//! (`/proc/cpuinfo`, `/proc/meminfo`, `/proc/cmdline`), for `vmrun check`,
//! `vmrun init` and the boot-time arguments.

use std::collections::BTreeSet;
use std::fs;

use serde::Serialize;

use super::HostRoot;

/// The CPU maker, which decides the IOMMU argument (`intel_iommu=on` or
/// `amd_iommu=on`) and the virtualization flag (`vmx` or `svm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CpuVendor {
    Intel,
    Amd,
    Other,
}

/// What `/proc/cpuinfo` says about the host's processors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CpuInfo {
    pub vendor: CpuVendor,
    /// `vmx` (VT-x) or `svm` (AMD-V) among the flags.
    pub virtualization: bool,
    /// Logical CPUs (`processor` entries).
    pub logical: u32,
    /// Physical packages (distinct `physical id`s; 1 when absent).
    pub sockets: u32,
    /// Cores per package (`cpu cores`).
    pub cores: u32,
    /// Threads per core (`siblings` / `cpu cores`).
    pub threads: u32,
}

impl CpuInfo {
    /// The kernel argument that turns this vendor's IOMMU on.
    pub(crate) fn iommu_arg(&self) -> Option<&'static str> {
        match self.vendor {
            CpuVendor::Intel => Some("intel_iommu=on"),
            CpuVendor::Amd => Some("amd_iommu=on"),
            CpuVendor::Other => None,
        }
    }
}

/// Reads `/proc/cpuinfo`; `None` when it is missing or names no processor.
pub(crate) fn cpu_info(root: &HostRoot) -> Option<CpuInfo> {
    parse_cpuinfo(&fs::read_to_string(root.path("/proc/cpuinfo")).ok()?)
}

/// Parses the text of `/proc/cpuinfo` (x86: one block per logical CPU).
pub(crate) fn parse_cpuinfo(text: &str) -> Option<CpuInfo> {
    let mut vendor = CpuVendor::Other;
    let (mut logical, mut cores, mut siblings) = (0u32, 0u32, 0u32);
    let mut packages = BTreeSet::new();
    let mut virtualization = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => logical += 1,
            "vendor_id" => {
                vendor = match value {
                    "GenuineIntel" => CpuVendor::Intel,
                    "AuthenticAMD" => CpuVendor::Amd,
                    _ => CpuVendor::Other,
                }
            }
            "physical id" => {
                packages.insert(value.to_string());
            }
            "cpu cores" => cores = value.parse().unwrap_or(0),
            "siblings" => siblings = value.parse().unwrap_or(0),
            "flags" => virtualization |= value.split_whitespace().any(|f| f == "vmx" || f == "svm"),
            _ => {}
        }
    }
    if logical == 0 {
        return None;
    }
    let sockets = (packages.len() as u32).max(1);
    let cores = if cores == 0 { logical / sockets } else { cores }.max(1);
    let threads = if siblings >= cores && siblings > 0 {
        (siblings / cores).max(1)
    } else {
        1
    };
    Some(CpuInfo {
        vendor,
        virtualization,
        logical,
        sockets,
        cores,
        threads,
    })
}

/// A field of `/proc/meminfo` in KiB (`MemTotal`, `MemAvailable`, ...).
pub(crate) fn meminfo_kb(root: &HostRoot, field: &str) -> Option<u64> {
    let text = fs::read_to_string(root.path("/proc/meminfo")).ok()?;
    text.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        (key == field).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

/// The running kernel's command line, split into arguments.
pub(crate) fn cmdline(root: &HostRoot) -> Vec<String> {
    fs::read_to_string(root.path("/proc/cmdline"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The value of `key=` on the command line (the last one wins, as in the
/// kernel's own parser).
pub(crate) fn cmdline_value<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter()
        .rev()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

/// The running kernel's release (`uname -r`), from `/proc/sys/kernel/osrelease`.
pub(crate) fn kernel_release(root: &HostRoot) -> Option<String> {
    fs::read_to_string(root.path("/proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u32, vendor: &str, flags: &str) -> String {
        format!(
            "processor\t: {n}\nvendor_id\t: {vendor}\nphysical id\t: 0\nsiblings\t: 4\ncpu cores\t: 2\nflags\t\t: fpu {flags} sse\n\n"
        )
    }

    #[test]
    fn an_intel_smt_cpu_is_one_socket_two_cores_two_threads() {
        let text: String = (0..4).map(|n| block(n, "GenuineIntel", "vmx")).collect();
        let cpu = parse_cpuinfo(&text).unwrap();
        assert_eq!(cpu.vendor, CpuVendor::Intel);
        assert!(cpu.virtualization);
        assert_eq!(
            (cpu.logical, cpu.sockets, cpu.cores, cpu.threads),
            (4, 1, 2, 2)
        );
        assert_eq!(cpu.iommu_arg(), Some("intel_iommu=on"));
    }

    #[test]
    fn no_vmx_or_svm_flag_means_no_virtualization() {
        let cpu = parse_cpuinfo(&block(0, "AuthenticAMD", "lm")).unwrap();
        assert_eq!(cpu.vendor, CpuVendor::Amd);
        assert!(!cpu.virtualization);
        assert!(parse_cpuinfo("").is_none());
    }

    #[test]
    fn cmdline_value_takes_the_last_occurrence() {
        let args: Vec<String> = ["intel_iommu=off", "quiet", "intel_iommu=on"]
            .map(String::from)
            .to_vec();
        assert_eq!(cmdline_value(&args, "intel_iommu"), Some("on"));
        assert_eq!(cmdline_value(&args, "iommu"), None);
    }
}
