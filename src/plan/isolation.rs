//! `[cpu] isolate`, `emulator_pin` and `governor` on this host: which CPUs
//! the host keeps, where QEMU's own threads go, how the host's cgroups are
//! confined (systemd or the cgroup v2 files), and what would go wrong: no
//! CPU left for the host, no cgroup v2 cpuset, a pinned CPU that is not
//! online, SMT siblings split between host and guest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::Finding;
use crate::config::VmConfig;
use crate::host::cpuset::{self, CpuSet};
use crate::host::held;
use crate::host::HostRoot;

/// What isolation will do on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolationPlan {
    /// `[cpu] isolate`: the host's tasks, unbound workqueues and IRQs keep
    /// to `host_cpus` while the VM runs.
    pub isolate: bool,
    /// The vCPUs' host CPUs (`[cpu] pin`).
    pub pinned: CpuSet,
    /// The CPUs the host keeps: online, not pinned.
    pub host_cpus: CpuSet,
    /// QEMU's other threads (main loop, I/O, iothreads): `emulator_pin`,
    /// else with `isolate` the host's CPUs; empty: left alone.
    pub emulator_cpus: CpuSet,
    /// Confined through systemd's `AllowedCPUs` (else `cpuset.cpus`).
    pub systemd: bool,
    /// The top-level cgroups that hold processes now, to be confined.
    pub cgroups: Vec<String>,
    /// cpufreq governor of the pinned CPUs.
    pub governor: Option<String>,
}

impl IsolationPlan {
    /// Each write isolation makes, in order, for `--dry-run` (every one
    /// journaled with the value it replaces and put back after the run).
    pub fn describe(&self, vm: &str) -> Vec<String> {
        let mut out = Vec::new();
        let host = &self.host_cpus;
        if self.isolate {
            if self.systemd {
                out.push(format!("vmrun, swtpm and QEMU into scope machine.slice/vmrun-{vm}.scope (systemd StartTransientUnit)"));
                for unit in &self.cgroups {
                    out.push(format!(
                        "systemctl set-property --runtime {unit} AllowedCPUs={host}"
                    ));
                }
            } else {
                out.push(format!("vmrun, swtpm and QEMU into /sys/fs/cgroup/vmrun.slice/{vm} (+cpuset in the root's cgroup.subtree_control if off)"));
                for cg in &self.cgroups {
                    out.push(format!("/sys/fs/cgroup/{cg}/cpuset.cpus <- {host}"));
                }
            }
            out.push(format!(
                "/sys/devices/virtual/workqueue/cpumask <- {}",
                host.hex_mask()
            ));
            out.push(format!(
                "/proc/irq/*/smp_affinity_list <- {host} (those that refuse: left)"
            ));
        }
        if !self.emulator_cpus.is_empty() {
            out.push(format!(
                "QEMU's threads but the vCPUs: affinity {} (before `cont`)",
                self.emulator_cpus
            ));
        }
        if let Some(g) = &self.governor {
            for cpu in &self.pinned.0 {
                out.push(format!(
                    "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor <- {g}"
                ));
            }
        }
        out
    }
}

/// The isolation plan of `vm`, or `None` when it asks for none.
pub(crate) fn plan(
    vm: &VmConfig,
    root: &HostRoot,
    run_base: &Path,
    findings: &mut Vec<Finding>,
) -> Option<IsolationPlan> {
    let cpu = &vm.cpu;
    if !cpu.isolate && cpu.emulator_pin.is_empty() && cpu.governor.is_none() {
        return None;
    }
    let pinned = CpuSet::from_cpus(cpu.pin.iter().copied());
    let online = cpuset::online(root);
    let host_cpus = online
        .as_ref()
        .map(|o| o.without(&pinned))
        .unwrap_or_default();
    if let Some(online) = &online {
        let offline = pinned.without(online);
        let emulator_offline = CpuSet::from_cpus(cpu.emulator_pin.iter().copied()).without(online);
        for (key, off) in [("cpu.pin", offline), ("cpu.emulator_pin", emulator_offline)] {
            if !off.is_empty() {
                findings.push(
                    Finding::error(
                        key,
                        format!("host CPUs {off} are not online (online: {online})"),
                    )
                    .fix("list CPUs of /sys/devices/system/cpu/online"),
                );
            }
        }
    }
    let systemd = cpuset::systemd_booted(root);
    if cpu.isolate {
        if !cpuset::has_v2_cpuset(root) {
            findings.push(
                Finding::error("cpu.isolate", "no cgroup v2 cpuset controller at /sys/fs/cgroup: the host's tasks can't be kept off the pinned CPUs")
                    .fix("boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1, the default since systemd 247), or remove `isolate`"),
            );
        }
        findings.extend(confined_by_another(vm.name.as_str(), root, run_base));
        if online.is_some() && host_cpus.is_empty() {
            findings.push(
                Finding::error(
                    "cpu.isolate",
                    "`pin` takes every online CPU: none would be left for the host",
                )
                .fix("leave at least one CPU (better a whole core) out of `pin`"),
            );
        }
    }
    findings.extend(smt_split(root, &pinned));
    if let Some(governor) = &cpu.governor {
        findings.extend(governor_unavailable(root, &pinned, governor));
    }
    let emulator_cpus = if !cpu.emulator_pin.is_empty() {
        CpuSet::from_cpus(cpu.emulator_pin.iter().copied())
    } else if cpu.isolate {
        host_cpus.clone()
    } else {
        CpuSet::default()
    };
    let cgroups = if cpu.isolate {
        cpuset::host_top_level(root)
    } else {
        Vec::new()
    };
    Some(IsolationPlan {
        isolate: cpu.isolate,
        pinned,
        host_cpus,
        emulator_cpus,
        systemd,
        cgroups,
        governor: cpu.governor.clone(),
    })
}

/// An error when another VM's run confines the host's CPUs: each saves
/// the cpusets it replaces, so a second confinement would save the
/// first's and put the host back to it after both ended. A dead run
/// counts too (its run dir stays until `vmrun restore`).
fn confined_by_another(vm: &str, root: &HostRoot, run_base: &Path) -> Option<Finding> {
    let others: Vec<String> = held::isolating(root, run_base)
        .into_iter()
        .filter(|other| other != vm)
        .collect();
    let other = others.first()?;
    Some(
        Finding::error(
            "cpu.isolate",
            format!("VM {other} confines the host's CPUs already (its [cpu] isolate): two confinements would overwrite each other's"),
        )
        .fix(format!("stop {other} first (`vmrun stop {other}`; `vmrun restore {other}` if its supervisor is gone), or remove `isolate`")),
    )
}

/// An error for each set of pinned CPUs (grouped by what they offer) that
/// doesn't offer `governor`: the kernel would refuse the write with
/// EINVAL, and the start would fail half-prepared. A CPU without cpufreq
/// is left alone at prepare time, so it is no finding here.
fn governor_unavailable(root: &HostRoot, pinned: &CpuSet, governor: &str) -> Vec<Finding> {
    let mut lacking: BTreeMap<String, CpuSet> = BTreeMap::new();
    for &cpu in &pinned.0 {
        match cpuset::governors(root, cpu) {
            Some(g) if !g.allows(governor) => {
                lacking
                    .entry(g.offered.join(" "))
                    .or_default()
                    .0
                    .insert(cpu);
            }
            _ => {}
        }
    }
    lacking
        .into_iter()
        .map(|(offered, cpus)| {
            let offered = if offered.is_empty() {
                "none".into()
            } else {
                offered
            };
            let (which, offer) = if cpus.0.len() == 1 {
                ("CPU", "offers")
            } else {
                ("CPUs", "offer")
            };
            Finding::error(
                "cpu.governor",
                format!(
                    "{which} {cpus} {offer} no cpufreq governor `{governor}` (offered: {offered})"
                ),
            )
            .fix("set `governor` to one offered (scaling_available_governors), or remove it")
        })
        .collect()
}

/// A warning when a pinned CPU's SMT sibling is left to the host: the two
/// share one core's execution units, so the host still disturbs the vCPU.
fn smt_split(root: &HostRoot, pinned: &CpuSet) -> Option<Finding> {
    let split: Vec<String> = pinned
        .0
        .iter()
        .filter_map(|&cpu| {
            let sib = cpuset::siblings(root, cpu)?;
            let outside = sib.without(pinned);
            (!outside.is_empty()).then(|| format!("{cpu} (sibling {outside})"))
        })
        .collect();
    (!split.is_empty()).then(|| {
        Finding::warning(
            "cpu.pin",
            format!("pinned CPUs share a core with host CPUs: {}", split.join(", ")),
        )
        .fix("pin both threads of each core (see /sys/devices/system/cpu/cpuN/topology/thread_siblings_list)")
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::config::vm::testing::check;
    use crate::plan::Severity;
    use crate::testing::sysfs;

    fn host(online: &str, systemd: bool, v2: bool) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("sys/devices/system/cpu");
        fs::create_dir_all(&cpu).unwrap();
        fs::write(cpu.join("online"), online).unwrap();
        for n in CpuSet::parse(online).unwrap().0 {
            let topo = cpu.join(format!("cpu{n}/topology"));
            fs::create_dir_all(&topo).unwrap();
            // Two threads per core: 0,1 / 2,3 ...
            let first = n - n % 2;
            fs::write(
                topo.join("thread_siblings_list"),
                format!("{first}-{}", first + 1),
            )
            .unwrap();
        }
        let cg = dir.path().join("sys/fs/cgroup");
        fs::create_dir_all(cg.join("user.slice")).unwrap();
        fs::write(
            cg.join("user.slice/cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .unwrap();
        fs::create_dir_all(cg.join("machine.slice")).unwrap();
        fs::write(cg.join("machine.slice/cgroup.events"), "populated 1\n").unwrap();
        if v2 {
            fs::write(cg.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        }
        if systemd {
            fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
        }
        let root = HostRoot::new(dir.path());
        (dir, root)
    }

    fn planned(toml: &str, root: &HostRoot) -> (Option<IsolationPlan>, Vec<Finding>) {
        let vm = check(toml).expect("valid");
        let mut findings = Vec::new();
        (
            plan(&vm, root, Path::new("/run/vmrun"), &mut findings),
            findings,
        )
    }

    #[test]
    fn the_host_keeps_the_unpinned_cpus_and_qemu_goes_there() {
        let (_d, root) = host("0-7", true, true);
        let (p, findings) = planned(
            "[cpu]\ncores = 4\npin = [4, 5, 6, 7]\nisolate = true\n",
            &root,
        );
        let p = p.unwrap();
        assert_eq!(p.host_cpus.to_string(), "0-3");
        assert_eq!(p.emulator_cpus.to_string(), "0-3");
        assert!(p.systemd);
        assert_eq!(p.cgroups, ["user.slice"]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn no_cpu_left_no_cgroup_v2_and_a_split_core_are_reported() {
        let (_d, root) = host("0-1", false, false);
        let (_, findings) = planned("[cpu]\ncores = 2\npin = [0, 1]\nisolate = true\n", &root);
        let errors: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 2, "{findings:?}");
        let (_d, root) = host("0-3", false, true);
        let (_, findings) = planned("[cpu]\npin = [1]\nisolate = true\n", &root);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(
            findings[0].message.contains("1 (sibling 0)"),
            "{}",
            findings[0]
        );
    }

    #[test]
    fn dry_run_lists_each_write() {
        let (_d, root) = host("0-3", true, true);
        let toml = "[cpu]\ncores = 2\npin = [2, 3]\nisolate = true\ngovernor = \"performance\"\n";
        let lines = planned(toml, &root).0.unwrap().describe("win");
        assert_eq!(
            lines,
            [
                "vmrun, swtpm and QEMU into scope machine.slice/vmrun-win.scope (systemd StartTransientUnit)",
                "systemctl set-property --runtime user.slice AllowedCPUs=0-1",
                "/sys/devices/virtual/workqueue/cpumask <- 3",
                "/proc/irq/*/smp_affinity_list <- 0-1 (those that refuse: left)",
                "QEMU's threads but the vCPUs: affinity 0-1 (before `cont`)",
                "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor <- performance",
                "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor <- performance",
            ]
        );
    }

    /// The errors among `findings`, as `subject: message`.
    fn errors(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.subject, f.message))
            .collect()
    }

    fn cpufreq(root: &HostRoot, cpu: u32, current: &str, offered: &str) {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
        let at = root.path("/");
        sysfs::write(&at, &format!("{dir}/scaling_governor"), current);
        sysfs::write(&at, &format!("{dir}/scaling_available_governors"), offered);
    }

    #[test]
    fn a_governor_the_pinned_cpus_do_not_offer_is_an_error_naming_them() {
        let (_d, root) = host("0-7", true, true);
        cpufreq(&root, 2, "schedutil\n", "performance schedutil\n");
        cpufreq(&root, 3, "powersave\n", "powersave\n");
        cpufreq(&root, 4, "powersave\n", "powersave\n");
        cpufreq(&root, 5, "ondemand\n", "ondemand performance\n");
        // CPU 6 has no cpufreq: left alone at prepare, no finding.
        let toml = "[cpu]\ncores = 5\npin = [2, 3, 4, 5, 6]\ngovernor = \"performance\"\n";

        let (_, findings) = planned(toml, &root);

        assert_eq!(
            errors(&findings),
            ["cpu.governor: CPUs 3-4 offer no cpufreq governor `performance` (offered: powersave)"]
        );
    }

    #[test]
    fn a_governor_in_force_or_offered_is_no_finding() {
        let (_d, root) = host("0-3", true, true);
        // Set already, though not listed (the file lists what may be switched to).
        cpufreq(&root, 2, "performance\n", "powersave\n");
        cpufreq(&root, 3, "powersave\n", "powersave performance\n");
        let toml = "[cpu]\ncores = 2\npin = [2, 3]\ngovernor = \"performance\"\n";

        let (_, findings) = planned(toml, &root);

        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn a_second_isolating_vm_is_refused_naming_the_first() {
        let (_d, root) = host("0-3", true, true);
        sysfs::write(&root.path("/"), "/run/vmrun/gamer/isolating", "");
        sysfs::write(&root.path("/"), "/run/vmrun/gamer/journal", "");
        // `check` names the VM `t`; its own dead run's file is no other's.
        sysfs::write(&root.path("/"), "/run/vmrun/t/isolating", "");
        let toml = "[cpu]\ncores = 2\npin = [2, 3]\nisolate = true\n";

        let (_, findings) = planned(toml, &root);

        assert_eq!(
            errors(&findings),
            ["cpu.isolate: VM gamer confines the host's CPUs already (its [cpu] isolate): two confinements would overwrite each other's"]
        );
        // A VM that pins without isolating confines nothing: no finding.
        let (_, findings) = planned(
            "[cpu]\ncores = 2\npin = [2, 3]\nemulator_pin = [0]\n",
            &root,
        );
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn nothing_asked_plans_nothing_and_emulator_pin_alone_confines_nothing() {
        let (_d, root) = host("0-3", true, true);
        assert!(planned("[cpu]\npin = [1]\n", &root).0.is_none());
        let p = planned("[cpu]\npin = [1]\nemulator_pin = [0]\n", &root)
            .0
            .unwrap();
        assert!(!p.isolate && p.cgroups.is_empty());
        assert_eq!(p.emulator_cpus.to_string(), "0");
    }
}
