//! The unbound workqueues' CPUs: `/sys/devices/virtual/workqueue/cpumask`
//! (workqueue.rst: the cpumask unbound work items may run on, a hex mask
//! as `%*pb` prints it) set to the host CPUs while the VM runs, so kernel
//! work that may run anywhere keeps off the pinned CPUs. Per-CPU work
//! stays where it is bound: nothing can move it.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::host::cpuset::CpuSet;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

/// The journal step: the unbound workqueue cpumask was `previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkqueueMask {
    pub previous: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkqueueError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn mask_file(host: &Host) -> PathBuf {
    host.root.path("/sys/devices/virtual/workqueue/cpumask")
}

/// Sets the unbound workqueue cpumask to `cpus`, journaled. A kernel
/// without the file (before 4.2) gets a note.
pub fn confine(host: &Host, journal: &mut Journal, cpus: &CpuSet) -> Result<(), WorkqueueError> {
    let file = mask_file(host);
    let Ok(previous) = fs::read_to_string(&file) else {
        tracing::warn!(
            "{}: absent; unbound workqueues stay on every CPU",
            file.display()
        );
        return Ok(());
    };
    journal.record(&Step::WorkqueueMask(WorkqueueMask {
        previous: previous.trim().into(),
    }))?;
    host.kernel.write(&file, &cpus.hex_mask())?;
    tracing::info!("unbound workqueues on CPUs {cpus}");
    Ok(())
}

impl Undo for WorkqueueMask {
    fn undo(&self, host: &Host) -> StepReport {
        let problem = host
            .kernel
            .write(&mask_file(host), &self.previous)
            .err()
            .map(|e| e.to_string());
        StepReport::logged(
            format!("unbound workqueue cpumask {} again", self.previous),
            problem,
        )
    }
}
