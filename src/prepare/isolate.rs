//! Host CPU isolation as journaled changes, in the order that keeps vmrun
//! itself out of the squeeze: first the supervisor into a cgroup of its
//! own (before swtpm and QEMU are forked, so they start there), then the
//! host's top-level cgroups, the unbound workqueues and the IRQs confined
//! to the host CPUs, then the pinned CPUs' governor.

use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::change::{cgroup, cpuset, governor, irq_affinity, workqueue};
use super::journal::Journal;
use super::{journal_path, Host, PrepareError};
use crate::host::{held, HostRoot};
use crate::plan::isolation::IsolationPlan;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("vmrun's own cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("confining the host's cgroups: {0}")]
    Cpuset(#[from] cpuset::CpusetError),
    #[error("unbound workqueues: {0}")]
    Workqueue(#[from] workqueue::WorkqueueError),
    #[error("IRQ affinity: {0}")]
    Irq(#[from] irq_affinity::IrqError),
    #[error("cpufreq governor: {0}")]
    Governor(#[from] governor::GovernorError),
    #[error("`isolate` would leave the host no CPU")]
    NoHostCpu,
    #[error("VM {0} confines the host's CPUs already: stop it first (`vmrun stop {0}`)")]
    ConfinedBy(String),
    #[error("{path}: {source}")]
    Claim {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// With `isolate`: moves this process into its own cgroup, journaled. Call
/// before anything that should share it (swtpm, QEMU) is forked.
pub fn enter_own_cgroup(plan: &Plan, host: &Host) -> Result<(), PrepareError> {
    let Some(iso) = plan.isolation.as_ref().filter(|i| i.isolate) else {
        return Ok(());
    };
    let vm = plan.vm.name.as_str();
    claim_confinement(host.root, &plan.paths.run_dir, vm).map_err(PrepareError::Isolate)?;
    let mut journal = Journal::open(&journal_path(plan))?;
    let result = if iso.systemd {
        cgroup::enter_scope(host, &mut journal, vm)
    } else {
        cgroup::enter_cgroup(host, &mut journal, vm)
    };
    result.map_err(|e| PrepareError::Isolate(e.into()))
}

/// Refuses when another VM's run confines the host's CPUs (read again:
/// the plan may be minutes old), then leaves `held::ISOLATING_FILE` in
/// this run's dir for the next VM's plan. Not a host change: it goes with
/// the run dir, which stays until the journal is undone. The look and the
/// write happen under an exclusive flock(2) on `RUN_BASE/.isolate.lock`,
/// so two VMs starting at once can't both find no other.
fn claim_confinement(root: &HostRoot, run_dir: &Path, vm: &str) -> Result<(), IsolateError> {
    if let Some(base) = run_dir.parent() {
        let path = base.join(".isolate.lock");
        let claim = |source| IsolateError::Claim {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::create(&path).map_err(claim)?;
        let _turn = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| claim(e.into()))?;
        if let Some(other) = held::isolating(root, base).into_iter().find(|o| o != vm) {
            return Err(IsolateError::ConfinedBy(other));
        }
        return write_claim(run_dir);
    }
    write_claim(run_dir)
}

fn write_claim(run_dir: &Path) -> Result<(), IsolateError> {
    let path = run_dir.join(held::ISOLATING_FILE);
    std::fs::write(&path, "").map_err(|source| IsolateError::Claim { path, source })
}

/// Confines the host to its CPUs and sets the governor, journaled.
pub(super) fn confine(
    iso: &IsolationPlan,
    host: &Host,
    journal: &mut Journal,
) -> Result<(), IsolateError> {
    if iso.isolate {
        if iso.host_cpus.is_empty() {
            return Err(IsolateError::NoHostCpu);
        }
        // Read again: the plan may be minutes old (a takeover waited).
        for cg in cpuset::host_cgroups(host) {
            if iso.systemd {
                cpuset::confine_unit(host, journal, &cg, &iso.host_cpus)?;
            } else {
                cpuset::confine_cgroup(host, journal, &cg, &iso.host_cpus)?;
            }
        }
        workqueue::confine(host, journal, &iso.host_cpus)?;
        irq_affinity::confine(host, journal, &iso.host_cpus)?;
    }
    if let Some(g) = &iso.governor {
        let pinned: Vec<u32> = iso.pinned.0.iter().copied().collect();
        governor::set(host, journal, &pinned, g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::host::cpuset::CpuSet;
    use crate::prepare::journal;
    use crate::prepare::kernel::fake::FakeKernel;

    /// A 4-CPU host with cgroup v2 laid out as systemd lays it out, this
    /// process in a login session's scope, three IRQs (IRQ 0 can't move).
    struct Scene {
        dir: tempfile::TempDir,
        root: HostRoot,
        kernel: FakeKernel,
    }

    const SESSION: &str = "user.slice/user-1000.slice/session-1.scope";

    fn write(base: &Path, rel: &str, text: &str) {
        let p = base.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    impl Scene {
        fn new(systemd: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let b = dir.path();
            write(b, "sys/devices/system/cpu/online", "0-3\n");
            write(b, "sys/devices/virtual/workqueue/cpumask", "f\n");
            for irq in [0, 1, 9] {
                write(b, &format!("proc/irq/{irq}/smp_affinity_list"), "0-3\n");
            }
            write(b, "proc/irq/0/fixed", "");
            write(
                b,
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory pids\n",
            );
            write(b, "sys/fs/cgroup/cpuset.cpus.effective", "0-3\n");
            let control = if systemd {
                "cpuset cpu memory pids\n"
            } else {
                "memory pids\n"
            };
            write(b, "sys/fs/cgroup/cgroup.subtree_control", control);
            let pid = std::process::id();
            for (cg, procs) in [
                ("init.scope", "1".to_string()),
                ("system.slice", String::new()),
                ("system.slice/sshd.service", "300".into()),
                ("user.slice", String::new()),
                (SESSION, format!("{pid}\n400")),
                ("machine.slice", String::new()),
                ("machine.slice/other-vm.scope", "500".into()),
            ] {
                write(b, &format!("sys/fs/cgroup/{cg}/cgroup.procs"), &procs);
                write(
                    b,
                    &format!("sys/fs/cgroup/{cg}/cgroup.events"),
                    "populated 1\n",
                );
                if systemd {
                    write(b, &format!("sys/fs/cgroup/{cg}/cpuset.cpus"), "");
                }
            }
            write(b, "proc/self/cgroup", &format!("0::/{SESSION}\n"));
            if systemd {
                fs::create_dir_all(b.join("run/systemd/system")).unwrap();
            }
            Self {
                root: HostRoot::new(b),
                kernel: FakeKernel::new(b),
                dir,
            }
        }

        fn host(&self) -> Host<'_> {
            Host::new(&self.root, &self.kernel)
        }

        fn journal(&self) -> PathBuf {
            self.dir.path().join("journal")
        }

        fn iso(&self, systemd: bool) -> IsolationPlan {
            IsolationPlan {
                isolate: true,
                pinned: CpuSet::from_cpus([2, 3]),
                host_cpus: CpuSet::from_cpus([0, 1]),
                emulator_cpus: CpuSet::from_cpus([0, 1]),
                systemd,
                cgroups: Vec::new(),
                governor: None,
            }
        }

        /// The own cgroup, then the confinement, as setup and prepare do.
        fn isolate(&self, systemd: bool) -> Result<(), IsolateError> {
            let mut j = Journal::open(&self.journal()).unwrap();
            let host = self.host();
            if systemd {
                cgroup::enter_scope(&host, &mut j, "win")?;
            } else {
                cgroup::enter_cgroup(&host, &mut j, "win")?;
            }
            confine(&self.iso(systemd), &host, &mut j)
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.dir.path().join(rel))
                .unwrap()
                .trim()
                .to_string()
        }

        /// Every file of the tree but the journal, for before/after.
        fn snapshot(&self) -> Vec<(String, String)> {
            let mut out = Vec::new();
            let mut stack = vec![self.dir.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        out.push((p.display().to_string(), "dir".into()));
                        stack.push(p);
                    } else if p != self.journal() {
                        // A cgroup's processes in any order.
                        let text = fs::read_to_string(&p).unwrap_or_default();
                        let mut words: Vec<&str> = text.split_whitespace().collect();
                        words.sort();
                        out.push((p.display().to_string(), words.join(" ")));
                    }
                }
            }
            out.sort();
            out
        }
    }

    #[test]
    fn a_run_claims_the_confinement_and_a_second_vm_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = HostRoot::new("/");
        let run = |vm: &str| {
            let dir = tmp.path().join(vm);
            fs::create_dir(&dir).unwrap();
            dir
        };
        let (first, second) = (run("first"), run("second"));

        claim_confinement(&root, &first, "first").unwrap();
        let refused = claim_confinement(&root, &second, "second").unwrap_err();

        assert!(first.join(held::ISOLATING_FILE).exists());
        assert!(matches!(&refused, IsolateError::ConfinedBy(vm) if vm == "first"));
        assert!(!second.join(held::ISOLATING_FILE).exists());
        // The same VM again (a dead run's dir being replayed) is no other.
        claim_confinement(&root, &first, "first").unwrap();
    }

    fn properties(k: &FakeKernel, unit: &str) -> Option<String> {
        k.properties
            .borrow()
            .get(&format!("{unit}/AllowedCPUs"))
            .cloned()
    }

    #[test]
    fn with_systemd_vmrun_gets_a_scope_and_the_host_units_are_confined_then_restored() {
        let scene = Scene::new(true);
        scene
            .kernel
            .properties
            .borrow_mut()
            .insert("system.slice/AllowedCPUs".into(), "0-3".into());
        scene.isolate(true).unwrap();
        assert_eq!(
            scene.read("proc/self/cgroup"),
            "0::/machine.slice/vmrun-win.scope"
        );
        for unit in ["init.scope", "system.slice", "user.slice"] {
            assert_eq!(
                properties(&scene.kernel, unit).as_deref(),
                Some("0-1"),
                "{unit}"
            );
        }
        // The VMs' slice is theirs.
        assert_eq!(properties(&scene.kernel, "machine.slice"), None);
        assert_eq!(scene.read("sys/devices/virtual/workqueue/cpumask"), "3");
        assert_eq!(scene.read("proc/irq/9/smp_affinity_list"), "0-1");
        assert_eq!(
            scene.read("proc/irq/0/smp_affinity_list"),
            "0-3",
            "refused, skipped"
        );
        let steps = journal::read(&scene.journal()).unwrap().steps;
        assert!(matches!(&steps[0], journal::Step::VmScope(s) if s.from == SESSION));

        let undone = journal::undo_all(&scene.journal(), &scene.host());
        assert!(
            undone.complete(),
            "{:?}",
            undone.problems().collect::<Vec<_>>()
        );
        // Set before: set again; not set before: every CPU, then reset.
        assert_eq!(
            properties(&scene.kernel, "system.slice").as_deref(),
            Some("0-3")
        );
        assert_eq!(properties(&scene.kernel, "user.slice").as_deref(), Some(""));
        assert_eq!(scene.read("sys/fs/cgroup/user.slice/cpuset.cpus"), "0-3");
        let commands = scene.kernel.commands.borrow();
        let user: Vec<&String> = commands
            .iter()
            .filter(|c| c.contains("set-property --runtime user.slice"))
            .collect();
        assert_eq!(
            user,
            [
                "systemctl set-property --runtime user.slice AllowedCPUs=0-1",
                "systemctl set-property --runtime user.slice AllowedCPUs=0-3",
                "systemctl set-property --runtime user.slice AllowedCPUs=",
            ]
        );
        // We are still in the scope: it ends with us, never stopped.
        assert!(!commands.iter().any(|c| c.starts_with("systemctl stop")));
        assert_eq!(scene.read("sys/devices/virtual/workqueue/cpumask"), "f");
        assert_eq!(scene.read("proc/irq/9/smp_affinity_list"), "0-3");
    }

    #[test]
    fn restore_from_another_process_stops_a_scope_left_behind() {
        let scene = Scene::new(true);
        scene.isolate(true).unwrap();
        // `vmrun restore` runs elsewhere.
        write(scene.dir.path(), "proc/self/cgroup", "0::/user.slice\n");
        assert!(journal::undo_all(&scene.journal(), &scene.host()).complete());
        assert!(scene
            .kernel
            .commands
            .borrow()
            .contains(&"systemctl stop vmrun-win.scope".to_string()));
    }

    #[test]
    fn without_systemd_the_cgroup_files_change_and_everything_goes_back() {
        let scene = Scene::new(false);
        let before = scene.snapshot();
        scene.isolate(false).unwrap();
        assert_eq!(scene.read("proc/self/cgroup"), "0::/vmrun.slice/win");
        assert_eq!(
            scene.read("sys/fs/cgroup/vmrun.slice/win/cgroup.procs"),
            std::process::id().to_string()
        );
        assert_eq!(
            scene.read("sys/fs/cgroup/cgroup.subtree_control"),
            "memory pids cpuset"
        );
        for cg in ["init.scope", "system.slice", "user.slice"] {
            assert_eq!(
                scene.read(&format!("sys/fs/cgroup/{cg}/cpuset.cpus")),
                "0-1"
            );
        }
        assert!(!scene
            .dir
            .path()
            .join("sys/fs/cgroup/machine.slice/cpuset.cpus")
            .exists());
        let undone = journal::undo_all(&scene.journal(), &scene.host());
        assert!(
            undone.complete(),
            "{:?}",
            undone.problems().collect::<Vec<_>>()
        );
        assert_eq!(scene.read("proc/self/cgroup"), format!("0::/{SESSION}"));
        assert!(!scene.dir.path().join("sys/fs/cgroup/vmrun.slice").exists());
        // The cpusets had no list of their own: the full one, never "".
        assert_eq!(scene.read("sys/fs/cgroup/user.slice/cpuset.cpus"), "0-3");
        let wrote_empty = scene
            .kernel
            .writes
            .borrow()
            .iter()
            .any(|(p, v)| p.ends_with("cpuset.cpus") && v.is_empty());
        assert!(!wrote_empty);
        // Everything else exactly as before (the cpuset files, which the
        // kernel removes with the controller, aside).
        let no_cpuset = |v: Vec<(String, String)>| -> Vec<(String, String)> {
            v.into_iter()
                .filter(|(p, _)| !p.ends_with("cpuset.cpus"))
                .collect()
        };
        assert_eq!(no_cpuset(scene.snapshot()), no_cpuset(before));
    }

    #[test]
    fn a_failed_scope_is_reported_and_its_step_undoes_harmlessly() {
        let scene = Scene::new(true);
        let kernel = FakeKernel::new(scene.dir.path()).failing_command(&format!(
            "busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager StartTransientUnit ssa(sv)a(sa(sv)) vmrun-win.scope fail 3 PIDs au 1 {} Slice s machine.slice Description s vmrun VM win 0",
            std::process::id()
        ));
        let host = Host::new(&scene.root, &kernel);
        let mut j = Journal::open(&scene.journal()).unwrap();
        let err = cgroup::enter_scope(&host, &mut j, "win").unwrap_err();
        assert!(matches!(err, cgroup::CgroupError::Scope { .. }), "{err}");
        assert!(journal::undo_all(&scene.journal(), &host).complete());
    }

    #[test]
    fn governor_is_set_per_cpu_and_restored_and_a_host_without_cpufreq_is_a_note() {
        let scene = Scene::new(false);
        let b = scene.dir.path();
        for cpu in [2, 3] {
            write(
                b,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "schedutil\n",
            );
            write(
                b,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_available_governors"),
                "performance schedutil\n",
            );
        }
        let mut iso = scene.iso(false);
        iso.isolate = false;
        iso.pinned = CpuSet::from_cpus([1, 2, 3]);
        iso.governor = Some("performance".into());
        let mut j = Journal::open(&scene.journal()).unwrap();
        confine(&iso, &scene.host(), &mut j).unwrap();
        assert_eq!(
            scene.read("sys/devices/system/cpu/cpu2/cpufreq/scaling_governor"),
            "performance"
        );
        assert_eq!(
            journal::read(&scene.journal()).unwrap().steps.len(),
            2,
            "CPU 1 has no cpufreq"
        );
        assert!(journal::undo_all(&scene.journal(), &scene.host()).complete());
        assert_eq!(
            scene.read("sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"),
            "schedutil"
        );
        iso.governor = Some("turbo".into());
        let err = confine(&iso, &scene.host(), &mut j).unwrap_err();
        assert!(
            err.to_string().contains("offers: performance schedutil"),
            "{err}"
        );
    }
}
