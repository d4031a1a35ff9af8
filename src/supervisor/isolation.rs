//! The isolation in force, for `vmrun status`: the plan's CPU sets and,
//! from the journal, each host change made for it (what a restore would
//! put back).

use serde::{Deserialize, Serialize};

use crate::host::cpuset::cgroup_of;
use crate::plan::Plan;
use crate::prepare::journal::{self, Step};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Isolation {
    /// The vCPUs' host CPUs.
    pub pinned: String,
    /// The CPUs the host's tasks, workqueues and IRQs keep to (`isolate`).
    pub host_cpus: Option<String>,
    /// QEMU's other threads.
    pub emulator_cpus: String,
    /// The cgroup vmrun and QEMU are in.
    pub cgroup: Option<String>,
    /// Each confined host cgroup or unit, with what it had before.
    pub confined: Vec<String>,
    /// The unbound workqueue cpumask before, when vmrun set it.
    pub workqueue_mask_before: Option<String>,
    /// How many IRQ affinities vmrun recorded (and will put back).
    pub irqs: usize,
    /// `CPU: governor before` for each CPU whose governor vmrun set.
    pub governor: Vec<String>,
}

/// The isolation of `plan` as the journal shows it; `None` without any.
pub(crate) fn in_force(plan: &Plan) -> Option<Isolation> {
    let iso = plan.isolation.as_ref()?;
    let mut out = Isolation {
        pinned: iso.pinned.to_string(),
        host_cpus: iso.isolate.then(|| iso.host_cpus.to_string()),
        emulator_cpus: iso.emulator_cpus.to_string(),
        ..Isolation::default()
    };
    if iso.isolate {
        out.cgroup = cgroup_of(&plan.root, "self").map(|c| format!("/{c}"));
    }
    let steps = journal::read(&crate::prepare::journal_path(plan))
        .map(|c| c.steps)
        .unwrap_or_default();
    for step in steps {
        match step {
            Step::AllowedCpus(s) => out
                .confined
                .push(format!("{} (AllowedCPUs before: {:?})", s.unit, s.previous)),
            Step::CgroupCpus(s) => out.confined.push(format!(
                "{} (cpuset.cpus before: {:?})",
                s.cgroup, s.previous
            )),
            Step::WorkqueueMask(s) => out.workqueue_mask_before = Some(s.previous),
            Step::IrqAffinity(s) => out.irqs += s.irqs.len(),
            Step::Governor(s) => out.governor.push(format!("{}: {}", s.cpu, s.previous)),
            _ => {}
        }
    }
    Some(out)
}
